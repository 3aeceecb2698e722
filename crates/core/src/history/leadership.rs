//! Part of history (between observe and evaluate: what earlier polls and events showed): who
//! leads. The leader as last established, its changes (by poll or election advisory),
//! re-elections, since when the group has been leaderless, and servers that disagree about the
//! leader with how long they have.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::History;
use crate::observe::{plausible_server_time, Snapshot, Via};

/// How long a disagreeing server that stopped answering keeps the disagreement open.
pub const DISAGREEMENT_GRACE: Duration = Duration::from_secs(10);

/// How many leader changes are remembered.
pub const LEADER_CHANGES_KEPT: usize = 256;

/// One change of meta leader.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaderChange {
    /// When it was seen.
    #[serde(with = "crate::time_format")]
    pub at: SystemTime,
    /// The previous leader.
    pub from: Option<String>,
    /// The new leader.
    pub to: String,
    /// What revealed it first.
    pub source: ChangeSource,
    /// When it happened on the servers' clock: the election advisory's `timestamp`, or the JSZ
    /// `now` of the poll that found it. Instances on clocks of their own, sharing one history,
    /// measure a change's age on this one (`None` in records written before it was kept).
    #[serde(
        default,
        with = "crate::time_format::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub server_at: Option<SystemTime>,
    /// The JetStream domain of the group (set where changes of several groups are listed
    /// together; a group's own history leaves it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

impl LeaderChange {
    /// How long ago it happened, measured on one clock: the servers' when both the change and
    /// the poll carry their time (a history written by another instance then means the same on
    /// this one, whatever either's clock says), else this instance's. A change dated in the
    /// future is no age.
    pub fn age(&self, now: SystemTime, server_now: Option<SystemTime>) -> Duration {
        match (self.server_at, server_now) {
            (Some(at), Some(server_now)) => server_now.duration_since(at).unwrap_or_default(),
            _ => now.duration_since(self.at).unwrap_or_default(),
        }
    }
}

/// What revealed a leader change.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ChangeSource {
    /// A `LEADER_ELECTED` advisory.
    Advisory,
    /// A poll that found a different leader.
    Poll,
}

/// Servers that disagree about the meta leader.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Disagreement {
    /// When it began.
    #[serde(with = "crate::time_format")]
    pub since: SystemTime,
    /// Servers by the leader each reports (`None`: no leader), as last seen.
    pub groups: Vec<(Option<String>, Vec<String>)>,
}

impl History {
    /// Notes since when no meta view has named a leader (with its peer hash).
    pub(super) fn record_leaderless(&mut self, snapshot: &Snapshot, now: SystemTime) {
        let any_leader = snapshot
            .meta_views()
            .any(|(_, meta)| meta.leader_name().is_some() && meta.peer.is_some());
        if any_leader {
            self.leaderless_since = None;
        } else if snapshot.meta_views().next().is_some() {
            self.leaderless_since.get_or_insert(now);
        }
    }

    /// Notes since when at least a quorum of members has answered: servers answering with a
    /// meta view that makes them a member (naming a leader, or listing themselves without one),
    /// and servers of a large group that answered with their identity only.
    pub(super) fn record_quorum_answering(&mut self, snapshot: &Snapshot, now: SystemTime) {
        let needed = snapshot
            .meta_views()
            .map(|(_, m)| {
                m.quorum_needed
                    .filter(|q| *q > 0)
                    .unwrap_or(m.cluster_size / 2 + 1)
            })
            .max();
        let answering = snapshot
            .views
            .values()
            .filter(|v| match &v.meta {
                Some(m) => {
                    m.leader_name().is_some() || m.replicas.iter().any(|p| p.name == v.server.name)
                }
                None => v.via == Via::Identity,
            })
            .count();
        match needed {
            Some(needed) if answering >= needed => {
                self.quorum_answering_since.get_or_insert(now);
            }
            _ => self.quorum_answering_since = None,
        }
    }

    /// Notes the leader as last established answering without claiming to lead.
    pub(super) fn note_leadership_lost(&mut self, snapshot: &Snapshot) {
        if let Some(current) = &self.leader {
            let own = snapshot.views.get(current).and_then(|v| v.meta.as_ref());
            if own.is_some_and(|m| m.leader_name() != Some(current.as_str())) {
                self.leadership_lost = true;
            }
        }
    }

    /// A leader that leads again after it was seen to lose its leadership was re-elected.
    pub(super) fn note_re_election(&mut self, leader: &str, now: SystemTime) {
        if std::mem::take(&mut self.leadership_lost) && self.leader.as_deref() == Some(leader) {
            // No change of leader, but a new term: its `active` figures count from before.
            self.last_election = Some((leader.to_string(), now));
        }
    }

    /// Records `leader` as the current leader; a different one than before is a change. The first
    /// leader ever seen is not a change (it was there when the service started).
    /// `server_at` is when it happened on the servers' clock, when known.
    pub fn observe_leader(
        &mut self,
        leader: &str,
        source: ChangeSource,
        at: SystemTime,
        server_at: Option<SystemTime>,
    ) {
        match self.leader.as_deref() {
            Some(current) if current == leader => {}
            None => self.leader = Some(leader.to_string()),
            Some(_) => {
                let from = self.leader.replace(leader.to_string());
                self.leader_changes.push(LeaderChange {
                    at,
                    from,
                    to: leader.to_string(),
                    source,
                    server_at,
                    domain: None,
                });
                if self.leader_changes.len() > LEADER_CHANGES_KEPT {
                    let excess = self.leader_changes.len() - LEADER_CHANGES_KEPT;
                    self.leader_changes.drain(..excess);
                }
            }
        }
    }

