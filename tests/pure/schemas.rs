//! Every `schemas/*.json` is checked against what the service emits: finding events of every check
//! (built from captured fixtures), the heartbeat, and every API response (STATUS, FINDINGS, CHECKS,
//! HISTORY, EXPLAIN) and the `$SRV.STATS` data, built from the same fixtures.

use crate::support;

use std::time::{Duration, SystemTime};

use nats_insights::checks::{evaluate_all, CheckId, Thresholds};
use nats_insights::findings::{reconcile, ActiveSet};
use nats_insights::history::History;
use nats_insights::observe::{JszReply, Snapshot, Via};
use nats_insights::publish::{FindingEvent, Heartbeat};
use nats_insights::service::api::{self, Context, Endpoint};
use nats_insights::service::recent::Recent;
use nats_insights::service::{status_response, EngineStatus, Instance, MAX_REQUEST_BYTES};
use nats_insights::status::{LinkHealth, LinkSource};
use support::assert_valid;

/// A fixture's replies; `healthy_3.json+hazards` is that capture edited to show what no
/// capture can in seconds (checked live in `tests/live/hazards.rs`): a member on a known-bad
/// release (n2 on 2.10.25), 6,000 stream replicas, a slow meta snapshot on n3; `+synced` has
/// every member on `sync_interval: always`.
fn replies(name: &str) -> Vec<(JszReply, Via)> {
    let (file, edit) = name.split_once('+').unwrap_or((name, ""));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(file);
    let text = std::fs::read_to_string(path).expect("fixture");
    let mut values: Vec<serde_json::Value> = serde_json::from_str(&text).expect("fixture JSON");
    for reply in &mut values {
        let server = reply["server"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match edit {
            "hazards" => {
                reply["data"]["streams"] = serde_json::json!(2000);
                if server == "n2" {
                    reply["server"]["ver"] = serde_json::json!("2.10.25");
                }
                if server == "n3" {
                    reply["data"]["meta_cluster"]["snapshot"] = serde_json::json!({
                        "pending_entries": 12, "pending_size": 4096,
                        "last_time": "2026-11-24T08:26:00Z", "last_duration": 7_500_000_000u64,
                    });
                }
            }
            "synced" => reply["data"]["config"]["sync_always"] = serde_json::json!(true),
            _ => {}
        }
    }
    let parsed: Vec<JszReply> = serde_json::from_value(values.into()).expect("fixture parses");
    let via = if name.contains("isolated") {
        Via::Direct
    } else {
        Via::Gather
    };
    parsed.into_iter().map(|r| (r, via)).collect()
}

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

/// Drives a sequence of polls through evaluate and reconcile, returning every finding event and
/// the final state.
fn run(polls: &[(u64, &[&str])], thresholds: Thresholds) -> (Vec<FindingEvent>, EngineStatus) {
    let mut history = History::default();
    let mut active = ActiveSet::new();
    let mut events = Vec::new();
    let mut meta = None;
    let mut recent = Recent::default();
    for (at, names) in polls {
        let all: Vec<(JszReply, Via)> = names.iter().flat_map(|n| replies(n)).collect();
        let snapshot = Snapshot::from_replies(t(*at), all, &history.known_servers());
        history.record_snapshot(&snapshot, &thresholds, t(*at));
        let (assessed, evaluations) = evaluate_all(&snapshot, &history, &thresholds, t(*at));
        let (next, transitions) = reconcile(&active, &Default::default(), &evaluations, t(*at));
        events.extend(
            transitions
                .iter()
                .map(|tr| FindingEvent::from_transition(tr, "test")),
        );
        recent.record(&transitions, &history.leader_changes);
        active = next;
        meta = assessed.or(meta);
    }
    let status = EngineStatus {
        meta_groups: meta.into_iter().collect(),
        active,
        last_poll: Some(t(polls.last().map_or(0, |p| p.0))),
        servers_answering: 3,
        recent,
        store: nats_insights::status::StoreHealth::Memory,
        ..EngineStatus::default()
    };
    (events, status)
}

#[test]
fn finding_events_of_every_check_validate_and_each_check_is_covered() {
    let partition: &[&str] = &[
        "partition_leader_3_majority.json",
        "partition_leader_3_isolated.json",
    ];
    let thresholds = Thresholds {
        flap_max: 0,
        even_after: Duration::ZERO,
        ..Thresholds::default()
    };
    let (events, _) = run(
        &[
            (0, &["healthy_3.json"]),
            (4, &["follower_killed_3.json"]),
            (8, &["two_killed_3.json"]),
            (20, &["healthy_3.json"]),
            (30, partition),
            (35, partition),
            (50, &["healthy_3.json"]),
            (60, &["stale_peers_3_step1.json"]),
            (70, &["stale_peers_3.json"]),
            (80, &["healthy_3.json"]),
            (90, &["follower_stopped_3.json"]),
            (92, &["follower_removed_3.json"]),
            (100, &["healthy_3.json"]),
            (110, &["pending_high_3.json"]),
            (116, &["pending_high_3.json"]),
            (120, &["member_behind_3.json"]),
            (131, &["member_behind_3.json"]),
            (132, &["mixed_versions_3.json"]),
            (140, &["healthy_3.json"]),
            (145, &["healthy_3.json"]),
            (150, &["leaderless_3.json"]),
            (163, &["leaderless_3.json"]),
            (170, &["healthy_3.json"]),
            (180, &["healthy_3.json+hazards"]),
            (190, &["healthy_3.json+synced"]),
        ],
        thresholds,
    );
    for event in &events {
        assert_valid("finding.json", &serde_json::to_value(event).expect("json"));
        assert!(event.subject().starts_with("$INSIGHTS.FINDING."));
    }
    for check in CheckId::all() {
        for kind in ["raised", "resolved"] {
            if check == CheckId::META_003 && kind == "resolved" {
                continue; // a 10 minute window: resolution is covered by the fixture tests
            }
            if nats_insights::checks::sources::EXTRA_SOURCE_CHECKS.contains(&check) {
                continue; // needs the extra sources: tests/pure/sources.rs
            }
            if check == CheckId::SERVER_008 || check == CheckId::SERVER_101 {
                continue; // restarts in 5 and 10 minute windows: tests/pure/sources.rs
            }
            if check == CheckId::META_105 {
                continue; // needs a second group: `an_unheard_group_validates_everywhere`
            }
            assert!(
                events
                    .iter()
                    .any(|e| e.check == check && e.event.as_str() == kind),
                "no {kind} {check} among {:#?}",
                events
                    .iter()
                    .map(|e| format!("{} {}", e.event.as_str(), e.finding))
                    .collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn heartbeat_validates() {
    let (_, status) = run(
        &[(0, &["healthy_3.json"]), (4, &["follower_killed_3.json"])],
        Thresholds::default(),
    );
    for last_poll in [None, Some(t(4))] {
        let beat = Heartbeat::new("instance", &status.active, last_poll, t(5));
        assert_valid("heartbeat.json", &serde_json::to_value(beat).expect("json"));
    }
}

#[test]
fn status_response_validates_healthy_faulty_and_before_first_poll() {
    let instance = Instance {
        id: "instance".to_string(),
        started: t(0),
    };
    for polls in [
        &[(0, &["healthy_3.json"][..])][..],
        &[
            (0, &["healthy_3.json"][..]),
            (4, &["two_killed_3.json"][..]),
        ][..],
        &[(0, &["stale_peers_3.json"][..])][..],
    ] {
        let (_, status) = run(polls, Thresholds::default());
        let response = status_response(&status, &instance, t(10));
        assert_valid(
            "status_response.json",
            &serde_json::to_value(response).expect("json"),
        );
    }
    let (_, mut degraded) = run(&[(0, &["two_killed_3.json"][..])], Thresholds::default());
    degraded.store = nats_insights::status::StoreHealth::Degraded {
        bucket: "insights".to_string(),
        since: t(1),
        error: "no answer within 1s".to_string(),
        backlog: 2,
    };
    let value = serde_json::to_value(status_response(&degraded, &instance, t(2))).expect("json");
    assert_valid("status_response.json", &value);
    assert_eq!(value["service"]["store"]["state"], "degraded");
    // One member linked, one without a link (partition detection degraded for it).
    degraded.links = vec![
        LinkHealth {
            server: "n1".to_string(),
            direct: true,
            connected: Some(true),
            source: Some(LinkSource::ConnectUrls),
            url: Some("nats://127.0.0.1:4222".to_string()),
            reason: None,
        },
        LinkHealth {
            server: "n3".to_string(),
            direct: false,
            connected: None,
            source: None,
            url: None,
            reason: Some("cannot connect: nats://10.0.0.3:4222: timed out".to_string()),
        },
    ];
    let value = serde_json::to_value(status_response(&degraded, &instance, t(2))).expect("json");
    assert_valid("status_response.json", &value);
    assert_eq!(value["service"]["links"][1]["direct"], false);
    let empty = status_response(&EngineStatus::default(), &instance, t(1));
    let value = serde_json::to_value(empty).expect("json");
    assert_valid("status_response.json", &value);
    assert_eq!(value["status"], "unknown");
}

fn instance() -> Instance {
    Instance {
        id: "instance".to_string(),
        started: t(0),
    }
}

/// A status with active findings, resolved ones and leader changes.
fn eventful() -> EngineStatus {
    let partition: &[&str] = &[
        "partition_leader_3_majority.json",
        "partition_leader_3_isolated.json",
    ];
    let (_, status) = run(
        &[
            (0, &["healthy_3.json"]),
            (4, &["follower_killed_3.json"]),
            (20, &["healthy_3.json"]),
            (30, partition),
            (35, partition),
            (50, &["healthy_3.json"]),
            (60, &["two_killed_3.json"]),
        ],
        Thresholds {
            flap_max: 0,
            ..Thresholds::default()
        },
    );
    status
}

fn answer(endpoint: Endpoint, body: &str, status: &EngineStatus) -> serde_json::Value {
    let thresholds = Thresholds::default();
    let instance = instance();
    let ctx = Context {
        status,
        instance: &instance,
        thresholds: &thresholds,
        now: t(100),
    };
    let reply = api::handle(endpoint, body.as_bytes(), ctx)
        .unwrap_or_else(|e| panic!("{endpoint:?} {body}: {e}"));
    let value: serde_json::Value = serde_json::from_slice(&reply).expect("json");
    assert_eq!(value["type"], endpoint.response_type(), "{value:#}");
    value
}

fn schema_of(endpoint: Endpoint) -> String {
    format!("{}_response.json", endpoint.name().to_lowercase())
}

#[test]
fn every_endpoint_response_validates_on_empty_and_eventful_state() {
    let eventful = eventful();
    for status in [EngineStatus::default(), eventful] {
        for endpoint in Endpoint::ALL {
            let bodies: &[&str] = match endpoint {
                Endpoint::Explain => &[r#"{"check":"META_001"}"#, r#"{"check":"meta_006"}"#],
                Endpoint::Findings => &[
                    "",
                    "{}",
                    r#"{"include_resolved": true}"#,
                    r#"{"check": "META_001", "severity": "critical", "include_resolved": true, "limit": 1}"#,
                ],
                Endpoint::History => &["", r#"{"limit": 1000}"#, r#"{"limit": 1}"#],
                Endpoint::Preflight => &[
                    r#"{"action": "restart", "server": "n2"}"#,
                    r#"{"action": "stop", "server": "n1"}"#,
                    r#"{"action": "remove", "server": "n3"}"#,
                    r#"{"action": "rename", "server": "n2", "to": "m2"}"#,
                    r#"{"action": "healthy"}"#,
                    r#"{"action": "healthy", "server": "n9"}"#,
                ],
                Endpoint::GroupForget if status.meta_groups.is_empty() => &[],
                Endpoint::GroupForget => &[r#"{"domain": "default"}"#],
                _ => &["", "{}"],
            };
            for body in bodies {
                assert_valid(&schema_of(endpoint), &answer(endpoint, body, &status));
            }
        }
    }
}

#[test]
fn findings_and_history_show_what_happened() {
    let status = eventful();
    let findings = answer(
        Endpoint::Findings,
        r#"{"include_resolved": true, "limit": 1000}"#,
        &status,
    );
    let states: Vec<&str> = findings["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["state"].as_str())
        .collect();
    assert!(
        states.contains(&"active") && states.contains(&"resolved"),
        "{findings:#}"
    );
    // Active first, then resolved.
    assert!(states
        .windows(2)
        .all(|w| !(w[0] == "resolved" && w[1] == "active")));

    let history = answer(Endpoint::History, r#"{"limit": 1000}"#, &status);
    let entries = history["entries"].as_array().expect("entries");
    assert!(
        entries.iter().any(|e| e["kind"] == "leader_change"),
        "{history:#}"
    );
    let times: Vec<&str> = entries.iter().filter_map(|e| e["at"].as_str()).collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:#?}"
    );

    let checks = answer(Endpoint::Checks, "", &status);
    let active: u64 = checks["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["active"].as_u64())
        .sum();
    assert_eq!(active as usize, status.active.len());
}

#[test]
fn stats_data_validates() {
    let status = eventful();
    for rejected in [
        Default::default(),
        [(400u16, 2u64), (404, 1)].into_iter().collect(),
    ] {
        let data = api::stats_data(&status, &instance(), &rejected);
        assert_valid(
            "stats_data.json",
            &serde_json::to_value(data).expect("json"),
        );
    }
}

#[test]
fn explain_responses_validate_and_bad_requests_are_rejected_with_the_right_code() {
    let status = EngineStatus::default();
    let thresholds = Thresholds::default();
    let instance = instance();
    let ctx = Context {
        status: &status,
        instance: &instance,
        thresholds: &thresholds,
        now: t(1),
    };
    for check in CheckId::all() {
        let body = format!("{{\"check\": \"{}\"}}", check.as_str().to_lowercase());
        let reply = api::handle(Endpoint::Explain, body.as_bytes(), ctx).expect("explained");
        let value: serde_json::Value = serde_json::from_slice(&reply).expect("json");
        assert_valid("explain_response.json", &value);
        assert_eq!(value["check"], check.as_str());
    }
    for (body, code) in [
        (&b"{\"check\": \"META_999\"}"[..], 404),
        (b"{}", 400),
        (b"{\"check\": 6}", 400),
        (b"{\"check\": \"META_001\", \"extra\": 1}", 400),
        (b"[1,2]", 400),
        (b"{not json", 400),
    ] {
        let rejected = api::handle(Endpoint::Explain, body, ctx).expect_err("rejected");
        assert_eq!(rejected.code(), code, "{}", String::from_utf8_lossy(body));
    }
    let huge = vec![b' '; MAX_REQUEST_BYTES + 1];
    assert_eq!(
        api::handle(Endpoint::Explain, &huge, ctx)
            .expect_err("too big")
            .code(),
        413
    );
}

/// A captured 3-node fixture as the servers `prefix`1..3 of `domain`.
fn as_domain(name: &str, prefix: &str, domain: &str) -> Vec<(JszReply, Via)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let mut text = std::fs::read_to_string(path).expect("fixture");
    for i in 1..=3 {
        text = text.replace(&format!("\"n{i}\""), &format!("\"{prefix}{i}\""));
    }
    let mut parsed: Vec<JszReply> = serde_json::from_str(&text).expect("fixture parses");
    for reply in &mut parsed {
        reply.server.domain = Some(domain.to_string());
        reply.server.id = format!("{prefix}-{}", reply.server.id);
    }
    parsed.into_iter().map(|r| (r, Via::Gather)).collect()
}

#[test]
fn an_unheard_group_validates_everywhere() {
    use nats_insights::checks::evaluate_groups;
    use nats_insights::history::Histories;
    let thresholds = support::thresholds();
    let mut histories = Histories::default();
    let mut active = ActiveSet::new();
    let mut events = Vec::new();
    let both = || {
        let mut all = as_domain("healthy_3.json", "h", "hub");
        all.extend(as_domain("healthy_3.json", "e", "edge"));
        all
    };
    for (at, replies) in [
        (0, both()),
        (1, both()),
        (2, as_domain("healthy_3.json", "h", "hub")),
        (4, as_domain("healthy_3.json", "h", "hub")),
        (6, as_domain("healthy_3.json", "h", "hub")),
        (7, both()),
    ] {
        let snapshot = Snapshot::from_replies(t(at), replies, &histories.known_servers());
        let parts = histories.split(&snapshot);
        histories.record_snapshots(&parts, &thresholds, t(at));
        let groups = evaluate_groups(&parts, &histories, &thresholds, t(at));
        let evaluations: Vec<_> = groups.iter().flat_map(|g| g.evaluations.clone()).collect();
        let (next, transitions) = reconcile(&active, &Default::default(), &evaluations, t(at));
        events.extend(
            transitions
                .iter()
                .map(|tr| FindingEvent::from_transition(tr, "test")),
        );
        active = next;
        let status = EngineStatus {
            meta_groups: groups
                .iter()
                .filter_map(|g| g.meta.clone().or(g.unheard.clone()))
                .collect(),
            active: active.clone(),
            last_poll: Some(t(at)),
            ..EngineStatus::default()
        };
        if at == 6 {
            let value =
                serde_json::to_value(status_response(&status, &instance(), t(at))).expect("json");
            assert_valid("status_response.json", &value);
            let edge = value["meta_groups"]
                .as_array()
                .expect("groups")
                .iter()
                .find(|g| g["group"] == "edge")
                .expect("edge shown")
                .clone();
            assert_eq!(
                edge["unheard_since"], "2027-01-15T08:00:01.000Z",
                "{edge:#}"
            );
            assert!(edge.get("leader").is_none(), "{edge:#}");
            assert!(edge["members"]
                .as_array()
                .expect("members")
                .iter()
                .all(|m| m["state"] == "unknown"));
            let forget = answer(Endpoint::GroupForget, r#"{"domain": "edge"}"#, &status);
            assert_valid("group_forget_response.json", &forget);
            assert_eq!(forget["findings"][0], "META_105/edge", "{forget:#}");
            let ctx = Context {
                status: &status,
                instance: &instance(),
                thresholds: &thresholds,
                now: t(at),
            };
            for (body, code) in [
                (&br#"{"domain": "nowhere"}"#[..], 404),
                (b"{}", 400),
                (b"", 400),
                (br#"{"domain": 3}"#, 400),
            ] {
                let refused = api::handle(Endpoint::GroupForget, body, ctx).expect_err("refused");
                assert_eq!(refused.code(), code, "{}", String::from_utf8_lossy(body));
            }
        }
    }
    let seen: Vec<String> = events
        .iter()
        .map(|e| format!("{} {}", e.event.as_str(), e.finding))
        .collect();
    assert_eq!(seen, ["raised META_105/edge", "resolved META_105/edge"]);
    for event in &events {
        assert_valid("finding.json", &serde_json::to_value(event).expect("json"));
    }
}
