//! Part of history (between observe and evaluate: what earlier polls and events showed): what is
//! known of each server. Who answered under a name and when, its cluster and version, restarts,
//! the names peer hashes had (renames, stale peers), the membership the leader lists, contact,
//! members never heard from, and graceful departures announced by events.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::History;
use crate::observe::plan::KnownServer;
use crate::observe::{MetaCluster, ServerView, Snapshot, Via};

/// A member the leader has never heard from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Unheard {
    /// The leader reporting it.
    pub leader: String,
    /// First poll that saw it.
    pub since: SystemTime,
}

/// A member no live server carries the name of.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StalePeer {
    /// The name its peer hash last had, else `peer-<hash>`.
    pub name: String,
    /// Its peer hash: what `peer-remove` takes for a member listed without a name.
    pub peer: String,
}

/// A meta member the service has heard from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerRecord {
    /// Id of the process that answered last.
    pub server_id: String,
    /// When it last answered.
    pub last_answered: SystemTime,
    /// Its own cluster (from its reply envelope), so a member that stopped answering can still
    /// be placed in its cluster of a supercluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Its nats-server version (from its reply envelope), as last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When a new process (another server id) last answered under this name: a server that
    /// restarted. Not persisted: a restarted monitor cannot tell.
    #[serde(skip)]
    pub restarted_at: Option<SystemTime>,
    /// Polls in a row it has not answered since (not persisted: a restart starts counting anew).
    #[serde(skip)]
    pub missed: u32,
}

/// How long a restarted server's views do not count as evidence of a stale peer: a server that
/// starts while a peer is down lists that peer as "Server name unknown" until the peer is back,
/// the same mark a renamed server's old name leaves. A renamed server answers under a new name,
/// so its own views count at once.
pub const RESTART_SETTLE: Duration = Duration::from_secs(30);

/// A graceful stop announced by the server itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Departure {
    /// Id of the departing process: a reply from another id means it came back.
    pub server_id: String,
    /// Shutdown or lame duck.
    pub kind: DepartureKind,
    /// When the event arrived.
    pub at: SystemTime,
}

/// How long after its departure event a server's full answer contradicts the event.
pub const DEPARTURE_SILENCE: Duration = Duration::from_secs(1);
/// Departures of servers no poll has named are kept at most this many ...
pub const UNPOLLED_DEPARTURES_MAX: usize = 64;
/// ... and at most this long.
pub const UNPOLLED_DEPARTURE_KEPT: Duration = Duration::from_secs(600);

/// How a server announced its departure.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DepartureKind {
    /// `$SYS.SERVER.<id>.SHUTDOWN`.
    Shutdown,
    /// `$SYS.SERVER.<id>.LAMEDUCK`.
    LameDuck,
}

impl DepartureKind {
    /// Words for summaries.
    pub fn describe(self) -> &'static str {
        match self {
            DepartureKind::Shutdown => "shut down",
            DepartureKind::LameDuck => "entered lame-duck mode",
        }
    }
}

impl History {
    /// Servers to expect in the next poll, with the id to ask directly if they stay silent.
    pub fn known_servers(&self) -> Vec<KnownServer> {
        self.servers
            .iter()
            .map(|(name, rec)| KnownServer {
                name: name.clone(),
                id: rec.server_id.clone(),
            })
            .collect()
    }

    /// Whether a new process answered under `server`'s name within `settle` before `now`.
    pub fn restarted_within(&self, server: &str, settle: Duration, now: SystemTime) -> bool {
        self.servers
            .get(server)
            .and_then(|r| r.restarted_at)
            .is_some_and(|at| now.duration_since(at).map_or(true, |age| age < settle))
    }

    /// The last time any of the group's servers answered, as remembered.
    pub fn last_heard(&self) -> Option<SystemTime> {
        self.servers.values().map(|r| r.last_answered).max()
    }

    /// The last name a peer hash carried.
    pub fn name_of_peer(&self, peer: &str) -> Option<&str> {
        self.peer_names.get(peer).map(String::as_str)
    }

