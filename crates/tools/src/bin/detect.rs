//! Time-to-detect benchmark (`scripts/bench`): real nats-server clusters on this machine, the
//! monitor in-process with `EngineConfig::default()`, each fault repeated `BENCH_ROUNDS` times,
//! the server's own signal polled alongside; writes `BENCHMARKS.md`. Prints figures, never fails
//! on timing.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use nats_insights::connect::ConnectArgs;
use nats_insights::engine::{self, EngineConfig};
use nats_insights::findings::TransitionKind;
use nats_insights::publish::FindingEvent;
use nats_insights::service::Instance;
use nats_insights::watch;
use serde_json::Value;
use testbed::{Cluster, ClusterOptions, Stop, SYS_PASSWORD, SYS_USER};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use TransitionKind::{Raised, Resolved};

use nats_insights_tools::bench::{env_u64, loadavg, machine, other_processes, out_dir};

/// How often the server's own signals are polled.
const SIGNAL_POLL: Duration = Duration::from_millis(100);
/// Longest wait for a finding event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a fresh monitor gets to take its first polls before a fault.
const WARMUP: Duration = Duration::from_secs(3);
/// The detection medians of issue 17's run, by fault title, printed beside this run's: then a
/// crash was seen by the next poll only; since issue 18 a dropped pinned link calls for a poll.
const ISSUE_17_MEDIANS: &[(&str, Duration)] = &[
    ("graceful stop of a follower", Duration::from_millis(20)),
    ("SIGKILL of a follower", Duration::from_millis(1200)),
    ("SIGKILL of the leader", Duration::from_millis(1200)),
    ("two of three killed", Duration::from_millis(1200)),
    ("two forced step-downs", Duration::from_millis(30)),
    ("partition of the leader", Duration::from_millis(3530)),
];

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// The monitor, the finding events, the server's signals
// ---------------------------------------------------------------------------------------------

fn sys_connect(cluster: &Cluster, nodes: &[usize]) -> ConnectArgs {
    ConnectArgs {
        servers: nodes.iter().map(|i| cluster.client_url(*i)).collect(),
        user: Some(SYS_USER.to_string()),
        password: Some(SYS_PASSWORD.to_string()),
        ..ConnectArgs::default()
    }
}

fn all(cluster: &Cluster) -> Vec<usize> {
    (0..cluster.size()).collect()
}

/// nats-insights running in this process with the default settings.
struct Monitor {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<Result<(), engine::EngineError>>,
    /// Its main connection (which server it is attached to).
    main: async_nats::Client,
}

impl Monitor {
    async fn start(cluster: &Cluster) -> Monitor {
        let connections = sys_connect(cluster, &all(cluster))
            .open("nats-insights-bench")
            .await
            .expect("monitor connects");
        let main = connections.main.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(engine::run(
            connections,
            EngineConfig::default(),
            Instance {
                id: nuid::next().to_string(),
                started: SystemTime::now(),
            },
            async move {
                let _ = stopped.await;
            },
        ));
        Monitor { stop, handle, main }
    }

    /// The server its main connection is attached to.
    fn attached(&self) -> String {
        self.main.server_info().server_name
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.handle).await;
    }
}

/// Finding events stamped with the instant they arrived (a task receives them, so the stamp does
/// not depend on when the benchmark looks).
struct Events {
    rx: mpsc::UnboundedReceiver<(Instant, FindingEvent)>,
    seen: Vec<(Instant, FindingEvent)>,
    _client: async_nats::Client,
}

impl Events {
    async fn subscribe(cluster: &Cluster, nodes: &[usize]) -> Events {
        let client = sys_connect(cluster, nodes)
            .connect("nats-insights-bench-watch")
            .await
            .expect("watcher connects");
        let mut stream = watch::subscribe(&client).await.expect("subscribe");
        client.flush().await.expect("flush");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(received) = stream.next().await {
                match received {
                    Ok(event) => {
                        if tx.send((Instant::now(), event)).is_err() {
                            break;
                        }
                    }
                    Err(e) => eprintln!("   {e}"),
                }
            }
        });
        Events {
            rx,
            seen: Vec::new(),
            _client: client,
        }
    }

    /// Arrival of the first matching event at or after `after`.
    async fn wait(
        &mut self,
        kind: TransitionKind,
        check: &str,
        server: Option<&str>,
        after: Instant,
        timeout: Duration,
    ) -> Option<Instant> {
        let matches = |at: &Instant, e: &FindingEvent| {
            *at >= after
                && e.event == kind
                && e.check.as_str() == check
                && (server.is_none() || e.server.as_deref() == server)
        };
        if let Some((at, _)) = self.seen.iter().find(|(at, e)| matches(at, e)) {
            return Some(*at);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while let Ok(Some((at, event))) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            let hit = matches(&at, &event);
            self.seen.push((at, event));
            if hit {
                return Some(at);
            }
        }
        None
    }

    /// Collects whatever arrives for `duration`.
    async fn drain(&mut self, duration: Duration) {
        let deadline = tokio::time::Instant::now() + duration;
        while let Ok(Some(item)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            self.seen.push(item);
        }
    }

    /// Every RAISED event that arrived at or after `after`, one line each.
    fn raised_since(&self, after: Instant) -> Vec<String> {
        self.seen
            .iter()
            .filter(|(at, e)| *at >= after && e.event == Raised)
            .map(|(_, e)| format!("{} {}", e.check.as_str(), e.server.as_deref().unwrap_or("")))
            .collect()
    }
}

