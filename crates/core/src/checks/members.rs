//! Evaluate: the shared judgement of which meta members are online, used by every check so that
//! META_001 and META_006 can never disagree about who is offline.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::Thresholds;
use crate::history::{DepartureKind, History, RESTART_SETTLE};
use crate::observe::{GroupId, JsFacts, PeerInfo, Snapshot, Via};

/// The meta group as judged from one snapshot and the history.
#[derive(Debug, Clone, Serialize)]
pub struct MetaAssessment {
    /// The group's identity (its domain; `default` for the default domain), as in finding keys.
    #[serde(serialize_with = "group_label")]
    pub group: GroupId,
    /// The cluster of the server whose view is used: the leader's when one answered. In a
    /// supercluster this is where leadership is now, not a name of the group.
    pub cluster: String,
    /// The leader's own cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lead_cluster: Option<String>,
    /// Members per cluster (one entry for a single cluster; several in a supercluster).
    pub clusters: Vec<ClusterTally>,
    /// JetStream domain, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The leader whose view is used as authoritative, if any answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Members the raft layer counts (`cluster_size`).
    pub cluster_size: usize,
    /// Members needed for quorum.
    pub quorum_needed: usize,
    /// JetStream API requests pending on the leader (its JSZ `meta_cluster.pending`), when the
    /// leader answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    /// Every member, sorted by name.
    pub members: Vec<Member>,
    /// Servers that answered this poll (members or not).
    pub servers_answering: usize,
    /// Live servers with JetStream that the meta group does not count as members (for example a
    /// renamed server that joined while the group had no leader).
    pub non_members: Vec<String>,
    /// Servers of the group's domain that answer with JetStream but report no meta group at all
    /// (for example a leaf node in the hub's domain that did not join it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outside: Vec<String>,
    /// Servers grouped by the meta leader each reports.
    pub leaders_reported: Vec<LeaderGroup>,
    /// Since when no server reported a leader.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::time_format::option"
    )]
    pub leaderless_since: Option<SystemTime>,
    /// Set when no server of the group answers while the service hears others: since when it
    /// has been unheard (the last time any of its servers answered). Its members are then
    /// `unknown`, never their last healthy state.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::time_format::option"
    )]
    pub unheard_since: Option<SystemTime>,
}

fn group_label<S: serde::Serializer>(group: &GroupId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(group.label())
}

/// How many members of a meta group one cluster holds, and how many of them are online.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterTally {
    /// Cluster name.
    pub cluster: String,
    /// Members in it.
    pub members: usize,
    /// Of those, judged online.
    pub online: usize,
}

impl MetaAssessment {
    /// The group in words for a summary: `cluster C1` for one cluster, the clusters of a
    /// supercluster, or the domain.
    pub fn describe_group(&self) -> String {
        let clusters: Vec<&str> = self.clusters.iter().map(|c| c.cluster.as_str()).collect();
        match (self.group.domain(), clusters.as_slice()) {
            (Some(domain), _) => format!("the meta group of domain {domain}"),
            (None, [] | [_]) => format!("cluster {}", self.cluster),
            (None, several) => format!("the meta group of clusters {}", several.join(", ")),
        }
    }

    /// True when the group spans several clusters (a supercluster).
    pub fn is_supercluster(&self) -> bool {
        self.clusters.len() > 1
    }

    /// The cluster of the member named `server`, if it is one and its cluster is known.
    pub fn cluster_of(&self, server: &str) -> Option<String> {
        self.members
            .iter()
            .find(|m| m.name == server)
            .and_then(|m| m.cluster.clone())
    }

    /// A member's name with its cluster in a supercluster (`n5 (c2)`), else the name alone.
    pub fn member_label(&self, member: &Member) -> String {
        match (&member.cluster, self.is_supercluster()) {
            // (A standalone leaf node's cluster is its own name.)
            (Some(cluster), true) if *cluster != member.name => {
                format!("{} ({cluster})", member.name)
            }
            _ => member.name.clone(),
        }
    }
}

