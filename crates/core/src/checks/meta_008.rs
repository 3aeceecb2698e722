//! Evaluate: META_008 Meta pending high, one finding per meta group.

use std::collections::BTreeSet;

use serde_json::json;

use super::{
    duration_words, group_key, seconds, CheckId, CheckSpec, Evaluation, Finding, Judged,
    Remediation, Setting, Severity, Thresholds,
};

impl CheckId {
    /// META_008 Meta pending high (Synadia Insights' code).
    pub const META_008: CheckId = CheckId::new("META_008");
}

/// META_008 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::META_008,
    name: "Meta pending high",
    severity: Severity::Warning,
    category: "jetstream_meta",
    applies_to: "the meta group (one finding per group: per JetStream domain)",
    threshold: |t| {
        format!(
            "the meta leader has more than {} JetStream API requests pending for longer than {}",
            t.pending_max,
            duration_words(t.pending_after)
        )
    },
    settings: |t| {
        let d = Thresholds::default();
        vec![
            Setting {
                name: "pending_max",
                flag: "--pending-max",
                env: "INSIGHTS_PENDING_MAX",
                value: t.pending_max.to_string(),
                default: d.pending_max.to_string(),
            },
            Setting {
                name: "pending_after",
                flag: "--pending-after",
                env: "INSIGHTS_PENDING_AFTER",
                value: duration_words(t.pending_after),
                default: duration_words(d.pending_after),
            },
        ]
    },
    runbook: include_str!("../../../../runbooks/META_008.md"),
    held_for: None,
    evaluate,
};

/// Raised when the leader's `pending` (its queued JetStream API requests) has stayed above
/// `pending_max` for longer than `pending_after`; undecided while no leader answers (its
/// figure is the only one that counts).
pub fn evaluate(j: &Judged<'_>) -> Evaluation {
    let check = CheckId::META_008;
    let meta = j.meta;
    let key = group_key(check, meta);
    let (Some(leader), Some(pending)) = (meta.leader.as_ref(), meta.pending) else {
        return Evaluation::ran(check, meta, Vec::new(), BTreeSet::from([key]));
    };
    let max = j.thresholds.pending_max;
    let held = j
        .history
        .pending_high_since
        .map(|since| j.now.duration_since(since).unwrap_or_default());
    let findings = match held {
        Some(held) if pending > max && held >= j.thresholds.pending_after => vec![Finding {
            check,
            key,
            cluster: None,
            domain: meta.domain.clone(),
            server: Some(leader.clone()),
            summary: format!(
                "The meta leader {leader} of {} has {pending} JetStream API requests pending, \
                 above the {max} allowed, for {}: API calls (stream and consumer create, info, \
                 delete) wait behind them and time out.",
                meta.describe_group(),
                seconds(held)
            ),
            evidence: json!({
                "leader": leader,
                "pending": pending,
                "max": max,
                "above_for_ms": held.as_millis() as u64,
            }),
            remediation: vec![
                Remediation::with_command(
                    "Find who floods the JetStream API (consumer-create storms after a reconnect, tools polling stream info): the busiest calls by type, account and stream (natscli 0.4 or newer).",
                    "nats server watch api requests",
                ),
                Remediation::with_command(
                    "See whether the queue already overflowed and requests were dropped.",
                    "nats sub '$JS.EVENT.ADVISORY.API.LIMIT_REACHED'",
                ),
                Remediation::with_command(
                    "Check the leader itself for CPU or disk stalls; if it is the slow one, move the leadership to a healthy server.",
                    "nats server cluster step-down",
                ),
                Remediation::step(
                    "Do not restart servers to clear the queue: every restart adds an election and reconnecting clients add requests.",
                ),
            ],
            // The queue length moves every poll; only who leads is material.
            fingerprint: leader.clone(),
        }],
        _ => Vec::new(),
    };
    Evaluation::ran(check, meta, findings, BTreeSet::new())
}
