//! Evaluate: META_106 Meta group leaderless, one finding per meta group.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use super::members::MemberState;
use super::{
    duration_words, group_key, seconds, CheckId, CheckSpec, Evaluation, Finding, Judged,
    Remediation, Setting, Severity,
};
use crate::thresholds::Thresholds;
use crate::time_format::rfc3339;

impl CheckId {
    /// META_106 Meta group leaderless (this project's own code; Synadia Insights calls the
    /// condition "Leaderless Raft Group").
    pub const META_106: CheckId = CheckId::new("META_106");
}

/// META_106 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::META_106,
    name: "Meta group leaderless",
    severity: Severity::Critical,
    category: "jetstream_meta",
    applies_to: "the meta group (one finding per group: per JetStream domain)",
    threshold: |t| {
        format!(
            "at least quorum_needed members are online (same rule as META_001), yet no server has \
             reported a meta leader for longer than {} since a quorum of members answers (raft's \
             longest election timeout is 9s)",
            duration_words(t.leaderless_after)
        )
    },
    settings: |t| {
        vec![
            Setting {
                name: "leaderless_after",
                flag: "--leaderless-after",
                env: "INSIGHTS_LEADERLESS_AFTER",
                value: duration_words(t.leaderless_after),
                default: duration_words(Thresholds::default().leaderless_after),
            },
            Setting::offline_after(t),
        ]
    },
    runbook: include_str!("../../../../runbooks/META_106.md"),
    held_for: None,
    evaluate,
};

/// Raised when no server has reported a leader for longer than `leaderless_after` while the
/// members online reach the quorum (fewer is META_006), counted from when a quorum of members
/// last began to answer if that is later. Undecided while too few are online but
/// enough could be, counting members this round could not judge.
pub fn evaluate(j: &Judged<'_>) -> Evaluation {
    let check = CheckId::META_106;
    let meta = j.meta;
    let key = group_key(check, meta);
    let online = meta.members.iter().filter(|m| m.online()).count();
    let undetermined: Vec<&str> = meta
        .members
        .iter()
        .filter(|m| m.state == MemberState::Unknown)
        .map(|m| m.name.as_str())
        .collect();
    let Some(since) = j.history.leaderless_since.filter(|_| meta.leader.is_none()) else {
        return Evaluation::ran(check, meta, Vec::new(), BTreeSet::new());
    };
    let leaderless_for = j.now.duration_since(since).unwrap_or_default();
    // Members that came back (after a quorum loss, a whole cluster started again) get a whole
    // election from the moment a quorum of them answers.
    let electing_since = j
        .history
        .quorum_answering_since
        .map_or(since, |quorum| quorum.max(since));
    let electing_for = j.now.duration_since(electing_since).unwrap_or_default();
    if electing_for <= j.thresholds.leaderless_after {
        return Evaluation::ran(check, meta, Vec::new(), BTreeSet::new());
    }
    if online < meta.quorum_needed {
        // Quorum lost (META_006), unless the members that could not be judged would make it up.
        let undecided = if online + undetermined.len() >= meta.quorum_needed {
            BTreeSet::from([key])
        } else {
            BTreeSet::new()
        };
        return Evaluation::ran(check, meta, Vec::new(), undecided);
    }
    let finding = finding(meta, online, since, leaderless_for, &undetermined);
    Evaluation::ran(check, meta, vec![finding], BTreeSet::new())
}

