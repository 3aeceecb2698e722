//! Scale and idle-cost benchmark (`scripts/bench`, parts 2 and 3). Part 2: a simulator process
//! answers the system account's JSZ and IDZ requests, and the direct ROUTEZ, HEALTHZ, RAFTZ and
//! GATEWAYZ requests, as the N servers of one meta group, over a real nats-server, and
//! nats-insights polls it: per poll the gather + evaluate time, the bytes received and the CPU
//! time (in-process, the pipeline's own functions), and the RSS of the real binary watching it.
//! Then the same as a deployment of many meta groups (by default 300 domains of 3 servers and a
//! supercluster group of 100), polled as the engine's round does (split into groups, each
//! recorded and evaluated on its own), with each stage also timed on pure code.
//! Part 3: the real binary watching a healthy 3-node cluster for a minute, and the load it puts
//! on the servers. Writes `target/bench/2-scale.md`; figures, never fails on timing.
//!
//! The sources beyond JSZ (issue 28) are asked in every in-process poll after the JSZ gather, as
//! `Engine::gather` does (`extras_io::gather_extras`), and their cost is the subsection "The
//! sources beyond JSZ: what they add to each poll", printed after the N table's targets: one row
//! per N (`one group of N in one cluster`) and one for the many-groups deployment, with the
//! requests per poll by source, the answers, the bytes of their replies (mean and largest poll)
//! and the time `gather_extras` took (median, worst, share of the cycle). In the other tables
//! *cycle* includes that time and *gather* does not; *received per poll* is the JSZ and IDZ
//! replies only. The binary's own *poll time, received* column (its metrics) counts the extras'
//! bytes but not their time: `snapshot.duration` is set at the end of the JSZ gather.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use nats_insights::checks::{evaluate_groups, Evaluation, Thresholds};
use nats_insights::findings::{reconcile, ActiveSet};
use nats_insights::history::Histories;
use nats_insights::observe::extras::{self, Source};
use nats_insights::observe::jsz::decode_reply;
use nats_insights::observe::plan::{self, Plan};
use nats_insights::observe::{extras_io, gather};
use nats_insights::observe::{Snapshot, Via};
use nats_insights::timing::GatherTiming;
use testbed::{Cluster, ClusterOptions, ACCOUNTS_CONF, SYS_PASSWORD, SYS_USER};

use nats_insights_tools::bench::{env_u64, loadavg, other_processes, out_dir, workspace_root};
use nats_insights_tools::sim::Deployment;

/// Argument that turns this program into the simulator (a child process of the benchmark).
const SIMULATE: &str = "--simulate";

/// The many-group deployment benchmarked by default (`BENCH_GROUPS_SHAPE`, see
/// [`Deployment::parse`]): 300 domains of 3 servers and a default-domain supercluster group of
/// 100 servers over 4 clusters, 1,000 servers in all.
const DEFAULT_GROUPS_SHAPE: &str = "300x3+100/4";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == SIMULATE) {
        let shape = args.get(at + 1).map_or("10", String::as_str);
        let deployment = match shape.parse() {
            Ok(n) => Deployment::single(n),
            Err(_) => Deployment::parse(shape)
                .unwrap_or_else(|| panic!("not a deployment shape: {shape:?}")),
        };
        let url = args.get(at + 2).cloned().unwrap_or_default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(simulate(deployment, &url));
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench());
}

// ---------------------------------------------------------------------------------------------
// The simulator
// ---------------------------------------------------------------------------------------------

/// Answers `$SYS.REQ.SERVER.PING.JSZ` (all live servers, or with `leader_only` every group's
/// leader), `$SYS.REQ.SERVER.PING.IDZ`, the direct `$SYS.REQ.SERVER.<id>.JSZ|IDZ` and the direct
/// `$SYS.REQ.SERVER.<id>.ROUTEZ|HEALTHZ|RAFTZ|GATEWAYZ` ([`Deployment::extra_reply`]) of live
/// servers, as the servers of `deployment`.
async fn simulate(deployment: Deployment, url: &str) {
    let n = deployment.len();
    // Built on first use: at 5,000 members all replies together are 1.9 GB, and the large-group
    // poll only ever asks for a few of them.
    let mut replies: Vec<Option<bytes::Bytes>> = vec![None; n];
    let identities: Vec<bytes::Bytes> = (0..n).map(|i| deployment.identity(i).into()).collect();
    let mut extras: std::collections::HashMap<(usize, String), bytes::Bytes> =
        std::collections::HashMap::new();
    let leaders: Vec<usize> = deployment.leaders().collect();
    let by_id: std::collections::HashMap<&str, usize> = deployment
        .ids
        .iter()
        .enumerate()
        .filter(|(i, _)| !deployment.offline[*i])
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let client = match async_nats::ConnectOptions::with_user_and_password(
        SYS_USER.into(),
        SYS_PASSWORD.into(),
    )
    .name("scale-simulator")
    .connect(url)
    .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("simulator: cannot connect to {url}: {e}");
            return;
        }
    };
    let Ok(mut requests) = client.subscribe("$SYS.REQ.SERVER.*.*").await else {
        eprintln!("simulator: cannot subscribe");
        return;
    };
    let _ = client.flush().await;
    println!("ready {}", deployment.full_gather_bytes());
    while let Some(msg) = requests.next().await {
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let mut tokens = msg.subject.split('.').skip(3);
        let (target, kind) = (tokens.next().unwrap_or(""), tokens.next().unwrap_or(""));
        let jsz = match kind {
            "JSZ" => true,
            "IDZ" => false,
            // The sources beyond JSZ, asked only directly: built once per server and source.
            _ => {
                let Some(&i) = by_id.get(target) else {
                    continue;
                };
                let body = match extras.entry((i, kind.to_string())) {
                    std::collections::hash_map::Entry::Occupied(e) => e.get().clone(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let Some(reply) = deployment.extra_reply(i, kind) else {
                            continue;
                        };
                        e.insert(bytes::Bytes::from(reply)).clone()
                    }
                };
                let _ = client.publish(reply, body).await;
                let _ = client.flush().await;
                continue;
            }
        };
        let targets: Vec<usize> = if target == "PING" {
            let leader_only = jsz && msg.payload.windows(11).any(|w| w == b"leader_only");
            if leader_only {
                leaders.clone()
            } else {
                deployment.online().collect()
            }
        } else {
            by_id.get(target).copied().into_iter().collect()
        };
        for i in targets {
            let body = if jsz {
                replies[i]
                    .get_or_insert_with(|| deployment.reply(i).into())
                    .clone()
            } else {
                identities[i].clone()
            };
            let _ = client.publish(reply.clone(), body).await;
        }
        let _ = client.flush().await;
    }
}

