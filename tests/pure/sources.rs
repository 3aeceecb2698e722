//! The checks built on the sources beyond JSZ, on captured JSZ replies with the extra sources'
//! answers added as the poll would file them: raised only once a condition has held, undecided
//! for a server not asked, resolved when its next answer is clean.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use nats_insights::checks::{evaluate_all, CheckId, Evaluation, Finding, Outcome, Thresholds};
use nats_insights::history::History;
use nats_insights::observe::extras::{Health, RaftMeta, Routes};
use nats_insights::observe::{JszReply, ServerExtras, Snapshot, Via};

fn replies(name: &str) -> Vec<JszReply> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn routes(to: &[&str]) -> ServerExtras {
    ServerExtras {
        routes: Some(Routes {
            remotes: to.iter().map(|s| s.to_string()).collect(),
            connections: to.len() * 4,
        }),
        ..ServerExtras::default()
    }
}

fn health(error: Option<&str>) -> ServerExtras {
    ServerExtras {
        health: Some(Health {
            status: if error.is_some() { "unavailable" } else { "ok" }.to_string(),
            status_code: if error.is_some() { 503 } else { 200 },
            error: error.map(str::to_string),
        }),
        ..ServerExtras::default()
    }
}

struct Scenario {
    history: History,
    snapshot: Snapshot,
}

impl Scenario {
    fn new() -> Self {
        Scenario {
            history: History::default(),
            snapshot: Snapshot::default(),
        }
    }

    /// A poll of `fixture` at `at` whose extra sources said `extras`, then every check.
    fn poll(
        &mut self,
        at: SystemTime,
        fixture: &str,
        extras: Vec<(&str, ServerExtras)>,
    ) -> Vec<Evaluation> {
        self.poll_replies(at, replies(fixture), extras)
    }

    fn poll_replies(
        &mut self,
        at: SystemTime,
        replies: Vec<JszReply>,
        extras: Vec<(&str, ServerExtras)>,
    ) -> Vec<Evaluation> {
        let all = replies.into_iter().map(|r| (r, Via::Gather));
        self.snapshot = Snapshot::from_replies(at, all, &self.history.known_servers());
        self.snapshot.extras = extras
            .into_iter()
            .map(|(n, e)| (n.to_string(), e))
            .collect();
        self.history
            .record_snapshot(&self.snapshot, &Thresholds::default(), at);
        evaluate_all(&self.snapshot, &self.history, &Thresholds::default(), at).1
    }
}

/// The findings and undecided keys of one check.
fn outcome(evaluations: &[Evaluation], check: CheckId) -> (Vec<Finding>, BTreeSet<String>) {
    match &evaluations
        .iter()
        .find(|e| e.check == check)
        .expect("evaluated")
        .outcome
    {
        Outcome::Ran {
            findings,
            undecided,
        } => (findings.clone(), undecided.clone()),
        Outcome::Skipped { reason } => panic!("skipped: {reason}"),
        Outcome::Retired => panic!("retired"),
    }
}

#[test]
fn cluster_005_raises_a_member_short_of_routes_once_it_held_and_resolves_when_back() {
    let check = CheckId::CLUSTER_005;
    let mut s = Scenario::new();
    let full = || {
        vec![
            ("n1", routes(&["n2", "n3"])),
            ("n2", routes(&["n1", "n3"])),
            ("n3", routes(&["n1", "n2"])),
        ]
    };
    let (found, undecided) = outcome(&s.poll(t(0), "healthy_3.json", full()), check);
    assert!(found.is_empty() && undecided.is_empty(), "{undecided:?}");
    // n1 and n2 lose their route; n3 is not asked this poll.
    let cut = || vec![("n1", routes(&["n3"])), ("n2", routes(&["n3"]))];
    let (found, undecided) = outcome(&s.poll(t(1), "healthy_3.json", cut()), check);
    assert!(found.is_empty(), "not before it held: {found:?}");
    assert!(undecided.contains("CLUSTER_005/default/n1"));
    assert!(
        undecided.contains("CLUSTER_005/default/n3"),
        "not asked: unknown"
    );
    let (found, _) = outcome(&s.poll(t(11), "healthy_3.json", cut()), check);
    let raised: BTreeSet<_> = found.iter().filter_map(|f| f.server.clone()).collect();
    assert_eq!(raised, BTreeSet::from(["n1".to_string(), "n2".to_string()]));
    let n1 = found
        .iter()
        .find(|f| f.server.as_deref() == Some("n1"))
        .expect("n1");
    assert!(n1.summary.contains("n2"), "{}", n1.summary);
    assert_eq!(n1.evidence["missing"], serde_json::json!(["n2"]));
    // A poll that did not ask n1 keeps its state.
    let (found, undecided) = outcome(
        &s.poll(t(12), "healthy_3.json", vec![("n2", routes(&["n3"]))]),
        check,
    );
    assert_eq!(found.len(), 1);
    assert!(undecided.contains("CLUSTER_005/default/n1"));
    // Healed.
    let (found, undecided) = outcome(&s.poll(t(13), "healthy_3.json", full()), check);
    assert!(found.is_empty() && undecided.is_empty());
}

