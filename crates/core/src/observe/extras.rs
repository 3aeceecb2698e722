//! Observe: the sources beyond JSZ (ROUTEZ, HEALTHZ, RAFTZ, GATEWAYZ), each asked of a few
//! servers per poll, and their decoders. Pure: the product's `observe::extras` asks; this module
//! says whom to ask and what a reply means.
//!
//! Every source is bounded at 1,000 servers (figures measured on a 3-node 2.15 cluster in
//! `docs/new-sources.md`):
//! - HEALTHZ: at most [`EXTRAS_PER_POLL`] servers per poll, in rotation through the servers that
//!   answer with a meta view.
//! - ROUTEZ: of those, as many as [`ROUTEZ_REMOTES_PER_POLL`] allows, and only of a server whose
//!   own cluster answers with at most [`ROUTEZ_CLUSTER_MAX`] servers, counting the servers known
//!   by identity only (no cluster) in every cluster (a ROUTEZ reply lists every route of the
//!   server, so a 1,000-server full mesh would cost about 2 MB per reply).
//! - RAFTZ `_meta_`: every server that claims to lead, plus one member in rotation; in groups of
//!   more than [`RAFTZ_LARGE_GROUP`] members (the size they report) only every
//!   [`RAFTZ_LARGE_EVERY`]th poll.
//! - GATEWAYZ: only when the servers answering span several clusters, the same rotation as
//!   ROUTEZ, asked without account details (one entry per remote cluster).
//!
//! A server not asked this poll, one that did not answer the request, and one too old to
//! subscribe to the subject (RAFTZ appeared in nats-server 2.10.26; `js-meta-only` in HEALTHZ in
//! 2.11.0, older servers run the whole health check instead) has no value: unknown, never ok.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::jsz::{ReplyError, ServerIdentity};
use super::{Snapshot, Via};

/// Servers asked for ROUTEZ, HEALTHZ (and GATEWAYZ in a supercluster) in one poll.
pub const EXTRAS_PER_POLL: usize = 8;

/// ROUTEZ is asked only of servers whose own cluster has at most this many servers answering.
pub const ROUTEZ_CLUSTER_MAX: usize = 64;

/// Remote servers the ROUTEZ replies of one poll may list in all: a reply lists every route
/// connection of its server, about 1.9 KB per remote server measured on 2.15 (a pool of three
/// plus the system account's route), so the servers asked per poll are this divided by the
/// largest cluster's size (at least one, at most [`EXTRAS_PER_POLL`]): about 120 KB per poll
/// at the 64-server limit.
pub const ROUTEZ_REMOTES_PER_POLL: usize = 64;

/// Groups of more members than this are asked for RAFTZ only every [`RAFTZ_LARGE_EVERY`]th
/// poll: its reply lists every peer of the group.
pub const RAFTZ_LARGE_GROUP: usize = 64;

/// See [`RAFTZ_LARGE_GROUP`].
pub const RAFTZ_LARGE_EVERY: u64 = 10;

/// The raft group name of the meta layer in RAFTZ.
pub const META_RAFT_GROUP: &str = "_meta_";

/// A source of data beyond JSZ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `$SYS.REQ.SERVER.<id>.ROUTEZ`: the server's routes.
    Routez,
    /// `$SYS.REQ.SERVER.<id>.HEALTHZ` with `js-meta-only`: JetStream and meta layer health.
    Healthz,
    /// `$SYS.REQ.SERVER.<id>.RAFTZ` for the `_meta_` group: the raft layer's own view.
    Raftz,
    /// `$SYS.REQ.SERVER.<id>.GATEWAYZ`: the server's gateways.
    Gatewayz,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 4] = [
        Source::Routez,
        Source::Healthz,
        Source::Raftz,
        Source::Gatewayz,
    ];

    /// The last token of its request subject.
    pub fn token(self) -> &'static str {
        match self {
            Source::Routez => "ROUTEZ",
            Source::Healthz => "HEALTHZ",
            Source::Raftz => "RAFTZ",
            Source::Gatewayz => "GATEWAYZ",
        }
    }

    /// The request body. HEALTHZ: `js-meta-only` stops after the meta layer check (the other
    /// options stop before it: `js-server-only` checks only that the server accepts connections,
    /// `js-enabled-only` only that JetStream is enabled). RAFTZ: the meta group only.
    pub fn body(self) -> &'static str {
        match self {
            Source::Routez | Source::Gatewayz => "{}",
            Source::Healthz => r#"{"js-meta-only":true}"#,
            Source::Raftz => r#"{"group":"_meta_"}"#,
        }
    }

    /// The subject that reaches one server directly.
    pub fn direct_subject(self, server_id: &str) -> String {
        format!("$SYS.REQ.SERVER.{server_id}.{}", self.token())
    }
}

