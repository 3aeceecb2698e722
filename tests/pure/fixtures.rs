//! Fixture tests: the pure stages (history, checks, reconcile, event decoding) on JSZ replies and
//! events captured from real nats-server 2.15 clusters (`tests/fixtures/README.md` says how).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use nats_insights::checks::{evaluate_all, CheckId, Evaluation, Finding, Outcome, Thresholds};
use nats_insights::findings::{reconcile, ActiveSet, TransitionKind};
use nats_insights::history::History;
use nats_insights::observe::events::decode_event;
use nats_insights::observe::{JszReply, MetaEvent, Snapshot, Via};

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn replies(name: &str) -> Vec<JszReply> {
    let text = std::fs::read_to_string(path(name)).expect("fixture");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn event(name: &str, at: SystemTime) -> MetaEvent {
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path(name)).expect("fixture")).expect("json");
    let subject = value["subject"].as_str().expect("subject");
    let payload = serde_json::to_vec(&value["payload"]).expect("payload");
    decode_event(subject, &payload, at).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

/// A history and what the service would see, built poll by poll from fixtures.
struct Scenario {
    history: History,
    snapshot: Snapshot,
    thresholds: Thresholds,
}

impl Scenario {
    fn new() -> Self {
        Scenario {
            history: History::default(),
            snapshot: Snapshot::default(),
            thresholds: crate::support::thresholds(),
        }
    }

    /// Records one poll of the named fixtures (gathered unless named `*_isolated.json`).
    fn poll(&mut self, at: SystemTime, names: &[&str]) -> &mut Self {
        let mut all = Vec::new();
        for name in names {
            let via = if name.contains("isolated") {
                Via::Direct
            } else {
                Via::Gather
            };
            all.extend(replies(name).into_iter().map(|r| (r, via)));
        }
        self.snapshot = Snapshot::from_replies(at, all, &self.history.known_servers());
        self.history
            .record_snapshot(&self.snapshot, &self.thresholds, at);
        self
    }

    /// Records one poll of these replies (all gathered).
    fn poll_replies(&mut self, at: SystemTime, replies: Vec<JszReply>) -> &mut Self {
        let all = replies.into_iter().map(|r| (r, Via::Gather));
        self.snapshot = Snapshot::from_replies(at, all, &self.history.known_servers());
        self.history
            .record_snapshot(&self.snapshot, &self.thresholds, at);
        self
    }

    fn evaluate(&self, now: SystemTime) -> Vec<Evaluation> {
        evaluate_all(&self.snapshot, &self.history, &self.thresholds, now).1
    }
}

fn findings(evaluations: &[Evaluation], check: CheckId) -> Vec<Finding> {
    evaluations
        .iter()
        .filter(|e| e.check == check)
        .flat_map(|e| match &e.outcome {
            Outcome::Ran { findings, .. } => findings.clone(),
            Outcome::Skipped { .. } | Outcome::Retired => Vec::new(),
        })
        .collect()
}

fn servers(found: &[Finding]) -> BTreeSet<String> {
    found.iter().filter_map(|f| f.server.clone()).collect()
}