/// Servers that name the same meta leader.
#[derive(Debug, Clone, Serialize)]
pub struct LeaderGroup {
    /// The leader they report; absent when they report none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The servers.
    pub servers: Vec<String>,
}

/// One meta member.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// Server name; for a member no live server carries, the last name its peer hash had, else the
    /// server's placeholder text.
    pub name: String,
    /// Peer hash, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Its own cluster, from its own reply (or as last seen), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// True for the leader.
    pub leader: bool,
    /// True when it answered this poll.
    pub answered: bool,
    /// True when no live server carries its name any more (nats-server lists it as "Server name
    /// unknown"): a probable stale peer, renamed or decommissioned without peer-remove.
    pub name_unknown: bool,
    /// Caught up, per the leader's view (None without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<bool>,
    /// Time since the leader last heard from it (None without a leader view or when unknown).
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::time_format::option_millis"
    )]
    pub active: Option<Duration>,
    /// Raft entries behind.
    pub lag: u64,
    /// Its nats-server version, from its own reply (or as last seen), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What its own JSZ reply of this poll says beyond the members (configuration, assets,
    /// meta snapshots); `None` when its whole view did not arrive this poll (silent, or only
    /// its identity asked in a large group). Not remembered: the checks reading it leave such
    /// a member undecided.
    #[serde(skip)]
    pub facts: Option<JsFacts>,
    /// The judgement (`state` and, when offline, `reasons`).
    #[serde(flatten)]
    pub state: MemberState,
}

impl Member {
    /// True when judged online.
    pub fn online(&self) -> bool {
        matches!(self.state, MemberState::Online)
    }

    /// True for an online follower the leader shows behind now (not current, or more than
    /// `lag_max` operations behind): what META_101 times with `--behind-after` before it raises.
    /// Without a leader view nothing shows it behind.
    pub fn behind(&self, lag_max: u64) -> bool {
        self.online()
            && !self.leader
            && self
                .current
                .is_some_and(|current| shows_behind(current, self.lag, lag_max))
    }
}

pub use crate::thresholds::shows_behind;

/// Online, offline (with every reason seen), or not decidable from this observation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", content = "reasons", rename_all = "snake_case")]
pub enum MemberState {
    /// Answering and, where a leader view exists, in contact with the leader.
    Online,
    /// Offline for these reasons.
    Offline(Vec<OfflineReason>),
    /// Not seen answering and nothing says it is offline (no leader view to judge by).
    Unknown,
}

/// Why a member counts as offline.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum OfflineReason {
    /// It announced a graceful stop.
    Departed {
        /// Shutdown or lame duck.
        kind: DepartureKind,
        /// When the event arrived.
        #[serde(with = "crate::time_format")]
        at: SystemTime,
    },
    /// A server's view flags it `offline`.
    OfflineFlag {
        /// Which server said so.
        reported_by: String,
    },
    /// The leader has not heard from it for longer than `offline_after`.
    Silent {
        /// The leader's `active` for it.
        #[serde(with = "crate::time_format::millis")]
        active: Duration,
        /// The leader.
        reported_by: String,
    },
    /// It leads, but the followers that answer have not heard from it for `offline_after`: its
    /// routes to them are cut.
    CutOff {
        /// The followers that lost it.
        unheard_by: Vec<String>,
    },
    /// It answered earlier but answered neither the gather nor a direct request now.
    NotAnswering {
        /// When it last answered.
        #[serde(with = "crate::time_format::option")]
        last_answered: Option<SystemTime>,
    },
}

impl OfflineReason {
    /// One clause for a summary.
    pub fn describe(&self, now: SystemTime) -> String {
        match self {
            OfflineReason::Departed { kind, at } => format!(
                "it {} {} ago",
                kind.describe(),
                super::seconds(now.duration_since(*at).unwrap_or_default())
            ),
            OfflineReason::OfflineFlag { reported_by } => {
                format!("{reported_by} reports it offline")
            }
            OfflineReason::Silent {
                active,
                reported_by,
            } => format!(
                "leader {reported_by} has not heard from it for {}",
                super::seconds(*active)
            ),
            OfflineReason::CutOff { unheard_by } => format!(
                "it still claims leadership but {} have not heard from it",
                unheard_by.join(", ")
            ),
            OfflineReason::NotAnswering { last_answered } => match last_answered {
                Some(t) => format!(
                    "it has not answered for {}",
                    super::seconds(now.duration_since(*t).unwrap_or_default())
                ),
                None => "it does not answer".to_string(),
            },
        }
    }
}