/// Stamps every message of a subscription with its arrival.
fn arrivals(mut sub: async_nats::Subscriber) -> mpsc::UnboundedReceiver<Instant> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while sub.next().await.is_some() {
            if tx.send(Instant::now()).is_err() {
                break;
            }
        }
    });
    rx
}

/// One of the server's own signals that a fault happened.
enum Probe {
    /// A server that reports itself meta leader lists `victim` with `offline: true` (JSZ).
    Offline {
        victim: String,
        views: Vec<async_nats::Client>,
    },
    /// One of these monitoring addresses answers `/healthz` with anything but `ok`.
    Healthz(Vec<String>),
    /// The JS API (`$JS.API.INFO`, APP account) answers with an error.
    JsRefuses(async_nats::Client),
}

impl Probe {
    async fn fired(&self) -> Option<&'static str> {
        match self {
            Probe::Offline { victim, views } => {
                for client in views {
                    if leader_lists_offline(client, victim).await {
                        return Some("JSZ offline");
                    }
                }
                None
            }
            Probe::Healthz(addrs) => {
                for addr in addrs {
                    if healthz_unavailable(addr).await {
                        return Some("/healthz");
                    }
                }
                None
            }
            Probe::JsRefuses(client) => {
                let reply = tokio::time::timeout(
                    Duration::from_secs(1),
                    client.request("$JS.API.INFO", "".into()),
                )
                .await;
                match reply {
                    Ok(Ok(msg)) => serde_json::from_slice::<Value>(&msg.payload)
                        .ok()
                        .filter(|v| v.get("error").is_some())
                        .map(|_| "JS API error"),
                    // A timeout is not a refusal: a client cannot tell it from slowness.
                    _ => None,
                }
            }
        }
    }
}

async fn leader_lists_offline(client: &async_nats::Client, victim: &str) -> bool {
    let subject = format!("$SYS.REQ.SERVER.{}.JSZ", client.server_info().server_id);
    let Ok(Ok(msg)) = tokio::time::timeout(
        Duration::from_millis(500),
        client.request(subject, "{}".into()),
    )
    .await
    else {
        return false;
    };
    let Ok(jsz) = serde_json::from_slice::<Value>(&msg.payload) else {
        return false;
    };
    let own = jsz.pointer("/server/name").and_then(Value::as_str);
    let leader = jsz
        .pointer("/data/meta_cluster/leader")
        .and_then(Value::as_str);
    if own.is_none() || own != leader {
        return false;
    }
    jsz.pointer("/data/meta_cluster/replicas")
        .and_then(Value::as_array)
        .is_some_and(|replicas| {
            replicas.iter().any(|r| {
                r.get("name").and_then(Value::as_str) == Some(victim)
                    && r.get("offline").and_then(Value::as_bool) == Some(true)
            })
        })
}

async fn healthz_unavailable(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let Ok(Ok(response)) = tokio::time::timeout(Duration::from_millis(500), exchange).await else {
        return false;
    };
    let body = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&response[..], |at| &response[at + 4..]);
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("status").and_then(Value::as_str).map(str::to_owned))
        .is_some_and(|status| status != "ok")
}

fn monitor_addr(cluster: &Cluster, i: usize) -> String {
    cluster
        .monitor_url(i)
        .trim_start_matches("http://")
        .to_string()
}

