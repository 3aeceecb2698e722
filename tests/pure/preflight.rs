//! PREFLIGHT on captured fixtures: the pure answer (`service::preflight`) to "may this server go
//! down, be removed or renamed now, and is the group whole again", from the status the engine
//! would hold after those polls.

use std::time::{Duration, SystemTime};

use nats_insights::checks::{evaluate_all, Thresholds};
use nats_insights::findings::{reconcile, ActiveSet};
use nats_insights::history::History;
use nats_insights::observe::{JszReply, Snapshot, Via};
use nats_insights::service::preflight::{preflight, PreflightRequest, PreflightResponse, Verdict};
use nats_insights::service::EngineStatus;

fn replies(name: &str) -> Vec<(JszReply, Via)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(path).expect("fixture");
    let parsed: Vec<JszReply> = serde_json::from_str(&text).expect("fixture parses");
    parsed.into_iter().map(|r| (r, Via::Gather)).collect()
}

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

/// The status after these polls (each fixture at its second), as the engine would hold it.
fn status_after(polls: &[(u64, &str)]) -> EngineStatus {
    let thresholds = Thresholds::default();
    let mut history = History::default();
    let mut active = ActiveSet::new();
    let mut meta = None;
    for (at, name) in polls {
        let snapshot = Snapshot::from_replies(t(*at), replies(name), &history.known_servers());
        history.record_snapshot(&snapshot, &thresholds, t(*at));
        let (assessed, evaluations) = evaluate_all(&snapshot, &history, &thresholds, t(*at));
        active = reconcile(&active, &Default::default(), &evaluations, t(*at)).0;
        meta = assessed.or(meta);
    }
    EngineStatus {
        meta_groups: meta.into_iter().collect(),
        active,
        last_poll: polls.last().map(|p| t(p.0)),
        ..EngineStatus::default()
    }
}

fn ask(status: &EngineStatus, body: serde_json::Value, now: SystemTime) -> PreflightResponse {
    let request: PreflightRequest = serde_json::from_value(body).expect("request");
    preflight(&request.validate().expect("valid"), status, now)
}

fn leader_of(status: &EngineStatus) -> String {
    status.meta_groups[0].leader.clone().expect("a leader")
}

fn followers(status: &EngineStatus) -> Vec<String> {
    status.meta_groups[0]
        .members
        .iter()
        .filter(|m| !m.leader)
        .map(|m| m.name.clone())
        .collect()
}

#[test]
fn a_healthy_group_of_three_may_restart_one_follower_and_the_leader_after_a_step_down() {
    let status = status_after(&[(0, "healthy_3.json"), (1, "healthy_3.json")]);
    let follower = &followers(&status)[0];
    let answer = ask(
        &status,
        serde_json::json!({"action": "restart", "server": follower}),
        t(1),
    );
    assert_eq!(answer.verdict, Verdict::Safe, "{answer:#?}");
    assert!(answer.safe && answer.reasons.is_empty());
    assert!(!answer.leader, "a follower: no step-down");
    assert!(answer.steps.iter().any(|s| s.command.as_deref()
        == Some(&format!(
            "nats-insights wait healthy --server-name {follower}"
        ))));

    let leader = leader_of(&status);
    let answer = ask(
        &status,
        serde_json::json!({"action": "restart", "server": leader}),
        t(1),
    );
    assert_eq!(answer.verdict, Verdict::Safe, "{answer:#?}");
    assert_eq!(
        answer.steps[0].command.as_deref(),
        Some("nats server cluster step-down"),
        "the leader is stepped down first: {answer:#?}"
    );
    // What rolling-restart.sh decides the step-down on.
    assert!(answer.leader, "{answer:#?}");

    let whole = ask(&status, serde_json::json!({"action": "healthy"}), t(1));
    assert_eq!(whole.verdict, Verdict::Safe, "{whole:#?}");
}

#[test]
fn with_one_of_three_down_another_may_not_go_down_but_the_down_one_may_be_restarted() {
    let status = status_after(&[(0, "healthy_3.json"), (4, "follower_killed_3.json")]);
    let down: Vec<String> = status.meta_groups[0]
        .members
        .iter()
        .filter(|m| !m.online())
        .map(|m| m.name.clone())
        .collect();
    assert_eq!(down.len(), 1, "{:#?}", status.meta_groups[0].members);
    let other = followers(&status)
        .into_iter()
        .find(|f| *f != down[0])
        .expect("the other follower");
    let answer = ask(
        &status,
        serde_json::json!({"action": "restart", "server": other}),
        t(4),
    );
    assert_eq!(answer.verdict, Verdict::Unsafe, "{answer:#?}");
    assert!(
        answer.reasons.iter().any(|r| r.contains(&down[0])),
        "names the down server: {answer:#?}"
    );
    assert!(answer.wait_for.iter().any(|w| w.contains(&down[0])));
    assert!(answer.reasons.iter().any(|r| r.contains("quorum needs 2")));

    let answer = ask(
        &status,
        serde_json::json!({"action": "restart", "server": down[0]}),
        t(4),
    );
    assert_eq!(
        answer.verdict,
        Verdict::Safe,
        "restarting the down one heals: {answer:#?}"
    );

    let whole = ask(&status, serde_json::json!({"action": "healthy"}), t(4));
    assert_eq!(whole.verdict, Verdict::Unsafe);
    assert!(
        whole.wait_for.iter().any(|w| w.contains(&down[0])),
        "{whole:#?}"
    );
}