/// How recently another member must have heard a server whose probe timed out for that
/// server to count as busy rather than offline: the raft heartbeat (1 s, `NATS_FACTS.md`) and a
/// margin for a loaded leader.
pub const BUSY_HEARD_WITHIN: Duration = Duration::from_millis(1_500);

/// Whether another server's view of this poll shows contact with `name` (or its `peer` id)
/// within `within`: the leader's entry for a follower, or a follower's for its leader.
fn heard_within(snapshot: &Snapshot, name: &str, peer: Option<&str>, within: Duration) -> bool {
    snapshot
        .meta_views()
        .filter(|(view, _)| view.server.name != name)
        .flat_map(|(_, meta)| meta.replicas.iter())
        .any(|p| {
            (p.name == name || peer == Some(p.peer.as_str()))
                && !p.offline
                && p.active > 0
                && Duration::from_nanos(p.active) <= within
        })
}

/// Judges every member. `None` when no answering server has a meta group (nothing to judge).
pub fn assess_members(
    snapshot: &Snapshot,
    history: &History,
    thresholds: &Thresholds,
    now: SystemTime,
) -> Option<MetaAssessment> {
    let first = snapshot.meta_views().next()?;
    let authority = snapshot.leader_view();

    // Membership: the leader and its replicas when a leader answered; otherwise every member any
    // view lists (follower and leaderless views list all members).
    let mut entries: BTreeMap<String, MemberEntry> = BTreeMap::new();
    let mut note = |peer: Option<&PeerInfo>, name: &str, from_leader: bool| {
        let (display, unknown) = match peer {
            Some(p) if p.name_unknown() => (
                history
                    .name_of_peer(&p.peer)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("peer-{}", p.peer)),
                true,
            ),
            _ => (name.to_string(), false),
        };
        let entry = entries.entry(display).or_insert_with(|| MemberEntry {
            unknown,
            ..MemberEntry::default()
        });
        if let Some(p) = peer {
            if !p.peer.is_empty() {
                entry.peer = Some(p.peer.clone());
            }
            if from_leader {
                entry.leader_entry = Some(p.clone());
            }
            if p.offline {
                entry.flagged_by.push(from_leader);
            }
        }
    };
    let (cluster_size, quorum) = match authority {
        Some((view, meta)) => {
            note(None, &view.server.name, true);
            for p in &meta.replicas {
                note(Some(p), &p.name, true);
            }
            (meta.cluster_size, meta.quorum_needed)
        }
        None => {
            let mut size = 0;
            let mut quorum = None;
            for (view, meta) in snapshot.meta_views() {
                // A follower is a member; a leaderless view lists the reporter among its replicas
                // when it is one (a server that joined while there was no leader is not).
                if meta.leader_name().is_some() {
                    note(None, &view.server.name, false);
                }
                for p in &meta.replicas {
                    note(Some(p), &p.name, false);
                }
                size = size.max(meta.cluster_size);
                quorum = quorum.max(meta.quorum_needed);
            }
            (size, quorum)
        }
    };
    // A member some live server lists as "Server name unknown" was never seen alive by it: the
    // mark of a renamed or retired server. Any view may know this, not only the leader's, except
    // that of a server that just restarted: it has not seen a peer that is merely down either.
    for (view, meta) in snapshot.meta_views() {
        if history.restarted_within(&view.server.name, RESTART_SETTLE, now) {
            continue;
        }
        for p in meta.replicas.iter().filter(|p| p.name_unknown()) {
            let name = history
                .name_of_peer(&p.peer)
                .map(str::to_string)
                .unwrap_or_else(|| format!("peer-{}", p.peer));
            if let Some(entry) = entries.get_mut(&name) {
                entry.unknown = true;
            }
        }
    }
    let cluster_size = cluster_size.max(entries.len());
    let quorum_needed = quorum.filter(|q| *q > 0).unwrap_or(cluster_size / 2 + 1);
    let leader_name = authority.map(|(v, _)| v.server.name.clone());
    let cut_off = leader_name
        .as_deref()
        .and_then(|l| followers_cut_off_from(snapshot, l, history, thresholds, now));
    let losing = leader_name
        .as_deref()
        .map(|l| majority_losing(snapshot, l))
        .unwrap_or_default();

    let non_members = snapshot
        .meta_views()
        .map(|(v, _)| &v.server.name)
        .filter(|n| !entries.contains_key(*n))
        .cloned()
        .collect();
    let judging = Judging {
        snapshot,
        history,
        thresholds,
        leader: leader_name.as_deref(),
        cut_off: cut_off.as_ref(),
        losing: &losing,
        now,
    };
    let members: Vec<Member> = entries
        .into_iter()
        .map(|(name, entry)| judge(name, entry, &judging))
        .collect();
    let mut clusters: BTreeMap<&str, ClusterTally> = BTreeMap::new();
    for member in &members {
        if let Some(cluster) = &member.cluster {
            let tally = clusters.entry(cluster).or_insert_with(|| ClusterTally {
                cluster: cluster.clone(),
                members: 0,
                online: 0,
            });
            tally.members += 1;
            tally.online += usize::from(member.online());
        }
    }
    let clusters: Vec<ClusterTally> = clusters.into_values().collect();
    let lead_cluster = members
        .iter()
        .find(|m| m.leader)
        .and_then(|m| m.cluster.clone());

    let (first_view, first_meta) = first;
    let (view_for_names, meta_for_names) = authority.unwrap_or((first_view, first_meta));
    Some(MetaAssessment {
        group: GroupId::of(view_for_names.server.domain.as_deref()),
        lead_cluster,
        clusters,
        cluster: meta_for_names
            .name
            .clone()
            .or_else(|| view_for_names.server.cluster.clone())
            .unwrap_or_else(|| "unnamed".to_string()),
        domain: view_for_names
            .server
            .domain
            .clone()
            .filter(|d| !d.is_empty()),
        leader: leader_name,
        cluster_size,
        quorum_needed,
        pending: authority.map(|(_, meta)| meta.pending),
        members,
        servers_answering: snapshot.views.len(),
        non_members,
        outside: snapshot
            .views
            .values()
            .filter(|v| v.jetstream && v.meta.is_none())
            .map(|v| v.server.name.clone())
            .collect(),
        leaders_reported: snapshot
            .leaders_reported()
            .into_iter()
            .map(|(leader, servers)| LeaderGroup { leader, servers })
            .collect(),
        leaderless_since: history.leaderless_since,
        unheard_since: None,
    })
}