/// A process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One plain nats-server (no JetStream, no cluster: its own JSZ reply carries no meta group).
fn start_server(dir: &std::path::Path) -> (Killed, String) {
    let port = free_port();
    std::fs::create_dir_all(dir).expect("bench dir");
    std::fs::write(dir.join("accounts.conf"), ACCOUNTS_CONF).expect("accounts.conf");
    let conf = dir.join("server.conf");
    std::fs::write(
        &conf,
        format!("server_name: sim-host\nlisten: 127.0.0.1:{port}\nmax_pending: 256MB\ninclude ./accounts.conf\n"),
    )
    .expect("server.conf");
    let bin = testbed::nats_server_bin().expect("nats-server binary");
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    let url = format!("nats://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Killed(child), url)
}

/// Starts the simulator as `shape` (a member count: one group; else a
/// [`Deployment::parse`] shape); returns it and the bytes of one full gather.
fn start_simulator(shape: &str, url: &str) -> (Killed, u64) {
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .args([SIMULATE, shape, url])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the simulator");
    let stdout = child.stdout.take().expect("simulator stdout");
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    let full = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("simulator did not start: {line:?}"));
    (Killed(child), full)
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

/// CPU time (user + system) this process or `pid` used so far.
fn cpu_time(pid: Option<u32>) -> Duration {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// `VmRSS` and `VmHWM` (peak) of `pid`, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn worst(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

/// What polling the simulator gave, per poll.
struct PollFigures {
    cycle_ms: Vec<f64>,
    /// Known servers and the plan, then the gather.
    gather_ms: Vec<f64>,
    /// Everything after the gather: split, record, evaluate, reconcile.
    after_gather_ms: Vec<f64>,
    /// Splitting the poll into groups and recording each part in its history.
    history_ms: Vec<f64>,
    /// Of that, the split alone.
    split_ms: Vec<f64>,
    /// Evaluating every group and reconciling the findings.
    evaluate_ms: Vec<f64>,
    bytes: Vec<f64>,
    cpu_ms: Vec<f64>,
    /// The sources beyond JSZ, per poll.
    extras: ExtrasFigures,
    /// Keys of the findings active after the last poll.
    findings: Vec<String>,
    /// Servers that answered the last poll with a meta view.
    answering: usize,
    /// Meta groups assessed in the last poll.
    groups: usize,
    /// Servers each group's history holds, by group label, after the last poll.
    filed: BTreeMap<String, Vec<String>>,
}

/// What the sources beyond JSZ (ROUTEZ, HEALTHZ, RAFTZ `_meta_`, GATEWAYZ) cost in the counted
/// polls.
#[derive(Default)]
struct ExtrasFigures {
    polls: usize,
    /// Requests sent, by source in the order of `Source::ALL`, over all counted polls.
    asked: [usize; 4],
    /// Answers filed (a source of a server with a value), over all counted polls.
    answered: usize,
    /// Bytes of their replies, per poll.
    bytes: Vec<f64>,
    /// Time `gather_extras` took, per poll.
    ms: Vec<f64>,
    /// That time's share of the cycle, per poll.
    share: Vec<f64>,
}

impl ExtrasFigures {
    /// One row of the extras table: requests per poll by source, answers, bytes (mean, since
    /// RAFTZ of a large group comes every 10th poll, and the largest), time (median, worst) and
    /// its median share of the cycle.
    fn row(&self, label: &str) -> String {
        let polls = self.polls.max(1) as f64;
        let per_poll = |k: usize| {
            let v = self.asked[k] as f64 / polls;
            match v.fract() == 0.0 {
                true => format!("{v:.0}"),
                false => format!("{v:.1}"),
            }
        };
        let asked: usize = self.asked.iter().sum();
        let mean = self.bytes.iter().sum::<f64>() / polls;
        format!(
            "| {label} | {} / {} / {} / {} | {} of {asked} | {} ({} largest) | {:.1} ms ({:.1} ms worst) | {:.0} % |",
            per_poll(0),
            per_poll(1),
            per_poll(2),
            per_poll(3),
            self.answered,
            kib(mean),
            kib(worst(&self.bytes)),
            median(&mut self.ms.clone()),
            worst(&self.ms),
            median(&mut self.share.clone()) * 100.0,
        )
    }
}

/// Bytes in KiB (one decimal below 10 KiB), or MiB from 1 MiB.
fn kib(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", bytes / 1024.0 / 1024.0)
    } else if bytes >= 10.0 * 1024.0 {
        format!("{:.0} KiB", bytes / 1024.0)
    } else {
        format!("{:.1} KiB", bytes / 1024.0)
    }
}

/// The engine's group size for the plan (`group_size` in src/engine.rs): every domain's largest
/// member count, summed.
fn group_size(snapshot: &Snapshot) -> Option<usize> {
    let mut sizes: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    for (view, meta) in snapshot.meta_views() {
        let size = sizes.entry(view.server.domain.as_deref()).or_default();
        *size = (*size).max(meta.cluster_size.max(meta.replicas.len()));
    }
    (!sizes.is_empty()).then(|| sizes.values().sum())
}

/// Polls the simulator `polls` times as the engine's round does (src/engine.rs: known servers,
/// the plan, the gather, `Histories::split`, `record_snapshots`, `evaluate_groups`, the
/// evaluations flattened, `reconcile`), after `warmup` polls that are not counted. `full` forces
/// the full poll whatever the size.
async fn poll_group(url: &str, polls: usize, warmup: usize, full: bool) -> PollFigures {
    let client =
        async_nats::ConnectOptions::with_user_and_password(SYS_USER.into(), SYS_PASSWORD.into())
            .name("scale-bench")
            .connect(url)
            .await
            .expect("connect to the bench server");
    let thresholds = Thresholds::default();
    let timing = GatherTiming::default();
    let mut histories = Histories::default();
    let mut active = ActiveSet::default();
    let mut group_size_seen = None;
    let mut previous = Snapshot::default();
    let mut figures = PollFigures {
        cycle_ms: Vec::new(),
        gather_ms: Vec::new(),
        after_gather_ms: Vec::new(),
        history_ms: Vec::new(),
        split_ms: Vec::new(),
        evaluate_ms: Vec::new(),
        bytes: Vec::new(),
        cpu_ms: Vec::new(),
        extras: ExtrasFigures::default(),
        findings: Vec::new(),
        answering: 0,
        groups: 0,
        filed: BTreeMap::new(),
    };
    for round in 0..(warmup + polls) {
        let cpu = cpu_time(None);
        let started = Instant::now();
        let known = histories.known_servers();
        let plan = if full {
            Plan::Full
        } else {
            // As `Engine::plan`: every group's leader answers the leader-only request anyway.
            let leaders: BTreeSet<&str> = previous
                .meta_views()
                .filter(|(v, m)| m.leader_name() == Some(v.server.name.as_str()))
                .map(|(v, _)| v.server.name.as_str())
                .collect();
            let followers: Vec<_> = known
                .iter()
                .filter(|k| !leaders.contains(k.name.as_str()))
                .cloned()
                .collect();
            Plan::for_group(
                group_size_seen,
                plan::FULL_POLL_MAX_MEMBERS,
                &followers,
                round as u64,
            )
        };
        let mut snapshot = match gather::poll(&client, &known, &plan, timing).await {
            Ok(s) => s,
            Err(e) => panic!("poll failed: {e}"),
        };
        let gathered = started.elapsed();
        // As `Engine::gather`: after the JSZ gather, the sources beyond JSZ of the few servers
        // this round's rotation names (the engine's round counter starts at 1). Its bytes land
        // in `snapshot.bytes`, its time in neither `snapshot.duration` nor the binary's poll time.
        let extras_round = round as u64 + 1;
        let jsz_bytes = snapshot.bytes;
        extras_io::gather_extras(&client, &mut snapshot, extras_round, timing.probe_timeout).await;
        let extras_done = started.elapsed();
        let asks = extras::plan(&snapshot, extras_round);
        let extras_bytes = snapshot.bytes.saturating_sub(jsz_bytes);
        let answers: usize = snapshot
            .extras
            .values()
            .map(|e| {
                usize::from(e.routes.is_some())
                    + usize::from(e.health.is_some())
                    + usize::from(e.raft_meta.is_some())
                    + usize::from(e.gateways.is_some())
            })
            .sum();
        let now = SystemTime::now();
        let parts = histories.split(&snapshot);
        let split = started.elapsed();
        histories.record_snapshots(&parts, &thresholds, now);
        let recorded = started.elapsed();
        let groups = evaluate_groups(&parts, &histories, &thresholds, now);
        let evaluations: Vec<Evaluation> = groups
            .iter()
            .flat_map(|g| g.evaluations.iter().cloned())
            .collect();
        let (next, _transitions) = reconcile(&active, &Default::default(), &evaluations, now);
        active = next;
        let cycle = started.elapsed();
        let cpu = cpu_time(None).saturating_sub(cpu);
        if let Some(size) = group_size(&snapshot) {
            group_size_seen = Some(size);
        }
        if round >= warmup {
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            figures.cycle_ms.push(ms(cycle));
            figures.gather_ms.push(ms(gathered));
            figures.after_gather_ms.push(ms(cycle - extras_done));
            figures.history_ms.push(ms(recorded - extras_done));
            figures.split_ms.push(ms(split - extras_done));
            figures.evaluate_ms.push(ms(cycle - recorded));
            figures.bytes.push(jsz_bytes as f64);
            let e = &mut figures.extras;
            e.polls += 1;
            for (k, source) in Source::ALL.iter().enumerate() {
                e.asked[k] += asks.iter().filter(|a| a.source == *source).count();
            }
            e.answered += answers;
            e.bytes.push(extras_bytes as f64);
            e.ms.push(ms(extras_done - gathered));
            e.share
                .push((extras_done - gathered).as_secs_f64() / cycle.as_secs_f64().max(1e-9));
            figures.cpu_ms.push(ms(cpu));
            // The real nats-server under the simulator answers too: count only the members.
            figures.answering = snapshot.views.values().filter(|v| v.meta.is_some()).count();
            figures.groups = groups.iter().filter(|g| g.meta.is_some()).count();
        }
        previous = snapshot;
        // The engine polls once a second; leave the servers (and the simulator) that much air.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    figures.findings = active.keys().cloned().collect();
    figures.filed = histories
        .groups
        .iter()
        .map(|(group, history)| {
            (
                group.label().to_string(),
                history.servers.keys().cloned().collect(),
            )
        })
        .collect();
    figures
}

/// The real binary watching `urls` for `secs`: CPU share, RSS and its own metrics.
struct ServiceFigures {
    cpu_share: f64,
    rss: f64,
    peak_rss: f64,
    polls: f64,
    poll_seconds: f64,
    received: f64,
    /// Findings active at the end (every series of `nats_insights_findings_active`).
    findings: f64,
    /// Messages and bytes the servers got from it, and bytes they sent it, in the window.
    servers: (f64, f64, f64),
}

/// The sum of every series of the metric `name` (any labels).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(port: u16) -> String {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await;
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body).await;
    body
}

