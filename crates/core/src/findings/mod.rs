//! Reconcile: the third stage. Turns this round's evaluations into the next set of active findings
//! and the transitions (raised, updated, resolved) that must be published: nothing is repeated per
//! poll, and a check that could not judge something never resolves it.
//!
//! Identity: a finding key lives through *episodes* (raised ... resolved), numbered per key from
//! one within an *epoch* (a random name the deployment's memory of episodes carries, new whenever
//! that memory starts empty). A transition is (epoch, key, episode, kind, revision); its event id
//! is derived from that alone ([`crate::wire::event_id`]), so every instance that publishes
//! the same transition sends the same id, whatever its clock says, and no two transitions share
//! one (docs/ha.md).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::checks::{Evaluation, Finding, Outcome};
use crate::observe::GroupId;

/// A finding that is currently raised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveFinding {
    /// The finding as last evaluated (evidence refreshed each round).
    pub finding: Finding,
    /// Which episode of its key this is: one more than the last episode that ended (records
    /// of versions before episodes were numbered read as 0).
    #[serde(default)]
    pub episode: u64,
    /// The epoch its episode was raised in (empty in records of versions before epochs): with
    /// the key and the episode it names the episode forever, across lost memory
    /// ([`crate::ha::Ledger::epoch`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// Revision of the last published event.
    pub revision: u64,
    /// When it was raised.
    pub raised_at: SystemTime,
    /// When the last event was published.
    pub changed_at: SystemTime,
}

/// Active findings by key.
pub type ActiveSet = BTreeMap<String, ActiveFinding>;

/// The last episode that ended, by key: a new raise of a key is episode one more than this (1
/// for a key never seen).
pub type Episodes = BTreeMap<String, u64>;

/// The episode a new raise of `key` starts (saturating: numbers that came from the network are
/// bounded before they get here, and arithmetic on them never wraps).
pub fn next_episode(ended: &Episodes, key: &str) -> u64 {
    ended.get(key).map_or(1, |e| e.saturating_add(1))
}

/// Fingerprint of a finding learned from another instance's event, which does not carry the
/// fingerprint: the next evaluation's fingerprint is taken as is, without an UPDATED event.
pub const ADOPTED_FINGERPRINT: &str = "\u{0}adopted";

/// What happened to a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransitionKind {
    /// Newly found.
    Raised,
    /// Its material facts changed.
    Updated,
    /// The condition cleared.
    Resolved,
}

impl TransitionKind {
    /// Lowercase name, as in the event body.
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionKind::Raised => "raised",
            TransitionKind::Updated => "updated",
            TransitionKind::Resolved => "resolved",
        }
    }

    /// Uppercase name, as in the subject.
    pub fn subject_token(self) -> &'static str {
        match self {
            TransitionKind::Raised => "RAISED",
            TransitionKind::Updated => "UPDATED",
            TransitionKind::Resolved => "RESOLVED",
        }
    }
}

/// One event to publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Raised, updated or resolved.
    pub kind: TransitionKind,
    /// The finding (for resolved: as last seen while active).
    pub finding: Finding,
    /// The episode of the finding's key it belongs to.
    pub episode: u64,
    /// The epoch the episode was raised in; empty on a raise until the HA coordinator stamps
    /// the deployment's epoch on it as it publishes it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// Grows with every event of the same episode (a raise is 1).
    pub revision: u64,
    /// When the finding was raised.
    pub raised_at: SystemTime,
    /// When this transition happened.
    pub at: SystemTime,
}

