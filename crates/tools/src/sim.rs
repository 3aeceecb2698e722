//! A simulated deployment of one or several meta groups: JSZ replies built on a reply captured from
//! a real nats-server 2.15 (`tests/fixtures/healthy_5.json`), with the member lists real servers
//! send (a leader lists every other member of its group with its `active`; a follower lists every
//! other member too, only the leader as current), one leader per group and some crashed members.
//!
//! A group is one JetStream domain's meta group; its members may be spread over several clusters
//! (a supercluster). Every reply's envelope carries the server's own `cluster` and, outside the
//! default domain, its `domain`; `meta_cluster.name` is the reporting server's own cluster, as
//! nats-server fills it.

use std::collections::HashSet;
use std::ops::Range;

use nats_insights::observe::{ServerIdentity, ServerView, Snapshot, Via};
use serde_json::{json, Value};

const CAPTURED: &str = include_str!("../../../tests/fixtures/healthy_5.json");

/// One meta group of a [`Deployment`].
pub struct SimGroup {
    /// JetStream domain, `None` for the default domain.
    pub domain: Option<String>,
    /// Its members: indices into the deployment's servers.
    pub members: Range<usize>,
    /// Its leader (the first member).
    pub leader: usize,
}

impl SimGroup {
    /// The label finding keys use for it: the domain, or `default`.
    pub fn label(&self) -> &str {
        self.domain.as_deref().unwrap_or("default")
    }
}

/// A simulated deployment. Each group's first member leads; every 50th server of the deployment
/// (from the 25th) has crashed: it answers nothing and its leader has not heard from it for 30 s.
/// When that server would be a group's leader, the group's next member crashes instead, so every
/// group keeps a leader (and the count stays one in 50).
pub struct Deployment {
    /// Server names, unique across the deployment.
    pub names: Vec<String>,
    /// Server ids, 56 characters like real ones.
    pub ids: Vec<String>,
    /// 8-character peer hashes.
    pub peers: Vec<String>,
    /// Crashed servers.
    pub offline: Vec<bool>,
    /// Each server's own cluster.
    pub clusters: Vec<String>,
    /// Each server's group: an index into `groups`.
    pub group_of: Vec<usize>,
    /// The meta groups.
    pub groups: Vec<SimGroup>,
    template: Value,
}

/// The name of cluster `c` (from 0) of a group of `clusters` clusters in `domain`.
fn cluster_name(domain: Option<&str>, c: usize, clusters: usize) -> String {
    match (domain, clusters) {
        (Some(d), 1) => d.to_string(),
        (Some(d), _) => format!("{d}-c{}", c + 1),
        (None, 1) => "default".to_string(),
        (None, _) => format!("c{}", c + 1),
    }
}

impl Deployment {
    /// One meta group of `n` members in one cluster `sim` of the default domain, servers
    /// `s0001`...: the shape of the single-group figures.
    pub fn single(n: usize) -> Deployment {
        let mut d = Deployment::empty();
        d.push_group(
            None,
            (0..n).map(|i| (format!("s{:04}", i + 1), "sim".to_string())),
        );
        d.crash_every_50th();
        d
    }

    /// Several meta groups, each `(domain, members, clusters)`: the members of a group spread
    /// over its clusters in equal blocks, named after their cluster (`d001-n1`, `c2-n07`).
    /// Panics when two servers would carry the same name.
    pub fn new(groups: &[(Option<String>, usize, usize)]) -> Deployment {
        let mut d = Deployment::empty();
        for (domain, members, clusters) in groups {
            let (members, clusters) = (*members, (*clusters).max(1));
            let per_cluster = members.div_ceil(clusters);
            let width = per_cluster.to_string().len();
            let servers = (0..members).map(|k| {
                let c = k / per_cluster;
                let cluster = cluster_name(domain.as_deref(), c, clusters);
                let name = format!("{cluster}-n{:0width$}", k % per_cluster + 1);
                (name, cluster)
            });
            d.push_group(domain.clone(), servers);
        }
        let mut seen = HashSet::new();
        for name in &d.names {
            assert!(
                seen.insert(name.as_str()),
                "server name {name} is used twice"
            );
        }
        d.crash_every_50th();
        d
    }

    /// `domains` domains of `size` servers each (`d001`...), plus one default-domain group of
    /// `members` servers over `clusters` clusters (none when `members` is 0).
    pub fn domains_and_supercluster(
        domains: usize,
        size: usize,
        members: usize,
        clusters: usize,
    ) -> Deployment {
        let mut groups: Vec<(Option<String>, usize, usize)> = (0..domains)
            .map(|d| (Some(format!("d{:03}", d + 1)), size, 1))
            .collect();
        if members > 0 {
            groups.push((None, members, clusters));
        }
        Deployment::new(&groups)
    }