#[test]
fn cluster_005_does_not_expect_a_route_to_a_member_that_does_not_answer() {
    let mut s = Scenario::new();
    let mut three = replies("healthy_3.json");
    s.poll_replies(t(0), three.clone(), vec![]);
    three.retain(|r| r.server.name != "n3");
    for at in [1, 20] {
        let evaluations = s.poll_replies(
            t(at),
            three.clone(),
            vec![("n1", routes(&["n2"])), ("n2", routes(&["n1"]))],
        );
        let (found, _) = outcome(&evaluations, CheckId::CLUSTER_005);
        assert!(found.is_empty(), "META_001 speaks for n3: {found:?}");
    }
}

#[test]
fn server_014_raises_a_member_reporting_jetstream_unhealthy_for_fifteen_seconds() {
    let check = CheckId::SERVER_014;
    let mut s = Scenario::new();
    let ok = || {
        vec![
            ("n1", health(None)),
            ("n2", health(None)),
            ("n3", health(None)),
        ]
    };
    let (found, undecided) = outcome(&s.poll(t(0), "healthy_3.json", ok()), check);
    assert!(found.is_empty() && undecided.is_empty());
    let error = "JetStream has not established contact with a meta leader";
    let failing = || vec![("n3", health(Some(error)))];
    let (found, undecided) = outcome(&s.poll(t(1), "healthy_3.json", failing()), check);
    assert!(found.is_empty());
    assert!(undecided.contains("SERVER_014/default/n3"), "not held yet");
    assert!(undecided.contains("SERVER_014/default/n1"), "not asked");
    let (found, _) = outcome(&s.poll(t(16), "healthy_3.json", failing()), check);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].server.as_deref(), Some("n3"));
    assert_eq!(found[0].evidence["error"], error);
    assert!(found[0].summary.contains(error));
    let (found, undecided) = outcome(&s.poll(t(17), "healthy_3.json", ok()), check);
    assert!(found.is_empty() && undecided.is_empty());
}

/// The fixture's replies with `server`'s id replaced (a new process) and, if given, its version.
fn restarted(fixture: &str, server: &str, id: &str, ver: Option<&str>) -> Vec<JszReply> {
    let mut replies = replies(fixture);
    for r in &mut replies {
        if r.server.name == server {
            r.server.id = id.to_string();
            if let Some(ver) = ver {
                r.server.ver = Some(ver.to_string());
            }
        }
    }
    replies
}

