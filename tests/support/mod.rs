//! Shared by the integration tests: run the monitor in-process against a testbed cluster, collect
//! the finding events an operator would see, and validate payloads against `schemas/`.
#![allow(dead_code)]

pub mod certs;
pub mod jwt;
pub mod readiness;
pub mod served;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use futures::stream::BoxStream;
use futures::StreamExt;
use nats_insights::connect::ConnectArgs;
use nats_insights::engine::{self, EngineConfig};
use nats_insights::findings::TransitionKind;
use nats_insights::publish::FindingEvent;
use nats_insights::service::Instance;
use nats_insights::watch::{self, Received};
use testbed::{Cluster, SYS_PASSWORD, SYS_USER};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The thresholds of tests about other checks: nats-server's default 2-minute `sync_interval`,
/// which every testbed cluster and captured fixture runs with, is accepted, so that META_107
/// (which reports it, severity info) does not raise in them. `tests/live/hazards.rs` and the
/// check's unit tests judge it with the default limit.
pub fn thresholds() -> nats_insights::checks::Thresholds {
    nats_insights::checks::Thresholds {
        sync_interval_max: Duration::from_secs(120),
        ..nats_insights::checks::Thresholds::default()
    }
}

/// `config` as the monitors of tests about other checks run it: with the thresholds'
/// `sync_interval_max` left at its default, nats-server's default sync interval is accepted
/// ([`thresholds`]); a test that sets it (`hazards.rs`) keeps its value.
pub fn accepting_default_sync(mut config: EngineConfig) -> EngineConfig {
    let default = nats_insights::checks::Thresholds::default().sync_interval_max;
    if config.thresholds.sync_interval_max == default {
        config.thresholds.sync_interval_max = thresholds().sync_interval_max;
    }
    config
}

/// Generous: these assert behaviour, the benchmarks measure speed.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// System-account connection flags for every node of a cluster.
pub fn sys_connect(cluster: &Cluster) -> ConnectArgs {
    ConnectArgs {
        servers: cluster.client_urls(),
        user: Some(SYS_USER.to_string()),
        password: Some(SYS_PASSWORD.to_string()),
        ..ConnectArgs::default()
    }
}

/// A monitor running in this process; stopped on drop.
pub struct Monitor {
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), engine::EngineError>>>,
    /// The monitor's own connection (to see which server it is attached to).
    pub client: async_nats::Client,
    /// Instance id.
    pub instance: String,
}

impl Monitor {
    /// Starts a monitor with the default configuration.
    pub async fn start(cluster: &Cluster) -> Monitor {
        Monitor::start_with(cluster, EngineConfig::default()).await
    }

    /// Starts a monitor keeping state in `bucket` of the cluster's JetStream account (APP).
    pub async fn start_with_state(
        cluster: &Cluster,
        mut config: EngineConfig,
        bucket: &str,
    ) -> Monitor {
        config.store = Some(nats_insights::store::StoreSettings {
            bucket: bucket.to_string(),
            replicas: 3,
            timeout: Duration::from_secs(1),
            instance: String::new(),
        });
        Monitor::start_with(cluster, config).await
    }

    /// Starts a monitor connected to `nodes` only (an operator who lists those servers), so
    /// that a fault on another node never moves its connection.
    pub async fn start_via(cluster: &Cluster, nodes: &[usize], config: EngineConfig) -> Monitor {
        let args = ConnectArgs {
            servers: nodes.iter().map(|i| cluster.client_url(*i)).collect(),
            ..sys_connect(cluster)
        };
        let connections = args
            .open("nats-insights-test")
            .await
            .expect("monitor connects");
        Monitor::start_connected(connections, config)
    }

