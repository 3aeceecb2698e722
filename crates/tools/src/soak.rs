//! Reliability: a chaos soak with ground truth. Runs a 5-node cluster watched by monitor
//! instances in HA mode, each its own `nats-insights run` process with its own wall clock
//! (libfaketime, offsets chosen by the seed), injects faults from a seeded schedule (SIGTERM,
//! SIGKILL, SIGSTOP and SIGCONT, partitions through the route proxies, forced step-downs, a
//! graceful stop or a crash of a monitor process followed by a new one), records when each fault
//! began and ended, and compares with every finding event an operator received: each fault's
//! META_001 raised and resolved, one event id each, no finding outside a fault, nothing left
//! active on the healed cluster, no monitor process that died by itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use nats_insights::connect::ConnectArgs;
use nats_insights::findings::TransitionKind;
use nats_insights::publish::FindingEvent;
use testbed::{
    ClockOffset, Cluster, ClusterOptions, Monitor, MonitorSpec, Stop, APP_PASSWORD, APP_USER,
    KEEP_ENV, SYS_PASSWORD, SYS_USER,
};
use tokio::sync::mpsc;

/// The thresholds the soak runs the monitors with: leader changes come with many faults, and a
/// short flapping window lets META_003 resolve within the run.
const FLAP_WINDOW: Duration = Duration::from_secs(20);
/// See [`FLAP_WINDOW`].
const FLAP_MAX: usize = 1;
/// The state bucket the instances share.
const BUCKET: &str = "soak";
/// How long a started monitor process gets to answer `$SRV.PING`.
const MONITOR_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long and how wild.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Faults are injected until this much time has passed.
    pub duration: Duration,
    /// Seed of the fault schedule and of the clock offsets (the same seed gives the same ones).
    pub seed: u64,
    /// Monitor instances on the same bucket (2 exercises HA mode).
    pub instances: usize,
    /// Each instance's wall clock is offset from the real one by up to this much, either way
    /// (libfaketime). Zero runs every instance on the real clock, without libfaketime.
    pub max_skew: Duration,
    /// The nats-insights binary (see [`testbed::product_bin`]).
    pub bin: PathBuf,
    /// `--log` of the monitor processes; `None` keeps their default.
    pub log: Option<String>,
}

/// One monitor instance over the soak: its clock, its processes, its log.
#[derive(Debug, Clone)]
pub struct InstanceReport {
    /// 0-based index.
    pub index: usize,
    /// Its wall clock's offset from the real one (`None`: the real clock).
    pub offset: Option<ClockOffset>,
    /// The instance ids of its processes, in order (last four characters).
    pub ids: Vec<String>,
    /// Graceful stops (SIGTERM) and crashes (SIGKILL) the schedule gave it.
    pub terms: usize,
    /// See `terms`.
    pub kills: usize,
    /// The log of all its processes (stdout and stderr); removed after a soak that passed
    /// (see [`SoakReport::logs`]).
    pub log: PathBuf,
}

impl InstanceReport {
    /// One line: `monitor 0: wall clock +1.250 s off, 2 processes (ab12, cd34; 1 SIGTERM, 0 SIGKILL)`.
    pub fn line(&self) -> String {
        format!(
            "monitor {}: wall clock {}, {} process{} ({}; {} SIGTERM, {} SIGKILL)",
            self.index,
            self.offset
                .map_or("real".to_string(), |o| format!("{o} off")),
            self.ids.len(),
            if self.ids.len() == 1 { "" } else { "es" },
            self.ids.join(", "),
            self.terms,
            self.kills,
        )
    }
}

/// What the soak found.
#[derive(Debug, Default)]
pub struct SoakReport {
    /// The monitor instances: clocks, processes, logs.
    pub instances: Vec<InstanceReport>,
    /// Where the monitors' logs are (kept when the soak failed or errs, or with
    /// `NATS_INSIGHTS_KEEP_TESTBED`).
    pub logs: PathBuf,
    /// Faults injected, one line each.
    pub faults: Vec<String>,
    /// Findings the faults should have produced.
    pub expected: usize,
    /// RAISED events received (distinct ids).
    pub raised: usize,
    /// Expected findings never raised.
    pub missed: Vec<String>,
    /// Episodes of a finding whose raise, or whose resolve, came with more than one distinct
    /// event id (two instances each announcing the transition).
    pub duplicated: Vec<String>,
    /// Event ids one subscriber received more than once (copies of one transition, sent again:
    /// the contract is at least once with stable ids, so these are no failure).
    pub repeated: Vec<String>,
    /// Findings raised with no fault to explain them.
    pub false_findings: Vec<String>,
    /// Findings still active at the end.
    pub unresolved: Vec<String>,
    /// Monitor processes that exited without being told to, or not cleanly on SIGTERM.
    pub crashed: Vec<String>,
}