/// A group none of whose servers answers, as its history last knew it: every member unknown,
/// no leader, `unheard_since` set. `None` for a group never heard (no history of servers).
pub fn assess_unheard(
    group: &GroupId,
    history: &History,
    now: SystemTime,
) -> Option<MetaAssessment> {
    let names: BTreeSet<String> = match &history.size {
        Some(size) if !size.members.is_empty() => size.members.clone(),
        _ => history.servers.keys().cloned().collect(),
    };
    if names.is_empty() {
        return None;
    }
    let members: Vec<Member> = names
        .iter()
        .map(|name| {
            let record = history.servers.get(name);
            Member {
                name: name.clone(),
                peer: history.peer_of_name(name).map(str::to_string),
                cluster: record.and_then(|r| r.cluster.clone()),
                leader: false,
                answered: false,
                name_unknown: false,
                current: None,
                active: None,
                lag: 0,
                version: record.and_then(|r| r.version.clone()),
                facts: None,
                state: MemberState::Unknown,
            }
        })
        .collect();
    let mut clusters: BTreeMap<String, ClusterTally> = BTreeMap::new();
    for cluster in members.iter().filter_map(|m| m.cluster.as_ref()) {
        clusters
            .entry(cluster.clone())
            .or_insert_with(|| ClusterTally {
                cluster: cluster.clone(),
                members: 0,
                online: 0,
            })
            .members += 1;
    }
    let cluster_size = history
        .size
        .as_ref()
        .map_or(members.len(), |s| s.size)
        .max(members.len());
    Some(MetaAssessment {
        group: group.clone(),
        cluster: clusters
            .keys()
            .next()
            .cloned()
            .unwrap_or_else(|| "unnamed".to_string()),
        lead_cluster: None,
        clusters: clusters.into_values().collect(),
        domain: group.domain().map(str::to_string),
        leader: None,
        cluster_size,
        quorum_needed: cluster_size / 2 + 1,
        pending: None,
        members,
        servers_answering: 0,
        non_members: Vec::new(),
        outside: Vec::new(),
        leaders_reported: Vec::new(),
        leaderless_since: None,
        unheard_since: Some(history.dark_since.or(history.last_heard()).unwrap_or(now)),
    })
}