    /// Starts a monitor with a given configuration (and a state connection when it has a store).
    pub async fn start_with(cluster: &Cluster, config: EngineConfig) -> Monitor {
        let mut connections = sys_connect(cluster)
            .open("nats-insights-test")
            .await
            .expect("monitor connects");
        if config.store.is_some() {
            let state = ConnectArgs {
                servers: cluster.client_urls(),
                user: Some(testbed::APP_USER.to_string()),
                password: Some(testbed::APP_PASSWORD.to_string()),
                ..ConnectArgs::default()
            };
            connections.state = Some(
                state
                    .connect("nats-insights-test-state")
                    .await
                    .expect("state connects"),
            );
        }
        Monitor::start_connected(connections, config)
    }

    /// Starts a monitor on connections opened by the caller (e.g. as a least-privilege user),
    /// accepting nats-server's default sync interval unless `config` sets its own limit
    /// ([`accepting_default_sync`]).
    pub fn start_connected(connections: engine::Connections, config: EngineConfig) -> Monitor {
        Monitor::start_exact(connections, accepting_default_sync(config))
    }

    /// Starts a monitor through the given nodes with `config` exactly as given: the default
    /// sync-interval limit judges too (`hazards.rs`).
    pub async fn start_via_exact(
        cluster: &Cluster,
        nodes: &[usize],
        config: EngineConfig,
    ) -> Monitor {
        let mut args = sys_connect(cluster);
        args.servers = nodes.iter().map(|i| cluster.client_url(*i)).collect();
        let connections = args
            .open("nats-insights-test")
            .await
            .expect("monitor connects");
        Monitor::start_exact(connections, config)
    }

