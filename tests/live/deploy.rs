//! Deployment as a NATS operator does it: every config in `deploy/` passes `nats-server -t`, the
//! least-privilege users of `deploy/insights-accounts.conf` run every check and the durable
//! findings stream, a missing permission is named, and TLS (client certificates, from a nats CLI
//! context) and nkey authentication work against real servers. The shipped files run end to end
//! with their narrow users (the service from deploy/nats-insights.toml, every client command from
//! deploy/nats-insights-client.toml, the preStop hook, rolling-restart.sh), no user but the
//! service's may answer or publish as the service, and a forged answer is not taken.

use crate::support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use nats_insights::connect::{verify_system_account, ConnectArgs, ConnectError};
use nats_insights::engine::EngineConfig;
use nats_insights::findings::TransitionKind;
use nats_insights::store::StoreSettings;
use support::{request_json, try_request_json, Events, Monitor, EVENT_TIMEOUT};
use testbed::{nats_server_bin, Cluster, ClusterOptions, Stop};
use tokio::io::AsyncBufReadExt;

const ADMIN_PASSWORD: &str = "admin-pw";
const INSIGHTS_PASSWORD: &str = "insights-pw";
const STATE_PASSWORD: &str = "state-pw";
const INSIGHTS_ADMIN_PASSWORD: &str = "insights-admin-pw";
const READER_PASSWORD: &str = "reader-pw";
const CLIENT_PASSWORD: &str = "client-pw";
const INBOX_PREFIX: &str = "_INBOX_insights";
const CLIENT_INBOX_PREFIX: &str = "_INBOX_insights_client";

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn deploy_file(name: &str) -> String {
    let path = deploy_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The passwords `deploy/insights-accounts.conf` reads from the server's environment.
fn password_env() -> Vec<(String, String)> {
    [
        ("NATS_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("INSIGHTS_PASSWORD", INSIGHTS_PASSWORD),
        ("INSIGHTS_STATE_PASSWORD", STATE_PASSWORD),
        ("INSIGHTS_ADMIN_PASSWORD", INSIGHTS_ADMIN_PASSWORD),
        ("INSIGHTS_READER_PASSWORD", READER_PASSWORD),
        ("INSIGHTS_CLIENT_PASSWORD", CLIENT_PASSWORD),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A cluster whose accounts are `accounts` (the shipped file, or a variant of it).
async fn least_privilege_cluster(size: usize, accounts: String) -> Cluster {
    Cluster::start(ClusterOptions {
        size,
        accounts_conf: Some(accounts),
        env: password_env(),
        admin: Some(("admin".to_string(), ADMIN_PASSWORD.to_string())),
        ..ClusterOptions::default()
    })
    .await
    .expect("cluster with the shipped accounts starts")
}

/// The service's system-account flags, exactly as the README tells an operator to run it.
fn insights_args(urls: Vec<String>) -> ConnectArgs {
    ConnectArgs {
        servers: urls,
        user: Some("insights".to_string()),
        password: Some(INSIGHTS_PASSWORD.to_string()),
        inbox_prefix: Some(INBOX_PREFIX.to_string()),
        ..ConnectArgs::default()
    }
}

fn user_args(urls: Vec<String>, user: &str, password: &str) -> ConnectArgs {
    ConnectArgs {
        servers: urls,
        user: Some(user.to_string()),
        password: Some(password.to_string()),
        ..ConnectArgs::default()
    }
}

#[test]
fn every_shipped_config_passes_nats_server_t() {
    let bin = nats_server_bin().expect("nats-server");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(deploy_dir()).expect("deploy/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("conf") {
            continue;
        }
        let out = Command::new(&bin)
            .arg("-t")
            .arg("-c")
            .arg(&path)
            .current_dir(deploy_dir())
            .envs(password_env())
            .output()
            .expect("nats-server -t runs");
        assert!(
            out.status.success(),
            "nats-server -t rejects {}:\n{}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked.push(path.file_name().map(|n| n.to_string_lossy().into_owned()));
    }
    assert!(checked.len() >= 3, "checked only {checked:?}");
    // The stream definition is a valid JetStream stream configuration.
    let stream: jetstream::stream::Config =
        serde_json::from_str(&deploy_file("findings-stream.json")).expect("stream config");
    assert_eq!(stream.name, "INSIGHTS_FINDINGS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_users_run_every_check_and_findings_are_replayable() {
    let cluster = least_privilege_cluster(3, deploy_file("insights-accounts.conf")).await;
    let urls = cluster.client_urls();

    create_findings_stream(&urls).await;

    // The service, with exactly the shipped permissions.
    let mut connections = insights_args(urls.clone())
        .open("nats-insights-least-privilege")
        .await
        .expect("insights connects");
    verify_system_account(
        &connections.main,
        &connections.denied,
        Duration::from_secs(5),
    )
    .await
    .expect("the insights user passes the startup check");
    let state_args = ConnectArgs {
        inbox_prefix: Some(INBOX_PREFIX.to_string()),
        ..user_args(urls.clone(), "insights_state", STATE_PASSWORD)
    };
    let (state, state_denied) = state_args
        .connect_watched("nats-insights-least-privilege-state")
        .await
        .expect("insights_state connects");
    connections.state = Some(state);
    let denied = connections.denied.clone();

    let admin = user_args(urls.clone(), "admin", ADMIN_PASSWORD)
        .connect("deploy-test-admin")
        .await
        .expect("admin connects");
    let mut events = Events::subscribe_client(admin.clone()).await;
    let config = EngineConfig {
        store: Some(StoreSettings {
            bucket: "insights".to_string(),
            replicas: 3,
            timeout: Duration::from_secs(1),
            instance: String::new(),
        }),
        ..EngineConfig::default()
    };
    let monitor = Monitor::start_connected(connections, config);
    wait_for_store(&admin, "healthy").await;

    // META_001 through a server's SHUTDOWN event, and resolved when it is back.
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    let followers: Vec<usize> = (0..3)
        .filter(|i| cluster.server_name(*i) != leader)
        .collect();
    let mut cluster = cluster;
    let raised = events
        .stop_raised_restart_resolved(&mut cluster, followers[0], Stop::Term)
        .await;

    // META_003 through LEADER_ELECTED advisories and polls.
    for _ in 0..2 {
        let before = cluster
            .wait_for_leader(Duration::from_secs(15))
            .await
            .expect("leader");
        cluster.step_down().await.expect("step down");
        wait_for_new_leader(&cluster, &before).await;
    }
    events
        .expect(TransitionKind::Raised, "META_003", None, EVENT_TIMEOUT)
        .await;

    // META_006 (and META_001 through direct requests to silent servers) when two of three crash.
    let leader = cluster
        .wait_for_leader(Duration::from_secs(15))
        .await
        .expect("leader");
    let keep = cluster.index_of(&leader).expect("leader index");
    let crashed: Vec<usize> = (0..3).filter(|i| *i != keep).collect();
    for i in &crashed {
        cluster.stop(*i, Stop::Kill).await.expect("kill");
    }
    events
        .expect(TransitionKind::Raised, "META_006", None, EVENT_TIMEOUT)
        .await;
    for i in &crashed {
        cluster.restart(*i).await.expect("restart");
    }
    events
        .expect(TransitionKind::Resolved, "META_006", None, EVENT_TIMEOUT)
        .await;

    // The API and micro discovery answer, and the state bucket works with its narrow user.
    let (_, status) = request_json(&admin, "$INSIGHTS.API.STATUS", "").await;
    assert_eq!(status["meta"]["cluster_size"], 3, "{status}");
    let (_, pong) = request_json(&admin, "$SRV.PING.nats-insights", "").await;
    assert_eq!(pong["name"], "nats-insights", "{pong}");
    wait_for_store(&admin, "healthy").await;
    assert_eq!(denied.latest(), None, "system-account permission denied");
    assert_eq!(state_denied.latest(), None, "state permission denied");

    // Automation, after the fact: a durable consumer replays the RAISED and its RESOLVED.
    let reader = user_args(urls.clone(), "insights_reader", READER_PASSWORD)
        .connect("deploy-test-reader")
        .await
        .expect("insights_reader connects");
    let js = jetstream::new(reader);
    // Two of its three servers were just restarted: the stream answers once its replicas have
    // elected a leader again, which can take seconds after the meta group is back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let stream = loop {
        match js.get_stream("INSIGHTS_FINDINGS").await {
            Ok(stream) => break stream,
            Err(error) if tokio::time::Instant::now() < deadline => {
                eprintln!("INSIGHTS_FINDINGS not answering yet: {error}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => panic!("reader sees the stream: {error}"),
        }
    };
    // Its stream may still be electing a leader after the faults: a reader retries what
    // JetStream answers "no responders" to for a while, as automation would.
    let consumer = loop {
        let created = stream
            .create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some("automation".to_string()),
                filter_subject: "$INSIGHTS.FINDING.META_001.>".to_string(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await;
        match created {
            Ok(consumer) => break consumer,
            Err(error) if tokio::time::Instant::now() < deadline => {
                eprintln!("the durable consumer cannot be made yet: {error}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => panic!("durable consumer: {error}"),
        }
    };
    let mut wanted = vec!["raised", "resolved"];
    // A pull that finds no responders (the stream's leader still moving after the faults) or
    // stays unanswered is started afresh, as automation's reader would, until the deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut messages = consumer.messages().await.expect("pull");
    while !wanted.is_empty() && Instant::now() < deadline {
        let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
        let message = match next {
            Ok(Some(Ok(message))) => message,
            failed => {
                match failed {
                    Ok(Some(Err(error))) => eprintln!("pull: {error}"),
                    _ => eprintln!("pull: nothing for 5 s, pulling again"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                match consumer.messages().await {
                    Ok(again) => messages = again,
                    Err(error) => eprintln!("pull again: {error}"),
                }
                continue;
            }
        };
        let event: serde_json::Value = serde_json::from_slice(&message.payload).expect("json");
        if event["finding"] == raised.finding.as_str() {
            let kind = event["event"].as_str().unwrap_or_default().to_string();
            assert!(
                message.subject.ends_with(&kind.to_uppercase()),
                "{} carries {kind}",
                message.subject
            );
            wanted.retain(|w| *w != kind);
        }
        message.ack().await.expect("ack");
    }
    assert!(
        wanted.is_empty(),
        "not replayed from INSIGHTS_FINDINGS for {}: {wanted:?}",
        raised.finding
    );
    monitor.stop().await;
}

/// Given one URL of a cluster whose servers do not advertise their client URLs and listen on
/// every address (as in Kubernetes), the least-privilege user finds every member through VARZ and
/// ROUTEZ and links each, with nothing denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_privilege_user_links_every_member_from_one_url_without_advertised_urls() {
    let cluster = Cluster::start(ClusterOptions {
        size: 3,
        accounts_conf: Some(deploy_file("insights-accounts.conf")),
        env: password_env(),
        admin: Some(("admin".to_string(), ADMIN_PASSWORD.to_string())),
        no_advertise: true,
        ..ClusterOptions::default()
    })
    .await
    .expect("cluster with the shipped accounts starts");
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let connections = insights_args(vec![cluster.client_url(0)])
        .open("nats-insights-least-privilege-links")
        .await
        .expect("insights connects");
    let denied = connections.denied.clone();
    let monitor = Monitor::start_connected(connections, EngineConfig::default());
    let admin = user_args(cluster.client_urls(), "admin", ADMIN_PASSWORD)
        .connect("deploy-test-admin")
        .await
        .expect("admin connects");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let status = try_request_json(&admin, "$INSIGHTS.API.STATUS", "")
            .await
            .unwrap_or_default();
        let links = status["service"]["links"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if links.len() == 3
            && links
                .iter()
                .all(|l| l["direct"] == true && l["source"] == "routez")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every member linked: {:#}",
            status["service"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(denied.latest().is_none(), "{:?}", denied.latest());
    monitor.stop().await;
}

async fn wait_for_new_leader(cluster: &Cluster, before: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(leader) = cluster.wait_for_leader(Duration::from_secs(2)).await {
            if leader != before {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no new leader after {before} stepped down");
}

/// The operator creates the durable findings stream from the shipped definition; returns the
/// JetStream context of the `insights_admin` user that did.
async fn create_findings_stream(urls: &[String]) -> jetstream::Context {
    let setup = user_args(urls.to_vec(), "insights_admin", INSIGHTS_ADMIN_PASSWORD)
        .connect("deploy-test-setup")
        .await
        .expect("insights_admin connects");
    let stream_config: jetstream::stream::Config =
        serde_json::from_str(&deploy_file("findings-stream.json")).expect("stream config");
    // A fresh cluster's meta group may still be settling (a first leader handing over): the
    // create is retried as an operator would, for a while.
    let js = jetstream::new(setup);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match js.create_stream(stream_config.clone()).await {
            Ok(_) => return js,
            Err(e) if Instant::now() < deadline => {
                eprintln!("deploy: INSIGHTS_FINDINGS not created yet ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("INSIGHTS_FINDINGS is not created within 30 s: {e}"),
        }
    }
}

/// The RAISED events of `finding` the findings stream kept (it drops copies by id).
async fn raises_kept(js: &jetstream::Context, finding: &str) -> Vec<String> {
    let stream = js
        .get_stream("INSIGHTS_FINDINGS")
        .await
        .expect("the findings stream");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: "$INSIGHTS.FINDING.META_001.RAISED".to_string(),
            ..Default::default()
        })
        .await
        .expect("ordered consumer");
    let pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await.expect("messages");
    let mut ids = Vec::new();
    for _ in 0..pending {
        let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(5), messages.next()).await
        else {
            break;
        };
        let event: serde_json::Value = serde_json::from_slice(&message.payload).expect("json");
        if event["finding"] == finding {
            ids.push(event["id"].as_str().unwrap_or_default().to_string());
        }
    }
    ids
}

/// Moves the findings stream's leader off `server`: a stream whose leader was just killed keeps
/// nothing published to it over core NATS until it elects another, which is about the stream,
/// not the ids under test.
async fn stream_leader_off(js: &jetstream::Context, server: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = match js.get_stream("INSIGHTS_FINDINGS").await {
            Ok(stream) => stream
                .cached_info()
                .cluster
                .as_ref()
                .and_then(|c| c.leader.clone()),
            Err(_) => None,
        };
        match leader.as_deref() {
            Some(l) if l != server => return,
            Some(_) => {
                let _: Result<serde_json::Value, _> = js
                    .request(
                        "STREAM.LEADER.STEPDOWN.INSIGHTS_FINDINGS".to_string(),
                        &serde_json::json!({}),
                    )
                    .await;
            }
            None => {}
        }
        assert!(
            Instant::now() < deadline,
            "the findings stream keeps its leader on {server}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Kills `f`, expects its META_001 raised, restarts it and expects the resolution; returns the
/// raise.
async fn crash_and_recover(
    cluster: &mut Cluster,
    events: &mut Events,
    js: &jetstream::Context,
    f: usize,
) -> nats_insights::publish::FindingEvent {
    stream_leader_off(js, &cluster.server_name(f)).await;
    events
        .stop_raised_restart_resolved(cluster, f, Stop::Kill)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ids_never_repeat_across_a_memory_restart_or_a_recreated_bucket() {
    let mut cluster = least_privilege_cluster(3, deploy_file("insights-accounts.conf")).await;
    let urls = cluster.client_urls();
    let js = create_findings_stream(&urls).await;
    let admin = user_args(urls.clone(), "admin", ADMIN_PASSWORD)
        .connect("deploy-test-admin")
        .await
        .expect("admin connects");
    // What `nats-insights watch` does: print each id once.
    let mut events = Events::subscribe_client(admin.clone()).await;
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    // The follower that leads neither the meta group nor the findings stream: a stream whose
    // leader was just killed keeps nothing published before its next election (core NATS
    // publishes), which is about the stream, not the ids.
    let stream_leader = js
        .get_stream("INSIGHTS_FINDINGS")
        .await
        .expect("the findings stream")
        .cached_info()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .unwrap_or_default();
    let f = (0..3)
        .find(|i| cluster.server_name(*i) != leader && cluster.server_name(*i) != stream_leader)
        .expect("a follower");
    let name = cluster.server_name(f);
    let memory = || async {
        let connections = insights_args(urls.clone())
            .open("nats-insights-ids")
            .await
            .expect("insights connects");
        Monitor::start_connected(connections, EngineConfig::default())
    };
    let durable = || async {
        let mut connections = insights_args(urls.clone())
            .open("nats-insights-ids")
            .await
            .expect("insights connects");
        let state = ConnectArgs {
            inbox_prefix: Some(INBOX_PREFIX.to_string()),
            ..user_args(urls.clone(), "insights_state", STATE_PASSWORD)
        };
        connections.state = Some(
            state
                .connect("nats-insights-ids-state")
                .await
                .expect("state"),
        );
        let config = EngineConfig {
            store: Some(StoreSettings {
                bucket: "insights".to_string(),
                replicas: 3,
                timeout: Duration::from_secs(1),
                instance: String::new(),
            }),
            ..EngineConfig::default()
        };
        Monitor::start_connected(connections, config)
    };

    // Memory mode: crash and recovery, the service restarted, the same crash again.
    let monitor = memory().await;
    wait_for_status(&admin).await;
    let first = crash_and_recover(&mut cluster, &mut events, &js, f).await;
    monitor.stop().await;
    let monitor = memory().await;
    wait_for_status(&admin).await;
    let second = crash_and_recover(&mut cluster, &mut events, &js, f).await;
    monitor.stop().await;
    assert_ne!(
        first.id, second.id,
        "a new crash after a memory-mode restart"
    );
    assert_eq!(
        first.episode, second.episode,
        "both counted from 1: the epoch differs"
    );
    assert_ne!(first.epoch, second.epoch);

    // A bucket: a crash, the bucket deleted and recreated by the next start, the crash again.
    let monitor = durable().await;
    wait_for_store(&admin, "healthy").await;
    let third = crash_and_recover(&mut cluster, &mut events, &js, f).await;
    monitor.stop().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = js.delete_key_value("insights").await {
        assert!(Instant::now() < deadline, "cannot delete the bucket: {e}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let monitor = durable().await;
    wait_for_store(&admin, "healthy").await;
    let fourth = crash_and_recover(&mut cluster, &mut events, &js, f).await;
    monitor.stop().await;
    assert_ne!(
        third.id, fourth.id,
        "a new crash after the bucket was recreated"
    );

    // Each raise reached `watch` and the findings stream (which drops copies by id) once.
    let raises: Vec<&str> = events
        .seen
        .iter()
        .filter(|e| e.finding == first.finding && e.event == TransitionKind::Raised)
        .map(|e| e.id.as_str())
        .collect();
    let distinct: std::collections::BTreeSet<&str> = raises.iter().copied().collect();
    assert_eq!(raises.len(), 4, "{:#?}", events.lines());
    assert_eq!(distinct.len(), 4, "{raises:?}");
    let kept = raises_kept(&js, &first.finding).await;
    assert_eq!(kept.len(), 4, "the stream kept {kept:?} of {name}'s raises");
}

async fn wait_for_status(client: &async_nats::Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = try_request_json(client, "$INSIGHTS.API.STATUS", "").await {
            if status["last_poll"].is_string()
                || status
                    .pointer("/service/last_poll")
                    .is_some_and(|p| p.is_string())
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the service never completed a poll");
}

/// Reads a child's output until a line matches or `limit` passes: whether one matched, and
/// every line read.
async fn line_within(
    output: impl tokio::io::AsyncRead + Unpin,
    limit: Duration,
    matches: impl Fn(&str) -> bool,
) -> (bool, Vec<String>) {
    let mut lines = tokio::io::BufReader::new(output).lines();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(limit, async {
        while let Ok(Some(line)) = lines.next_line().await {
            let hit = matches(&line);
            seen.push(line);
            if hit {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    (found, seen)
}

async fn wait_for_store(client: &async_nats::Client, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        if let Some(status) = try_request_json(client, "$INSIGHTS.API.STATUS", "").await {
            if status
                .pointer("/service/store/state")
                .and_then(|s| s.as_str())
                == Some(state)
                || status.pointer("/store/state").and_then(|s| s.as_str()) == Some(state)
            {
                return;
            }
            last = status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("store never {state}; last STATUS: {last}");
}

/// The shipped accounts with some lines (permissions) removed.
fn accounts_without(lines: &[&str]) -> String {
    let text = deploy_file("insights-accounts.conf");
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !lines.iter().any(|line| l.trim_start().starts_with(line)))
        .collect();
    assert_eq!(
        kept.len() + lines.len(),
        text.lines().count(),
        "each of {lines:?} is in the file once"
    );
    kept.join("\n")
}

/// The real binary, with no NATS_* or INSIGHTS_* variables from the test's environment.
fn binary() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_nats-insights"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_publish_permission_is_named_at_start() {
    // `*.JSZ` also matches PING.JSZ: both must go for the gather to be denied.
    let server = server_with_accounts(
        "no-jsz",
        accounts_without(&["\"$SYS.REQ.SERVER.PING.JSZ\"", "\"$SYS.REQ.SERVER.*.JSZ\""]),
    );
    let child = binary()
        .args(["run", "--user", "insights", "--inbox-prefix", INBOX_PREFIX])
        .args(["--server", &server.url()])
        .env("NATS_PASSWORD", INSIGHTS_PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the binary exits at start")
        .expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("nats-insights: ")
            && last.contains("denied publish to $SYS.REQ.SERVER.PING.JSZ"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_subscribe_permission_is_named_in_the_log() {
    let server = server_with_accounts(
        "no-shutdown",
        accounts_without(&["\"$SYS.SERVER.*.SHUTDOWN\""]),
    );
    let mut child = binary()
        .args(["run", "--user", "insights", "--inbox-prefix", INBOX_PREFIX])
        .args(["--server", &server.url()])
        .env("NATS_PASSWORD", INSIGHTS_PASSWORD)
        .env(
            "NATS_INSIGHTS_LOG",
            "warn,nats_insights=info,async_nats=off",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starts");
    let stderr = child.stderr.take().expect("stderr");
    let (found, seen) = line_within(stderr, Duration::from_secs(15), |line| {
        line.contains("permission denied") && line.contains("subscribe to $SYS.SERVER.*.SHUTDOWN")
    })
    .await;
    let _ = child.kill().await;
    assert!(found, "no log line names the denied subject: {seen:#?}");
}

/// One server (no cluster, no JetStream: the startup check needs only JSZ answers) with the
/// given accounts file.
fn server_with_accounts(name: &str, accounts: String) -> Server {
    Server::start_with_env(name, password_env(), move |port, dir| {
        std::fs::write(dir.join("accounts.conf"), &accounts).expect("accounts");
        format!("listen: 127.0.0.1:{port}\ninclude ./accounts.conf\n")
    })
}

/// A standalone nats-server owned by a test (killed on drop).
struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Server {
    fn start(name: &str, config: impl Fn(u16, &Path) -> String) -> Server {
        Server::start_with_env(name, Vec::new(), config)
    }

    fn start_with_env(
        name: &str,
        env: Vec<(String, String)>,
        config: impl Fn(u16, &Path) -> String,
    ) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = std::env::temp_dir().join(format!(
            "nats-insights-deploy-{name}-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let conf = dir.join("server.conf");
        std::fs::write(&conf, config(port, &dir)).expect("config");
        let log = std::fs::File::create(dir.join("server.log")).expect("log");
        let child = Command::new(nats_server_bin().expect("nats-server"))
            .envs(env)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen; see {}",
                dir.join("server.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, port, dir }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates_from_a_nats_context() {
    let certs = std::env::temp_dir().join(format!("nats-insights-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&certs);
    std::fs::create_dir_all(&certs).expect("dir");
    support::certs::make_certificates(&certs);
    let c = certs.display().to_string();
    let server = Server::start("tls", |port, _| {
        format!(
            "listen: 127.0.0.1:{port}\n\
             tls {{\n  cert_file: \"{c}/server.pem\"\n  key_file: \"{c}/server-key.pem\"\n  \
             ca_file: \"{c}/ca.pem\"\n  verify: true\n}}\n\
             accounts {{ SYS {{ users: [{{user: insights, password: secret}}] }} }}\n\
             system_account: SYS\n"
        )
    });

    // The operator's nats CLI context for this cluster: URL, user and the TLS files.
    let context = certs.join("insights-tls.json");
    std::fs::write(
        &context,
        serde_json::json!({
            "description": "nats-insights over mutual TLS",
            "url": server.url(),
            "user": "insights",
            "password": "secret",
            "cert": format!("{c}/client.pem"),
            "key": format!("{c}/client-key.pem"),
            "ca": format!("{c}/ca.pem"),
        })
        .to_string(),
    )
    .expect("context");
    let args = ConnectArgs {
        context: Some(context.display().to_string()),
        ..ConnectArgs::default()
    };
    let connections = args.open("nats-insights-tls").await.expect("TLS connect");
    assert!(connections.main.server_info().tls_required);
    verify_system_account(
        &connections.main,
        &connections.denied,
        Duration::from_secs(5),
    )
    .await
    .expect("system account over TLS");
    let monitor = Monitor::start_connected(connections, EngineConfig::default());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = try_request_json(&monitor.client, "$INSIGHTS.API.STATUS", "").await {
            break status;
        }
        assert!(Instant::now() < deadline, "no STATUS over TLS");
    };
    assert_eq!(status["type"], "io.nats.insights.v1.status_response");
    monitor.stop().await;

    // Without a client certificate the server refuses, and the error says where to look.
    let no_cert = ConnectArgs {
        servers: vec![server.url()],
        user: Some("insights".to_string()),
        password: Some("secret".to_string()),
        tls_ca: Some(certs.join("ca.pem")),
        ..ConnectArgs::default()
    };
    let refused = no_cert.connect("nats-insights-no-cert").await;
    assert!(refused.is_err(), "connected without a client certificate");
    // A flag overrides the context: a missing CA file is named.
    let bad_ca = ConnectArgs {
        tls_ca: Some(certs.join("missing-ca.pem")),
        ..args.clone()
    };
    let error = bad_ca
        .connect("nats-insights-bad-ca")
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("missing-ca.pem")),
        "{error:?}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&certs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nkey_user_from_a_seed_file() {
    let key = nkeys::KeyPair::new_user();
    let public = key.public_key();
    let server = Server::start("nkey", |port, _| {
        format!(
            "listen: 127.0.0.1:{port}\n\
             accounts {{ SYS {{ users: [{{nkey: {public}}}] }} }}\n\
             system_account: SYS\n"
        )
    });
    let seed_file = server.dir.join("insights.nk");
    std::fs::write(&seed_file, format!("{}\n", key.seed().expect("seed"))).expect("seed file");
    let args = ConnectArgs {
        servers: vec![server.url()],
        nkey: Some(seed_file.clone()),
        ..ConnectArgs::default()
    };
    let connections = args.open("nats-insights-nkey").await.expect("nkey connect");
    verify_system_account(
        &connections.main,
        &connections.denied,
        Duration::from_secs(5),
    )
    .await
    .expect("nkey user is in the system account");
    let monitor = Monitor::start_connected(connections, EngineConfig::default());
    let deadline = Instant::now() + Duration::from_secs(10);
    while try_request_json(&monitor.client, "$INSIGHTS.API.STATUS", "")
        .await
        .is_none()
    {
        assert!(Instant::now() < deadline, "no STATUS with the nkey user");
    }
    monitor.stop().await;

    // Another user's seed is refused with the authorization error.
    let other = server.dir.join("other.nk");
    let other_key = nkeys::KeyPair::new_user();
    std::fs::write(&other, other_key.seed().expect("seed")).expect("seed file");
    let refused = ConnectArgs {
        nkey: Some(other),
        ..args
    }
    .connect("nats-insights-wrong-nkey")
    .await;
    assert!(
        matches!(refused, Err(ConnectError::Auth { .. })),
        "{:?}",
        refused.err()
    );
}

/// A shipped TOML file with its example server URLs replaced by the cluster's and each `(from,
/// to)` replaced (each present), written to `dir`.
fn shipped_toml(name: &str, urls: &[String], replace: &[(&str, &str)], dir: &Path) -> PathBuf {
    let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    let mut text = deploy_file(name).replace(
        r#"["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]"#,
        &format!("[{}]", list.join(", ")),
    );
    assert!(!text.contains("nats://n1"), "{name}: an example URL left");
    for (from, to) in replace {
        assert!(text.contains(from), "{name} has no {from:?}");
        text = text.replace(from, to);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the config");
    path
}

fn scratch(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "nats-insights-deploy-{label}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// A client command of the real binary as the shipped client config runs it: exit code, stdout,
/// stderr.
async fn client_cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = binary()
        .arg("--config")
        .arg(config)
        .args(args)
        .env("NATS_PASSWORD", CLIENT_PASSWORD)
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("nats-insights runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The read-only client user, as a library connection (what the CLI opens).
async fn client_user(urls: Vec<String>) -> (async_nats::Client, nats_insights::connect::Denials) {
    ConnectArgs {
        inbox_prefix: Some(CLIENT_INBOX_PREFIX.to_string()),
        ..user_args(urls, "insights_client", CLIENT_PASSWORD)
    }
    .connect_watched("deploy-test-client")
    .await
    .expect("insights_client connects")
}

/// The environment and command of the NATS pods' preStop hook as shipped.
fn prestop_hook() -> (Vec<(String, String)>, String) {
    let path = deploy_dir().join("kubernetes/nats-prestop/statefulset-patch.yaml");
    let docs =
        yaml_rust2::YamlLoader::load_from_str(&std::fs::read_to_string(&path).expect("read"))
            .expect("YAML");
    let container = &docs[0]["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"]
        .as_vec()
        .expect("env")
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect();
    let command = container["lifecycle"]["preStop"]["exec"]["command"][2]
        .as_str()
        .expect("preStop command")
        .to_string();
    (env, command)
}

/// Waits until `status` as the client user exits 0 (a healthy group seen by the service).
async fn wait_until_healthy(config: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, out, err) = client_cli(config, &["status"]).await;
        if code == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "status never healthy: {code}\n{out}{err}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_configs_run_the_service_and_every_client_command_with_the_narrow_users() {
    let mut cluster = least_privilege_cluster(3, deploy_file("insights-accounts.conf")).await;
    let urls = cluster.client_urls();
    let dir = scratch("shipped");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    // The service as the systemd unit runs it: the shipped TOML (its URLs and port changed) and
    // the passwords of the env file.
    let listen = format!("metrics-listen = \"127.0.0.1:{port}\"");
    let service_toml = shipped_toml(
        "nats-insights.toml",
        &urls,
        &[("metrics-listen = \"127.0.0.1:9464\"", &listen)],
        &dir,
    );
    let log = std::fs::File::create(dir.join("service.log")).expect("log");
    let mut service = binary()
        .args(["run", "--config"])
        .arg(&service_toml)
        .env("NATS_PASSWORD", INSIGHTS_PASSWORD)
        .env("INSIGHTS_STATE_PASSWORD", STATE_PASSWORD)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the service starts");
    let client_toml = shipped_toml("nats-insights-client.toml", &urls, &[], &dir);
    wait_until_healthy(&client_toml).await;
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    let f = (0..3)
        .find(|i| cluster.server_name(*i) != leader)
        .expect("a follower");
    let follower = cluster.server_name(f);

    // Every client command as insights_client.
    let (code, out, err) = client_cli(&client_toml, &["status", "--json"]).await;
    assert_eq!(code, 0, "status: {out}{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("STATUS JSON");
    assert_eq!(status["service"]["store"]["state"], "healthy", "{status:#}");
    for args in [
        &["findings", "--resolved"][..],
        &["checks"],
        &["explain", "META_001"],
        &["wait", "healthy", "--timeout", "30s"],
        &["preflight", "restart", &follower],
    ] {
        let (code, out, err) = client_cli(&client_toml, args).await;
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert!(!err.contains("ignored an answer"), "{args:?}: {err}");
    }
    let (code, out, err) = client_cli(
        &client_toml,
        &["preflight", "restart", &leader, "--field", "leader"],
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "true\n"), "{err}");
    let (code, out, err) = client_cli(
        &client_toml,
        &["preflight", "restart", &follower, "--field", "leader"],
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "false\n"), "{err}");
    // HISTORY and EXPLAIN (no CLI command reads HISTORY), verified as the CLI verifies.
    let (client, client_denied) = client_user(urls.clone()).await;
    for (endpoint, body) in [
        (
            nats_insights::service::api::Endpoint::History,
            serde_json::json!({"limit": 5}),
        ),
        (
            nats_insights::service::api::Endpoint::Explain,
            serde_json::json!({"check": "META_006"}),
        ),
    ] {
        let answer =
            nats_insights::client::request(&client, endpoint, &body, Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("{endpoint:?}: {e}"));
        assert!(!answer.is_empty());
    }
    assert_eq!(client_denied.latest(), None, "the client user was denied");
    // forget-group is an operator action: refused to the read-only user.
    let (code, out, err) =
        client_cli(&client_toml, &["forget-group", "edge", "--timeout", "2s"]).await;
    assert_ne!(code, 0, "forget-group as insights_client: {out}{err}");

    // The NATS pods' preStop hook, as shipped (its URL pointed at this cluster, a shorter wait).
    let (env, command) = prestop_hook();
    let ask = command
        .split("|| true")
        .next()
        .expect("the preflight part")
        .replace(
            "/opt/insights/nats-insights",
            env!("CARGO_BIN_EXE_nats-insights"),
        )
        .replace("--wait 150s", "--wait 30s");
    let hook = binary_env(tokio::process::Command::new("sh"))
        .args(["-c", &ask])
        .envs(env.into_iter().filter(|(k, _)| k != "NATS_URL"))
        .env("NATS_URL", urls.join(","))
        .env("NATS_PASSWORD", CLIENT_PASSWORD)
        .env("POD_NAME", &follower)
        .output()
        .await
        .expect("the hook runs");
    assert!(
        hook.status.success(),
        "preStop: {}{}",
        String::from_utf8_lossy(&hook.stdout),
        String::from_utf8_lossy(&hook.stderr)
    );

    // rolling-restart.sh, dry run: its decisions from preflight's exit code and leader field.
    let roll = binary_env(tokio::process::Command::new("bash"))
        .arg(deploy_dir().join("rolling-restart.sh"))
        .args(["--restart", "false", "--dry-run", &leader, &follower])
        .env("NATS_INSIGHTS", env!("CARGO_BIN_EXE_nats-insights"))
        .env("NATS_INSIGHTS_CONFIG", &client_toml)
        .env("NATS_PASSWORD", CLIENT_PASSWORD)
        .output()
        .await
        .expect("rolling-restart.sh runs");
    let said = String::from_utf8_lossy(&roll.stderr);
    assert!(roll.status.success(), "{said}");
    assert!(
        said.contains(&format!("{leader} leads the meta group; would run"))
            && !said.contains(&format!("{follower} leads")),
        "{said}"
    );

    // watch: the finding events of a stopped follower.
    let mut watch = binary()
        .arg("--config")
        .arg(&client_toml)
        .arg("watch")
        .env("NATS_PASSWORD", CLIENT_PASSWORD)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("watch starts");
    let mut said = tokio::io::BufReader::new(watch.stderr.take().expect("stderr")).lines();
    let first = tokio::time::timeout(Duration::from_secs(15), said.next_line())
        .await
        .expect("watch says what it watches")
        .expect("stderr")
        .unwrap_or_default();
    assert!(first.starts_with("watching "), "{first}");
    cluster.stop(f, Stop::Term).await.expect("stop");
    let stdout = watch.stdout.take().expect("stdout");
    let (found, seen) = line_within(stdout, EVENT_TIMEOUT, |line| {
        line.contains("META_001") && line.contains(&follower)
    })
    .await;
    assert!(found, "watch printed no META_001 for {follower}: {seen:#?}");
    let _ = watch.kill().await;
    cluster.restart(f).await.expect("restart");
    let (code, out, err) = client_cli(
        &client_toml,
        &[
            "wait",
            "healthy",
            "--server-name",
            &follower,
            "--timeout",
            "60s",
        ],
    )
    .await;
    assert_eq!(code, 0, "wait healthy after the restart: {out}{err}");

    let _ = service.kill().await;
    let log = std::fs::read_to_string(dir.join("service.log")).unwrap_or_default();
    assert!(
        !log.contains("denied"),
        "the service was denied something:\n{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A command with no NATS_* or INSIGHTS_* variables from the test's environment.
fn binary_env(mut command: tokio::process::Command) -> tokio::process::Command {
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Waits for the server's refusal of `action` (`publish to`, `subscribe to`) on `subject`.
async fn denied(who: &str, denials: &nats_insights::connect::Denials, action: &str, subject: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if denials
            .latest()
            .is_some_and(|d| d.action == action && d.subject == subject)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{who} was not refused to {action} {subject}; latest {:?}",
            denials.latest()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_service_user_answers_or_publishes_as_the_service_and_forged_answers_are_not_taken(
) {
    let mut cluster = least_privilege_cluster(3, deploy_file("insights-accounts.conf")).await;
    let urls = cluster.client_urls();
    let connections = insights_args(urls.clone())
        .open("nats-insights-forgery")
        .await
        .expect("insights connects");
    let monitor = Monitor::start_connected(connections, EngineConfig::default());
    let admin = user_args(urls.clone(), "admin", ADMIN_PASSWORD)
        .connect("deploy-test-admin")
        .await
        .expect("admin connects");
    wait_for_status(&admin).await;

    // Every shipped user but the service's (and the two admins) is refused: answering the API,
    // beating as an HA peer, hearing the HA subjects, publishing findings.
    let mut beats = admin
        .subscribe("$INSIGHTS.HA.BEAT")
        .await
        .expect("subscribe");
    admin.flush().await.expect("flush");
    let users = [
        (
            "insights_client",
            CLIENT_PASSWORD,
            Some(CLIENT_INBOX_PREFIX),
        ),
        ("insights_state", STATE_PASSWORD, Some(INBOX_PREFIX)),
        ("insights_reader", READER_PASSWORD, None),
    ];
    for (user, password, inbox) in users {
        let (client, denials) = ConnectArgs {
            inbox_prefix: inbox.map(str::to_string),
            ..user_args(urls.clone(), user, password)
        }
        .connect_watched("deploy-test-forger")
        .await
        .unwrap_or_else(|e| panic!("{user} connects: {e}"));
        for subject in [
            "$INSIGHTS.API.PREFLIGHT",
            "$INSIGHTS.API.>",
            "$INSIGHTS.HA.>",
        ] {
            let _subscription = client.subscribe(subject).await.expect("subscribe leaves");
            client.flush().await.expect("flush");
            denied(user, &denials, "subscribe to", subject).await;
        }
        for subject in ["$INSIGHTS.HA.BEAT", "$INSIGHTS.FINDING.META_001.RAISED"] {
            client
                .publish(subject, r#"{"instance":"forged"}"#.into())
                .await
                .expect("publish leaves");
            client.flush().await.expect("flush");
            denied(user, &denials, "publish to", subject).await;
        }
    }
    // The INSIGHTS account's admin may publish there, but its subjects are not the system
    // account's: no beat arrives where the service listens.
    let insights_admin = user_args(urls.clone(), "insights_admin", INSIGHTS_ADMIN_PASSWORD)
        .connect("deploy-test-insights-admin")
        .await
        .expect("insights_admin connects");
    insights_admin
        .publish("$INSIGHTS.HA.BEAT", r#"{"instance":"forged"}"#.into())
        .await
        .expect("publish");
    insights_admin.flush().await.expect("flush");
    let heard = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(beat) = beats.next().await {
            if beat.payload.as_ref() == br#"{"instance":"forged"}"# {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(
        !heard,
        "a beat from the INSIGHTS account reached the system account"
    );

    // Where permissions allow it (the admin), a forged PREFLIGHT answer says "safe" at once.
    let mut forged = admin
        .subscribe("$INSIGHTS.API.PREFLIGHT")
        .await
        .expect("admin may subscribe");
    let forger = admin.clone();
    let forging = tokio::spawn(async move {
        while let Some(request) = forged.next().await {
            let Some(reply) = request.reply else { continue };
            let body = serde_json::json!({
                "type": "io.nats.insights.v1.preflight_response",
                "timestamp": "2030-01-01T00:00:00Z", "action": "restart", "server": "x",
                "safe": true, "leader": false, "verdict": "safe",
                "reasons": [], "wait_for": [], "steps": [],
            });
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Service-Id", "FORGED");
            let _ = forger
                .publish_with_headers(reply, headers, body.to_string().into())
                .await;
        }
    });
    admin.flush().await.expect("flush");
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    let followers: Vec<usize> = (0..3)
        .filter(|i| cluster.server_name(*i) != leader)
        .collect();
    let down = followers[0];
    let other = cluster.server_name(followers[1]);
    cluster.stop(down, Stop::Kill).await.expect("kill");
    let (client, _) = client_user(urls.clone()).await;
    let body = serde_json::json!({"action": "restart", "server": other});
    // The service's answer is taken, never the forgery: not safe, one of three being down.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut refusals = 0;
    while refusals < 5 {
        let raw = nats_insights::client::request(
            &client,
            nats_insights::service::api::Endpoint::Preflight,
            &body,
            Duration::from_secs(5),
        )
        .await
        .expect("a verified answer");
        let answer: serde_json::Value = serde_json::from_slice(&raw).expect("JSON");
        if answer["verdict"] == "unsafe" {
            refusals += 1;
        } else {
            assert_ne!(answer["server"], "x", "the forged answer was taken");
            assert!(Instant::now() < deadline, "never refused: {answer}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    // With the service gone, only the forgery answers: no answer is taken, exit code 3.
    monitor.stop().await;
    let dir = scratch("forged");
    let client_toml = shipped_toml("nats-insights-client.toml", &urls, &[], &dir);
    let (code, out, err) = client_cli(
        &client_toml,
        &["preflight", "restart", &other, "--timeout", "2s"],
    )
    .await;
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("no verified answer on $INSIGHTS.API.PREFLIGHT"),
        "{err}"
    );
    forging.abort();
    cluster.restart(down).await.expect("restart");
    let _ = std::fs::remove_dir_all(&dir);
}