/// The answering followers of `leader` when none of them has heard from it within
/// `offline_after` (and at least one has not); `None` while any follower still hears it. A
/// member that names no leader at all lost this one too once the leader has not heard from it
/// for `offline_after` either (every route cut: the followers campaign while the old leader
/// claims leadership for another 10-20 s): the leader's silence towards it says nothing about it.
fn followers_cut_off_from(
    snapshot: &Snapshot,
    leader: &str,
    history: &History,
    thresholds: &Thresholds,
    now: SystemTime,
) -> Option<BTreeSet<String>> {
    let leader_meta = snapshot.views.get(leader).and_then(|v| v.meta.as_ref());
    let mut unheard_by = BTreeSet::new();
    for (view, meta) in snapshot.meta_views() {
        let name = view.server.name.as_str();
        if name == leader {
            continue;
        }
        match meta.leader_name() {
            Some(named) if named == leader => {
                let entry = meta.replicas.iter().find(|p| p.name == leader)?;
                if Duration::from_nanos(entry.active) <= thresholds.offline_after {
                    return None;
                }
            }
            Some(_) => continue,
            None => {
                // Only a member the leader lists (a server that is none names no leader either).
                let Some(entry) =
                    leader_meta.and_then(|m| m.replicas.iter().find(|p| p.name == name))
                else {
                    continue;
                };
                // A new leader's `active` counts from before it led, and a member that just
                // voted for it names no leader until its first append: only the time since the
                // election says anything then.
                let since_election = history
                    .leader_elected_at(leader)
                    .map_or(Duration::MAX, |at| {
                        now.duration_since(at).unwrap_or_default()
                    });
                let silent = entry.active > 0
                    && Duration::from_nanos(entry.active).min(since_election)
                        > thresholds.offline_after;
                if !silent {
                    return None;
                }
            }
        }
        unheard_by.insert(name.to_string());
    }
    (!unheard_by.is_empty()).then_some(unheard_by)
}

/// The answering followers of `leader` that no longer hear it (their view of it is not
/// `current`: nothing from it for 2 s), when they are most of its answering followers: then the
/// leader is the one being cut off, and its silence towards them says nothing about them yet
/// (until `offline_after` passes and [`followers_cut_off_from`] judges it). Empty otherwise: a
/// few followers that lost a leader the others still hear are the ones cut off.
fn majority_losing(snapshot: &Snapshot, leader: &str) -> BTreeSet<String> {
    let mut followers = 0;
    let mut losing = BTreeSet::new();
    for (view, meta) in snapshot.meta_views() {
        if view.server.name == leader || meta.leader_name() != Some(leader) {
            continue;
        }
        followers += 1;
        if meta.replicas.iter().any(|p| p.name == leader && !p.current) {
            losing.insert(view.server.name.clone());
        }
    }
    if losing.len() * 2 > followers {
        losing
    } else {
        BTreeSet::new()
    }
}

#[derive(Default)]
struct MemberEntry {
    peer: Option<String>,
    unknown: bool,
    leader_entry: Option<PeerInfo>,
    /// One element per view that flagged it offline: true when that view is the leader's.
    flagged_by: Vec<bool>,
}

