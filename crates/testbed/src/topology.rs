//! Multi-cluster layouts for the testbed: a supercluster of clusters joined by gateways, a hub
//! cluster with a leaf-node cluster in a JetStream domain of its own, and a hub whose domain
//! standalone leaf servers extend.
//!
//! A [`Topology`] decides every node's server name, cluster, JetStream domain and the links it
//! opens besides routes; [`Cluster`] turns that into config files and offers per-cluster and
//! per-domain operations. Global 0-based node indices run cluster by cluster (a 3x3
//! supercluster: `c1` holds nodes 0-2 named `n1`-`n3`, `c2` nodes 3-5 named `n4`-`n6`, ...), so
//! every per-node method works unchanged.
//!
//! There is one meta group per JetStream domain (measured on nats-server 2.15.1): the clusters
//! of a supercluster form one group; the hub and the leaf cluster form one each; leaf servers
//! in the hub's domain join the hub's group. Their servers share the system account (over
//! gateways, or over a leaf remote bound to `SYS`), so one `$SYS.REQ.SERVER.PING.JSZ` reaches
//! every server of every group.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::{
    Cluster, ClusterOptions, Stop, TestbedError, APP_PASSWORD, APP_USER, SYS_PASSWORD, SYS_USER,
};

/// Cluster name and JetStream domain of the hub in [`Topology::HubAndLeaf`] and
/// [`Topology::HubWithLeaves`].
pub const HUB: &str = "hub";
/// Cluster name and JetStream domain of the leaf cluster in [`Topology::HubAndLeaf`].
pub const LEAF: &str = "edge";

/// The shape of a testbed: which clusters, joined how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Topology {
    /// One cluster of [`ClusterOptions::size`] nodes named [`ClusterOptions::cluster_name`],
    /// no JetStream domain (the default).
    #[default]
    Single,
    /// `clusters` clusters `c1`, `c2`, ... of `servers` nodes each, joined by gateways (every
    /// server lists every cluster), no JetStream domain: one meta group of
    /// `clusters * servers` members. Servers are named `n1`, `n2`, ... across clusters.
    Supercluster {
        /// Number of clusters.
        clusters: usize,
        /// Servers per cluster.
        servers: usize,
    },
    /// A hub cluster [`HUB`] (servers `h1`, `h2`, ..., domain `hub`, a leaf-node listener
    /// each) and a cluster [`LEAF`] (servers `e1`, `e2`, ..., domain `edge`, routes of its own)
    /// whose every server connects to the hub with two leaf remotes: one bound to the system
    /// account, one to `APP`. Two meta groups of `servers` members, one per domain.
    HubAndLeaf {
        /// Servers per cluster.
        servers: usize,
    },
    /// A hub cluster [`HUB`] of `hub_servers` (as in [`Topology::HubAndLeaf`]) and
    /// `leaf_servers` standalone leaf servers `l1`, `l2`, ... in the hub's domain `hub`: no
    /// routes, `extension_hint: will_extend`, the same two leaf remotes to every hub server.
    /// One meta group of `hub_servers + leaf_servers` members.
    ///
    /// Measured on nats-server 2.15.1: each leaf reports its server name as its cluster (a
    /// server with leaf remotes and no cluster block takes it as its cluster name); without
    /// the hint it stays standalone, outside the group (its JSZ reply has no `meta_cluster`).
    /// The leaves run their meta node in observer mode: they vote and count for quorum but
    /// never lead, so a step-down towards a leaf (`preferred` or `placement.cluster`) is
    /// answered with success and a hub server leads again.
    HubWithLeaves {
        /// Servers in the hub cluster.
        hub_servers: usize,
        /// Standalone leaf servers.
        leaf_servers: usize,
    },
}

/// What a node connects to besides its cluster routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Routes only.
    Plain,
    /// A gateway listener and a gateway to every cluster.
    Gateway,
    /// A leaf-node listener.
    Hub,
    /// Leaf remotes to every hub server.
    Leaf,
    /// Leaf remotes to every hub server, no routes: a standalone server extending the hub's
    /// domain.
    StandaloneLeaf,
}

/// Where one node sits in the topology.
#[derive(Debug, Clone)]
pub(super) struct Placement {
    pub(super) name: String,
    pub(super) cluster: String,
    pub(super) domain: Option<String>,
    pub(super) role: Role,
}