#[test]
fn removal_is_for_a_member_that_is_down_never_one_that_runs() {
    let status = status_after(&[(0, "healthy_3.json"), (4, "follower_killed_3.json")]);
    let running = followers(&status)
        .into_iter()
        .find(|f| {
            status.meta_groups[0]
                .members
                .iter()
                .any(|m| m.name == *f && m.online())
        })
        .expect("a running follower");
    let answer = ask(
        &status,
        serde_json::json!({"action": "remove", "server": running}),
        t(4),
    );
    assert_eq!(answer.verdict, Verdict::Unsafe, "{answer:#?}");
    assert!(answer.reasons[0].contains("online"));

    let killed = status.meta_groups[0]
        .members
        .iter()
        .find(|m| !m.online())
        .expect("killed")
        .name
        .clone();
    let answer = ask(
        &status,
        serde_json::json!({"action": "remove", "server": killed}),
        t(4),
    );
    assert_eq!(answer.verdict, Verdict::Safe, "{answer:#?}");
    assert!(answer.steps.iter().any(
        |s| s.command.as_deref() == Some(&format!("nats server cluster peer-remove {killed}"))
    ));
}

#[test]
fn a_rename_waits_until_the_previous_one_is_complete() {
    let status = status_after(&[(0, "healthy_3.json"), (1, "healthy_3.json")]);
    let follower = &followers(&status)[0];
    let answer = ask(
        &status,
        serde_json::json!({"action": "rename", "server": follower, "to": "m9"}),
        t(1),
    );
    assert_eq!(answer.verdict, Verdict::Safe, "{answer:#?}");
    assert!(answer.steps.iter().any(|s| s
        .command
        .as_deref()
        .is_some_and(|c| c.starts_with("nats server cluster peer-remove"))));

    // n1 renamed to m1 without removing its old peer: the next rename is refused.
    let status = status_after(&[(0, "healthy_3.json"), (10, "stale_peers_3_step1.json")]);
    let answer = ask(
        &status,
        serde_json::json!({"action": "rename", "server": "n2", "to": "m2"}),
        t(10),
    );
    assert_eq!(answer.verdict, Verdict::Unsafe, "{answer:#?}");
    assert!(
        answer
            .reasons
            .iter()
            .any(|r| r.contains("previous rename is not complete") && r.contains("n1")),
        "{answer:#?}"
    );
}

#[test]
fn without_a_fresh_view_or_for_a_stranger_the_answer_is_unknown() {
    let status = status_after(&[(0, "healthy_3.json")]);
    let stale = ask(
        &status,
        serde_json::json!({"action": "restart", "server": "n1"}),
        t(60),
    );
    assert_eq!(stale.verdict, Verdict::Unknown, "{stale:#?}");
    assert!(stale.reasons[0].contains("last poll"));
    assert!(!stale.leader, "a stale view says nothing about who leads");
    let stranger = ask(
        &status,
        serde_json::json!({"action": "stop", "server": "x9"}),
        t(0),
    );
    assert_eq!(stranger.verdict, Verdict::Unknown);
    assert!(stranger.reasons[0].contains("not a member"));
    let nothing = ask(
        &EngineStatus::default(),
        serde_json::json!({"action": "healthy"}),
        t(0),
    );
    assert_eq!(nothing.verdict, Verdict::Unknown);
}

#[test]
fn bad_requests_are_refused_with_what_to_send() {
    for (body, says) in [
        (serde_json::json!({}), "missing \"action\""),
        (
            serde_json::json!({"action": "reboot", "server": "n1"}),
            "unknown action",
        ),
        (
            serde_json::json!({"action": "restart"}),
            "missing \"server\"",
        ),
        (
            serde_json::json!({"action": "rename", "server": "n1"}),
            "missing \"to\"",
        ),
        (
            serde_json::json!({"action": "stop", "server": "n1", "to": "m1"}),
            "for rename only",
        ),
    ] {
        let request: PreflightRequest = serde_json::from_value(body.clone()).expect("shape");
        let error = request.validate().expect_err("refused");
        assert!(error.to_string().contains(says), "{body}: {error}");
        assert_eq!(error.code(), 400);
    }
}

#[test]
fn routes_missing_a_crash_loop_or_a_member_catching_up_make_a_restart_not_safe() {
    use nats_insights::checks::{CheckId, Finding};
    use nats_insights::findings::ActiveFinding;
    let healthy = status_after(&[(0, "healthy_3.json"), (1, "healthy_3.json")]);
    let follower = followers(&healthy)[0].clone();
    let other = followers(&healthy)[1].clone();
    for check in [CheckId::CLUSTER_005, CheckId::SERVER_008, CheckId::META_110] {
        let mut status = healthy.clone();
        let key = format!("{check}/default/{other}");
        status.active.insert(
            key.clone(),
            ActiveFinding {
                finding: Finding {
                    check,
                    key: key.clone(),
                    cluster: None,
                    domain: None,
                    server: Some(other.clone()),
                    summary: format!("{other} is in trouble"),
                    evidence: serde_json::json!({}),
                    remediation: Vec::new(),
                    fingerprint: other.clone(),
                },
                episode: 1,
                epoch: String::new(),
                revision: 1,
                raised_at: t(1),
                changed_at: t(1),
            },
        );
        let answer = ask(
            &status,
            serde_json::json!({"action": "restart", "server": follower}),
            t(1),
        );
        assert_eq!(answer.verdict, Verdict::Unsafe, "{check}: {answer:#?}");
        assert!(
            answer.reasons.iter().any(|r| r.contains(&key)),
            "{check}: the reason names the finding: {answer:#?}"
        );
    }
}