/// The nats-insights binary next to this one (`scripts/bench` builds both), or
/// `$NATS_INSIGHTS_BIN`.
fn binary() -> PathBuf {
    testbed::product_bin().expect("the nats-insights binary")
}

/// Runs the binary against `urls`; after `warmup` measures for `secs`. `during` runs alongside
/// the measured window (used to read the servers' side).
async fn watch_with_binary(
    urls: &[String],
    warmup: Duration,
    secs: Duration,
    cluster: Option<&Cluster>,
) -> ServiceFigures {
    let port = free_port();
    let child = Command::new(binary())
        .args([
            "run",
            "--server",
            &urls.join(","),
            "--user",
            SYS_USER,
            "--password",
            SYS_PASSWORD,
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
            "--log",
            "warn",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-insights");
    let service = Killed(child);
    let pid = service.0.id();
    tokio::time::sleep(warmup).await;
    let before = scrape(port).await;
    let servers_before = match cluster {
        Some(c) => connz_totals(c).await,
        None => (0.0, 0.0, 0.0),
    };
    let cpu = cpu_time(Some(pid));
    let started = Instant::now();
    tokio::time::sleep(secs).await;
    let cpu = cpu_time(Some(pid)).saturating_sub(cpu);
    let elapsed = started.elapsed();
    let after = scrape(port).await;
    let servers_after = match cluster {
        Some(c) => connz_totals(c).await,
        None => (0.0, 0.0, 0.0),
    };
    let (rss, peak_rss) = rss_mib(pid);
    drop(service);
    let delta = |name: &str| metric(&after, name) - metric(&before, name);
    ServiceFigures {
        cpu_share: cpu.as_secs_f64() / elapsed.as_secs_f64(),
        rss,
        peak_rss,
        polls: delta("nats_insights_polls_total"),
        poll_seconds: delta("nats_insights_poll_duration_seconds_sum"),
        received: delta("nats_insights_poll_received_bytes_total"),
        findings: metric_sum(&after, "nats_insights_findings_active"),
        servers: (
            servers_after.0 - servers_before.0,
            servers_after.1 - servers_before.1,
            servers_after.2 - servers_before.2,
        ),
    }
}

fn mib(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", bytes / 1024.0 / 1024.0)
    } else {
        format!("{:.0} KiB", bytes / 1024.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Many meta groups
// ---------------------------------------------------------------------------------------------

/// One row of the many-groups table: the figures of polling `deployment` in-process (`f`) and of
/// the binary watching it (`service`).
fn groups_row(
    label: &str,
    deployment: &Deployment,
    f: &mut PollFigures,
    service: &ServiceFigures,
) -> String {
    let expected = deployment.expected_findings();
    let raised = expected.iter().filter(|k| f.findings.contains(k)).count();
    let unexpected = f.findings.len() - raised;
    format!(
        "| {label} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} ms (split {:.2} ms) | {:.2} ms | {} | {:.1} ms | {:.1} MiB ({:.1} MiB peak) | {:.1} % | {raised} of {}{} | {:.0} | {} |",
        deployment.len(),
        f.groups,
        median(&mut f.cycle_ms.clone()),
        worst(&f.cycle_ms),
        median(&mut f.gather_ms),
        median(&mut f.history_ms),
        median(&mut f.split_ms),
        median(&mut f.evaluate_ms),
        mib(median(&mut f.bytes)),
        median(&mut f.cpu_ms),
        service.rss,
        service.peak_rss,
        service.cpu_share * 100.0,
        expected.len(),
        if unexpected > 0 {
            format!(" (+{unexpected} unexpected)")
        } else {
            String::new()
        },
        service.findings,
        if service.polls > 0.0 {
            format!(
                "{:.0} ms, {}",
                service.poll_seconds / service.polls * 1e3,
                mib(service.received / service.polls)
            )
        } else {
            "no poll".to_string()
        },
    )
}

/// What the many-groups part measured.
struct ManyGroups {
    shape: String,
    servers: usize,
    groups: usize,
    domains: usize,
    supercluster: Option<(usize, usize)>,
    crashed: usize,
    row: String,
    /// Its row of the table of the sources beyond JSZ.
    extras_row: String,
    /// Servers of the deployment whose group's history does not hold them, and those another
    /// group's history holds.
    unfiled: usize,
    misfiled: usize,
    unexpected: Vec<String>,
    /// Rows of the steady-state table, one per shape of `BENCH_GROUPS_STEADY`.
    steady: Vec<String>,
    /// Load average, and compiler or nats-server processes not started by the benchmark, when
    /// the part started and ended.
    load: [(String, usize); 2],
}

/// The load average and the other compiler or nats-server processes, not counting the
/// benchmark's own nats-server.
fn load_now() -> (String, usize) {
    (loadavg(), other_processes().saturating_sub(1))
}

/// The many-groups part: the simulator as the deployment `shape`, polled in-process as the engine
/// does, then watched by the binary.
async fn many_groups(shape: &str, url: &str, polls: usize) -> ManyGroups {
    let deployment =
        Deployment::parse(shape).unwrap_or_else(|| panic!("BENCH_GROUPS_SHAPE: {shape:?}"));
    assert!(
        deployment.leaders().count() == deployment.groups.len(),
        "every group keeps a live leader"
    );
    let load_before = load_now();
    let (sim, _) = start_simulator(shape, url);
    println!(
        "scale: {} servers in {} meta groups, large-group poll ...",
        deployment.len(),
        deployment.groups.len()
    );
    let mut f = poll_group(url, polls, 3, false).await;
    println!("scale: many groups, the binary ...");
    let service = watch_with_binary(
        &[url.to_string()],
        Duration::from_secs(3),
        Duration::from_secs(7),
        None,
    )
    .await;
    drop(sim);
    let label_of: BTreeMap<&str, &str> = (0..deployment.len())
        .map(|i| {
            (
                deployment.names[i].as_str(),
                deployment.groups[deployment.group_of[i]].label(),
            )
        })
        .collect();
    let misfiled = f
        .filed
        .iter()
        .flat_map(|(group, servers)| servers.iter().map(move |s| (group, s)))
        .filter(|(group, s)| label_of.get(s.as_str()).is_some_and(|l| l != group))
        .count();
    let unfiled = deployment
        .online()
        .filter(|i| {
            let label = deployment.groups[deployment.group_of[*i]].label();
            !f.filed
                .get(label)
                .is_some_and(|servers| servers.contains(&deployment.names[*i]))
        })
        .count();
    let expected = deployment.expected_findings();
    let unexpected = f
        .findings
        .iter()
        .filter(|k| !expected.contains(k))
        .cloned()
        .collect();
    let supercluster = deployment
        .groups
        .iter()
        .find(|g| g.domain.is_none())
        .map(|g| {
            let clusters: BTreeSet<&str> = g
                .members
                .clone()
                .map(|i| deployment.clusters[i].as_str())
                .collect();
            (g.members.len(), clusters.len())
        });
    ManyGroups {
        shape: shape.to_string(),
        servers: deployment.len(),
        groups: deployment.groups.len(),
        domains: deployment
            .groups
            .iter()
            .filter(|g| g.domain.is_some())
            .count(),
        supercluster,
        crashed: deployment.crashed(),
        row: groups_row(
            &format!("{} meta groups (`{shape}`)", deployment.groups.len()),
            &deployment,
            &mut f,
            &service,
        ),
        extras_row: f.extras.row(&format!(
            "{} meta groups (`{shape}`)",
            deployment.groups.len()
        )),
        unfiled,
        misfiled,
        unexpected,
        steady: steady_shapes()
            .iter()
            .map(|shape| {
                println!("scale: {shape} at steady state, pure code ...");
                let deployment = Deployment::parse(shape)
                    .unwrap_or_else(|| panic!("BENCH_GROUPS_STEADY: {shape:?}"));
                steady_state(&deployment, polls.max(5)).row(shape)
            })
            .collect(),
        load: [load_before, load_now()],
    }
}

/// The shapes timed on pure code at steady state (`BENCH_GROUPS_STEADY`, comma-separated): by
/// default one group of 1,000, the benchmarked deployment, and ten times as many domains.
fn steady_shapes() -> Vec<String> {
    std::env::var("BENCH_GROUPS_STEADY")
        .unwrap_or_else(|_| format!("0x3+1000/1,{DEFAULT_GROUPS_SHAPE},3000x3+100/4"))
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl ManyGroups {
    /// The subsection, with `single` (the one-group row of the same server count) beside it.
    fn markdown(&self, single: Option<&str>, polls: usize) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "### Many meta groups: {} servers in {} groups\n",
            self.servers, self.groups
        );
        let groups = match self.supercluster {
            Some((members, clusters)) => format!(
                "{} domains (`d001`...) plus one default-domain supercluster group of {members} servers over {clusters} clusters",
                self.domains
            ),
            None => format!("{} domains", self.domains),
        };
        let _ = writeln!(md, "The simulator answers as a deployment of {groups} (shape `{}`, `BENCH_GROUPS_SHAPE`): each reply's envelope carries the server's own `cluster` and, outside the default domain, its `domain`; `meta_cluster.name` is the reporting server's own cluster (in the supercluster group it differs from server to server, as nats-server fills it); each group has its own leader and the member lists real servers send. Every 50th server of the deployment is crashed as above (the next member when that one leads): {} META_001 findings expected. It is polled in-process as the engine's round does now (`Histories::split`, `record_snapshots`, `evaluate_groups`, the evaluations flattened, `reconcile`; the plan from the sum of every group's size, leaders left out of the follower sample as in `Engine::plan`), {polls} polls after 3 uncounted ones; the binary watches it as above. *gather* includes the known servers and the plan (the sources beyond JSZ count in *cycle*, not in *gather*: their subsection above); *split + record* is `Histories::split` (also given alone) and `record_snapshots`; *evaluate + reconcile* is `evaluate_groups` and `reconcile`. The single-group row is the N = 1,000 run of the table above, split the same way.\n", self.shape, self.crashed);
        let _ = writeln!(md, "| deployment | servers | groups assessed | cycle: median | worst | gather | split + record | evaluate + reconcile | received per poll | CPU per poll | binary: RSS | binary: CPU (of one core) | findings raised | binary: findings active | binary: poll time, received |");
        let _ = writeln!(
            md,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        if let Some(single) = single {
            let _ = writeln!(md, "{single}");
        }
        let _ = writeln!(md, "{}\n", self.row);
        let _ = writeln!(md, "After the last poll, {} live servers of the deployment were missing from their own group's history and {} were held by another group's history.{}{}\n",
            self.unfiled,
            self.misfiled,
            if self.misfiled > 0 {
                format!(" An identity-only view (IDZ carries no domain) of a server no history knows yet is filed in the default group, and stays there while it answers; it moves to its own group once the follower sample asks for its whole view ({} servers per poll). The findings do not depend on it (each group's members come from its leader's view), but a crash of such a server is seen by its own group only through its leader's `active`, after `--offline-after`, not at the first silent poll.", plan::FOLLOWER_SAMPLE)
            } else {
                String::new()
            },
            if self.unexpected.is_empty() {
                String::new()
            } else {
                format!(" Findings not expected: {}.", self.unexpected.join(", "))
            });
        let [(load_before, others_before), (load_after, others_after)] = &self.load;
        let _ = writeln!(md, "_Load while this part ran: load average {load_before} at the start, {load_after} at the end; {others_before} compiler or nats-server processes not started by the benchmark at the start, {others_after} at the end._\n");
        if !self.steady.is_empty() {
            let _ = writeln!(md, "Each stage of the round on pure code, once every server sits in its own group's history (as after the follower sample went round): the histories first record every server's whole view, then {} polls shaped like the large-group poll (every leader's view, {} followers' views, every other live server's identity) are split, recorded, evaluated and reconciled; medians. `0x3+1000/1` is one default-domain group of 1,000 servers in one cluster.\n", polls.max(5), plan::FOLLOWER_SAMPLE);
            let _ = writeln!(md, "| shape | servers | groups | `known_servers` | split | record | evaluate | reconcile | total | findings |");
            let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
            for row in &self.steady {
                let _ = writeln!(md, "{row}");
            }
            let _ = writeln!(md);
        }
        md
    }
}

/// The stages of a round on pure code, once every server sits in its own group's history.
struct SteadyState {
    servers: usize,
    groups: usize,
    known_ms: f64,
    split_ms: f64,
    record_ms: f64,
    evaluate_ms: f64,
    reconcile_ms: f64,
    findings: usize,
}

/// `deployment` as one poll sees it: the `whole` servers with their JSZ view (the leaders through
/// the gather, the others directly), every other live one by its identity only.
fn deployment_snapshot(
    deployment: &Deployment,
    whole: &dyn Fn(usize) -> bool,
    known: &[plan::KnownServer],
    taken_at: SystemTime,
) -> Snapshot {
    let leaders: BTreeSet<usize> = deployment.leaders().collect();
    let replies = deployment.online().filter(|i| whole(*i)).map(|i| {
        let reply = decode_reply(&deployment.reply(i)).expect("simulated reply decodes");
        let via = if leaders.contains(&i) {
            Via::Gather
        } else {
            Via::Direct
        };
        (reply, via)
    });
    let mut snapshot = Snapshot::from_replies(taken_at, replies, known);
    for i in deployment.online().filter(|i| !whole(*i)) {
        deployment.add_identity(&mut snapshot, i);
    }
    snapshot
}

/// Times each stage of the round on `deployment` without the network: the histories first learn
/// every server from its whole view (as after the follower sample went round), then `rounds`
/// large-group polls (leaders' views, 8 followers', everyone's identity) are split, recorded,
/// evaluated and reconciled. Medians.
fn steady_state(deployment: &Deployment, rounds: usize) -> SteadyState {
    let thresholds = Thresholds::default();
    let start = SystemTime::now();
    let mut histories = Histories::default();
    for k in 0..2 {
        let whole = deployment_snapshot(deployment, &|_| true, &[], start + Duration::from_secs(k));
        let parts = histories.split(&whole);
        histories.record_snapshots(&parts, &thresholds, start + Duration::from_secs(k));
    }
    let leaders: BTreeSet<usize> = deployment.leaders().collect();
    let followers: Vec<usize> = deployment
        .online()
        .filter(|i| !leaders.contains(i))
        .collect();
    let mut active = ActiveSet::default();
    let mut times: [Vec<f64>; 5] = Default::default();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for round in 0..rounds {
        let now = start + Duration::from_secs(2 + round as u64);
        let sample: BTreeSet<usize> = followers
            .iter()
            .cycle()
            .skip(round * plan::FOLLOWER_SAMPLE)
            .take(plan::FOLLOWER_SAMPLE)
            .copied()
            .collect();
        let t = Instant::now();
        let known = histories.known_servers();
        times[0].push(ms(t.elapsed()));
        let snapshot = deployment_snapshot(
            deployment,
            &|i| leaders.contains(&i) || sample.contains(&i),
            &known,
            now,
        );
        let t = Instant::now();
        let parts = histories.split(&snapshot);
        times[1].push(ms(t.elapsed()));
        let t = Instant::now();
        histories.record_snapshots(&parts, &thresholds, now);
        times[2].push(ms(t.elapsed()));
        let t = Instant::now();
        let groups = evaluate_groups(&parts, &histories, &thresholds, now);
        times[3].push(ms(t.elapsed()));
        let t = Instant::now();
        let evaluations: Vec<Evaluation> = groups
            .iter()
            .flat_map(|g| g.evaluations.iter().cloned())
            .collect();
        active = reconcile(&active, &Default::default(), &evaluations, now).0;
        times[4].push(ms(t.elapsed()));
    }
    let [known, split, record, evaluate, reconciled] = &mut times;
    SteadyState {
        servers: deployment.len(),
        groups: deployment.groups.len(),
        known_ms: median(known),
        split_ms: median(split),
        record_ms: median(record),
        evaluate_ms: median(evaluate),
        reconcile_ms: median(reconciled),
        findings: active.len(),
    }
}

impl SteadyState {
    fn row(&self, shape: &str) -> String {
        format!(
            "| `{shape}` | {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
            self.servers,
            self.groups,
            self.known_ms,
            self.split_ms,
            self.record_ms,
            self.evaluate_ms,
            self.reconcile_ms,
            self.known_ms + self.split_ms + self.record_ms + self.evaluate_ms + self.reconcile_ms,
            self.findings,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------------

async fn bench() {
    let sizes: Vec<usize> = std::env::var("BENCH_SCALE_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 1000, 5000]);
    let polls = env_u64("BENCH_SCALE_POLLS", 10) as usize;
    let idle_secs = env_u64("BENCH_IDLE_SECS", 60);
    let groups_shape =
        std::env::var("BENCH_GROUPS_SHAPE").unwrap_or_else(|_| DEFAULT_GROUPS_SHAPE.to_string());
    let load_before = loadavg();
    let others_before = other_processes();
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("nats-insights-scale-{}", std::process::id()));
    let (server, url) = start_server(&dir);

    let mut md = String::new();
    let _ = writeln!(
        md,
        "## 2. Scale: N servers in one meta group, and in many\n"
    );
    let _ = writeln!(md, "A simulator process answers the system account's requests as the N servers of one meta group, through a real nats-server on loopback: JSZ replies built on a reply captured from nats-server 2.15 (`tests/fixtures/healthy_5.json`) with the member lists real servers send (the leader lists every other member with its `active`; every follower lists every other member too), one leader, and every 50th member crashed (silent, 30 s unheard by the leader: N/50 findings expected). nats-insights polls it with its own pipeline functions in the benchmark process, {polls} polls after 3 uncounted ones: *cycle* is gather + the sources beyond JSZ (their own subsection below) + history + evaluate + reconcile; *received per poll* is the JSZ and IDZ replies; CPU is the process's user + system time per poll (10 ms resolution, averaged). RSS is the real binary's (`nats-insights run`, memory state, default settings) after 10 s watching the same simulator.\n");

    // Before: the full poll asks every server for its whole view; each lists every member.
    let mut before_rows = Vec::new();
    for &n in sizes.iter().filter(|n| **n <= 1000) {
        let alive = n - Deployment::single(n).crashed();
        let (sim, full_bytes) = start_simulator(&n.to_string(), &url);
        println!("scale: N = {n}, full poll (every view) ...");
        let mut f = poll_group(&url, polls.min(5), 2, true).await;
        drop(sim);
        before_rows.push(format!(
            "| {n} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {} / {} |",
            mib(full_bytes as f64),
            median(&mut f.cycle_ms.clone()),
            worst(&f.cycle_ms),
            median(&mut f.cpu_ms),
            f.answering,
            alive,
        ));
    }

    let mut rows = Vec::new();
    let mut extras_rows = Vec::new();
    let mut target_cycle = None;
    let mut target_rss = None;
    let mut single_row = None;
    for &n in &sizes {
        let (sim, _) = start_simulator(&n.to_string(), &url);
        println!("scale: N = {n}, large-group poll ...");
        let mut f = poll_group(&url, polls, 3, false).await;
        println!("scale: N = {n}, the binary ...");
        let service = watch_with_binary(
            std::slice::from_ref(&url),
            Duration::from_secs(3),
            Duration::from_secs(7),
            None,
        )
        .await;
        drop(sim);
        let expected = (0..n).filter(|i| i % 50 == 25).count();
        let cycle = median(&mut f.cycle_ms.clone());
        extras_rows.push(f.extras.row(&format!("one group of {n} in one cluster")));
        if n == 1000 {
            target_cycle = Some(cycle);
            target_rss = Some(service.peak_rss);
            let single = Deployment::single(n);
            single_row = Some(groups_row(
                "one group of 1,000 (the N = 1,000 row above)",
                &single,
                &mut f,
                &service,
            ));
        }
        rows.push(format!(
            "| {n} | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} ms | {} | {:.1} ms | {:.1} MiB ({:.1} MiB peak) | {:.1} % | {} of {expected} | {} |",
            cycle,
            worst(&f.cycle_ms),
            median(&mut f.gather_ms),
            median(&mut f.after_gather_ms),
            mib(median(&mut f.bytes)),
            median(&mut f.cpu_ms),
            service.rss,
            service.peak_rss,
            service.cpu_share * 100.0,
            f.findings.len(),
            if service.polls > 0.0 {
                format!("{:.0} ms, {}", service.poll_seconds / service.polls * 1e3, mib(service.received / service.polls))
            } else {
                "no poll".to_string()
            },
        ));
    }
    let many = match groups_shape.as_str() {
        "" | "0" => None,
        shape => Some(many_groups(shape, &url, polls).await),
    };
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = writeln!(md, "### After: the poll that grows linearly\n");
    let _ = writeln!(md, "Groups of more than {} members are polled as `Plan::Large`: the JSZ of every server that believes it leads (`leader_only`), every server's identity (`IDZ`, about 100 bytes each) and the whole views of {} followers that rotate from poll to poll. Smaller groups keep the full poll.\n", plan::FULL_POLL_MAX_MEMBERS, plan::FOLLOWER_SAMPLE);
    let _ = writeln!(md, "| N | cycle: median | worst | gather | evaluate | received per poll | CPU per poll | binary: RSS | binary: CPU (of one core) | findings raised | binary: poll time, received |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let _ = writeln!(md, "{row}");
    }
    let _ = writeln!(md, "\nTargets at N = 1,000: cycle under 100 ms (measured: {}), RSS under 64 MiB (measured peak: {}). The check evaluation alone is measured by Criterion below.\n",
        target_cycle.map_or("not run".to_string(), |c| format!("{c:.1} ms")),
        target_rss.map_or("not run".to_string(), |r| format!("{r:.1} MiB")));
    if let Some(many) = &many {
        extras_rows.push(many.extras_row.clone());
    }
    md.push_str(&extras_section(&extras_rows, polls));
    if let Some(many) = many {
        md.push_str(&many.markdown(single_row.as_deref(), polls));
    }
    let _ = writeln!(md, "### Before: every server's whole view\n");
    let _ = writeln!(md, "The poll nats-insights used for every group until this benchmark, still used up to {} members. Every reply lists every member, so one poll receives N² member entries (not run at 5,000: 1.9 GB per poll).\n", plan::FULL_POLL_MAX_MEMBERS);
    let _ = writeln!(md, "| N | one full gather | cycle: median | worst | CPU per poll | running members that answered in time |");
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for row in before_rows {
        let _ = writeln!(md, "{row}");
    }
    let _ = writeln!(md);
    md.push_str(&criterion_section());
    md.push_str(include_str!("PROFILING.md"));

    // Part 3: idle cost on a healthy 3-node cluster.
    println!("idle: the binary watching a healthy 3-node cluster for {idle_secs} s ...");
    let cluster = Cluster::start(ClusterOptions {
        size: 3,
        cluster_name: "bench-idle".to_string(),
        ..ClusterOptions::default()
    })
    .await
    .expect("start the idle cluster");
    let _ = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let urls = cluster.client_urls();
    let figures = watch_with_binary(
        &urls,
        Duration::from_secs(5),
        Duration::from_secs(idle_secs),
        Some(&cluster),
    )
    .await;
    drop(cluster);
    let _ = writeln!(md, "## 3. Idle cost\n");
    let _ = writeln!(md, "The real binary (`nats-insights run`, default settings: poll every 1 s, heartbeat every 10 s, memory state) watching a healthy 3-node cluster for {idle_secs} s after 5 s of warm-up. The servers' side is read from each server's `/connz` (connections named `nats-insights*`: the main one and one pinned per `--server` URL), before and after.\n");
    let (requests, sent, received) = figures.servers;
    let _ = writeln!(md, "| figure | measured | target |\n|---|---|---|");
    let _ = writeln!(
        md,
        "| CPU | {:.2} % of one core | under 1 % |",
        figures.cpu_share * 100.0
    );
    let _ = writeln!(
        md,
        "| RSS | {:.1} MiB (peak {:.1} MiB) | under 20 MiB |",
        figures.rss, figures.peak_rss
    );
    let _ = writeln!(
        md,
        "| polls | {:.0} in {idle_secs} s, {:.1} ms each on average | |",
        figures.polls,
        if figures.polls > 0.0 {
            figures.poll_seconds / figures.polls * 1e3
        } else {
            0.0
        }
    );
    let _ = writeln!(md, "| messages it sent to the servers | {:.1} per second ({requests:.0} in all: poll requests, the pinned connections' own-view requests, instance pings, heartbeats) | |", requests / idle_secs as f64);
    let _ = writeln!(
        md,
        "| bytes it sent | {:.0} per second | |",
        sent / idle_secs as f64
    );
    let _ = writeln!(md, "| bytes it received | {} per poll ({:.0} per second; replies, events, its own service traffic) | |", mib(if figures.polls > 0.0 { received / figures.polls } else { 0.0 }), received / idle_secs as f64);
    let _ = writeln!(
        md,
        "| JSZ reply bytes it counted itself | {} per poll | |\n",
        mib(if figures.polls > 0.0 {
            figures.received / figures.polls
        } else {
            0.0
        })
    );
    let _ = writeln!(md, "Each poll makes every server build its JSZ reply once (a scatter-gather of `$SYS.REQ.SERVER.PING.JSZ`) and the pinned connections ask their own server once more.\n");
    let _ = writeln!(
        md,
        "_Parts 2 and 3 took {:.0} s; load average {} before, {} after; {} other compiler or nats-server processes at the start, {} at the end._\n",
        started.elapsed().as_secs_f64(),
        load_before,
        loadavg(),
        others_before,
        other_processes()
    );
    let out = out_dir();
    std::fs::write(out.join("2-scale.md"), &md).expect("write the scale section");
    println!("\n{md}");
}

/// The subsection on the sources beyond JSZ, one row per deployment polled.
fn extras_section(rows: &[String], polls: usize) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### The sources beyond JSZ: what they add to each poll
"
    );
    let _ = writeln!(md, "After the JSZ gather, each poll asks a few servers directly for ROUTEZ, HEALTHZ (`js-meta-only`), RAFTZ (`_meta_`) and GATEWAYZ (the plan in `crates/core/src/observe/extras.rs`: HEALTHZ of {} members in rotation; ROUTEZ of as many of them as {} remote servers allow, only in clusters of at most {} servers answering; RAFTZ of every leader and one member in rotation, in groups of more than {} members only every {}th poll; GATEWAYZ of the same {} when the servers answering span several clusters), all at once, as `Engine::gather` does. The simulator answers them for every live server with replies shaped and sized like nats-server 2.15.1's (`Deployment::extra_reply`: ROUTEZ lists {} route connections to every other live server of the server's cluster, RAFTZ every other member of its group as a peer, GATEWAYZ one outbound and one inbound connection per other cluster of its group, none in a group of one cluster). Over the same {polls} counted polls as above: *requests per poll* by source; *answers* filed of the requests sent; *received* is the extras' reply bytes (mean per poll, and the largest poll), not counted in *received per poll* above (the binary's *received* counts them, its *poll time* does not: it ends with the JSZ gather); *time* is `gather_extras` alone, counted in *cycle* above, and its median share of the cycle.\n",
        extras::EXTRAS_PER_POLL,
        extras::ROUTEZ_REMOTES_PER_POLL,
        extras::ROUTEZ_CLUSTER_MAX,
        extras::RAFTZ_LARGE_GROUP,
        extras::RAFTZ_LARGE_EVERY,
        extras::EXTRAS_PER_POLL,
        nats_insights_tools::sim::ROUTES_PER_REMOTE,
    );
    let _ = writeln!(md, "| deployment | requests per poll: ROUTEZ / HEALTHZ / RAFTZ / GATEWAYZ | answers | received per poll: mean (largest) | time per poll: median (worst) | share of the cycle |");
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for row in rows {
        let _ = writeln!(md, "{row}");
    }
    let _ = writeln!(md);
    md
}

/// Messages and bytes the servers got from, and sent to, the connections named `nats-insights*`.
async fn connz_totals(cluster: &Cluster) -> (f64, f64, f64) {
    let mut totals = (0.0, 0.0, 0.0);
    for i in 0..cluster.size() {
        let Ok(connz) = cluster.monitor_json(i, "/connz?limit=1024").await else {
            continue;
        };
        for c in connz["connections"].as_array().into_iter().flatten() {
            if c["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("nats-insights"))
            {
                totals.0 += c["in_msgs"].as_f64().unwrap_or(0.0);
                totals.1 += c["in_bytes"].as_f64().unwrap_or(0.0);
                totals.2 += c["out_bytes"].as_f64().unwrap_or(0.0);
            }
        }
    }
    totals
}

/// The Criterion figures of `benches/evaluate.rs`, when `scripts/bench` ran it first.
fn criterion_section() -> String {
    let root = workspace_root().join("target/criterion");
    let mut md = String::from("### Check evaluation alone (Criterion)\n\n`cargo bench --bench evaluate`: `evaluate_all` (every check, on the assessment of the members) on snapshots decoded from the simulated replies, with a history that has seen them. Median of Criterion's estimate.\n\n| snapshot | N = 10 | N = 100 | N = 1,000 | target at 1,000 |\n|---|---|---|---|---|\n");
    for (shape, label) in [
        (
            "large",
            "large-group poll (leader, 8 followers, identities)",
        ),
        ("full", "every server's whole view"),
    ] {
        let mut cells = Vec::new();
        for n in [10, 100, 1000] {
            let path = root
                .join(format!("evaluate_{shape}"))
                .join(n.to_string())
                .join("new/estimates.json");
            let cell = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["median"]["point_estimate"].as_f64())
                .map_or("not run".to_string(), |ns| {
                    if ns >= 1e6 {
                        format!("{:.2} ms", ns / 1e6)
                    } else {
                        format!("{:.1} µs", ns / 1e3)
                    }
                });
            cells.push(cell);
        }
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | under 5 ms |",
            cells[0], cells[1], cells[2]
        );
    }
    md.push('\n');
    md
}