    fn start_exact(connections: engine::Connections, config: EngineConfig) -> Monitor {
        // NATS_INSIGHTS_TEST_LOG=nats_insights=debug shows what the monitors log.
        if let Ok(filter) = std::env::var("NATS_INSIGHTS_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let client = connections.main.clone();
        let instance = Instance {
            id: nuid::next().to_string(),
            started: SystemTime::now(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(engine::run(
            connections,
            config,
            instance.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Monitor {
            stop: Some(stop),
            handle: Some(handle),
            client,
            instance: instance.id,
        }
    }

    /// Its STATUS (panics if it does not answer).
    pub async fn status(&self) -> serde_json::Value {
        request_json(&self.client, "$INSIGHTS.API.STATUS", "")
            .await
            .1
    }

    /// Stops it and waits for the engine to end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            // A stop may wait out a bucket leader election (`Timing::shutdown_flush`).
            let _ = tokio::time::timeout(Duration::from_secs(20), handle).await;
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Every finding event an operator subscribed to `$INSIGHTS.FINDING.>` receives.
pub struct Events {
    stream: BoxStream<'static, Received>,
    /// Everything received so far, in order.
    pub seen: Vec<FindingEvent>,
    /// Which of `seen` an `expect` already returned.
    claimed: Vec<bool>,
    /// Copies of events already in `seen` (the same id), dropped as the contract tells
    /// consumers to.
    pub repeats: Vec<FindingEvent>,
    ids: watch::SeenIds,
    _client: async_nats::Client,
    /// More connections whose events are merged in ([`Events::subscribe_each`]).
    _more: Vec<async_nats::Client>,
    /// Several connections receive each event: a copy is expected, not counted as a repeat.
    fanned_in: bool,
}

impl Events {
    /// Subscribes through a connection the caller opened (e.g. as another user).
    pub async fn subscribe_client(client: async_nats::Client) -> Events {
        let stream = watch::subscribe(&client).await.expect("subscribe");
        client.flush().await.expect("flush");
        Events {
            stream,
            seen: Vec::new(),
            claimed: Vec::new(),
            repeats: Vec::new(),
            ids: watch::SeenIds::default(),
            _client: client,
            _more: Vec::new(),
            fanned_in: false,
        }
    }

    /// Subscribes through a connection that knows every node (so it survives faults).
    pub async fn subscribe(cluster: &Cluster) -> Events {
        let all: Vec<usize> = (0..cluster.size()).collect();
        Events::subscribe_via(cluster, &all).await
    }

    /// Subscribes through a connection to each node, merged: with every route cut, an event
    /// reaches only the clients of the server it was published to, wherever the monitor's main
    /// connection is at the time. Copies of one event are dropped (not counted as repeats).
    pub async fn subscribe_each(cluster: &Cluster) -> Events {
        let mut clients = Vec::new();
        let mut streams = Vec::new();
        for i in 0..cluster.size() {
            let mut args = sys_connect(cluster);
            args.servers = vec![cluster.client_url(i)];
            let client = args
                .connect("nats-insights-test-watch")
                .await
                .expect("watcher connects");
            streams.push(watch::subscribe(&client).await.expect("subscribe"));
            client.flush().await.expect("flush");
            clients.push(client);
        }
        let first = clients.remove(0);
        Events {
            stream: futures::stream::select_all(streams).boxed(),
            seen: Vec::new(),
            claimed: Vec::new(),
            repeats: Vec::new(),
            ids: watch::SeenIds::default(),
            _client: first,
            _more: clients,
            fanned_in: true,
        }
    }

    /// Subscribes through the given nodes only (e.g. the majority side of a partition).
    pub async fn subscribe_via(cluster: &Cluster, nodes: &[usize]) -> Events {
        let mut args = sys_connect(cluster);
        args.servers = nodes.iter().map(|i| cluster.client_url(*i)).collect();
        let client = args
            .connect("nats-insights-test-watch")
            .await
            .expect("watcher connects");
        let stream = watch::subscribe(&client).await.expect("subscribe");
        client.flush().await.expect("flush");
        Events {
            stream,
            seen: Vec::new(),
            claimed: Vec::new(),
            repeats: Vec::new(),
            ids: watch::SeenIds::default(),
            _client: client,
            _more: Vec::new(),
            fanned_in: false,
        }
    }

    /// Waits for an event matching kind, check and (optionally) server; panics with what arrived
    /// instead when it does not come in time.
    pub async fn expect(
        &mut self,
        kind: TransitionKind,
        check: &str,
        server: Option<&str>,
        timeout: Duration,
    ) -> FindingEvent {
        let matches = |event: &FindingEvent| {
            event.event == kind
                && event.check.as_str() == check
                && (server.is_none() || event.server.as_deref() == server)
        };
        // Events received earlier (while waiting for another) count, once each.
        if let Some(i) = (0..self.seen.len()).find(|i| !self.claimed[*i] && matches(&self.seen[*i]))
        {
            self.claimed[i] = true;
            return self.seen[i].clone();
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(event))) => {
                    assert_valid("finding.json", &serde_json::to_value(&event).expect("json"));
                    if !self.ids.first(&event.id) {
                        if !self.fanned_in {
                            self.repeats.push(event);
                        }
                        continue;
                    }
                    self.seen.push(event.clone());
                    let hit = matches(&event);
                    self.claimed.push(hit);
                    if hit {
                        return event;
                    }
                }
                Ok(Some(Err(e))) => panic!("{e}"),
                Ok(None) => panic!("finding subscription ended"),
                Err(_) => panic!(
                    "no {} {check} {server:?} within {timeout:?}; received: {:#?}",
                    kind.as_str(),
                    self.lines()
                ),
            }
        }
    }

    /// Collects whatever arrives for `duration`.
    pub async fn drain(&mut self, duration: Duration) {
        let deadline = tokio::time::Instant::now() + duration;
        while let Ok(Some(received)) = tokio::time::timeout_at(deadline, self.stream.next()).await {
            let event = received.expect("decodable finding event");
            assert_valid("finding.json", &serde_json::to_value(&event).expect("json"));
            if !self.ids.first(&event.id) {
                if !self.fanned_in {
                    self.repeats.push(event);
                }
                continue;
            }
            self.seen.push(event);
            self.claimed.push(false);
        }
    }

    /// Events received for one finding key, as `kind` names.
    pub fn history_of(&self, finding: &str) -> Vec<&'static str> {
        self.seen
            .iter()
            .filter(|e| e.finding == finding)
            .map(|e| e.event.as_str())
            .collect()
    }

    /// One line per event received, for failure messages.
    pub fn lines(&self) -> Vec<String> {
        self.seen.iter().map(watch::format_line).collect()
    }

    /// Stops node `i` of `cluster` as `how` says, waits for its META_001 to be raised, restarts
    /// it and waits for the resolution; returns the raise.
    pub async fn stop_raised_restart_resolved(
        &mut self,
        cluster: &mut Cluster,
        i: usize,
        how: testbed::Stop,
    ) -> FindingEvent {
        let name = cluster.server_name(i);
        cluster.stop(i, how).await.expect("stop");
        let raised = self
            .expect(
                TransitionKind::Raised,
                "META_001",
                Some(&name),
                EVENT_TIMEOUT,
            )
            .await;
        cluster.restart(i).await.expect("restart");
        self.expect(
            TransitionKind::Resolved,
            "META_001",
            Some(&name),
            EVENT_TIMEOUT,
        )
        .await;
        raised
    }

    /// Asserts that `finding` was raised and resolved, each exactly once, and nothing else.
    #[track_caller]
    pub fn assert_raised_then_resolved(&self, finding: &str) {
        assert_eq!(
            self.history_of(finding),
            ["raised", "resolved"],
            "{:#?}",
            self.lines()
        );
    }
}

/// Loads a schema from `schemas/`.
pub fn schema(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("schema is JSON")
}

/// Panics with every violation when `value` does not validate against `schemas/<name>`.
pub fn assert_valid(name: &str, value: &serde_json::Value) {
    assert_valid_against(name, &schema(name), value);
}

/// Panics with every violation when `value` does not validate against the official micro schema
/// `tests/fixtures/micro/<name>` (e.g. `ping_response.json`).
pub fn assert_valid_micro(name: &str, value: &serde_json::Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/micro")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    assert_valid_against(name, &schema, value);
}

fn assert_valid_against(name: &str, schema: &serde_json::Value, value: &serde_json::Value) {
    let validator = jsonschema::validator_for(schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{name} violations: {errors:#?}\nin {}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Runs the real binary with the given arguments, without the caller's NATS environment:
/// (exit code, stdout, stderr).
pub async fn run_cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_nats-insights"))
        .args(args)
        .env_remove("NATS_URL")
        .env_remove("NATS_USER")
        .env_remove("NATS_PASSWORD")
        .env_remove("NATS_INSIGHTS_LOG")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("the command finishes")
        .expect("the binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Waits until STATUS lists `members` members in `service.links`, each with a direct link that is
/// up (every server's own view then reaches the monitor without the routes); returns them.
pub async fn linked(monitor: &Monitor, members: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let status = try_request_json(&monitor.client, "$INSIGHTS.API.STATUS", "")
            .await
            .unwrap_or_default();
        let links = status["service"]["links"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if links.len() == members
            && links
                .iter()
                .all(|l| l["direct"] == true && l["connected"] == true)
        {
            assert_valid("status_response.json", &status);
            return links;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every member linked: {:#}",
            status["service"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Raise events of `check` the monitor holds in HISTORY (what it published, whether or not a
/// subscriber was connected at the time). Its connection may be failing over after a restart:
/// asked until it answers, for up to 30 s.
pub async fn raised_in_history(monitor: &Monitor, check: &str) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let history = loop {
        if let Some(h) = try_request_json(
            &monitor.client,
            "$INSIGHTS.API.HISTORY",
            r#"{"limit": 1000}"#,
        )
        .await
        {
            break h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the monitor does not answer HISTORY"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    history["entries"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|x| x["check"] == check && x["event"] == "raised")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Sends a request and decodes the JSON reply; `None` when nobody answers (yet).
pub async fn try_request_json(
    client: &async_nats::Client,
    subject: &str,
    body: &str,
) -> Option<serde_json::Value> {
    let msg = tokio::time::timeout(
        Duration::from_secs(2),
        client.request(subject.to_string(), body.to_string().into()),
    )
    .await
    .ok()?
    .ok()?;
    serde_json::from_slice(&msg.payload).ok()
}

/// Sends a request and decodes the JSON reply.
pub async fn request_json(
    client: &async_nats::Client,
    subject: &str,
    body: &str,
) -> (async_nats::Message, serde_json::Value) {
    let msg = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(subject.to_string(), body.to_string().into()),
    )
    .await
    .expect("reply in time")
    .expect("request");
    let value = serde_json::from_slice(&msg.payload).unwrap_or(serde_json::Value::Null);
    (msg, value)
}

/// A cluster of `size` nodes with an elected meta leader.
pub async fn cluster(size: usize) -> Cluster {
    cluster_with(testbed::ClusterOptions {
        size,
        ..testbed::ClusterOptions::default()
    })
    .await
}

/// A 3-node cluster whose routes pass through proxies the test can cut, with a meta leader.
pub async fn proxied_cluster() -> Cluster {
    cluster_with(testbed::ClusterOptions {
        proxied_routes: true,
        ..testbed::ClusterOptions::default()
    })
    .await
}

async fn cluster_with(options: testbed::ClusterOptions) -> Cluster {
    let cluster = Cluster::start(options).await.expect("cluster starts");
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("meta leader elected");
    cluster
}

/// The meta leader, moved off `attached` (the monitor's server) if needed, its index, and the
/// other nodes' indexes.
pub async fn leader_other_than(
    cluster: &mut Cluster,
    attached: &str,
) -> (String, usize, Vec<usize>) {
    let mut leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    while leader == attached {
        leader = move_leader(cluster).await;
    }
    let index = cluster.index_of(&leader).expect("leader index");
    let others = (0..cluster.size()).filter(|i| *i != index).collect();
    (leader, index, others)
}

/// Waits until the monitor has polled a few times and sees the whole group.
pub async fn ready(monitor: &Monitor, members: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = try_request_json(&monitor.client, "$INSIGHTS.API.STATUS", "")
            .await
            .unwrap_or_default();
        let polls = status["service"]["polls"].as_u64().unwrap_or(0);
        let seen = status["meta"]["members"].as_array().map_or(0, Vec::len);
        if polls >= 2 && seen == members {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "monitor not ready: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Cuts the leader `leader` (node `index`) off its routes and waits for META_002, which must come
/// while the isolated server still claims leadership (it gives up 10-20 s after the cut) or
/// names it a stale leader; returns the raise.
pub async fn partition_leader_expect_disagreement(
    cluster: &Cluster,
    events: &mut Events,
    index: usize,
    leader: &str,
) -> FindingEvent {
    cluster.partition(index).expect("partition");
    let raised = events
        .expect(
            TransitionKind::Raised,
            "META_002",
            None,
            Duration::from_secs(40),
        )
        .await;
    let own = cluster.jsz_direct(index).await.expect("isolated view");
    let claims = own["data"]["meta_cluster"]["leader"] == leader;
    let stale = raised.evidence["stale_leaders"].clone();
    assert!(
        claims || stale == serde_json::json!([leader]),
        "raised only after the old leader gave up: {:#}",
        raised.evidence
    );
    raised
}

/// Node indices of a cluster of `size` except `excluded`: where an operator's subscriber survives.
pub fn others(size: usize, excluded: &[usize]) -> Vec<usize> {
    (0..size).filter(|i| !excluded.contains(i)).collect()
}

/// A node that is not the meta leader.
pub async fn follower(cluster: &Cluster) -> usize {
    let leader = cluster.meta_leader().await.expect("leader");
    (0..cluster.size())
        .find(|i| cluster.server_name(*i) != leader)
        .expect("a follower")
}

/// Moves leadership to another running node and returns its name (a plain step-down may land on
/// a dead peer and come back to the same leader).
pub async fn move_leader(cluster: &mut Cluster) -> String {
    let before = cluster.meta_leader().await.expect("leader");
    let target = (0..cluster.size())
        .find(|i| cluster.server_name(*i) != before && cluster.is_running(*i))
        .expect("another running node");
    cluster.make_leader(target).await.expect("leader moved");
    cluster.server_name(target)
}