fn finding(
    meta: &super::MetaAssessment,
    online: usize,
    since: std::time::SystemTime,
    leaderless_for: Duration,
    undetermined: &[&str],
) -> Finding {
    let check = CheckId::META_106;
    let online_names: Vec<&str> = meta
        .members
        .iter()
        .filter(|m| m.online())
        .map(|m| m.name.as_str())
        .collect();
    let mut summary = format!(
        "{} has had no meta leader for {} although {} of {} members are online ({} needed for \
         quorum)",
        super::meta_006::capitalized(&meta.describe_group()),
        seconds(leaderless_for),
        online,
        meta.cluster_size,
        meta.quorum_needed
    );
    summary.push_str(": the members cannot elect one (longer than any raft election).");
    let remediation = vec![
        Remediation::with_command(
            "On each member's monitoring port, check that it has a route to every other member (num_routes, each route's remote_name): a member whose routes are cut can neither vote nor win.",
            "curl -s http://<member>:8222/routez",
        ),
        Remediation::with_command(
            "Compare each member's own view: which leader it names, its raft term and state (candidate terms that keep rising mean votes split or a member cannot reach the others).",
            "nats server request raft --group _meta_",
        ),
        Remediation::with_command(
            "Confirm that no leader is reported and which members answer.",
            "nats server report jetstream",
        ),
        Remediation::step(
            "Restore the routes (firewall, DNS, TLS, cluster port) first. If one member is stuck (high CPU, disk stalled, not answering raft), restart that one member only; never several at once, never peer-remove a member, never wipe a store directory.",
        ),
    ];
    Finding {
        check,
        key: group_key(check, meta),
        cluster: None,
        domain: meta.domain.clone(),
        server: None,
        summary,
        evidence: json!({
            "expected_members": meta.cluster_size,
            "quorum_needed": meta.quorum_needed,
            "members_online": online,
            "online": online_names,
            "undetermined": undetermined,
            "leaderless_since": rfc3339(since),
            "leaderless_for_ms": leaderless_for.as_millis() as u64,
            "leaders_reported": meta.leaders_reported,
        }),
        remediation,
        // Material: who is online (the duration moves every round).
        fingerprint: online_names.join(","),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::checks::members::leaderless_assessment;
    use crate::checks::{meta_006, Outcome};
    use crate::history::History;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    /// META_006's and META_106's findings for a group leaderless since t(0), judged at t(`at`).
    fn judge(online: &[&str], offline: &[&str], at: u64) -> (Vec<Finding>, Vec<Finding>) {
        let mut meta = leaderless_assessment(online, offline);
        meta.leaderless_since = Some(t(0));
        let history = History {
            leaderless_since: Some(t(0)),
            ..History::default()
        };
        let thresholds = Thresholds::default();
        let judged = Judged {
            meta: &meta,
            history: &history,
            thresholds: &thresholds,
            now: t(at),
            server_now: None,
            extras: &Default::default(),
        };
        let findings = |e: Evaluation| match e.outcome {
            Outcome::Ran { findings, .. } => findings,
            Outcome::Skipped { reason } => panic!("skipped: {reason}"),
            Outcome::Retired => panic!("retired"),
        };
        (
            findings((meta_006::SPEC.evaluate)(&judged)),
            findings(evaluate(&judged)),
        )
    }

    #[test]
    fn all_members_online_without_a_leader_for_an_election_raises_nothing() {
        let (quorum, leaderless) = judge(&["n1", "n2", "n3"], &[], 5);
        assert!(quorum.is_empty(), "{quorum:#?}");
        assert!(leaderless.is_empty(), "{leaderless:#?}");
        // Right at the hold, still nothing.
        let held = Thresholds::default().leaderless_after.as_secs();
        let (quorum, leaderless) = judge(&["n1", "n2", "n3"], &[], held);
        assert!(quorum.is_empty() && leaderless.is_empty());
    }

    #[test]
    fn all_members_online_without_a_leader_past_the_hold_is_leaderless_not_quorum_lost() {
        let (quorum, leaderless) = judge(&["n1", "n2", "n3"], &[], 15);
        assert!(quorum.is_empty(), "{quorum:#?}");
        assert_eq!(leaderless.len(), 1);
        let f = &leaderless[0];
        assert_eq!(f.key, "META_106/default");
        assert!(
            f.summary.starts_with(
                "Cluster C1 has had no meta leader for 15.0 s although 3 of 3 members are online"
            ),
            "{}",
            f.summary
        );
        assert!(!f.summary.contains("quorum lost"), "{}", f.summary);
        assert_eq!(f.evidence["members_online"], 3);
        assert_eq!(f.evidence["leaderless_for_ms"], 15_000);
        // No step that removes a member or starts servers: they are all up.
        assert!(f.remediation.iter().all(|r| !r
            .command
            .as_deref()
            .unwrap_or("")
            .contains("peer-remove")));
    }

    #[test]
    fn two_of_three_online_without_a_leader_is_still_leaderless() {
        let (quorum, leaderless) = judge(&["n1", "n2"], &["n3"], 15);
        assert!(quorum.is_empty(), "{quorum:#?}");
        assert_eq!(leaderless.len(), 1);
        assert!(leaderless[0].summary.contains("2 of 3 members are online"));
    }

    #[test]
    fn one_of_three_online_is_quorum_lost_only() {
        for at in [5, 15, 60] {
            let (quorum, leaderless) = judge(&["n1"], &["n2", "n3"], at);
            assert_eq!(quorum.len(), 1, "at {at}");
            assert!(
                quorum[0]
                    .summary
                    .contains("has lost quorum: 1 of 3 members online"),
                "{}",
                quorum[0].summary
            );
            assert!(leaderless.is_empty(), "at {at}: {leaderless:#?}");
        }
    }

    #[test]
    fn members_back_after_a_quorum_loss_get_a_whole_election_from_their_return() {
        let meta = leaderless_assessment(&["n1", "n2", "n3"], &[]);
        // Leaderless since t(0); a quorum answers again only from t(50).
        let history = History {
            leaderless_since: Some(t(0)),
            quorum_answering_since: Some(t(50)),
            ..History::default()
        };
        let thresholds = Thresholds::default();
        let at = |secs| match evaluate(&Judged {
            meta: &meta,
            history: &history,
            thresholds: &thresholds,
            now: t(secs),
            server_now: None,
            extras: &Default::default(),
        })
        .outcome
        {
            Outcome::Ran { findings, .. } => findings,
            Outcome::Skipped { reason } => panic!("skipped: {reason}"),
            Outcome::Retired => panic!("retired"),
        };
        assert!(at(55).is_empty());
        assert!(at(62).is_empty());
        let late = at(63);
        assert_eq!(late.len(), 1);
        // The summary says how long the group has really had no leader.
        assert!(
            late[0].summary.contains("no meta leader for 63.0 s"),
            "{}",
            late[0].summary
        );
    }

    #[test]
    fn too_few_online_but_enough_undetermined_is_undecided() {
        let mut meta = leaderless_assessment(&["n1", "n2", "n3"], &[]);
        for m in meta.members.iter_mut().skip(1) {
            m.state = MemberState::Unknown;
        }
        let history = History {
            leaderless_since: Some(t(0)),
            ..History::default()
        };
        let thresholds = Thresholds::default();
        let e = evaluate(&Judged {
            meta: &meta,
            history: &history,
            thresholds: &thresholds,
            now: t(30),
            server_now: None,
            extras: &Default::default(),
        });
        assert_eq!(
            e.outcome,
            Outcome::Ran {
                findings: Vec::new(),
                undecided: BTreeSet::from(["META_106/default".to_string()]),
            }
        );
    }
}
