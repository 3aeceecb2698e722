//! Observe: the first stage of the pipeline. Gathers every server's JSZ view and decodes the events
//! that change meta state into plain data (`Snapshot`, `MetaEvent`) for the checks.

pub mod events;
pub mod extras;
pub mod jsz;
pub mod plan;
pub mod policy;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use extras::ServerExtras;
pub use jsz::{JsConfig, JszReply, MetaCluster, MetaSnapshotStats, PeerInfo, ServerIdentity};

/// Identity of a meta group: its JetStream domain, the empty string for the default domain.
/// nats-server runs one meta group per domain (clusters joined by gateways share it, leaf nodes
/// in the same domain join it), so the domain is what never moves, whichever cluster leads.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GroupId(String);

/// How the default domain's group is named in finding keys and tables.
pub const DEFAULT_GROUP_LABEL: &str = "default";

impl GroupId {
    /// The group of `domain` (`None` or empty: the default domain).
    pub fn of(domain: Option<&str>) -> GroupId {
        GroupId(domain.unwrap_or_default().to_string())
    }

    /// The domain, `None` for the default domain.
    pub fn domain(&self) -> Option<&str> {
        (!self.0.is_empty()).then_some(self.0.as_str())
    }

    /// The name used in finding keys, tables and metrics: the domain, or `default`.
    pub fn label(&self) -> &str {
        self.domain().unwrap_or(DEFAULT_GROUP_LABEL)
    }
}

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// How far a server's clock may be from this instance's for the times it gives to be used: a
/// server (or an instance) whose clock is further off has it wrong, and its times must not age
/// or freeze what the others timed. Well above the skew NTP leaves between hosts.
pub const SERVER_CLOCK_TOLERANCE: Duration = Duration::from_secs(60);

/// `server`, a time on a server's clock, when it is within [`SERVER_CLOCK_TOLERANCE`] of
/// `local`, the same moment on this instance's clock.
pub fn plausible_server_time(server: Option<SystemTime>, local: SystemTime) -> Option<SystemTime> {
    server.filter(|s| {
        let off = s
            .duration_since(local)
            .or_else(|_| local.duration_since(*s))
            .unwrap_or_default();
        off <= SERVER_CLOCK_TOLERANCE
    })
}

/// What one poll saw: every server view that arrived, and which known servers stayed silent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// When the poll started.
    pub taken_at: Option<SystemTime>,
    /// Views by server name.
    pub views: BTreeMap<String, ServerView>,
    /// Known servers that answered neither the gather nor a direct request.
    pub unanswered: BTreeSet<String>,
    /// Those of `unanswered` whose direct request timed out instead of finding no responders:
    /// NATS still routes to them (a crashed server's subscriptions go with its routes at once),
    /// so they may be busy rather than gone.
    pub busy: BTreeSet<String>,
    /// Servers whose pinned link (the monitor's own connection to each server) was down when the
    /// poll ended: their process is gone (a cut route leaves the pinned link up).
    pub links_down: BTreeSet<String>,
    /// Replies that could not be decoded.
    pub malformed: u64,
    /// How long gathering took.
    pub duration: Duration,
    /// Bytes of the replies received (JSZ and identities; not the pinned connections' views).
    pub bytes: u64,
    /// Some live servers answered only on their own pinned links: the path through the main
    /// connection's server does not reach every server (its routes are being cut), so the
    /// silence of a server on that path says nothing about the server.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reach_impaired: bool,
    /// How many servers answered through the main connection (the rest only on their own
    /// links): at most half of those answering means its server is on the small side of a cut.
    #[serde(skip)]
    pub main_reach: usize,
    /// The own cluster of the server the main connection is attached to, when it answered:
    /// servers of other clusters (gateways, leaf connections) are reached through one link
    /// per cluster, and that link reconnecting silences them all for a moment.
    #[serde(skip)]
    pub attached_cluster: Option<String>,
    /// What the sources beyond JSZ said this poll, by server name (see [`extras`]): only the
    /// few servers asked this poll are present, and a field is `None` when its source was not
    /// asked or not answered: unknown, never healthy.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extras: BTreeMap<String, ServerExtras>,
}

impl Snapshot {
    /// The servers' clock at this poll: the latest JSZ `now` among the views (`None` when no
    /// view carries one, as in a poll of identities only). Ages of what the servers timed are
    /// measured on it, so that instances on clocks of their own agree on them.
    pub fn server_now(&self) -> Option<SystemTime> {
        self.views
            .values()
            .filter_map(|v| v.facts.as_ref()?.now)
            .max()
    }

    /// [`Snapshot::server_now`] when it is plausible against `now`, this instance's clock at the
    /// same moment ([`plausible_server_time`]): the servers' clock the history and the checks use.
    pub fn plausible_server_now(&self, now: SystemTime) -> Option<SystemTime> {
        plausible_server_time(self.server_now(), now)
    }

    /// True when the main connection's server reached at most half of the servers that answered
    /// (the others only on their own links): it is on the small side of a cut, or cut off alone.
    pub fn main_path_in_minority(&self) -> bool {
        self.reach_impaired && self.main_reach * 2 <= self.views.len()
    }

