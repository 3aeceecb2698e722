//! Meta groups as pure code: a poll split into one meta group per JetStream domain, each judged,
//! keyed and reconciled on its own, on JSZ replies captured from real nats-server clusters
//! (`tests/fixtures/README.md`). Deployments with several domains are built from single-cluster
//! captures by renaming servers and setting their domain; supercluster and two-domain captures
//! are read as they are.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use nats_insights::checks::{evaluate_groups, CheckId, GroupEvaluation, Outcome, Thresholds};
use nats_insights::findings::{reconcile, ActiveSet, Transition, TransitionKind};
use nats_insights::history::{Histories, History};
use nats_insights::observe::{GroupId, JszReply, MetaEvent, Snapshot, Via};

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn text(name: &str) -> String {
    std::fs::read_to_string(path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn decode(name: &str, text: &str) -> Vec<JszReply> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A captured 3-node fixture (servers n1..n3) as the servers `prefix`1..3 of `domain`, in
/// cluster `cluster`.
fn as_group(name: &str, prefix: &str, domain: Option<&str>, cluster: &str) -> Vec<JszReply> {
    let mut text = text(name);
    for i in 1..=3 {
        text = text.replace(&format!("\"n{i}\""), &format!("\"{prefix}{i}\""));
    }
    text = text.replace("\"insights-test\"", &format!("\"{cluster}\""));
    let mut replies = decode(name, &text);
    for reply in &mut replies {
        reply.server.domain = domain.map(str::to_string);
        // A different process: ids are unique across the deployment.
        reply.server.id = format!("{prefix}-{}", reply.server.id);
    }
    replies
}

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

/// The engine's round without the network: split, remember, evaluate, reconcile.
#[derive(Default)]
struct Deployment {
    histories: Histories,
    active: ActiveSet,
    transitions: Vec<Transition>,
    groups: Vec<GroupEvaluation>,
    /// The cluster of the server the monitor is attached to, when a test sets it.
    attached_cluster: Option<String>,
}

impl Deployment {
    fn poll(&mut self, at: SystemTime, replies: Vec<JszReply>) -> Vec<Transition> {
        let all = replies.into_iter().map(|r| (r, Via::Gather));
        let snapshot = Snapshot::from_replies(at, all, &self.histories.known_servers());
        self.round(at, snapshot)
    }

    /// One round on a snapshot built by the test.
    fn round(&mut self, at: SystemTime, mut snapshot: Snapshot) -> Vec<Transition> {
        snapshot.attached_cluster = self.attached_cluster.clone();
        let parts = self.histories.split(&snapshot);
        self.histories
            .record_snapshots(&parts, &crate::support::thresholds(), at);
        self.groups = evaluate_groups(&parts, &self.histories, &crate::support::thresholds(), at);
        let evaluations: Vec<_> = self
            .groups
            .iter()
            .flat_map(|g| g.evaluations.clone())
            .collect();
        let (next, transitions) = reconcile(&self.active, &Default::default(), &evaluations, at);
        self.active = next;
        self.transitions.extend(transitions.clone());
        transitions
    }

    fn group(&self, domain: Option<&str>) -> &GroupEvaluation {
        self.groups
            .iter()
            .find(|g| g.group == GroupId::of(domain))
            .unwrap_or_else(|| panic!("no group {domain:?}: {:?}", self.groups))
    }

    fn keys(&self) -> Vec<String> {
        self.active.keys().cloned().collect()
    }
}

fn hub_and_edge(hub: &str, edge: &str) -> Vec<JszReply> {
    let mut replies = as_group(hub, "h", Some("hub"), "hub");
    replies.extend(as_group(edge, "e", Some("edge"), "edge"));
    replies
}

#[test]
fn two_domains_are_two_groups_and_a_healthy_deployment_raises_nothing() {
    let mut d = Deployment::default();
    for s in 0..5 {
        d.poll(t(s), hub_and_edge("healthy_3.json", "healthy_3.json"));
    }
    assert!(d.transitions.is_empty(), "{:#?}", d.transitions);
    assert_eq!(d.groups.len(), 2);
    for (domain, leader) in [("hub", "h1"), ("edge", "e1")] {
        let meta = d.group(Some(domain)).meta.as_ref().expect("assessed");
        assert_eq!(meta.leader.as_deref(), Some(leader));
        assert_eq!(meta.members.len(), 3, "{meta:#?}");
        assert!(meta.members.iter().all(|m| m.online()));
        assert_eq!(meta.group.label(), domain);
    }
}

#[test]
fn a_crash_in_one_domain_is_that_domains_finding_only() {
    let mut d = Deployment::default();
    d.poll(t(0), hub_and_edge("healthy_3.json", "healthy_3.json"));
    d.poll(t(1), hub_and_edge("healthy_3.json", "healthy_3.json"));
    let raised = d.poll(
        t(5),
        hub_and_edge("healthy_3.json", "follower_killed_3.json"),
    );
    assert_eq!(raised.len(), 1, "{raised:#?}");
    let finding = &raised[0].finding;
    assert_eq!(finding.key, "META_001/edge/e3");
    assert_eq!(finding.domain.as_deref(), Some("edge"));
    assert_eq!(finding.cluster.as_deref(), Some("edge"));
    assert!(
        finding.summary.contains("domain edge"),
        "{}",
        finding.summary
    );
    assert!(d
        .group(Some("hub"))
        .meta
        .as_ref()
        .is_some_and(|m| m.members.iter().all(|m| m.online())));

    // The same crash in the hub: its own key; the edge's finding stays as it is.
    let raised = d.poll(
        t(6),
        hub_and_edge("follower_killed_3.json", "follower_killed_3.json"),
    );
    assert_eq!(raised.len(), 1, "{raised:#?}");
    assert_eq!(raised[0].finding.key, "META_001/hub/h3");
    assert_eq!(d.keys(), ["META_001/edge/e3", "META_001/hub/h3"]);

    // The edge recovers: only its finding resolves.
    let resolved = d.poll(
        t(7),
        hub_and_edge("follower_killed_3.json", "healthy_3.json"),
    );
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].kind, TransitionKind::Resolved);
    assert_eq!(resolved[0].finding.key, "META_001/edge/e3");
}