#[test]
fn restarts_raise_server_101_and_three_in_ten_minutes_server_008_but_upgrades_count_for_nothing() {
    let mut s = Scenario::new();
    s.poll(t(0), "healthy_3.json", vec![]);
    // A new id without a poll missed or a stop announced is not counted (captured views of
    // separate runs carry other ids).
    let e = s.poll_replies(
        t(1),
        restarted("healthy_3.json", "n3", "OTHER", None),
        vec![],
    );
    assert!(outcome(&e, CheckId::SERVER_101).0.is_empty());
    let without = |name: &str| {
        let mut replies = replies("healthy_3.json");
        replies.retain(|r| r.server.name != name);
        replies
    };
    s.poll_replies(t(4), without("n2"), vec![]);
    let e = s.poll_replies(
        t(5),
        restarted("healthy_3.json", "n2", "NEW1", None),
        vec![],
    );
    let (found, _) = outcome(&e, CheckId::SERVER_101);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].server.as_deref(), Some("n2"));
    assert!(outcome(&e, CheckId::SERVER_008).0.is_empty());
    s.poll_replies(t(19), without("n2"), vec![]);
    s.poll_replies(
        t(20),
        restarted("healthy_3.json", "n2", "NEW2", None),
        vec![],
    );
    s.poll_replies(t(39), without("n2"), vec![]);
    let e = s.poll_replies(
        t(40),
        restarted("healthy_3.json", "n2", "NEW3", None),
        vec![],
    );
    let (found, _) = outcome(&e, CheckId::SERVER_008);
    assert_eq!(found.len(), 1, "three restarts within ten minutes");
    assert_eq!(found[0].evidence["restarts"], 3);
    // An upgrade (a new id with a new version) is not a restart.
    let mut upgraded = restarted("healthy_3.json", "n2", "NEW3", None);
    for r in &mut upgraded {
        if r.server.name == "n1" {
            r.server.id = "UPGRADED".into();
            r.server.ver = Some("2.16.0".into());
        }
    }
    let mut n1_silent = upgraded.clone();
    n1_silent.retain(|r| r.server.name != "n1");
    s.poll_replies(t(49), n1_silent, vec![]);
    let e = s.poll_replies(t(50), upgraded.clone(), vec![]);
    assert!(outcome(&e, CheckId::SERVER_101)
        .0
        .iter()
        .all(|f| f.server.as_deref() != Some("n1")));
    // Still news 59 s after the last restart; a minute on, neither is raised (nor refreshed)
    // any more: their findings are held by reconcile (`held_for`) for five and ten minutes
    // after they last changed (`findings::tests::a_held_finding_outlives_...`), and an instance
    // whose history holds an old restart does not raise it anew.
    let e = s.poll_replies(t(40 + 59), upgraded.clone(), vec![]);
    assert_eq!(outcome(&e, CheckId::SERVER_101).0.len(), 1);
    assert_eq!(outcome(&e, CheckId::SERVER_008).0.len(), 1);
    let e = s.poll_replies(t(40 + 61), upgraded, vec![]);
    assert!(outcome(&e, CheckId::SERVER_101).0.is_empty());
    assert!(outcome(&e, CheckId::SERVER_008).0.is_empty());
}

fn raft(
    catching_up: bool,
    size: usize,
    quorum: usize,
    named: &[&str],
    peers: usize,
) -> ServerExtras {
    ServerExtras {
        raft_meta: Some(RaftMeta {
            state: "FOLLOWER".into(),
            size,
            quorum_needed: quorum,
            catching_up,
            leader: None,
            peers,
            known_peers: peers,
            named: named.iter().map(|s| s.to_string()).collect(),
            committed: 100,
            applied: 40,
        }),
        ..ServerExtras::default()
    }
}

#[test]
fn meta_110_raises_a_member_catching_up_for_a_minute_and_not_one_asked_elsewhere() {
    let check = CheckId::META_110;
    let mut s = Scenario::new();
    let (found, _) = outcome(
        &s.poll(
            t(0),
            "healthy_3.json",
            vec![("n2", raft(true, 3, 2, &["n1", "n3"], 2))],
        ),
        check,
    );
    assert!(found.is_empty());
    // Asked again 61 s on: raised. A poll asking another member keeps n2 undecided.
    let (found, _) = outcome(
        &s.poll(
            t(61),
            "healthy_3.json",
            vec![("n2", raft(true, 3, 2, &["n1", "n3"], 2))],
        ),
        check,
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].evidence["unapplied"], 60);
    let (_, undecided) = outcome(
        &s.poll(
            t(62),
            "healthy_3.json",
            vec![("n1", raft(false, 3, 2, &["n2", "n3"], 2))],
        ),
        check,
    );
    assert!(undecided.contains("META_110/default/n2"));
    let (found, undecided) = outcome(
        &s.poll(
            t(63),
            "healthy_3.json",
            vec![("n2", raft(false, 3, 2, &["n1", "n3"], 2))],
        ),
        check,
    );
    assert!(found.is_empty() && !undecided.contains("META_110/default/n2"));
}