impl SoakReport {
    /// No miss, no duplicate, no false or unresolved finding, no monitor that died by itself.
    pub fn ok(&self) -> bool {
        self.missed.is_empty()
            && self.duplicated.is_empty()
            && self.false_findings.is_empty()
            && self.unresolved.is_empty()
            && self.crashed.is_empty()
    }

    /// The figures, on one line.
    pub fn summary(&self) -> String {
        format!(
            "faults {}, expected {}, raised {}, missed {}, duplicated {}, repeated {}, false {}, unresolved {}, crashed {}",
            self.faults.len(),
            self.expected,
            self.raised,
            self.missed.len(),
            self.duplicated.len(),
            self.repeated.len(),
            self.false_findings.len(),
            self.unresolved.len(),
            self.crashed.len()
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

/// A monitor instance: its process and what the report says about it.
struct Instance {
    process: Monitor,
    report: InstanceReport,
    /// Full instance id of the current process.
    id: String,
}

/// The soak's own directory (the monitors' logs): removed at the end unless kept.
struct SoakDir {
    path: PathBuf,
    keep: bool,
}

impl SoakDir {
    fn create(prefix: &str) -> Result<SoakDir, String> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "nats-insights-{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        // Kept unless the run ends well (an error returns early with it kept).
        Ok(SoakDir { path, keep: true })
    }
}

impl Drop for SoakDir {
    fn drop(&mut self) {
        if self.keep || std::env::var_os(KEEP_ENV).is_some() {
            eprintln!("monitor logs kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn connect_args(cluster: &Cluster) -> ConnectArgs {
    ConnectArgs {
        servers: cluster.client_urls(),
        user: Some(SYS_USER.to_string()),
        password: Some(SYS_PASSWORD.to_string()),
        ..ConnectArgs::default()
    }
}

/// `nats-insights run` on every node of `cluster` as the system account; with `state`, keeping
/// state in the bucket with the soak's thresholds.
fn run_args(cluster: &Cluster, state: bool, log: Option<&str>) -> Vec<String> {
    let mut args = cluster.run_args(state.then_some(BUCKET));
    if state {
        let flap_window = format!("{}s", FLAP_WINDOW.as_secs());
        let flap_max = FLAP_MAX.to_string();
        args.extend(
            [
                "--bucket-replicas",
                "3",
                "--state-timeout",
                "1s",
                "--flap-window",
                &flap_window,
                "--flap-max",
                &flap_max,
            ]
            .map(str::to_string),
        );
    }
    if let Some(filter) = log {
        args.extend(["--log".to_string(), filter.to_string()]);
    }
    args
}

/// Waits until an instance whose id is not in `known` answers `$SRV.PING`, or `monitor`'s
/// process exits.
async fn wait_for_new_instance(
    observer: &async_nats::Client,
    known: &BTreeSet<String>,
    monitor: &mut Monitor,
) -> Result<String, String> {
    let deadline = Instant::now() + MONITOR_UP_TIMEOUT;
    loop {
        if let Some(status) = monitor.exited() {
            return Err(format!(
                "nats-insights exited at start ({status}); see {}. Last lines:\n{}",
                monitor.log_path().display(),
                monitor.log_tail(15)
            ));
        }
        let live = instance_ids(observer, Duration::from_millis(700)).await;
        if let Some(new) = live.into_iter().find(|id| !known.contains(id)) {
            return Ok(new);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "nats-insights did not answer $SRV.PING within {} s; see {}",
                MONITOR_UP_TIMEOUT.as_secs(),
                monitor.log_path().display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Starts monitor instance `index`: a process of `bin` with `args`, its clock `offset` away.
async fn start_instance(
    index: usize,
    spec: MonitorSpec,
    observer: &async_nats::Client,
    known: &mut BTreeSet<String>,
) -> Result<Instance, String> {
    let log = spec.log.clone();
    let offset = spec.clock_offset;
    let mut process = Monitor::start(spec).map_err(|e| e.to_string())?;
    let id = wait_for_new_instance(observer, known, &mut process).await?;
    known.insert(id.clone());
    Ok(Instance {
        process,
        report: InstanceReport {
            index,
            offset,
            ids: vec![tail(&id)],
            terms: 0,
            kills: 0,
            log,
        },
        id,
    })
}

/// A fresh process for `instance` after its previous one stopped.
async fn start_again(
    instance: &mut Instance,
    observer: &async_nats::Client,
    known: &mut BTreeSet<String>,
) -> Result<(), String> {
    instance.process.start_again().map_err(|e| e.to_string())?;
    let id = wait_for_new_instance(observer, known, &mut instance.process).await?;
    known.insert(id.clone());
    instance.report.ids.push(tail(&id));
    instance.id = id;
    Ok(())
}

/// Records a monitor process that exited without being told to, and starts a new one.
async fn check_alive(
    instances: &mut [Instance],
    report: &mut SoakReport,
    observer: &async_nats::Client,
    known: &mut BTreeSet<String>,
) -> Result<(), String> {
    for instance in instances.iter_mut() {
        if let Some(status) = instance.process.exited() {
            report.crashed.push(format!(
                "monitor {} ({}) exited by itself ({status}); see {}",
                instance.report.index,
                tail(&instance.id),
                instance.process.log_path().display()
            ));
            start_again(instance, observer, known).await?;
        }
    }
    Ok(())
}

/// A finding event as one subscriber received it.
struct Receipt {
    /// Which subscriber (one per node).
    subscriber: usize,
    at: SystemTime,
    event: FindingEvent,
}

/// Subscribes through one pinned connection per node and merges them: with one node faulted at
/// a time, every event reaches at least one subscriber. Each receipt says which subscriber got
/// it, so that copies of one event id sent twice can be told from one copy seen by several.
async fn watch_all(cluster: &Cluster) -> Result<mpsc::UnboundedReceiver<Receipt>, String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let clients = connect_args(cluster)
        .connect_each("nats-insights-soak-watch")
        .await
        .map_err(|e| e.to_string())?;
    for (subscriber, client) in clients.into_iter().enumerate() {
        let mut events = nats_insights::watch::subscribe(&client)
            .await
            .map_err(|e| e.to_string())?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let _keep = client;
            while let Some(received) = events.next().await {
                if let Ok(event) = received {
                    let receipt = Receipt {
                        subscriber,
                        at: SystemTime::now(),
                        event,
                    };
                    if tx.send(receipt).is_err() {
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
async fn record_elections(cluster: &Cluster) -> Result<Arc<Mutex<Vec<SystemTime>>>, String> {
    let elections = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(BTreeSet::<String>::new()));
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
        let elections = Arc::clone(&elections);
        let seen = Arc::clone(&seen);
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

/// The last four characters of an id.
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

/// Each instance's clock offset, chosen by the seed: uniform within ±`max_skew`, to the
/// millisecond. Drawn from a generator of its own, so the fault schedule of a seed does not
/// depend on the number of instances or the skew.
fn clock_offsets(seed: u64, instances: usize, max_skew: Duration) -> Vec<Option<ClockOffset>> {
    let max = i64::try_from(max_skew.as_millis()).unwrap_or(i64::MAX);
    let mut rng = fastrand::Rng::with_seed(seed.rotate_left(32) ^ 0x00c1_0c4e_5eed);
    (0..instances)
        .map(|_| (max > 0).then(|| ClockOffset(rng.i64(-max..=max))))
        .collect()
}

/// Runs the soak and judges it.
pub async fn run(options: SoakOptions) -> Result<SoakReport, String> {
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let mut dir = SoakDir::create("soak")?;
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
    let observer = connect_args(&cluster)
        .connect("nats-insights-soak-observer")
        .await
        .map_err(|e| e.to_string())?;

    let args = run_args(&cluster, true, options.log.as_deref());
    let mut known = BTreeSet::new();
    let mut instances = Vec::new();
    let count = options.instances.max(1);
    for (index, offset) in clock_offsets(options.seed, count, options.max_skew)
        .into_iter()
        .enumerate()
    {
        let mut spec = MonitorSpec::new(
            &options.bin,
            args.clone(),
            dir.path.join(format!("monitor-{index}.log")),
        );
        spec.clock_offset = offset;
        instances.push(start_instance(index, spec, &observer, &mut known).await?);
    }
    let mut report = SoakReport {
        logs: dir.path.clone(),
        ..SoakReport::default()
    };
    if !settle(&observer, Duration::from_secs(30)).await {
        return Err(format!(
            "the monitors never reported a healthy cluster before the first fault; their logs: {}",
            dir.path.display()
        ));
    }

    let mut windows = Vec::new();
    let deadline = Instant::now() + options.duration;
    while Instant::now() < deadline {
        check_alive(&mut instances, &mut report, &observer, &mut known).await?;
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
                let which = rng.usize(0..instances.len());
                let (how, signal) = if rng.bool() {
                    (Stop::Term, "SIGTERM")
                } else {
                    (Stop::Kill, "SIGKILL")
                };
                let instance = &mut instances[which];
                let old = tail(&instance.id);
                let status = instance
                    .process
                    .stop(how)
                    .await
                    .map_err(|e| e.to_string())?;
                if how == Stop::Term {
                    instance.report.terms += 1;
                    if !status.success() {
                        report.crashed.push(format!(
                            "monitor {which} ({old}) did not exit cleanly on SIGTERM ({status}); see {}",
                            instance.process.log_path().display()
                        ));
                    }
                } else {
                    instance.report.kills += 1;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                start_again(instance, &observer, &mut known).await?;
                let label = format!(
                    "{signal} of monitor {which} ({old}), then a new process ({})",
                    tail(&instance.id)
                );
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
    tokio::time::sleep(FLAP_WINDOW + Duration::from_secs(3)).await;
    let final_status = tokio::time::timeout(
        Duration::from_secs(3),
        observer.request("$INSIGHTS.API.STATUS", "".into()),
    )
    .await;
    check_alive(&mut instances, &mut report, &observer, &mut known).await?;
    for instance in &mut instances {
        match instance.process.stop(Stop::Term).await {
            Ok(status) if status.success() => {}
            Ok(status) => report.crashed.push(format!(
                "monitor {} ({}) did not exit cleanly on SIGTERM at the end ({status}); see {}",
                instance.report.index,
                tail(&instance.id),
                instance.process.log_path().display()
            )),
            Err(e) => report.crashed.push(format!(
                "monitor {} ({}): {e}",
                instance.report.index,
                tail(&instance.id)
            )),
        }
    }
    let mut received = Vec::new();
    while let Ok(Some(receipt)) =
        tokio::time::timeout(Duration::from_millis(300), events.recv()).await
    {
        received.push(receipt);
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
    report.instances = instances.iter().map(|i| i.report.clone()).collect();
    drop(instances);
    drop(cluster);
    dir.keep = !report.ok();
    Ok(report)
}

/// Compares the events received with the faults injected.
fn judge(
    report: &mut SoakReport,
    windows: &[Window],
    received: &[Receipt],
    elections: &[SystemTime],
) {
    let slack = Duration::from_secs(2);
    // Copies: how often each subscriber got each id. Every subscriber gets one copy of each
    // message published; more than one on the same subscriber is the transition sent again.
    let mut copies: BTreeMap<(&str, usize), usize> = BTreeMap::new();
    // The distinct events, in the order of their first receipt.
    let mut seen = BTreeSet::new();
    let mut distinct: Vec<(SystemTime, &FindingEvent)> = Vec::new();
    for r in received {
        *copies
            .entry((r.event.id.as_str(), r.subscriber))
            .or_default() += 1;
        if seen.insert(r.event.id.as_str()) {
            distinct.push((r.at, &r.event));
        }
    }
    for (_, event) in &distinct {
        let extra = copies
            .iter()
            .filter(|((id, _), _)| *id == event.id)
            .map(|(_, n)| n - 1)
            .max()
            .unwrap_or(0);
        if extra > 0 {
            report.repeated.push(format!(
                "{} {} ev:{}: {extra} more cop{} of one id",
                event.finding,
                event.event.as_str(),
                tail(&event.id),
                if extra == 1 { "y" } else { "ies" }
            ));
        }
    }
    let mut by_key: BTreeMap<&str, Vec<(SystemTime, &FindingEvent)>> = BTreeMap::new();
    for (at, event) in &distinct {
        by_key
            .entry(event.finding.as_str())
            .or_default()
            .push((*at, event));
    }
    report.raised = distinct
        .iter()
        .filter(|(_, e)| e.event == TransitionKind::Raised)
        .count();
    // Episodes: raised, any updates, resolved, each transition with one id (copies were folded
    // above). A second id for the raise of an open episode, or for a resolve, is a duplicate.
    let mut episodes: Vec<(&FindingEvent, SystemTime)> = Vec::new();
    for (key, items) in &by_key {
        let trail: Vec<String> = items
            .iter()
            .map(|(at, e)| {
                // The event's own timestamp is its publisher's (possibly skewed) clock; the
                // receipt time is the soak's.
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
        let mut resolved_once = false;
        for (at, event) in items {
            match event.event {
                TransitionKind::Raised if open => report
                    .duplicated
                    .push(format!("{key}: RAISED with a second event id: {trail}")),
                TransitionKind::Raised => {
                    open = true;
                    episodes.push((event, *at));
                }
                TransitionKind::Resolved if !open && resolved_once => report
                    .duplicated
                    .push(format!("{key}: RESOLVED with a second event id: {trail}")),
                TransitionKind::Resolved if !open => report
                    .duplicated
                    .push(format!("{key}: RESOLVED without RAISED: {trail}")),
                TransitionKind::Resolved => {
                    open = false;
                    resolved_once = true;
                }
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
        // the leader" is not the whole truth. More than `FLAP_MAX` within the window is real.
        if e.check.as_str() == "META_003" {
            let from = at
                .checked_sub(FLAP_WINDOW + slack)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let count = elections
                .iter()
                .filter(|t| **t >= from && **t <= *at + slack)
                .count();
            if count > FLAP_MAX {
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
                    "META_006" | "META_106" => {
                        w.leader
                            || (w.victim.is_some()
                                && elections
                                    .iter()
                                    .any(|t| *t + slack >= w.start && *t <= w.end + slack))
                    }
                    // The checks on the sources beyond JSZ (docs/new-sources.md): the victim
                    // restarted or is catching up; any member may lose its meta leader (health)
                    // when the fault touches the leader or a victim; a cut route has two ends.
                    "SERVER_101" | "SERVER_008" | "META_110" => {
                        e.server.is_some() && e.server == w.victim
                    }
                    "SERVER_014" => w.leader || w.victim.is_some(),
                    "CLUSTER_005" => w.victim.is_some(),
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
    /// The monitor's log (removed after a run without findings, unless
    /// `NATS_INSIGHTS_KEEP_TESTBED` is set).
    pub log: PathBuf,
}

/// No false positives under load: a healthy 3-node cluster under heavy JetStream churn (R3
/// streams and consumers created and deleted, messages published) for `duration`, watched by
/// one `nats-insights run` process (`bin`) with default settings and state in memory. Every
/// finding it raises is a false one.
pub async fn churn(
    duration: Duration,
    bin: &Path,
    log: Option<&str>,
) -> Result<ChurnReport, String> {
    let mut dir = SoakDir::create("churn")?;
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
    let observer = connect_args(&cluster)
        .connect("nats-insights-churn-observer")
        .await
        .map_err(|e| e.to_string())?;
    // Default settings, state in memory: only what the monitor concludes is under test.
    let spec = MonitorSpec::new(
        bin,
        run_args(&cluster, false, log),
        dir.path.join("monitor.log"),
    );
    let mut monitor = Monitor::start(spec).map_err(|e| e.to_string())?;
    wait_for_new_instance(&observer, &BTreeSet::new(), &mut monitor).await?;
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
    let mut report = ChurnReport {
        log: monitor.log_path().to_owned(),
        ..ChurnReport::default()
    };
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
    let exited = monitor.exited();
    let stopped = monitor.stop(Stop::Term).await;
    while let Ok(Some(receipt)) =
        tokio::time::timeout(Duration::from_millis(300), events.recv()).await
    {
        // One line per event, not per subscriber that saw it.
        let line = nats_insights::watch::format_line(&receipt.event);
        if !report.findings.contains(&line) {
            report.findings.push(line);
        }
    }
    if let Some(status) = exited {
        return Err(format!(
            "nats-insights exited by itself under churn ({status}); see {}",
            report.log.display()
        ));
    }
    match stopped {
        Ok(status) if status.success() => {}
        Ok(status) => {
            return Err(format!(
                "nats-insights did not exit cleanly on SIGTERM ({status}); see {}",
                report.log.display()
            ))
        }
        Err(e) => return Err(e.to_string()),
    }
    dir.keep = !report.findings.is_empty();
    Ok(report)
}

/// The instance ids of every nats-insights that answers `$SRV.PING.nats-insights` within `wait`
/// (each micro service carries its instance id in its metadata).
async fn instance_ids(client: &async_nats::Client, wait: Duration) -> Vec<String> {
    let inbox = client.new_inbox();
    let Ok(mut replies) = client.subscribe(inbox.clone()).await else {
        return Vec::new();
    };
    if client
        .publish_with_reply("$SRV.PING.nats-insights", inbox, "".into())
        .await
        .is_err()
    {
        return Vec::new();
    }
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, replies.next()).await {
        if let Ok(ping) = serde_json::from_slice::<serde_json::Value>(&msg.payload) {
            if let Some(id) = ping["metadata"]["instance"].as_str() {
                ids.push(id.to_string());
            }
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, kind: &str, revision: u64) -> FindingEvent {
        serde_json::from_value(serde_json::json!({
            "type": "io.nats.insights.v1.finding",
            "id": id,
            "finding": "META_001/default/n2",
            "event": kind,
            "revision": revision,
            "check": "META_001",
            "name": "offline meta replica",
            "severity": "warning",
            "category": "meta",
            "server": "n2",
            "summary": "n2 is offline",
            "evidence": {},
            "remediation": [],
            "raised_at": "2026-12-01T10:00:00.000Z",
            "timestamp": "2026-12-01T10:00:00.000Z",
            "instance": "instance-0001",
        }))
        .expect("a finding event")
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn receipt(subscriber: usize, secs: u64, event: &FindingEvent) -> Receipt {
        Receipt {
            subscriber,
            at: at(secs),
            event: event.clone(),
        }
    }

    fn window() -> Window {
        Window {
            label: "SIGKILL n2".to_string(),
            victim: Some("n2".to_string()),
            leader: false,
            start: at(0),
            end: at(20),
        }
    }

    #[test]
    fn copies_of_one_id_are_repeated_not_duplicated() {
        let raised = event("aaaa", "raised", 1);
        let resolved = event("bbbb", "resolved", 2);
        // Every subscriber gets one copy of each message; subscriber 1 got the raise twice.
        let received = [
            receipt(0, 2, &raised),
            receipt(1, 2, &raised),
            receipt(1, 3, &raised),
            receipt(0, 10, &resolved),
            receipt(1, 10, &resolved),
        ];
        let mut report = SoakReport::default();
        judge(&mut report, &[window()], &received, &[]);
        assert!(report.ok(), "{report:#?}");
        assert_eq!(report.raised, 1);
        assert_eq!(report.expected, 1);
        assert_eq!(report.repeated.len(), 1, "{:?}", report.repeated);
        assert!(report.repeated[0].contains("1 more copy"));
    }

    #[test]
    fn a_second_id_for_the_raise_or_the_resolve_is_a_duplicate() {
        let received = [
            receipt(0, 2, &event("aaaa", "raised", 1)),
            receipt(0, 3, &event("cccc", "raised", 1)),
            receipt(0, 10, &event("bbbb", "resolved", 2)),
            receipt(0, 11, &event("dddd", "resolved", 2)),
        ];
        let mut report = SoakReport::default();
        judge(&mut report, &[window()], &received, &[]);
        assert_eq!(report.duplicated.len(), 2, "{:#?}", report.duplicated);
        assert!(report.duplicated[0].contains("RAISED with a second event id"));
        assert!(report.duplicated[1].contains("RESOLVED with a second event id"));
        assert!(report.repeated.is_empty());
        assert!(!report.ok());
    }
}
