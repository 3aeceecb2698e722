//! Live tests of the operations surface (issue step 5): `/metrics` and `/healthz` reflect a real
//! fault on a real cluster, in process and from the real binary started with a config file.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nats_insights::findings::TransitionKind::Raised;
use support::served::{get, ServedMonitor};
use support::{cluster, others, Events, EVENT_TIMEOUT};
use testbed::Stop;
use tokio::io::AsyncBufReadExt;

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

    // The status page is served (tests/status_page.rs reads it in a browser), any other path is
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binary_reads_a_config_file_and_serves_metrics_and_health() {
    let cluster = cluster(3).await;
    let config = cluster.dir().join("nats-insights.toml");
    let servers: Vec<String> = cluster
        .client_urls()
        .iter()
        .map(|u| format!("{u:?}"))
        .collect();
    std::fs::write(
        &config,
        format!(
            "server = [{}]\nuser = {:?}\npoll-interval = \"500ms\"\nmetrics-listen = \"127.0.0.1:0\"\nlog = \"info\"\n",
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
        .env("NATS_PASSWORD", testbed::SYS_PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let addr: SocketAddr = tokio::time::timeout(Duration::from_secs(20), async {
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split("metrics on http://").nth(1) {
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

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match get(addr, "/healthz").await {
            Some((200, _, _)) => break,
            other => assert!(Instant::now() < deadline, "never healthy: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
