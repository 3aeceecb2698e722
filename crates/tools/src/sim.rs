//! A simulated deployment of one or several meta groups: JSZ replies built on a reply captured from
//! a real nats-server 2.15 (`tests/fixtures/healthy_5.json`), with the member lists real servers
//! send (a leader lists every other member of its group with its `active`; a follower lists every
//! other member too, only the leader as current), one leader per group and some crashed members.
//!
//! A group is one JetStream domain's meta group; its members may be spread over several clusters
//! (a supercluster). Every reply's envelope carries the server's own `cluster` and, outside the
//! default domain, its `domain`; `meta_cluster.name` is the reporting server's own cluster, as
//! nats-server fills it.
//!
//! Each server also answers the sources beyond JSZ the product asks of a few servers per poll
//! (ROUTEZ, HEALTHZ, RAFTZ `_meta_`, GATEWAYZ: [`Deployment::extra_reply`]), shaped and sized
//! like replies captured from nats-server 2.15.1 (`docs/new-sources.md`).

use std::collections::HashSet;
use std::io::Write as _;
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

/// Route connections a real 2.15 server opens to each other server of its cluster (the default
/// pool of three and the system account's route: 8 for 2 remotes, measured).
pub const ROUTES_PER_REMOTE: usize = 4;

/// Times in the simulated replies (fixed: only their size matters).
const AT: &str = "2026-12-07T06:00:29.323265996Z";

impl Deployment {
    /// Server `i`'s reply envelope up to its `data` (`{"server":{...},"data":`), made from the
    /// captured reply's: the server's name, id, cluster and domain.
    fn envelope_head(&self, i: usize) -> Vec<u8> {
        let mut server = self.template["server"].clone();
        server["name"] = json!(self.names[i]);
        server["id"] = json!(self.ids[i]);
        server["cluster"] = json!(self.clusters[i]);
        if let Some(domain) = &self.groups[self.group_of[i]].domain {
            server["domain"] = json!(domain);
        }
        let mut out = b"{\"server\":".to_vec();
        out.extend(serde_json::to_vec(&server).expect("encode a simulated envelope"));
        out.extend_from_slice(b",\"data\":");
        out
    }

    /// The live members of server `i`'s group in its own cluster, other than it.
    fn cluster_peers(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.groups[self.group_of[i]]
            .members
            .clone()
            .filter(move |j| *j != i && !self.offline[*j] && self.clusters[*j] == self.clusters[i])
    }

    /// The clusters of server `i`'s group other than its own, each with one live server (the
    /// one its gateway connects to): a group over several clusters is a supercluster joined by
    /// gateways; a group in one cluster (a domain reached by leaf nodes) has no gateway.
    fn gateway_peers(&self, i: usize) -> Vec<(&str, usize)> {
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for j in self.groups[self.group_of[i]].members.clone() {
            let cluster = self.clusters[j].as_str();
            if !self.offline[j]
                && cluster != self.clusters[i]
                && seen.iter().all(|(c, _)| *c != cluster)
            {
                seen.push((cluster, j));
            }
        }
        seen
    }

