//! Between observe and evaluate: what the service remembers across polls (servers it has seen, the
//! names peer hashes had, graceful departures, how long the group has been leaderless). Checks read
//! it; the engine updates it from each snapshot and event. Serializable so it can be persisted.
//!
//! This module holds the [`History`] of one group, the [`Histories`] of all, and the entry points
//! that fold a snapshot or event in, step by step. The steps live by what they remember:
//! `servers.rs` (each server: answers, restarts, peer names, membership, contact, departures),
//! `leadership.rs` (who leads, changes, disagreements), `levels.rs` (since when a level has held:
//! pending requests, members behind, size, dark). Their types are re-exported here.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::observe::plan::KnownServer;
use crate::observe::MetaCluster;
use crate::observe::{GroupId, MetaEvent, Snapshot};
use crate::thresholds::Thresholds;

mod extras;
mod leadership;
mod levels;
mod servers;

pub use extras::{
    gateways_missing, routes_missing, ExtrasHistory, Restart, Since, RESTARTS_KEPT, RESTART_MEMORY,
};
pub use leadership::{
    ChangeSource, Disagreement, LeaderChange, DISAGREEMENT_GRACE, LEADER_CHANGES_KEPT,
};
pub use levels::{Behind, GroupSize, SizeChange, CATCH_UP_SETTLE, SIZE_CHANGES_KEPT};
pub use servers::{
    Departure, DepartureKind, ServerRecord, StalePeer, Unheard, DEPARTURE_SILENCE, RESTART_SETTLE,
    UNPOLLED_DEPARTURES_MAX, UNPOLLED_DEPARTURE_KEPT,
};

/// Memory of earlier observations.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct History {
    /// Meta members that have answered a poll, by server name.
    pub servers: BTreeMap<String, ServerRecord>,
    /// Last name seen for each meta peer hash, so renamed or vanished members can be named.
    pub peer_names: BTreeMap<String, String>,
    /// Graceful departures (shutdown, lame duck) not yet followed by a restart, by server name.
    pub departures: BTreeMap<String, Departure>,
    /// Since when no server has reported a meta leader; `None` while one is reported.
    pub leaderless_since: Option<SystemTime>,
    /// Since when at least a quorum of the group's members has answered polls without a break;
    /// `None` while fewer do. META_106 times a leaderless group from the later of this and
    /// `leaderless_since`, so that members coming back after a quorum loss (or a whole cluster
    /// started again) get a whole election before they are called leaderless. Not persisted: a
    /// restarted monitor counts anew.
    #[serde(skip)]
    pub quorum_answering_since: Option<SystemTime>,
    /// The meta leader as last established (by the leader's own view or an election advisory).
    pub leader: Option<String>,
    /// Leader changes seen, oldest first (bounded by `LEADER_CHANGES_KEPT`).
    pub leader_changes: Vec<LeaderChange>,
    /// The current disagreement about who leads, if servers disagree now.
    pub disagreement: Option<Disagreement>,
    /// Disagreements that ended, counted for status (most are normal elections).
    pub brief_disagreements: u64,
    /// Members the current leader lists as never heard from (`active` 0), by name.
    pub unheard: BTreeMap<String, Unheard>,
    /// When each member was last known in contact with the group (heard by the leader, or the
    /// leader heard by a follower), by name.
    pub last_contact: BTreeMap<String, SystemTime>,
    /// Since when the leader's pending JetStream API requests have been above `pending_max`
    /// (META_008); `None` while they are not, or no leader answered since they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_high_since: Option<SystemTime>,
    /// Members the leader shows behind (not current, or lagging by more than `lag_max`), each
    /// with since when, kept until they have been caught up for `CATCH_UP_SETTLE` (META_101).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub behind: BTreeMap<String, Behind>,
    /// The group's size as its leader last reported it (META_102, META_103).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<GroupSize>,
    /// Changes of that size, oldest first (bounded by `SIZE_CHANGES_KEPT`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub size_changes: Vec<SizeChange>,
    /// Since when no server of the group has answered while the service heard others (the last
    /// time any of its servers answered): the group is dark (META_105). `None` while it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dark_since: Option<SystemTime>,
    /// Polls in a row that heard other groups but none of this one's servers (not persisted: a
    /// restarted monitor counts anew, so its first poll never calls a group dark).
    #[serde(skip)]
    pub dark_polls: u32,
    /// The last election advisory this process received: the winner and when. Kept apart from
    /// `leader_changes` because a leader re-elected after losing its leadership is no change,
    /// yet its `active` figures count from before it led again. Not persisted: a restarted
    /// monitor falls back to the changes.
    #[serde(skip)]
    pub last_election: Option<(String, SystemTime)>,
    /// The leader as last established answered without claiming to lead: if it leads again, it
    /// was re-elected (polls see this even when the election advisory arrives late or not at
    /// all, as through a cut-off server).
    #[serde(skip)]
    pub leadership_lost: bool,
    /// What the sources beyond JSZ showed over time, and each server's restarts.
    #[serde(default, skip_serializing_if = "ExtrasHistory::is_empty")]
    pub extras: ExtrasHistory,
    /// Each member's stream and consumer replica counts as its own JSZ reply last gave them
    /// (META_005 sums them; a large group's poll brings only a sample of the followers' views).
    /// Not persisted: a restarted monitor counts anew.
    #[serde(skip)]
    pub assets: BTreeMap<String, AssetCount>,
}

