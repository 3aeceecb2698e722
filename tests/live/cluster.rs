//! Live tests: real nats-server clusters on loopback, real faults, the monitor running in-process,
//! and the finding events observed the way an operator's `nats sub '$INSIGHTS.FINDING.>'` sees them.

use crate::support;

use std::time::{Duration, Instant};

use nats_insights::engine::EngineConfig;
use nats_insights::findings::TransitionKind::{Raised, Resolved};
use support::{
    assert_valid, cluster, follower, leader_other_than, move_leader, others, proxied_cluster,
    ready, request_json, try_request_json, Events, Monitor, EVENT_TIMEOUT,
};
use testbed::{Stop, APP_PASSWORD, APP_USER};

fn reasons(event: &nats_insights::publish::FindingEvent) -> Vec<String> {
    event.evidence["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|x| x["reason"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_of_a_follower_is_raised_at_once_and_resolved_after_restart() {
    let mut cluster = cluster(3).await;
    let f = follower(&cluster).await;
    let mut events = Events::subscribe_via(&cluster, &others(3, &[f])).await;
    let monitor = Monitor::start(&cluster).await;
    ready(&monitor, 3).await;

    let name = cluster.server_name(f);
    let t0 = Instant::now();
    cluster.stop(f, Stop::Term).await.expect("stop");
    let raised = events
        .expect(Raised, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    let latency = t0.elapsed();
    assert!(
        reasons(&raised).contains(&"departed".to_string()),
        "{:#}",
        raised.evidence
    );
    assert!(
        latency < Duration::from_secs(5),
        "graceful stop took {latency:?}"
    );
    assert_eq!(raised.revision, 1);
    assert_eq!(raised.cluster.as_deref(), Some("insights-test"));

    cluster.restart(f).await.expect("restart");
    let resolved = events
        .expect(Resolved, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    assert_eq!(resolved.finding, raised.finding);
    assert!(resolved.revision > raised.revision);
    assert!(resolved.resolved_at.is_some());

    events.drain(Duration::from_secs(3)).await;
    events.assert_raised_then_resolved(&raised.finding);
    assert!(
        // SERVER_101 (info) notes the restart itself.
        events
            .seen
            .iter()
            .all(|e| ["META_001", "SERVER_101"].contains(&e.check.as_str())),
        "{:#?}",
        events.lines()
    );
    monitor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_of_a_follower_is_raised_long_before_the_servers_own_offline_flag() {
    let mut cluster = cluster(3).await;
    let f = follower(&cluster).await;
    let mut events = Events::subscribe_via(&cluster, &others(3, &[f])).await;
    let monitor = Monitor::start(&cluster).await;
    ready(&monitor, 3).await;

    let name = cluster.server_name(f);
    cluster.stop(f, Stop::Kill).await.expect("kill");
    let raised = events
        .expect(Raised, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;

    // The leader's own view still calls the crashed peer online: we did not wait for it.
    let views = cluster.jsz_all().await.expect("jsz");
    let leader_view = views
        .iter()
        .find(|v| v["data"]["meta_cluster"]["leader"] == v["server"]["name"])
        .expect("leader answers");
    let entry = leader_view["data"]["meta_cluster"]["replicas"]
        .as_array()
        .and_then(|r| r.iter().find(|p| p["name"] == name.as_str()))
        .expect("crashed peer listed");
    assert_ne!(
        entry["offline"], true,
        "server flagged it offline already: {entry}"
    );
    assert!(!reasons(&raised).contains(&"offline_flag".to_string()));

    cluster.restart(f).await.expect("restart");
    events
        .expect(Resolved, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    events.drain(Duration::from_secs(2)).await;
    events.assert_raised_then_resolved(&raised.finding);
    monitor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_killed_raises_quorum_lost_with_the_missing_members() {
    let mut cluster = cluster(3).await;
    let mut events = Events::subscribe_via(&cluster, &[0]).await;
    let monitor = Monitor::start(&cluster).await;
    ready(&monitor, 3).await;

    // The operator's subscriber is on node 0; nodes 1 and 2 die.
    let (a, b) = (cluster.server_name(1), cluster.server_name(2));
    cluster.stop(1, Stop::Kill).await.expect("kill");
    cluster.stop(2, Stop::Kill).await.expect("kill");
    let quorum = events.expect(Raised, "META_006", None, EVENT_TIMEOUT).await;
    assert_eq!(
        quorum.evidence["expected_members"], 3,
        "{:#}",
        quorum.evidence
    );
    assert_eq!(quorum.evidence["quorum_needed"], 2);
    let missing: Vec<&str> = quorum.evidence["not_answering"]
        .as_array()
        .expect("not_answering")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        missing.contains(&a.as_str()) || missing.contains(&b.as_str()),
        "{:#}",
        quorum.evidence
    );
    assert!(
        quorum.evidence["members_answered"]
            .as_u64()
            .expect("answered")
            <= 2
    );
    assert!(!quorum.remediation.is_empty());

    cluster.restart(1).await.expect("restart");
    cluster.restart(2).await.expect("restart");
    events
        .expect(Resolved, "META_006", None, EVENT_TIMEOUT)
        .await;
    events.drain(Duration::from_secs(4)).await;
    let history = events.history_of(&quorum.finding);
    assert_eq!(history.first(), Some(&"raised"), "{:#?}", events.lines());
    assert_eq!(history.last(), Some(&"resolved"));
    assert_eq!(history.iter().filter(|h| **h == "raised").count(), 1);
    for server in [&a, &b] {
        let key = format!("META_001/default/{server}");
        events.assert_raised_then_resolved(&key);
    }
    monitor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_two_of_five_keeps_quorum_and_raises_only_the_offline_replicas() {
    let mut cluster = cluster(5).await;
    let mut events = Events::subscribe(&cluster).await;
    let monitor = Monitor::start(&cluster).await;
    ready(&monitor, 5).await;

    let leader = cluster.meta_leader().await.expect("leader");
    let victims: Vec<usize> = (0..5)
        .filter(|i| cluster.server_name(*i) != leader)
        .take(2)
        .collect();
    for v in &victims {
        cluster.stop(*v, Stop::Kill).await.expect("kill");
    }
    for v in &victims {
        let name = cluster.server_name(*v);
        events
            .expect(Raised, "META_001", Some(&name), EVENT_TIMEOUT)
            .await;
    }
    events.drain(Duration::from_secs(5)).await;
    assert!(
        events.seen.iter().all(|e| e.check.as_str() != "META_006"),
        "3 of 5 keep quorum: {:#?}",
        events.lines()
    );
    for v in &victims {
        cluster.restart(*v).await.expect("restart");
    }
    for v in &victims {
        let name = cluster.server_name(*v);
        events
            .expect(Resolved, "META_001", Some(&name), EVENT_TIMEOUT)
            .await;
    }
    monitor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_keeps_working_when_its_own_server_dies() {
    let mut cluster = cluster(3).await;
    let monitor = Monitor::start(&cluster).await;
    ready(&monitor, 3).await;

    let attached = monitor.client.server_info().server_name;
    let index = cluster.index_of(&attached).expect("attached to a node");
    let mut events = Events::subscribe_via(&cluster, &others(3, &[index])).await;
    cluster.stop(index, Stop::Kill).await.expect("kill");
    events
        .expect(Raised, "META_001", Some(&attached), EVENT_TIMEOUT)
        .await;
    // It answers STATUS through another server. (STATUS follows the event by the moment the
    // round takes to record what it published.)
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, status) = request_json(&monitor.client, "$INSIGHTS.API.STATUS", "").await;
        if status["status"] == "critical" {
            break;
        }
        assert!(Instant::now() < deadline, "{status:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(monitor.client.server_info().server_name, attached);

    cluster.restart(index).await.expect("restart");
    events
        .expect(Resolved, "META_001", Some(&attached), EVENT_TIMEOUT)
        .await;
    monitor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_heartbeat_and_micro_discovery_answer_on_a_healthy_cluster() {
    let cluster = cluster(3).await;
    let config = EngineConfig {
        heartbeat_interval: Duration::from_secs(1),
        ..EngineConfig::default()
    };
    let watcher = cluster.sys_client(0).await.expect("client");
    let mut heartbeats = watcher.subscribe("$INSIGHTS.HEARTBEAT").await.expect("sub");
    let mut events = Events::subscribe(&cluster).await;
    let monitor = Monitor::start_with(&cluster, config).await;
    ready(&monitor, 3).await;

    let (_, status) = request_json(&monitor.client, "$INSIGHTS.API.STATUS", "{}").await;
    assert_valid("status_response.json", &status);
    assert_eq!(status["status"], "ok", "{status:#}");
    assert_eq!(status["meta"]["cluster_size"], 3);
    assert_eq!(status["meta"]["quorum_needed"], 2);
    assert!(status["meta"]["leader"].is_string());
    let members = status["meta"]["members"].as_array().expect("members");
    assert!(members.iter().all(|m| m["state"] == "online"), "{status:#}");

    let beat = tokio::time::timeout(
        Duration::from_secs(5),
        futures::StreamExt::next(&mut heartbeats),
    )
    .await
    .expect("heartbeat in time")
    .expect("heartbeat");
    let beat: serde_json::Value = serde_json::from_slice(&beat.payload).expect("json");
    assert_valid("heartbeat.json", &beat);
    assert_eq!(beat["instance"], monitor.instance.as_str());

    let (_, ping) = request_json(&monitor.client, "$SRV.PING.nats-insights", "").await;
    assert_eq!(ping["name"], "nats-insights");
    assert_eq!(ping["type"], "io.nats.micro.v1.ping_response");

    // Runbooks over the API.
    let (_, explained) = request_json(
        &monitor.client,
        "$INSIGHTS.API.EXPLAIN",
        r#"{"check":"META_006"}"#,
    )
    .await;
    assert_valid("explain_response.json", &explained);
    let (reply, _) = request_json(
        &monitor.client,
        "$INSIGHTS.API.EXPLAIN",
        r#"{"check":"META_404"}"#,
    )
    .await;
    let headers = reply.headers.expect("error headers");
    assert_eq!(
        headers.get("Nats-Service-Error-Code").map(|v| v.as_str()),
        Some("404")
    );

    // A malformed request gets a micro error reply, not silence.
    let (reply, _) = request_json(&monitor.client, "$INSIGHTS.API.STATUS", "{not json").await;
    let headers = reply.headers.expect("error headers");
    assert_eq!(
        headers.get("Nats-Service-Error-Code").map(|v| v.as_str()),
        Some("400")
    );

    // A healthy cluster raises nothing.
    events.drain(Duration::from_secs(3)).await;
    assert!(events.seen.is_empty(), "{:#?}", events.lines());
    monitor.stop().await;
}

/// Runs the real binary and returns (exit code, stderr).
fn run_binary(args: &[&str]) -> (Option<i32>, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nats-insights"))
        .args(args)
        .env_remove("NATS_URL")
        .env_remove("NATS_USER")
        .env_remove("NATS_PASSWORD")
        .output()
        .expect("binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_failures_give_one_clear_line_and_a_nonzero_exit() {
    let cluster = cluster(3).await;
    let url = cluster.client_url(0);
    let app = [
        "run",
        "-s",
        &url,
        "--user",
        APP_USER,
        "--password",
        APP_PASSWORD,
    ];
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["run", "-s", &url, "--user", "sys", "--password", "wrong"],
            &["authorization failed"],
        ),
        // Names the account it landed in.
        (&app, &["not in the system account", "APP"]),
        (
            &[
                "run",
                "-s",
                "nats://127.0.0.1:1",
                "--user",
                "sys",
                "--password",
                "sys",
            ],
            &["no NATS server reachable"],
        ),
        (&["run", "-s", &url, "--user", "sys"], &["needs --password"]),
    ];
    for (args, wanted) in cases {
        let (code, err) = run_binary(args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        for w in wanted {
            assert!(err.contains(w), "{args:?}: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        let error_lines = err
            .lines()
            .filter(|l| l.starts_with("nats-insights: "))
            .count();
        assert_eq!(error_lines, 1, "one error line: {err}");
    }
}

fn thresholds_with(f: impl FnOnce(&mut nats_insights::checks::Thresholds)) -> EngineConfig {
    let mut config = EngineConfig::default();
    f(&mut config.thresholds);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_step_downs_raise_flapping_at_once_and_it_resolves_when_the_window_passes() {
    let mut cluster = cluster(3).await;
    let mut events = Events::subscribe(&cluster).await;
    let window = Duration::from_secs(15);
    let monitor = Monitor::start_with(&cluster, thresholds_with(|t| t.flap_window = window)).await;
    ready(&monitor, 3).await;

    let first = move_leader(&mut cluster).await;
    events.drain(Duration::from_secs(2)).await;
    assert!(
        events.seen.is_empty(),
        "one change is allowed: {:#?}",
        events.lines()
    );
    let elected = Instant::now();
    let second = move_leader(&mut cluster).await;
    let raised = events.expect(Raised, "META_003", None, EVENT_TIMEOUT).await;
    let latency = elected.elapsed();
    assert!(
        latency < Duration::from_secs(5),
        "flapping reported after {latency:?}"
    );
    assert_eq!(raised.severity.as_str(), "warning");
    let changes = raised.evidence["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 2, "{:#}", raised.evidence);
    assert_eq!(changes[0]["to"], first.as_str());
    assert_eq!(changes[1]["to"], second.as_str());

    let resolved = events
        .expect(Resolved, "META_003", None, window + EVENT_TIMEOUT)
        .await;
    assert_eq!(resolved.finding, raised.finding);
    events.drain(Duration::from_secs(2)).await;
    events.assert_raised_then_resolved(&raised.finding);
    assert!(
        events.seen.iter().all(|e| e.check.as_str() == "META_003"),
        "step-downs are no outage: {:#?}",
        events.lines()
    );
    monitor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_of_the_leader_raises_disagreement_while_it_claims_leadership_and_resolves_after_healing(
) {
    let mut cluster = proxied_cluster().await;
    // Leader changes are part of this fault; flapping is tested on its own.
    let monitor = Monitor::start_with(&cluster, thresholds_with(|t| t.flap_max = 10)).await;
    ready(&monitor, 3).await;
    // Findings published through the isolated server stay on its side (core NATS): keep the
    // monitor's own connection, and the operator's subscriber, on the majority side.
    let attached = monitor.client.server_info().server_name;
    let (leader, index, majority) = leader_other_than(&mut cluster, &attached).await;
    let mut events = Events::subscribe_via(&cluster, &majority).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let raised =
        support::partition_leader_expect_disagreement(&cluster, &mut events, index, &leader).await;
    assert_eq!(
        raised.evidence["groups"].as_array().map(Vec::len),
        Some(2),
        "{:#}",
        raised.evidence
    );
    events
        .expect(Raised, "META_001", Some(&leader), EVENT_TIMEOUT)
        .await;

    cluster.heal(index).expect("heal");
    events
        .expect(Resolved, "META_002", None, Duration::from_secs(40))
        .await;
    events
        .expect(Resolved, "META_001", Some(&leader), EVENT_TIMEOUT)
        .await;
    events.drain(Duration::from_secs(3)).await;
    let history = events.history_of(&raised.finding);
    assert_eq!(history.first(), Some(&"raised"));
    assert_eq!(history.last(), Some(&"resolved"), "{:#?}", events.lines());
    assert_eq!(history.iter().filter(|h| **h == "raised").count(), 1);
    monitor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_rename_without_peer_remove_reports_stale_peers_and_the_recovery() {
    let mut cluster = cluster(3).await;
    let mut events = Events::subscribe(&cluster).await;
    let monitor = Monitor::start(&cluster).await;
    ready(&monitor, 3).await;

    let old: Vec<String> = (0..3).map(|i| cluster.server_name(i)).collect();
    for i in 0..3 {
        cluster.stop(i, Stop::Term).await.expect("stop");
        cluster
            .rename(i, &format!("m{}", i + 1))
            .await
            .expect("rename");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    // Every server restarts in turn, so a subscriber misses what is published while its server
    // is down (core NATS): judge by what the monitor holds, through STATUS.
    let deadline = Instant::now() + Duration::from_secs(40);
    let (status, quorum) = loop {
        let status = try_request_json(&monitor.client, "$INSIGHTS.API.STATUS", "")
            .await
            .unwrap_or_default();
        let quorum = status["findings"].as_array().and_then(|f| {
            f.iter()
                .find(|x| {
                    x["check"] == "META_006"
                        && x["evidence"]["stale_peers"]
                            .as_array()
                            .is_some_and(|s| s.len() == 3)
                })
                .cloned()
        });
        if let Some(quorum) = quorum {
            break (status, quorum);
        }
        assert!(
            Instant::now() < deadline,
            "no META_006 naming 3 stale peers: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let stale: Vec<String> = quorum["evidence"]["stale_peers"]
        .as_array()
        .expect("stale peers")
        .iter()
        .filter_map(|n| n.as_str().map(String::from))
        .collect();
    assert_eq!(
        stale, old,
        "the old names, remembered from before the renames"
    );
    assert_eq!(
        quorum["evidence"]["members_online"].as_u64().map(|n| n < 3),
        Some(true)
    );
    let remediation = quorum["remediation"].as_array().expect("remediation");
    let commands: Vec<&str> = remediation
        .iter()
        .filter_map(|r| r["command"].as_str())
        .collect();
    for peer in quorum["evidence"]["offline"]
        .as_array()
        .expect("offline")
        .iter()
    {
        let id = peer["peer"].as_str().expect("peer id");
        assert!(
            commands
                .iter()
                .any(|c| c.contains("peer-remove") && c.contains(id)),
            "peer-remove {id}: {commands:#?}"
        );
    }
    let steps: String = remediation
        .iter()
        .filter_map(|r| r["step"].as_str())
        .collect();
    assert!(steps.contains("one at a time"), "{steps}");
    assert!(
        steps.contains(&format!(
            "{} members",
            quorum["evidence"]["expected_members"]
        )),
        "{steps}"
    );
    // Each old member's META_001 says it is a probable stale peer.
    for name in &old {
        let finding = status["findings"]
            .as_array()
            .and_then(|f| {
                f.iter()
                    .find(|x| x["check"] == "META_001" && x["server"] == name.as_str())
            })
            .unwrap_or_else(|| panic!("META_001 for {name}: {status:#}"));
        assert_eq!(finding["evidence"]["stale_peer"], true, "{finding:#}");
        assert!(finding["summary"]
            .as_str()
            .is_some_and(|s| s.contains("stale peer")));
    }
    // The group grew (3 to 5: the last rename joined no group with a leader) without any member
    // leaving: META_102 says so, with the stale-peer warning.
    let resized = status["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|x| x["check"] == "META_102"))
        .unwrap_or_else(|| panic!("META_102: {status:#}"));
    assert_eq!(resized["evidence"]["from"], 3, "{resized:#}");
    assert_eq!(
        resized["evidence"]["left"],
        serde_json::json!([]),
        "{resized:#}"
    );
    assert!(
        resized["summary"]
            .as_str()
            .is_some_and(|s| s.contains("No member left")),
        "{resized:#}"
    );
    // What the subscriber did receive follows the contract (validated on receipt).
    events.drain(Duration::from_secs(1)).await;
    monitor.stop().await;
}

/// Waits until `f` returns `Some` for a reply of `subject`, polling; panics with the last reply.
async fn wait_for_reply<T>(
    client: &async_nats::Client,
    subject: &str,
    body: &str,
    timeout: Duration,
    f: impl Fn(&serde_json::Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let reply = try_request_json(client, subject, body)
            .await
            .unwrap_or_default();
        if let Some(found) = f(&reply) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{subject} {body}: not as expected within {timeout:?}: {reply:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn error_code(reply: &async_nats::Message) -> Option<String> {
    reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error-Code"))
        .map(|v| v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_discovery_every_endpoint_and_a_python_client_conform() {
    let mut cluster = cluster(3).await;
    // Non-default thresholds must show in CHECKS; flap_max keeps the step-down below quiet.
    let monitor = Monitor::start_with(&cluster, thresholds_with(|t| t.flap_max = 10)).await;
    ready(&monitor, 3).await;
    let client = &monitor.client;

    // A leader change reaches HISTORY.
    let new_leader = move_leader(&mut cluster).await;
    let history = wait_for_reply(
        client,
        "$INSIGHTS.API.HISTORY",
        r#"{"limit": 10}"#,
        Duration::from_secs(10),
        |h| {
            h["entries"]
                .as_array()
                .filter(|e| e.iter().any(|x| x["kind"] == "leader_change"))
                .map(|_| h.clone())
        },
    )
    .await;
    assert_valid("history_response.json", &history);
    assert_eq!(
        history["entries"][0]["kind"], "leader_change",
        "{history:#}"
    );
    assert_eq!(history["entries"][0]["to"], new_leader.as_str());

    // Micro discovery replies validate against the official schemas.
    let (_, ping) = request_json(client, "$SRV.PING.nats-insights", "").await;
    support::assert_valid_micro("ping_response.json", &ping);
    let id = ping["id"].as_str().expect("service id").to_string();
    assert_eq!(ping["metadata"]["instance"], monitor.instance.as_str());
    let (_, info) = request_json(client, &format!("$SRV.INFO.nats-insights.{id}"), "").await;
    support::assert_valid_micro("info_response.json", &info);
    let mut names: Vec<&str> = info["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    names.sort_unstable();
    let mut every: Vec<&str> = nats_insights::service::api::Endpoint::ALL
        .iter()
        .map(|e| e.name())
        .collect();
    every.sort_unstable();
    assert_eq!(names, every);
    assert!(names.contains(&"PREFLIGHT"), "{names:?}");

    // Every endpoint's reply validates against its schema.
    for (subject, body, schema) in [
        ("STATUS", "", "status_response.json"),
        (
            "FINDINGS",
            r#"{"include_resolved": true, "limit": 1000}"#,
            "findings_response.json",
        ),
        ("CHECKS", "{}", "checks_response.json"),
        ("HISTORY", "", "history_response.json"),
        (
            "EXPLAIN",
            r#"{"check": "META_003"}"#,
            "explain_response.json",
        ),
    ] {
        let (reply, value) = request_json(client, &format!("$INSIGHTS.API.{subject}"), body).await;
        assert_eq!(error_code(&reply), None, "{subject}: {:?}", reply.headers);
        assert_valid(schema, &value);
    }
    let (_, status) = request_json(client, "$INSIGHTS.API.STATUS", "").await;
    assert_eq!(status["service"]["servers_answering"], 3, "{status:#}");
    assert_eq!(status["meta"]["leader"], new_leader.as_str());
    let (_, checks) = request_json(client, "$INSIGHTS.API.CHECKS", "").await;
    let flap = checks["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == "META_003"))
        .expect("META_003")
        .clone();
    assert_eq!(flap["settings"][0]["value"], "10", "{flap:#}");
    assert_eq!(flap["settings"][0]["default"], "1");
    assert!(flap["threshold"]
        .as_str()
        .is_some_and(|t| t.contains("more than 10 times within 10m")));

    // The same API from Python (nats-py): discovery, every endpoint, error replies.
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/api_conformance.py"
    );
    let started = Instant::now();
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .arg(cluster.client_url(0))
        .arg(testbed::SYS_USER)
        .arg(testbed::SYS_PASSWORD)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("python conformance finishes")
        .expect("python3 runs (scripts/test installs nats-py)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python conformance failed ({:?}):\n{stdout}\n{stderr}",
        output.status.code()
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    eprintln!("{} in {:?}", stdout.trim(), started.elapsed());

    // Bad requests are error replies, counted per endpoint in $SRV.STATS; the service keeps going.
    let stats_subject = format!("$SRV.STATS.nats-insights.{id}");
    let errors_of = |stats: &serde_json::Value, name: &str| {
        stats["endpoints"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["name"] == name))
            .and_then(|e| e["num_errors"].as_u64())
            .unwrap_or(0)
    };
    let (_, before) = request_json(client, &stats_subject, "").await;
    for (subject, body, code) in [
        ("FINDINGS", r#"{"check": "META_999"}"#, "404"),
        ("FINDINGS", r#"{"limit": 5000}"#, "400"),
        ("HISTORY", r#"{"limt": 5}"#, "400"),
        ("CHECKS", r#"{"check": "META_001"}"#, "400"),
    ] {
        let (reply, _) = request_json(client, &format!("$INSIGHTS.API.{subject}"), body).await;
        assert_eq!(
            error_code(&reply).as_deref(),
            Some(code),
            "{subject} {body}"
        );
        assert!(reply.payload.is_empty());
    }
    let huge = " ".repeat(nats_insights::service::MAX_REQUEST_BYTES + 10);
    let (reply, _) = request_json(client, "$INSIGHTS.API.HISTORY", &huge).await;
    assert_eq!(error_code(&reply).as_deref(), Some("413"));
    let (_, after) = request_json(client, &stats_subject, "").await;
    support::assert_valid_micro("stats_response.json", &after);
    assert_eq!(
        errors_of(&after, "FINDINGS"),
        errors_of(&before, "FINDINGS") + 2
    );
    assert_eq!(
        errors_of(&after, "HISTORY"),
        errors_of(&before, "HISTORY") + 2
    );
    for endpoint in after["endpoints"].as_array().expect("endpoints") {
        assert_valid("stats_data.json", &endpoint["data"]);
    }
    let history_data = after["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == "HISTORY"))
        .map(|e| e["data"].clone())
        .expect("HISTORY stats");
    assert_eq!(history_data["rejected"]["413"], 1, "{history_data:#}");
    assert!(history_data["polls"].as_u64().is_some_and(|p| p >= 2));
    let (_, status) = request_json(client, "$INSIGHTS.API.STATUS", "").await;
    assert_valid("status_response.json", &status);
    monitor.stop().await;
}

/// The member row of `name` in `status` output, split into columns.
fn member_row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|first| first.trim_end_matches('*') == name)
        })
        .unwrap_or_else(|| panic!("no row for {name} in:\n{table}"))
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_command_agrees_with_the_cluster_and_exits_like_a_nagios_check() {
    use tokio::io::AsyncBufReadExt;

    let mut cluster = cluster(3).await;
    let f = follower(&cluster).await;
    let name = cluster.server_name(f);
    let mut events = Events::subscribe_via(&cluster, &others(3, &[f])).await;
    let monitor = Monitor::start(&cluster).await;
    ready(&monitor, 3).await;
    let survivors: Vec<String> = others(3, &[f])
        .iter()
        .map(|i| cluster.client_url(*i))
        .collect();
    let urls = survivors.join(",");
    let auth = ["--user", "sys", "--password", "sys"];
    let with = |command: &str, extra: &[&'static str]| -> Vec<String> {
        let mut args = vec![command.to_string(), "-s".to_string(), urls.clone()];
        args.extend(auth.iter().map(|s| s.to_string()));
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        support::run_cli(&refs).await
    };

    // Healthy: exit 0, every member online, the real leader starred.
    let (code, out, err) = run(with("status", &[])).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("nats-insights: OK"), "{out}");
    assert!(!out.contains('\x1b'), "no colour when not a terminal");
    let leader = cluster.meta_leader().await.expect("leader");
    for i in 0..3 {
        let row = member_row(&out, &cluster.server_name(i));
        assert_eq!(
            row[0].ends_with('*'),
            cluster.server_name(i) == leader,
            "{out}"
        );
        assert_eq!(row[4], "✓", "ONLINE column: {out}");
    }

    // `watch` prints each event as one line as it arrives.
    let mut watcher = tokio::process::Command::new(env!("CARGO_BIN_EXE_nats-insights"))
        .args(with("watch", &[]))
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("watch starts");
    let mut lines = tokio::io::BufReader::new(watcher.stdout.take().expect("stdout")).lines();
    let mut notes = tokio::io::BufReader::new(watcher.stderr.take().expect("stderr")).lines();
    let subscribed = tokio::time::timeout(Duration::from_secs(10), notes.next_line())
        .await
        .expect("watch reports that it subscribed")
        .expect("stderr")
        .unwrap_or_default();
    assert!(
        subscribed.starts_with("watching $INSIGHTS.FINDING.> on "),
        "{subscribed}"
    );

    cluster.stop(f, Stop::Kill).await.expect("kill");
    events
        .expect(Raised, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    let (code, out, err) = run(with("status", &[])).await;
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.starts_with("nats-insights: CRITICAL"), "{out}");
    let row = member_row(&out, &name);
    assert_eq!(row[4], "✗", "the killed member is offline: {out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("CRITICAL") && l.contains("META_001") && l.contains(&name)),
        "the finding is listed under the table: {out}"
    );
    let (code, json, _) = run(with("status", &["--json"])).await;
    assert_eq!(code, Some(2));
    let json: serde_json::Value = serde_json::from_str(&json).expect("--json is the raw response");
    assert_valid("status_response.json", &json);

    let (code, out, err) = run(with("findings", &["--check", "META_001"])).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!("CRITICAL META_001 Offline meta replica · {name}")),
        "{out}"
    );
    assert!(out.contains("  → "), "remediation steps: {out}");
    let (code, _, err) = run(with("findings", &["--check", "META_999"])).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("(404)") && err.contains("unknown check META_999"),
        "{err}"
    );

    let raised_line = tokio::time::timeout(EVENT_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("RAISED") && line.contains("META_001") && line.contains(&name) {
                return line;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("watch printed the raised event");
    assert!(raised_line.contains(" critical "), "{raised_line}");

    cluster.restart(f).await.expect("restart");
    events
        .expect(Resolved, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    let (code, out, err) = run(with("status", &[])).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let (_, out, _) = run(with("findings", &["--resolved"])).await;
    assert!(
        out.contains(&format!("RESOLVED META_001 Offline meta replica · {name}")),
        "{out}"
    );
    let (_, history) = request_json(&monitor.client, "$INSIGHTS.API.HISTORY", "").await;
    let mine: Vec<&str> = history["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["server"] == name.as_str() && e["check"] == "META_001")
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert_eq!(mine, ["resolved", "raised"], "newest first: {history:#}");
    let (code, out, _) = run(with("checks", &[])).await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains("META_006") && out.contains("--offline-after 3s"),
        "{out}"
    );
    let resolved_line = tokio::time::timeout(EVENT_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("RESOLVED") && line.contains(&name) {
                return line;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("watch printed the resolved event");
    assert!(resolved_line.contains("META_001"));
    let _ = watcher.kill().await;

    // No service: exit 3 with a sentence that says what to check; same when NATS is unreachable.
    monitor.stop().await;
    // The service unsubscribes just after the engine stops: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (code, out, err) = loop {
        let (code, out, err) = run(with("status", &[])).await;
        if code == Some(3) || Instant::now() > deadline {
            break (code, out, err);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(code, Some(3), "{out}{err}");
    assert_eq!(
        err.trim(),
        "nats-insights: no nats-insights service answered on $INSIGHTS.API.STATUS: is it running, and are you in the system account?"
    );
    let (code, _, err) = support::run_cli(&[
        "status",
        "-s",
        "nats://127.0.0.1:1",
        "--user",
        "sys",
        "--password",
        "sys",
    ])
    .await;
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("no NATS server reachable"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_moves_off_a_server_that_is_cut_off_or_in_lame_duck_and_keeps_reporting() {
    let mut cluster = proxied_cluster().await;
    let monitor = Monitor::start_with(&cluster, thresholds_with(|t| t.flap_max = 10)).await;
    ready(&monitor, 3).await;

    // Cut off the server the monitor is attached to: an operator on the other side must still
    // hear about it, so the monitor has to move.
    let attached = monitor.client.server_info().server_name;
    let index = cluster.index_of(&attached).expect("attached node");
    let mut events = Events::subscribe_via(&cluster, &others(3, &[index])).await;
    cluster.partition(index).expect("partition");
    events
        .expect(Raised, "META_001", Some(&attached), Duration::from_secs(40))
        .await;
    assert_ne!(monitor.client.server_info().server_name, attached, "moved");
    cluster.heal(index).expect("heal");
    events
        .expect(
            Resolved,
            "META_001",
            Some(&attached),
            Duration::from_secs(40),
        )
        .await;

    // Lame duck: the server announces it is leaving; the monitor leaves first.
    let attached = monitor.client.server_info().server_name;
    let index = cluster.index_of(&attached).expect("attached node");
    let mut events = Events::subscribe_via(&cluster, &others(3, &[index])).await;
    cluster
        .stop(index, Stop::LameDuck)
        .await
        .expect("lame duck");
    let raised = events
        .expect(Raised, "META_001", Some(&attached), EVENT_TIMEOUT)
        .await;
    assert!(
        reasons(&raised).contains(&"departed".to_string()),
        "{:#}",
        raised.evidence
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while monitor.client.server_info().server_name == attached {
        assert!(
            Instant::now() < deadline,
            "still attached to the lame-duck server"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    monitor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_every_subject_it_reads_is_counted_and_changes_nothing() {
    let mut cluster = cluster(3).await;
    let f = follower(&cluster).await;
    let mut events = Events::subscribe_via(&cluster, &others(3, &[f])).await;
    let monitor = Monitor::start(&cluster).await;
    ready(&monitor, 3).await;
    let sys = cluster
        .sys_client(others(3, &[f])[0])
        .await
        .expect("client");

    // A fake responder answers the JSZ gather with garbage next to the real servers.
    let mut fake = sys
        .subscribe("$SYS.REQ.SERVER.PING.JSZ")
        .await
        .expect("sub");
    let responder = sys.clone();
    let fake_task = tokio::spawn(async move {
        let bodies: [&[u8]; 4] = [
            b"{not json",
            br#"{"server":{"name":5}}"#,
            b"\xff\xfe",
            b"[]",
        ];
        let mut n = 0usize;
        while let Some(msg) = futures::StreamExt::next(&mut fake).await {
            if let Some(reply) = msg.reply {
                let _ = responder
                    .publish(reply, bodies[n % bodies.len()].into())
                    .await;
                n += 1;
            }
        }
    });
    let huge = vec![b'x'; 900 * 1024];
    let payloads: [&[u8]; 6] = [
        b"",
        b"{",
        b"{\"name\": [1,2,3]}",
        b"{\"leader\": {\"not\": \"a string\"}}",
        b"\x00\x01\x02 binary",
        &huge,
    ];
    for subject in [
        "$SYS.SERVER.FAKEID.SHUTDOWN",
        "$SYS.SERVER.FAKEID.LAMEDUCK",
        "$JS.EVENT.ADVISORY.DOMAIN.LEADER_ELECTED",
        "$JS.EVENT.ADVISORY.DOMAIN.LEADER_ELECTED.extra",
        "$JS.EVENT.ADVISORY.SERVER.REMOVED",
    ] {
        for payload in payloads {
            sys.publish(subject, payload.to_vec().into())
                .await
                .expect("publish");
        }
    }
    for endpoint in ["STATUS", "FINDINGS", "CHECKS", "HISTORY", "EXPLAIN"] {
        for payload in [&b"{oops"[..], b"[1]", b"{\"limit\": \"many\"}"] {
            let reply = request_json(
                &monitor.client,
                &format!("$INSIGHTS.API.{endpoint}"),
                std::str::from_utf8(payload).unwrap_or(""),
            )
            .await
            .0;
            let code = reply
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Service-Error-Code"))
                .map(|v| v.as_str().to_string());
            assert!(
                code.is_some_and(|c| c.starts_with('4')),
                "{endpoint} answered a bad request without an error"
            );
        }
    }
    sys.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_secs(3)).await;

    let status = monitor.status().await;
    let malformed = status["service"]["malformed"].as_u64().unwrap_or(0);
    assert!(malformed >= 25, "every garbage input counted: {status:#}");
    assert_eq!(status["status"], "ok", "garbage raised nothing: {status:#}");
    events.drain(Duration::from_millis(500)).await;
    assert!(events.seen.is_empty(), "{:#?}", events.lines());

    // And it still sees a real fault.
    let name = cluster.server_name(f);
    cluster.stop(f, Stop::Kill).await.expect("kill");
    events
        .expect(Raised, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    fake_task.abort();
    monitor.stop().await;
}

/// The poll used for large groups (the leader's view, every server's identity, a rotating sample
/// of followers), forced on a small cluster: a crashed follower and a partitioned leader are
/// found as with the full poll, and nothing is raised while the cluster is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_large_group_poll_finds_a_crash_and_a_partition_and_nothing_else() {
    let mut cluster = proxied_cluster().await;
    let mut config = thresholds_with(|t| t.flap_max = 10);
    config.full_poll_max_members = 0;
    let monitor = Monitor::start_with(&cluster, config).await;
    ready(&monitor, 3).await;
    let attached = monitor.client.server_info().server_name;
    let (_, _, majority) = leader_other_than(&mut cluster, &attached).await;
    let mut events = Events::subscribe_via(&cluster, &majority).await;
    events.drain(Duration::from_secs(3)).await;
    assert!(
        events.lines().is_empty(),
        "a healthy cluster raised: {:#?}",
        events.lines()
    );

    // A crashed follower (not the one the monitor is attached to).
    let f = majority
        .iter()
        .copied()
        .find(|i| cluster.server_name(*i) != attached)
        .expect("a follower the monitor is not attached to");
    let name = cluster.server_name(f);
    cluster.stop(f, Stop::Kill).await.expect("kill");
    events
        .expect(Raised, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    cluster.restart(f).await.expect("restart");
    events
        .expect(Resolved, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;

    // A partitioned leader (not the monitor's server): two leaders for a while.
    let (_, index, majority) = leader_other_than(&mut cluster, &attached).await;
    let mut events = Events::subscribe_via(&cluster, &majority).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.partition(index).expect("partition");
    events
        .expect(Raised, "META_002", None, Duration::from_secs(40))
        .await;
    cluster.heal(index).expect("heal");
    events
        .expect(Resolved, "META_002", None, Duration::from_secs(40))
        .await;
    monitor.stop().await;
}