impl Topology {
    /// Every node's placement, by global index; `Invalid` for an empty topology.
    pub(super) fn layout(&self, opts: &ClusterOptions) -> Result<Vec<Placement>, TestbedError> {
        let empty = |what: &str| TestbedError::Invalid(format!("{what} must be at least 1"));
        match *self {
            Topology::Single => {
                if opts.size == 0 {
                    return Err(empty("cluster size"));
                }
                Ok((0..opts.size)
                    .map(|i| Placement {
                        name: format!("{}{}", opts.name_prefix, i + 1),
                        cluster: opts.cluster_name.clone(),
                        domain: None,
                        role: Role::Plain,
                    })
                    .collect())
            }
            Topology::Supercluster { clusters, servers } => {
                if clusters == 0 || servers == 0 {
                    return Err(empty("supercluster clusters and servers"));
                }
                Ok((0..clusters * servers)
                    .map(|i| Placement {
                        name: format!("n{}", i + 1),
                        cluster: format!("c{}", i / servers + 1),
                        domain: None,
                        role: Role::Gateway,
                    })
                    .collect())
            }
            Topology::HubAndLeaf { servers } => {
                if servers == 0 {
                    return Err(empty("hub and leaf servers"));
                }
                let side = |prefix: char, cluster: &'static str, role: Role| {
                    (0..servers).map(move |i| Placement {
                        name: format!("{prefix}{}", i + 1),
                        cluster: cluster.to_owned(),
                        domain: Some(cluster.to_owned()),
                        role,
                    })
                };
                Ok(side('h', HUB, Role::Hub)
                    .chain(side('e', LEAF, Role::Leaf))
                    .collect())
            }
            Topology::HubWithLeaves {
                hub_servers,
                leaf_servers,
            } => {
                if hub_servers == 0 || leaf_servers == 0 {
                    return Err(empty("hub and leaf servers"));
                }
                let hub = (0..hub_servers).map(|i| Placement {
                    name: format!("h{}", i + 1),
                    cluster: HUB.to_owned(),
                    domain: Some(HUB.to_owned()),
                    role: Role::Hub,
                });
                let leaves = (0..leaf_servers).map(|i| {
                    let name = format!("l{}", i + 1);
                    Placement {
                        cluster: name.clone(),
                        name,
                        domain: Some(HUB.to_owned()),
                        role: Role::StandaloneLeaf,
                    }
                });
                Ok(hub.chain(leaves).collect())
            }
        }
    }
}

impl ClusterOptions {
    /// Options for a [`Topology::Supercluster`] of `clusters` x `servers` nodes.
    pub fn supercluster(clusters: usize, servers: usize) -> ClusterOptions {
        ClusterOptions {
            size: clusters * servers,
            topology: Topology::Supercluster { clusters, servers },
            ..ClusterOptions::default()
        }
    }

    /// Options for a [`Topology::HubAndLeaf`] with `servers` nodes in each cluster.
    pub fn hub_and_leaf(servers: usize) -> ClusterOptions {
        ClusterOptions {
            size: 2 * servers,
            topology: Topology::HubAndLeaf { servers },
            ..ClusterOptions::default()
        }
    }

    /// Options for a [`Topology::HubWithLeaves`]: `hub_servers` in the hub cluster and
    /// `leaf_servers` standalone leaf servers in its domain.
    pub fn hub_with_leaves(hub_servers: usize, leaf_servers: usize) -> ClusterOptions {
        ClusterOptions {
            size: hub_servers + leaf_servers,
            topology: Topology::HubWithLeaves {
                hub_servers,
                leaf_servers,
            },
            ..ClusterOptions::default()
        }
    }
}

/// Subject of the JetStream API call `api` (e.g. `META.LEADER.STEPDOWN`) for the meta group of
/// `domain`: `$JS.API.<api>` without a domain, `$JS.<domain>.API.<api>` with one.
///
/// Measured on nats-server 2.15.1 with hub and leaf: the plain subject only reaches the group
/// of the domain the requester's server is in; the domain form reaches the named domain's group
/// from a server of either domain (system account shared over the leaf connection).
pub fn js_api_subject(domain: Option<&str>, api: &str) -> String {
    match domain {
        Some(domain) => format!("$JS.{domain}.API.{api}"),
        None => format!("$JS.API.{api}"),
    }
}

/// Per meta group (keyed by domain): the leader every running member names, if they all agree.
pub(super) type Agreement = BTreeMap<Option<String>, Option<String>>;