/// Polls the probes every 100 ms from `t0` until one fires (its delay and name) or `cap` passes.
fn watch_signal(
    probes: Vec<Probe>,
    t0: Instant,
    cap: Duration,
) -> JoinHandle<Option<(Duration, &'static str)>> {
    tokio::spawn(async move {
        loop {
            for probe in &probes {
                if let Some(name) = probe.fired().await {
                    return Some((t0.elapsed(), name));
                }
            }
            if t0.elapsed() >= cap {
                return None;
            }
            tokio::time::sleep(SIGNAL_POLL).await;
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Round {
    detect: Option<Duration>,
    /// The server's own signal: delay and which one; `None` when it did not show within the cap.
    signal: Option<(Duration, &'static str)>,
    resolved: Option<Duration>,
    /// Other figure of the round (e.g. detection counted from the election), if any.
    extra: Option<Duration>,
    /// Findings raised in the round besides the one measured.
    also: Vec<String>,
    /// Anything else worth reading about the round.
    note: Option<String>,
}

struct Kind {
    title: &'static str,
    measured: &'static str,
    target: Duration,
    /// Whether a server signal applies at all (flapping has none).
    has_signal: bool,
    /// What the `extra` figure is, when rounds have one.
    extra: Option<&'static str>,
    resolved_note: Option<&'static str>,
    /// The server's signal is timed from the fault, so compare it with `extra` (also from the
    /// fault) rather than with `detect`.
    ratio_from_extra: bool,
    rounds: Vec<Round>,
}

impl Kind {
    fn new(title: &'static str, measured: &'static str, target: Duration) -> Kind {
        Kind {
            title,
            measured,
            target,
            has_signal: true,
            extra: None,
            resolved_note: None,
            ratio_from_extra: false,
            rounds: Vec::new(),
        }
    }
}

/// Median and worst of the measured values, with the count of rounds that saw nothing.
fn stats(values: &[Option<Duration>]) -> (Option<Duration>, Option<Duration>, usize) {
    let mut got: Vec<Duration> = values.iter().flatten().copied().collect();
    let missed = values.len() - got.len();
    got.sort();
    if got.is_empty() {
        return (None, None, missed);
    }
    let median = if got.len() % 2 == 1 {
        got[got.len() / 2]
    } else {
        (got[got.len() / 2 - 1] + got[got.len() / 2]) / 2
    };
    (Some(median), got.last().copied(), missed)
}

fn cell(value: Option<Duration>, missed: usize, total: usize) -> String {
    match (value, missed) {
        (Some(v), 0) => secs(v),
        (Some(v), m) => format!("{} ({m}/{total} missed)", secs(v)),
        (None, _) => "missed".to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

async fn start_cluster(proxied: bool, name: &str) -> Cluster {
    let cluster = Cluster::start(ClusterOptions {
        cluster_name: name.to_string(),
        proxied_routes: proxied,
        ..ClusterOptions::default()
    })
    .await
    .expect("cluster starts");
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("meta leader");
    cluster
}

async fn leader_index(cluster: &Cluster) -> usize {
    let leader = cluster
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("meta leader");
    cluster.index_of(&leader).expect("leader is a node")
}

async fn clients(cluster: &Cluster, nodes: &[usize]) -> Vec<async_nats::Client> {
    let mut out = Vec::new();
    for i in nodes {
        out.push(cluster.sys_client(*i).await.expect("sys client"));
    }
    out
}

/// Stops one server (a follower, or the leader) and restarts it.
/// Which server stops in [`stop_one`], and where the monitor's main connection is meanwhile.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Victim {
    /// A follower the monitor is not attached to.
    FollowerElsewhere,
    /// The leader, the monitor attached to another server.
    LeaderElsewhere,
    /// The follower the monitor is attached to: it reconnects elsewhere first.
    MonitorsFollower,
}

/// A monitor whose main connection landed where `fits` says (the client picks a server at
/// random; a monitor that landed elsewhere is stopped and another started).
async fn monitor_on(cluster: &Cluster, fits: impl Fn(&str) -> bool) -> Monitor {
    for _ in 0..50 {
        let monitor = Monitor::start(cluster).await;
        if fits(&monitor.attached()) {
            return monitor;
        }
        monitor.stop().await;
    }
    panic!("the monitor never landed on a server that fits");
}

/// Stops one server (see [`Victim`]) and restarts it.
async fn stop_one(
    cluster: &mut Cluster,
    kind: &mut Kind,
    rounds: usize,
    cap: Duration,
    how: Stop,
    which: Victim,
) {
    for round in 1..=rounds {
        let lead = leader_index(cluster).await;
        let leader = cluster.server_name(lead);
        let monitor = match which {
            Victim::FollowerElsewhere => Monitor::start(cluster).await,
            Victim::LeaderElsewhere | Victim::MonitorsFollower => {
                monitor_on(cluster, |s| s != leader).await
            }
        };
        let attached = monitor.attached();
        let victim = match which {
            Victim::FollowerElsewhere => [(lead + 1) % 3, (lead + 2) % 3]
                .into_iter()
                .find(|i| cluster.server_name(*i) != attached)
                .expect("two followers"),
            Victim::LeaderElsewhere => lead,
            Victim::MonitorsFollower => cluster.index_of(&attached).expect("attached to a node"),
        };
        let name = cluster.server_name(victim);
        let survivors: Vec<usize> = all(cluster).into_iter().filter(|i| *i != victim).collect();
        let mut events = Events::subscribe(cluster, &survivors).await;
        events.drain(WARMUP).await;
        let probes = vec![
            Probe::Offline {
                victim: name.clone(),
                views: clients(cluster, &survivors).await,
            },
            Probe::Healthz(
                survivors
                    .iter()
                    .map(|i| monitor_addr(cluster, *i))
                    .collect(),
            ),
        ];
        // Its main connection goes down with the victim: it reconnects first, and then waits
        // for peer instances' state as after any reconnect.
        let on_victim = attached == name;
        let t0 = Instant::now();
        let signal = watch_signal(probes, t0, cap);
        cluster.stop(victim, how).await.expect("stop");
        let detect = events
            .wait(Raised, "META_001", Some(&name), t0, EVENT_TIMEOUT)
            .await
            .map(|at| at - t0);
        let signal = signal.await.expect("signal task");
        let t1 = Instant::now();
        cluster.restart(victim).await.expect("restart");
        let resolved = events
            .wait(Resolved, "META_001", Some(&name), t1, EVENT_TIMEOUT)
            .await
            .map(|at| at - t1);
        events.drain(Duration::from_secs(1)).await;
        let also: Vec<String> = events
            .raised_since(t0)
            .into_iter()
            .filter(|l| *l != format!("META_001 {name}"))
            .collect();
        report_round(kind.title, round, detect, signal, resolved, &also);
        kind.rounds.push(Round {
            detect,
            signal,
            resolved,
            extra: None,
            also,
            note: on_victim.then(|| ATTACHED_TO_VICTIM.to_string()),
        });
        monitor.stop().await;
    }
}

/// The note of a round whose monitor's main connection was attached to a stopped server.
const ATTACHED_TO_VICTIM: &str = "the monitor's main connection was on a stopped server";

/// Kills the leader and one follower at once: quorum lost on the one left.
async fn two_of_three(cluster: &mut Cluster, kind: &mut Kind, rounds: usize, cap: Duration) {
    for round in 1..=rounds {
        let lead = leader_index(cluster).await;
        let follower = (lead + 1) % 3;
        let survivor = (lead + 2) % 3;
        let kept = cluster.server_name(survivor);
        // On the survivor: a monitor on a killed server first reconnects (measured apart, as
        // the monitor's own server).
        let monitor = monitor_on(cluster, |s| s == kept).await;
        let mut events = Events::subscribe(cluster, &[survivor]).await;
        events.drain(WARMUP).await;
        let on_victim = monitor.attached() != kept;
        let probes = vec![
            Probe::Healthz(vec![monitor_addr(cluster, survivor)]),
            Probe::JsRefuses(cluster.app_client(survivor).await.expect("app client")),
        ];
        let t0 = Instant::now();
        let signal = watch_signal(probes, t0, cap);
        cluster.stop(lead, Stop::Kill).await.expect("kill leader");
        cluster
            .stop(follower, Stop::Kill)
            .await
            .expect("kill follower");
        let detect = events
            .wait(Raised, "META_006", None, t0, EVENT_TIMEOUT)
            .await
            .map(|at| at - t0);
        let signal = signal.await.expect("signal task");
        let t1 = Instant::now();
        cluster.restart(lead).await.expect("restart");
        cluster.restart(follower).await.expect("restart");
        let resolved = events
            .wait(Resolved, "META_006", None, t1, EVENT_TIMEOUT)
            .await
            .map(|at| at - t1);
        events.drain(Duration::from_secs(1)).await;
        let also: Vec<String> = events
            .raised_since(t0)
            .into_iter()
            .filter(|l| !l.starts_with("META_006"))
            .collect();
        report_round(kind.title, round, detect, signal, resolved, &also);
        kind.rounds.push(Round {
            detect,
            signal,
            resolved,
            extra: None,
            also,
            note: on_victim.then(|| ATTACHED_TO_VICTIM.to_string()),
        });
        monitor.stop().await;
    }
}

/// Two forced step-downs: time from the second (crossing) election to META_003.
async fn flapping(cluster: &mut Cluster, kind: &mut Kind, rounds: usize) {
    for round in 1..=rounds {
        let lead = leader_index(cluster).await;
        let (via, target) = ((lead + 1) % 3, (lead + 2) % 3);
        // A fresh monitor each round: the default flap window (10 m) would still hold the last
        // round's elections.
        let monitor = Monitor::start(cluster).await;
        let mut events = Events::subscribe(cluster, &all(cluster)).await;
        let advisories = sys_connect(cluster, &all(cluster))
            .connect("nats-insights-bench-advisories")
            .await
            .expect("advisory client");
        let mut elected = arrivals(
            advisories
                .subscribe("$JS.EVENT.ADVISORY.DOMAIN.LEADER_ELECTED")
                .await
                .expect("subscribe"),
        );
        advisories.flush().await.expect("flush");
        events.drain(WARMUP).await;
        let t0 = Instant::now();
        cluster.make_leader(via).await.expect("first step-down");
        cluster.make_leader(target).await.expect("second step-down");
        let detect_at = events
            .wait(Raised, "META_003", None, t0, EVENT_TIMEOUT)
            .await;
        let mut elections = Vec::new();
        while let Ok(at) = elected.try_recv() {
            elections.push(at);
        }
        let crossing = elections.get(1).copied();
        let detect = match (detect_at, crossing) {
            (Some(at), Some(crossing)) => Some(at.saturating_duration_since(crossing)),
            _ => None,
        };
        events.drain(Duration::from_secs(1)).await;
        let also: Vec<String> = events
            .raised_since(t0)
            .into_iter()
            .filter(|l| !l.starts_with("META_003"))
            .collect();
        report_round(kind.title, round, detect, None, None, &also);
        kind.rounds.push(Round {
            detect,
            signal: None,
            resolved: None,
            extra: detect_at.map(|at| at - t0),
            also,
            note: None,
        });
        monitor.stop().await;
    }
}

/// Cuts the leader's route links: META_002 (and META_001 of the cut-off leader) on the majority.
async fn partition(cluster: &mut Cluster, kind: &mut Kind, rounds: usize, cap: Duration) {
    for round in 1..=rounds {
        let lead = leader_index(cluster).await;
        let name = cluster.server_name(lead);
        let majority: Vec<usize> = all(cluster).into_iter().filter(|i| *i != lead).collect();
        let monitor = Monitor::start(cluster).await;
        let mut events = Events::subscribe(cluster, &majority).await;
        let advisories = cluster.sys_client(majority[0]).await.expect("sys client");
        let mut elected = arrivals(
            advisories
                .subscribe("$JS.EVENT.ADVISORY.DOMAIN.LEADER_ELECTED")
                .await
                .expect("subscribe"),
        );
        advisories.flush().await.expect("flush");
        events.drain(WARMUP).await;
        let probes = vec![
            Probe::Offline {
                victim: name.clone(),
                views: clients(cluster, &majority).await,
            },
            Probe::Healthz(vec![monitor_addr(cluster, lead)]),
        ];
        let t0 = Instant::now();
        let signal = watch_signal(probes, t0, cap);
        cluster.partition(lead).expect("partition");
        let detect_at = events
            .wait(Raised, "META_002", None, t0, EVENT_TIMEOUT * 2)
            .await;
        let offline = events
            .wait(Raised, "META_001", Some(&name), t0, EVENT_TIMEOUT)
            .await;
        let signal = signal.await.expect("signal task");
        let election = elected.try_recv().ok();
        let t1 = Instant::now();
        cluster.heal(lead).expect("heal");
        let resolved = events
            .wait(Resolved, "META_002", None, t1, EVENT_TIMEOUT * 2)
            .await
            .map(|at| at - t1);
        let _ = events
            .wait(Resolved, "META_001", Some(&name), t1, EVENT_TIMEOUT)
            .await;
        events.drain(Duration::from_secs(1)).await;
        let also: Vec<String> = events
            .raised_since(t0)
            .into_iter()
            .filter(|l| !l.starts_with("META_002"))
            .collect();
        // The target is counted from the moment two leaders exist: the majority's election.
        let detect = match (detect_at, election) {
            (Some(at), Some(el)) => Some(at.saturating_duration_since(el)),
            _ => None,
        };
        let from_cut = detect_at.map(|at| at - t0);
        let note = format!(
            "META_002 {} after the cut; META_001 of the cut-off leader {} after the cut",
            from_cut.map_or("-".to_string(), secs),
            offline.map_or("-".to_string(), |at| secs(at - t0)),
        );
        println!("   {note}");
        report_round(kind.title, round, detect, signal, resolved, &also);
        kind.rounds.push(Round {
            detect,
            signal,
            resolved,
            extra: from_cut,
            also,
            note: Some(note),
        });
        monitor.stop().await;
    }
}

fn report_round(
    title: &str,
    round: usize,
    detect: Option<Duration>,
    signal: Option<(Duration, &'static str)>,
    resolved: Option<Duration>,
    also: &[String],
) {
    println!(
        "{title} #{round}: detected {}, server signal {}, resolved {}{}",
        detect.map_or("-".to_string(), secs),
        signal.map_or("-".to_string(), |(d, n)| format!("{} ({n})", secs(d))),
        resolved.map_or("-".to_string(), secs),
        if also.is_empty() {
            String::new()
        } else {
            format!("; also raised: {}", also.join(", "))
        }
    );
}

/// A healthy cluster under JetStream churn for `duration`: findings raised (target 0).
async fn churn(duration: Duration) -> (Vec<String>, usize) {
    let cluster = start_cluster(false, "bench-churn").await;
    let monitor = Monitor::start(&cluster).await;
    let mut events = Events::subscribe(&cluster, &all(&cluster)).await;
    events.drain(WARMUP).await;
    let t0 = Instant::now();
    let mut workers = Vec::new();
    for w in 0..2usize {
        let client = cluster.app_client(w).await.expect("app client");
        workers.push(tokio::spawn(async move {
            let js = async_nats::jetstream::new(client);
            let mut ops = 0usize;
            let mut k = 0usize;
            while t0.elapsed() < duration {
                k += 1;
                let name = format!("CHURN_{w}_{k}");
                let stream = js
                    .create_stream(async_nats::jetstream::stream::Config {
                        name: name.clone(),
                        subjects: vec![format!("churn.{w}.{k}.>")],
                        num_replicas: 3,
                        ..Default::default()
                    })
                    .await;
                let Ok(stream) = stream else {
                    continue;
                };
                ops += 1;
                for m in 0..100 {
                    if let Ok(ack) = js
                        .publish(format!("churn.{w}.{k}.{m}"), "payload".into())
                        .await
                    {
                        if ack.await.is_ok() {
                            ops += 1;
                        }
                    }
                }
                let consumer = stream
                    .create_consumer(async_nats::jetstream::consumer::pull::Config {
                        durable_name: Some(format!("C{k}")),
                        ..Default::default()
                    })
                    .await;
                if consumer.is_ok() {
                    ops += 1;
                    if stream.delete_consumer(&format!("C{k}")).await.is_ok() {
                        ops += 1;
                    }
                }
                if js.delete_stream(&name).await.is_ok() {
                    ops += 1;
                }
            }
            ops
        }));
    }
    let mut ops = 0;
    for w in workers {
        ops += w.await.expect("churn worker");
    }
    events.drain(Duration::from_secs(5)).await;
    let raised = events.raised_since(t0);
    monitor.stop().await;
    (raised, ops)
}

// ---------------------------------------------------------------------------------------------
// Machine and report
// ---------------------------------------------------------------------------------------------

/// This run's detection medians beside issue 17's (a fault issue 17 did not measure apart is
/// left out).
fn against_issue_17(kinds: &[Kind]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "### Against issue 17\n");
    let _ = writeln!(md, "Issue 17 saw a crash at the next poll only, with the monitor on whichever server it chose; since issue 18 the crashed server's pinned link drops at once and calls for a poll that does not wait for it. Every row now keeps the monitor's main connection off the stopped servers, and the monitor's own server is measured apart: issue 17 left it to chance, and such rounds took 1.72 s there too, among the others.\n");
    let _ = writeln!(
        md,
        "| fault | detected: median before (issue 17) | median now |"
    );
    let _ = writeln!(md, "|---|---|---|");
    for kind in kinds {
        let Some((_, before)) = ISSUE_17_MEDIANS.iter().find(|(t, _)| *t == kind.title) else {
            continue;
        };
        let n = kind.rounds.len();
        let (median, _, missed) = stats(&kind.rounds.iter().map(|r| r.detect).collect::<Vec<_>>());
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            kind.title,
            secs(*before),
            cell(median, missed, n)
        );
    }
    md
}

fn report(kinds: &[Kind], churn: &(Vec<String>, usize), churn_secs: u64, cap: Duration) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "| fault | detected: median | worst | target | server's own signal: median | worst | ratio (signal / detected, medians) | RESOLVED after recovery: median | worst |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for kind in kinds {
        let n = kind.rounds.len();
        let (median, worst, missed) =
            stats(&kind.rounds.iter().map(|r| r.detect).collect::<Vec<_>>());
        let base = if kind.ratio_from_extra {
            stats(&kind.rounds.iter().map(|r| r.extra).collect::<Vec<_>>()).0
        } else {
            median
        };
        let (s_median, s_worst, s_missed) = stats(
            &kind
                .rounds
                .iter()
                .map(|r| r.signal.map(|s| s.0))
                .collect::<Vec<_>>(),
        );
        let (r_median, r_worst, r_missed) =
            stats(&kind.rounds.iter().map(|r| r.resolved).collect::<Vec<_>>());
        let over = format!("> {} s", cap.as_secs());
        let (s_med_cell, s_worst_cell, ratio) = if !kind.has_signal {
            ("none".to_string(), "-".to_string(), "-".to_string())
        } else {
            // A round whose signal never showed counts as longer than every other.
            let median_capped = 2 * s_missed >= n;
            let s_med = if median_capped {
                over.clone()
            } else {
                s_median.map_or(over.clone(), secs)
            };
            let s_w = if s_missed > 0 {
                format!("{over} ({s_missed}/{n})")
            } else {
                s_worst.map_or(over.clone(), secs)
            };
            let ratio = match (base, s_median) {
                (Some(d), _) if median_capped => {
                    format!("> {:.0}x", cap.as_secs_f64() / d.as_secs_f64().max(0.001))
                }
                (Some(d), Some(s)) => {
                    format!("{:.1}x", s.as_secs_f64() / d.as_secs_f64().max(0.001))
                }
                _ => "-".to_string(),
            };
            (s_med, s_w, ratio)
        };
        let (r_med_cell, r_worst_cell) = match kind.resolved_note {
            Some(note) => (note.to_string(), "-".to_string()),
            None => (cell(r_median, r_missed, n), cell(r_worst, r_missed, n)),
        };
        let _ = writeln!(
            md,
            "| {} ({}) | {} | {} | ≤ {} | {} | {} | {} | {} | {} |",
            kind.title,
            kind.measured,
            cell(median, missed, n),
            cell(worst, missed, n),
            secs(kind.target),
            s_med_cell,
            s_worst_cell,
            ratio,
            r_med_cell,
            r_worst_cell
        );
    }
    let _ = writeln!(md, "\n{}", against_issue_17(kinds));
    let _ = writeln!(md, "### Every round\n");
    for kind in kinds {
        let _ = writeln!(md, "**{}**", kind.title);
        let _ = writeln!(md);
        for (i, r) in kind.rounds.iter().enumerate() {
            let _ = writeln!(
                md,
                "- #{}: detected {}{}, server signal {}, RESOLVED {}{}{}",
                i + 1,
                r.detect.map_or("missed".to_string(), secs),
                match (kind.extra, r.extra) {
                    (Some(what), Some(d)) => format!(" ({what}: {})", secs(d)),
                    _ => String::new(),
                },
                if kind.has_signal {
                    r.signal
                        .map_or(format!("> {} s", cap.as_secs()), |(d, name)| {
                            format!("{} ({name})", secs(d))
                        })
                } else {
                    "none".to_string()
                },
                r.resolved.map_or("-".to_string(), secs),
                if r.also.is_empty() {
                    String::new()
                } else {
                    format!("; also raised: {}", r.also.join(", "))
                },
                r.note
                    .as_ref()
                    .map_or(String::new(), |note| format!(" ({note})"))
            );
        }
        let _ = writeln!(md);
    }
    let (raised, ops) = churn;
    let _ = writeln!(
        md,
        "### Speed must not cost false findings\n\nA healthy 3-node cluster under JetStream churn for \
         {churn_secs} s (two clients in the APP account creating R3 streams, publishing 100 \
         messages each with acks, creating and deleting a durable consumer, deleting the stream; \
         {ops} successful operations), watched with the default settings: **{} findings raised** \
         (target 0){}.\n",
        raised.len(),
        if raised.is_empty() {
            String::new()
        } else {
            format!(": {}", raised.join(", "))
        }
    );
    md
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Configured by the environment only (BENCH_ROUNDS, BENCH_SIGNAL_CAP, BENCH_CHURN_SECS).
    let rounds = env_u64("BENCH_ROUNDS", 5).max(1) as usize;
    let cap = Duration::from_secs(env_u64("BENCH_SIGNAL_CAP", 30));
    let churn_secs = env_u64("BENCH_CHURN_SECS", 60);
    let load_before = loadavg();
    let others_before = other_processes();
    let started = Instant::now();
    println!(
        "time-to-detect benchmark: {rounds} rounds per fault, server signals capped at {} s",
        cap.as_secs()
    );

    let mut kinds = Vec::new();
    let mut cluster = start_cluster(false, "bench-detect").await;

    // One server stopped, each way in turn: (name, what is timed, target, how, which one).
    let single_stops = [
        (
            "graceful stop of a follower",
            "META_001, from SIGTERM; the monitor on another server",
            Duration::from_millis(500),
            Stop::Term,
            Victim::FollowerElsewhere,
        ),
        (
            "SIGKILL of a follower",
            "META_001, from the kill; the monitor on another server",
            Duration::from_millis(300),
            Stop::Kill,
            Victim::FollowerElsewhere,
        ),
        (
            "SIGKILL of the leader",
            "META_001 of the leader, from the kill; the monitor on another server",
            Duration::from_millis(300),
            Stop::Kill,
            Victim::LeaderElsewhere,
        ),
        (
            "SIGKILL of the monitor's own server",
            "META_001 of that follower, from the kill",
            Duration::from_millis(300),
            Stop::Kill,
            Victim::MonitorsFollower,
        ),
    ];
    for (name, what, target, how, which) in single_stops {
        let mut kind = Kind::new(name, what, target);
        stop_one(&mut cluster, &mut kind, rounds, cap, how, which).await;
        kinds.push(kind);
    }

    let mut kind = Kind::new(
        "two of three killed",
        "META_006, from the kills; the monitor on the survivor",
        Duration::from_secs(2),
    );
    two_of_three(&mut cluster, &mut kind, rounds, cap).await;
    kinds.push(kind);

    let mut kind = Kind::new(
        "two forced step-downs",
        "META_003, from the crossing election",
        Duration::from_millis(500),
    );
    kind.has_signal = false;
    kind.extra = Some("from the first step-down request");
    kind.resolved_note = Some("not measured: the default flap window is 10 m");
    flapping(&mut cluster, &mut kind, rounds).await;
    kinds.push(kind);
    drop(cluster);

    let mut cluster = start_cluster(true, "bench-partition").await;
    let disagreement_after = nats_insights::checks::Thresholds::default().disagreement_after;
    let mut kind = Kind::new(
        "partition of the leader",
        "META_002, from the majority's election",
        disagreement_after + Duration::from_secs(1),
    );
    kind.extra = Some("from the cut");
    kind.ratio_from_extra = true;
    partition(&mut cluster, &mut kind, rounds, cap).await;
    kinds.push(kind);
    drop(cluster);

    println!("churn: a healthy cluster under JetStream churn for {churn_secs} s");
    let churned = churn(Duration::from_secs(churn_secs)).await;
    println!(
        "churn: {} findings raised, {} operations",
        churned.0.len(),
        churned.1
    );
    let load_after = loadavg();
    let others_after = other_processes();

    let mut md = String::new();
    let _ = writeln!(md, "## 1. Time to detect\n");
    let _ = writeln!(md, "Real 3-node nats-server clusters on loopback; nats-insights in-process with the default settings (poll every 1 s, `--offline-after 3s`, `--disagreement-after 3s`, flap max 1 in 10 m); each fault {rounds} times. A finding's time is when its RAISED event reached a subscriber of `$INSIGHTS.FINDING.>` on a surviving node. The server's own signal is polled every 100 ms in the same round: the leader's JSZ `offline` flag for the victim, `/healthz` of the surviving (or, in the partition, the cut-off) servers turning unavailable, and for quorum loss the JS API (`$JS.API.INFO`, APP account) answering with an error (a request that merely times out is not counted). Whichever shows first counts; a signal not seen within {} s is reported as \"> {} s\" rather than waited for (after a crash the `offline` flag takes 150-240 s). RESOLVED is timed from the restart (or heal) call.\n", cap.as_secs(), cap.as_secs());
    md.push_str(&report(&kinds, &churned, churn_secs, cap));
    let _ = writeln!(md, "### Reading the figures\n\n- A crash closes the dead server's sockets at once: the monitor's pinned link to it drops within milliseconds and calls for a poll that does not wait for that server (its direct probe finds no responders at once), instead of the next poll (1 s apart) and the gather's wait for stragglers (issue 17). When the monitor's main connection is on the killed server (one time in three with three servers; the other rows keep it elsewhere, \"the monitor's own server\" measures it), it first reconnects to another and then holds publishing for peer instances' state, as after any reconnect (`sync_wait`, 1.5 s). A graceful stop is announced by the server (shutdown event) and is seen at once; its pinned link drops in the same moment, and the poll that calls for may run first (a few tens of milliseconds).\n- After a follower crash the server itself shows nothing within the cap: the leader keeps the peer `online` in JSZ until its orphan sweep (150-240 s), and `/healthz` stays `ok` on the survivors.\n- After a leader crash or quorum loss the survivors' `/healthz` turns unavailable within seconds (when it does within the cap, it is the signal in the table): it says the meta group has no leader, not which server is gone (nats-insights names it).\n- Flapping has no server-side signal to compare with: the server announces each election, not that there were too many.\n- The partition's target (`--disagreement-after` + 1 s) counts from the majority's election, when two leaders first exist; the signal and ratio count from the cut. Each round below also gives META_002 and the cut-off leader's META_001 timed from the cut.\n- A round marked missed is one whose RAISED event did not reach the subscriber within the wait (30 s; 60 s for the partition): a miss by the monitor until shown otherwise, not a timing figure.\n");
    let _ = writeln!(
        md,
        "_Part 1 (`detect`, crates/tools) took {:.0} s._\n",
        started.elapsed().as_secs_f64()
    );
    let out = out_dir();
    let path = out.join("1-detect.md");
    std::fs::write(&path, &md).expect("write the time-to-detect section");
    let machine_md = format!(
        "## Machine\n\n{}",
        machine(&load_before, &load_after, others_before, others_after)
    );
    std::fs::write(out.join("9-machine.md"), machine_md).expect("write the machine section");
    println!("\n{md}\nwritten to {}", path.display());
}