    /// Notes an election advisory naming the winner's peer hash.
    pub(super) fn record_election(
        &mut self,
        leader_peer: &str,
        at: SystemTime,
        server_at: Option<SystemTime>,
    ) {
        // An unknown hash cannot be named yet: the poll it triggers records the change.
        if let Some(name) = self.name_of_peer(leader_peer).map(str::to_string) {
            let server_at = plausible_server_time(server_at, at);
            self.observe_leader(&name, ChangeSource::Advisory, at, server_at);
            self.last_election = Some((name, at));
        }
    }

    /// When `leader` was seen to become the leader, if this process saw it happen (the first
    /// leader ever seen was already leading).
    pub fn leader_elected_at(&self, leader: &str) -> Option<SystemTime> {
        if self.leader.as_deref() != Some(leader) {
            return None;
        }
        let changed = self
            .leader_changes
            .last()
            .filter(|c| c.to == leader)
            .map(|c| c.at);
        let re_elected = self
            .last_election
            .as_ref()
            .filter(|(name, _)| name == leader)
            .map(|(_, at)| *at);
        changed.max(re_elected)
    }

    /// Leader changes at most `window` old (see [`LeaderChange::age`]), oldest first.
    pub fn leader_changes_within(
        &self,
        window: Duration,
        now: SystemTime,
        server_now: Option<SystemTime>,
    ) -> Vec<&LeaderChange> {
        self.leader_changes
            .iter()
            .filter(|c| c.age(now, server_now) <= window)
            .collect()
    }

    /// Notes whether servers disagree about who leads, and since when; a disagreement that ends
    /// is counted.
    pub(super) fn record_disagreement(&mut self, snapshot: &Snapshot, now: SystemTime) {
        let groups: Vec<(Option<String>, Vec<String>)> =
            snapshot.leaders_reported().into_iter().collect();
        if groups.len() > 1 && standing_views(&groups) > 1 {
            let since = self.disagreement.as_ref().map_or(now, |d| d.since);
            self.disagreement = Some(Disagreement { since, groups });
        } else if self.disagreement_unobserved(snapshot, now) {
            // A server that disagreed did not answer this poll (a slow direct view under load):
            // that is not agreement. Keep the disagreement as it was.
        } else if self.disagreement.take().is_some() {
            self.brief_disagreements += 1;
        }
    }

    /// True when the current disagreement involves a server missing from this snapshot that
    /// answered recently (within `DISAGREEMENT_GRACE`): its silence proves nothing either way.
    /// Unless it is gone (not answering, its pinned link down: crashed or stopped): a server
    /// that holds no view disagrees with nobody, and a disagreement after its restart is a new
    /// one, not the old one carried across the gap.
    fn disagreement_unobserved(&self, snapshot: &Snapshot, now: SystemTime) -> bool {
        let Some(d) = &self.disagreement else {
            return false;
        };
        d.groups
            .iter()
            .flat_map(|(_, servers)| servers)
            .any(|name| {
                let gone = snapshot.unanswered.contains(name) && snapshot.links_down.contains(name);
                !snapshot.views.contains_key(name)
                    && !gone
                    && self.servers.get(name).is_some_and(|rec| {
                        now.duration_since(rec.last_answered).unwrap_or_default()
                            < DISAGREEMENT_GRACE
                    })
            })
    }
}

/// How many of the reported leader views stand. A view naming a leader that answers and does
/// not say it leads is stale (seen while a group recovers from quorum loss: the survivor still
/// names the crashed leader, which came back without a leader), not a second side.
fn standing_views(groups: &[(Option<String>, Vec<String>)]) -> usize {
    let stale = |leader: &Option<String>| {
        leader.as_ref().is_some_and(|l| {
            groups
                .iter()
                .any(|(said, servers)| said.as_ref() != Some(l) && servers.contains(l))
        })
    };
    groups.iter().filter(|(l, _)| !stale(l)).count()
}

#[cfg(test)]
mod tests {
    use super::standing_views;

    fn view(leader: Option<&str>, servers: &[&str]) -> (Option<String>, Vec<String>) {
        (
            leader.map(str::to_string),
            servers.iter().map(|s| s.to_string()).collect(),
        )
    }

    #[test]
    fn a_view_naming_a_leader_that_does_not_lead_is_stale() {
        // n1 and n2 came back without a leader; n3 still names n2, which answers without leading.
        let groups = [view(None, &["n1", "n2"]), view(Some("n2"), &["n3"])];
        assert_eq!(standing_views(&groups), 1);
    }

    #[test]
    fn two_leaders_that_each_claim_to_lead_are_two_sides() {
        // An isolated old leader that still claims itself, and the majority's new leader.
        let groups = [view(Some("n1"), &["n1"]), view(Some("n2"), &["n2", "n3"])];
        assert_eq!(standing_views(&groups), 2);
    }

    #[test]
    fn a_leader_that_did_not_answer_still_stands() {
        // n3 names n1, which did not answer: that view cannot be shown stale.
        let groups = [view(None, &["n2"]), view(Some("n1"), &["n3"])];
        assert_eq!(standing_views(&groups), 2);
    }
}
