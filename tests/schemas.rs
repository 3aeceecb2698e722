//! Every `schemas/*.json` is checked against what the service emits: finding events of every check
//! (built from captured fixtures), the heartbeat, and the STATUS response.

mod support;

use std::time::{Duration, SystemTime};

use nats_insights::checks::{evaluate_all, CheckId, Thresholds};
use nats_insights::findings::{reconcile, ActiveSet};
use nats_insights::history::History;
use nats_insights::observe::{JszReply, Snapshot, Via};
use nats_insights::publish::{FindingEvent, Heartbeat};
use nats_insights::service::{status_response, EngineStatus, Instance};
use support::assert_valid;

fn replies(name: &str) -> Vec<(JszReply, Via)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(path).expect("fixture");
    let parsed: Vec<JszReply> = serde_json::from_str(&text).expect("fixture parses");
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
    for (at, names) in polls {
        let all: Vec<(JszReply, Via)> = names.iter().flat_map(|n| replies(n)).collect();
        let snapshot = Snapshot::from_replies(t(*at), all, &history.known_servers());
        history.record_snapshot(&snapshot, t(*at));
        let (assessed, evaluations) = evaluate_all(&snapshot, &history, &thresholds, t(*at));
        let (next, transitions) = reconcile(&active, &evaluations, t(*at));
        events.extend(
            transitions
                .iter()
                .map(|tr| FindingEvent::from_transition(tr, "test")),
        );
        active = next;
        meta = assessed.or(meta);
    }
    let status = EngineStatus {
        meta,
        active,
        last_poll: Some(t(polls.last().map_or(0, |p| p.0))),
        store: nats_insights::store::StoreHealth::Memory,
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
        ],
        thresholds,
    );
    for event in &events {
        assert_valid("finding.json", &serde_json::to_value(event).expect("json"));
        assert!(event.subject().starts_with("$INSIGHTS.FINDING.META_0"));
    }
    for check in CheckId::ALL {
        for kind in ["raised", "resolved"] {
            if check == CheckId::Meta003 && kind == "resolved" {
                continue; // a 10 minute window: resolution is covered by the fixture tests
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
    degraded.store = nats_insights::store::StoreHealth::Degraded {
        bucket: "insights".to_string(),
        since: t(1),
        error: "no answer within 1s".to_string(),
        backlog: 2,
    };
    let value = serde_json::to_value(status_response(&degraded, &instance, t(2))).expect("json");
    assert_valid("status_response.json", &value);
    assert_eq!(value["service"]["store"]["state"], "degraded");
    let empty = status_response(&EngineStatus::default(), &instance, t(1));
    let value = serde_json::to_value(empty).expect("json");
    assert_valid("status_response.json", &value);
    assert_eq!(value["status"], "unknown");
}

#[test]
fn explain_responses_validate_and_bad_requests_are_rejected_with_the_right_code() {
    for check in CheckId::ALL {
        let body = format!("{{\"check\": \"{}\"}}", check.as_str().to_lowercase());
        let reply = nats_insights::service::explain(body.as_bytes()).expect("explained");
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
        let rejected = nats_insights::service::explain(body).expect_err("rejected");
        assert_eq!(rejected.0, code, "{}", String::from_utf8_lossy(body));
    }
    let huge = vec![b' '; nats_insights::service::MAX_REQUEST_BYTES + 1];
    assert_eq!(
        nats_insights::service::explain(&huge)
            .expect_err("too big")
            .0,
        413
    );
}