    /// Server `i`'s reply to `$SYS.REQ.SERVER.<id>.<token>` for the sources beyond JSZ
    /// (`ROUTEZ`, `HEALTHZ`, `RAFTZ`, `GATEWAYZ`), shaped and sized like nats-server 2.15.1's
    /// (captured on a 3-node cluster with a gateway to a fourth server): ROUTEZ lists
    /// [`ROUTES_PER_REMOTE`] route connections to every live server of its cluster in its group
    /// (about 440 bytes each); HEALTHZ is ok; RAFTZ holds the meta group with every other member
    /// as a peer (the leader's entries carry `last_replicated_index` and `last_seen`, a
    /// follower's only for the leader); GATEWAYZ names the server's cluster with one outbound
    /// and one inbound connection per other cluster of its group, or no gateway at all when its
    /// group has one cluster. Written as bytes, as [`Deployment::reply`]. `None` for another
    /// token.
    pub fn extra_reply(&self, i: usize, token: &str) -> Option<Vec<u8>> {
        let mut out = self.envelope_head(i);
        let (id, name) = (&self.ids[i], &self.names[i]);
        match token {
            "ROUTEZ" => {
                let peers: Vec<usize> = self.cluster_peers(i).collect();
                let _ = write!(
                    out,
                    r#"{{"server_id":"{id}","server_name":"{name}","now":"{AT}","num_routes":{},"routes":["#,
                    peers.len() * ROUTES_PER_REMOTE
                );
                let mut rid = 8;
                for (k, j) in peers.iter().enumerate() {
                    for r in 0..ROUTES_PER_REMOTE {
                        if k + r > 0 {
                            out.push(b',');
                        }
                        rid += 1;
                        let _ = write!(
                            out,
                            r#"{{"rid":{rid},"remote_id":"{}","remote_name":"{}","did_solicit":true,"is_configured":true,"ip":"127.0.0.1","port":{},"start":"{AT}","last_activity":"{AT}","rtt":"141µs","uptime":"15s","idle":"15s","pending_size":0,"in_msgs":0,"out_msgs":0,"in_bytes":0,"out_bytes":0,"subscriptions":0,"compression":"off"}}"#,
                            self.ids[*j],
                            self.names[*j],
                            40_000 + (j % 20_000)
                        );
                    }
                }
                out.extend_from_slice(b"]}");
            }
            "HEALTHZ" => out.extend_from_slice(br#"{"status":"ok","status_code":200}"#),
            "RAFTZ" => {
                let group = &self.groups[self.group_of[i]];
                let n = group.members.len();
                let leader = &self.peers[group.leader];
                let leads = i == group.leader;
                let (state, since) = match leads {
                    true => ("LEADER", format!(r#","leader_since":"{AT}""#)),
                    false => ("FOLLOWER", String::new()),
                };
                let _ = write!(
                    out,
                    r#"{{"$SYS":{{"_meta_":{{"id":"{}","state":"{state}","size":{n},"quorum_needed":{},"committed":4,"applied":4,"leader":"{leader}"{since},"ever_had_leader":true,"term":5,"voted_for":"{leader}","pterm":5,"pindex":4,"system_account":true,"traffic_account":"$SYS","ipq_proposal_len":0,"ipq_entry_len":0,"ipq_resp_len":0,"ipq_apply_len":0,"wal":{{"messages":0,"bytes":0,"first_seq":5,"first_ts":"0001-01-01T00:00:00Z","last_seq":4,"last_ts":"{AT}","consumer_count":0}},"peers":{{"#,
                    self.peers[i],
                    n / 2 + 1
                );
                let mut first = true;
                for j in group.members.clone().filter(|j| *j != i) {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    let _ = write!(
                        out,
                        r#""{}":{{"name":"{}","known":true"#,
                        self.peers[j], self.names[j]
                    );
                    if leads {
                        let (index, seen) = match self.offline[j] {
                            true => (1, "30.000000000s"),
                            false => (4, "459.009694ms"),
                        };
                        let _ = write!(
                            out,
                            r#","last_replicated_index":{index},"last_seen":"{seen}""#
                        );
                    } else if j == group.leader {
                        out.extend_from_slice(br#","last_seen":"799.146428ms""#);
                    }
                    out.push(b'}');
                }
                out.extend_from_slice(b"}}}}");
            }
            "GATEWAYZ" => {
                let remotes = self.gateway_peers(i);
                if remotes.is_empty() {
                    let _ = write!(
                        out,
                        r#"{{"server_id":"{id}","now":"{AT}","name":"","host":"","port":0,"outbound_gateways":{{}},"inbound_gateways":{{}}}}"#
                    );
                } else {
                    let connection = |j: usize, port: usize| {
                        format!(
                            r#"{{"cid":{},"kind":"Gateway","ip":"127.0.0.1","port":{port},"start":"{AT}","last_activity":"{AT}","rtt":"209µs","uptime":"15s","idle":"0s","pending_bytes":0,"in_msgs":0,"out_msgs":17,"in_bytes":0,"out_bytes":2799,"subscriptions":60,"name":"{}"}}"#,
                            12 + j % 1000,
                            self.ids[j]
                        )
                    };
                    let _ = write!(
                        out,
                        r#"{{"server_id":"{id}","now":"{AT}","name":"{}","host":"127.0.0.1","port":17221,"outbound_gateways":{{"#,
                        self.clusters[i]
                    );
                    for (k, (cluster, j)) in remotes.iter().enumerate() {
                        let comma = if k > 0 { "," } else { "" };
                        let _ = write!(
                            out,
                            r#"{comma}"{cluster}":{{"configured":true,"connection":{}}}"#,
                            connection(*j, 17231)
                        );
                    }
                    out.extend_from_slice(br#"},"inbound_gateways":{"#);
                    for (k, (cluster, j)) in remotes.iter().enumerate() {
                        let comma = if k > 0 { "," } else { "" };
                        let _ = write!(
                            out,
                            r#"{comma}"{cluster}":[{{"configured":false,"connection":{}}}]"#,
                            connection(*j, 47450)
                        );
                    }
                    out.extend_from_slice(b"}}");
                }
            }
            _ => return None,
        }
        out.push(b'}');
        Some(out)
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

    #[test]
    fn the_extra_replies_decode_as_the_product_reads_them_and_match_the_deployment() {
        use nats_insights::observe::extras::{
            decode_gatewayz, decode_healthz, decode_raftz, decode_routez,
        };
        let d = Deployment::single(60);
        let crashed = (0..d.len()).find(|i| d.offline[*i]).expect("one crashed");
        let reply = |i: usize, token: &str| d.extra_reply(i, token).expect(token);
        let (server, routes) = decode_routez(&reply(1, "ROUTEZ")).expect("ROUTEZ decodes");
        assert_eq!(server.name, d.names[1]);
        assert_eq!(routes.remotes.len(), 58, "every other live member");
        assert!(!routes.remotes.contains(&d.names[crashed]));
        assert_eq!(routes.connections, 58 * ROUTES_PER_REMOTE);
        let per_route = (reply(1, "ROUTEZ").len() - reply(1, "HEALTHZ").len()) / (58 * 4);
        assert!((380..520).contains(&per_route), "{per_route} B per route");
        assert!(decode_healthz(&reply(1, "HEALTHZ"))
            .expect("HEALTHZ")
            .1
            .ok());
        for i in [0, 1] {
            let raft = decode_raftz(&reply(i, "RAFTZ"))
                .expect("RAFTZ")
                .1
                .expect("meta");
            assert_eq!((raft.size, raft.quorum_needed, raft.peers), (60, 31, 59));
            assert_eq!(raft.named.len(), 59);
            assert_eq!(raft.leader.as_deref(), Some(d.peers[0].as_str()));
        }
        let (_, gw) = decode_gatewayz(&reply(1, "GATEWAYZ")).expect("GATEWAYZ");
        assert!(
            gw.name.is_empty() && gw.outbound.is_empty(),
            "one cluster: no gateway"
        );
        assert!(d.extra_reply(1, "VARZ").is_none());

        let many = Deployment::parse("2x3+8/4").expect("shape");
        let member = many.groups[2].members.start;
        let (_, gw) = decode_gatewayz(&many.extra_reply(member, "GATEWAYZ").expect("gw"))
            .expect("GATEWAYZ decodes");
        assert_eq!(gw.name, many.clusters[member]);
        assert_eq!(gw.outbound.len(), 3);
        assert_eq!(gw.inbound, gw.outbound);
        let (_, routes) =
            decode_routez(&many.extra_reply(member, "ROUTEZ").expect("routez")).expect("ROUTEZ");
        assert_eq!(routes.remotes.len(), 1, "its cluster's other server only");
        let (_, gw) = decode_gatewayz(&many.extra_reply(0, "GATEWAYZ").expect("gw")).expect("gw");
        assert!(gw.name.is_empty(), "a domain of one cluster has no gateway");
    }

    #[test]
    fn the_extra_replies_of_three_members_are_sized_as_measured_on_2_15() {
        // docs/new-sources.md: ROUTEZ 3,801-3,823 B, HEALTHZ 384, RAFTZ 942-1,067, GATEWAYZ 507
        // (no gateways), on a 3-node 2.15.1 cluster.
        let d = Deployment::single(3);
        let size = |i: usize, token: &str| d.extra_reply(i, token).expect(token).len();
        assert!((3_400..4_200).contains(&size(1, "ROUTEZ")));
        assert!((330..450).contains(&size(1, "HEALTHZ")));
        assert!((850..1_150).contains(&size(0, "RAFTZ")));
        assert!((850..1_150).contains(&size(1, "RAFTZ")));
        assert!((430..580).contains(&size(1, "GATEWAYZ")));
    }

    fn decode_reply_ok(bytes: &[u8]) -> bool {
        nats_insights::observe::jsz::decode_reply(bytes).is_ok()
    }
}
