//! Reliability: a chaos soak with ground truth. Runs a 5-node cluster watched by two monitor
//! instances in HA mode, injects faults from a seeded schedule (SIGTERM, SIGKILL, SIGSTOP and
//! SIGCONT, partitions through the route proxies, forced step-downs, restarts of a monitor
//! instance), records when each fault began and ended, and compares with every finding event an
//! operator received: each fault's META_001 raised exactly once and resolved exactly once, no
//! finding outside a fault, nothing left active on the healed cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use nats_insights::connect::ConnectArgs;
use nats_insights::engine::{self, EngineConfig};
use nats_insights::findings::TransitionKind;
use nats_insights::publish::FindingEvent;
use nats_insights::service::Instance;
use nats_insights::store::StoreSettings;
use testbed::{Cluster, ClusterOptions, Stop, APP_PASSWORD, APP_USER, SYS_PASSWORD, SYS_USER};

/// How long and how wild.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Faults are injected until this much time has passed.
    pub duration: Duration,
    /// Seed of the fault schedule (the same seed gives the same schedule).
    pub seed: u64,
    /// Monitor instances on the same bucket (2 exercises HA mode).
    pub instances: usize,
}

/// What the soak found.
#[derive(Debug, Default)]
pub struct SoakReport {
    /// The monitor instances at the start (last four characters of their ids).
    pub monitors: Vec<String>,
    /// Faults injected, one line each.
    pub faults: Vec<String>,
    /// Findings the faults should have produced.
    pub expected: usize,
    /// RAISED events received.
    pub raised: usize,
    /// Expected findings never raised.
    pub missed: Vec<String>,
    /// Findings raised or resolved more than once in one episode.
    pub duplicated: Vec<String>,
    /// Findings raised with no fault to explain them.
    pub false_findings: Vec<String>,
    /// Findings still active at the end.
    pub unresolved: Vec<String>,
}

impl SoakReport {
    /// No miss, no duplicate, no false or unresolved finding.
    pub fn ok(&self) -> bool {
        self.missed.is_empty()
            && self.duplicated.is_empty()
            && self.false_findings.is_empty()
            && self.unresolved.is_empty()
    }

    /// The figures, one per line.
    pub fn summary(&self) -> String {
        format!(
            "faults {}, expected {}, raised {}, missed {}, duplicated {}, false {}, unresolved {}",
            self.faults.len(),
            self.expected,
            self.raised,
            self.missed.len(),
            self.duplicated.len(),
            self.false_findings.len(),
            self.unresolved.len()
        )
    }
}

/// One fault as it happened.
#[derive(Debug, Clone)]
struct Window {
    label: String,
    /// The server whose META_001 must be raised.
    victim: Option<String>,
    /// The fault touched the meta leader (leader changes and disagreements are expected).
    leader: bool,
    start: SystemTime,
    end: SystemTime,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Term,
    Kill,
    Pause,
    Partition,
    StepDown,
    RestartMonitor,
}

struct RunningMonitor {
    /// Instance id.
    id: String,
    stop: oneshot::Sender<()>,
    handle: JoinHandle<Result<(), engine::EngineError>>,
}

fn connect_args(cluster: &Cluster) -> ConnectArgs {
    ConnectArgs {
        servers: cluster.client_urls(),
        user: Some(SYS_USER.to_string()),
        password: Some(SYS_PASSWORD.to_string()),
        ..ConnectArgs::default()
    }
}

fn soak_config() -> EngineConfig {
    let mut config = EngineConfig::default();
    // Leader changes come with many faults; a short window lets META_003 resolve in the run.
    config.thresholds.flap_window = Duration::from_secs(20);
    config.thresholds.flap_max = 1;
    config.store = Some(StoreSettings {
        bucket: "soak".to_string(),
        replicas: 3,
        timeout: Duration::from_secs(1),
        instance: String::new(),
    });
    config
}

