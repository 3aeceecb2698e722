//! Live tests of the operations surface (issue step 5): `/metrics` and `/healthz` reflect a real
//! fault on a real cluster, in process and from the real binary started with a config file; the
//! listener holds under 2,000 idle sockets and Prometheus scrapes it over TLS with basic auth
//! (issue 26).

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nats_insights::findings::TransitionKind::Raised;
use nats_insights::http::MAX_CONNECTIONS;
use support::served::{get, ServedMonitor};
use support::{cluster, others, Events, EVENT_TIMEOUT};
use testbed::Stop;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// The value of one sample line (`name{labels}`), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// Scrapes until `ready` holds for the metrics text; panics with the last scrape otherwise.
async fn scrape_until(addr: SocketAddr, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some((200, _, body)) = get(addr, "/metrics").await {
            if ready(&body) {
                return body;
            }
            last = body;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("metrics never showed {what}; last scrape:\n{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_follow_a_killed_follower_and_a_leader_change() {
    let mut cluster = cluster(3).await;
    let served = ServedMonitor::start(&cluster).await;
    let addr = served.addr;

    let healthy = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match get(addr, "/healthz").await {
                Some((200, _, body)) => break body,
                other => assert!(Instant::now() < deadline, "never healthy: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(healthy.starts_with("ok"), "{healthy}");
    let online = |c: &str| format!("nats_insights_meta_members{{domain=\"{c}\",state=\"online\"}}");
    let offline =
        |c: &str| format!("nats_insights_meta_members{{domain=\"{c}\",state=\"offline\"}}");
    let text = scrape_until(addr, "three members online", |t| {
        t.lines()
            .any(|l| l.starts_with("nats_insights_meta_members{") && l.ends_with("\"online\"} 3"))
    })
    .await;
    // A group without a JetStream domain is labelled `default`: the label never follows the
    // cluster that leads.
    let c = "default";
    let quorum = format!("nats_insights_meta_quorum{{domain=\"{c}\"}}");
    let meta_001 = "nats_insights_findings_active{check=\"META_001\",severity=\"critical\",domain=\"default\"}";
    assert_eq!(sample(&text, &offline(c)), Some(0.0), "{text}");
    assert_eq!(sample(&text, &quorum), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            &format!("nats_insights_meta_quorum_needed{{domain=\"{c}\"}}")
        ),
        Some(2.0)
    );
    assert_eq!(sample(&text, meta_001), Some(0.0), "{text}");
    assert!(
        sample(&text, "nats_insights_polls_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(text.contains("# TYPE nats_insights_poll_duration_seconds histogram"));
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with EOF"
    );
    let (_, head, _) = get(addr, "/metrics").await.expect("scrape");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );

    // Kill a follower: once META_001 is raised the gauges say the same.
    let leader = cluster.meta_leader().await.expect("leader");
    let f = (0..3)
        .find(|i| cluster.server_name(*i) != leader)
        .expect("follower");
    let name = cluster.server_name(f);
    let others = others(3, &[f]);
    let mut events = Events::subscribe_via(&cluster, &others).await;
    cluster.stop(f, Stop::Kill).await.expect("kill");
    events
        .expect(Raised, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    let text = scrape_until(addr, "one member offline and META_001 active", |t| {
        sample(t, &offline(c)) == Some(1.0) && sample(t, meta_001) == Some(1.0)
    })
    .await;
    assert_eq!(sample(&text, &online(c)), Some(2.0), "{text}");
    assert_eq!(
        sample(&text, &quorum),
        Some(1.0),
        "two of three keep quorum"
    );
    assert_eq!(
        sample(
            &text,
            "nats_insights_findings_active{check=\"META_006\",severity=\"critical\",domain=\"default\"}"
        ),
        Some(0.0)
    );
    let (code, _, body) = get(addr, "/healthz").await.expect("healthz");
    assert_eq!(code, 200, "the monitor still polls: {body}");

    // Move the leadership to the other live node: the counter counts it.
    let target = others
        .iter()
        .copied()
        .find(|i| cluster.server_name(*i) != leader)
        .expect("the other live node");
    cluster.make_leader(target).await.expect("leader moved");
    scrape_until(addr, "a leader change", |t| {
        sample(t, "nats_insights_meta_leader_changes_total").is_some_and(|n| n >= 1.0)
    })
    .await;

    // The status page is served (tests/live/status_page.rs reads it in a browser), any other path is
    // refused, and the endpoint ends with the engine.
    assert_eq!(get(addr, "/").await.map(|r| r.0), Some(200));
    assert_eq!(get(addr, "/nothing-here").await.map(|r| r.0), Some(404));
    served.stop().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(addr, "/healthz").await.is_some() {
        assert!(
            Instant::now() < deadline,
            "still serving after the engine stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The real binary running `run --config` on `cluster` with `extra` TOML lines, and the address
/// its listener logged (`scheme` is `http` or `https`).
pub(crate) async fn start_binary(
    cluster: &testbed::Cluster,
    extra: &str,
    scheme: &str,
) -> (tokio::process::Child, SocketAddr) {
    let config = cluster.dir().join("nats-insights.toml");
    let servers: Vec<String> = cluster
        .client_urls()
        .iter()
        .map(|u| format!("{u:?}"))
        .collect();
    std::fs::write(
        &config,
        format!(
            "server = [{}]\nuser = {:?}\npoll-interval = \"500ms\"\nmetrics-listen = \"127.0.0.1:0\"\nlog = \"info\"\n{extra}",
            servers.join(", "),
            testbed::SYS_USER,
        ),
    )
    .expect("config written");
    // The password comes from the environment, as a systemd env file or a Secret would give it.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_nats-insights"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env_remove("NATS_URL")
        .env_remove("NATS_USER")
        .env_remove("INSIGHTS_WEB_CONFIG_FILE")
        .env("NATS_PASSWORD", testbed::SYS_PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let marker = format!("metrics on {scheme}://");
    let addr: SocketAddr = tokio::time::timeout(Duration::from_secs(20), async {
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split(&marker).nth(1) {
                if let Some(addr) = rest.split('/').next().and_then(|a| a.parse().ok()) {
                    return addr;
                }
            }
            seen.push(line);
        }
        panic!("the binary ended without serving metrics: {seen:#?}");
    })
    .await
    .expect("metrics address logged");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// Waits until plain `/healthz` answers 200.
pub(crate) async fn wait_healthy(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match get(addr, "/healthz").await {
            Some((200, _, _)) => break,
            other => assert!(Instant::now() < deadline, "never healthy: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binary_reads_a_config_file_and_serves_metrics_and_health() {
    let cluster = cluster(3).await;
    let (mut child, addr) = start_binary(&cluster, "", "http").await;
    wait_healthy(addr).await;
    let text = scrape_until(addr, "three members online", |t| {
        t.lines()
            .any(|l| l.starts_with("nats_insights_meta_members{") && l.ends_with("\"online\"} 3"))
    })
    .await;
    assert!(
        text.contains(&format!(
            "nats_insights_build_info{{version=\"{}\"}} 1",
            nats_insights::VERSION
        )),
        "{text}"
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Raises this process's soft limit of open files to its hard limit when it is below `want`
/// (prlimit, util-linux), so the test can hold thousands of sockets.
fn raise_open_files(want: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if soft >= want {
        return;
    }
    let out = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={want}:"))
        .output();
    assert!(
        matches!(&out, Ok(o) if o.status.success()),
        "this test holds {want} sockets; the soft limit of open files is {soft} and prlimit \
         could not raise it: {out:?} (raise `ulimit -n`)"
    );
}

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// `service.polls` of `/api/status.json`, once it answers.
async fn polls(addr: SocketAddr) -> Option<u64> {
    let (_, _, body) = get(addr, "/api/status.json").await?;
    let status: serde_json::Value = serde_json::from_str(&body).ok()?;
    status["service"]["polls"].as_u64()
}

/// Whether the server has closed this socket (EOF or reset), without waiting.
fn closed_by_server(mut socket: &std::net::TcpStream) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 64];
    match socket.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// 2,000 idle sockets (opened, never written to, kept open), one client dribbling its head, then
/// a sustained flood of new idle sockets: past the 256 the listener holds, the oldest idle ones
/// are closed; every idle one and the dribbler are dropped after the head timeout; all the while
/// the service polls, its descriptors stay bounded, and normal scrapes succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_sockets_leave_polling_and_scrapes_working() {
    const IDLE: usize = 2000;
    raise_open_files(IDLE as u64 * 3 + 1000);
    let cluster = cluster(3).await;
    let (mut child, addr) = start_binary(&cluster, "", "http").await;
    let pid = child.id().expect("pid");
    wait_healthy(addr).await;
    let before = polls(addr).await.expect("polls");
    let fds_before = open_fds(pid);

    let idle = tokio::task::spawn_blocking(move || {
        let mut sockets = Vec::with_capacity(IDLE);
        for _ in 0..IDLE {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
                Ok(socket) => sockets.push(socket),
                Err(error) => panic!("connect {} of {IDLE}: {error}", sockets.len() + 1),
            }
        }
        for socket in &sockets {
            socket.set_nonblocking(true).expect("nonblocking");
        }
        sockets
    })
    .await
    .expect("sockets opened");
    // One that sends a request line and then a byte a second, never finishing its head.
    let dribbler = tokio::spawn(async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let started = Instant::now();
        let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\n").await;
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if stream.write_all(b"X").await.is_err() {
                return Some(started.elapsed());
            }
        }
        None
    });

    // Past the limit, connections were closed at once (the oldest idle ones, for newer ones); the
    // service's descriptors stay bounded.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds = open_fds(pid);
    assert!(
        fds < fds_before + MAX_CONNECTIONS + 64,
        "{fds} descriptors open with {IDLE} idle sockets (from {fds_before})"
    );
    let refused = idle.iter().filter(|s| closed_by_server(s)).count();
    assert!(
        refused >= IDLE - MAX_CONNECTIONS - 100,
        "only {refused} of {IDLE} idle sockets were closed at once"
    );

    // Under the flood, a normal scrape succeeds and the service goes on polling.
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        if let Some((200, _, body)) = get(addr, "/metrics").await {
            break body;
        }
        assert!(Instant::now() < deadline, "no scrape got through in 30 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(text.contains("nats_insights_polls_total"), "{text}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if polls(addr).await.is_some_and(|n| n >= before + 5) {
            break;
        }
        assert!(Instant::now() < deadline, "the service stopped polling");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (code, _, body) = get(addr, "/healthz").await.expect("healthz");
    assert_eq!(code, 200, "{body}");

    // A sustained flood: a new idle socket every 4 ms for 10 s, far more than the head timeout
    // frees. Scrapes still get through (each takes the place of the oldest idle socket).
    let flooding = tokio::task::spawn_blocking(move || {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        let mut sockets = Vec::new();
        while std::time::Instant::now() < until {
            if let Ok(socket) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            {
                let _ = socket.set_nonblocking(true);
                sockets.push(socket);
            }
            std::thread::sleep(Duration::from_millis(4));
        }
        sockets
    });
    let (mut scraped, mut tried) = (0, 0);
    while !flooding.is_finished() {
        tried += 1;
        if matches!(get(addr, "/metrics").await, Some((200, _, _))) {
            scraped += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let flood = flooding.await.expect("flood");
    assert!(
        flood.len() > 1000,
        "only {} sockets opened in the flood",
        flood.len()
    );
    assert!(
        scraped >= 3 && scraped * 2 >= tried,
        "{scraped} of {tried} scrapes got through a flood of {} idle sockets",
        flood.len()
    );
    assert!(
        polls(addr).await.is_some_and(|n| n >= before + 10),
        "the service stopped polling under the flood"
    );

    // Every idle socket is dropped by the head timeout (5 s) or for a newer one, the dribbler
    // too, and the descriptors go back.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open = idle
            .iter()
            .chain(&flood)
            .filter(|s| !closed_by_server(s))
            .count();
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} idle sockets still open after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let dribbled = dribbler.await.expect("dribbler");
    assert!(
        dribbled.is_some_and(|t| t < Duration::from_secs(15)),
        "a client dribbling its head was kept for {dribbled:?}"
    );
    drop((idle, flood));
    assert!(
        open_fds(pid) < fds_before + 64,
        "descriptors not given back"
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// A free loopback port (bound and released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The targets of a Prometheus (`/api/v1/targets`) by job: (health, lastError).
async fn prometheus_targets(api: SocketAddr) -> Vec<(String, String, String)> {
    let Some((200, _, body)) = get(api, "/api/v1/targets").await else {
        return Vec::new();
    };
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    json["data"]["activeTargets"]
        .as_array()
        .map(|targets| {
            targets
                .iter()
                .map(|t| {
                    let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
                    (
                        t["labels"]["job"].as_str().unwrap_or_default().to_string(),
                        s("health"),
                        s("lastError"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Prometheus (Debian's package) scrapes the real binary over TLS with basic auth from a web
/// config file, as it scrapes an exporter: the target is up and its metrics are stored; a job
/// with a wrong password is down with 401, and a plain-HTTP request gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_over_tls_with_basic_auth_from_a_web_config_file() {
    let prometheus = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
    let cluster = cluster(3).await;
    let dir = cluster.dir().join("web");
    std::fs::create_dir_all(&dir).expect("dir");
    support::certs::make_certificates(&dir);
    let password = "scrape-secret";
    let hash = bcrypt::hash(password, 6).expect("bcrypt");
    std::fs::write(
        dir.join("web-config.yml"),
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n  min_version: TLS12\nbasic_auth_users:\n  prometheus: '{hash}'\n"
        ),
    )
    .expect("web config");
    let web_config = dir.join("web-config.yml");
    let (mut child, addr) = start_binary(
        &cluster,
        &format!("web-config-file = {:?}\n", web_config.display().to_string()),
        "https",
    )
    .await;
    // Plain HTTP to the TLS listener gets no HTTP answer.
    assert_eq!(get(addr, "/metrics").await, None);

    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let ca = dir.join("ca.pem").display().to_string();
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {ca:?}\n    basic_auth:\n      username: prometheus\n      password: {password:?}\n    static_configs:\n      - targets: [\"{addr}\"]\n"
        )
    };
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{}{}",
            job("nats-insights", password),
            job("wrong-password", "not-the-password"),
        ),
    )
    .expect("prometheus config");
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
    let mut server = tokio::process::Command::new(&prometheus)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={api}"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{prometheus} does not start ({e}): install Debian's prometheus package")
        });

    let deadline = Instant::now() + Duration::from_secs(60);
    let targets = loop {
        let targets = prometheus_targets(api).await;
        let health = |job: &str| {
            targets
                .iter()
                .find(|t| t.0 == job)
                .map(|t| (t.1.clone(), t.2.clone()))
        };
        if let (Some((up, _)), Some((down, error))) =
            (health("nats-insights"), health("wrong-password"))
        {
            if up == "up" && down == "down" && error.contains("401") {
                break targets;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never showed the target up and the wrong password down with 401: \
             {targets:?}\n{}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The scraped metrics are in Prometheus.
    let query = "/api/v1/query?query=nats_insights_polls_total%7Bjob%3D%22nats-insights%22%7D";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, _, body)) = get(api, query).await {
            let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let value = json["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok());
            if value.is_some_and(|v| v >= 1.0) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "nats_insights_polls_total never reached Prometheus; targets: {targets:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = server.start_kill();
    let _ = server.wait().await;
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// CPU time this process has used (user and system), from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the state field.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Servers that allow only 1 KiB per message: finding events are shortened to fit, the crash is
/// raised and resolved, and the service neither spins nor stops polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_a_tiny_max_payload_gets_shortened_events_without_a_hot_loop() {
    let mut cluster = testbed::Cluster::start(testbed::ClusterOptions {
        accounts_conf: Some(format!("{}\nmax_payload: 1024\n", testbed::ACCOUNTS_CONF)),
        ..testbed::ClusterOptions::default()
    })
    .await
    .expect("cluster");
    let served = ServedMonitor::start(&cluster).await;
    let polls = || async {
        let (_, _, body) = get(served.addr, "/api/status.json")
            .await
            .unwrap_or_default();
        let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        status["service"]["polls"].as_u64().unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while polls().await < 2 {
        assert!(Instant::now() < deadline, "the service never polled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    let f = (0..3)
        .find(|i| cluster.server_name(*i) != leader && cluster.server_name(*i) != served.attached)
        .expect("a follower the monitor is not attached to");
    let name = cluster.server_name(f);
    let mut events = Events::subscribe_via(&cluster, &others(3, &[f])).await;
    cluster.stop(f, Stop::Kill).await.expect("kill");
    let raised = events
        .expect(Raised, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    let size = serde_json::to_vec(&raised).expect("json").len();
    assert!(
        size <= 1024,
        "an event of {size} bytes arrived through a 1 KiB limit"
    );

    // Five seconds with the server still down: little CPU, and the polls go on.
    let (cpu, before) = (cpu_time(), polls().await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (used, after) = (cpu_time().saturating_sub(cpu), polls().await);
    assert!(used < Duration::from_millis(2500), "{used:?} of CPU in 5 s");
    assert!(after >= before + 3, "polls went from {before} to {after}");

    cluster.restart(f).await.expect("restart");
    events
        .expect(
            nats_insights::findings::TransitionKind::Resolved,
            "META_001",
            Some(&name),
            EVENT_TIMEOUT,
        )
        .await;
    served.stop().await;
}