impl Cluster {
    /// Cluster name of node `i` (its `cluster.name`).
    pub fn cluster_of(&self, i: usize) -> String {
        self.nodes[i].cluster.clone()
    }

    /// JetStream domain of node `i` (`None`: no domain set).
    pub fn domain_of(&self, i: usize) -> Option<String> {
        self.nodes[i].domain.clone()
    }

    /// Indices of the nodes of cluster `cluster`, running or not (empty for an unknown name).
    pub fn nodes_of(&self, cluster: &str) -> Vec<usize> {
        (0..self.size())
            .filter(|&i| self.nodes[i].cluster == cluster)
            .collect()
    }

    /// The cluster names, in node order.
    pub fn clusters(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for node in &self.nodes {
            if !names.contains(&node.cluster) {
                names.push(node.cluster.clone());
            }
        }
        names
    }

    /// Stops every running node of cluster `cluster` (one after the other, see [`Stop`]) and
    /// returns the indices it stopped.
    pub async fn stop_cluster(
        &mut self,
        cluster: &str,
        how: Stop,
    ) -> Result<Vec<usize>, TestbedError> {
        let members = self.nodes_of(cluster);
        if members.is_empty() {
            return Err(TestbedError::Invalid(format!(
                "no cluster named {cluster:?}"
            )));
        }
        let mut stopped = Vec::new();
        for i in members {
            if self.running(i) {
                self.stop(i, how).await?;
                stopped.push(i);
            }
        }
        Ok(stopped)
    }

    /// Waits until the running members of every meta group (one per JetStream domain with a
    /// running node) name one leader, itself a running member of that domain, and returns
    /// the leaders by domain.
    pub async fn wait_for_leaders(
        &self,
        timeout: Duration,
    ) -> Result<BTreeMap<Option<String>, String>, TestbedError> {
        self.wait_for_agreement(None, timeout).await
    }

    /// The leader of the meta group of `domain` named by a majority of its running members,
    /// if that leader is itself running (see [`Cluster::meta_leader`]).
    pub async fn meta_leader_of_domain(&self, domain: Option<&str>) -> Option<String> {
        let views = self.leader_views_of(self.members_of_domain(domain)).await;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for leader in views.iter().filter_map(|(_, l)| l.clone()) {
            *counts.entry(leader).or_default() += 1;
        }
        counts
            .into_iter()
            .find(|(leader, n)| 2 * n > views.len() && self.is_running_member(leader, domain))
            .map(|(leader, _)| leader)
    }

    /// Asks the meta leader of `domain`'s group to step down (`$JS.<domain>.API.META.LEADER.STEPDOWN`,
    /// see [`js_api_subject`]), through the first running node, whatever its domain.
    pub async fn step_down_in(&self, domain: Option<&str>) -> Result<(), TestbedError> {
        self.step_down_request(domain, "{}").await
    }

    /// Moves the meta leadership into cluster `cluster` with a placement step-down
    /// (`{"placement":{"cluster":...}}`), asking again until a running server of that cluster
    /// leads and every running member of the group agrees; returns the new leader. No-op if
    /// the leader is already in that cluster.
    pub async fn step_down_to_cluster(&self, cluster: &str) -> Result<String, TestbedError> {
        let Some(&first) = self.nodes_of(cluster).first() else {
            return Err(TestbedError::Invalid(format!(
                "no cluster named {cluster:?}"
            )));
        };
        let body = serde_json::json!({ "placement": { "cluster": cluster } }).to_string();
        self.move_leader(
            self.domain_of(first),
            |leader| {
                self.index_of(leader)
                    .is_some_and(|i| self.nodes[i].cluster == cluster)
            },
            &body,
            &format!("the meta leader to move to cluster {cluster}"),
            Duration::from_secs(30),
        )
        .await
    }

    // ---- internals ----

    /// The nodes of `domain`, running or not.
    fn members_of_domain(&self, domain: Option<&str>) -> Vec<usize> {
        (0..self.size())
            .filter(|&i| self.nodes[i].domain.as_deref() == domain)
            .collect()
    }

    /// Whether `name` is a running node of `domain`.
    fn is_running_member(&self, name: &str, domain: Option<&str>) -> bool {
        self.index_of(name)
            .is_some_and(|i| self.nodes[i].domain.as_deref() == domain && self.running(i))
    }

