//! Evaluate: META_004 Meta snapshot slow, one finding per meta member whose own last meta
//! snapshot took too long (JSZ `meta_cluster.snapshot`, nats-server 2.11.11, 2.12.2, 2.14.0 and
//! later).

use std::time::Duration;

use serde_json::json;

use super::{
    seconds, server_key, CheckId, CheckSpec, Evaluation, Finding, Judged, Remediation, Severity,
};

impl CheckId {
    /// META_004 Meta snapshot slow (Synadia Insights' code for the same condition).
    pub const META_004: CheckId = CheckId::new("META_004");
}

/// A last meta snapshot slower than this raises the finding (Insights' META_004 warning).
pub const SNAPSHOT_SLOW: Duration = Duration::from_secs(5);
/// ... and slower than this, the finding says critical (Insights' META_004 critical level).
pub const SNAPSHOT_CRITICAL: Duration = Duration::from_secs(30);

/// META_004 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::META_004,
    name: "Meta snapshot slow",
    severity: Severity::Warning,
    category: "jetstream_meta",
    applies_to: "each meta member (its own meta snapshots)",
    threshold: |_| {
        format!(
            "a member's last meta snapshot (JSZ meta_cluster.snapshot.last_duration) took longer \
             than {}; longer than {} the finding's level is critical",
            seconds(SNAPSHOT_SLOW),
            seconds(SNAPSHOT_CRITICAL)
        )
    },
    settings: |_| Vec::new(),
    runbook: include_str!("../../../../runbooks/META_004.md"),
    held_for: None,
    evaluate,
};