#[test]
fn quorum_lost_in_the_edge_leaves_the_hub_untouched() {
    let mut d = Deployment::default();
    d.poll(t(0), hub_and_edge("healthy_3.json", "healthy_3.json"));
    d.poll(t(1), hub_and_edge("healthy_3.json", "healthy_3.json"));
    d.poll(t(10), hub_and_edge("healthy_3.json", "two_killed_3.json"));
    let keys = d.keys();
    assert!(keys.contains(&"META_006/edge".to_string()), "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains("/hub")), "{keys:?}");
}

#[test]
fn a_domain_that_stops_answering_is_skipped_and_keeps_its_findings() {
    let mut d = Deployment::default();
    d.poll(t(0), hub_and_edge("healthy_3.json", "healthy_3.json"));
    d.poll(t(1), hub_and_edge("healthy_3.json", "healthy_3.json"));
    d.poll(
        t(5),
        hub_and_edge("healthy_3.json", "follower_killed_3.json"),
    );
    // The leaf connection drops: no edge server answers through the hub.
    let changed = d.poll(t(6), as_group("healthy_3.json", "h", Some("hub"), "hub"));
    assert!(changed.is_empty(), "{changed:#?}");
    let edge = d.group(Some("edge"));
    assert!(edge.meta.is_none());
    assert!(
        edge.skipped().is_some_and(|r| r.contains("domain edge")),
        "{edge:?}"
    );
    assert_eq!(d.keys(), ["META_001/edge/e3"]);
}

#[test]
fn keys_do_not_move_when_the_reporting_cluster_changes() {
    // nats-server names meta_cluster after the reporting server's own cluster: the same group
    // reported from another cluster must keep every key.
    let mut d = Deployment::default();
    d.poll(t(0), as_group("healthy_3.json", "n", None, "c1"));
    d.poll(t(1), as_group("healthy_3.json", "n", None, "c1"));
    let raised = d.poll(t(5), as_group("follower_killed_3.json", "n", None, "c1"));
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0].finding.key, "META_001/default/n3");
    for s in 6..9 {
        let moved = d.poll(t(s), as_group("follower_killed_3.json", "n", None, "c3"));
        assert!(moved.is_empty(), "{moved:#?}");
    }
}

