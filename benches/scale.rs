//! Scale and idle-cost benchmark (`scripts/bench`, parts 2 and 3). Part 2: a simulator process
//! answers the system account's JSZ and IDZ requests as the N servers of one meta group, over a
//! real nats-server, and nats-insights polls it: per poll the gather + evaluate time, the bytes
//! received and the CPU time (in-process, the pipeline's own functions), and the RSS of the real
//! binary watching it. Part 3: the real binary watching a healthy 3-node cluster for a minute,
//! and the load it puts on the servers. Writes `target/bench/2-scale.md`; figures, never fails on
//! timing.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use nats_insights::checks::{evaluate_all, Thresholds};
use nats_insights::findings::{reconcile, ActiveSet};
use nats_insights::history::History;
use nats_insights::observe::gather::{self, GatherTiming, Plan};
use nats_insights::testbed::{Cluster, ClusterOptions, ACCOUNTS_CONF, SYS_PASSWORD, SYS_USER};

mod common;
use common::sim::Deployment;
use common::{env_u64, loadavg, other_processes};

/// Argument that turns this program into the simulator (a child process of the benchmark).
const SIMULATE: &str = "--simulate";

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
/// leader), `$SYS.REQ.SERVER.PING.IDZ` and the direct `$SYS.REQ.SERVER.<id>.JSZ|IDZ` of live
/// servers, as the servers of `deployment`.
async fn simulate(deployment: Deployment, url: &str) {
    let n = deployment.len();
    // Built on first use: at 5,000 members all replies together are 1.9 GB, and the large-group
    // poll only ever asks for a few of them.
    let mut replies: Vec<Option<bytes::Bytes>> = vec![None; n];
    let identities: Vec<bytes::Bytes> = (0..n).map(|i| deployment.identity(i).into()).collect();
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
            _ => continue,
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
    let bin = nats_insights::testbed::nats_server_bin().expect("nats-server binary");
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

/// What polling one simulated group gave, per poll.
struct PollFigures {
    cycle_ms: Vec<f64>,
    gather_ms: Vec<f64>,
    evaluate_ms: Vec<f64>,
    bytes: Vec<f64>,
    cpu_ms: Vec<f64>,
    findings: usize,
    answering: usize,
}

/// Polls the simulator `polls` times as the engine does (gather, history, evaluate, reconcile),
/// after `warmup` polls that are not counted. `full` forces the full poll whatever the size.
async fn poll_group(url: &str, polls: usize, warmup: usize, full: bool) -> PollFigures {
    let client =
        async_nats::ConnectOptions::with_user_and_password(SYS_USER.into(), SYS_PASSWORD.into())
            .name("scale-bench")
            .connect(url)
            .await
            .expect("connect to the bench server");
    let thresholds = Thresholds::default();
    let timing = GatherTiming::default();
    let mut history = History::default();
    let mut active = ActiveSet::default();
    let mut group_size = None;
    let mut figures = PollFigures {
        cycle_ms: Vec::new(),
        gather_ms: Vec::new(),
        evaluate_ms: Vec::new(),
        bytes: Vec::new(),
        cpu_ms: Vec::new(),
        findings: 0,
        answering: 0,
    };
    for round in 0..(warmup + polls) {
        let cpu = cpu_time(None);
        let started = Instant::now();
        let known = history.known_servers();
        let plan = if full {
            Plan::Full
        } else {
            let followers: Vec<_> = known
                .iter()
                .filter(|k| k.name != "s0001")
                .cloned()
                .collect();
            Plan::for_group(
                group_size,
                gather::FULL_POLL_MAX_MEMBERS,
                &followers,
                round as u64,
            )
        };
        let snapshot = match gather::poll(&client, &known, &plan, timing).await {
            Ok(s) => s,
            Err(e) => panic!("poll failed: {e}"),
        };
        let gathered = started.elapsed();
        let now = SystemTime::now();
        history.record_snapshot(&snapshot, now);
        let (meta, evaluations) = evaluate_all(&snapshot, &history, &thresholds, now);
        let (next, _transitions) = reconcile(&active, &evaluations, now);
        active = next;
        let cycle = started.elapsed();
        let cpu = cpu_time(None).saturating_sub(cpu);
        group_size = meta.as_ref().map(|m| m.cluster_size).or(group_size);
        if round >= warmup {
            figures.cycle_ms.push(cycle.as_secs_f64() * 1e3);
            figures.gather_ms.push(gathered.as_secs_f64() * 1e3);
            figures
                .evaluate_ms
                .push((cycle - gathered).as_secs_f64() * 1e3);
            figures.bytes.push(snapshot.bytes as f64);
            figures.cpu_ms.push(cpu.as_secs_f64() * 1e3);
            // The real nats-server under the simulator answers too: count only the group's members.
            figures.answering = snapshot.views.values().filter(|v| v.meta.is_some()).count();
        }
        // The engine polls once a second; leave the servers (and the simulator) that much air.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    figures.findings = active.len();
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
    /// Messages and bytes the servers got from it, and bytes they sent it, in the window.
    servers: (f64, f64, f64),
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

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nats-insights"))
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
// The benchmark
// ---------------------------------------------------------------------------------------------

async fn bench() {
    let sizes: Vec<usize> = std::env::var("BENCH_SCALE_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 1000, 5000]);
    let polls = env_u64("BENCH_SCALE_POLLS", 10) as usize;
    let idle_secs = env_u64("BENCH_IDLE_SECS", 60);
    let load_before = loadavg();
    let others_before = other_processes();
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("nats-insights-scale-{}", std::process::id()));
    let (server, url) = start_server(&dir);

    let mut md = String::new();
    let _ = writeln!(md, "## 2. Scale: one meta group of N servers\n");
    let _ = writeln!(md, "A simulator process answers the system account's requests as the N servers of one meta group, through a real nats-server on loopback: JSZ replies built on a reply captured from nats-server 2.15 (`tests/fixtures/healthy_5.json`) with the member lists real servers send (the leader lists every other member with its `active`; every follower lists every other member too), one leader, and every 50th member crashed (silent, 30 s unheard by the leader: N/50 findings expected). nats-insights polls it with its own pipeline functions in the benchmark process, {polls} polls after 3 uncounted ones: *cycle* is gather + history + evaluate + reconcile; CPU is the process's user + system time per poll (10 ms resolution, averaged). RSS is the real binary's (`nats-insights run`, memory state, default settings) after 10 s watching the same simulator.\n");

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
    let mut target_cycle = None;
    let mut target_rss = None;
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
        if n == 1000 {
            target_cycle = Some(cycle);
            target_rss = Some(service.peak_rss);
        }
        rows.push(format!(
            "| {n} | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} ms | {} | {:.1} ms | {:.1} MiB ({:.1} MiB peak) | {:.1} % | {} of {expected} | {} |",
            cycle,
            worst(&f.cycle_ms),
            median(&mut f.gather_ms),
            median(&mut f.evaluate_ms),
            mib(median(&mut f.bytes)),
            median(&mut f.cpu_ms),
            service.rss,
            service.peak_rss,
            service.cpu_share * 100.0,
            f.findings,
            if service.polls > 0.0 {
                format!("{:.0} ms, {}", service.poll_seconds / service.polls * 1e3, mib(service.received / service.polls))
            } else {
                "no poll".to_string()
            },
        ));
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = writeln!(md, "### After: the poll that grows linearly\n");
    let _ = writeln!(md, "Groups of more than {} members are polled as `Plan::Large`: the JSZ of every server that believes it leads (`leader_only`), every server's identity (`IDZ`, about 100 bytes each) and the whole views of {} followers that rotate from poll to poll. Smaller groups keep the full poll.\n", gather::FULL_POLL_MAX_MEMBERS, gather::FOLLOWER_SAMPLE);
    let _ = writeln!(md, "| N | cycle: median | worst | gather | evaluate | received per poll | CPU per poll | binary: RSS | binary: CPU (of one core) | findings raised | binary: poll time, received |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let _ = writeln!(md, "{row}");
    }
    let _ = writeln!(md, "\nTargets at N = 1,000: cycle under 100 ms (measured: {}), RSS under 64 MiB (measured peak: {}). The check evaluation alone is measured by Criterion below.\n",
        target_cycle.map_or("not run".to_string(), |c| format!("{c:.1} ms")),
        target_rss.map_or("not run".to_string(), |r| format!("{r:.1} MiB")));
    let _ = writeln!(md, "### Before: every server's whole view\n");
    let _ = writeln!(md, "The poll nats-insights used for every group until this benchmark, still used up to {} members. Every reply lists every member, so one poll receives N² member entries (not run at 5,000: 1.9 GB per poll).\n", gather::FULL_POLL_MAX_MEMBERS);
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
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    std::fs::write(out.join("2-scale.md"), &md).expect("write the scale section");
    println!("\n{md}");
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
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/criterion");
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