fn reasons(f: &Finding) -> Vec<String> {
    f.evidence["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Servers that answered in a fixture (fixtures are re-captured, so names are read, not assumed).
fn answering(name: &str) -> BTreeSet<String> {
    replies(name).into_iter().map(|r| r.server.name).collect()
}

/// Servers of `healthy` missing from `faulty`: the victims of the fault.
fn missing(healthy: &str, faulty: &str) -> BTreeSet<String> {
    answering(healthy)
        .difference(&answering(faulty))
        .cloned()
        .collect()
}

/// The leader the servers of a fixture report (the most common answer).
fn reported_leader(name: &str) -> Option<String> {
    let mut votes: std::collections::BTreeMap<String, usize> = Default::default();
    for r in replies(name) {
        if let Some(l) = r.data.and_then(|d| d.meta_cluster).and_then(|m| m.leader) {
            *votes.entry(l).or_default() += 1;
        }
    }
    votes.into_iter().max_by_key(|(_, v)| *v).map(|(l, _)| l)
}

#[test]
fn healthy_clusters_raise_nothing() {
    for name in ["healthy_3.json", "healthy_5.json"] {
        let mut s = Scenario::new();
        s.poll(t(0), &[name]).poll(t(1), &[name]);
        let evaluations = s.evaluate(t(1));
        for e in &evaluations {
            if nats_insights::checks::sources::EXTRA_SOURCE_CHECKS.contains(&e.check) {
                // Fixtures hold JSZ replies only: undecided, and nothing raised.
                assert!(findings(&evaluations, e.check).is_empty(), "{name}");
                continue;
            }
            assert_eq!(
                e.outcome,
                Outcome::Ran {
                    findings: vec![],
                    undecided: BTreeSet::new()
                },
                "{name}"
            );
        }
    }
}

#[test]
fn killed_follower_is_offline_by_silence_and_not_answering_without_the_offline_flag() {
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"])
        .poll(t(4), &["follower_killed_3.json"]);
    let e = s.evaluate(t(4));
    let offline = findings(&e, CheckId::META_001);
    assert_eq!(
        servers(&offline),
        missing("healthy_3.json", "follower_killed_3.json")
    );
    let r = reasons(&offline[0]);
    assert!(r.contains(&"silent".to_string()), "{r:?}");
    assert!(r.contains(&"not_answering".to_string()), "{r:?}");
    assert!(!r.contains(&"offline_flag".to_string()), "{r:?}");
    assert!(findings(&e, CheckId::META_006).is_empty());
}

#[test]
fn gracefully_stopped_follower_carries_the_servers_offline_flag() {
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"])
        .poll(t(1), &["follower_stopped_3.json"]);
    let offline = findings(&s.evaluate(t(1)), CheckId::META_001);
    assert_eq!(
        servers(&offline),
        missing("healthy_3.json", "follower_stopped_3.json")
    );
    assert!(reasons(&offline[0]).contains(&"offline_flag".to_string()));
}

#[test]
fn lame_duck_event_is_reported_before_the_next_poll() {
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"]);
    // The event arrives between polls: the last snapshot still shows n2 answering.
    let lameduck = event("event_lameduck.json", t(1));
    let MetaEvent::LameDuck {
        server, server_id, ..
    } = lameduck.clone()
    else {
        panic!("not a lame-duck event: {lameduck:?}");
    };
    // The captured event came from another run: give the server the id it carries.
    if let Some(rec) = s.history.servers.get_mut(&server) {
        rec.server_id = server_id.clone();
    }
    if let Some(view) = s.snapshot.views.get_mut(&server) {
        view.server.id = server_id.clone();
    }
    s.history.record_event(&lameduck);
    let offline = findings(&s.evaluate(t(1)), CheckId::META_001);
    assert_eq!(servers(&offline), set(&[server.as_str()]));
    assert_eq!(reasons(&offline[0]), ["departed"]);
}

#[test]
fn two_of_three_lost_is_quorum_lost_whether_or_not_the_survivor_still_names_a_leader() {
    for fixture in [
        "two_killed_3_early.json",
        "two_killed_3.json",
        "two_followers_killed_3.json",
    ] {
        let mut s = Scenario::new();
        s.poll(t(0), &["healthy_3.json"]).poll(t(5), &[fixture]);
        let e = s.evaluate(t(5));
        let quorum = findings(&e, CheckId::META_006);
        assert_eq!(quorum.len(), 1, "{fixture}");
        let ev = &quorum[0].evidence;
        assert_eq!(ev["expected_members"], 3, "{fixture}: {ev:#}");
        assert_eq!(ev["quorum_needed"], 2);
        assert_eq!(ev["members_answered"], 1);
        assert_eq!(ev["members_online"], 1);
        assert_eq!(
            ev["not_answering"].as_array().map(Vec::len),
            Some(2),
            "{fixture}: {ev:#}"
        );
        assert_eq!(
            servers(&findings(&e, CheckId::META_001)).len(),
            2,
            "{fixture}"
        );
    }
}

#[test]
fn every_member_online_without_a_leader_is_leaderless_past_the_hold_never_quorum_lost() {
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"])
        .poll(t(10), &["leaderless_3.json"])
        .poll(t(15), &["leaderless_3.json"]);
    // 5 s: an election may take 9 s.
    let e = s.evaluate(t(15));
    assert!(findings(&e, CheckId::META_006).is_empty());
    assert!(findings(&e, CheckId::META_106).is_empty());
    assert!(findings(&e, CheckId::META_001).is_empty(), "all answer");
    s.poll(t(25), &["leaderless_3.json"]);
    let e = s.evaluate(t(25));
    assert!(findings(&e, CheckId::META_006).is_empty());
    let leaderless = findings(&e, CheckId::META_106);
    assert_eq!(leaderless.len(), 1);
    assert!(
        leaderless[0]
            .summary
            .contains("no meta leader for 15.0 s although 3 of 3 members are online"),
        "{}",
        leaderless[0].summary
    );
    s.poll(t(26), &["healthy_3.json"]);
    assert!(findings(&s.evaluate(t(26)), CheckId::META_106).is_empty());
}

#[test]
fn members_back_after_a_quorum_loss_are_not_leaderless_before_a_whole_election() {
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"])
        .poll(t(5), &["two_killed_3.json"])
        .poll(t(60), &["two_killed_3.json"]);
    let e = s.evaluate(t(60));
    assert_eq!(findings(&e, CheckId::META_006).len(), 1);
    assert!(findings(&e, CheckId::META_106).is_empty());
    // Both back, electing: leaderless for 56 s, but a quorum answers for only 1 s, then 12 s.
    s.poll(t(61), &["leaderless_3.json"]);
    let e = s.evaluate(t(61));
    assert!(
        findings(&e, CheckId::META_006).is_empty(),
        "all three answer"
    );
    assert!(findings(&e, CheckId::META_106).is_empty());
    s.poll(t(73), &["leaderless_3.json"]);
    assert!(findings(&s.evaluate(t(73)), CheckId::META_106).is_empty());
    s.poll(t(74), &["leaderless_3.json"]);
    assert_eq!(findings(&s.evaluate(t(74)), CheckId::META_106).len(), 1);
}

#[test]
fn every_route_cut_while_the_old_leader_still_claims_is_the_leader_cut_off_not_quorum_lost() {
    // n2 claims leadership and has not heard n1 and n3 for 6.5 s; they name no leader (they
    // campaign) but answer on their own connections.
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"])
        .poll(t(10), &["routes_cut_3_old_leader.json"]);
    let e = s.evaluate(t(10));
    assert!(findings(&e, CheckId::META_006).is_empty());
    s.poll(t(14), &["routes_cut_3_old_leader.json"]);
    let e = s.evaluate(t(14));
    assert!(
        findings(&e, CheckId::META_006).is_empty(),
        "n1 and n3 answer"
    );
    let offline = findings(&e, CheckId::META_001);
    assert_eq!(servers(&offline), set(&["n2"]));
    assert_eq!(reasons(&offline[0]), ["cut_off"]);
    assert!(
        findings(&e, CheckId::META_106).is_empty(),
        "n2 still claims to lead"
    );
}

#[test]
fn two_of_five_lost_keeps_quorum() {
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_5.json"])
        .poll(t(4), &["two_killed_5.json"]);
    let e = s.evaluate(t(4));
    assert_eq!(
        servers(&findings(&e, CheckId::META_001)),
        missing("healthy_5.json", "two_killed_5.json")
    );
    assert!(findings(&e, CheckId::META_006).is_empty());
}

#[test]
fn partitioned_leader_is_a_disagreement_after_the_threshold_and_offline_to_the_new_leader() {
    let mut s = Scenario::new();
    let both = [
        "partition_leader_3_majority.json",
        "partition_leader_3_isolated.json",
    ];
    s.poll(t(0), &["healthy_3.json"]).poll(t(10), &both);
    // Just begun: shorter than --disagreement-after, counted but not raised.
    let e = s.evaluate(t(11));
    assert!(findings(&e, CheckId::META_002).is_empty());
    s.poll(t(14), &both);
    let e = s.evaluate(t(14));
    let disagreement = findings(&e, CheckId::META_002);
    assert_eq!(disagreement.len(), 1);
    let groups = &disagreement[0].evidence["groups"];
    assert_eq!(groups.as_array().map(Vec::len), Some(2), "{groups:#}");
    let isolated = answering("partition_leader_3_isolated.json");
    let new_leader = reported_leader("partition_leader_3_majority.json").expect("new leader");
    let isolated_names: Vec<&String> = isolated.iter().collect();
    assert_eq!(
        disagreement[0].evidence["stale_leaders"],
        serde_json::json!(isolated_names)
    );
    assert_eq!(
        disagreement[0].evidence["leader_followed_by_most"],
        new_leader.as_str()
    );
    // The isolated old leader answers (directly), yet the new leader never hears from it.
    assert_eq!(servers(&findings(&e, CheckId::META_001)), isolated);
    assert!(findings(&e, CheckId::META_006).is_empty());
    // The poll saw the leader move to the majority's: one change (or none if it was already it).
    assert!(s.history.leader_changes.len() <= 1);
    assert_eq!(s.history.leader.as_deref(), Some(new_leader.as_str()));
}

#[test]
fn short_disagreement_is_counted_not_raised() {
    let mut s = Scenario::new();
    let both = [
        "partition_leader_3_majority.json",
        "partition_leader_3_isolated.json",
    ];
    s.poll(t(0), &["healthy_3.json"])
        .poll(t(1), &both)
        .poll(t(2), &["healthy_3.json"]);
    assert!(findings(&s.evaluate(t(2)), CheckId::META_002).is_empty());
    assert_eq!(s.history.brief_disagreements, 1);
    assert!(s.history.disagreement.is_none());
}

#[test]
fn rolling_rename_reports_stale_peers_and_the_recovery() {
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"])
        .poll(t(10), &["stale_peers_3_step1.json"])
        .poll(t(20), &["stale_peers_3_step2.json"])
        .poll(t(30), &["stale_peers_3.json"])
        .poll(t(40), &["stale_peers_3.json"]);
    let e = s.evaluate(t(40));
    let quorum = findings(&e, CheckId::META_006);
    assert_eq!(quorum.len(), 1);
    let ev = &quorum[0].evidence;
    // As reproduced on 2.15.1: the group grew to 5 members (quorum 3), m3 never became one.
    assert_eq!(ev["expected_members"], 5, "{ev:#}");
    assert_eq!(ev["quorum_needed"], 3);
    assert_eq!(ev["members_online"], 2, "m1 and m2 answer: {ev:#}");
    assert_eq!(
        ev["stale_peers"],
        serde_json::json!(["n1", "n2", "n3"]),
        "{ev:#}"
    );
    assert_eq!(ev["live_non_members"], serde_json::json!(["m3"]));
    let commands: Vec<String> = quorum[0]
        .remediation
        .iter()
        .filter_map(|r| r.command.clone())
        .collect();
    for peer in ["fjFyEjc1", "44jzkV9D", "BXScrY9i"] {
        assert!(
            commands
                .iter()
                .any(|c| c.contains("peer-remove") && c.contains(peer)),
            "peer-remove {peer} in {commands:#?}"
        );
    }
    let steps: String = quorum[0]
        .remediation
        .iter()
        .map(|r| r.step.clone())
        .collect();
    assert!(
        steps.contains("Stop m3"),
        "names the live non-member to bring back: {steps}"
    );
    assert!(
        steps.contains("5 members") && steps.contains("needs 3"),
        "{steps}"
    );
    assert!(steps.contains("one at a time"), "{steps}");

    let stale = findings(&e, CheckId::META_001);
    assert_eq!(servers(&stale), set(&["n1", "n2", "n3"]));
    for f in &stale {
        assert_eq!(f.evidence["stale_peer"], true, "{:#}", f.evidence);
        assert!(f.summary.contains("stale peer"), "{}", f.summary);
    }
}

#[test]
fn leader_flapping_counts_advisories_and_polls_once_each_and_ignores_the_first_leader() {
    let mut s = Scenario::new();
    s.thresholds.flap_window = Duration::from_secs(60);
    // The leader at start is not a change.
    s.poll(t(0), &["healthy_3.json"]);
    let first = s.history.leader.clone().expect("leader");
    assert!(s.history.leader_changes.is_empty());
    // An election advisory names a peer hash; the service maps it to a name.
    let elected = event("event_leader_elected.json", t(5));
    let MetaEvent::LeaderElected { leader_peer, .. } = &elected else {
        panic!("{elected:?}");
    };
    let second = s
        .history
        .name_of_peer(leader_peer)
        .expect("peer known")
        .to_string();
    assert_ne!(first, second, "the captured election moved the leader");
    s.history.record_event(&elected);
    assert_eq!(s.history.leader.as_deref(), Some(second.as_str()));
    // The poll that sees the same change does not count it again.
    s.poll(t(6), &["leader_killed_3_reelected.json"]);
    assert_eq!(s.history.leader_changes.len(), 1);
    assert!(
        findings(&s.evaluate(t(6)), CheckId::META_003).is_empty(),
        "one change is allowed"
    );
    // Back to the first leader: the second change in the window raises META_003.
    s.poll(t(8), &["healthy_3.json"]);
    assert_eq!(s.history.leader_changes.len(), 2);
    let flap = findings(&s.evaluate(t(8)), CheckId::META_003);
    assert_eq!(flap.len(), 1);
    assert_eq!(flap[0].evidence["count"], 2);
    assert_eq!(flap[0].evidence["changes"][0]["to"], second.as_str());
    assert_eq!(flap[0].evidence["changes"][0]["source"], "advisory");
    assert_eq!(flap[0].evidence["changes"][1]["to"], first.as_str());
    assert_eq!(flap[0].evidence["changes"][1]["source"], "poll");
    // Past a quarter of the window since the last change, it is kept but never raised anew
    // (undecided): an instance on a clock behind another's must not raise again what the other
    // just resolved when the window let go of a change.
    let later = s.evaluate(t(8 + 16));
    assert!(findings(&later, CheckId::META_003).is_empty());
    assert!(later.iter().any(|e| e.check == CheckId::META_003
        && matches!(&e.outcome, Outcome::Ran { undecided, .. } if undecided.len() == 1)));
    // Once the window slides past the first change it resolves.
    let resolved = s.evaluate(t(66));
    assert!(findings(&resolved, CheckId::META_003).is_empty());
    assert!(resolved.iter().any(|e| e.check == CheckId::META_003
        && matches!(&e.outcome, Outcome::Ran { undecided, .. } if undecided.is_empty())));
}

#[test]
fn every_captured_event_decodes() {
    let at = t(0);
    let field = |name: &str, field: &str| -> String {
        let text = std::fs::read_to_string(path(name)).expect("fixture");
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        value["payload"][field].as_str().expect("field").to_string()
    };
    let expected = field("event_shutdown.json", "name");
    assert!(
        matches!(event("event_shutdown.json", at), MetaEvent::Shutdown { server, .. } if server == expected)
    );
    let expected = field("event_lameduck.json", "name");
    assert!(
        matches!(event("event_lameduck.json", at), MetaEvent::LameDuck { server, .. } if server == expected)
    );
    let expected = field("event_leader_elected.json", "leader");
    assert!(
        matches!(event("event_leader_elected.json", at), MetaEvent::LeaderElected { leader_peer, .. } if leader_peer == expected)
    );
    // The announcing server's own time, which leader changes are aged on (META_003).
    let stamped = humantime::parse_rfc3339_weak(&field("event_leader_elected.json", "timestamp"))
        .expect("the fixture's timestamp");
    assert!(
        matches!(event("event_leader_elected.json", at), MetaEvent::LeaderElected { server_at, .. } if server_at == Some(stamped))
    );
    let expected = field("event_server_removed.json", "server");
    assert!(
        matches!(event("event_server_removed.json", at), MetaEvent::ServerRemoved { server, .. } if server == expected)
    );
}

#[test]
fn lifecycle_on_fixtures_raises_once_resolves_once_and_never_resolves_when_blind() {
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"])
        .poll(t(4), &["follower_killed_3.json"]);
    let (active, transitions) = reconcile(
        &ActiveSet::new(),
        &Default::default(),
        &s.evaluate(t(4)),
        t(4),
    );
    let raised: Vec<String> = transitions.iter().map(|t| t.finding.key.clone()).collect();
    assert!(
        raised.iter().any(|k| k.starts_with("META_001/")),
        "{raised:?}"
    );
    assert!(transitions.iter().all(|t| t.kind == TransitionKind::Raised));
    let active: ActiveSet = active
        .into_iter()
        .filter(|(k, _)| k.starts_with("META_001/"))
        .collect();
    // Same fault next poll: nothing new.
    s.poll(t(5), &["follower_killed_3.json"]);
    let (active, transitions) = reconcile(&active, &Default::default(), &s.evaluate(t(5)), t(5));
    assert!(transitions.is_empty());
    // Blind poll (nobody answered): nothing resolves.
    let blind = Snapshot::default();
    let (_, evaluations) = evaluate_all(&blind, &s.history, &s.thresholds, t(6));
    assert!(evaluations
        .iter()
        .all(|e| matches!(e.outcome, Outcome::Skipped { .. })));
    let (active, transitions) = reconcile(&active, &Default::default(), &evaluations, t(6));
    assert!(transitions.is_empty());
    assert_eq!(active.len(), 1);
    // Back to healthy: resolved once.
    s.poll(t(7), &["healthy_3.json"]);
    let evaluations: Vec<Evaluation> = s
        .evaluate(t(7))
        .into_iter()
        .filter(|e| e.check == CheckId::META_001)
        .collect();
    let (active, transitions) = reconcile(&active, &Default::default(), &evaluations, t(7));
    assert_eq!(transitions.len(), 1);
    assert_eq!(transitions[0].kind, TransitionKind::Resolved);
    assert!(active.is_empty());
}

#[test]
fn a_peer_removed_while_stopped_is_forgotten_and_its_finding_resolves() {
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"])
        .poll(t(1), &["follower_stopped_3.json"]);
    let victim = missing("healthy_3.json", "follower_stopped_3.json");
    let (active, _) = reconcile(
        &ActiveSet::new(),
        &Default::default(),
        &s.evaluate(t(1)),
        t(1),
    );
    assert_eq!(active.len(), 1);
    // Removing a stopped peer sends no advisory: the leader's smaller membership is the signal.
    s.poll(t(3), &["follower_removed_3.json"]);
    let known: BTreeSet<String> = s
        .history
        .known_servers()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert!(
        known.is_disjoint(&victim),
        "{known:?} still expects {victim:?}"
    );
    let (active, transitions) = reconcile(&active, &Default::default(), &s.evaluate(t(3)), t(3));
    let kinds: Vec<(CheckId, TransitionKind)> = transitions
        .iter()
        .map(|t| (t.finding.check, t.kind))
        .collect();
    // The offline member is resolved; the group's shrinking is news of its own (META_102).
    assert_eq!(
        kinds,
        vec![
            (CheckId::META_001, TransitionKind::Resolved),
            (CheckId::META_102, TransitionKind::Raised)
        ]
    );
    assert!(active
        .values()
        .all(|a| a.finding.check == CheckId::META_102));
}

#[test]
fn a_disagreeing_server_missing_from_one_poll_does_not_end_the_disagreement() {
    let mut s = Scenario::new();
    let both = [
        "partition_leader_3_majority.json",
        "partition_leader_3_isolated.json",
    ];
    s.poll(t(0), &["healthy_3.json"]).poll(t(10), &both);
    // Under load the isolated server's direct view misses a poll: still a disagreement.
    s.poll(t(12), &["partition_leader_3_majority.json"]);
    assert!(s.history.disagreement.is_some());
    s.poll(t(14), &both);
    let disagreement = findings(&s.evaluate(t(14)), CheckId::META_002);
    assert_eq!(disagreement.len(), 1, "raised: it has lasted since t=10");
    // A disagreeing server silent for longer than the grace is gone, not disagreeing.
    s.poll(t(30), &["partition_leader_3_majority.json"]);
    assert!(s.history.disagreement.is_none());
}

/// `healthy_3.json` just after the leadership moved from n1 to n2: n2's `active` for n3 is still
/// the silence it saw before it led (`stale`), as real new leaders report in their first poll.
fn just_after_step_down(stale: Duration) -> Vec<JszReply> {
    let mut raw: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path("healthy_3.json")).expect("fixture"))
            .expect("json");
    let peer_of = |name: &str| {
        raw.iter()
            .flat_map(|r| {
                r["data"]["meta_cluster"]["replicas"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .find(|p| p["name"] == name)
            .map(|p| p["peer"].clone())
            .expect("peer hash")
    };
    let peers: Vec<(&str, serde_json::Value)> = ["n1", "n2", "n3"]
        .into_iter()
        .map(|n| (n, peer_of(n)))
        .collect();
    for reply in &mut raw {
        let me = reply["server"]["name"].as_str().expect("name").to_string();
        let replicas: Vec<serde_json::Value> = peers
            .iter()
            .filter(|(n, _)| *n != me)
            .map(|(n, peer)| {
                let (current, active) = match (me.as_str(), *n) {
                    ("n2", "n3") => (false, stale.as_nanos() as u64),
                    ("n2", _) | (_, "n2") => (true, 200_000_000),
                    _ => (false, 0),
                };
                serde_json::json!({"name": n, "peer": peer, "current": current, "active": active})
            })
            .collect();
        let meta = &mut reply["data"]["meta_cluster"];
        meta["leader"] = "n2".into();
        meta["peer"] = peers[1].1.clone();
        meta["replicas"] = replicas.into();
    }
    raw.into_iter()
        .map(|r| serde_json::from_value(r).expect("reply"))
        .collect()
}

#[test]
fn a_new_leaders_stale_silence_for_a_follower_that_answers_is_not_an_offline_replica() {
    let stale = Duration::from_secs(6);
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"])
        .poll_replies(t(10), just_after_step_down(stale));
    assert_eq!(s.history.leader.as_deref(), Some("n2"));
    let e = s.evaluate(t(10));
    assert!(
        findings(&e, CheckId::META_001).is_empty(),
        "{:#?}",
        findings(&e, CheckId::META_001)
    );
    // The same silence from a follower that does not answer is an offline replica.
    let without_n3: Vec<JszReply> = just_after_step_down(stale)
        .into_iter()
        .filter(|r| r.server.name != "n3")
        .collect();
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"])
        .poll_replies(t(10), without_n3);
    assert_eq!(
        servers(&findings(&s.evaluate(t(10)), CheckId::META_001)),
        set(&["n3"])
    );
    // And a leader seen from the start (no election seen) is trusted as before.
    let mut s = Scenario::new();
    s.poll_replies(t(10), just_after_step_down(stale));
    assert_eq!(
        servers(&findings(&s.evaluate(t(10)), CheckId::META_001)),
        set(&["n3"])
    );
}

#[test]
fn a_leader_re_elected_after_losing_its_leadership_counts_silence_from_the_re_election() {
    // n2 leads, loses its leadership for a moment and wins again: no change of leader, but its
    // `active` for a follower still counts from before it led again.
    let stale = Duration::from_secs(6);
    let healthy = || just_after_step_down(Duration::from_millis(200));
    let mut s = Scenario::new();
    s.poll_replies(t(0), healthy());
    let peer = s.history.peer_of_name("n2").expect("peer hash").to_string();
    s.history.record_event(&MetaEvent::LeaderElected {
        leader_peer: peer,
        cluster: None,
        domain: None,
        at: t(10),
        server_at: None,
    });
    assert!(s.history.leader_changes.is_empty(), "the same leader");
    s.poll_replies(t(10), just_after_step_down(stale));
    let e = s.evaluate(t(10));
    assert!(
        findings(&e, CheckId::META_001).is_empty(),
        "{:#?}",
        findings(&e, CheckId::META_001)
    );
    // Without the election the same silence is an offline replica.
    let mut s = Scenario::new();
    s.poll_replies(t(0), healthy())
        .poll_replies(t(10), just_after_step_down(stale));
    assert_eq!(
        servers(&findings(&s.evaluate(t(10)), CheckId::META_001)),
        set(&["n3"])
    );
}

#[test]
fn a_leader_seen_losing_its_leadership_and_leading_again_was_re_elected_without_an_advisory() {
    let stale = Duration::from_secs(6);
    let healthy = || just_after_step_down(Duration::from_millis(200));
    // n2 answers without claiming to lead (it lost its leadership), then leads again.
    let mut lost = healthy();
    for reply in &mut lost {
        if reply.server.name == "n2" {
            if let Some(meta) = reply.data.as_mut().and_then(|d| d.meta_cluster.as_mut()) {
                meta.leader = None;
            }
        }
    }
    let mut s = Scenario::new();
    s.poll_replies(t(0), healthy())
        .poll_replies(t(5), lost)
        .poll_replies(t(10), just_after_step_down(stale));
    assert!(s.history.leader_changes.is_empty(), "the same leader");
    let e = s.evaluate(t(10));
    assert!(
        findings(&e, CheckId::META_001).is_empty(),
        "{:#?}",
        findings(&e, CheckId::META_001)
    );
}

#[test]
fn silence_through_a_server_whose_routes_are_being_cut_is_undecided_not_offline() {
    // One poll after a healthy one, a server is missing from the answers (it restarted a moment
    // ago and its pinned link has not reconnected yet) while the leader still hears it.
    let healthy = replies("healthy_3.json");
    let leader = reported_leader("healthy_3.json").expect("a leader");
    let missing = healthy
        .iter()
        .map(|r| r.server.name.clone())
        .find(|n| *n != leader)
        .expect("a follower");
    let without = |replies: &[JszReply]| -> Vec<JszReply> {
        replies
            .iter()
            .filter(|r| r.server.name != missing)
            .cloned()
            .collect()
    };
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"])
        .poll_replies(t(1), without(&healthy));
    // On a path that reaches every live server, its silence is an offline replica at once.
    let offline = findings(&s.evaluate(t(1)), CheckId::META_001);
    assert_eq!(servers(&offline), set(&[&missing]));
    // When some servers answered only on their own pinned links, the silence says nothing.
    s.snapshot.reach_impaired = true;
    let e = s.evaluate(t(1));
    assert!(findings(&e, CheckId::META_001).is_empty());
    let undecided = e
        .iter()
        .find(|e| e.check == CheckId::META_001)
        .and_then(|e| match &e.outcome {
            Outcome::Ran { undecided, .. } => Some(undecided.clone()),
            Outcome::Skipped { .. } | Outcome::Retired => None,
        })
        .expect("META_001 ran");
    assert_eq!(
        undecided.len(),
        1,
        "it is undecided, so a raised finding stays: {undecided:?}"
    );
}

/// `healthy_5.json` as seen a moment into a cut: the leader has not heard from the followers
/// in `lost` for 3.2 s, and each of them last heard the leader 2.9 s ago (no longer `current`).
fn cut_between_leader_and(lost: &[&str]) -> Vec<JszReply> {
    let leader = reported_leader("healthy_5.json").expect("a leader");
    let mut all = replies("healthy_5.json");
    for reply in &mut all {
        let name = reply.server.name.clone();
        let Some(meta) = reply.data.as_mut().and_then(|d| d.meta_cluster.as_mut()) else {
            continue;
        };
        for p in &mut meta.replicas {
            if name == leader && lost.contains(&p.name.as_str()) {
                p.active = 3_200_000_000;
            }
            if p.name == leader && lost.contains(&name.as_str()) {
                p.current = false;
                p.active = 2_900_000_000;
            }
        }
    }
    all
}

#[test]
fn a_leader_most_followers_stopped_hearing_does_not_make_them_offline() {
    let leader = reported_leader("healthy_5.json").expect("a leader");
    let followers: Vec<String> = answering("healthy_5.json")
        .into_iter()
        .filter(|n| *n != leader)
        .collect();
    let names: Vec<&str> = followers.iter().map(String::as_str).collect();
    // The leader is being cut off (before the followers' silence passes --offline-after): its
    // silence towards the followers that answer and lost it says nothing about them.
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_5.json"])
        .poll_replies(t(4), cut_between_leader_and(&names));
    let e = s.evaluate(t(4));
    assert!(findings(&e, CheckId::META_001).is_empty(), "{e:#?}");
    assert!(findings(&e, CheckId::META_006).is_empty());
    // Three of four followers are enough to tell who is cut off.
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_5.json"])
        .poll_replies(t(4), cut_between_leader_and(&names[..3]));
    assert!(findings(&s.evaluate(t(4)), CheckId::META_001).is_empty());
    // One follower that lost a leader the others still hear is the one cut off.
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_5.json"])
        .poll_replies(t(4), cut_between_leader_and(&names[..1]));
    let offline = findings(&s.evaluate(t(4)), CheckId::META_001);
    assert_eq!(servers(&offline), set(&[names[0]]));
}

#[test]
fn a_removed_peer_shrinks_the_group_names_who_left_and_leaves_it_even() {
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"])
        .poll(t(1), &["follower_stopped_3.json"])
        .poll(t(3), &["follower_removed_3.json"]);
    let victim = missing("healthy_3.json", "follower_stopped_3.json");
    let e = s.evaluate(t(3));
    let changed = findings(&e, CheckId::META_102);
    assert_eq!(changed.len(), 1, "{changed:#?}");
    let f = &changed[0];
    assert_eq!(f.key, "META_102/default");
    assert_eq!(f.evidence["from"], 3, "{:#}", f.evidence);
    assert_eq!(f.evidence["to"], 2);
    assert_eq!(f.evidence["left"], serde_json::json!(victim));
    assert!(f.summary.contains("shrank from 3 to 2"), "{}", f.summary);
    assert!(
        findings(&e, CheckId::META_103).is_empty(),
        "even only after --even-after"
    );

    s.poll(t(40), &["follower_removed_3.json"]);
    let e = s.evaluate(t(40));
    let even = findings(&e, CheckId::META_103);
    assert_eq!(even.len(), 1, "{even:#?}");
    assert_eq!(even[0].evidence["cluster_size"], 2);
    assert_eq!(even[0].evidence["failures_tolerated"], 0);
    assert!(even[0].summary.contains("even number of members, 2"));
    assert_eq!(
        findings(&e, CheckId::META_102).len(),
        1,
        "still within the hold"
    );

    // The hold passes without another change: the new size is the group's size.
    s.poll(t(3 + 601), &["follower_removed_3.json"]);
    let e = s.evaluate(t(3 + 601));
    assert!(findings(&e, CheckId::META_102).is_empty());
    assert_eq!(findings(&e, CheckId::META_103).len(), 1);
}

#[test]
fn a_rename_grows_the_group_without_anyone_leaving_and_names_the_stale_peer() {
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"])
        .poll(t(10), &["stale_peers_3_step1.json"]);
    let e = s.evaluate(t(10));
    let changed = findings(&e, CheckId::META_102);
    assert_eq!(changed.len(), 1, "{changed:#?}");
    let f = &changed[0];
    assert_eq!(f.evidence["from"], 3, "{:#}", f.evidence);
    assert_eq!(f.evidence["to"], 4);
    assert_eq!(f.evidence["joined"], serde_json::json!(["m1"]));
    assert_eq!(f.evidence["left"], serde_json::json!([]));
    assert_eq!(f.evidence["stale"][0]["name"], "n1", "{:#}", f.evidence);
    let peer = f.evidence["stale"][0]["peer"]
        .as_str()
        .expect("peer id")
        .to_string();
    assert!(
        f.summary.contains("No member left") && f.summary.contains(&peer),
        "{}",
        f.summary
    );
    // A member listed without a name is removed by its bare peer id.
    let command = format!("nats server cluster peer-remove {peer}");
    assert!(
        f.remediation
            .iter()
            .any(|r| r.command.as_deref() == Some(command.as_str())),
        "{:#?}",
        f.remediation
    );
    // The second rename within the hold is the same episode: 3 to 5, two joined.
    s.poll(t(20), &["stale_peers_3_step2.json"]);
    let e = s.evaluate(t(20));
    let changed = findings(&e, CheckId::META_102);
    assert_eq!(changed[0].evidence["from"], 3);
    assert_eq!(changed[0].evidence["to"], 5);
    assert_eq!(
        changed[0].evidence["joined"],
        serde_json::json!(["m1", "m2"])
    );
}

#[test]
fn a_size_that_goes_back_resolves_the_change_at_once() {
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"])
        .poll(t(1), &["follower_removed_running_3.json"]);
    assert_eq!(findings(&s.evaluate(t(1)), CheckId::META_102).len(), 1);
    s.poll(t(5), &["healthy_3.json"]);
    let e = s.evaluate(t(5));
    assert!(findings(&e, CheckId::META_102).is_empty(), "back to 3");
    assert!(findings(&e, CheckId::META_103).is_empty());
}

#[test]
fn versions_that_differ_are_named_server_by_server_and_agreeing_resolves() {
    // One 2.14 server among 2.15 ones, as in a rolling upgrade.
    let mut s = Scenario::new();
    s.poll(t(0), &["mixed_versions_3.json"]);
    let e = s.evaluate(t(0));
    let found = findings(&e, CheckId::META_104);
    assert_eq!(found.len(), 1, "{found:#?}");
    let f = &found[0];
    assert_eq!(f.key, "META_104/default");
    assert_eq!(f.evidence["differing"], serde_json::json!(["n3"]));
    assert_eq!(f.evidence["majority"], "2.15.1");
    assert!(f.summary.contains("2.14.6 on n3"), "{}", f.summary);
    assert!(f.summary.contains("rolling upgrade"), "{}", f.summary);
    assert_eq!(
        found[0].check.severity(),
        nats_insights::checks::Severity::Info
    );
    s.poll(t(5), &["healthy_3.json"]);
    assert!(findings(&s.evaluate(t(5)), CheckId::META_104).is_empty());
}

#[test]
fn an_even_group_is_raised_once_its_size_held() {
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_4.json"]);
    assert!(findings(&s.evaluate(t(0)), CheckId::META_103).is_empty());
    s.poll(t(31), &["healthy_4.json"]);
    let e = s.evaluate(t(31));
    let even = findings(&e, CheckId::META_103);
    assert_eq!(even.len(), 1, "{even:#?}");
    assert_eq!(even[0].evidence["cluster_size"], 4);
    assert_eq!(even[0].evidence["quorum_needed"], 3);
    assert_eq!(even[0].evidence["failures_tolerated"], 1);
    assert!(
        even[0].summary.contains("like a group of 3"),
        "{}",
        even[0].summary
    );
    assert!(findings(&e, CheckId::META_102).is_empty(), "no change seen");
}

#[test]
fn pending_requests_on_the_leader_are_raised_only_after_they_held() {
    // Captured during a flood of expensive JetStream API requests through the leader n1.
    let mut s = Scenario::new();
    s.poll(t(0), &["pending_high_3.json"])
        .poll(t(3), &["pending_high_3.json"]);
    assert!(
        findings(&s.evaluate(t(3)), CheckId::META_008).is_empty(),
        "3 s < 5 s"
    );
    s.poll(t(6), &["pending_high_3.json"]);
    let found = findings(&s.evaluate(t(6)), CheckId::META_008);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].server.as_deref(), Some("n1"));
    assert_eq!(found[0].evidence["pending"], 1985);
    assert!(found[0]
        .summary
        .contains("1985 JetStream API requests pending"));
    s.poll(t(7), &["healthy_3.json"]);
    assert!(findings(&s.evaluate(t(7)), CheckId::META_008).is_empty());
}

#[test]
fn a_member_that_answers_but_lags_is_behind_and_an_offline_one_is_not() {
    // Captured with follower n3 starved of CPU under meta churn: n1 shows it not current.
    let mut s = Scenario::new();
    s.poll(t(0), &["member_behind_3.json"]);
    assert!(findings(&s.evaluate(t(0)), CheckId::META_101).is_empty());
    s.poll(t(11), &["member_behind_3.json"]);
    let found = findings(&s.evaluate(t(11)), CheckId::META_101);
    assert_eq!(servers(&found), set(&["n3"]), "{found:#?}");
    assert_eq!(found[0].key, "META_101/default/n3");
    assert_eq!(found[0].evidence["lag"], 118);
    assert!(
        found[0]
            .summary
            .contains("not current (118 operations behind)"),
        "{}",
        found[0].summary
    );
    // Caught up for one poll is not caught up: a starved member looks so now and then.
    s.poll(t(12), &["healthy_3.json"]);
    assert_eq!(findings(&s.evaluate(t(12)), CheckId::META_101).len(), 1);
    s.poll(t(16), &["healthy_3.json"]);
    assert!(findings(&s.evaluate(t(16)), CheckId::META_101).is_empty());

    // A killed follower: the leader stops hearing it, META_001 speaks for it.
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"])
        .poll(t(4), &["follower_killed_3.json"])
        .poll(t(20), &["follower_killed_3.json"]);
    let e = s.evaluate(t(20));
    assert!(findings(&e, CheckId::META_101).is_empty());
    assert_eq!(findings(&e, CheckId::META_001).len(), 1);
}

/// Three servers after n3 crashed and n2 restarted (a new server id): n2 never saw n3 alive, so
/// it lists n3 as "Server name unknown", the mark a renamed server's old name leaves. n1 leads
/// and has not heard n3 for `silent`.
fn restarted_while_a_peer_is_down(silent: Duration) -> Vec<JszReply> {
    let mut raw: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path("healthy_3.json")).expect("fixture"))
            .expect("json");
    raw.retain(|r| r["server"]["name"] != "n3");
    for reply in &mut raw {
        let me = reply["server"]["name"].as_str().expect("name").to_string();
        let replicas = reply["data"]["meta_cluster"]["replicas"]
            .as_array_mut()
            .expect("replicas");
        for p in replicas.iter_mut() {
            if p["name"] != "n3" {
                continue;
            }
            if me == "n1" {
                p["active"] = (silent.as_nanos() as u64).into();
                p["current"] = false.into();
            } else {
                p["name"] = "Server name unknown at this time (peerID: BXScrY9i)".into();
            }
        }
        if me == "n2" {
            reply["server"]["id"] = "NRESTARTEDN2".into();
        }
    }
    raw.into_iter()
        .map(|r| serde_json::from_value(r).expect("reply"))
        .collect()
}