    /// Groups leader views by the reporting node's domain; a group agrees when every view
    /// names the same leader, a running member of that domain.
    fn agreement(&self, views: &[(usize, Option<String>)]) -> Agreement {
        let mut groups: BTreeMap<Option<String>, Vec<Option<&String>>> = BTreeMap::new();
        for (i, leader) in views {
            groups
                .entry(self.nodes[*i].domain.clone())
                .or_default()
                .push(leader.as_ref());
        }
        groups
            .into_iter()
            .map(|(domain, leaders)| {
                let agreed = leaders
                    .first()
                    .copied()
                    .flatten()
                    .filter(|first| leaders.iter().all(|l| *l == Some(*first)))
                    .filter(|first| self.is_running_member(first, domain.as_deref()))
                    .cloned();
                (domain, agreed)
            })
            .collect()
    }

    /// Waits until the groups agree (only `domain`'s when given; every group with a running
    /// member otherwise) and returns their leaders.
    pub(super) async fn wait_for_agreement(
        &self,
        domain: Option<Option<&str>>,
        timeout: Duration,
    ) -> Result<BTreeMap<Option<String>, String>, TestbedError> {
        let deadline = Instant::now() + timeout;
        let nodes: Vec<usize> = match domain {
            Some(domain) => self.members_of_domain(domain),
            None => (0..self.size()).collect(),
        };
        loop {
            let views = self.leader_views_of(nodes.clone()).await;
            let groups = self.agreement(&views);
            if !groups.is_empty() && groups.values().all(Option::is_some) {
                return Ok(groups
                    .into_iter()
                    .filter_map(|(d, l)| l.map(|l| (d, l)))
                    .collect());
            }
            if Instant::now() >= deadline {
                let mut seen = String::new();
                for (i, leader) in &views {
                    let _ = write!(seen, "{}: {:?}; ", self.nodes[*i].name, leader);
                }
                let whom = match domain {
                    Some(Some(d)) => format!("all running nodes of domain {d}"),
                    Some(None) | None if self.clusters().len() == 1 => "all running nodes".into(),
                    _ => "the running nodes of every meta group".into(),
                };
                return Err(TestbedError::Timeout {
                    what: format!("{whom} to agree on a meta leader (last seen: {seen})"),
                    after: timeout,
                    logs: self.all_logs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every running node's own JSZ view counts every node of its domain in
    /// `cluster_size`.
    ///
    /// Why: a fresh group's first leader announces only the peers it has heard from, and
    /// the others adopt that. Seen on a 3x3 supercluster (nats-server 2.15.1): right after the
    /// first election the servers reported `cluster_size` 2 to 9, all 9 about 0.2 s later.
    pub(super) async fn wait_for_full_groups(&self, timeout: Duration) -> Result<(), TestbedError> {
        let deadline = Instant::now() + timeout;
        loop {
            let running: Vec<usize> = (0..self.size()).filter(|&i| self.running(i)).collect();
            let sizes = futures::future::join_all(running.iter().map(|&i| async move {
                let view = self.jsz_direct(i).await.ok();
                let size = view
                    .as_ref()
                    .and_then(|v| v.pointer("/data/meta_cluster/cluster_size"))
                    .and_then(serde_json::Value::as_u64);
                (i, size)
            }))
            .await;
            let short: Vec<String> = sizes
                .iter()
                .filter(|(i, size)| {
                    let members = self.members_of_domain(self.nodes[*i].domain.as_deref());
                    *size != u64::try_from(members.len()).ok()
                })
                .map(|(i, size)| format!("{}: {size:?}", self.nodes[*i].name))
                .collect();
            if short.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TestbedError::Timeout {
                    what: format!(
                        "every meta group to count all its members (cluster_size short: {})",
                        short.join(", ")
                    ),
                    after: timeout,
                    logs: self.all_logs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The agreed leader of `domain`'s group.
    pub(super) async fn wait_for_domain_leader(
        &self,
        domain: Option<&str>,
        timeout: Duration,
    ) -> Result<String, TestbedError> {
        let mut leaders = self.wait_for_agreement(Some(domain), timeout).await?;
        leaders
            .remove(&domain.map(str::to_owned))
            .ok_or(TestbedError::NoneRunning)
    }

    /// Asks `domain`'s meta leader to step down with `body` until `done(leader)` holds for the
    /// agreed leader (checked first: no request if it already does), within `limit`.
    pub(super) async fn move_leader(
        &self,
        domain: Option<String>,
        done: impl Fn(&str) -> bool,
        body: &str,
        what: &str,
        limit: Duration,
    ) -> Result<String, TestbedError> {
        let domain = domain.as_deref();
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let current = self.wait_for_domain_leader(domain, left).await?;
            if done(&current) {
                return Ok(current);
            }
            let asked = self.step_down_request(domain, body).await;
            // Wait for the hand-over before judging (or asking again).
            while Instant::now() < deadline {
                match self
                    .wait_for_domain_leader(domain, Duration::from_secs(1))
                    .await
                {
                    Ok(leader) if leader != current => break,
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            if Instant::now() >= deadline {
                asked?;
                return Err(TestbedError::Timeout {
                    what: what.to_owned(),
                    after: limit,
                    logs: self.all_logs(),
                });
            }
        }
    }

    /// The gateway port others dial for node `j`: its proxy's when gateways are proxied.
    fn gateway_port_seen(&self, j: usize) -> Option<u16> {
        match self.gateway_proxies.get(&j) {
            Some(proxy) => Some(proxy.addr().port()),
            None => self.nodes[j].gateway_port,
        }
    }

    /// The `gateway` or `leafnodes` block of node `i`'s config (empty for [`Role::Plain`]).
    pub(super) fn links_config(&self, i: usize) -> String {
        let node = &self.nodes[i];
        let url = |scheme: &str, port: Option<u16>, auth: &str| {
            port.map(|p| format!("\"{scheme}://{auth}127.0.0.1:{p}\""))
        };
        match node.role {
            Role::Plain => String::new(),
            Role::Gateway => {
                let mut gateways = String::new();
                for cluster in self.clusters() {
                    let urls: Vec<String> = self
                        .nodes_of(&cluster)
                        .into_iter()
                        .filter_map(|j| url("nats", self.gateway_port_seen(j), ""))
                        .collect();
                    let _ = writeln!(
                        gateways,
                        "    {{ name: \"{cluster}\", urls: [{}] }}",
                        urls.join(", ")
                    );
                }
                // Behind a proxy, the address gossiped to the other gateways is the proxy's.
                let advertise = match self.gateway_proxies.get(&i) {
                    Some(proxy) => format!("  advertise: \"{}\"\n", proxy.addr()),
                    None => String::new(),
                };
                format!(
                    "gateway {{\n  name: \"{}\"\n  listen: \"127.0.0.1:{}\"\n{advertise}  gateways: [\n{gateways}  ]\n}}\n",
                    node.cluster,
                    node.gateway_port.unwrap_or_default(),
                )
            }
            // Why no_advertise with proxied leaves: a hub gossips its leaf-node listeners to
            // the leaves, which would reconnect to them directly, around the cut proxies.
            Role::Hub => format!(
                "leafnodes {{\n  listen: \"127.0.0.1:{}\"\n{}}}\n",
                node.leaf_port.unwrap_or_default(),
                if self.leaf_proxies.is_empty() {
                    ""
                } else {
                    "  no_advertise: true\n"
                }
            ),
            Role::Leaf | Role::StandaloneLeaf => {
                let (sys_user, sys_password) = match &self.opts.admin {
                    Some((user, password)) => (user.as_str(), password.as_str()),
                    None => (SYS_USER, SYS_PASSWORD),
                };
                let hubs: Vec<usize> = (0..self.size())
                    .filter(|&j| self.nodes[j].role == Role::Hub)
                    .collect();
                let remote = |account: &str, user: &str, password: &str| {
                    let auth = format!("{user}:{password}@");
                    let urls: Vec<String> = hubs
                        .iter()
                        .filter_map(|&j| {
                            let port = match self.leaf_proxies.get(&j) {
                                Some(proxy) => Some(proxy.addr().port()),
                                None => self.nodes[j].leaf_port,
                            };
                            url("nats-leaf", port, &auth)
                        })
                        .collect();
                    format!(
                        "    {{ urls: [{}], account: {account} }}\n",
                        urls.join(", ")
                    )
                };
                // Why two remotes: the one bound to the system account carries the $SYS
                // requests and events between the domains; the one bound to APP lets
                // JetStream clients reach the other domain through `$JS.<domain>.API`.
                format!(
                    "leafnodes {{\n  remotes: [\n{}{}  ]\n}}\n",
                    remote("SYS", sys_user, sys_password),
                    remote("APP", APP_USER, APP_PASSWORD),
                )
            }
        }
    }
}
