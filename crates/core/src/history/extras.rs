//! Part of history: what the sources beyond JSZ showed over time (since when a member's routes
//! have been short, its JetStream health failing, its raft layer catching up, its gateways down)
//! and each server's restarts, told by its server id changing under the same name (free: every
//! JSZ reply carries the id; see `docs/new-sources.md` for why neither VARZ nor STATSZ is asked).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::History;
use crate::observe::{Snapshot, Via};

/// Restarts remembered per server, and for how long.
pub const RESTARTS_KEPT: usize = 16;
/// How long a restart is remembered.
pub const RESTART_MEMORY: Duration = Duration::from_secs(3600);

/// A condition seen on a server since a time, with what was seen last.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Since<T> {
    /// Since when it has held (every ask since showed it).
    #[serde(with = "crate::time_format")]
    pub since: SystemTime,
    /// What the last ask showed.
    pub last: T,
}

/// One restart of a server: its id changed while its version did not.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Restart {
    /// When the poll saw the new process.
    #[serde(with = "crate::time_format")]
    pub at: SystemTime,
    /// The id before.
    pub from_id: String,
    /// The id after.
    pub to_id: String,
}

/// The history of the extra sources.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExtrasHistory {
    /// Members whose ROUTEZ lacked routes to other members answering, with the missing names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routes_short: BTreeMap<String, Since<BTreeSet<String>>>,
    /// Members whose HEALTHZ reported JetStream unhealthy, with the error.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unhealthy: BTreeMap<String, Since<String>>,
    /// Members whose raft layer reported the meta group catching up.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub catching_up: BTreeMap<String, Since<u64>>,
    /// Servers whose gateways to other clusters of the group were down, with those clusters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gateways_down: BTreeMap<String, Since<BTreeSet<String>>>,
    /// Restarts seen per server, oldest first (version upgrades not counted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub restarts: BTreeMap<String, Vec<Restart>>,
}

impl ExtrasHistory {
    /// Nothing remembered.
    pub fn is_empty(&self) -> bool {
        self == &ExtrasHistory::default()
    }

    /// Restarts of `server` at or after `from`.
    pub fn restarts_since(&self, server: &str, from: SystemTime) -> Vec<&Restart> {
        self.restarts
            .get(server)
            .map(|r| r.iter().filter(|r| r.at >= from).collect())
            .unwrap_or_default()
    }
}

/// Notes `last` for `key` as holding (since the first time) or, with `None`, as over.
fn hold<T>(map: &mut BTreeMap<String, Since<T>>, key: &str, last: Option<T>, now: SystemTime) {
    match last {
        Some(last) => match map.get_mut(key) {
            Some(entry) => entry.last = last,
            None => {
                map.insert(key.to_string(), Since { since: now, last });
            }
        },
        None => {
            map.remove(key);
        }
    }
}

/// The members (servers answering with a meta view) of `server`'s own cluster other than it,
/// that its ROUTEZ does not list; `None` when its ROUTEZ is not in this poll. A member that does
/// not answer is not expected (META_001 is about it).
pub fn routes_missing(snapshot: &Snapshot, server: &str) -> Option<BTreeSet<String>> {
    let routes = snapshot.extras.get(server)?.routes.as_ref()?;
    let cluster = snapshot.views.get(server)?.server.cluster.as_deref();
    Some(
        snapshot
            .views
            .values()
            .filter(|v| v.meta.is_some() && v.server.name != server)
            .filter(|v| v.server.cluster.as_deref() == cluster)
            .map(|v| v.server.name.clone())
            .filter(|name| !routes.remotes.contains(name))
            .collect(),
    )
}