/// What one server's JSZ reply said it holds, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssetCount {
    /// Stream replicas on it (`streams`).
    pub streams: u64,
    /// Consumer replicas on it (`consumers`).
    pub consumers: u64,
    /// Raft groups it takes part in (`ha_assets`), when reported.
    pub ha_assets: Option<u64>,
    /// The poll that brought them.
    pub at: SystemTime,
}

impl History {
    /// The part worth persisting at once when it changes: everything but the per-poll clocks
    /// (`last_answered`, `last_contact`), which a restart can afford to have a few seconds old.
    pub fn durable(&self) -> serde_json::Value {
        let servers: BTreeMap<&String, &String> = self
            .servers
            .iter()
            .map(|(name, rec)| (name, &rec.server_id))
            .collect();
        serde_json::json!({
            "servers": servers,
            "peer_names": self.peer_names,
            "departures": self.departures,
            "leaderless": self.leaderless_since.is_some(),
            "leader": self.leader,
            "leader_changes": self.leader_changes,
            "disagreement": self.disagreement.as_ref().map(|d| d.since),
            "unheard": self.unheard.keys().collect::<Vec<_>>(),
            "dark_since": self.dark_since,
            "restarts": self.extras.restarts.values().map(Vec::len).sum::<usize>(),
        })
    }

    /// Folds one snapshot in. A snapshot without any view changes nothing: it observed nothing.
    /// The thresholds say which levels of the leader's figures to note the start of (pending
    /// requests, members behind), so that checks can tell how long they have held.
    pub fn record_snapshot(
        &mut self,
        snapshot: &Snapshot,
        thresholds: &Thresholds,
        now: SystemTime,
    ) {
        if snapshot.views.is_empty() {
            return;
        }
        self.record_heard();
        let answered_at = snapshot.taken_at.unwrap_or(now);
        self.count_missed(snapshot);
        self.record_restarts(snapshot, answered_at);
        self.record_answers(snapshot, answered_at);
        self.record_extras(snapshot, now);
        self.record_assets(snapshot, answered_at);
        self.record_peer_names(snapshot);
        self.record_leaderless(snapshot, now);
        self.record_quorum_answering(snapshot, now);
        self.note_leadership_lost(snapshot);
        if let Some((view, meta)) = snapshot.leader_view() {
            self.record_leader_view(snapshot, &view.server.name, meta, thresholds, now);
        }
        self.record_disagreement(snapshot, now);
    }