#[test]
fn a_restarted_server_that_never_saw_a_crashed_peer_does_not_make_it_a_stale_peer_at_once() {
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"]).poll_replies(
        t(10),
        restarted_while_a_peer_is_down(Duration::from_secs(10)),
    );
    let offline = findings(&s.evaluate(t(10)), CheckId::META_001);
    assert_eq!(servers(&offline), set(&["n3"]));
    assert_eq!(
        offline[0].evidence["stale_peer"], false,
        "{:#}",
        offline[0].evidence
    );
    // Still down, and still unnamed by n2, well after n2 restarted: now it may be a stale peer.
    let late = t(10) + nats_insights::history::RESTART_SETTLE;
    s.poll_replies(
        late,
        restarted_while_a_peer_is_down(Duration::from_secs(40)),
    );
    let offline = findings(&s.evaluate(late), CheckId::META_001);
    assert_eq!(
        offline[0].evidence["stale_peer"], true,
        "{:#}",
        offline[0].evidence
    );
}

/// healthy_3 without the leader n1's reply, its followers last hearing it `heard` ago.
fn leader_silent(heard: Duration) -> Vec<JszReply> {
    let mut raw: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path("healthy_3.json")).expect("fixture"))
            .expect("json");
    raw.retain(|r| r["server"]["name"] != "n1");
    for reply in &mut raw {
        for p in reply["data"]["meta_cluster"]["replicas"]
            .as_array_mut()
            .expect("replicas")
        {
            if p["name"] == "n1" {
                p["active"] = (heard.as_nanos() as u64).into();
            }
        }
    }
    raw.into_iter()
        .map(|r| serde_json::from_value(r).expect("reply"))
        .collect()
}