/// One request to make: a source of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// Server name.
    pub server: String,
    /// Its current server id.
    pub id: String,
    /// What to ask.
    pub source: Source,
}

/// What the extra sources said about one server this poll; `None`: unknown (not asked, no
/// answer, an older server without the source, or a malformed reply).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerExtras {
    /// Its routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Routes>,
    /// Its JetStream health.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Its raft layer's view of the meta group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_meta: Option<RaftMeta>,
    /// Its gateways.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateways: Option<Gateways>,
}

/// A server's active routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Routes {
    /// Names of the servers it has at least one route to (a route pool opens several).
    pub remotes: BTreeSet<String>,
    /// Route connections in all.
    pub connections: usize,
}

/// A server's answer to HEALTHZ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// `status` as reported (`ok`, `unavailable`, `error`).
    pub status: String,
    /// `status_code` (200 when healthy).
    pub status_code: u16,
    /// The error text, when unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Health {
    /// Healthy: status `ok` and no error.
    pub fn ok(&self) -> bool {
        self.status == "ok"
            && self.error.is_none()
            && (self.status_code == 0 || self.status_code == 200)
    }
}

/// A server's raft view of the meta group (RAFTZ `_meta_`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RaftMeta {
    /// Raft state (`LEADER`, `FOLLOWER`, `CANDIDATE`, `CLOSED`).
    pub state: String,
    /// The group's size as this node's raft layer counts it.
    pub size: usize,
    /// Members it needs for quorum.
    pub quorum_needed: usize,
    /// It is being caught up by the leader (a snapshot or entries are being sent to it).
    pub catching_up: bool,
    /// The leader's peer hash it knows of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Peers it lists (other than itself), and of those the ones it knows.
    pub peers: usize,
    /// Of `peers`, those marked known.
    pub known_peers: usize,
    /// The names of `peers` this server can name (a server it knows by that peer id, perhaps
    /// offline): the others are peers of no server it knows (renamed or retired without
    /// peer-remove).
    pub named: BTreeSet<String>,
    /// Committed and applied raft indexes.
    pub committed: u64,
    /// Applied raft index.
    pub applied: u64,
}

/// A server's gateways.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Gateways {
    /// Its own gateway (cluster) name.
    pub name: String,
    /// Remote gateways it has an outbound connection to.
    pub outbound: BTreeSet<String>,
    /// Remote gateways configured or discovered but without an outbound connection now.
    pub outbound_down: BTreeSet<String>,
    /// Remote gateways with an inbound connection.
    pub inbound: BTreeSet<String>,
}

/// The envelope every `$SYS.REQ.SERVER` reply has.
#[derive(Debug, Deserialize)]
struct Envelope<T> {
    server: ServerIdentity,
    #[serde(default = "Option::default")]
    data: Option<T>,
    #[serde(default)]
    error: Option<ReplyError>,
}

/// Why a reply could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ExtrasError {
    /// Not the JSON expected.
    #[error("malformed {source_name} reply: {error}")]
    Malformed {
        /// Which source.
        source_name: &'static str,
        /// The decode error.
        error: serde_json::Error,
    },
    /// The server answered with an error object or without data.
    #[error("{source_name} error from {server}: {description}")]
    Refused {
        /// Which source.
        source_name: &'static str,
        /// Who answered.
        server: String,
        /// What it said.
        description: String,
    },
}

fn envelope<T: for<'de> Deserialize<'de>>(
    source: Source,
    payload: &[u8],
) -> Result<(ServerIdentity, T), ExtrasError> {
    let env: Envelope<T> =
        serde_json::from_slice(payload).map_err(|error| ExtrasError::Malformed {
            source_name: source.token(),
            error,
        })?;
    match (env.data, env.error) {
        (Some(data), None) => Ok((env.server, data)),
        (_, error) => Err(ExtrasError::Refused {
            source_name: source.token(),
            server: env.server.name,
            description: error.map_or_else(|| "no data".to_string(), |e| e.description),
        }),
    }
}