    /// What the leader's own view tells, in order: a re-election, the membership (servers it no
    /// longer lists are forgotten), the group's size, the levels of its figures (pending requests,
    /// members behind), the leader
    /// itself, who is in contact and who was never heard from.
    fn record_leader_view(
        &mut self,
        snapshot: &Snapshot,
        leader: &str,
        meta: &MetaCluster,
        thresholds: &Thresholds,
        now: SystemTime,
    ) {
        self.note_re_election(leader, now);
        let members = self.members_listed(meta, leader);
        self.forget_unlisted(&members, snapshot);
        let stale = self.stale_peers(snapshot);
        self.record_size(meta.cluster_size.max(members.len()), members, stale, now);
        self.record_pending(meta, thresholds, now);
        self.record_behind(meta, thresholds, now);
        let server_now = snapshot.plausible_server_now(now);
        self.observe_leader(leader, ChangeSource::Poll, now, server_now);
        self.record_contact(snapshot, leader, meta, now);
        self.record_unheard(meta, leader, now);
    }

    /// Folds one event in.
    pub fn record_event(&mut self, event: &MetaEvent) {
        match event {
            MetaEvent::Shutdown {
                server,
                server_id,
                at,
            } => self.depart(server, server_id, DepartureKind::Shutdown, *at),
            MetaEvent::LameDuck {
                server,
                server_id,
                at,
            } => self.depart(server, server_id, DepartureKind::LameDuck, *at),
            MetaEvent::ServerRemoved { server, .. } => self.forget_server(server),
            MetaEvent::LeaderElected {
                leader_peer,
                at,
                server_at,
                ..
            } => self.record_election(leader_peer, *at, *server_at),
        }
    }
}

/// The memory of every meta group the service has seen, by group (one per JetStream domain).
/// Each group's [`History`] only ever sees that group's part of a poll and the events that
/// concern it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histories {
    /// By group.
    pub groups: BTreeMap<GroupId, History>,
    /// A history persisted by a version that knew one group only: given to the group whose
    /// servers it knows once the first poll shows which that is.
    pub legacy: Option<History>,
}

/// The persisted form of [`Histories`].
#[derive(Serialize, Deserialize)]
struct StoredHistories<'a> {
    groups: std::borrow::Cow<'a, BTreeMap<GroupId, History>>,
}

