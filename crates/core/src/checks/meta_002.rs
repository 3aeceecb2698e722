//! Evaluate: META_002 Meta leader disagreement, one finding per meta group.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde_json::json;

use crate::text::shell_quote;

use super::members::MetaAssessment;
use super::{
    duration_words, group_key, seconds, CheckId, CheckSpec, Evaluation, Finding, Remediation,
    Setting, Severity, Thresholds,
};
use crate::history::History;

impl CheckId {
    /// META_002 Meta leader disagreement.
    pub const META_002: CheckId = CheckId::new("META_002");
}

/// META_002 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::META_002,
    name: "Meta leader disagreement",
    severity: Severity::Critical,
    category: "jetstream_meta",
    applies_to: "the meta group (one finding per group: per JetStream domain)",
    threshold: |t| {
        format!(
            "servers report different meta leaders (or some none) continuously for longer than {}",
            duration_words(t.disagreement_after)
        )
    },
    settings: |t| {
        vec![Setting {
            name: "disagreement_after",
            flag: "--disagreement-after",
            env: "INSIGHTS_DISAGREEMENT_AFTER",
            value: duration_words(t.disagreement_after),
            default: duration_words(Thresholds::default().disagreement_after),
        }]
    },
    runbook: include_str!("../../../../runbooks/META_002.md"),
    held_for: None,
    evaluate: |j| evaluate(j.meta, j.history, j.thresholds, j.now),
};

/// Raised when servers have reported different meta leaders (or some none) continuously for
/// longer than `disagreement_after`; shorter disagreements are only counted in the history.
pub fn evaluate(
    meta: &MetaAssessment,
    history: &History,
    thresholds: &Thresholds,
    now: SystemTime,
) -> Evaluation {
    let check = CheckId::META_002;
    let findings = match &history.disagreement {
        Some(d) => {
            let lasted = now.duration_since(d.since).unwrap_or_default();
            if lasted > thresholds.disagreement_after {
                vec![finding(meta, &d.groups, d.since, lasted)]
            } else {
                Vec::new()
            }
        }
        None => Vec::new(),
    };
    Evaluation::ran(check, meta, findings, BTreeSet::new())
}

fn label(leader: &Option<String>) -> String {
    leader.clone().unwrap_or_else(|| "no leader".to_string())
}

fn finding(
    meta: &MetaAssessment,
    groups: &[(Option<String>, Vec<String>)],
    since: SystemTime,
    lasted: std::time::Duration,
) -> Finding {
    let check = CheckId::META_002;
    let described: Vec<String> = groups
        .iter()
        .map(|(leader, servers)| format!("{} say {}", servers.join(", "), label(leader)))
        .collect();
    // The leader most servers follow is the real one; any other claimant is stale.
    let majority = groups
        .iter()
        .filter(|(l, _)| l.is_some())
        .max_by_key(|(_, servers)| servers.len())
        .and_then(|(l, _)| l.clone());
    let stale: Vec<String> = groups
        .iter()
        .filter_map(|(l, _)| l.clone())
        .filter(|l| Some(l) != majority.as_ref())
        .collect();
    let sides: Vec<String> = groups.iter().map(|(_, s)| s.join(", ")).collect();
    let mut remediation = vec![Remediation::with_command(
        format!(
            "Check route connectivity between the groups ({}): each server must have a route to every other; a partition or firewall change is the usual cause.",
            sides.join(" | ")
        ),
        "nats server report routes",
    )];
    if stale.is_empty() {
        remediation.push(Remediation::step(
            "Once routes are back, the servers that report no leader follow the elected one within seconds; nothing else is needed.",
        ));
    } else {
        remediation.push(Remediation::with_command(
            format!(
                "Once routes are back, the stale leader ({}) steps down by itself. If it does not within a minute, send the step-down request to it directly (nats server cluster step-down refuses while two leaders exist).",
                stale.join(", ")
            ),
            format!(
                "nats request '$JS.API.META.LEADER.STEPDOWN' '' --server {}",
                shell_quote(&format!(
                    "<url of {}>",
                    stale.first().map(String::as_str).unwrap_or("the stale leader")
                ))
            ),
        ));
        remediation.push(Remediation::step(format!(
            "Restart the stale leader ({}) only if it stays stuck after routes are healthy, and never restart several servers at once.",
            stale.join(", ")
        )));
    }
    let evidence_groups: Vec<serde_json::Value> = groups
        .iter()
        .map(|(leader, servers)| json!({"leader": leader, "servers": servers}))
        .collect();
    let fingerprint = groups
        .iter()
        .map(|(l, s)| format!("{}={}", label(l), s.join("+")))
        .collect::<Vec<_>>()
        .join(";");
    Finding {
        check,
        key: group_key(check, meta),
        cluster: None,
        domain: meta.domain.clone(),
        server: None,
        summary: format!(
            "Servers of {} disagree about the meta leader for {}: {}.",
            meta.describe_group(),
            seconds(lasted),
            described.join("; ")
        ),
        evidence: json!({
            "groups": evidence_groups,
            "since": crate::time_format::rfc3339(since),
            "lasted_ms": lasted.as_millis() as u64,
            "leader_followed_by_most": majority,
            "stale_leaders": stale,
        }),
        remediation,
        // Material: who says what.
        fingerprint,
    }
}