#[derive(Deserialize)]
struct RoutezWire {
    #[serde(default)]
    routes: Option<Vec<RouteWire>>,
}

#[derive(Deserialize)]
struct RouteWire {
    #[serde(default)]
    remote_name: String,
    #[serde(default)]
    remote_id: String,
}

/// Decodes a ROUTEZ reply. A route whose remote name is empty (very old servers) counts by
/// its remote id.
pub fn decode_routez(payload: &[u8]) -> Result<(ServerIdentity, Routes), ExtrasError> {
    let (server, wire): (ServerIdentity, RoutezWire) = envelope(Source::Routez, payload)?;
    let routes = wire.routes.unwrap_or_default();
    let remotes = routes
        .iter()
        .map(|r| match r.remote_name.is_empty() {
            true => r.remote_id.clone(),
            false => r.remote_name.clone(),
        })
        .filter(|name| !name.is_empty())
        .collect();
    Ok((
        server,
        Routes {
            remotes,
            connections: routes.len(),
        },
    ))
}

#[derive(Deserialize)]
struct HealthWire {
    #[serde(default)]
    status: String,
    #[serde(default)]
    status_code: u16,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    errors: Option<Vec<HealthErrorWire>>,
}

#[derive(Deserialize)]
struct HealthErrorWire {
    #[serde(default)]
    error: String,
}

/// Decodes a HEALTHZ reply.
pub fn decode_healthz(payload: &[u8]) -> Result<(ServerIdentity, Health), ExtrasError> {
    let (server, wire): (ServerIdentity, HealthWire) = envelope(Source::Healthz, payload)?;
    let detail = wire
        .errors
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.error)
        .filter(|e| !e.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let error = wire
        .error
        .filter(|e| !e.is_empty())
        .or_else(|| (!detail.is_empty()).then_some(detail));
    Ok((
        server,
        Health {
            status: wire.status,
            status_code: wire.status_code,
            error,
        },
    ))
}

#[derive(Deserialize)]
struct RaftGroupWire {
    #[serde(default)]
    state: String,
    #[serde(default)]
    size: usize,
    #[serde(default)]
    quorum_needed: usize,
    #[serde(default)]
    catching_up: bool,
    #[serde(default)]
    leader: Option<String>,
    #[serde(default)]
    committed: u64,
    #[serde(default)]
    applied: u64,
    #[serde(default)]
    peers: Option<BTreeMap<String, RaftPeerWire>>,
}

#[derive(Deserialize)]
struct RaftPeerWire {
    #[serde(default)]
    known: bool,
    #[serde(default)]
    name: String,
}

/// Decodes a RAFTZ reply (accounts, then groups by name) into its `_meta_` group; `Ok(None)`
/// when the server has no meta raft group (JetStream not clustered).
pub fn decode_raftz(payload: &[u8]) -> Result<(ServerIdentity, Option<RaftMeta>), ExtrasError> {
    let (server, accounts): (
        ServerIdentity,
        BTreeMap<String, BTreeMap<String, RaftGroupWire>>,
    ) = match envelope(Source::Raftz, payload) {
        Ok(decoded) => decoded,
        // A server without the group answers `data: null`.
        Err(ExtrasError::Refused { description, .. }) if description == "no data" => {
            let env: Envelope<serde_json::Value> =
                serde_json::from_slice(payload).map_err(|error| ExtrasError::Malformed {
                    source_name: "RAFTZ",
                    error,
                })?;
            return Ok((env.server, None));
        }
        Err(e) => return Err(e),
    };
    let group = accounts
        .into_values()
        .find_map(|mut groups| groups.remove(META_RAFT_GROUP));
    Ok((
        server,
        group.map(|g| {
            let peers = g.peers.unwrap_or_default();
            RaftMeta {
                state: g.state,
                size: g.size,
                quorum_needed: g.quorum_needed,
                catching_up: g.catching_up,
                leader: g.leader.filter(|l| !l.is_empty()),
                known_peers: peers.values().filter(|p| p.known).count(),
                named: peers
                    .values()
                    .filter(|p| !p.name.is_empty())
                    .map(|p| p.name.clone())
                    .collect(),
                peers: peers.len(),
                committed: g.committed,
                applied: g.applied,
            }
        }),
    ))
}

