//! Reliability: a chaos soak with ground truth. Runs a 5-node cluster watched by monitor
//! instances in HA mode, each its own `nats-insights run` process with its own wall clock
//! (libfaketime, offsets chosen by the seed), injects faults from a seeded schedule (SIGTERM,
//! SIGKILL, SIGSTOP and SIGCONT, partitions through the route proxies, forced step-downs, a
//! graceful stop or a crash of a monitor process followed by a new one, a server renamed and
//! its old peer removed, a stopped server peer-removed that then returns, the meta leader paused
//! while another member is killed), records when each fault began and ended and what kind of
//! harm it did to which server, and compares with every finding event an operator received:
//! each fault's META_001 raised and resolved, one event id each, no finding outside a fault,
//! nothing left active on the healed cluster, no monitor process that died by itself, and every
//! diagnosis fitting the fault (see `grade`).

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
/// How far before a fault's start and after its end a finding still counts as caused by it (a
/// poll, and the delivery of what it decided).
const SLACK: Duration = Duration::from_secs(2);
/// How long a started monitor process gets to answer `$SRV.PING`.
const MONITOR_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// META_102 (size changed) resolves this long after the last change, so that a membership
/// fault's finding resolves within the fault (the default holds it for 10 minutes).
const SIZE_CHANGE_HOLD: Duration = Duration::from_secs(5);
/// After a membership change, the soak waits this long before it waits for the monitors to
/// settle: otherwise they can report a quiet group before their next poll sees the new size,
/// and raise META_102 after the fault's window has closed.
const MEMBERSHIP_SEEN: Duration = Duration::from_secs(3);

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
    /// Events that arrived more than the slack after their publisher decided them (a
    /// follower's grace, a publish sent again): judged by their decision (`Publishers`), listed
    /// so that delivery delays stay visible. No failure.
    pub late: Vec<String>,
    /// Findings raised with no fault to explain them.
    pub false_findings: Vec<String>,
    /// Findings whose check, reason or remediation does not fit the fault going on for that
    /// server or group (see `grade`): one line each, with the fault and the finding's text.
    pub wrong: Vec<String>,
    /// Findings still active at the end.
    pub unresolved: Vec<String>,
    /// Monitor processes that exited without being told to, or not cleanly on SIGTERM.
    pub crashed: Vec<String>,
}

impl SoakReport {
    /// No miss, no duplicate, no false or unresolved finding, no wrong diagnosis, no monitor
    /// that died by itself.
    pub fn ok(&self) -> bool {
        self.missed.is_empty()
            && self.duplicated.is_empty()
            && self.false_findings.is_empty()
            && self.wrong.is_empty()
            && self.unresolved.is_empty()
            && self.crashed.is_empty()
    }

    /// The figures, on one line.
    pub fn summary(&self) -> String {
        format!(
            "faults {}, expected {}, raised {}, missed {}, duplicated {}, repeated {}, late {}, false {}, wrong diagnoses {}, unresolved {}, crashed {}",
            self.faults.len(),
            self.expected,
            self.raised,
            self.missed.len(),
            self.duplicated.len(),
            self.repeated.len(),
            self.late.len(),
            self.false_findings.len(),
            self.wrong.len(),
            self.unresolved.len(),
            self.crashed.len()
        )
    }
}

/// What a fault did to one server: the ground truth its diagnosis is graded against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Harm {
    /// SIGTERM, started again under its name: a shutdown announced.
    Stopped,
    /// SIGKILL, started again under its name: nothing announced.
    Crashed,
    /// SIGSTOP, then SIGCONT.
    Paused,
    /// Every route link cut, then healed.
    Partitioned,
    /// Stopped with SIGTERM and started under a new name on the same store dir: its old name's
    /// peer is stale (no server will ever carry that name again) until it is peer-removed.
    Renamed,
    /// Stopped (SIGTERM when `graceful`, else SIGKILL), peer-removed, then started again under
    /// its name: it comes back (nats-server 2.15 keeps it out of the group; the soak then
    /// renames it so that it joins again).
    Removed {
        /// Stopped with SIGTERM.
        graceful: bool,
    },
}

impl Harm {
    /// It announced its stop (a SHUTDOWN event): the only harms a "shut down" reason fits.
    fn announced(self) -> bool {
        matches!(
            self,
            Harm::Stopped | Harm::Renamed | Harm::Removed { graceful: true }
        )
    }

    /// A server under this name runs again after the fault: it must never be called a stale
    /// peer, nor a peer-remove advised for it.
    fn returns(self) -> bool {
        self != Harm::Renamed
    }
}

/// A server a fault harmed, and how.
#[derive(Debug, Clone)]
struct Victim {
    name: String,
    harm: Harm,
    /// Its META_001 must be raised (a server restarted at once may be back before the
    /// monitors can tell it was gone: raised or not, its diagnosis is graded).
    expected: bool,
}

/// One fault as it happened.
#[derive(Debug, Clone)]
struct Window {
    label: String,
    /// The servers whose META_001 must be raised, and what was done to each.
    victims: Vec<Victim>,
    /// Names that joined the meta group in this fault (a renamed server's new name).
    joined: Vec<String>,
    /// The group's membership changed (META_102 must be raised; META_103 may be).
    membership: bool,
    /// At some point fewer members were running, unpaused and connected than the group's
    /// quorum: the only time META_006 (quorum lost) fits.
    quorum_lost: bool,
    /// The fault touched the meta leader (leader changes and disagreements are expected).
    leader: bool,
    start: SystemTime,
    end: SystemTime,
}