#[test]
fn events_reach_the_group_they_concern() {
    let mut d = Deployment::default();
    d.poll(t(0), hub_and_edge("healthy_3.json", "healthy_3.json"));
    let edge_peer = d.histories.groups[&GroupId::of(Some("edge"))]
        .peer_of_name("e2")
        .expect("peer of e2")
        .to_string();
    d.histories.record_event(&MetaEvent::LeaderElected {
        leader_peer: edge_peer,
        cluster: Some("edge".into()),
        domain: Some("edge".into()),
        at: t(1),
        server_at: None,
    });
    let edge = &d.histories.groups[&GroupId::of(Some("edge"))];
    let hub = &d.histories.groups[&GroupId::of(Some("hub"))];
    assert_eq!(edge.leader.as_deref(), Some("e2"));
    assert_eq!(edge.leader_changes.len(), 1);
    assert!(hub.leader_changes.is_empty());
    d.histories.record_event(&MetaEvent::Shutdown {
        server: "h2".into(),
        server_id: hub.servers["h2"].server_id.clone(),
        at: t(2),
    });
    assert!(d.histories.groups[&GroupId::of(Some("hub"))]
        .departures
        .contains_key("h2"));
    assert!(d.histories.groups[&GroupId::of(Some("edge"))]
        .departures
        .is_empty());
    let all = d.histories.leader_changes();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].domain.as_deref(), Some("edge"));
}

#[test]
fn a_history_written_by_the_previous_version_goes_to_its_group() {
    // What the previous version persisted: one History, no groups.
    let mut old = History::default();
    let all = as_group("healthy_3.json", "h", Some("hub"), "hub")
        .into_iter()
        .map(|r| (r, Via::Gather));
    old.record_snapshot(
        &Snapshot::from_replies(t(0), all, &[]),
        &Thresholds::default(),
        t(0),
    );
    let bytes = serde_json::to_vec(&old).expect("json");
    let loaded = Histories::from_json(&bytes).expect("legacy history decodes");
    assert!(loaded.groups.is_empty());
    assert!(loaded.legacy.is_some());
    let mut d = Deployment {
        histories: loaded,
        ..Deployment::default()
    };
    d.poll(t(1), hub_and_edge("healthy_3.json", "healthy_3.json"));
    assert!(d.histories.legacy.is_none());
    let hub = &d.histories.groups[&GroupId::of(Some("hub"))];
    assert_eq!(hub.servers.len(), 3);
    // And the new form round-trips.
    let again = Histories::from_json(&d.histories.to_json().expect("json")).expect("decodes");
    assert_eq!(
        again.groups.keys().collect::<Vec<_>>(),
        d.histories.groups.keys().collect::<Vec<_>>()
    );
    let counts: BTreeMap<_, _> = again
        .groups
        .iter()
        .map(|(g, h)| (g.label().to_string(), h.servers.len()))
        .collect();
    assert_eq!(
        counts,
        BTreeMap::from([("edge".into(), 3), ("hub".into(), 3)])
    );
}

#[test]
fn every_check_runs_per_group() {
    let mut d = Deployment::default();
    d.poll(t(0), hub_and_edge("healthy_3.json", "healthy_3.json"));
    for group in &d.groups {
        let checks: Vec<CheckId> = group.evaluations.iter().map(|e| e.check).collect();
        assert_eq!(checks, CheckId::all().to_vec());
        assert!(group
            .evaluations
            .iter()
            .all(|e| e.group == group.group && matches!(e.outcome, Outcome::Ran { .. })));
    }
}

// ---- Captured from real deployments (tests/fixtures/README.md) ----