#[derive(Deserialize)]
struct GatewayzWire {
    #[serde(default)]
    name: String,
    #[serde(default)]
    outbound_gateways: Option<BTreeMap<String, RemoteGatewayWire>>,
    #[serde(default)]
    inbound_gateways: Option<BTreeMap<String, Vec<RemoteGatewayWire>>>,
}

#[derive(Deserialize)]
struct RemoteGatewayWire {
    #[serde(default)]
    connection: Option<serde_json::Value>,
}

/// Decodes a GATEWAYZ reply.
pub fn decode_gatewayz(payload: &[u8]) -> Result<(ServerIdentity, Gateways), ExtrasError> {
    let (server, wire): (ServerIdentity, GatewayzWire) = envelope(Source::Gatewayz, payload)?;
    let mut gateways = Gateways {
        name: wire.name,
        ..Gateways::default()
    };
    for (name, remote) in wire.outbound_gateways.unwrap_or_default() {
        match remote.connection.is_some() {
            true => gateways.outbound.insert(name),
            false => gateways.outbound_down.insert(name),
        };
    }
    for (name, remotes) in wire.inbound_gateways.unwrap_or_default() {
        if remotes.iter().any(|r| r.connection.is_some()) {
            gateways.inbound.insert(name);
        }
    }
    Ok((server, gateways))
}

/// Whom to ask for what in this poll (`round` counts polls and turns the rotation). Candidates
/// are the servers that answered with a meta view, by name; those with an empty id cannot be
/// asked directly.
pub fn plan(snapshot: &Snapshot, round: u64) -> Vec<Ask> {
    let members: Vec<(&str, &str, Option<&str>, bool)> = snapshot
        .views
        .values()
        .filter(|v| !v.server.id.is_empty())
        .filter_map(|v| {
            v.meta.as_ref().map(|m| {
                (
                    v.server.name.as_str(),
                    v.server.id.as_str(),
                    v.server.cluster.as_deref(),
                    m.leader_name() == Some(v.server.name.as_str()),
                )
            })
        })
        .collect();
    if members.is_empty() {
        return Vec::new();
    }
    // A server known by its identity only (IDZ, as a large group's poll sees most servers)
    // carries no cluster: it may be in any cluster, so it counts towards the size of each.
    // Counting only the views would make a 1,000-server cluster polled as a large group look
    // like its 9 whole views, and ask for a ROUTEZ listing every route of the server (1.6 MB).
    let mut per_cluster: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    let mut unplaced = 0;
    for v in snapshot.views.values() {
        match (v.via, v.server.cluster.as_deref()) {
            (Via::Identity, None) => unplaced += 1,
            (_, cluster) => *per_cluster.entry(cluster).or_default() += 1,
        }
    }
    let supercluster = per_cluster.keys().filter(|c| c.is_some()).count() > 1;
    let largest = (per_cluster.values().copied().max().unwrap_or(0) + unplaced).max(1);
    let routez_take = (ROUTEZ_REMOTES_PER_POLL / largest).clamp(1, EXTRAS_PER_POLL);
    let take = EXTRAS_PER_POLL.min(members.len());
    let start = (round as usize).wrapping_mul(take) % members.len();
    let mut asks = Vec::new();
    let ask = |name: &str, id: &str, source| Ask {
        server: name.to_string(),
        id: id.to_string(),
        source,
    };
    let chosen = members.iter().cycle().skip(start).take(take);
    for (n, (name, id, cluster, _)) in chosen.enumerate() {
        asks.push(ask(name, id, Source::Healthz));
        let small = per_cluster.get(cluster).copied().unwrap_or(0) + unplaced <= ROUTEZ_CLUSTER_MAX;
        if small && n < routez_take {
            asks.push(ask(name, id, Source::Routez));
        }
        if supercluster {
            asks.push(ask(name, id, Source::Gatewayz));
        }
    }
    // The size the members report (a large group's poll has only a few whole views).
    let group = snapshot
        .views
        .values()
        .filter_map(|v| v.meta.as_ref())
        .map(|m| m.cluster_size.max(m.replicas.len() + 1))
        .max()
        .unwrap_or(0)
        .max(members.len());
    if group > RAFTZ_LARGE_GROUP && round % RAFTZ_LARGE_EVERY != 0 {
        return asks;
    }
    let mut raft: BTreeSet<(&str, &str)> =
        members.iter().filter(|m| m.3).map(|m| (m.0, m.1)).collect();
    let rotating = members[(round as usize) % members.len()];
    raft.insert((rotating.0, rotating.1));
    for (name, id) in raft {
        asks.push(ask(name, id, Source::Raftz));
    }
    asks
}