/// What every member is judged against.
struct Judging<'a> {
    snapshot: &'a Snapshot,
    history: &'a History,
    thresholds: &'a Thresholds,
    leader: Option<&'a str>,
    cut_off: Option<&'a BTreeSet<String>>,
    losing: &'a BTreeSet<String>,
    now: SystemTime,
}

fn judge(name: String, entry: MemberEntry, judging: &Judging<'_>) -> Member {
    let Judging {
        snapshot,
        history,
        thresholds,
        leader,
        cut_off,
        losing,
        now,
    } = *judging;
    let view = snapshot.views.get(&name);
    let answered = view.is_some();
    let mut reasons = Vec::new();

    if let Some(departure) = history.departures.get(&name) {
        // Still the departing process (or silent since): it has left.
        if view.is_none_or(|v| v.server.id == departure.server_id) {
            reasons.push(OfflineReason::Departed {
                kind: departure.kind,
                at: departure.at,
            });
        }
    }
    // When the followers that answer all lost the leader (or most of them stopped hearing it),
    // the leader is the one cut off: its claims that they went silent say nothing about them.
    let leader_claims_count =
        !cut_off.is_some_and(|c| c.contains(&name)) && !losing.contains(&name);
    if let (Some(unheard_by), true) = (cut_off, leader == Some(name.as_str())) {
        reasons.push(OfflineReason::CutOff {
            unheard_by: unheard_by.iter().cloned().collect(),
        });
    }
    if let (Some(leader), true) = (leader, leader_claims_count) {
        if entry.flagged_by.iter().any(|by_leader| *by_leader) {
            reasons.push(OfflineReason::OfflineFlag {
                reported_by: leader.to_string(),
            });
        }
        if let Some(p) = &entry.leader_entry {
            // `active` 0 means this leader never heard from it: count from when that began.
            let silent_for = if p.active == 0 && !p.current {
                history
                    .unheard
                    .get(&name)
                    .map(|u| history.out_of_contact(&name, u.since, now))
                    .unwrap_or_default()
            } else {
                Duration::from_nanos(p.active)
            };
            // A new leader's `active` for a peer counts from before it led (a server that was
            // paused or cut off wins the election and "has not heard" from everyone for as long):
            // for a server that answers and does not claim to lead itself, only the time since
            // the election says anything. (Its own view may lag the election by a moment.)
            let answers_as_follower = view.is_some_and(|v| {
                v.meta
                    .as_ref()
                    .is_none_or(|m| m.leader_name() != Some(name.as_str()))
            });
            let silent_for = match history.leader_elected_at(leader) {
                Some(at) if answers_as_follower => {
                    silent_for.min(now.duration_since(at).unwrap_or_default())
                }
                _ => silent_for,
            };
            if silent_for > thresholds.offline_after {
                reasons.push(OfflineReason::Silent {
                    active: silent_for,
                    reported_by: leader.to_string(),
                });
            }
        }
    } else if !entry.flagged_by.is_empty() {
        let reporter = snapshot
            .meta_views()
            .find(|(_, m)| {
                m.replicas
                    .iter()
                    .any(|p| p.offline && (p.name == name || entry.peer.as_ref() == Some(&p.peer)))
            })
            .map(|(v, _)| v.server.name.clone())
            .unwrap_or_default();
        reasons.push(OfflineReason::OfflineFlag {
            reported_by: reporter,
        });
    }
    let known = history.servers.get(&name);
    let unheard = !answered && (known.is_some() || snapshot.unanswered.contains(&name));
    // A server of another cluster than the attached one (behind a gateway or a leaf
    // connection) is reached over one link per cluster: when that link reconnects (its far end
    // crashed, say), the whole cluster is silent for a moment. One missed poll there proves
    // nothing; two in a row do.
    let remote = match (
        known.and_then(|k| k.cluster.as_ref()),
        &snapshot.attached_cluster,
    ) {
        (Some(cluster), Some(attached)) => cluster != attached,
        _ => false,
    };
    let link_settling = remote && known.is_some_and(|k| k.missed < 2);
    // A server NATS still routes to (its probe timed out, it did not find no responders) that
    // the group heard within about a raft heartbeat is busy, not gone: a flood of JetStream API
    // requests keeps a meta leader from answering JSZ in time while it leads on. Its silence
    // counts once the group stops hearing it too (a stalled server's heartbeats stop).
    let busy = snapshot.busy.contains(&name)
        && heard_within(snapshot, &name, entry.peer.as_deref(), BUSY_HEARD_WITHIN);
    // Through a server whose routes are being cut, silence proves nothing (a server that just
    // restarted has no pinned link yet to answer on either): not offline, not online.
    if unheard && !snapshot.reach_impaired && !link_settling && !busy {
        reasons.push(OfflineReason::NotAnswering {
            last_answered: known.map(|k| k.last_answered),
        });
    }

    let state = if !reasons.is_empty() {
        MemberState::Offline(reasons)
    } else if unheard {
        MemberState::Unknown
    } else if answered || leader.is_some() {
        MemberState::Online
    } else {
        MemberState::Unknown
    };
    let leader_entry = entry.leader_entry.as_ref();
    Member {
        peer: entry
            .peer
            .or_else(|| history.peer_of_name(&name).map(str::to_string)),
        cluster: view
            .and_then(|v| v.server.cluster.clone())
            .or_else(|| known.and_then(|k| k.cluster.clone())),
        leader: leader == Some(name.as_str()),
        answered,
        name_unknown: entry.unknown,
        current: leader.map(|l| l == name || leader_entry.is_some_and(|p| p.current)),
        active: leader_entry
            .map(|p| p.active)
            .filter(|a| *a > 0)
            .map(Duration::from_nanos),
        lag: leader_entry.map(|p| p.lag).unwrap_or(0),
        version: view
            .and_then(|v| v.server.ver.clone())
            .or_else(|| known.and_then(|k| k.version.clone())),
        facts: view
            .filter(|v| v.via != Via::Identity)
            .and_then(|v| v.facts.clone()),
        state,
        name,
    }
}