/// The gateways (clusters) of the supercluster `server` has no outbound connection to: every
/// gateway name this poll's GATEWAYZ replies show (their own names, outbound and inbound
/// gateways) but its own and its connected outbound ones; `None` when its GATEWAYZ is not in
/// this poll, empty for a server without a gateway (a leaf node in the domain, a plain cluster).
/// GATEWAYZ lists only connected outbound gateways (2.15: a configured one that is down is
/// absent), so the others' replies are what names a lost one; the inbound side of a one-way cut
/// names it too.
pub fn gateways_missing(snapshot: &Snapshot, server: &str) -> Option<BTreeSet<String>> {
    let gateways = snapshot.extras.get(server)?.gateways.as_ref()?;
    if gateways.name.is_empty() {
        return Some(BTreeSet::new());
    }
    let known: BTreeSet<&String> = snapshot
        .extras
        .values()
        .filter_map(|e| e.gateways.as_ref())
        .filter(|g| !g.name.is_empty())
        .flat_map(|g| {
            std::iter::once(&g.name)
                .chain(&g.outbound)
                .chain(&g.outbound_down)
                .chain(&g.inbound)
        })
        .collect();
    Some(
        known
            .into_iter()
            .filter(|c| **c != gateways.name && !gateways.outbound.contains(*c))
            .cloned()
            .collect(),
    )
}

impl History {
    /// Folds this poll's extra sources in: for each server asked, whether its condition holds
    /// now (servers not asked keep what they had), and every restart the ids tell.
    pub(super) fn record_extras(&mut self, snapshot: &Snapshot, now: SystemTime) {
        for (name, extras) in &snapshot.extras {
            if extras.routes.is_some() {
                let missing = routes_missing(snapshot, name).filter(|m| !m.is_empty());
                hold(&mut self.extras.routes_short, name, missing, now);
            }
            if let Some(health) = &extras.health {
                let error = (!health.ok()).then(|| {
                    health
                        .error
                        .clone()
                        .unwrap_or_else(|| format!("status {}", health.status))
                });
                hold(&mut self.extras.unhealthy, name, error, now);
            }
            if let Some(raft) = &extras.raft_meta {
                let behind = raft
                    .catching_up
                    .then_some(raft.committed.saturating_sub(raft.applied));
                hold(&mut self.extras.catching_up, name, behind, now);
            }
            if extras.gateways.is_some() {
                let missing = gateways_missing(snapshot, name).filter(|m| !m.is_empty());
                hold(&mut self.extras.gateways_down, name, missing, now);
            }
        }
        // Forget servers no longer in the group.
        let servers = &self.servers;
        self.extras
            .routes_short
            .retain(|n, _| servers.contains_key(n));
        self.extras.unhealthy.retain(|n, _| servers.contains_key(n));
        self.extras
            .catching_up
            .retain(|n, _| servers.contains_key(n));
        self.extras
            .gateways_down
            .retain(|n, _| servers.contains_key(n));
    }

    /// Notes a restart for every server answering under a new id with the version it had (a new
    /// version is an upgrade, not counted). Runs before the answers are recorded.
    pub(super) fn record_restarts(&mut self, snapshot: &Snapshot, at: SystemTime) {
        for view in snapshot.views.values() {
            if view.meta.is_none() && view.via != Via::Identity {
                continue;
            }
            let Some(known) = self.servers.get(&view.server.name) else {
                continue;
            };
            if known.server_id == view.server.id || view.server.id.is_empty() {
                continue;
            }
            // A process that stops is silent for a poll or announces it (SHUTDOWN, LAMEDUCK);
            // a new id with neither is not counted (captured views of separate runs, or a
            // restart faster than one poll with no event: missed, see docs/new-sources.md).
            if known.missed == 0 && !self.departures.contains_key(&view.server.name) {
                continue;
            }
            let upgraded = match (&known.version, &view.server.ver) {
                (Some(before), Some(after)) => before != after,
                _ => false,
            };
            if upgraded {
                continue;
            }
            let restarts = self
                .extras
                .restarts
                .entry(view.server.name.clone())
                .or_default();
            restarts.push(Restart {
                at,
                from_id: known.server_id.clone(),
                to_id: view.server.id.clone(),
            });
            let keep_from = at.checked_sub(RESTART_MEMORY).unwrap_or(at);
            restarts.retain(|r| r.at >= keep_from);
            if restarts.len() > RESTARTS_KEPT {
                let excess = restarts.len() - RESTARTS_KEPT;
                restarts.drain(..excess);
            }
        }
    }
}