/// Computes the next active set and the transitions from the previous set and this round's results.
/// An evaluation judges one check on one meta group: it resolves only that group's findings of
/// that check. Findings of checks or groups absent from `evaluations`, skipped, or keyed as
/// undecided are carried over. A new raise starts the episode after the one `ended` names.
pub fn reconcile(
    previous: &ActiveSet,
    ended: &Episodes,
    evaluations: &[Evaluation],
    now: SystemTime,
) -> (ActiveSet, Vec<Transition>) {
    let mut next = previous.clone();
    let mut transitions = Vec::new();
    // What each evaluation may resolve, indexed once: scanning every active finding for each of
    // the (checks x groups) evaluations grew with their product (27 ms at 3,000 groups).
    let mut by_scope: BTreeMap<(crate::checks::CheckId, GroupId), Vec<&str>> = BTreeMap::new();
    for (key, active) in previous {
        by_scope
            .entry((
                active.finding.check,
                GroupId::of(active.finding.domain.as_deref()),
            ))
            .or_default()
            .push(key.as_str());
    }
    let nothing = (Vec::new(), BTreeSet::new());
    for evaluation in evaluations {
        let (findings, undecided, held_for) = match &evaluation.outcome {
            Outcome::Ran {
                findings,
                undecided,
            } => (findings, undecided, evaluation.check.spec().held_for),
            Outcome::Retired => (&nothing.0, &nothing.1, None),
            Outcome::Skipped { .. } => continue,
        };
        let mut current: BTreeMap<&str, &Finding> = BTreeMap::new();
        for finding in findings {
            current.insert(finding.key.as_str(), finding);
        }
        for (key, finding) in &current {
            match next.get_mut(*key) {
                None => {
                    let active = ActiveFinding {
                        finding: (*finding).clone(),
                        episode: next_episode(ended, key),
                        epoch: String::new(),
                        revision: 1,
                        raised_at: now,
                        changed_at: now,
                    };
                    transitions.push(transition(TransitionKind::Raised, &active, now));
                    next.insert((*key).to_string(), active);
                }
                Some(active) => {
                    let material = active.finding.fingerprint != ADOPTED_FINGERPRINT
                        && active.finding.fingerprint != finding.fingerprint;
                    active.finding = (*finding).clone();
                    if material {
                        active.revision = active.revision.saturating_add(1);
                        active.changed_at = now;
                        transitions.push(transition(TransitionKind::Updated, active, now));
                    }
                }
            }
        }
        let cleared: Vec<String> = by_scope
            .get(&(evaluation.check, evaluation.group.clone()))
            .into_iter()
            .flatten()
            .filter(|key| !current.contains_key(**key) && !undecided.contains(**key))
            .filter(|key| {
                let held = |h| {
                    previous
                        .get(**key)
                        .is_some_and(|a| held(a.changed_at, h, now))
                };
                !held_for.is_some_and(held)
            })
            .map(|key| key.to_string())
            .collect();
        for key in cleared {
            if let Some(mut active) = next.remove(&key) {
                active.revision = active.revision.saturating_add(1);
                transitions.push(transition(TransitionKind::Resolved, &active, now));
            }
        }
    }
    (next, transitions)
}

/// Whether a finding of a check whose findings are held for `hold` (a noted event, see
/// [`crate::checks::CheckSpec::held_for`]) and that last changed at `changed_at` is still held at
/// `now`. A `changed_at` ahead of `now` comes from a peer's clock or a forged record: within
/// `hold` ahead it holds until `changed_at + hold`, further ahead not at all, so no record can hold
/// a finding longer than twice its hold.
fn held(changed_at: SystemTime, hold: Duration, now: SystemTime) -> bool {
    match changed_at.duration_since(now) {
        // Ahead of `now` (or equal).
        Ok(ahead) => ahead <= hold,
        Err(behind) => behind.duration() < hold,
    }
}