    /// A snapshot of decoded replies; `known` servers absent from them count as not answering.
    /// (What a poll produces, minus the network: used for captured fixtures.)
    pub fn from_replies(
        taken_at: SystemTime,
        replies: impl IntoIterator<Item = (JszReply, Via)>,
        known: &[plan::KnownServer],
    ) -> Snapshot {
        let mut snapshot = Snapshot {
            taken_at: Some(taken_at),
            ..Snapshot::default()
        };
        for (reply, via) in replies {
            let view = ServerView::from_reply(reply, via);
            snapshot.views.insert(view.server.name.clone(), view);
        }
        snapshot.unanswered = known
            .iter()
            .filter(|k| !snapshot.views.contains_key(&k.name))
            .map(|k| k.name.clone())
            .collect();
        snapshot
    }

    /// Splits the poll into one snapshot per meta group, so that a server of one group never
    /// counts as silent, offline or disagreeing in another. The groups are those seen before
    /// (`expected`: they get a part even when none of their servers answered now) and every
    /// domain a meta view of this poll reports. A view goes to its own domain's group; an
    /// identity-only view (IDZ carries no domain) to the group whose member list names it, else
    /// the one `known` says it was last seen in; a silent server to the group `known` names. A
    /// view or silent server no group takes (a server without clustered JetStream, or an
    /// identity not placed yet) is in no part: no group is made of servers without a meta view.
    /// Counters (`malformed`, `bytes`, `duration`) and the reach of the main path stay with
    /// every part: they describe the poll, not a group.
    pub fn split_groups(
        &self,
        known: &dyn Fn(&str) -> Option<GroupId>,
        expected: impl IntoIterator<Item = GroupId>,
    ) -> BTreeMap<GroupId, Snapshot> {
        let mut parts: BTreeMap<GroupId, Snapshot> = BTreeMap::new();
        let empty = || Snapshot {
            views: BTreeMap::new(),
            unanswered: BTreeSet::new(),
            ..self.clone_counters()
        };
        for group in expected {
            parts.entry(group).or_insert_with(empty);
        }
        let mut listed: std::collections::HashMap<&str, GroupId> = std::collections::HashMap::new();
        for (view, meta) in self.meta_views() {
            let group = GroupId::of(view.server.domain.as_deref());
            for replica in &meta.replicas {
                listed
                    .entry(replica.name.as_str())
                    .or_insert_with(|| group.clone());
            }
            parts.entry(group).or_insert_with(empty);
        }
        for (name, view) in &self.views {
            let group = match view.via {
                Via::Identity => listed.get(name.as_str()).cloned().or_else(|| known(name)),
                _ => Some(GroupId::of(view.server.domain.as_deref())),
            };
            if let Some(part) = group.and_then(|g| parts.get_mut(&g)) {
                part.views.insert(name.clone(), view.clone());
                if let Some(extras) = self.extras.get(name) {
                    part.extras.insert(name.clone(), extras.clone());
                }
            }
        }
        for name in &self.unanswered {
            if let Some(part) = known(name).and_then(|g| parts.get_mut(&g)) {
                part.unanswered.insert(name.clone());
                if self.busy.contains(name) {
                    part.busy.insert(name.clone());
                }
                if self.links_down.contains(name) {
                    part.links_down.insert(name.clone());
                }
            }
        }
        parts
    }

    /// This snapshot without its views: the poll's counters only.
    fn clone_counters(&self) -> Snapshot {
        Snapshot {
            taken_at: self.taken_at,
            views: BTreeMap::new(),
            unanswered: BTreeSet::new(),
            busy: BTreeSet::new(),
            links_down: BTreeSet::new(),
            malformed: self.malformed,
            duration: self.duration,
            bytes: self.bytes,
            reach_impaired: self.reach_impaired,
            main_reach: self.main_reach,
            attached_cluster: self.attached_cluster.clone(),
            extras: BTreeMap::new(),
        }
    }

    /// Views that carry a meta group.
    pub fn meta_views(&self) -> impl Iterator<Item = (&ServerView, &MetaCluster)> {
        self.views
            .values()
            .filter_map(|v| v.meta.as_deref().map(|m| (v, m)))
    }

    /// The view to trust about other peers: a server that reports itself as leader. If several do
    /// (a disagreement), the one most servers name as leader; ties go to the first name.
    pub fn leader_view(&self) -> Option<(&ServerView, &MetaCluster)> {
        let votes = self.leaders_reported();
        self.meta_views()
            .filter(|(view, meta)| meta.leader_name() == Some(view.server.name.as_str()))
            .max_by_key(|(view, _)| {
                (
                    votes
                        .get(&Some(view.server.name.clone()))
                        .map_or(0, Vec::len),
                    std::cmp::Reverse(view.server.name.clone()),
                )
            })
    }

    /// Servers grouped by the meta leader each reports (`None`: reports no leader).
    pub fn leaders_reported(&self) -> BTreeMap<Option<String>, Vec<String>> {
        let mut groups: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
        for (view, meta) in self.meta_views() {
            groups
                .entry(meta.leader_name().map(str::to_string))
                .or_default()
                .push(view.server.name.clone());
        }
        groups
    }
}

