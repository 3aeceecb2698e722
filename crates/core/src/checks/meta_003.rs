//! Evaluate: META_003 Meta leader flapping, one finding per meta group.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::members::MetaAssessment;
use super::{
    duration_words, group_key, CheckId, CheckSpec, Evaluation, Finding, Remediation, Setting,
    Severity, Thresholds,
};
use crate::history::History;
use crate::time_format::rfc3339;

impl CheckId {
    /// META_003 Meta leader flapping.
    pub const META_003: CheckId = CheckId::new("META_003");
}

/// META_003 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::META_003,
    name: "Meta leader flapping",
    severity: Severity::Warning,
    category: "jetstream_meta",
    applies_to: "the meta group (one finding per group: per JetStream domain)",
    threshold: |t| {
        format!(
            "the meta leader changed more than {} time{} within {}, the last within {}",
            t.flap_max,
            if t.flap_max == 1 { "" } else { "s" },
            duration_words(t.flap_window),
            duration_words(raise_within(t))
        )
    },
    settings: |t| {
        let d = Thresholds::default();
        vec![
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
        ]
    },
    runbook: include_str!("../../../../runbooks/META_003.md"),
    held_for: None,
    evaluate: |j| evaluate(j.meta, j.history, j.thresholds, j.now),
};

/// How recent the last leader change must be for flapping to be raised: a quarter of the
/// window, at most 30 s (an election is seen within a poll, or at once from its advisory).
pub fn raise_within(thresholds: &Thresholds) -> Duration {
    (thresholds.flap_window / 4).min(Duration::from_secs(30))
}

/// Raised when the leader changed more than `flap_max` times within `flap_window`, the last
/// within [`raise_within`]; resolves when the window no longer holds that many.
pub fn evaluate(
    meta: &MetaAssessment,
    history: &History,
    thresholds: &Thresholds,
    now: SystemTime,
) -> Evaluation {
    let check = CheckId::META_003;
    let window_start = now
        .checked_sub(thresholds.flap_window)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let changes = history.leader_changes_since(window_start);
    // Raised only on a recent change; kept (undecided) while older ones still count. When the
    // window lets go of a change, the instances' clocks disagree on the moment by their skew (and
    // a history loaded from the bucket carries another instance's clock): the one that lets go
    // first resolves, and the one behind must not raise it again on a change long past.
    let stale = changes
        .last()
        .is_some_and(|c| c.at < now.checked_sub(raise_within(thresholds)).unwrap_or(c.at));
    if changes.len() > thresholds.flap_max && stale {
        return Evaluation::ran(
            check,
            meta,
            Vec::new(),
            BTreeSet::from([group_key(check, meta)]),
        );
    }
    let findings = if changes.len() > thresholds.flap_max {
        let listed: Vec<serde_json::Value> = changes
            .iter()
            .map(|c| json!({"at": rfc3339(c.at), "from": c.from, "to": c.to, "source": c.source}))
            .collect();
        let path: Vec<String> = std::iter::once(changes[0].from.clone().unwrap_or_default())
            .chain(changes.iter().map(|c| c.to.clone()))
            .collect();
        let window = humantime::format_duration(thresholds.flap_window).to_string();
        vec![Finding {
            check,
            key: group_key(check, meta),
            cluster: None,
            domain: meta.domain.clone(),
            server: None,
            summary: format!(
                "The meta leader of {} changed {} times within {} ({}), more than the {} allowed.",
                meta.describe_group(),
                changes.len(),
                window,
                path.join(" → "),
                thresholds.flap_max
            ),
            evidence: json!({
                "changes": listed,
                "count": changes.len(),
                "window": window,
                "max": thresholds.flap_max,
                "leader": meta.leader,
            }),
            remediation: vec![
                Remediation::step(
                    "Check whether the step-downs were requested (an operator, automation, a rolling restart); if so, no action is needed once they stop.",
                ),
                Remediation::with_command(
                    "Otherwise look for what makes leaders lose their followers: CPU or disk stalls on the leaders, long GC pauses, route flaps or packet loss between the servers.",
                    "nats server report jetstream",
                ),
                Remediation::step(
                    "Do not restart servers to stop flapping: every restart forces another election.",
                ),
            ],
            // Material: a further change. Changes leaving the window are not news.
            fingerprint: changes
                .last()
                .map(|c| rfc3339(c.at))
                .unwrap_or_default(),
        }]
    } else {
        Vec::new()
    };
    Evaluation::ran(check, meta, findings, BTreeSet::new())
}
