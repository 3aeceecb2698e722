//! Evaluate: META_107 Lazy fsync, one finding per meta member whose JetStream flushes writes to
//! disk on a timer (JSZ `config.sync_interval`) longer than `--sync-interval-max`, not before
//! acknowledging them (`sync_interval: always`, JSZ `config.sync_always`).

use std::time::Duration;

use serde_json::json;

use super::{
    duration_words, server_key, CheckId, CheckSpec, Evaluation, Finding, Judged, Remediation,
    Setting, Severity, Thresholds,
};

impl CheckId {
    /// META_107 Lazy fsync (this project's own code).
    pub const META_107: CheckId = CheckId::new("META_107");
}

/// META_107 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::META_107,
    name: "Lazy fsync",
    severity: Severity::Info,
    category: "jetstream_config",
    applies_to: "each meta member (its own JetStream configuration)",
    threshold: |t| {
        format!(
            "a member's JetStream flushes writes to disk less often than every {} (JSZ \
             config.sync_interval; the server's default is 2m) and not before acknowledging \
             them (config.sync_always)",
            duration_words(t.sync_interval_max)
        )
    },
    settings: |t| {
        vec![Setting {
            name: "sync_interval_max",
            flag: "--sync-interval-max",
            env: "INSIGHTS_SYNC_INTERVAL_MAX",
            value: duration_words(t.sync_interval_max),
            default: duration_words(Thresholds::default().sync_interval_max),
        }]
    },
    runbook: include_str!("../../../../runbooks/META_107.md"),
    held_for: None,
    evaluate,
};

/// Raised for each member whose own view arrived this poll and reports `sync_always` unset and a
/// `sync_interval` longer than the limit. A member whose view did not arrive (silent, or not
/// sampled in a large group: its configuration changes only with a restart, so its finding
/// keeps its state until its view is sampled again) or whose reply lacks the figures is
/// undecided.
pub fn evaluate(j: &Judged<'_>) -> Evaluation {
    let check = CheckId::META_107;
    let meta = j.meta;
    let mut findings = Vec::new();
    // Keys of the members it cannot judge, in name order, made a set with the unlisted ones at
    // the end: built only when needed, and inserted one by one they cost more than the rest of
    // the check (a large group's poll has a thousand identity-only members).
    let mut unjudged = Vec::new();
    let max = j.thresholds.sync_interval_max;
    for member in &meta.members {
        let key = || server_key(check, meta, &member.name);
        let Some(config) = member.facts.as_ref().and_then(|f| f.config.as_ref()) else {
            unjudged.push(key());
            continue;
        };
        if config.sync_always == Some(true) {
            continue;
        }
        let Some(interval) = config.sync_interval.map(Duration::from_nanos) else {
            unjudged.push(key());
            continue;
        };
        if interval <= max {
            continue;
        }
        let every = duration_words(interval);
        findings.push(Finding {
            check,
            key: key(),
            cluster: member.cluster.clone(),
            domain: meta.domain.clone(),
            server: Some(member.name.clone()),
            summary: format!(
                "{} acknowledges JetStream writes before they are on disk: it flushes every \
                 {every} (sync_interval), so if it and other replicas of a stream lose power or \
                 their OS at about the same time, acknowledged messages of up to the last \
                 {every} can be lost (Jepsen, NATS 2.12.1). Set `jetstream {{ sync_interval: \
                 always }}`, or a shorter interval, and restart it.",
                meta.member_label(member),
            ),
            evidence: json!({
                "sync_interval_ms": interval.as_millis() as u64,
                "sync_always": false,
                "limit_ms": max.as_millis() as u64,
            }),
            remediation: vec![
                Remediation::step(
                    "To flush every write before it is acknowledged, set `sync_interval: always` in the server's jetstream block. Measure first: each publish then waits for an fsync, which lowers throughput and raises latency, most on slow disks.",
                ),
                Remediation::step(
                    "Or shorten the window: `sync_interval: 10s` limits what a coordinated power loss can take to the last 10 seconds, at the cost of more frequent flushes.",
                ),
                Remediation::step(
                    "Restart the server to apply it (a configuration reload does not change sync_interval), one server at a time, waiting until it is current again; then check its JSZ config.",
                ),
                Remediation::with_command(
                    "Check the setting each server reports (config.sync_interval, config.sync_always).",
                    "nats server request jetstream",
                ),
            ],
            // Material: the interval.
            fingerprint: interval.as_nanos().to_string(),
        });
    }
    let undecided = super::unlisted_known(check, meta, j.history)
        .into_iter()
        .chain(unjudged)
        .collect();
    Evaluation::ran(check, meta, findings, undecided)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_support::{fixture, judge_with, keys, set_data_field};

    #[test]
    fn the_default_interval_is_found_and_always_is_not() {
        let mut replies = fixture("healthy_3.json");
        set_data_field(
            &mut replies,
            "n3",
            "config",
            json!({"sync_interval": 120_000_000_000u64, "sync_always": true}),
        );
        let e = judge_with(&replies, &[], &Thresholds::default(), evaluate);
        let (findings, undecided) = keys(&e);
        assert_eq!(findings, ["META_107/default/n1", "META_107/default/n2"]);
        assert!(undecided.is_empty());
        let f = crate::checks::test_support::findings(&e);
        assert!(f[0].summary.contains("every 2m"), "{}", f[0].summary);
        assert!(
            f[0].summary.contains("sync_interval: always"),
            "{}",
            f[0].summary
        );
    }

    #[test]
    fn a_short_interval_passes_and_a_raised_limit_accepts_the_default() {
        let mut replies = fixture("healthy_3.json");
        set_data_field(
            &mut replies,
            "n1",
            "config",
            json!({"sync_interval": 10_000_000_000u64}),
        );
        let (findings, _) = keys(&judge_with(&replies, &[], &Thresholds::default(), evaluate));
        assert_eq!(findings, ["META_107/default/n2", "META_107/default/n3"]);
        let lenient = Thresholds {
            sync_interval_max: Duration::from_secs(120),
            ..Thresholds::default()
        };
        let (findings, _) = keys(&judge_with(&replies, &[], &lenient, evaluate));
        assert!(findings.is_empty());
    }

    #[test]
    fn unsampled_or_unreported_servers_are_undecided() {
        let mut replies = fixture("healthy_3.json");
        set_data_field(&mut replies, "n2", "config", json!({"max_memory": 1}));
        let (findings, undecided) = keys(&judge_with(
            &replies,
            &["n3"],
            &Thresholds::default(),
            evaluate,
        ));
        assert_eq!(findings, ["META_107/default/n1"]);
        assert_eq!(undecided, ["META_107/default/n2", "META_107/default/n3"]);
    }
}