fn captured(name: &str) -> Vec<JszReply> {
    decode(name, &text(name))
}

#[test]
fn captured_hub_and_edge_domains_each_judge_their_own_faults() {
    let mut d = Deployment::default();
    d.poll(t(0), captured("domains_healthy.json"));
    d.poll(t(1), captured("domains_healthy.json"));
    assert!(d.transitions.is_empty(), "{:#?}", d.transitions);
    assert_eq!(d.groups.len(), 2);
    assert_eq!(
        d.group(Some("hub"))
            .meta
            .as_ref()
            .and_then(|m| m.leader.clone())
            .as_deref(),
        Some("h1")
    );
    assert_eq!(
        d.group(Some("edge"))
            .meta
            .as_ref()
            .and_then(|m| m.leader.clone())
            .as_deref(),
        Some("e1")
    );

    let raised = d.poll(t(5), captured("domains_edge_follower_killed.json"));
    let keys: Vec<&str> = raised.iter().map(|t| t.finding.key.as_str()).collect();
    assert_eq!(keys, ["META_001/edge/e3"], "{raised:#?}");
    assert_eq!(raised[0].finding.domain.as_deref(), Some("edge"));

    // e3 back (a new process: restarted, SERVER_101), h3 killed: the edge's finding resolves,
    // the hub's is raised.
    let changed = d.poll(t(20), captured("domains_hub_follower_killed.json"));
    let mut seen: Vec<(TransitionKind, &str)> = changed
        .iter()
        .map(|t| (t.kind, t.finding.key.as_str()))
        .collect();
    seen.sort_by_key(|(_, k)| k.to_string());
    assert_eq!(
        seen,
        [
            (TransitionKind::Resolved, "META_001/edge/e3"),
            (TransitionKind::Raised, "META_001/hub/h3"),
            (TransitionKind::Raised, "SERVER_101/edge/e3"),
        ]
    );

    // h3 back, two of three edge servers killed: quorum lost in the edge only.
    d.poll(t(40), captured("domains_edge_quorum_lost.json"));
    let keys = d.keys();
    assert!(keys.contains(&"META_006/edge".to_string()), "{keys:?}");
    // (h3 came back as a new process: only its restart, SERVER_101, is about the hub.)
    let hub_keys = keys.iter().filter(|k| k.contains("/hub"));
    assert!(hub_keys.eq(["SERVER_101/hub/h3"].iter()), "{keys:?}");
    let hub = d.group(Some("hub")).meta.as_ref().expect("hub");
    assert!(hub.members.iter().all(|m| m.online()), "{hub:#?}");
}

#[test]
fn captured_supercluster_is_one_group_whose_keys_survive_the_leader_moving_cluster() {
    let mut d = Deployment::default();
    d.poll(t(0), captured("supercluster_healthy_9.json"));
    d.poll(t(1), captured("supercluster_healthy_9.json"));
    assert!(d.transitions.is_empty(), "{:#?}", d.transitions);
    let meta = d.group(None).meta.as_ref().expect("assessed");
    assert_eq!(meta.members.len(), 9);
    assert!(meta.is_supercluster());
    let tally: Vec<(&str, usize)> = meta
        .clusters
        .iter()
        .map(|c| (c.cluster.as_str(), c.members))
        .collect();
    assert_eq!(tally, [("c1", 3), ("c2", 3), ("c3", 3)]);
    assert_eq!(meta.lead_cluster.as_deref(), Some("c1"));

    let raised = d.poll(t(5), captured("supercluster_follower_killed_9.json"));
    assert_eq!(raised.len(), 1, "{raised:#?}");
    assert_eq!(raised[0].finding.key, "META_001/default/n4");
    assert_eq!(raised[0].finding.cluster.as_deref(), Some("c2"));

    // The leader moved to c3 (every reply names its own cluster): nothing changes.
    for s in 10..14 {
        let moved = d.poll(t(s), captured("supercluster_leader_moved_9.json"));
        assert!(moved.is_empty(), "{moved:#?}");
    }
    let meta = d.group(None).meta.as_ref().expect("assessed");
    assert_eq!(meta.lead_cluster.as_deref(), Some("c3"));
    assert_eq!(d.keys(), ["META_001/default/n4"]);
}