/// Members judged offline.
pub fn offline_members(meta: &MetaAssessment) -> impl Iterator<Item = &Member> {
    meta.members
        .iter()
        .filter(|m| matches!(m.state, MemberState::Offline(_)))
}

/// Names of the members judged offline, sorted.
pub fn offline_names(meta: &MetaAssessment) -> BTreeSet<String> {
    offline_members(meta).map(|m| m.name.clone()).collect()
}

/// A meta group of `cluster C1` as judged, for the checks' unit tests: `online` members online,
/// `offline` members offline (not answering), no leader view, quorum a majority.
#[cfg(test)]
pub(crate) fn leaderless_assessment(online: &[&str], offline: &[&str]) -> MetaAssessment {
    let member = |name: &str, state: MemberState| Member {
        name: name.to_string(),
        peer: Some(format!("peer-{name}")),
        cluster: Some("C1".into()),
        leader: false,
        answered: state == MemberState::Online,
        name_unknown: false,
        current: None,
        active: None,
        lag: 0,
        version: Some("2.15.1".into()),
        facts: None,
        state,
    };
    let mut members: Vec<Member> = online
        .iter()
        .map(|n| member(n, MemberState::Online))
        .chain(offline.iter().map(|n| {
            member(
                n,
                MemberState::Offline(vec![OfflineReason::NotAnswering {
                    last_answered: None,
                }]),
            )
        }))
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let size = members.len();
    MetaAssessment {
        group: GroupId::default(),
        cluster: "C1".into(),
        lead_cluster: None,
        clusters: vec![ClusterTally {
            cluster: "C1".into(),
            members: size,
            online: online.len(),
        }],
        domain: None,
        leader: None,
        cluster_size: size,
        quorum_needed: size / 2 + 1,
        pending: None,
        members,
        servers_answering: online.len(),
        non_members: Vec::new(),
        outside: Vec::new(),
        leaders_reported: vec![LeaderGroup {
            leader: None,
            servers: online.iter().map(|n| n.to_string()).collect(),
        }],
        leaderless_since: None,
        unheard_since: None,
    }
}
