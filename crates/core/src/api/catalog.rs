//! Serve: the check catalog for `$INSIGHTS.API.CHECKS` and `nats-insights checks`: what each check
//! looks at and when it fires, worded with the thresholds this instance actually runs with.

use serde::Serialize;

use crate::checks::{CheckId, Severity, Thresholds, SPECS};
use crate::findings::ActiveSet;

/// `type` of the CHECKS response.
pub const CHECKS_TYPE: &str = "io.nats.insights.v1.checks_response";

pub use crate::checks::{duration_words, Setting};

/// One check as the catalog describes it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckEntry {
    /// Check id, e.g. `META_001`.
    pub id: CheckId,
    /// Human name.
    pub name: &'static str,
    /// Severity of its findings.
    pub severity: Severity,
    /// Category.
    pub category: &'static str,
    /// What one finding of it is about.
    pub applies_to: &'static str,
    /// When it is raised, in words, with the configured values.
    pub threshold: String,
    /// The configured values it uses.
    pub settings: Vec<Setting>,
    /// How many of its findings are active now.
    pub active: usize,
}

/// The CHECKS response (`schemas/checks_response.json`).
#[derive(Debug, Clone, Serialize)]
pub struct ChecksResponse {
    /// `io.nats.insights.v1.checks_response`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Every check, in catalog order.
    pub checks: Vec<CheckEntry>,
}

/// The whole catalog with active counts.
pub fn checks_response(thresholds: &Thresholds, active: &ActiveSet) -> ChecksResponse {
    ChecksResponse {
        kind: CHECKS_TYPE,
        checks: SPECS
            .iter()
            .map(|spec| CheckEntry {
                id: spec.id,
                name: spec.name,
                severity: spec.severity,
                category: spec.category,
                applies_to: spec.applies_to,
                threshold: (spec.threshold)(thresholds),
                settings: (spec.settings)(thresholds),
                active: active
                    .values()
                    .filter(|a| a.finding.check == spec.id)
                    .count(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn thresholds_are_worded_with_the_configured_values() {
        let t = Thresholds {
            offline_after: Duration::from_millis(4500),
            flap_max: 3,
            flap_window: Duration::from_secs(120),
            ..Thresholds::default()
        };
        let response = checks_response(&t, &ActiveSet::new());
        assert_eq!(response.checks.len(), CheckId::all().len());
        let m1 = &response.checks[0];
        assert!(m1.threshold.contains("4s 500ms"), "{}", m1.threshold);
        assert_eq!(m1.settings[0].value, "4s 500ms");
        assert_eq!(m1.settings[0].default, "3s");
        let m3 = response
            .checks
            .iter()
            .find(|c| c.id == CheckId::META_003)
            .expect("META_003");
        assert!(m3.threshold.contains("more than 3 times within 2m"));
        assert_eq!(m3.settings.len(), 2);
    }
}