#[test]
fn captured_supercluster_that_lost_a_whole_cluster_says_so() {
    let mut d = Deployment::default();
    d.poll(t(0), captured("supercluster_healthy_9.json"));
    d.poll(t(1), captured("supercluster_healthy_9.json"));
    let raised = d.poll(t(5), captured("supercluster_cluster_lost_9.json"));
    let mut lost: Vec<(&str, Option<&str>)> = raised
        .iter()
        .map(|t| (t.finding.key.as_str(), t.finding.cluster.as_deref()))
        .collect();
    lost.sort();
    assert_eq!(
        lost,
        [
            ("META_001/default/n4", Some("c2")),
            ("META_001/default/n5", Some("c2")),
            ("META_001/default/n6", Some("c2")),
        ]
    );
    for t in &raised {
        assert!(
            t.finding
                .summary
                .contains("All 3 members of cluster c2 are offline"),
            "{}",
            t.finding.summary
        );
    }
}

#[test]
fn the_edge_election_advisory_seen_on_the_hub_reaches_the_edge_group() {
    let mut d = Deployment::default();
    d.poll(t(0), captured("domains_healthy.json"));
    let value: serde_json::Value =
        serde_json::from_str(&text("event_leader_elected_edge.json")).expect("json");
    let payload = serde_json::to_vec(&value["payload"]).expect("payload");
    let event = nats_insights::observe::events::decode_event(
        value["subject"].as_str().expect("subject"),
        &payload,
        t(1),
    )
    .expect("decodes");
    let MetaEvent::LeaderElected { domain, .. } = &event else {
        panic!("{event:?}");
    };
    assert_eq!(domain.as_deref(), Some("edge"));
    d.histories.record_event(&event);
    let hub = &d.histories.groups[&GroupId::of(Some("hub"))];
    assert!(hub.leader_changes.is_empty(), "{:?}", hub.leader_changes);
}

/// The captured hub + leaf servers with `leaf` gone and the leader h1 last hearing from it
/// `silent_s` ago.
fn leaf_killed(leaf: &str, silent_s: u64) -> Vec<JszReply> {
    let mut replies = captured("leaf_same_domain_healthy.json");
    replies.retain(|r| r.server.name != leaf);
    let h1 = replies
        .iter_mut()
        .find(|r| r.server.name == "h1")
        .and_then(|r| r.data.as_mut())
        .and_then(|d| d.meta_cluster.as_mut())
        .expect("h1 leads");
    let entry = h1
        .replicas
        .iter_mut()
        .find(|p| p.name == leaf)
        .expect("h1 lists the leaf");
    entry.active = silent_s * 1_000_000_000;
    replies
}

#[test]
fn captured_leaf_servers_in_the_hub_domain_are_members_of_the_hub_group() {
    let mut d = Deployment::default();
    d.poll(t(0), captured("leaf_same_domain_healthy.json"));
    d.poll(t(1), captured("leaf_same_domain_healthy.json"));
    assert!(d.transitions.is_empty(), "{:#?}", d.transitions);
    assert_eq!(d.groups.len(), 1, "one group, not one per leaf");
    let meta = d.group(Some("hub")).meta.as_ref().expect("assessed");
    assert_eq!(meta.leader.as_deref(), Some("h1"));
    assert_eq!((meta.cluster_size, meta.quorum_needed), (5, 3));
    let tally: Vec<(&str, usize)> = meta
        .clusters
        .iter()
        .map(|c| (c.cluster.as_str(), c.members))
        .collect();
    assert_eq!(tally, [("hub", 3), ("l1", 1), ("l2", 1)]);
    assert_eq!(meta.lead_cluster.as_deref(), Some("hub"));
    assert!(meta.members.iter().all(|m| m.online()), "{meta:#?}");

    let raised = d.poll(t(10), leaf_killed("l1", 6));
    assert_eq!(raised.len(), 1, "{raised:#?}");
    let finding = &raised[0].finding;
    assert_eq!(finding.key, "META_001/hub/l1");
    assert_eq!(finding.cluster.as_deref(), Some("l1"));
    assert_eq!(finding.domain.as_deref(), Some("hub"));
    // A leaf is a cluster of one: losing it is not a lost cluster.
    assert!(
        !finding.summary.contains("All 1 members"),
        "{}",
        finding.summary
    );

    let resolved = d.poll(t(11), captured("leaf_same_domain_healthy.json"));
    let seen: Vec<(TransitionKind, &str)> = resolved
        .iter()
        .map(|t| (t.kind, t.finding.key.as_str()))
        .collect();
    assert_eq!(seen, [(TransitionKind::Resolved, "META_001/hub/l1")]);
}