/// Files one decoded answer under its server in `extras`.
pub fn file_answer(
    extras: &mut BTreeMap<String, ServerExtras>,
    source: Source,
    payload: &[u8],
) -> Result<String, ExtrasError> {
    let name = match source {
        Source::Routez => {
            let (server, routes) = decode_routez(payload)?;
            entry(extras, &server).routes = Some(routes);
            server.name
        }
        Source::Healthz => {
            let (server, health) = decode_healthz(payload)?;
            entry(extras, &server).health = Some(health);
            server.name
        }
        Source::Raftz => {
            let (server, raft) = decode_raftz(payload)?;
            entry(extras, &server).raft_meta = raft;
            server.name
        }
        Source::Gatewayz => {
            let (server, gateways) = decode_gatewayz(payload)?;
            entry(extras, &server).gateways = Some(gateways);
            server.name
        }
    };
    Ok(name)
}

fn entry<'a>(
    extras: &'a mut BTreeMap<String, ServerExtras>,
    server: &ServerIdentity,
) -> &'a mut ServerExtras {
    extras.entry(server.name.clone()).or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(clusters: &[(&str, usize)]) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for (cluster, count) in clusters {
            for i in 0..*count {
                let name = format!("{cluster}-{i}");
                let view = super::super::ServerView {
                    server: ServerIdentity {
                        name: name.clone(),
                        id: format!("ID{name}"),
                        cluster: Some(cluster.to_string()),
                        domain: None,
                        ver: None,
                    },
                    meta: Some(std::sync::Arc::new(super::super::MetaCluster {
                        leader: Some("a-0".into()),
                        ..Default::default()
                    })),
                    via: super::super::Via::Gather,
                    jetstream: true,
                    facts: None,
                };
                snapshot.views.insert(name, view);
            }
        }
        snapshot
    }

    fn count(asks: &[Ask], source: Source) -> usize {
        asks.iter().filter(|a| a.source == source).count()
    }

    #[test]
    fn a_small_cluster_is_asked_in_full_and_large_ones_within_the_bounds() {
        let small = plan(&snapshot(&[("a", 3)]), 1);
        assert_eq!(count(&small, Source::Healthz), 3);
        assert_eq!(count(&small, Source::Routez), 3);
        assert_eq!(count(&small, Source::Gatewayz), 0);
        assert!((1..=2).contains(&count(&small, Source::Raftz)));
        let sixty_four = plan(&snapshot(&[("a", 64)]), 1);
        assert_eq!(count(&sixty_four, Source::Healthz), EXTRAS_PER_POLL);
        assert_eq!(count(&sixty_four, Source::Routez), 1);
        for round in 1..RAFTZ_LARGE_EVERY * 2 {
            let thousand = plan(&snapshot(&[("a", 1000)]), round);
            assert_eq!(count(&thousand, Source::Healthz), EXTRAS_PER_POLL);
            assert_eq!(count(&thousand, Source::Routez), 0, "a full mesh of 1,000");
            let raft = count(&thousand, Source::Raftz);
            assert_eq!(raft > 0, round % RAFTZ_LARGE_EVERY == 0, "round {round}");
            assert!(raft <= 2);
        }
        let super_cluster = plan(&snapshot(&[("a", 3), ("b", 3), ("c", 3)]), 1);
        assert_eq!(count(&super_cluster, Source::Gatewayz), EXTRAS_PER_POLL);
        assert!(plan(&Snapshot::default(), 1).is_empty());
    }

    #[test]
    fn a_large_group_polled_by_identity_is_not_asked_for_routez_nor_raftz_every_poll() {
        // As the large-group poll sees 1,000 servers of one cluster: 9 whole views (each
        // reporting a group of 1,000), every other server by its identity only.
        let mut large = snapshot(&[("a", 9)]);
        for view in large.views.values_mut() {
            let mut meta = (**view.meta.as_ref().expect("meta")).clone();
            meta.cluster_size = 1000;
            view.meta = Some(std::sync::Arc::new(meta));
        }
        for i in 0..991 {
            let name = format!("idz-{i}");
            let view = super::super::ServerView {
                server: ServerIdentity {
                    name: name.clone(),
                    id: format!("ID{name}"),
                    cluster: None,
                    domain: None,
                    ver: None,
                },
                meta: None,
                via: super::super::Via::Identity,
                jetstream: false,
                facts: None,
            };
            large.views.insert(name, view);
        }
        for round in 1..RAFTZ_LARGE_EVERY * 2 {
            let asks = plan(&large, round);
            assert_eq!(count(&asks, Source::Healthz), EXTRAS_PER_POLL);
            assert_eq!(count(&asks, Source::Routez), 0, "round {round}");
            let raft = count(&asks, Source::Raftz);
            assert_eq!(raft > 0, round % RAFTZ_LARGE_EVERY == 0, "round {round}");
        }
    }

    #[test]
    fn routez_counts_each_remote_once_across_a_pool() {
        let raw = br#"{"server":{"name":"n1","id":"A"},"data":{"num_routes":4,"routes":[
            {"rid":1,"remote_id":"B","remote_name":"n2"},{"rid":2,"remote_id":"B","remote_name":"n2"},
            {"rid":3,"remote_id":"C","remote_name":"n3"},{"rid":4,"remote_id":"D","remote_name":""}]}}"#;
        let (server, routes) = decode_routez(raw).expect("decodes");
        assert_eq!(server.name, "n1");
        assert_eq!(routes.connections, 4);
        assert_eq!(
            routes.remotes,
            BTreeSet::from(["n2".to_string(), "n3".to_string(), "D".to_string()])
        );
        let none = br#"{"server":{"name":"n1","id":"A"},"data":{"num_routes":0,"routes":null}}"#;
        assert!(decode_routez(none).expect("decodes").1.remotes.is_empty());
    }

    #[test]
    fn healthz_unavailable_carries_its_error_and_an_error_reply_is_refused() {
        let raw = br#"{"server":{"name":"n1","id":"A"},"data":{"status":"unavailable","status_code":503,"error":"JetStream has not established contact with a meta leader"}}"#;
        let (_, health) = decode_healthz(raw).expect("decodes");
        assert!(!health.ok());
        assert!(health
            .error
            .as_deref()
            .unwrap_or("")
            .contains("meta leader"));
        let ok = br#"{"server":{"name":"n1","id":"A"},"data":{"status":"ok","status_code":200}}"#;
        assert!(decode_healthz(ok).expect("decodes").1.ok());
        let refused =
            br#"{"server":{"name":"n1","id":"A"},"error":{"code":500,"description":"boom"}}"#;
        assert!(matches!(
            decode_healthz(refused),
            Err(ExtrasError::Refused { .. })
        ));
        assert!(decode_healthz(b"{").is_err());
    }

    #[test]
    fn raftz_finds_the_meta_group_under_any_account() {
        let raw = br#"{"server":{"name":"n1","id":"A"},"data":{"SYS":{"_meta_":{"id":"x","state":"FOLLOWER","size":10,"quorum_needed":6,"catching_up":true,"leader":"","committed":5,"applied":4,"peers":{"a":{"name":"n2","known":true},"b":{"name":"","known":false}}}}}}"#;
        let (_, raft) = decode_raftz(raw).expect("decodes");
        let raft = raft.expect("meta group");
        assert_eq!((raft.size, raft.quorum_needed), (10, 6));
        assert!(raft.catching_up);
        assert_eq!(raft.leader, None);
        assert_eq!((raft.peers, raft.known_peers), (2, 1));
        assert_eq!(raft.named, BTreeSet::from(["n2".to_string()]));
        let none = br#"{"server":{"name":"n1","id":"A"},"data":null}"#;
        assert_eq!(decode_raftz(none).expect("decodes").1, None);
    }

    #[test]
    fn gatewayz_separates_connected_from_configured_remotes() {
        let raw = br#"{"server":{"name":"a1","id":"A"},"data":{"name":"c1","outbound_gateways":{"c2":{"configured":true,"connection":{"name":"x"}},"c3":{"configured":true}},"inbound_gateways":{"c2":[{"configured":false,"connection":{"name":"y"}}]}}}"#;
        let (_, gw) = decode_gatewayz(raw).expect("decodes");
        assert_eq!(gw.outbound, BTreeSet::from(["c2".to_string()]));
        assert_eq!(gw.outbound_down, BTreeSet::from(["c3".to_string()]));
        assert_eq!(gw.inbound, BTreeSet::from(["c2".to_string()]));
    }
}