/// Raised for each member whose own view arrived and reports a last meta snapshot slower than
/// [`SNAPSHOT_SLOW`]. A member whose view did not arrive this poll (silent, or not sampled in a
/// large group) or that lacks the field (an older server) is undecided: unknown, never ok. A
/// member that has taken no snapshot since it started shows nothing slow. When no member whose
/// view arrived reports the field, the check is skipped, with the reason.
pub fn evaluate(j: &Judged<'_>) -> Evaluation {
    let check = CheckId::META_004;
    let meta = j.meta;
    let mut findings = Vec::new();
    // Keys of the members it cannot judge, in name order, made a set with the unlisted ones at
    // the end: built only when needed, and inserted one by one they cost more than the rest of
    // the check (a large group's poll has a thousand identity-only members).
    let mut unjudged = Vec::new();
    let mut reporting = 0;
    let mut without_field = Vec::new();
    for member in &meta.members {
        let key = || server_key(check, meta, &member.name);
        let Some(facts) = &member.facts else {
            unjudged.push(key());
            continue;
        };
        let Some(snap) = &facts.snapshot else {
            without_field.push(member.name.as_str());
            unjudged.push(key());
            continue;
        };
        reporting += 1;
        let (Some(taken), Some(ns)) = (snap.last_taken(), snap.last_duration) else {
            continue;
        };
        let took = Duration::from_nanos(ns);
        if took <= SNAPSHOT_SLOW {
            continue;
        }
        let critical = took > SNAPSHOT_CRITICAL;
        let level = if critical { "critical" } else { "warning" };
        findings.push(Finding {
            check,
            key: key(),
            cluster: member.cluster.clone(),
            domain: meta.domain.clone(),
            server: Some(member.name.clone()),
            summary: format!(
                "{}'s last meta snapshot took {} (at {taken}), over the {} {}: while it \
                 compacts, the meta layer of {} is slow to apply stream and consumer changes, \
                 and a member that falls behind must catch up from a snapshot as large.",
                meta.member_label(member),
                seconds(took),
                seconds(if critical { SNAPSHOT_CRITICAL } else { SNAPSHOT_SLOW }),
                if critical { "critical level" } else { "warning level" },
                meta.describe_group(),
            ),
            evidence: json!({
                "last_duration_ms": took.as_millis() as u64,
                "last_time": taken,
                "pending_entries": snap.pending_entries,
                "pending_size": snap.pending_size,
                "level": level,
                "warning_after_ms": SNAPSHOT_SLOW.as_millis() as u64,
                "critical_after_ms": SNAPSHOT_CRITICAL.as_millis() as u64,
            }),
            remediation: vec![
                Remediation::with_command(
                    "Read the member's snapshot figures (meta_cluster.snapshot) and the size of the meta state (streams, consumers).",
                    "nats server request jetstream",
                ),
                Remediation::step(
                    "Look in the server's log for \"Metalayer snapshot generation took\" or \"blocking snapshot\" warnings: they give the stream and consumer counts and whether marshalling or compression dominated.",
                ),
                Remediation::step(
                    "Reduce the meta state (remove unused streams and consumers, prefer fewer durable consumers to many ephemeral ones) and give the server CPU: a starved or overloaded member snapshots slowly (META_005 counts the replicas).",
                ),
            ],
            // Material: the level.
            fingerprint: level.to_string(),
        });
    }
    if reporting == 0 && !without_field.is_empty() {
        return Evaluation::skipped(
            check,
            &meta.group,
            &format!(
                "no member reports meta_cluster.snapshot (nats-server 2.11.11, 2.12.2, 2.14.0 \
                 and later): {} without it",
                without_field.join(", ")
            ),
        );
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
    use crate::checks::test_support::{judge_fixture, keys, set_meta_field};

    fn with_snapshot(server: &str, snapshot: serde_json::Value) -> Vec<serde_json::Value> {
        let mut replies = crate::checks::test_support::fixture("healthy_3.json");
        set_meta_field(&mut replies, server, "snapshot", snapshot);
        replies
    }

    #[test]
    fn a_slow_snapshot_is_a_warning_and_a_very_slow_one_critical() {
        let slow = json!({"pending_entries": 3, "pending_size": 900,
            "last_time": "2026-11-24T08:25:00Z", "last_duration": 6_500_000_000u64});
        let replies = with_snapshot("n2", slow);
        let (findings, undecided) = keys(&judge_fixture(&replies, evaluate));
        assert_eq!(findings, ["META_004/default/n2"]);
        assert!(undecided.is_empty(), "{undecided:?}");

        let mut replies = replies;
        let very = json!({"last_time": "2026-11-24T08:25:00Z", "last_duration": 31_000_000_000u64});
        set_meta_field(&mut replies, "n2", "snapshot", very);
        let e = judge_fixture(&replies, evaluate);
        let f = crate::checks::test_support::findings(&e);
        assert_eq!(f[0].fingerprint, "critical");
        assert!(f[0].summary.contains("31.0 s"), "{}", f[0].summary);
    }

    #[test]
    fn the_captured_reply_without_a_snapshot_yet_raises_nothing() {
        let replies = crate::checks::test_support::fixture("healthy_3.json");
        let (findings, undecided) = keys(&judge_fixture(&replies, evaluate));
        assert!(
            findings.is_empty() && undecided.is_empty(),
            "{findings:?} {undecided:?}"
        );
    }

    #[test]
    fn a_server_without_the_field_is_unknown_and_none_with_it_skips() {
        let mut replies = crate::checks::test_support::fixture("healthy_3.json");
        for r in &mut replies {
            if let Some(m) = r["data"]["meta_cluster"].as_object_mut() {
                m.remove("snapshot");
            }
        }
        let e = judge_fixture(&replies, evaluate);
        assert!(
            matches!(e.outcome, crate::checks::Outcome::Skipped { .. }),
            "{e:?}"
        );

        let mut replies = crate::checks::test_support::fixture("healthy_3.json");
        if let Some(m) = replies[2]["data"]["meta_cluster"].as_object_mut() {
            m.remove("snapshot");
        }
        let (findings, undecided) = keys(&judge_fixture(&replies, evaluate));
        assert!(findings.is_empty());
        assert_eq!(undecided, ["META_004/default/n3"]);
    }
}