/// A poll as the large-group plan makes it: the whole views of the servers that lead, only the
/// identity (IDZ: no domain, no cluster) of every other server.
fn leaders_and_identities(replies: Vec<JszReply>, at: SystemTime) -> Snapshot {
    let mut snapshot = Snapshot {
        taken_at: Some(at),
        ..Snapshot::default()
    };
    for reply in replies {
        let leads = reply
            .data
            .as_ref()
            .and_then(|d| d.meta_cluster.as_ref())
            .and_then(|m| m.leader_name())
            == Some(reply.server.name.as_str());
        let mut view = nats_insights::observe::ServerView::from_reply(reply, Via::Gather);
        if !leads {
            view.meta = None;
            view.jetstream = false;
            view.via = Via::Identity;
            view.server.domain = None;
            view.server.cluster = None;
        }
        snapshot.views.insert(view.server.name.clone(), view);
    }
    snapshot
}

#[test]
fn identities_of_a_first_large_poll_join_the_group_that_lists_them_and_make_no_ghost_group() {
    let histories = Histories::default();
    let snapshot = leaders_and_identities(captured("domains_healthy.json"), t(0));
    let parts = histories.split(&snapshot);
    let groups: Vec<&str> = parts.keys().map(GroupId::label).collect();
    assert_eq!(groups, ["edge", "hub"], "no `default` group of identities");
    let names =
        |g: &str| -> Vec<String> { parts[&GroupId::of(Some(g))].views.keys().cloned().collect() };
    assert_eq!(names("hub"), ["h1", "h2", "h3"]);
    assert_eq!(names("edge"), ["e1", "e2", "e3"]);

    // Through the engine's round: nothing skipped, nothing raised, over several such polls.
    let mut d = Deployment::default();
    for s in 0..4 {
        let snapshot = leaders_and_identities(captured("domains_healthy.json"), t(s));
        let transitions = d.round(t(s), snapshot);
        assert!(transitions.is_empty(), "{transitions:#?}");
        assert_eq!(d.groups.len(), 2);
        assert!(
            d.groups.iter().all(|g| g.skipped().is_none()),
            "{:#?}",
            d.groups
        );
    }
    assert_eq!(d.histories.groups.len(), 2);
}

#[test]
fn a_server_with_jetstream_but_no_meta_group_makes_no_group_and_is_named_in_its_domain() {
    // A standalone JetStream server: JSZ data without meta_cluster.
    let standalone = |name: &str, domain: &str| -> JszReply {
        serde_json::from_value(serde_json::json!({
            "server": {"name": name, "id": format!("ID-{name}"), "cluster": name, "domain": domain},
            "data": {"streams": 0}
        }))
        .expect("reply")
    };
    let mut replies = captured("domains_healthy.json");
    replies.push(standalone("l1", "hub"));
    replies.push(standalone("solo", "shop-7"));
    let mut d = Deployment::default();
    d.poll(t(0), replies.clone());
    d.poll(t(1), replies);
    assert!(d.transitions.is_empty(), "{:#?}", d.transitions);
    let groups: Vec<&str> = d.groups.iter().map(|g| g.group.label()).collect();
    assert_eq!(
        groups,
        ["edge", "hub"],
        "a standalone server in its own domain is no group"
    );
    let hub = d.group(Some("hub")).meta.as_ref().expect("hub");
    assert_eq!(hub.outside, ["l1"], "{hub:#?}");
    assert_eq!(hub.members.len(), 3);
}

