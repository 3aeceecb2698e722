//! Serve: the check catalog for `$INSIGHTS.API.CHECKS` and `nats-insights checks`: what each check
//! looks at and when it fires, worded with the thresholds this instance actually runs with.

use std::time::Duration;

use serde::Serialize;

use crate::checks::{CheckId, Severity, Thresholds};
use crate::findings::ActiveSet;

/// `type` of the CHECKS response.
pub const CHECKS_TYPE: &str = "io.nats.insights.v1.checks_response";

/// One configured value a check compares against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// Name, as in the flag without dashes and with underscores.
    pub name: &'static str,
    /// The flag that sets it.
    pub flag: &'static str,
    /// Its environment variable.
    pub env: &'static str,
    /// The value in force, as the flag would accept it (`3s`, `1`).
    pub value: String,
    /// The built-in default, in the same form.
    pub default: String,
}

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

/// A duration as the flags take it (`3s`, `10m`, `1m 30s`).
pub fn duration_words(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn offline_after(t: &Thresholds) -> Setting {
    Setting {
        name: "offline_after",
        flag: "--offline-after",
        env: "INSIGHTS_OFFLINE_AFTER",
        value: duration_words(t.offline_after),
        default: duration_words(Thresholds::default().offline_after),
    }
}

fn settings(check: CheckId, t: &Thresholds) -> Vec<Setting> {
    let d = Thresholds::default();
    match check {
        CheckId::Meta001 | CheckId::Meta006 => vec![offline_after(t)],
        CheckId::Meta002 => vec![Setting {
            name: "disagreement_after",
            flag: "--disagreement-after",
            env: "INSIGHTS_DISAGREEMENT_AFTER",
            value: duration_words(t.disagreement_after),
            default: duration_words(d.disagreement_after),
        }],
        CheckId::Meta003 => vec![
            Setting {
                name: "flap_max",
                flag: "--flap-max",
                env: "INSIGHTS_FLAP_MAX",
                value: t.flap_max.to_string(),
                default: d.flap_max.to_string(),
            },
            Setting {
                name: "flap_window",
                flag: "--flap-window",
                env: "INSIGHTS_FLAP_WINDOW",
                value: duration_words(t.flap_window),
                default: duration_words(d.flap_window),
            },
        ],
    }
}

/// What one finding of a check is about.
pub fn applies_to(check: CheckId) -> &'static str {
    match check {
        CheckId::Meta001 => "each meta group member (one finding per server)",
        CheckId::Meta002 | CheckId::Meta003 | CheckId::Meta006 => {
            "the meta group (one finding per cluster)"
        }
    }
}

/// When a check raises, with the configured values filled in.
pub fn threshold_words(check: CheckId, t: &Thresholds) -> String {
    let offline = duration_words(t.offline_after);
    match check {
        CheckId::Meta001 => format!(
            "a member announced a shutdown or lame duck, the leader flags it offline, the leader \
             has not heard from it for {offline}, or it stopped answering both the JSZ gather and \
             a direct request"
        ),
        CheckId::Meta002 => format!(
            "servers report different meta leaders (or some none) continuously for longer than {}",
            duration_words(t.disagreement_after)
        ),
        CheckId::Meta003 => format!(
            "the meta leader changed more than {} time{} within {}",
            t.flap_max,
            if t.flap_max == 1 { "" } else { "s" },
            duration_words(t.flap_window)
        ),
        CheckId::Meta006 => format!(
            "fewer members are online than quorum_needed (same rule as META_001), or no server has \
             reported a meta leader for longer than {offline}"
        ),
    }
}

/// The whole catalog with active counts.
pub fn checks_response(thresholds: &Thresholds, active: &ActiveSet) -> ChecksResponse {
    ChecksResponse {
        kind: CHECKS_TYPE,
        checks: CheckId::ALL
            .into_iter()
            .map(|id| CheckEntry {
                id,
                name: id.name(),
                severity: id.severity(),
                category: id.category(),
                applies_to: applies_to(id),
                threshold: threshold_words(id, thresholds),
                settings: settings(id, thresholds),
                active: active.values().filter(|a| a.finding.check == id).count(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(response.checks.len(), CheckId::ALL.len());
        let m1 = &response.checks[0];
        assert!(m1.threshold.contains("4s 500ms"), "{}", m1.threshold);
        assert_eq!(m1.settings[0].value, "4s 500ms");
        assert_eq!(m1.settings[0].default, "3s");
        let m3 = response
            .checks
            .iter()
            .find(|c| c.id == CheckId::Meta003)
            .expect("META_003");
        assert!(m3.threshold.contains("more than 3 times within 2m"));
        assert_eq!(m3.settings.len(), 2);
    }
}