impl Histories {
    /// Decodes what [`Histories::to_json`] wrote, or a single-group history written by an
    /// earlier version (kept as `legacy`).
    pub fn from_json(bytes: &[u8]) -> Result<Histories, serde_json::Error> {
        match serde_json::from_slice::<StoredHistories<'static>>(bytes) {
            Ok(stored) => Ok(Histories {
                groups: stored.groups.into_owned(),
                legacy: None,
            }),
            Err(e) => match serde_json::from_slice::<History>(bytes) {
                Ok(history) => Ok(Histories {
                    groups: BTreeMap::new(),
                    legacy: Some(history),
                }),
                Err(_) => Err(e),
            },
        }
    }

    /// The persisted form.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&StoredHistories {
            groups: std::borrow::Cow::Borrowed(&self.groups),
        })
    }

    /// What is worth persisting at once when it changes (see [`History::durable`]).
    pub fn durable(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.groups
                .iter()
                .map(|(group, history)| (group.label().to_string(), history.durable()))
                .collect(),
        )
    }

    /// The group a server was last seen in.
    pub fn group_of_server(&self, name: &str) -> Option<GroupId> {
        self.groups
            .iter()
            .find(|(_, h)| h.servers.contains_key(name))
            .map(|(g, _)| g.clone())
    }

    /// Servers to expect in the next poll, of every group.
    pub fn known_servers(&self) -> Vec<KnownServer> {
        let mut known: Vec<KnownServer> = self
            .groups
            .values()
            .chain(self.legacy.iter())
            .flat_map(History::known_servers)
            .collect();
        known.sort_by(|a, b| a.name.cmp(&b.name));
        known.dedup_by(|a, b| a.name == b.name);
        known
    }

    /// Splits a poll into one snapshot per group: every group seen before gets one, even when
    /// none of its servers answered.
    pub fn split(&self, snapshot: &Snapshot) -> BTreeMap<GroupId, Snapshot> {
        // Built once per split: asking `group_of_server` for every identity-only or silent
        // server scanned every group's history each time (445 ms per poll at 3,000 groups of 3).
        // The first group in order that holds a name wins, as in `group_of_server`.
        let mut group_of: HashMap<&str, &GroupId> = HashMap::new();
        for (group, history) in &self.groups {
            for name in history.servers.keys() {
                group_of.entry(name.as_str()).or_insert(group);
            }
        }
        snapshot.split_groups(
            &|name: &str| group_of.get(name).map(|g| (*g).clone()),
            self.groups.keys().cloned(),
        )
    }

    /// Folds each group's part of a poll into its history.
    pub fn record_snapshots(
        &mut self,
        parts: &BTreeMap<GroupId, Snapshot>,
        thresholds: &Thresholds,
        now: SystemTime,
    ) {
        if let Some(legacy) = self.legacy.take() {
            // The group most of whose answering servers the old history knew is the one it was
            // written about.
            let owner = parts
                .iter()
                .map(|(group, part)| {
                    let overlap = part
                        .views
                        .keys()
                        .filter(|n| legacy.servers.contains_key(*n))
                        .count();
                    (overlap, group)
                })
                .filter(|(overlap, _)| *overlap > 0)
                .max_by_key(|(overlap, _)| *overlap)
                .map(|(_, group)| group.clone());
            match owner {
                Some(group) if !self.groups.contains_key(&group) => {
                    tracing::info!(group = %group, "adopting the history written by an earlier version");
                    self.groups.insert(group, legacy);
                }
                Some(_) => {}
                None if parts.values().all(|p| p.views.is_empty()) => self.legacy = Some(legacy),
                None => {
                    tracing::info!("dropping the history written by an earlier version: none of its servers answers")
                }
            }
        }
        // A group none of whose servers answered is dark only while others are heard: a poll
        // that heard nobody says nothing about any group.
        let heard = parts.values().any(|p| !p.views.is_empty());
        for (group, part) in parts {
            if part.views.is_empty() {
                if let Some(history) = self.groups.get_mut(group).filter(|_| heard) {
                    history.record_dark(now);
                }
                continue;
            }
            self.groups
                .entry(group.clone())
                .or_default()
                .record_snapshot(part, thresholds, now);
        }
    }

    /// Folds one event into the groups it concerns: an election or removal into its domain's
    /// group; a server's shutdown or lame duck into the group that knows the server (every
    /// group when none does yet: a departure of a name a group never lists changes nothing).
    pub fn record_event(&mut self, event: &MetaEvent) {
        match event {
            // A group not seen yet is recorded by the poll the event triggers.
            MetaEvent::LeaderElected { domain, .. } | MetaEvent::ServerRemoved { domain, .. } => {
                if let Some(history) = self.groups.get_mut(&GroupId::of(domain.as_deref())) {
                    history.record_event(event);
                }
            }
            MetaEvent::Shutdown { server, .. } | MetaEvent::LameDuck { server, .. } => {
                match self.group_of_server(server) {
                    Some(group) => {
                        if let Some(history) = self.groups.get_mut(&group) {
                            history.record_event(event);
                        }
                    }
                    None => {
                        for history in self.groups.values_mut() {
                            history.record_event(event);
                        }
                    }
                }
            }
        }
    }

    /// Forgets a group retired on purpose (an operator's request): its whole memory. True when
    /// it was known. If its servers answer again, it comes back as a new group.
    pub fn forget(&mut self, group: &GroupId) -> bool {
        self.groups.remove(group).is_some()
    }

    /// Leader changes of every group, oldest first, each with its group's domain.
    pub fn leader_changes(&self) -> Vec<LeaderChange> {
        let mut all: Vec<LeaderChange> = self
            .groups
            .iter()
            .flat_map(|(group, history)| {
                history.leader_changes.iter().map(|c| LeaderChange {
                    domain: group.domain().map(str::to_string),
                    ..c.clone()
                })
            })
            .collect();
        all.sort_by_key(|c| c.at);
        all
    }
}