#[test]
fn a_server_behind_a_gateway_silent_for_one_poll_is_not_yet_offline_but_two_polls_are() {
    // The monitor is attached in c1; n5 (c2) misses polls while the leader still heard it
    // moments ago (its `active` is small): the link to c2 may be reconnecting.
    let poll = |d: &mut Deployment, at: SystemTime, without: &[&str]| {
        let replies: Vec<JszReply> = captured("supercluster_healthy_9.json")
            .into_iter()
            .filter(|r| !without.contains(&r.server.name.as_str()))
            .collect();
        d.poll(at, replies)
    };
    let mut d = Deployment {
        attached_cluster: Some("c1".to_string()),
        ..Deployment::default()
    };
    poll(&mut d, t(0), &[]);
    poll(&mut d, t(1), &[]);
    assert!(poll(&mut d, t(2), &["n5"]).is_empty(), "one missed poll");
    assert!(poll(&mut d, t(3), &[]).is_empty(), "back: nothing to say");
    assert!(
        poll(&mut d, t(4), &["n5"]).is_empty(),
        "one missed poll again"
    );
    let raised = poll(&mut d, t(5), &["n5"]);
    assert_eq!(raised.len(), 1, "{raised:#?}");
    assert_eq!(raised[0].finding.key, "META_001/default/n5");
    assert!(
        raised[0].finding.summary.contains("not answered"),
        "{}",
        raised[0].finding.summary
    );
}

#[test]
fn a_server_of_the_attached_cluster_is_offline_after_one_missed_poll() {
    let mut d = Deployment {
        attached_cluster: Some("c1".to_string()),
        ..Deployment::default()
    };
    d.poll(t(0), captured("supercluster_healthy_9.json"));
    d.poll(t(1), captured("supercluster_healthy_9.json"));
    let replies: Vec<JszReply> = captured("supercluster_healthy_9.json")
        .into_iter()
        .filter(|r| r.server.name != "n2")
        .collect();
    let raised = d.poll(t(2), replies);
    let keys: Vec<&str> = raised.iter().map(|t| t.finding.key.as_str()).collect();
    assert_eq!(
        keys,
        ["META_001/default/n2"],
        "n2 shares c1 with the attached server"
    );
}

#[test]
fn a_domain_dark_past_offline_after_is_meta_105_and_preflight_of_the_other_group_still_answers() {
    use nats_insights::service::preflight::{preflight, PreflightRequest, Verdict};
    use nats_insights::service::EngineStatus;
    let mut d = Deployment::default();
    d.poll(t(0), hub_and_edge("healthy_3.json", "healthy_3.json"));
    d.poll(
        t(1),
        hub_and_edge("healthy_3.json", "follower_killed_3.json"),
    );
    let hub_only = || as_group("healthy_3.json", "h", Some("hub"), "hub");
    // Every edge server stops answering: unheard at once, undecided until offline_after.
    for s in [2, 3, 4] {
        let changed = d.poll(t(s), hub_only());
        assert!(changed.is_empty(), "{changed:#?}");
    }
    let edge = d.group(Some("edge"));
    let unheard = edge.unheard.as_ref().expect("shown as unheard");
    assert_eq!(unheard.unheard_since, Some(t(1)));
    assert!(unheard.leader.is_none());
    assert!(unheard
        .members
        .iter()
        .all(|m| m.state == nats_insights::checks::MemberState::Unknown));
    let raised = d.poll(t(5), hub_only());
    assert_eq!(raised.len(), 1, "{raised:#?}");
    let f = &raised[0].finding;
    assert_eq!(f.key, "META_105/edge");
    assert!(f.summary.contains("domain edge"), "{}", f.summary);
    assert!(f.summary.contains("e1, e2, e3"), "{}", f.summary);
    // The edge's own earlier finding is neither resolved nor raised again while it is dark.
    assert!(
        d.keys().contains(&"META_001/edge/e3".to_string()),
        "{:?}",
        d.keys()
    );

    // STATUS as the engine builds it: the hub judged, the edge unheard; preflight of a hub
    // server answers, of an edge server is unknown.
    let status = EngineStatus {
        meta_groups: d
            .groups
            .iter()
            .filter_map(|g| g.meta.clone().or(g.unheard.clone()))
            .collect(),
        active: d.active.clone(),
        last_poll: Some(t(5)),
        skipped: None,
        ..EngineStatus::default()
    };
    let ask = |server: &str| {
        let question = PreflightRequest {
            action: Some("restart".into()),
            server: Some(server.into()),
            to: None,
        }
        .validate()
        .expect("valid");
        preflight(&question, &status, t(5))
    };
    assert_eq!(ask("h2").verdict, Verdict::Safe, "{:#?}", ask("h2"));
    let edge = ask("e2");
    assert_eq!(edge.verdict, Verdict::Unknown);
    assert!(edge.reasons[0].contains("unheard since"), "{edge:#?}");

    // The edge answers again: META_105 resolves.
    let back = d.poll(t(6), hub_and_edge("healthy_3.json", "healthy_3.json"));
    assert!(
        back.iter()
            .any(|tr| tr.kind == TransitionKind::Resolved && tr.finding.key == "META_105/edge"),
        "{back:#?}"
    );
}