#[test]
fn a_leader_too_busy_to_answer_that_its_followers_still_hear_is_not_offline() {
    let offline_after = |heard: Duration, busy: bool| {
        let mut s = Scenario::new();
        s.poll(t(0), &["healthy_3.json"])
            .poll_replies(t(10), leader_silent(heard));
        if busy {
            // Its probe timed out: NATS still routes to it (a crashed one finds no responders).
            s.snapshot.busy.insert("n1".to_string());
        }
        servers(&findings(&s.evaluate(t(10)), CheckId::META_001))
    };
    let heartbeat = Duration::from_millis(400);
    assert!(
        offline_after(heartbeat, true).is_empty(),
        "busy, heard: not offline"
    );
    // Gone (no responders): offline at once, however recently it was heard.
    assert_eq!(offline_after(heartbeat, false), set(&["n1"]));
    // Busy and no longer heard either: a stalled server.
    assert_eq!(offline_after(Duration::from_secs(2), true), set(&["n1"]));
}

#[test]
fn a_disagreeing_server_that_crashed_ends_the_disagreement_at_once() {
    let mut s = Scenario::new();
    let both = [
        "partition_leader_3_majority.json",
        "partition_leader_3_isolated.json",
    ];
    s.poll(t(0), &["healthy_3.json"]).poll(t(10), &both);
    assert!(s.history.disagreement.is_some());
    // The isolated server is killed: silent, and the monitor's pinned link to it is down. Its
    // restart would begin a new disagreement, if any, not carry this one on.
    let mut snapshot = Snapshot::from_replies(
        t(12),
        replies("partition_leader_3_majority.json")
            .into_iter()
            .map(|r| (r, Via::Gather)),
        &s.history.known_servers(),
    );
    let isolated: Vec<String> = replies("partition_leader_3_isolated.json")
        .iter()
        .map(|r| r.server.name.clone())
        .collect();
    snapshot.links_down.extend(isolated);
    s.history.record_snapshot(&snapshot, &s.thresholds, t(12));
    assert!(s.history.disagreement.is_none());
}