    /// The peer hash last seen for a server name.
    pub fn peer_of_name(&self, name: &str) -> Option<&str> {
        self.peer_names
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(p, _)| p.as_str())
    }

    /// Counts one more missed poll for each known server that answered nothing.
    pub(super) fn count_missed(&mut self, snapshot: &Snapshot) {
        for name in &snapshot.unanswered {
            if let Some(record) = self.servers.get_mut(name) {
                record.missed = record.missed.saturating_add(1);
            }
        }
    }

    /// Notes every server that answered (who it is, where, which version, whether it restarted)
    /// and drops the departures its answer contradicts.
    pub(super) fn record_answers(&mut self, snapshot: &Snapshot, answered_at: SystemTime) {
        // Servers with a meta view, and in large groups those only known to answer (identity).
        let answering = snapshot
            .views
            .values()
            .filter(|v| v.meta.is_some() || v.via == Via::Identity);
        for view in answering {
            self.record_answer(view, answered_at);
            if self.departure_contradicted(view, answered_at) {
                self.departures.remove(&view.server.name);
            }
        }
    }

    fn record_answer(&mut self, view: &ServerView, answered_at: SystemTime) {
        let server = &view.server;
        // Updated in place: every answering server is recorded every poll, and almost always
        // nothing but the time changed (no copies of its id, cluster and version).
        if let Some(record) = self.servers.get_mut(&server.name) {
            if record.server_id != server.id {
                record.restarted_at = Some(answered_at);
                record.server_id.clone_from(&server.id);
            }
            record.last_answered = answered_at;
            record.missed = 0;
            // An identity-only view carries no cluster or version: keep the ones known.
            if server.cluster.is_some() && record.cluster != server.cluster {
                record.cluster.clone_from(&server.cluster);
            }
            if server.ver.is_some() && record.version != server.ver {
                record.version.clone_from(&server.ver);
            }
            return;
        }
        self.servers.insert(
            server.name.clone(),
            ServerRecord {
                restarted_at: None,
                server_id: server.id.clone(),
                last_answered: answered_at,
                cluster: server.cluster.clone(),
                version: server.ver.clone(),
                missed: 0,
            },
        );
    }

    /// Whether `view` shows that the departure recorded for its server did not happen, or is
    /// over.
    fn departure_contradicted(&self, view: &ServerView, answered_at: SystemTime) -> bool {
        self.departures.get(&view.server.name).is_some_and(|d| {
            // A new process answers under this name: the departed one came back. Or the
            // same process answers in full a poll begun well after its departure: a server
            // that shuts down or enters lame duck stops answering within a moment, so the
            // event was not what it said (a stray or forged one) and keeps nothing offline.
            d.server_id != view.server.id
                || (view.meta.is_some()
                    && answered_at
                        .duration_since(d.at)
                        .is_ok_and(|after| after > DEPARTURE_SILENCE))
        })
    }

    /// Notes the names every meta view gives peer hashes: its leader's, and its replicas' it can
    /// name. A later view's name wins over an earlier one's, as the views come in name order.
    pub(super) fn record_peer_names(&mut self, snapshot: &Snapshot) {
        // Every view lists (almost) every member: gathered first, so that the remembered names
        // are looked up once per peer rather than once per view and peer (45,000 lookups of a
        // 5,000-entry map per poll of a 5,000-server group).
        let mut named: HashMap<&str, &str> = HashMap::new();
        for (_, meta) in snapshot.meta_views() {
            if let (Some(leader), Some(peer)) = (meta.leader_name(), meta.peer.as_deref()) {
                if !peer.is_empty() {
                    named.insert(peer, leader);
                }
            }
            for replica in &meta.replicas {
                if !replica.name_unknown() && !replica.peer.is_empty() {
                    named.insert(&replica.peer, &replica.name);
                }
            }
        }
        for (peer, name) in named {
            remember_peer(&mut self.peer_names, peer, name);
        }
    }

    /// The members the leader's view lists, by name (a member it cannot name by the name its
    /// peer hash last had), the leader included.
    pub(super) fn members_listed(&self, meta: &MetaCluster, leader: &str) -> BTreeSet<String> {
        meta.replicas
            .iter()
            .map(|p| {
                if p.name_unknown() {
                    self.peer_names
                        .get(&p.peer)
                        .map_or(p.name.as_str(), String::as_str)
                } else {
                    p.name.as_str()
                }
            })
            .chain(std::iter::once(leader))
            .map(str::to_string)
            .collect()
    }

    /// The leader's view is the membership: forgets servers it no longer lists (a peer removed
    /// while stopped sends no advisory), unless they answer now.
    pub(super) fn forget_unlisted(&mut self, members: &BTreeSet<String>, snapshot: &Snapshot) {
        let gone: Vec<String> = self
            .servers
            .keys()
            .filter(|n| !members.contains(*n) && !snapshot.views.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            self.forget_server(&name);
        }
    }

    /// Forgets a server that is no member any more: its record, any departure, its counts.
    pub(super) fn forget_server(&mut self, name: &str) {
        self.servers.remove(name);
        self.departures.remove(name);
        self.assets.remove(name);
    }

    /// Notes the stream and consumer counts of every server whose whole view arrived with them.
    pub(super) fn record_assets(&mut self, snapshot: &Snapshot, at: SystemTime) {
        for view in snapshot.views.values() {
            let Some(facts) = view.facts.as_ref().filter(|_| view.meta.is_some()) else {
                continue;
            };
            if let (Some(streams), Some(consumers)) = (facts.streams, facts.consumers) {
                let count = super::AssetCount {
                    streams,
                    consumers,
                    ha_assets: facts.ha_assets,
                    at,
                };
                self.assets.insert(view.server.name.clone(), count);
            }
        }
    }

    /// Members no live server can name, as any view lists them (the leader can still list one
    /// by name while a renamed server's own view already cannot name it).
    pub(super) fn stale_peers(&self, snapshot: &Snapshot) -> Vec<StalePeer> {
        snapshot
            .meta_views()
            .flat_map(|(_, m)| m.replicas.iter())
            .filter(|p| p.name_unknown())
            .map(|p| (p.peer.clone(), self.peer_names.get(&p.peer).cloned()))
            .collect::<BTreeMap<String, Option<String>>>()
            .into_iter()
            .map(|(peer, name)| StalePeer {
                name: name.unwrap_or_else(|| format!("peer-{peer}")),
                peer,
            })
            .collect()
    }

    /// Notes when each member was last in contact: heard by the leader, or the leader heard by
    /// a follower that names it.
    pub(super) fn record_contact(
        &mut self,
        snapshot: &Snapshot,
        leader: &str,
        meta: &MetaCluster,
        now: SystemTime,
    ) {
        for p in meta.replicas.iter().filter(|p| p.active > 0) {
            self.note_contact(&p.name, now, p.active);
        }
        for (follower, fmeta) in snapshot.meta_views() {
            if follower.server.name == leader || fmeta.leader_name() != Some(leader) {
                continue;
            }
            if let Some(p) = fmeta
                .replicas
                .iter()
                .find(|p| p.name == leader && p.active > 0)
            {
                self.note_contact(leader, now, p.active);
            }
        }
    }

    /// Notes contact `active_ns` before `now`, if later than the one known.
    fn note_contact(&mut self, name: &str, now: SystemTime, active_ns: u64) {
        let at = now
            .checked_sub(std::time::Duration::from_nanos(active_ns))
            .unwrap_or(now);
        // Looked up before inserting: a known name (almost always) allocates nothing.
        match self.last_contact.get_mut(name) {
            Some(known) if at > *known => *known = at,
            Some(_) => {}
            None => {
                self.last_contact.insert(name.to_string(), at);
            }
        }
    }

    /// How long a member has been out of contact, counting from its last known contact (or from
    /// `fallback` when there never was one).
    pub fn out_of_contact(&self, name: &str, fallback: SystemTime, now: SystemTime) -> Duration {
        let since = self
            .last_contact
            .get(name)
            .copied()
            .map_or(fallback, |c| c.min(fallback));
        now.duration_since(since).unwrap_or_default()
    }

    /// Notes the members the leader has never heard from, each since the first poll of this
    /// leader that showed it.
    pub(super) fn record_unheard(&mut self, meta: &MetaCluster, leader: &str, now: SystemTime) {
        let previous = std::mem::take(&mut self.unheard);
        for p in meta.replicas.iter().filter(|p| p.active == 0 && !p.current) {
            let since = previous
                .get(&p.name)
                .filter(|u| u.leader == leader)
                .map_or(now, |u| u.since);
            self.unheard.insert(
                p.name.clone(),
                Unheard {
                    leader: leader.to_string(),
                    since,
                },
            );
        }
    }

    /// Notes a graceful departure announced by an event.
    pub(super) fn depart(
        &mut self,
        server: &str,
        server_id: &str,
        kind: DepartureKind,
        at: SystemTime,
    ) {
        if !self.servers.contains_key(server) {
            // Only an event names it (no poll has): memory for such names is bounded, and
            // pruned once old, so a flood of events cannot grow it.
            self.prune_unpolled_departures(at);
        }
        // A shutdown that follows a lame-duck event keeps the earlier time: the server left then.
        let entry = self
            .departures
            .entry(server.to_string())
            .or_insert(Departure {
                server_id: server_id.to_string(),
                kind,
                at,
            });
        if entry.server_id != server_id {
            *entry = Departure {
                server_id: server_id.to_string(),
                kind,
                at,
            };
        }
    }

    /// Makes room for one more departure of a server no poll has named: drops those older than
    /// `UNPOLLED_DEPARTURE_KEPT`, then the oldest beyond `UNPOLLED_DEPARTURES_MAX`.
    fn prune_unpolled_departures(&mut self, at: SystemTime) {
        let unknown = |name: &String| !self.servers.contains_key(name);
        let stale: Vec<String> = self
            .departures
            .iter()
            .filter(|(name, d)| {
                unknown(name)
                    && at
                        .duration_since(d.at)
                        .is_ok_and(|age| age > UNPOLLED_DEPARTURE_KEPT)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            self.departures.remove(&name);
        }
        let mut unpolled: Vec<(SystemTime, String)> = self
            .departures
            .iter()
            .filter(|(name, _)| unknown(name))
            .map(|(name, d)| (d.at, name.clone()))
            .collect();
        unpolled.sort();
        let excess = (unpolled.len() + 1).saturating_sub(UNPOLLED_DEPARTURES_MAX);
        for (_, name) in unpolled.into_iter().take(excess) {
            self.departures.remove(&name);
        }
    }
}

/// Notes the name a peer hash carries, allocating only when it is new or changed (every view
/// lists every member: this runs members × views times per poll).
fn remember_peer(names: &mut BTreeMap<String, String>, peer: &str, name: &str) {
    if names.get(peer).map(String::as_str) != Some(name) {
        names.insert(peer.to_string(), name.to_string());
    }
}