#[test]
fn no_group_is_dark_when_nobody_answers_or_on_a_restarted_monitors_first_poll() {
    let mut d = Deployment::default();
    d.poll(t(0), hub_and_edge("healthy_3.json", "healthy_3.json"));
    // Nobody answers at all: the service's own connection is the problem, no group is dark.
    for s in 1..10 {
        assert!(d.poll(t(s), Vec::new()).is_empty());
        assert!(d.groups.iter().all(|g| g.unheard.is_none()));
    }
    // A monitor restarted with the persisted history: its first poll without the edge decides
    // nothing, even though the edge was last heard long ago.
    let stored = d.histories.to_json().expect("json");
    let mut restarted = Deployment {
        histories: Histories::from_json(&stored).expect("decodes"),
        ..Deployment::default()
    };
    let hub_only = || as_group("healthy_3.json", "h", Some("hub"), "hub");
    assert!(restarted.poll(t(100), hub_only()).is_empty());
    let raised = restarted.poll(t(101), hub_only());
    assert_eq!(raised.len(), 1, "{raised:#?}");
    assert_eq!(raised[0].finding.key, "META_105/edge");
}

#[test]
fn a_forgotten_group_resolves_its_findings_and_is_gone_until_it_answers_again() {
    use nats_insights::checks::forgotten_group;
    let mut d = Deployment::default();
    d.poll(t(0), hub_and_edge("healthy_3.json", "healthy_3.json"));
    let hub_only = || as_group("healthy_3.json", "h", Some("hub"), "hub");
    for s in 1..6 {
        d.poll(t(s), hub_only());
    }
    assert_eq!(d.keys(), ["META_105/edge"]);
    // What the engine does on GROUP.FORGET: drop the history, feed empty evaluations once.
    let edge = GroupId::of(Some("edge"));
    assert!(d.histories.forget(&edge));
    let (next, resolved) = reconcile(
        &d.active,
        &Default::default(),
        &forgotten_group(&edge).evaluations,
        t(6),
    );
    d.active = next;
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].kind, TransitionKind::Resolved);
    assert!(d.active.is_empty());
    // Silence no longer raises anything: the group is unknown.
    for s in 7..12 {
        assert!(d.poll(t(s), hub_only()).is_empty());
        assert!(d.groups.iter().all(|g| g.group != edge));
    }
    // It answers again: a new group, judged as any other.
    d.poll(t(12), hub_and_edge("healthy_3.json", "healthy_3.json"));
    assert!(d.group(Some("edge")).meta.is_some());
}