fn transition(kind: TransitionKind, active: &ActiveFinding, now: SystemTime) -> Transition {
    Transition {
        kind,
        finding: active.finding.clone(),
        episode: active.episode,
        epoch: active.epoch.clone(),
        revision: active.revision,
        raised_at: active.raised_at,
        at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{CheckId, Outcome};
    use std::collections::BTreeSet;
    use std::time::Duration;

    fn finding(check: CheckId, key: &str, fingerprint: &str) -> Finding {
        Finding {
            check,
            key: key.to_string(),
            cluster: None,
            domain: None,
            server: None,
            summary: "s".into(),
            evidence: serde_json::json!({}),
            remediation: vec![],
            fingerprint: fingerprint.to_string(),
        }
    }

    fn ran(check: CheckId, findings: Vec<Finding>, undecided: &[&str]) -> Evaluation {
        Evaluation {
            check,
            group: GroupId::default(),
            outcome: Outcome::Ran {
                findings,
                undecided: undecided
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<BTreeSet<_>>(),
            },
        }
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn raises_once_then_stays_quiet_then_resolves_once() {
        let f = finding(CheckId::META_001, "k", "a");
        let (s1, t1) = reconcile(
            &ActiveSet::new(),
            &Episodes::new(),
            &[ran(CheckId::META_001, vec![f.clone()], &[])],
            t(1),
        );
        assert_eq!(t1.len(), 1);
        assert_eq!(t1[0].kind, TransitionKind::Raised);
        assert_eq!(t1[0].revision, 1);
        let (s2, t2) = reconcile(
            &s1,
            &Episodes::new(),
            &[ran(CheckId::META_001, vec![f.clone()], &[])],
            t(2),
        );
        assert!(t2.is_empty());
        let (s3, t3) = reconcile(
            &s2,
            &Episodes::new(),
            &[ran(CheckId::META_001, vec![], &[])],
            t(3),
        );
        assert!(s3.is_empty());
        assert_eq!(t3[0].kind, TransitionKind::Resolved);
        assert_eq!(t3[0].revision, 2);
        assert_eq!(t3[0].raised_at, t(1));
    }

    /// A noted event (SERVER_101: a restart, held five minutes) raised by a peer that saw it is
    /// not resolved by a round that did not see it until its hold has passed; a record dated
    /// further ahead than its hold (a forged or wildly skewed one) holds nothing.
    #[test]
    fn a_held_finding_outlives_rounds_that_miss_its_event_until_its_hold_ends() {
        let check = CheckId::SERVER_101;
        let hold = check.spec().held_for.expect("SERVER_101 is held");
        let base = 1_000_000;
        let (raised, _) = reconcile(
            &ActiveSet::new(),
            &Episodes::new(),
            &[ran(check, vec![finding(check, "k", "id-2")], &[])],
            t(base),
        );
        let missed = [ran(check, vec![], &[])];
        let (kept, quiet) = reconcile(&raised, &Episodes::new(), &missed, t(base + 1));
        assert!(quiet.is_empty(), "{quiet:?}");
        let last = t(base) + hold - Duration::from_secs(1);
        let (kept, quiet) = reconcile(&kept, &Episodes::new(), &missed, last);
        assert!(quiet.is_empty() && kept.contains_key("k"));
        let (gone, resolved) = reconcile(&kept, &Episodes::new(), &missed, t(base) + hold);
        assert!(gone.is_empty());
        assert_eq!(resolved[0].kind, TransitionKind::Resolved);

        // Dated ahead of the round: by a clock within the hold, held; by more, not.
        let mut ahead = raised.clone();
        if let Some(a) = ahead.get_mut("k") {
            a.changed_at = t(base) + Duration::from_secs(5);
        }
        let (kept, quiet) = reconcile(&ahead, &Episodes::new(), &missed, t(base));
        assert!(quiet.is_empty() && kept.contains_key("k"));
        let mut forged = raised.clone();
        if let Some(a) = forged.get_mut("k") {
            a.changed_at = t(253_402_300_799);
        }
        let (gone, resolved) = reconcile(&forged, &Episodes::new(), &missed, t(base));
        assert!(gone.is_empty());
        assert_eq!(resolved[0].kind, TransitionKind::Resolved);

        // A group an operator retired resolves its held findings too.
        let retired = [Evaluation {
            check,
            group: GroupId::default(),
            outcome: Outcome::Retired,
        }];
        let (gone, resolved) = reconcile(&raised, &Episodes::new(), &retired, t(base + 1));
        assert!(gone.is_empty());
        assert_eq!(resolved[0].kind, TransitionKind::Resolved);

        // A check of a condition is not held: the same round resolves META_001 at once.
        assert_eq!(CheckId::META_001.spec().held_for, None);
    }

    #[test]
    fn material_change_updates_and_evidence_change_does_not() {
        let (s1, _) = reconcile(
            &ActiveSet::new(),
            &Episodes::new(),
            &[ran(
                CheckId::META_006,
                vec![finding(CheckId::META_006, "k", "n2")],
                &[],
            )],
            t(1),
        );
        let mut moved = finding(CheckId::META_006, "k", "n2");
        moved.evidence = serde_json::json!({"active": 5});
        let (s2, t2) = reconcile(
            &s1,
            &Episodes::new(),
            &[ran(CheckId::META_006, vec![moved], &[])],
            t(2),
        );
        assert!(t2.is_empty());
        assert_eq!(s2["k"].finding.evidence["active"], 5);
        let (s3, t3) = reconcile(
            &s2,
            &Episodes::new(),
            &[ran(
                CheckId::META_006,
                vec![finding(CheckId::META_006, "k", "n2,n3")],
                &[],
            )],
            t(3),
        );
        assert_eq!(t3[0].kind, TransitionKind::Updated);
        assert_eq!(s3["k"].revision, 2);
    }

    #[test]
    fn an_adopted_finding_takes_the_next_fingerprint_without_an_update() {
        let mut adopted = finding(CheckId::META_006, "k", ADOPTED_FINGERPRINT);
        adopted.summary = "from a peer".into();
        let previous: ActiveSet = [(
            "k".to_string(),
            ActiveFinding {
                finding: adopted,
                episode: 1,
                epoch: String::new(),
                revision: 3,
                raised_at: t(1),
                changed_at: t(1),
            },
        )]
        .into_iter()
        .collect();
        let evaluated = vec![finding(CheckId::META_006, "k", "n2,n3")];
        let (s1, t1) = reconcile(
            &previous,
            &Episodes::new(),
            &[ran(CheckId::META_006, evaluated, &[])],
            t(2),
        );
        assert!(t1.is_empty(), "{t1:?}");
        assert_eq!(s1["k"].finding.fingerprint, "n2,n3");
        assert_eq!(s1["k"].revision, 3);
    }

    #[test]
    fn a_raise_after_an_ended_episode_starts_the_next_one() {
        let f = finding(CheckId::META_001, "k", "a");
        let ended: Episodes = [("k".to_string(), 4)].into_iter().collect();
        let (s1, t1) = reconcile(
            &ActiveSet::new(),
            &ended,
            &[ran(CheckId::META_001, vec![f], &[])],
            t(1),
        );
        assert_eq!((t1[0].episode, t1[0].revision), (5, 1));
        let (_, t2) = reconcile(&s1, &ended, &[ran(CheckId::META_001, vec![], &[])], t(2));
        assert_eq!(
            (t2[0].kind, t2[0].episode, t2[0].revision),
            (TransitionKind::Resolved, 5, 2)
        );
    }

    #[test]
    fn skipped_and_undecided_never_resolve() {
        let f = finding(CheckId::META_001, "k", "a");
        let (s1, _) = reconcile(
            &ActiveSet::new(),
            &Episodes::new(),
            &[ran(CheckId::META_001, vec![f], &[])],
            t(1),
        );
        let skipped = Evaluation {
            check: CheckId::META_001,
            group: GroupId::default(),
            outcome: Outcome::Skipped {
                reason: "no data".into(),
            },
        };
        let (s2, t2) = reconcile(&s1, &Episodes::new(), &[skipped], t(2));
        assert!(t2.is_empty());
        let (s3, t3) = reconcile(
            &s2,
            &Episodes::new(),
            &[ran(CheckId::META_001, vec![], &["k"])],
            t(3),
        );
        assert!(t3.is_empty());
        assert!(s3.contains_key("k"));
    }

    #[test]
    fn other_checks_findings_are_untouched() {
        let (s1, _) = reconcile(
            &ActiveSet::new(),
            &Episodes::new(),
            &[ran(
                CheckId::META_006,
                vec![finding(CheckId::META_006, "g", "x")],
                &[],
            )],
            t(1),
        );
        let (s2, t2) = reconcile(
            &s1,
            &Episodes::new(),
            &[ran(CheckId::META_001, vec![], &[])],
            t(2),
        );
        assert!(t2.is_empty());
        assert!(s2.contains_key("g"));
    }
}
