//! Part of history (between observe and evaluate: what earlier polls and events showed): levels
//! and since when they have held. The leader's pending API requests above their threshold,
//! members it shows behind (with the settle before caught up counts), the group's size and its
//! changes, and since when the group has been dark.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{History, StalePeer};
use crate::observe::MetaCluster;
use crate::thresholds::{shows_behind, Thresholds};

/// The meta group's size as its leader reports it (`cluster_size`), with the members it lists.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupSize {
    /// `cluster_size` of the leader's view.
    pub size: usize,
    /// The leader and every replica it lists, by name (a member no live server can name by
    /// the name its peer hash last had).
    pub members: std::collections::BTreeSet<String>,
    /// Since when the group has had this size.
    #[serde(with = "crate::time_format")]
    pub since: SystemTime,
}

/// One change of the meta group's size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SizeChange {
    /// When a leader's view first showed it.
    #[serde(with = "crate::time_format")]
    pub at: SystemTime,
    /// The size before.
    pub from: usize,
    /// The size after.
    pub to: usize,
    /// Members listed before and not after.
    pub left: Vec<String>,
    /// Members listed after and not before.
    pub joined: Vec<String>,
    /// Members listed after that no live server carries the name of ("Server name unknown"):
    /// stale peers of renamed or retired servers.
    pub stale: Vec<StalePeer>,
}

/// A member the leader shows behind, or did until moments ago.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Behind {
    /// Since when it has been behind.
    #[serde(with = "crate::time_format")]
    pub since: SystemTime,
    /// Since when the leader has shown it caught up, while that is shorter than
    /// `CATCH_UP_SETTLE`.
    #[serde(default, with = "crate::time_format::option")]
    pub caught_up: Option<SystemTime>,
}

/// How long a member behind must show caught up before it counts as caught up: a member starved
/// of CPU or disk looks caught up for a moment every few polls (measured: about one poll in seven
/// under meta churn), which neither ends its time behind nor resolves its finding.
pub const CATCH_UP_SETTLE: Duration = Duration::from_secs(3);

/// How many size changes are remembered.
pub const SIZE_CHANGES_KEPT: usize = 32;

impl History {
    /// Notes a poll in which some of the group's servers answered: it is not dark.
    pub(super) fn record_heard(&mut self) {
        self.dark_since = None;
        self.dark_polls = 0;
    }

    /// Notes a poll that heard other groups but none of this one's servers: it is dark since
    /// the last time any of them answered.
    pub fn record_dark(&mut self, now: SystemTime) {
        self.dark_polls = self.dark_polls.saturating_add(1);
        if self.dark_since.is_none() {
            self.dark_since = Some(self.last_heard().unwrap_or(now));
        }
    }

    /// Notes a size the leader reports; a size other than the last one is a change.
    pub(super) fn record_size(
        &mut self,
        size: usize,
        members: BTreeSet<String>,
        stale: Vec<StalePeer>,
        now: SystemTime,
    ) {
        match &mut self.size {
            Some(known) if known.size == size => known.members = members,
            Some(known) => {
                let change = SizeChange {
                    at: now,
                    from: known.size,
                    to: size,
                    left: known.members.difference(&members).cloned().collect(),
                    joined: members.difference(&known.members).cloned().collect(),
                    stale,
                };
                tracing::info!(from = change.from, to = change.to, left = ?change.left, joined = ?change.joined, "meta group size changed");
                self.size_changes.push(change);
                if self.size_changes.len() > SIZE_CHANGES_KEPT {
                    let excess = self.size_changes.len() - SIZE_CHANGES_KEPT;
                    self.size_changes.drain(..excess);
                }
                *known = GroupSize {
                    size,
                    members,
                    since: now,
                };
            }
            None => {
                self.size = Some(GroupSize {
                    size,
                    members,
                    since: now,
                })
            }
        }
    }

    /// Notes since when the leader's pending API requests have been above `pending_max`.
    pub(super) fn record_pending(
        &mut self,
        meta: &MetaCluster,
        thresholds: &Thresholds,
        now: SystemTime,
    ) {
        if meta.pending > thresholds.pending_max {
            self.pending_high_since.get_or_insert(now);
        } else {
            self.pending_high_since = None;
        }
    }

    /// Notes since when each member the leader hears has shown not current or lagging, keeping
    /// one that shows caught up until it has for `CATCH_UP_SETTLE`.
    pub(super) fn record_behind(
        &mut self,
        meta: &MetaCluster,
        thresholds: &Thresholds,
        now: SystemTime,
    ) {
        let previous = std::mem::take(&mut self.behind);
        for p in &meta.replicas {
            // Only a member the leader hears counts: one it does not hear is offline (META_001),
            // and its time away must not count as time behind once it is back.
            let heard = p.active > 0
                && !p.offline
                && Duration::from_nanos(p.active) <= thresholds.offline_after;
            if !heard {
                continue;
            }
            let was = previous.get(&p.name);
            if shows_behind(p.current, p.lag, thresholds.lag_max) {
                let since = was.map_or(now, |b| b.since);
                self.behind.insert(
                    p.name.clone(),
                    Behind {
                        since,
                        caught_up: None,
                    },
                );
            } else if let Some(was) = was {
                let caught_up = was.caught_up.unwrap_or(now);
                if now.duration_since(caught_up).unwrap_or_default() < CATCH_UP_SETTLE {
                    self.behind.insert(
                        p.name.clone(),
                        Behind {
                            since: was.since,
                            caught_up: Some(caught_up),
                        },
                    );
                }
            }
        }
    }
}