#[test]
fn meta_109_raises_a_quorum_the_answering_servers_cannot_reach_with_stale_peers_only() {
    let check = CheckId::META_109;
    let mut s = Scenario::new();
    // Healthy: no finding; nothing asked: undecided.
    let (found, undecided) = outcome(&s.poll(t(0), "healthy_3.json", vec![]), check);
    assert!(found.is_empty() && undecided.len() == 1);
    let (found, _) = outcome(
        &s.poll(
            t(1),
            "healthy_3.json",
            vec![("n1", raft(false, 3, 2, &["n2", "n3"], 2))],
        ),
        check,
    );
    assert!(found.is_empty());
    // Issue 6403 in small: size 6 needing 4, n1 names n2 and n3 only; three peers are nobody's.
    let (found, _) = outcome(
        &s.poll(
            t(2),
            "healthy_3.json",
            vec![("n1", raft(false, 6, 4, &["n2", "n3"], 5))],
        ),
        check,
    );
    assert_eq!(found.len(), 1, "3 voters cannot make 4");
    assert_eq!(found[0].evidence["unnamed_peers"], 3);
    // Two of three down, every peer named: plain quorum loss, META_006's, not this.
    let mut one = replies("healthy_3.json");
    one.retain(|r| r.server.name == "n1");
    let (found, _) = outcome(
        &s.poll_replies(t(3), one, vec![("n1", raft(false, 3, 2, &["n2", "n3"], 2))]),
        check,
    );
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn cluster_007_raises_a_member_without_an_outbound_gateway_the_others_name() {
    use nats_insights::observe::extras::Gateways;
    let gateways = |out: &[&str], inbound: &[&str]| ServerExtras {
        gateways: Some(Gateways {
            name: "c1".into(),
            outbound: out.iter().map(|s| s.to_string()).collect(),
            outbound_down: BTreeSet::new(),
            inbound: inbound.iter().map(|s| s.to_string()).collect(),
        }),
        ..ServerExtras::default()
    };
    let check = CheckId::CLUSTER_007;
    let mut s = Scenario::new();
    let whole = || {
        vec![
            ("n1", gateways(&["c2", "c3"], &["c2", "c3"])),
            ("n2", gateways(&["c2", "c3"], &["c2", "c3"])),
        ]
    };
    let (found, undecided) = outcome(&s.poll(t(0), "healthy_3.json", whole()), check);
    assert!(found.is_empty() && undecided.contains("CLUSTER_007/default/n3"));
    // n1 lost its outbound gateway to c3: its own reply no longer lists it, its inbound side
    // and n2's reply still name c3.
    let cut = || {
        vec![
            ("n1", gateways(&["c2"], &["c2", "c3"])),
            ("n2", gateways(&["c2", "c3"], &["c2", "c3"])),
        ]
    };
    s.poll(t(1), "healthy_3.json", cut());
    let (found, _) = outcome(&s.poll(t(12), "healthy_3.json", cut()), check);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].server.as_deref(), Some("n1"));
    assert_eq!(found[0].evidence["missing"], serde_json::json!(["c3"]));
    let (found, _) = outcome(&s.poll(t(13), "healthy_3.json", whole()), check);
    assert!(found.is_empty());
    // A server without a gateway block (a leaf node) expects none.
    let leaf = ServerExtras {
        gateways: Some(Gateways::default()),
        ..ServerExtras::default()
    };
    s.poll(t(14), "healthy_3.json", vec![("n3", leaf.clone())]);
    let (found, _) = outcome(
        &s.poll(
            t(30),
            "healthy_3.json",
            vec![("n3", leaf), ("n1", gateways(&["c2", "c3"], &[]))],
        ),
        check,
    );
    assert!(found.is_empty(), "{found:?}");
}