/// One server's own view of the meta group.
#[derive(Debug, Clone, Serialize)]
pub struct ServerView {
    /// Who answered.
    pub server: ServerIdentity,
    /// Its meta group view, absent when it runs no clustered JetStream. Shared: a view of a
    /// large group lists thousands of members, and splitting a poll into groups copies views.
    pub meta: Option<Arc<MetaCluster>>,
    /// How the view reached us.
    pub via: Via,
    /// It answered with JetStream data (clustered or not); false for an error reply (JetStream
    /// disabled) and for an identity.
    #[serde(skip)]
    pub jetstream: bool,
    /// What its own JSZ reply says beyond the meta group's members; `None` for an identity or
    /// an error reply.
    #[serde(skip)]
    pub facts: Option<JsFacts>,
}

/// What a server's own JSZ reply says beyond the meta group's members: its configuration, the
/// assets it holds and its meta snapshots (META_004, META_005, META_107). Each part is `None`
/// when the reply lacks it (an older server) or has it in an unexpected shape: unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JsFacts {
    /// JSZ `config`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<JsConfig>,
    /// JSZ `streams`: stream replicas on this server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<u64>,
    /// JSZ `consumers`: consumer replicas on this server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumers: Option<u64>,
    /// JSZ `ha_assets`: raft groups on this server, the meta group included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ha_assets: Option<u64>,
    /// JSZ `meta_cluster.snapshot`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<MetaSnapshotStats>,
    /// JSZ `now`: the server's clock when it answered.
    #[serde(skip)]
    pub now: Option<SystemTime>,
}

/// The path a view took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The `$SYS.REQ.SERVER.PING.JSZ` scatter-gather.
    Gather,
    /// A direct `$SYS.REQ.SERVER.<id>.JSZ` request.
    Direct,
    /// Only the server's identity (`IDZ`): it answers, its view was not asked for (large groups).
    Identity,
}

impl ServerView {
    /// Builds a view from a decoded reply.
    pub fn from_reply(reply: JszReply, via: Via) -> Self {
        let facts = reply.data.as_ref().map(|d| JsFacts {
            config: d.config.clone(),
            streams: d.streams,
            consumers: d.consumers,
            ha_assets: d.ha_assets,
            snapshot: d.meta_cluster.as_ref().and_then(|m| m.snapshot.clone()),
            now: d
                .now
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok()),
        });
        ServerView {
            facts,
            jetstream: reply.data.is_some(),
            meta: reply.data.and_then(|d| d.meta_cluster).map(Arc::new),
            server: reply.server,
            via,
        }
    }
}

/// An event that changes meta state, decoded from the system account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MetaEvent {
    /// `$SYS.SERVER.<id>.SHUTDOWN`: the server is stopping.
    Shutdown {
        /// Server name.
        server: String,
        /// Server id of the stopping process.
        server_id: String,
        /// When we received it.
        at: SystemTime,
    },
    /// `$SYS.SERVER.<id>.LAMEDUCK`: the server entered lame-duck mode and will stop.
    LameDuck {
        /// Server name.
        server: String,
        /// Server id of the process.
        server_id: String,
        /// When we received it.
        at: SystemTime,
    },
    /// `$JS.EVENT.ADVISORY.DOMAIN.LEADER_ELECTED`: a new meta leader.
    LeaderElected {
        /// Peer hash of the new leader (not its name).
        leader_peer: String,
        /// Cluster, when the advisory carries it.
        cluster: Option<String>,
        /// Domain, when set.
        domain: Option<String>,
        /// When we received it.
        at: SystemTime,
        /// When the announcing server says it happened, on its own clock (`timestamp`).
        server_at: Option<SystemTime>,
    },
    /// `$JS.EVENT.ADVISORY.SERVER.REMOVED`: a peer was removed from the meta group.
    ServerRemoved {
        /// Name of the removed server.
        server: String,
        /// Its server id.
        server_id: String,
        /// Domain of its meta group, when set.
        domain: Option<String>,
        /// When we received it.
        at: SystemTime,
    },
}

impl MetaEvent {
    /// A short label for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            MetaEvent::Shutdown { .. } => "shutdown",
            MetaEvent::LameDuck { .. } => "lameduck",
            MetaEvent::LeaderElected { .. } => "leader_elected",
            MetaEvent::ServerRemoved { .. } => "server_removed",
        }
    }

    /// One line for logs.
    pub fn describe(&self) -> String {
        match self {
            MetaEvent::Shutdown {
                server, server_id, ..
            } => format!("{server} ({server_id}) is shutting down"),
            MetaEvent::LameDuck {
                server, server_id, ..
            } => format!("{server} ({server_id}) entered lame-duck mode"),
            MetaEvent::LeaderElected {
                leader_peer,
                cluster,
                ..
            } => format!(
                "peer {leader_peer} elected meta leader of {}",
                cluster.as_deref().unwrap_or("the meta group")
            ),
            MetaEvent::ServerRemoved { server, .. } => {
                format!("{server} was removed from the meta group")
            }
        }
    }
}