#[test]
fn a_shutdown_event_that_the_same_server_answering_contradicts_keeps_nothing_offline() {
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"]);
    let n2 = s.history.servers["n2"].server_id.clone();
    // A stray (or forged) SHUTDOWN naming n2 as it runs now.
    s.history.record_event(&MetaEvent::Shutdown {
        server: "n2".into(),
        server_id: n2,
        at: t(1),
    });
    let offline = findings(&s.evaluate(t(1)), CheckId::META_001);
    assert_eq!(
        servers(&offline),
        set(&["n2"]),
        "believed until contradicted"
    );
    // The same process answers in full a poll begun well after the event: it did not stop.
    s.poll(t(4), &["healthy_3.json"]);
    assert!(s.history.departures.is_empty());
    assert!(findings(&s.evaluate(t(4)), CheckId::META_001).is_empty());
}

#[test]
fn departures_of_servers_no_poll_names_are_bounded() {
    let mut s = Scenario::new();
    s.poll(t(0), &["healthy_3.json"]);
    for i in 0..1000 {
        s.history.record_event(&MetaEvent::LameDuck {
            server: format!("ghost-{i}"),
            server_id: format!("NGHOST{i}"),
            at: t(1 + i / 10),
        });
    }
    assert!(s.history.departures.len() <= nats_insights::history::UNPOLLED_DEPARTURES_MAX);
    // Old ones go: one more event much later leaves only itself.
    s.history.record_event(&MetaEvent::LameDuck {
        server: "ghost-late".into(),
        server_id: "NGHOSTLATE".into(),
        at: t(10_000),
    });
    assert_eq!(s.history.departures.len(), 1);
}