    /// Parses `<domains>x<size>+<members>/<clusters>` (e.g. `300x3+100/4`) into
    /// [`Deployment::domains_and_supercluster`].
    pub fn parse(shape: &str) -> Option<Deployment> {
        let (domains, rest) = shape.split_once('x')?;
        let (size, rest) = rest.split_once('+')?;
        let (members, clusters) = rest.split_once('/')?;
        Some(Deployment::domains_and_supercluster(
            domains.trim().parse().ok()?,
            size.trim().parse().ok()?,
            members.trim().parse().ok()?,
            clusters.trim().parse().ok()?,
        ))
    }

    fn empty() -> Deployment {
        let captured: Vec<Value> = serde_json::from_str(CAPTURED).expect("captured fixture");
        let template = captured
            .into_iter()
            .find(|r| r["data"]["meta_cluster"]["leader"] == r["server"]["name"])
            .expect("the capture holds the leader's reply");
        Deployment {
            names: Vec::new(),
            ids: Vec::new(),
            peers: Vec::new(),
            offline: Vec::new(),
            clusters: Vec::new(),
            group_of: Vec::new(),
            groups: Vec::new(),
            template,
        }
    }

    fn push_group(
        &mut self,
        domain: Option<String>,
        servers: impl Iterator<Item = (String, String)>,
    ) {
        let start = self.names.len();
        let g = self.groups.len();
        for (name, cluster) in servers {
            let i = self.names.len();
            self.names.push(name);
            self.ids.push(format!("NSIM{i:052}"));
            self.peers.push(format!("p{i:07}"));
            self.offline.push(false);
            self.clusters.push(cluster);
            self.group_of.push(g);
        }
        self.groups.push(SimGroup {
            domain,
            members: start..self.names.len(),
            leader: start,
        });
    }

    fn crash_every_50th(&mut self) {
        for i in (25..self.len()).step_by(50) {
            let group = &self.groups[self.group_of[i]];
            let victim = if i == group.leader { i + 1 } else { i };
            if group.members.contains(&victim) {
                self.offline[victim] = true;
            }
        }
    }

    /// Servers.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether it has no server.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Servers that answer.
    pub fn online(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).filter(|i| !self.offline[*i])
    }

    /// Group leaders that answer.
    pub fn leaders(&self) -> impl Iterator<Item = usize> + '_ {
        self.groups
            .iter()
            .map(|g| g.leader)
            .filter(|i| !self.offline[*i])
    }

    /// Servers that crashed.
    pub fn crashed(&self) -> usize {
        self.offline.iter().filter(|o| **o).count()
    }

    /// The keys of the findings the crashes should raise: META_001 of each crashed server.
    pub fn expected_findings(&self) -> Vec<String> {
        (0..self.len())
            .filter(|i| self.offline[*i])
            .map(|i| {
                let group = &self.groups[self.group_of[i]];
                format!("META_001/{}/{}", group.label(), self.names[i])
            })
            .collect()
    }

    /// Server `i`'s JSZ reply, as bytes on the wire. The envelope is the captured reply made this
    /// server's; the member list (N entries, the bulk of the reply) is written as bytes into it:
    /// building it as a JSON value took the simulator milliseconds per reply at 5,000 members,
    /// time the benchmark would count as the monitor's gather.
    pub fn reply(&self, i: usize) -> Vec<u8> {
        const PLACEHOLDER: &str = "\u{1}replicas";
        let group = &self.groups[self.group_of[i]];
        let leader = group.leader;
        let n = group.members.len();
        let mut reply = self.template.clone();
        reply["server"]["name"] = json!(self.names[i]);
        reply["server"]["id"] = json!(self.ids[i]);
        reply["server"]["cluster"] = json!(self.clusters[i]);
        // nats-server omits the domain of the default domain.
        if let Some(domain) = &group.domain {
            reply["server"]["domain"] = json!(domain);
        }
        reply["data"]["server_id"] = json!(self.ids[i]);
        let meta = &mut reply["data"]["meta_cluster"];
        meta["name"] = json!(self.clusters[i]);
        meta["leader"] = json!(self.names[leader]);
        meta["peer"] = json!(self.peers[leader]);
        meta["cluster_size"] = json!(n);
        meta["quorum_needed"] = json!(n / 2 + 1);
        meta["replicas"] = json!(PLACEHOLDER);
        let envelope = serde_json::to_vec(&reply).expect("encode a simulated reply");
        let marker = serde_json::to_vec(&json!(PLACEHOLDER)).expect("encode the placeholder");
        let at = envelope
            .windows(marker.len())
            .position(|w| w == marker.as_slice())
            .expect("the placeholder is in the envelope");
        let mut out = Vec::with_capacity(envelope.len() + n * 80);
        out.extend_from_slice(&envelope[..at]);
        out.push(b'[');
        let mut first = true;
        for j in group.members.clone().filter(|j| *j != i) {
            let (current, active) = if i == leader {
                if self.offline[j] {
                    (false, 30_000_000_000u64 + j as u64)
                } else {
                    (true, 150_000_000 + 997 * j as u64)
                }
            } else if j == leader {
                (true, 180_000_000 + 991 * i as u64)
            } else {
                (false, 0)
            };
            if !first {
                out.push(b',');
            }
            first = false;
            // Names and peers are generated ASCII: nothing to escape.
            out.extend_from_slice(
                format!(
                    r#"{{"name":"{}","current":{current},"active":{active},"peer":"{}"}}"#,
                    self.names[j], self.peers[j]
                )
                .as_bytes(),
            );
        }
        out.push(b']');
        out.extend_from_slice(&envelope[at + marker.len()..]);
        out
    }

    /// Server `i`'s IDZ reply (nats-server's carries neither cluster nor domain).
    pub fn identity(&self, i: usize) -> Vec<u8> {
        serde_json::to_vec(&json!({"name": self.names[i], "host": "127.0.0.1", "id": self.ids[i]}))
            .expect("encode a simulated identity")
    }

    /// The bytes of one full gather (every live server's whole view), estimated from each
    /// group's leader reply: every reply of a group lists its other members.
    pub fn full_gather_bytes(&self) -> u64 {
        self.groups
            .iter()
            .map(|g| {
                let alive = g.members.clone().filter(|i| !self.offline[*i]).count() as u64;
                self.reply(g.leader).len() as u64 * alive
            })
            .sum()
    }
}

