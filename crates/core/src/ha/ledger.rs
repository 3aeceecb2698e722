//! What has been published about each finding key, as far as one instance knows: the active
//! findings and the last episode each key ended with. Instances merge ledgers by [`Mark`], so
//! the merge is the same whichever order the news arrives in, and no clock takes part.

use serde::{Deserialize, Serialize};

use crate::findings::{ActiveFinding, ActiveSet, Episodes, Transition, TransitionKind};
use crate::record::{Mark, Record};

/// Published state by key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// Raised and not resolved.
    pub active: ActiveSet,
    /// The last episode that ended, by key.
    pub ended: Episodes,
    /// The epoch new raises are numbered in: a random name minted whenever an instance starts
    /// with no memory of episodes (no bucket record of one, no peer), so episode numbers that
    /// start again from one never name an earlier episode. An instance takes the epoch of a
    /// peer that started before it (so all converge on the longest-running one's): the merged
    /// ledgers remember every episode either numbered, so numbering on from their merge
    /// repeats none, in either epoch.
    #[serde(default)]
    pub epoch: String,
}

/// The longest epoch accepted from the network (minted ones are 22-character nuids).
pub const EPOCH_MAX_LEN: usize = 64;

/// Whether `epoch` is one this service could have minted: short, letters and digits only (it
/// goes into event ids, the bucket and logs).
pub fn valid_epoch(epoch: &str) -> bool {
    !epoch.is_empty()
        && epoch.len() <= EPOCH_MAX_LEN
        && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl Ledger {
    /// The newest state known of `key`.
    pub fn mark(&self, key: &str) -> Option<Mark> {
        let active = self
            .active
            .get(key)
            .map(|a| Mark::active(a.episode, a.revision));
        active.max(self.ended.get(key).map(|e| Mark::resolved(*e)))
    }

    /// Takes `record` if it is newer than what is known of its key; true if it was.
    pub fn fold(&mut self, record: Record) -> bool {
        let key = record.key().to_string();
        if self.mark(&key) >= Some(record.mark()) {
            return false;
        }
        match record {
            Record::Active(active) => {
                self.active.insert(key, active);
            }
            Record::Resolved(resolved) => {
                self.active.remove(&key);
                self.ended.insert(key, resolved.episode);
            }
        }
        true
    }

    /// Takes the end of `key`'s episode `episode` if that is newer; true if it was.
    pub fn fold_ended(&mut self, key: &str, episode: u64) -> bool {
        if self.mark(key) >= Some(Mark::resolved(episode)) {
            return false;
        }
        self.active.remove(key);
        self.ended.insert(key.to_string(), episode);
        true
    }

    /// Takes the state a published transition leads to; true if it was newer.
    pub fn apply(&mut self, transition: &Transition) -> bool {
        self.fold(Record::after(transition))
    }

    /// Takes `epoch` (see [`Ledger::epoch`]) if it is valid and this ledger has none, or
    /// `replace` says so.
    pub fn adopt_epoch(&mut self, epoch: &str, replace: bool) {
        if valid_epoch(epoch) && (replace || self.epoch.is_empty()) {
            self.epoch = epoch.to_string();
        }
    }

    /// Takes whatever is newer in `other` (and its epoch if this ledger has none); returns the
    /// keys that changed.
    pub fn merge(&mut self, other: Ledger) -> Vec<String> {
        self.adopt_epoch(&other.epoch, false);
        let mut changed = Vec::new();
        for (key, episode) in other.ended {
            if self.fold_ended(&key, episode) {
                changed.push(key);
            }
        }
        for (key, active) in other.active {
            if self.fold(Record::Active(active)) && !changed.contains(&key) {
                changed.push(key);
            }
        }
        changed
    }

    /// Refreshes the evidence (and a fingerprint learned from an event) of the active findings
    /// in `next` that are the same state as known: what reconcile carries over without a
    /// transition.
    pub fn refresh(&mut self, next: &ActiveSet) {
        for (key, known) in self.active.iter_mut() {
            if let Some(fresh) = next.get(key) {
                if (fresh.episode, fresh.revision) == (known.episode, known.revision) {
                    known.finding = fresh.finding.clone();
                }
            }
        }
    }
}

/// The transition that left `record` behind (the inverse of [`Record::after`]).
pub fn transition_of_record(record: &Record) -> Transition {
    match record {
        Record::Resolved(r) => Transition {
            kind: TransitionKind::Resolved,
            finding: r.finding.clone(),
            episode: r.episode,
            epoch: r.epoch.clone(),
            revision: r.revision,
            raised_at: r.raised_at,
            at: r.resolved_at,
        },
        Record::Active(a) => active_transition(a),
    }
}

fn active_transition(a: &ActiveFinding) -> Transition {
    Transition {
        kind: if a.revision <= 1 {
            TransitionKind::Raised
        } else {
            TransitionKind::Updated
        },
        finding: a.finding.clone(),
        episode: a.episode,
        epoch: a.epoch.clone(),
        revision: a.revision,
        raised_at: a.raised_at,
        at: a.changed_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::test_finding as finding;
    use crate::record::ResolvedFinding;
    use std::time::{Duration, SystemTime};

    /// Times play no part in the order: each record gets a different one.
    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn active(key: &str, episode: u64, revision: u64, clock: u64) -> Record {
        Record::Active(ActiveFinding {
            finding: finding(key),
            episode,
            epoch: String::new(),
            revision,
            raised_at: at(clock),
            changed_at: at(clock),
        })
    }

    fn resolved(key: &str, episode: u64, clock: u64) -> Record {
        Record::Resolved(ResolvedFinding {
            finding: finding(key),
            episode,
            epoch: String::new(),
            revision: 2,
            raised_at: at(clock),
            resolved_at: at(clock),
        })
    }

    #[test]
    fn newer_marks_win_and_late_copies_change_nothing_whatever_the_clocks() {
        let mut ledger = Ledger::default();
        assert!(ledger.fold(active("k", 1, 1, 50)));
        assert!(
            !ledger.fold(active("k", 1, 1, 10)),
            "the same raise, dated otherwise"
        );
        assert!(
            ledger.fold(resolved("k", 1, 5)),
            "a resolution dated earlier still ends it"
        );
        assert!(ledger.active.is_empty());
        assert!(
            !ledger.fold(active("k", 1, 3, 99)),
            "a late update of an ended episode"
        );
        assert!(ledger.fold(active("k", 2, 1, 0)), "the next episode");
        assert!(!ledger.fold(resolved("k", 1, 100)), "an old resolution");
        assert_eq!(ledger.mark("k"), Some(Mark::active(2, 1)));
    }

    #[test]
    fn merging_is_the_same_in_either_order() {
        let mut a = Ledger::default();
        a.fold(active("x", 1, 1, 0));
        a.fold(active("y", 3, 2, 0));
        let mut b = Ledger::default();
        b.fold(active("x", 1, 1, 0));
        b.fold(resolved("x", 1, 0));
        b.fold(active("z", 1, 1, 0));
        let mut ab = a.clone();
        let mut changed = ab.merge(b.clone());
        changed.sort();
        assert_eq!(changed, ["x", "z"]);
        let mut ba = b.clone();
        ba.merge(a.clone());
        assert_eq!(ab, ba);
    }

    #[test]
    fn a_merge_keeps_the_epoch_unless_there_is_none_and_invalid_ones_are_ignored() {
        let mut a = Ledger::default();
        a.merge(Ledger {
            epoch: "Aaaa".into(),
            ..Ledger::default()
        });
        assert_eq!(a.epoch, "Aaaa");
        a.merge(Ledger {
            epoch: "Bbbb".into(),
            ..Ledger::default()
        });
        assert_eq!(a.epoch, "Aaaa");
        for bad in ["", "zz.z", "zzz\u{1b}[2J", &"z".repeat(65)] {
            a.adopt_epoch(bad, true);
            assert_eq!(a.epoch, "Aaaa", "{bad:?}");
        }
        a.adopt_epoch("Cccc", true);
        assert_eq!(a.epoch, "Cccc");
    }

    #[test]
    fn a_record_and_its_transition_are_each_others_inverse() {
        for record in [
            active("k", 4, 1, 3),
            active("k", 4, 3, 3),
            resolved("k", 4, 9),
        ] {
            assert_eq!(Record::after(&transition_of_record(&record)), record);
        }
    }
}