async fn start_monitor(cluster: &Cluster) -> Result<RunningMonitor, String> {
    let mut connections = connect_args(cluster)
        .open("nats-insights-soak")
        .await
        .map_err(|e| e.to_string())?;
    let state = ConnectArgs {
        servers: cluster.client_urls(),
        user: Some(APP_USER.to_string()),
        password: Some(APP_PASSWORD.to_string()),
        ..ConnectArgs::default()
    };
    connections.state = Some(
        state
            .connect("nats-insights-soak-state")
            .await
            .map_err(|e| e.to_string())?,
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let id = nuid::next().to_string();
    let handle = tokio::spawn(engine::run(
        connections,
        soak_config(),
        Instance {
            id: id.clone(),
            started: SystemTime::now(),
        },
        async move {
            let _ = stopped.await;
        },
    ));
    Ok(RunningMonitor { id, stop, handle })
}

async fn stop_monitor(monitor: RunningMonitor) {
    let _ = monitor.stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), monitor.handle).await;
}

/// Subscribes through one pinned connection per node and merges them, dropping duplicate event
/// ids: with one node faulted at a time, every event reaches at least one subscriber.
async fn watch_all(
    cluster: &Cluster,
) -> Result<mpsc::UnboundedReceiver<(SystemTime, FindingEvent)>, String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let clients = connect_args(cluster)
        .connect_each("nats-insights-soak-watch")
        .await
        .map_err(|e| e.to_string())?;
    for client in clients {
        let mut events = nats_insights::watch::subscribe(&client)
            .await
            .map_err(|e| e.to_string())?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let _keep = client;
            while let Some(received) = events.next().await {
                if let Ok(event) = received {
                    if tx.send((SystemTime::now(), event)).is_err() {
                        break;
                    }
                }
            }
        });
    }
    Ok(rx)
}

/// Records every meta leader election the servers announce (ground truth for META_003): one
/// pinned subscriber per node, deduplicated by advisory id.
async fn record_elections(
    cluster: &Cluster,
) -> Result<std::sync::Arc<std::sync::Mutex<Vec<SystemTime>>>, String> {
    let elections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::<String>::new()));
    let clients = connect_args(cluster)
        .connect_each("nats-insights-soak-elections")
        .await
        .map_err(|e| e.to_string())?;
    for client in clients {
        let mut advisories = client
            .subscribe("$JS.EVENT.ADVISORY.DOMAIN.LEADER_ELECTED.>")
            .await
            .map_err(|e| e.to_string())?;
        let mut plain = client
            .subscribe("$JS.EVENT.ADVISORY.DOMAIN.LEADER_ELECTED")
            .await
            .map_err(|e| e.to_string())?;
        let elections = std::sync::Arc::clone(&elections);
        let seen = std::sync::Arc::clone(&seen);
        tokio::spawn(async move {
            let _keep = client;
            loop {
                let msg = tokio::select! {
                    m = advisories.next() => m,
                    m = plain.next() => m,
                };
                let Some(msg) = msg else { break };
                let at = SystemTime::now();
                let id = serde_json::from_slice::<serde_json::Value>(&msg.payload)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_string))
                    .unwrap_or_default();
                let new = seen.lock().map(|mut s| s.insert(id)).unwrap_or(false);
                if new {
                    if let Ok(mut list) = elections.lock() {
                        list.push(at);
                    }
                }
            }
        });
    }
    Ok(elections)
}