impl Deployment {
    /// Puts server `i` into `snapshot` by its identity only (IDZ: no domain, no cluster, no
    /// view), as a large poll sees the servers it did not ask for their whole view.
    pub fn add_identity(&self, snapshot: &mut Snapshot, i: usize) {
        let server = ServerIdentity {
            name: self.names[i].clone(),
            id: self.ids[i].clone(),
            cluster: None,
            domain: None,
            ver: None,
        };
        snapshot.unanswered.remove(&server.name);
        snapshot.views.insert(
            server.name.clone(),
            ServerView {
                server,
                meta: None,
                via: Via::Identity,
                jetstream: false,
                facts: None,
            },
        );
    }
}

// (Also compiled into `benches/evaluate.rs`, whose harness runs no tests.)
#[cfg(test)]
#[allow(unused_imports)]
mod tests {
    use super::*;

    #[test]
    fn a_spliced_reply_is_valid_json_with_every_other_member_as_its_server_sees_it() {
        let d = Deployment::single(60);
        let crashed = (0..d.len()).find(|i| d.offline[*i]).expect("one crashed");
        for i in [0, 1, 59] {
            let reply: Value = serde_json::from_slice(&d.reply(i)).expect("valid JSON");
            assert_eq!(reply["server"]["name"], json!(d.names[i]));
            let meta = &reply["data"]["meta_cluster"];
            assert_eq!(meta["leader"], json!(d.names[0]));
            let replicas = meta["replicas"].as_array().expect("a member list");
            assert_eq!(replicas.len(), 59);
            assert!(replicas.iter().all(|r| r["name"] != json!(d.names[i])));
            let entry = |j: usize| {
                replicas
                    .iter()
                    .find(|r| r["name"] == json!(d.names[j]))
                    .expect("listed")
            };
            if i == 0 {
                assert_eq!(entry(crashed)["current"], json!(false));
                assert_eq!(entry(1)["current"], json!(true));
            } else {
                assert_eq!(
                    entry(0)["current"],
                    json!(true),
                    "a follower hears its leader"
                );
                assert_eq!(entry(crashed)["active"], json!(0));
            }
        }
        assert!(decode_reply_ok(&d.reply(1)));
    }

    fn decode_reply_ok(bytes: &[u8]) -> bool {
        nats_insights::observe::jsz::decode_reply(bytes).is_ok()
    }
}
