//! Between reconcile and serve: a bounded memory of what happened lately (finding transitions,
//! recently resolved findings, meta leader changes), filled by the engine each round and read by
//! the HISTORY and FINDINGS endpoints.

use std::collections::VecDeque;

use crate::findings::{Transition, TransitionKind};
use crate::history::LeaderChange;

/// How many finding transitions are kept for HISTORY.
pub const TRANSITIONS_KEPT: usize = 200;
/// How many resolved findings are kept for FINDINGS with `include_resolved`.
pub const RESOLVED_KEPT: usize = 100;

/// Recent transitions and leader changes, oldest first, each list bounded.
#[derive(Debug, Clone, Default)]
pub struct Recent {
    /// Finding transitions (raised, updated, resolved), at most `TRANSITIONS_KEPT`.
    pub transitions: VecDeque<Transition>,
    /// Resolved transitions only, at most `RESOLVED_KEPT`: kept longer than the mixed list.
    pub resolved: VecDeque<Transition>,
    /// Meta leader changes as the engine's history holds them.
    pub leader_changes: Vec<LeaderChange>,
}

impl Recent {
    /// Folds one round in: its transitions and the history's current list of leader changes.
    pub fn record(&mut self, transitions: &[Transition], leader_changes: &[LeaderChange]) {
        for transition in transitions {
            push_bounded(&mut self.transitions, transition, TRANSITIONS_KEPT);
            if transition.kind == TransitionKind::Resolved {
                push_bounded(&mut self.resolved, transition, RESOLVED_KEPT);
            }
        }
        if self.leader_changes.as_slice() != leader_changes {
            self.leader_changes = leader_changes.to_vec();
        }
    }
}

fn push_bounded(list: &mut VecDeque<Transition>, item: &Transition, max: usize) {
    list.push_back(item.clone());
    while list.len() > max {
        list.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::checks::{CheckId, Finding};

    fn transition(kind: TransitionKind, n: u64) -> Transition {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(n);
        Transition {
            kind,
            finding: Finding {
                check: CheckId::META_001,
                key: format!("META_001/c/n{n}"),
                cluster: None,
                domain: None,
                server: Some(format!("n{n}")),
                summary: "s".into(),
                evidence: serde_json::json!({}),
                remediation: vec![],
                fingerprint: String::new(),
            },
            episode: 1,
            epoch: String::new(),
            revision: 1,
            raised_at: at,
            at,
        }
    }

    #[test]
    fn lists_stay_bounded_and_keep_the_newest() {
        let mut recent = Recent::default();
        for n in 0..(TRANSITIONS_KEPT as u64 + 50) {
            recent.record(&[transition(TransitionKind::Raised, n)], &[]);
        }
        for n in 0..(RESOLVED_KEPT as u64 + 5) {
            recent.record(&[transition(TransitionKind::Resolved, 1000 + n)], &[]);
        }
        assert_eq!(recent.transitions.len(), TRANSITIONS_KEPT);
        assert_eq!(recent.resolved.len(), RESOLVED_KEPT);
        let last = recent.resolved.back().map(|t| t.finding.key.clone());
        assert_eq!(last.as_deref(), Some("META_001/c/n1104"));
        assert!(recent
            .resolved
            .iter()
            .all(|t| t.kind == TransitionKind::Resolved));
    }
}