/// Waits until every monitor answering STATUS reports no active finding (other than
/// flapping, whose window is still open), up to `limit`.
async fn settle(client: &async_nats::Client, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            client.request("$INSIGHTS.API.STATUS", "".into()),
        )
        .await;
        if let Ok(Ok(msg)) = reply {
            if let Ok(status) = serde_json::from_slice::<serde_json::Value>(&msg.payload) {
                let quiet = status["findings"]
                    .as_array()
                    .is_some_and(|f| f.iter().all(|x| x["check"] == "META_003"));
                if quiet
                    && status["meta"]["members"]
                        .as_array()
                        .is_some_and(|m| m.iter().all(|x| x["state"] == "online"))
                {
                    return true;
                }
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The last four characters of an id (nuids of one process share a long prefix).
fn tail(id: &str) -> String {
    id.get(id.len().saturating_sub(4)..)
        .unwrap_or_default()
        .to_string()
}

/// Wall-clock time of day with milliseconds, as in the events' timestamps.
fn clock(at: SystemTime) -> String {
    nats_insights::time_format::rfc3339(at)
        .get(11..23)
        .unwrap_or_default()
        .to_string()
}

/// Runs the soak and judges it.
pub async fn run(options: SoakOptions) -> Result<SoakReport, String> {
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let mut cluster = Cluster::start(ClusterOptions {
        size: 5,
        cluster_name: "soak".to_string(),
        proxied_routes: true,
        ..ClusterOptions::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    let mut events = watch_all(&cluster).await?;
    let elections = record_elections(&cluster).await?;
    let mut monitors = Vec::new();
    for _ in 0..options.instances.max(1) {
        monitors.push(start_monitor(&cluster).await?);
    }

    let observer = connect_args(&cluster)
        .connect("nats-insights-soak-observer")
        .await
        .map_err(|e| e.to_string())?;
    if !settle(&observer, Duration::from_secs(30)).await {
        return Err(
            "the monitors never reported a healthy cluster before the first fault".to_string(),
        );
    }

    let mut windows = Vec::new();
    let mut report = SoakReport {
        monitors: monitors.iter().map(|m| tail(&m.id)).collect(),
        ..SoakReport::default()
    };
    let deadline = Instant::now() + options.duration;
    while Instant::now() < deadline {
        let fault = match rng.u8(0..12) {
            0..=1 => Fault::Term,
            2..=3 => Fault::Kill,
            4..=5 => Fault::Pause,
            6..=7 => Fault::Partition,
            8..=9 => Fault::StepDown,
            _ => Fault::RestartMonitor,
        };
        let node = rng.usize(0..cluster.size());
        let name = cluster.server_name(node);
        let leader = cluster.meta_leader().await;
        let is_leader = leader.as_deref() == Some(name.as_str());
        let hold = Duration::from_millis(rng.u64(5_000..9_000));
        let start = SystemTime::now();
        let (label, victim, touches_leader) = match fault {
            Fault::Term | Fault::Kill => {
                let (how, signal) = match fault {
                    Fault::Term => (Stop::Term, "SIGTERM"),
                    _ => (Stop::Kill, "SIGKILL"),
                };
                cluster.stop(node, how).await.map_err(|e| e.to_string())?;
                tokio::time::sleep(hold).await;
                cluster.restart(node).await.map_err(|e| e.to_string())?;
                (format!("{signal} {name}"), Some(name), is_leader)
            }
            Fault::Pause => {
                cluster.pause(node).map_err(|e| e.to_string())?;
                tokio::time::sleep(hold).await;
                cluster.resume(node).map_err(|e| e.to_string())?;
                (
                    format!("SIGSTOP {name} for {:.1} s", hold.as_secs_f64()),
                    Some(name),
                    is_leader,
                )
            }
            Fault::Partition => {
                cluster.partition(node).map_err(|e| e.to_string())?;
                tokio::time::sleep(hold + Duration::from_secs(6)).await;
                cluster.heal(node).map_err(|e| e.to_string())?;
                (format!("partition {name}"), Some(name), is_leader)
            }
            Fault::StepDown => {
                cluster.step_down().await.map_err(|e| e.to_string())?;
                ("meta leader step-down".to_string(), None, true)
            }
            Fault::RestartMonitor => {
                let which = rng.usize(0..monitors.len());
                let old = monitors.remove(which);
                let old_id = tail(&old.id);
                stop_monitor(old).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let new = start_monitor(&cluster).await?;
                let label = format!(
                    "restart of monitor instance {which} ({old_id} -> {})",
                    tail(&new.id)
                );
                monitors.insert(which, new);
                (label, None, false)
            }
        };
        cluster
            .wait_for_leader(Duration::from_secs(40))
            .await
            .map_err(|e| format!("after {label}: {e}"))?;
        let settled = settle(&observer, Duration::from_secs(45)).await;
        let end = SystemTime::now();
        let span = format!("{} [{}-{}]", label, clock(start), clock(end));
        report.faults.push(if settled {
            span
        } else {
            format!("{span} (did not settle)")
        });
        windows.push(Window {
            label,
            victim,
            leader: touches_leader,
            start,
            end,
        });
    }
    // Let the flapping window close so every finding can resolve.
    settle(&observer, Duration::from_secs(10)).await;
    tokio::time::sleep(soak_config().thresholds.flap_window + Duration::from_secs(3)).await;
    let final_status = tokio::time::timeout(
        Duration::from_secs(3),
        observer.request("$INSIGHTS.API.STATUS", "".into()),
    )
    .await;
    for monitor in monitors {
        stop_monitor(monitor).await;
    }
    let mut received = Vec::new();
    let mut ids = BTreeSet::new();
    while let Ok(Some((at, event))) =
        tokio::time::timeout(Duration::from_millis(300), events.recv()).await
    {
        if ids.insert(event.id.clone()) {
            received.push((at, event));
        }
    }
    let elections = elections.lock().map(|l| l.clone()).unwrap_or_default();
    judge(&mut report, &windows, &received, &elections);
    if let Ok(Ok(msg)) = final_status {
        if let Ok(status) = serde_json::from_slice::<serde_json::Value>(&msg.payload) {
            for f in status["findings"].as_array().into_iter().flatten() {
                let key = f["finding"].as_str().unwrap_or_default().to_string();
                if !report.unresolved.contains(&key) {
                    report
                        .unresolved
                        .push(format!("{key} (still active in STATUS)"));
                }
            }
        }
    }
    drop(cluster);
    Ok(report)
}

/// Compares the events received with the faults injected.
fn judge(
    report: &mut SoakReport,
    windows: &[Window],
    received: &[(SystemTime, FindingEvent)],
    elections: &[SystemTime],
) {
    let thresholds = soak_config().thresholds;
    let slack = Duration::from_secs(2);
    let mut by_key: BTreeMap<&str, Vec<&(SystemTime, FindingEvent)>> = BTreeMap::new();
    for item in received {
        by_key
            .entry(item.1.finding.as_str())
            .or_default()
            .push(item);
    }
    report.raised = received
        .iter()
        .filter(|(_, e)| e.event == TransitionKind::Raised)
        .count();
    // Episodes: raised, any updates, resolved. Anything else is a duplicate or left open.
    let mut episodes: Vec<(&FindingEvent, SystemTime)> = Vec::new();
    for (key, items) in &by_key {
        let trail: Vec<String> = items
            .iter()
            .map(|(at, e)| {
                // Instance ids are nuids: in-process instances share a long prefix, so the tail
                // tells them apart. The receipt delay shows events buffered and delivered late.
                format!(
                    "{}#{}@{}/i:{}/ev:{}/rx:{}",
                    e.event.as_str(),
                    e.revision,
                    e.timestamp.get(11..23).unwrap_or_default(),
                    tail(&e.instance),
                    tail(&e.id),
                    clock(*at)
                )
            })
            .collect();
        let trail = trail.join(" ");
        let mut open = false;
        for (at, event) in items {
            match event.event {
                TransitionKind::Raised if open => report
                    .duplicated
                    .push(format!("{key}: RAISED twice: {trail}")),
                TransitionKind::Raised => {
                    open = true;
                    episodes.push((event, *at));
                }
                TransitionKind::Resolved if !open => report
                    .duplicated
                    .push(format!("{key}: RESOLVED twice or without RAISED: {trail}")),
                TransitionKind::Resolved => open = false,
                TransitionKind::Updated => {}
            }
        }
        if open {
            report.unresolved.push(key.to_string());
        }
    }
    // Each fault with a victim must raise that server's META_001 within its window.
    for w in windows {
        let Some(victim) = &w.victim else { continue };
        report.expected += 1;
        let hit = episodes.iter().any(|(e, at)| {
            e.check.as_str() == "META_001"
                && e.server.as_deref() == Some(victim.as_str())
                && *at + slack >= w.start
                && *at <= w.end
        });
        if !hit {
            report
                .missed
                .push(format!("{}: no META_001 for {victim}", w.label));
        }
    }
    // Each finding raised must be explained by a fault going on at the time.
    for (e, at) in &episodes {
        // Flapping is judged against the elections the servers announced: a paused or
        // partitioned follower that comes back can win an election too, so "the fault touched
        // the leader" is not the whole truth. More than `flap_max` within the window is real.
        if e.check.as_str() == "META_003" {
            let from = at
                .checked_sub(thresholds.flap_window + slack)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let count = elections
                .iter()
                .filter(|t| **t >= from && **t <= *at + slack)
                .count();
            if count > thresholds.flap_max {
                continue;
            }
        }
        let explained = windows.iter().any(|w| {
            let during = *at + slack >= w.start && *at <= w.end + slack;
            during
                && match e.check.as_str() {
                    "META_001" => e.server.is_some() && e.server == w.victim,
                    "META_003" => false,
                    // A cut-off server soon reports no leader while the others report one; a
                    // stopped one wakes with a stale leader; a restarted one knows no leader
                    // until it catches up: a disagreement by definition, whichever server it was.
                    "META_002" => w.leader || w.victim.is_some(),
                    // An election after a fault can leave the group without a leader for longer
                    // than --offline-after (a paused or cut-off follower that comes back can
                    // force one too): a real loss of the meta leader, however brief.
                    "META_006" => {
                        w.leader
                            || (w.victim.is_some()
                                && elections
                                    .iter()
                                    .any(|t| *t + slack >= w.start && *t <= w.end + slack))
                    }
                    _ => false,
                }
        });
        if !explained {
            // A known check weakness, named so it can be told apart: in the first poll after
            // an election the new leader's `active` for a follower can still be the silence it
            // saw before it led.
            let after_election = elections
                .iter()
                .any(|t| *t <= *at && *t + Duration::from_secs(2) >= *at);
            report.false_findings.push(format!(
                "{} {} at {}{}",
                e.check,
                e.finding,
                nats_insights::time_format::rfc3339(*at),
                if after_election && e.check.as_str() == "META_001" {
                    " (just after a meta leader election)"
                } else {
                    ""
                }
            ));
        }
    }
}

/// What a churn run saw.
#[derive(Debug, Default)]
pub struct ChurnReport {
    /// Streams created and deleted.
    pub streams: u64,
    /// Consumers created and deleted.
    pub consumers: u64,
    /// Messages published and acknowledged.
    pub messages: u64,
    /// JetStream API calls that failed (load, not faults: counted, not fatal).
    pub api_errors: u64,
    /// Finding events received (the target is none).
    pub findings: Vec<String>,
}

/// No false positives under load: a healthy 3-node cluster under heavy JetStream churn (R3
/// streams and consumers created and deleted, messages published) for `duration`, watched by
/// one monitor with default settings. Every finding it raises is a false one.
pub async fn churn(duration: Duration) -> Result<ChurnReport, String> {
    let cluster = Cluster::start(ClusterOptions {
        cluster_name: "churn".to_string(),
        ..ClusterOptions::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    let mut events = watch_all(&cluster).await?;
    // Default settings, state in memory: only what the monitor concludes is under test.
    let config = EngineConfig::default();
    let connections = connect_args(&cluster)
        .open("nats-insights-churn")
        .await
        .map_err(|e| e.to_string())?;
    let (stop, stopped) = oneshot::channel::<()>();
    let monitor = tokio::spawn(engine::run(
        connections,
        config,
        Instance {
            id: nuid::next().to_string(),
            started: SystemTime::now(),
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let app = ConnectArgs {
        servers: cluster.client_urls(),
        user: Some(APP_USER.to_string()),
        password: Some(APP_PASSWORD.to_string()),
        ..ConnectArgs::default()
    }
    .connect("nats-insights-churn-load")
    .await
    .map_err(|e| e.to_string())?;
    let js = async_nats::jetstream::new(app);
    let mut report = ChurnReport::default();
    let deadline = Instant::now() + duration;
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let name = format!("CHURN_{}", n % 4);
        let _ = js.delete_stream(&name).await;
        let stream = match js
            .create_stream(async_nats::jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![format!("churn.{n}.>")],
                num_replicas: 3,
                ..Default::default()
            })
            .await
        {
            Ok(stream) => stream,
            Err(_) => {
                report.api_errors += 1;
                continue;
            }
        };
        report.streams += 1;
        let mut acks = Vec::new();
        for i in 0..200 {
            match js.publish(format!("churn.{n}.{i}"), "payload".into()).await {
                Ok(ack) => acks.push(ack),
                Err(_) => report.api_errors += 1,
            }
        }
        for ack in acks {
            match ack.await {
                Ok(_) => report.messages += 1,
                Err(_) => report.api_errors += 1,
            }
        }
        for c in 0..3 {
            let durable = format!("C{c}");
            let created = stream
                .create_consumer(async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some(durable.clone()),
                    ..Default::default()
                })
                .await;
            match created {
                Ok(_) => {
                    report.consumers += 1;
                    if stream.delete_consumer(&durable).await.is_err() {
                        report.api_errors += 1;
                    }
                }
                Err(_) => report.api_errors += 1,
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), monitor).await;
    while let Ok(Some((_, event))) =
        tokio::time::timeout(Duration::from_millis(300), events.recv()).await
    {
        report
            .findings
            .push(nats_insights::watch::format_line(&event));
    }
    Ok(report)
}