impl Window {
    fn victim(&self, name: &str) -> Option<&Victim> {
        self.victims.iter().find(|v| v.name == name)
    }
}

/// When the victims of `windows[i]` may still be catching up (META_101): the end of that fault,
/// or, when the faults that follow it at once stop or move the meta leader, the end of the last
/// of them. A server restarted in one fault cannot catch up while the next one has paused the
/// leader it follows (seed 2098098536: behind for the 10 s the next fault held the leader).
fn catch_up_end(windows: &[Window], i: usize) -> SystemTime {
    let mut end = windows[i].end;
    for next in &windows[i + 1..] {
        if next.start > end + SLACK || !next.leader {
            break;
        }
        end = next.end;
    }
    end
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Term,
    Kill,
    Pause,
    Partition,
    StepDown,
    RestartMonitor,
    Rename,
    Removal,
    PauseAndKill,
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
        let size_change_hold = format!("{}s", SIZE_CHANGE_HOLD.as_secs());
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
                "--size-change-hold",
                &size_change_hold,
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

/// Removes the peer `name` from the meta group, waiting for a leader first (only the leader
/// answers) and trying again while the group elects one.
async fn remove_peer(cluster: &Cluster, name: &str) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..5 {
        cluster
            .wait_for_leader(Duration::from_secs(40))
            .await
            .map_err(|e| format!("before peer-removing {name}: {e}"))?;
        match cluster.remove_peer(name).await {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Err(format!("peer-removing {name}: {last}"))
}

/// Adds every member's peer hash and name any server reports (`meta_cluster.replicas`, and
/// the leader's own `peer`) to `peers`. Hashes are derived from names, so a hash once learnt
/// stays true.
async fn learn_peers(cluster: &Cluster, peers: &mut BTreeMap<String, String>) {
    for envelope in cluster.jsz_all().await.unwrap_or_default() {
        let meta = &envelope["data"]["meta_cluster"];
        let replicas = meta["replicas"].as_array().into_iter().flatten();
        let leader = std::iter::once((&meta["leader"], &meta["peer"]));
        for (name, peer) in replicas.map(|r| (&r["name"], &r["peer"])).chain(leader) {
            if let (Some(name), Some(peer)) = (name.as_str(), peer.as_str()) {
                if !name.is_empty() && !peer.is_empty() && !name.contains(' ') {
                    peers.insert(peer.to_string(), name.to_string());
                }
            }
        }
    }
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
                // META_003 lasts its window, and a held finding (`held_note`) is no sign the
                // group is still unsettled.
                let quiet = status["findings"].as_array().is_some_and(|f| {
                    f.iter().all(|x| {
                        x["check"] == "META_003"
                            || held_note(x["finding"].as_str().unwrap_or_default())
                    })
                });
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
    // Every peer hash the group has had, with its server name: the peer-remove commands of the
    // findings name members by either.
    let mut peers = BTreeMap::new();
    learn_peers(&cluster, &mut peers).await;
    // The original names: a renamed server's next name is its original one with a number.
    let origins: Vec<String> = (0..cluster.size())
        .map(|i| cluster.server_name(i))
        .collect();
    let mut renames = 0usize;
    let deadline = Instant::now() + options.duration;
    while Instant::now() < deadline {
        check_alive(&mut instances, &mut report, &observer, &mut known).await?;
        // Membership changes take longest (two restarts, the size-change hold): rarer.
        let fault = match rng.u8(0..16) {
            0..=1 => Fault::Term,
            2..=3 => Fault::Kill,
            4..=5 => Fault::Pause,
            6..=7 => Fault::Partition,
            8..=9 => Fault::StepDown,
            10..=11 => Fault::RestartMonitor,
            12 => Fault::Rename,
            13 => Fault::Removal,
            _ => Fault::PauseAndKill,
        };
        let node = rng.usize(0..cluster.size());
        let name = cluster.server_name(node);
        let leader = cluster.meta_leader().await;
        let is_leader = leader.as_deref() == Some(name.as_str());
        let hold = Duration::from_millis(rng.u64(5_000..9_000));
        let start = SystemTime::now();
        let victim = |harm| {
            vec![Victim {
                name: name.clone(),
                harm,
                expected: true,
            }]
        };
        let mut joined = Vec::new();
        let (label, victims, touches_leader) = match fault {
            Fault::Term | Fault::Kill => {
                let (how, signal, harm) = match fault {
                    Fault::Term => (Stop::Term, "SIGTERM", Harm::Stopped),
                    _ => (Stop::Kill, "SIGKILL", Harm::Crashed),
                };
                // One crash in three is restarted at once, as a supervisor does: the case once
                // misdiagnosed as a probable stale peer (the leader lists the restarted server
                // without a name until it has heard of it again).
                let at_once = matches!(fault, Fault::Kill) && rng.u8(0..3) == 0;
                cluster.stop(node, how).await.map_err(|e| e.to_string())?;
                if !at_once {
                    tokio::time::sleep(hold).await;
                }
                cluster.restart(node).await.map_err(|e| e.to_string())?;
                let mut victims = victim(harm);
                victims[0].expected = !at_once;
                let label = if at_once {
                    format!("{signal} {name}, restarted at once")
                } else {
                    format!("{signal} {name}")
                };
                (label, victims, is_leader)
            }
            Fault::Pause => {
                cluster.pause(node).map_err(|e| e.to_string())?;
                tokio::time::sleep(hold).await;
                cluster.resume(node).map_err(|e| e.to_string())?;
                (
                    format!("SIGSTOP {name} for {:.1} s", hold.as_secs_f64()),
                    victim(Harm::Paused),
                    is_leader,
                )
            }
            Fault::Partition => {
                cluster.partition(node).map_err(|e| e.to_string())?;
                tokio::time::sleep(hold + Duration::from_secs(6)).await;
                cluster.heal(node).map_err(|e| e.to_string())?;
                (
                    format!("partition {name}"),
                    victim(Harm::Partitioned),
                    is_leader,
                )
            }
            Fault::StepDown => {
                cluster.step_down().await.map_err(|e| e.to_string())?;
                ("meta leader step-down".to_string(), Vec::new(), true)
            }
            Fault::Rename => {
                // As an operator renames a server: stopped, started under a new name on the
                // same store dir (it joins as a new peer, its old name's peer stays counted),
                // then the old peer removed, which restores the group's size. First the old
                // name's peer hash, for the peer-remove commands naming it.
                learn_peers(&cluster, &mut peers).await;
                renames += 1;
                let new = format!("{}-{renames}", origins[node]);
                cluster
                    .stop(node, Stop::Term)
                    .await
                    .map_err(|e| e.to_string())?;
                cluster
                    .rename(node, &new)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::time::sleep(hold).await;
                remove_peer(&cluster, &name).await?;
                tokio::time::sleep(MEMBERSHIP_SEEN).await;
                joined.push(new.clone());
                (
                    format!("rename {name} to {new}, then peer-remove {name}"),
                    victim(Harm::Renamed),
                    is_leader,
                )
            }
            Fault::Removal => {
                // A stopped server peer-removed, then started again under its name: nats-server
                // 2.15 keeps it out of the group (it follows the leader without being a
                // member). The soak then renames it, and it joins as a new peer.
                let graceful = rng.bool();
                learn_peers(&cluster, &mut peers).await;
                let (how, signal) = if graceful {
                    (Stop::Term, "SIGTERM")
                } else {
                    (Stop::Kill, "SIGKILL")
                };
                cluster.stop(node, how).await.map_err(|e| e.to_string())?;
                tokio::time::sleep(hold).await;
                remove_peer(&cluster, &name).await?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                cluster.restart(node).await.map_err(|e| e.to_string())?;
                tokio::time::sleep(hold).await;
                renames += 1;
                let new = format!("{}-{renames}", origins[node]);
                cluster
                    .stop(node, Stop::Term)
                    .await
                    .map_err(|e| e.to_string())?;
                cluster
                    .rename(node, &new)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::time::sleep(MEMBERSHIP_SEEN).await;
                joined.push(new.clone());
                (
                    format!(
                        "{signal} {name}, peer-remove {name}, {name} back (outside the group), then renamed {new} to join again"
                    ),
                    victim(Harm::Removed { graceful }),
                    is_leader,
                )
            }
            Fault::PauseAndKill => {
                // Jepsen's split-brain schedule: the leader paused, another member killed
                // while it is, the killed one restarted, then the leader resumed. Two of five
                // down: the other three keep quorum.
                let paused = leader
                    .as_deref()
                    .and_then(|l| cluster.index_of(l))
                    .unwrap_or(node);
                let killed = (paused + 1 + rng.usize(0..cluster.size() - 1)) % cluster.size();
                let (paused_name, killed_name) =
                    (cluster.server_name(paused), cluster.server_name(killed));
                cluster.pause(paused).map_err(|e| e.to_string())?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                cluster
                    .stop(killed, Stop::Kill)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::time::sleep(hold).await;
                cluster.restart(killed).await.map_err(|e| e.to_string())?;
                cluster.resume(paused).map_err(|e| e.to_string())?;
                (
                    format!(
                        "SIGSTOP {paused_name} (meta leader), SIGKILL {killed_name}, {killed_name} restarted, SIGCONT {paused_name}"
                    ),
                    vec![
                        Victim {
                            name: paused_name,
                            harm: Harm::Paused,
                            expected: true,
                        },
                        Victim {
                            name: killed_name,
                            harm: Harm::Crashed,
                            expected: true,
                        },
                    ],
                    true,
                )
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
                (label, Vec::new(), false)
            }
        };
        let membership = matches!(fault, Fault::Rename | Fault::Removal);
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
        if membership {
            learn_peers(&cluster, &mut peers).await;
        }
        // One fault at a time takes at most two of five members away (a rename's stale peer
        // in a group of six counts as one): quorum is never lost by the schedule.
        let size = if membership { 6 } else { 5 };
        let quorum_lost = size - victims.len() < size / 2 + 1;
        windows.push(Window {
            label,
            victims,
            joined,
            membership,
            quorum_lost,
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
    report.instances = instances.iter().map(|i| i.report.clone()).collect();
    let publishers = Publishers::of(&report.instances);
    judge(&mut report, &windows, &received, &elections, &publishers);
    grade(&mut report, &windows, &received, &peers, &publishers);
    if let Ok(Ok(msg)) = final_status {
        if let Ok(status) = serde_json::from_slice::<serde_json::Value>(&msg.payload) {
            for f in status["findings"].as_array().into_iter().flatten() {
                let key = f["finding"].as_str().unwrap_or_default().to_string();
                if !report.unresolved.contains(&key) && !held_note(&key) {
                    report
                        .unresolved
                        .push(format!("{key} (still active in STATUS)"));
                }
            }
        }
    }
    drop(instances);
    drop(cluster);
    dir.keep = !report.ok();
    Ok(report)
}

/// The publishers' clocks, to date each event on the real clock by when its transition was
/// decided rather than when it arrived. A transition can arrive seconds after it was decided by
/// design: an instance publishes one its peer did not only after its grace, and a publish through
/// a server that stops is sent again only after its confirmation wait. Graded on its arrival, a
/// finding decided during a fault can then land past the fault's slack (seed 840205486: a
/// META_102 decided 2.4 s before its membership fault ended, published by the follower after its
/// 3 s grace through a server paused by the next fault, arrived 2.6 s after the end).
#[derive(Debug, Clone, Default)]
struct Publishers {
    /// Each monitor process's clock offset in milliseconds, by the last four characters of its
    /// instance id; a tail two processes with different offsets share is left out.
    offsets: BTreeMap<String, Option<i64>>,
    /// The longest delivery the product's own timers allow: a later arrival is graded on its
    /// arrival (a transition held back longer than that is late, whatever it says).
    lag: Duration,
}

impl Publishers {
    /// The soak's monitors: their processes' ids and clock offsets, and the product's timers.
    fn of(instances: &[InstanceReport]) -> Publishers {
        let mut offsets: BTreeMap<String, Option<i64>> = BTreeMap::new();
        for instance in instances {
            let offset = instance.offset.map_or(0, |o| o.0);
            for id in &instance.ids {
                offsets
                    .entry(id.clone())
                    .and_modify(|known| {
                        if *known != Some(offset) {
                            *known = None;
                        }
                    })
                    .or_insert(Some(offset));
            }
        }
        let timing = nats_insights::timing::Timing::default();
        let turns = u32::try_from(instances.len().saturating_sub(1)).unwrap_or(u32::MAX);
        Publishers {
            offsets,
            lag: timing.ha.grace * turns + timing.publish_confirm * timing.delivery_attempts,
        }
    }

    /// When `event`, received at `receipt`, was decided on the real clock: its timestamp moved
    /// by its publisher's offset, if its publisher is known, the timestamp parses, and the
    /// delivery took between nothing and `lag`; otherwise `receipt`.
    fn decided(&self, receipt: SystemTime, event: &FindingEvent) -> SystemTime {
        let Some(Some(offset)) = self.offsets.get(&tail(&event.instance)) else {
            return receipt;
        };
        let Ok(stamped) = humantime::parse_rfc3339_weak(&event.timestamp) else {
            return receipt;
        };
        let shift = Duration::from_millis(offset.unsigned_abs());
        let real = if *offset >= 0 {
            stamped.checked_sub(shift)
        } else {
            stamped.checked_add(shift)
        };
        match real {
            Some(real) if receipt.duration_since(real).is_ok_and(|d| d <= self.lag) => real,
            _ => receipt,
        }
    }
}

/// Compares the events received with the faults injected.
fn judge(
    report: &mut SoakReport,
    windows: &[Window],
    received: &[Receipt],
    elections: &[SystemTime],
    publishers: &Publishers,
) {
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
        if open && !held_note(key) {
            report.unresolved.push(key.to_string());
        }
    }
    // Each fault must raise each victim's META_001 within its window, and a membership
    // change META_102.
    for w in windows {
        let raised_in = |check: &str, server: Option<&str>| {
            episodes.iter().any(|(e, at)| {
                e.check.as_str() == check
                    && (server.is_none() || e.server.as_deref() == server)
                    && *at + SLACK >= w.start
                    && *at <= w.end
            })
        };
        for victim in w.victims.iter().filter(|v| v.expected) {
            report.expected += 1;
            if !raised_in("META_001", Some(&victim.name)) {
                report
                    .missed
                    .push(format!("{}: no META_001 for {}", w.label, victim.name));
            }
        }
        if w.membership {
            report.expected += 1;
            if !raised_in("META_102", None) {
                report
                    .missed
                    .push(format!("{}: no META_102 (size changed)", w.label));
            }
        }
    }
    // Each finding raised must be explained by a fault going on at the time.
    for (e, received_at) in &episodes {
        // Explained by what was going on when it was decided (see `Publishers`).
        let at = publishers.decided(*received_at, e);
        if received_at.duration_since(at).is_ok_and(|d| d > SLACK) {
            report.late.push(format!(
                "{} {} ev:{} from i:{}: decided {}, arrived {}",
                e.finding,
                e.event.as_str(),
                tail(&e.id),
                tail(&e.instance),
                clock(at),
                clock(*received_at)
            ));
        }
        // Flapping is judged against the elections the servers announced: a paused or
        // partitioned follower that comes back can win an election too, so "the fault touched
        // the leader" is not the whole truth. More than `FLAP_MAX` within the window is real.
        if e.check.as_str() == "META_003" {
            let from = at
                .checked_sub(FLAP_WINDOW + SLACK)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let count = elections
                .iter()
                .filter(|t| **t >= from && **t <= at + SLACK)
                .count();
            if count > FLAP_MAX {
                continue;
            }
        }
        // A restart is noted when the restarted server first answers, after its JetStream
        // recovery: seconds after the fault that restarted it ended.
        let after = match e.check.as_str() {
            "SERVER_101" | "SERVER_008" => RESTART_NOTED_WITHIN,
            _ => SLACK,
        };
        let explained = windows.iter().enumerate().any(|(i, w)| {
            let end = match e.check.as_str() {
                "META_101" => catch_up_end(windows, i),
                _ => w.end,
            };
            let during = at + SLACK >= w.start && at <= end + after;
            let server = e.server.as_deref().unwrap_or_default();
            during
                && match e.check.as_str() {
                    "META_001" => w.victim(server).is_some(),
                    "META_003" => false,
                    // A cut-off server soon reports no leader while the others report one; a
                    // stopped one wakes with a stale leader; a restarted one knows no leader
                    // until it catches up: a disagreement by definition, whichever server it was.
                    "META_002" => w.leader || !w.victims.is_empty(),
                    // An election after a fault can leave the group without a leader for longer
                    // than --offline-after (a paused or cut-off follower that comes back can
                    // force one too): a real loss of the meta leader, however brief. It is
                    // leaderless with quorum (META_106); META_006 (quorum lost) is explained
                    // here too, so that it counts once: as a wrong diagnosis unless quorum was
                    // lost (see `grade`).
                    "META_006" | "META_106" => {
                        w.leader
                            || (!w.victims.is_empty()
                                && elections
                                    .iter()
                                    .any(|t| *t + SLACK >= w.start && *t <= w.end + SLACK))
                    }
                    // A server back from a fault, or joining under a new name, catches up.
                    "META_101" => {
                        w.victim(server).is_some() || w.joined.iter().any(|n| n == server)
                    }
                    // The size changed, and may be even until the fault ends.
                    "META_102" | "META_103" => w.membership,
                    // The checks on the sources beyond JSZ (docs/new-sources.md): a victim
                    // restarted or is catching up (a renamed one under its new name); any member
                    // may lose its meta leader (health) when the fault touches the leader or a
                    // victim; a cut route has two ends.
                    "SERVER_101" | "SERVER_008" | "META_110" => {
                        w.victim(server).is_some() || w.joined.iter().any(|n| n == server)
                    }
                    "SERVER_014" => w.leader || !w.victims.is_empty(),
                    "CLUSTER_005" => !w.victims.is_empty(),
                    _ => false,
                }
        });
        if !explained {
            // A known check weakness, named so it can be told apart: in the first poll after
            // an election the new leader's `active` for a follower can still be the silence it
            // saw before it led.
            let after_election = elections
                .iter()
                .any(|t| *t <= at && *t + Duration::from_secs(2) >= at);
            report.false_findings.push(format!(
                "{} {} at {}{}",
                e.check,
                e.finding,
                nats_insights::time_format::rfc3339(at),
                if after_election && e.check.as_str() == "META_001" {
                    " (just after a meta leader election)"
                } else {
                    ""
                }
            ));
        }
    }
}

/// Grades every diagnosis: each RAISED and UPDATED event (its text can change within an
/// episode) against the faults going on when it was received, for the server or group it
/// names. Wrong:
/// - a server called a (probable) stale peer that is not the old name of a renamed server: a
///   server that comes back under its name is never stale;
/// - a peer-remove command for any server but the old name of a renamed one (by name or by
///   peer hash), or for a peer hash the group never had;
/// - META_006 (quorum lost) while a quorum of the members was running, unpaused and
///   connected (a leaderless group with quorum is META_106);
/// - META_001 giving an announced shutdown as a reason, or "stopped on purpose" as remedy, for
///   a server that was killed, paused or cut off, or missing it when raised for a server that
///   was stopped with SIGTERM and nothing else (unless an UPDATED with it follows within 2 s).
fn grade(
    report: &mut SoakReport,
    windows: &[Window],
    received: &[Receipt],
    peers: &BTreeMap<String, String>,
    publishers: &Publishers,
) {
    // Old names of renamed servers, from the start of their rename: the only stale peers.
    let retired: Vec<(&str, SystemTime)> = windows
        .iter()
        .flat_map(|w| {
            w.victims
                .iter()
                .filter(|v| !v.harm.returns())
                .map(|v| (v.name.as_str(), w.start))
        })
        .collect();
    let names: BTreeSet<&str> = windows
        .iter()
        .flat_map(|w| {
            w.victims
                .iter()
                .map(|v| v.name.as_str())
                .chain(w.joined.iter().map(String::as_str))
        })
        .chain(peers.values().map(String::as_str))
        .collect();
    let mut seen = BTreeSet::new();
    for r in received {
        let e = &r.event;
        if e.event == TransitionKind::Resolved || !seen.insert(e.id.as_str()) {
            continue;
        }
        let at = publishers.decided(r.at, e);
        let during: Vec<&Window> = windows
            .iter()
            .filter(|w| at + SLACK >= w.start && at <= w.end + SLACK)
            .collect();
        let is_retired = |name: &str| {
            retired
                .iter()
                .any(|(n, since)| *n == name && at + SLACK >= *since)
        };
        let mut wrong = Vec::new();
        for name in stale_named(e) {
            if !is_retired(&name) {
                wrong.push(format!(
                    "calls {name} a stale peer, but {name} is no renamed server's old name"
                ));
            }
        }
        for target in peer_remove_targets(e) {
            if target.starts_with('<') {
                continue; // a placeholder: the operator picks the peer
            }
            let name = peers
                .get(&target)
                .map(String::as_str)
                .or_else(|| names.contains(target.as_str()).then_some(target.as_str()));
            match name {
                Some(name) if is_retired(name) => {}
                Some(name) => wrong.push(format!(
                    "advises peer-remove {target} ({name}), a server that comes back"
                )),
                None => wrong.push(format!(
                    "advises peer-remove {target}, a peer the group never had"
                )),
            }
        }
        if e.check.as_str() == "META_006" && !during.iter().any(|w| w.quorum_lost) {
            wrong.push(
                "quorum lost (META_006) while a quorum of the members ran, unpaused and connected"
                    .to_string(),
            );
        }
        if e.check.as_str() == "META_001" {
            let server = e.server.as_deref().unwrap_or_default();
            let harms: Vec<Harm> = during
                .iter()
                .filter_map(|w| w.victim(server))
                .map(|v| v.harm)
                .collect();
            let reasons = reasons_of(e);
            let announced = reasons.iter().any(|r| r == "departed");
            let on_purpose = e
                .remediation
                .iter()
                .any(|r| r.step.contains("stopped on purpose"));
            if !harms.is_empty() {
                if (announced || on_purpose) && !harms.iter().any(|h| h.announced()) {
                    wrong.push(format!(
                        "gives a graceful stop ({}) for a server {}",
                        if announced {
                            "an announced shutdown"
                        } else {
                            "\"stopped on purpose\""
                        },
                        harms
                            .iter()
                            .map(|h| harm_words(*h))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ));
                }
                // The shutdown event can be processed just after the poll that raised the
                // finding: its UPDATED, with the announced shutdown, must follow at once.
                let corrected = received.iter().any(|o| {
                    o.event.finding == e.finding
                        && o.event.episode == e.episode
                        && o.event.event == TransitionKind::Updated
                        && o.at <= at + SLACK
                        && reasons_of(&o.event).iter().any(|r| r == "departed")
                });
                if e.event == TransitionKind::Raised
                    && !announced
                    && !corrected
                    && harms.iter().all(|h| *h == Harm::Stopped)
                {
                    wrong.push(format!(
                        "raised for a server stopped with SIGTERM without its announced shutdown (reasons: {})",
                        reasons.join(", ")
                    ));
                }
            }
        }
        if wrong.is_empty() {
            continue;
        }
        let faults: Vec<&str> = during.iter().map(|w| w.label.as_str()).collect();
        report.wrong.push(format!(
            "{} {} {} at {} during [{}]: {}. It said: {} Remedies: {}",
            e.check,
            e.finding,
            e.event.as_str(),
            nats_insights::time_format::rfc3339(at),
            if faults.is_empty() {
                "no fault".to_string()
            } else {
                faults.join("; ")
            },
            wrong.join("; "),
            e.summary,
            e.remediation
                .iter()
                .map(|r| match &r.command {
                    Some(c) => format!("{} `{c}`", r.step),
                    None => r.step.clone(),
                })
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
}

/// Words for what a fault did.
fn harm_words(harm: Harm) -> &'static str {
    match harm {
        Harm::Stopped => "stopped with SIGTERM",
        Harm::Crashed => "killed with SIGKILL",
        Harm::Paused => "paused with SIGSTOP",
        Harm::Partitioned => "cut off by a partition",
        Harm::Renamed => "renamed",
        Harm::Removed { graceful: true } => "stopped with SIGTERM and peer-removed",
        Harm::Removed { graceful: false } => "killed with SIGKILL and peer-removed",
    }
}

/// The servers a finding calls stale peers: META_001's `stale_peer` (or its summary's
/// words), META_006's `stale_peers`, META_102's `stale`.
fn stale_named(e: &FindingEvent) -> Vec<String> {
    let mut names = Vec::new();
    if e.check.as_str() == "META_001"
        && (e.evidence["stale_peer"].as_bool() == Some(true) || e.summary.contains("stale peer"))
    {
        names.extend(e.server.clone());
    }
    for list in [&e.evidence["stale_peers"], &e.evidence["stale"]] {
        for item in list.as_array().into_iter().flatten() {
            let name = item.as_str().or_else(|| item["name"].as_str());
            names.extend(name.map(str::to_string));
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The targets of a finding's peer-remove commands (a name or a peer hash, unquoted).
fn peer_remove_targets(e: &FindingEvent) -> Vec<String> {
    e.remediation
        .iter()
        .filter_map(|r| r.command.as_deref())
        .filter_map(|c| c.split_once("peer-remove").map(|(_, rest)| rest))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_matches(|c| c == '\'' || c == '"')
                .to_string()
        })
        .collect()
}

/// META_001's reasons, as named in its evidence (`departed`, `silent`, ...).
fn reasons_of(e: &FindingEvent) -> Vec<String> {
    e.evidence["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["reason"].as_str().map(str::to_string))
        .collect()
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

/// How long after a fault that restarted a server its SERVER_101 (or SERVER_008) may be raised:
/// the restart is told when the new process first answers a poll, after its recovery.
const RESTART_NOTED_WITHIN: Duration = Duration::from_secs(15);

/// A finding held for a fixed time after the events it counts rather than a condition that
/// clears when the fault ends: SERVER_101 (a server restarted) stays raised for five minutes,
/// SERVER_008 (a crash loop: three restarts in ten minutes, which a soak that restarts a server
/// every minute or two causes for real) until its restarts age out of the ten minutes. One still
/// open when the soak ends is not unresolved, and one open is no sign a fault has not settled.
fn held_note(key: &str) -> bool {
    matches!(key.split('/').next(), Some("SERVER_101" | "SERVER_008"))
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
        window_of("SIGKILL n2", "n2", Harm::Crashed)
    }

    /// `judge` of `received` against `windows` with no elections.
    fn judged(windows: &[Window], received: &[Receipt], publishers: &Publishers) -> SoakReport {
        let mut report = SoakReport::default();
        judge(&mut report, windows, received, &[], publishers);
        report
    }

    fn window_of(label: &str, victim: &str, harm: Harm) -> Window {
        Window {
            label: label.to_string(),
            victims: vec![Victim {
                name: victim.to_string(),
                harm,
                expected: true,
            }],
            joined: Vec::new(),
            membership: harm == Harm::Renamed,
            quorum_lost: false,
            leader: false,
            start: at(0),
            end: at(20),
        }
    }

    /// A RAISED event of `check` for `server` with `evidence` and `remediation` as given.
    fn finding(
        id: &str,
        check: &str,
        server: Option<&str>,
        evidence: serde_json::Value,
        remediation: serde_json::Value,
    ) -> FindingEvent {
        let mut value = serde_json::to_value(event(id, "raised", 1)).expect("json");
        value["check"] = check.into();
        value["finding"] = format!("{check}/default/{}", server.unwrap_or("group")).into();
        value["server"] = server.map_or(serde_json::Value::Null, Into::into);
        value["summary"] = format!("{check} text").into();
        value["evidence"] = evidence;
        value["remediation"] = remediation;
        serde_json::from_value(value).expect("a finding event")
    }

    fn graded(window: &Window, event: &FindingEvent) -> Vec<String> {
        let windows = std::slice::from_ref(window);
        let received = [receipt(0, 2, event)];
        let peers = BTreeMap::from([
            ("PEERn2".to_string(), "n2".to_string()),
            ("PEERn3".to_string(), "n3".to_string()),
        ]);
        let mut report = SoakReport::default();
        grade(
            &mut report,
            windows,
            &received,
            &peers,
            &Publishers::default(),
        );
        report.wrong
    }

    #[test]
    fn a_victim_catches_up_until_the_faults_that_stop_the_leader_right_after_it_end() {
        let restart = window_of("SIGKILL n1, restarted", "n1", Harm::Crashed);
        let mut leader_paused = window_of("SIGSTOP n5 (meta leader)", "n5", Harm::Paused);
        leader_paused.leader = true;
        (leader_paused.start, leader_paused.end) = (at(20), at(32));
        let mut later = window_of("SIGKILL n3", "n3", Harm::Crashed);
        (later.start, later.end) = (at(32), at(40));
        let windows = [restart, leader_paused, later];
        assert_eq!(catch_up_end(&windows, 0), at(32));
        assert_eq!(catch_up_end(&windows, 1), at(32));
        assert_eq!(catch_up_end(&windows, 2), at(40));
        // A fault that does not touch the leader ends the catch-up at its own end.
        let mut windows = windows;
        windows[1].leader = false;
        assert_eq!(catch_up_end(&windows, 0), at(20));
    }

    #[test]
    fn a_crashed_server_diagnosed_as_stopped_on_purpose_is_wrong() {
        let crash = window_of("SIGKILL n2", "n2", Harm::Crashed);
        let stop = window_of("SIGTERM n2", "n2", Harm::Stopped);
        let announced = finding(
            "a",
            "META_001",
            Some("n2"),
            serde_json::json!({"reasons": [{"reason": "departed", "kind": "shutdown"}]}),
            serde_json::json!([{"step": "n2 was stopped on purpose; ..."}]),
        );
        let unheard = finding(
            "b",
            "META_001",
            Some("n2"),
            serde_json::json!({"reasons": [{"reason": "silent", "active": 4000}]}),
            serde_json::json!([{"step": "Check whether the nats-server process on n2 is running"}]),
        );
        let wrong = graded(&crash, &announced);
        assert_eq!(wrong.len(), 1, "{wrong:#?}");
        assert!(wrong[0].contains("killed with SIGKILL"), "{wrong:#?}");
        assert!(
            wrong[0].contains("SIGKILL n2"),
            "names the fault: {wrong:#?}"
        );
        assert!(graded(&crash, &unheard).is_empty());
        assert!(graded(&stop, &announced).is_empty());
        // A plain SIGTERM must be diagnosed from its announced shutdown...
        let wrong = graded(&stop, &unheard);
        assert!(
            wrong[0].contains("without its announced shutdown"),
            "{wrong:#?}"
        );
        // ... or corrected at once when the shutdown event comes just after the poll.
        let mut corrected = serde_json::to_value(&announced).expect("json");
        corrected["id"] = "c".into();
        corrected["event"] = "updated".into();
        let corrected: FindingEvent = serde_json::from_value(corrected).expect("event");
        let received = [receipt(0, 2, &unheard), receipt(0, 3, &corrected)];
        let mut report = SoakReport::default();
        grade(
            &mut report,
            &[stop],
            &received,
            &BTreeMap::new(),
            &Publishers::default(),
        );
        assert!(report.wrong.is_empty(), "{:#?}", report.wrong);
    }

    #[test]
    fn a_returning_server_called_stale_or_to_be_removed_is_wrong_a_renamed_one_is_not() {
        let stale_n2 = finding(
            "a",
            "META_001",
            Some("n2"),
            serde_json::json!({"stale_peer": true, "reasons": [{"reason": "offline_flag"}]}),
            serde_json::json!([{"step": "Remove the stale peer", "command": "nats server cluster peer-remove PEERn2"}]),
        );
        let wrong = graded(&window(), &stale_n2);
        assert_eq!(wrong.len(), 1, "{wrong:#?}");
        assert!(wrong[0].contains("calls n2 a stale peer"), "{wrong:#?}");
        assert!(wrong[0].contains("peer-remove PEERn2 (n2)"), "{wrong:#?}");
        let renamed = window_of("rename n2 to n2-1", "n2", Harm::Renamed);
        assert!(graded(&renamed, &stale_n2).is_empty());
        // META_102 naming the renamed server's old peer is right; a returning one's is not.
        let grown = |target: &str| {
            finding(
                "b",
                "META_102",
                None,
                serde_json::json!({"stale": [{"name": "n2", "peer": "PEERn2"}]}),
                serde_json::json!([{"step": "remove", "command": format!("nats server cluster peer-remove '{target}'")}]),
            )
        };
        assert!(graded(&renamed, &grown("PEERn2")).is_empty());
        let wrong = graded(&renamed, &grown("n3"));
        assert!(
            wrong[0].contains("(n3), a server that comes back"),
            "{wrong:#?}"
        );
        assert!(graded(&renamed, &grown("<peer id>")).is_empty());
    }

    #[test]
    fn quorum_lost_with_a_quorum_running_is_wrong() {
        let lost = finding(
            "a",
            "META_006",
            None,
            serde_json::json!({}),
            serde_json::json!([{"step": "Do not peer-remove members that can come back"}]),
        );
        let wrong = graded(&window(), &lost);
        assert!(wrong[0].contains("quorum lost (META_006)"), "{wrong:#?}");
        let mut gone = window();
        gone.quorum_lost = true;
        assert!(graded(&gone, &lost).is_empty());
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
        let report = judged(&[window()], &received, &Publishers::default());
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
        let report = judged(&[window()], &received, &Publishers::default());
        assert_eq!(report.duplicated.len(), 2, "{:#?}", report.duplicated);
        assert!(report.duplicated[0].contains("RAISED with a second event id"));
        assert!(report.duplicated[1].contains("RESOLVED with a second event id"));
        assert!(report.repeated.is_empty());
        assert!(!report.ok());
    }

    #[test]
    fn a_late_arrival_is_judged_by_when_its_publisher_decided_it() {
        // A size change decided 2 s before its membership fault ended, by an instance whose
        // clock is 1.5 s ahead, that arrived 4 s after the end (a follower's grace, then a
        // publish through a paused server): explained. Arriving later than the product's
        // timers allow, or from an unknown publisher, it is judged by its arrival.
        let mut rename = window_of(
            "rename n3 to n3-1, then peer-remove n3",
            "n3",
            Harm::Renamed,
        );
        rename.end = at(20);
        let mut value = serde_json::to_value(finding(
            "aaaa",
            "META_102",
            None,
            serde_json::json!({}),
            serde_json::json!([]),
        ))
        .expect("json");
        value["timestamp"] =
            nats_insights::time_format::rfc3339(at(18) + Duration::from_millis(1_500)).into();
        value["instance"] = "instance-Au2E".into();
        let decided: FindingEvent = serde_json::from_value(value).expect("a finding event");
        let resolved = event("bbbb", "resolved", 2);
        let mut resolved_value = serde_json::to_value(&resolved).expect("json");
        resolved_value["finding"] = decided.finding.clone().into();
        resolved_value["check"] = "META_102".into();
        let resolved: FindingEvent =
            serde_json::from_value(resolved_value).expect("a finding event");
        let publisher = InstanceReport {
            index: 1,
            offset: Some(ClockOffset(1_500)),
            ids: vec!["Au2E".to_string()],
            terms: 0,
            kills: 0,
            log: PathBuf::new(),
        };
        let publishers = Publishers::of(&[
            InstanceReport {
                index: 0,
                offset: None,
                ids: vec!["ZZWA".to_string()],
                ..publisher.clone()
            },
            publisher,
        ]);
        assert_eq!(publishers.decided(at(24), &decided), at(18));
        let arriving = |secs: u64, publishers: &Publishers| {
            let received = [receipt(0, secs, &decided), receipt(0, 30, &resolved)];
            judged(std::slice::from_ref(&rename), &received, publishers)
        };
        let report = arriving(24, &publishers);
        assert!(report.false_findings.is_empty(), "{report:#?}");
        assert_eq!(report.late.len(), 1, "{:?}", report.late);
        assert!(report.late[0].contains("from i:Au2E"), "{:?}", report.late);
        let by_arrival = arriving(24, &Publishers::default());
        assert_eq!(by_arrival.false_findings.len(), 1, "judged by its arrival");
        let too_late = arriving(18 + 12, &publishers);
        assert_eq!(
            too_late.false_findings.len(),
            1,
            "later than the timers allow"
        );
    }
}
