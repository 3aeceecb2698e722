//! Live tests of the deployment shapes NATS runs beyond one cluster: a supercluster (clusters
//! joined by gateways, one meta group across them), a hub with a leaf cluster in its own
//! JetStream domain (two meta groups, both seen through the hub's system account), and a hub
//! with leaf servers in its own domain (one meta group that the leaves join). Real
//! nats-server processes; faults are real kills and placement step-downs.

use crate::support;

use std::time::{Duration, Instant};

use nats_insights::engine::EngineConfig;
use nats_insights::findings::TransitionKind::{Raised, Resolved};
use support::{try_request_json, Events, Monitor, EVENT_TIMEOUT};
use testbed::{Cluster, ClusterOptions, Stop};

/// Waits until the monitor has polled a few times and sees `groups` (domain label → members).
/// A hub with an edge domain over leaf nodes, both groups led, and a monitor and a subscriber
/// attached to the hub's servers (returned with their indices).
async fn hub_and_edge(
    options: ClusterOptions,
    config: EngineConfig,
) -> (Cluster, Vec<usize>, Events, Monitor) {
    let cluster = Cluster::start(options).await.expect("hub and leaf start");
    cluster
        .wait_for_leaders(Duration::from_secs(60))
        .await
        .expect("leaders");
    let hub_nodes = cluster.nodes_of("hub");
    let events = Events::subscribe_via(&cluster, &hub_nodes).await;
    let monitor = Monitor::start_via(&cluster, &hub_nodes, config).await;
    (cluster, hub_nodes, events, monitor)
}

/// Waits until STATUS shows `domain`'s group heard again (a leaf link that was just healed may
/// still miss a poll while it settles: the group shows unheard at once, before any finding).
async fn heard_again(monitor: &Monitor, domain: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = try_request_json(&monitor.client, "$INSIGHTS.API.STATUS", "")
            .await
            .unwrap_or_default();
        let unheard = status["meta_groups"].as_array().is_none_or(|groups| {
            groups
                .iter()
                .any(|g| g["group"] == domain && g.get("unheard_since").is_some())
        });
        if !unheard {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{domain} stays unheard: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn ready_groups(monitor: &Monitor, groups: &[(&str, usize)]) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = try_request_json(&monitor.client, "$INSIGHTS.API.STATUS", "")
            .await
            .unwrap_or_default();
        let polls = status["service"]["polls"].as_u64().unwrap_or(0);
        let seen: Vec<(String, usize)> = status["meta_groups"]
            .as_array()
            .map(|g| {
                g.iter()
                    .map(|m| {
                        (
                            m["group"].as_str().unwrap_or_default().to_string(),
                            m["members"].as_array().map_or(0, Vec::len),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let want: Vec<(String, usize)> = groups.iter().map(|(g, n)| (g.to_string(), *n)).collect();
        if polls >= 2 && seen == want {
            return status;
        }
        assert!(Instant::now() < deadline, "monitor not ready: {status:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A group's `clusters` in STATUS as (cluster, members).
fn cluster_tally(meta: &serde_json::Value) -> Vec<(&str, u64)> {
    meta["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .map(|c| {
            (
                c["cluster"].as_str().unwrap_or(""),
                c["members"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn group<'a>(status: &'a serde_json::Value, label: &str) -> &'a serde_json::Value {
    status["meta_groups"]
        .as_array()
        .and_then(|g| g.iter().find(|m| m["group"] == label))
        .unwrap_or_else(|| panic!("no group {label}: {status:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supercluster_is_one_group_whose_findings_survive_the_leader_changing_cluster() {
    let mut cluster = Cluster::start(ClusterOptions::supercluster(3, 3))
        .await
        .expect("supercluster starts");
    let mut leader = cluster
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    // The leader starts in c1, so that c2 holds none and c3 is a third cluster to move it to.
    if cluster.cluster_of(cluster.index_of(&leader).expect("index")) != "c1" {
        leader = cluster.step_down_to_cluster("c1").await.expect("to c1");
    }
    let c1 = cluster.nodes_of("c1");
    let c3 = cluster.nodes_of("c3");
    // The operator's subscriber and the monitor sit in c1 and c3, which keep quorum throughout.
    let survivors: Vec<usize> = c1.iter().chain(&c3).copied().collect();
    let mut events = Events::subscribe_via(&cluster, &survivors).await;
    let monitor = Monitor::start_via(&cluster, &survivors, EngineConfig::default()).await;
    let status = ready_groups(&monitor, &[("default", 9)]).await;
    let meta = group(&status, "default");
    assert_eq!(meta["lead_cluster"], "c1", "{meta:#}");
    let clusters = cluster_tally(meta);
    assert_eq!(clusters, [("c1", 3), ("c2", 3), ("c3", 3)]);
    assert!(meta["members"]
        .as_array()
        .expect("members")
        .iter()
        .all(|m| m["cluster"].is_string()));

    // Healthy for 20 s: nothing at all.
    events.drain(Duration::from_secs(20)).await;
    assert!(events.lines().is_empty(), "{:#?}", events.lines());

    // A follower in c2 (which does not hold the leader) crashes.
    let c2 = cluster.nodes_of("c2");
    let victim = cluster.server_name(c2[0]);
    cluster.stop(c2[0], Stop::Kill).await.expect("kill");
    let raised = events
        .expect(Raised, "META_001", Some(&victim), EVENT_TIMEOUT)
        .await;
    assert_eq!(raised.cluster.as_deref(), Some("c2"), "{raised:#?}");
    assert_eq!(raised.finding, format!("META_001/default/{victim}"));
    assert!(
        raised.summary.contains(&format!("{victim} (c2)")),
        "{}",
        raised.summary
    );

    // The leader moves to c3 by a placement step-down: no finding changes.
    let moved = cluster.step_down_to_cluster("c3").await.expect("to c3");
    assert_ne!(moved, leader);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = monitor.status().await;
        if group(&status, "default")["lead_cluster"] == "c3" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "monitor never saw the leader in c3"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    events.drain(Duration::from_secs(6)).await;
    assert_eq!(
        events.history_of(&raised.finding),
        ["raised"],
        "{:#?}",
        events.lines()
    );
    assert!(
        events.lines().iter().all(|l| !l.contains("RESOLVED")),
        "{:#?}",
        events.lines()
    );

    // The rest of c2 is lost: reported as the loss of the whole cluster; 6 of 9 keep quorum.
    for i in &c2[1..] {
        cluster.stop(*i, Stop::Kill).await.expect("kill");
    }
    for i in &c2[1..] {
        let name = cluster.server_name(*i);
        let lost = events
            .expect(Raised, "META_001", Some(&name), EVENT_TIMEOUT)
            .await;
        assert_eq!(lost.cluster.as_deref(), Some("c2"));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = monitor.status().await;
        let whole = status["findings"].as_array().is_some_and(|f| {
            f.iter()
                .filter(|f| {
                    f["summary"]
                        .as_str()
                        .is_some_and(|s| s.contains("All 3 members of cluster c2 are offline"))
                })
                .count()
                == 3
        });
        if whole {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "not reported as a lost cluster: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let c2_tally = group(&status, "default")["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["cluster"] == "c2").cloned())
        .expect("c2");
    assert_eq!(c2_tally["online"], 0, "{c2_tally}");
    assert!(
        events.lines().iter().all(|l| !l.contains("META_006")),
        "6 of 9 keep quorum: {:#?}",
        events.lines()
    );

    // Losing c1 as well leaves 3 of 9: quorum lost, with the clusters that lost their members.
    for i in &c1 {
        cluster.stop(*i, Stop::Kill).await.expect("kill");
    }
    let quorum = events
        .expect(Raised, "META_006", None, Duration::from_secs(40))
        .await;
    assert_eq!(quorum.finding, "META_006/default");
    assert!(quorum.cluster.is_none(), "a group finding names no cluster");
    let summary = &quorum.summary;
    assert!(summary.contains("c2 lost all 3 members"), "{summary}");
    assert!(
        summary.contains("c1 lost all 3 members") || summary.contains("c1 lost"),
        "{summary}"
    );
    monitor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_edge_domains_are_two_groups_watched_from_the_hub() {
    let (mut cluster, hub_nodes, mut events, monitor) =
        hub_and_edge(ClusterOptions::hub_and_leaf(3), EngineConfig::default()).await;
    let edge_nodes = cluster.nodes_of("edge");
    // A fresh group's first leader sometimes hands over within seconds: compare the monitor's
    // leaders with the servers' once both have settled.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, leaders) = loop {
        let leaders = cluster
            .wait_for_leaders(Duration::from_secs(10))
            .await
            .expect("leaders");
        let status = ready_groups(&monitor, &[("edge", 3), ("hub", 3)]).await;
        let agree = ["hub", "edge"].iter().all(|d| {
            group(&status, d)["leader"].as_str() == leaders[&Some(d.to_string())].as_str().into()
        });
        if agree || Instant::now() > deadline {
            break (status, leaders);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for domain in ["hub", "edge"] {
        let meta = group(&status, domain);
        assert_eq!(meta["domain"], domain);
        assert_eq!(
            meta["leader"].as_str(),
            leaders[&Some(domain.to_string())].as_str().into(),
            "{meta:#}"
        );
    }

    // Healthy: nothing, and in particular no disagreement between the two groups' leaders.
    events.drain(Duration::from_secs(10)).await;
    assert!(events.lines().is_empty(), "{:#?}", events.lines());

    // A follower crashes in each domain: each finding carries its domain.
    let follower_of = |domain: &str, nodes: &[usize]| {
        let leader = &leaders[&Some(domain.to_string())];
        nodes
            .iter()
            .copied()
            .find(|i| cluster.server_name(*i) != *leader)
            .expect("a follower")
    };
    let (hub_f, edge_f) = (
        follower_of("hub", &hub_nodes),
        follower_of("edge", &edge_nodes),
    );
    for (i, domain) in [(edge_f, "edge"), (hub_f, "hub")] {
        let name = cluster.server_name(i);
        cluster.stop(i, Stop::Kill).await.expect("kill");
        let raised = events
            .expect(Raised, "META_001", Some(&name), EVENT_TIMEOUT)
            .await;
        assert_eq!(raised.domain.as_deref(), Some(domain), "{raised:#?}");
        assert_eq!(raised.finding, format!("META_001/{domain}/{name}"));
    }
    for i in [edge_f, hub_f] {
        cluster.restart(i).await.expect("restart");
    }
    for i in [edge_f, hub_f] {
        let name = cluster.server_name(i);
        events
            .expect(Resolved, "META_001", Some(&name), EVENT_TIMEOUT)
            .await;
    }

    // The edge loses quorum: META_006 of the edge only; the hub group stays whole.
    cluster
        .wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("leaders again");
    let edge_leader = cluster
        .meta_leader_of_domain(Some("edge"))
        .await
        .expect("edge leader");
    let killed: Vec<usize> = edge_nodes
        .iter()
        .copied()
        .filter(|i| cluster.server_name(*i) != edge_leader)
        .collect();
    for i in &killed {
        cluster.stop(*i, Stop::Kill).await.expect("kill");
    }
    let quorum = events
        .expect(Raised, "META_006", None, Duration::from_secs(40))
        .await;
    assert_eq!(quorum.finding, "META_006/edge");
    assert_eq!(quorum.domain.as_deref(), Some("edge"));
    let status = monitor.status().await;
    let hub = group(&status, "hub");
    assert!(
        hub["members"]
            .as_array()
            .expect("members")
            .iter()
            .all(|m| m["state"] == "online"),
        "{hub:#}"
    );
    assert!(
        status["findings"]
            .as_array()
            .expect("findings")
            .iter()
            // (The hub server restarted above is reported restarted, SERVER_101, for 5 min.)
            .all(|f| f["domain"] == "edge" || f["check"] == "SERVER_101"),
        "{status:#}"
    );
    for i in &killed {
        cluster.restart(*i).await.expect("restart");
    }
    events
        .expect(Resolved, "META_006", None, Duration::from_secs(40))
        .await;
    events.drain(Duration::from_secs(3)).await;
    assert!(
        events.lines().iter().all(|l| !l.contains("META_002")),
        "{:#?}",
        events.lines()
    );
    monitor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_servers_in_the_hub_domain_are_members_of_the_hub_group() {
    let mut cluster = Cluster::start(ClusterOptions::hub_with_leaves(3, 2))
        .await
        .expect("hub with leaves starts");
    let leader = cluster
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let hub_nodes = cluster.nodes_of("hub");
    let mut events = Events::subscribe_via(&cluster, &hub_nodes).await;
    let monitor = Monitor::start_via(&cluster, &hub_nodes, EngineConfig::default()).await;
    // One group, not one per cluster name: the leaves report clusters l1 and l2.
    let status = ready_groups(&monitor, &[("hub", 5)]).await;
    let meta = group(&status, "hub");
    assert_eq!(meta["domain"], "hub", "{meta:#}");
    assert_eq!(meta["leader"].as_str(), Some(leader.as_str()), "{meta:#}");
    assert_eq!(meta["lead_cluster"], "hub", "{meta:#}");
    assert_eq!(meta["cluster_size"], 5, "{meta:#}");
    assert_eq!(meta["quorum_needed"], 3, "{meta:#}");
    let clusters = cluster_tally(meta);
    assert_eq!(clusters, [("hub", 3), ("l1", 1), ("l2", 1)]);
    for member in meta["members"].as_array().expect("members") {
        let name = member["name"].as_str().expect("name");
        let i = cluster.index_of(name).expect("a testbed server");
        assert_eq!(
            member["cluster"],
            cluster.cluster_of(i).as_str(),
            "{member}"
        );
        assert_eq!(member["state"], "online", "{member}");
    }
    assert!(
        meta["non_members"].as_array().is_none_or(Vec::is_empty),
        "{meta:#}"
    );

    // Healthy: nothing.
    events.drain(Duration::from_secs(10)).await;
    assert!(events.lines().is_empty(), "{:#?}", events.lines());

    // A leaf crashes: an offline member of the hub's group, with its own cluster.
    let l1 = cluster.index_of("l1").expect("l1");
    cluster.stop(l1, Stop::Kill).await.expect("kill");
    let raised = events
        .expect(Raised, "META_001", Some("l1"), EVENT_TIMEOUT)
        .await;
    assert_eq!(raised.finding, "META_001/hub/l1");
    assert_eq!(raised.domain.as_deref(), Some("hub"), "{raised:#?}");
    assert_eq!(raised.cluster.as_deref(), Some("l1"), "{raised:#?}");
    println!("{}", raised.summary);
    for step in &raised.remediation {
        println!("  - {}", serde_json::to_string(step).expect("json"));
    }
    // The member's state in STATUS may lag the event: the round that proved the crash (its
    // pinned link dropped, its probe had no responders) can be followed by one that only sees a
    // leaf link settling, which proves nothing either way until the leader's silence does.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = monitor.status().await;
        let meta = group(&status, "hub");
        let offline: Vec<String> = meta["members"]
            .as_array()
            .expect("members")
            .iter()
            .filter(|m| m["state"] == "offline")
            .filter_map(|m| m["name"].as_str().map(str::to_string))
            .collect();
        if offline == ["l1"] {
            break;
        }
        assert!(Instant::now() < deadline, "{meta:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    cluster.restart(l1).await.expect("restart");
    events
        .expect(Resolved, "META_001", Some("l1"), EVENT_TIMEOUT)
        .await;
    events.drain(Duration::from_secs(3)).await;
    // 4 of 5 kept quorum, the leader never moved: nothing but that one finding (and l1's
    // restart, SERVER_101).
    events.assert_raised_then_resolved("META_001/hub/l1");
    let lines = events.lines();
    let others: Vec<&String> = lines
        .iter()
        .filter(|l| !l.contains(" SERVER_101 "))
        .collect();
    assert_eq!(others.len(), 2, "{lines:#?}");
    monitor.stop().await;
}

/// Runs the real binary as a client of the hub (system account): (exit code, stdout, stderr).
async fn hub_cli(cluster: &Cluster, hub_nodes: &[usize], args: &[&str]) -> (Option<i32>, String) {
    let servers: Vec<String> = hub_nodes.iter().map(|i| cluster.client_url(*i)).collect();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_nats-insights"))
        .args(args)
        .args(["--server", &servers.join(",")])
        .args([
            "--user",
            testbed::SYS_USER,
            "--password",
            testbed::SYS_PASSWORD,
        ])
        .env_remove("NATS_URL")
        .env_remove("NATS_USER")
        .env_remove("NATS_PASSWORD")
        .env_remove("NATS_INSIGHTS_LOG")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("the command finishes")
        .expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

/// The edge group is dark: STATUS shows it unheard (members unknown, no leader) and a restart
/// of a healthy hub server gets a real answer from the real binary, not unknown.
async fn edge_is_unheard_and_the_hub_is_still_judged(
    monitor: &Monitor,
    cluster: &Cluster,
    hub_nodes: &[usize],
) {
    let status = monitor.status().await;
    let edge = group(&status, "edge");
    assert!(edge["unheard_since"].is_string(), "{edge:#}");
    assert!(edge.get("leader").is_none(), "{edge:#}");
    assert!(
        edge["members"]
            .as_array()
            .expect("members")
            .iter()
            .all(|m| m["state"] == "unknown"),
        "{edge:#}"
    );
    let hub = group(&status, "hub");
    assert!(hub.get("unheard_since").is_none(), "{hub:#}");
    let h = cluster.server_name(hub_nodes[0]);
    let (code, text) = hub_cli(cluster, hub_nodes, &["preflight", "restart", &h]).await;
    assert!(matches!(code, Some(0 | 1)), "{code:?}: {text}");
    let (code, text) = hub_cli(cluster, hub_nodes, &["preflight", "restart", "e1"]).await;
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("unheard since"), "{text}");
    let (_, text) = hub_cli(cluster, hub_nodes, &["status", "--domain", "edge"]).await;
    assert!(text.contains("unheard since"), "{text}");
}

/// Every edge server killed at once: META_105 names the edge within seconds, the hub is still
/// judged; the edge restarted resolves it. Killed again and retired through the CLI: the group
/// disappears and its finding resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_domain_whose_servers_all_die_is_unheard_then_forgotten() {
    let (mut cluster, hub_nodes, mut events, monitor) =
        hub_and_edge(ClusterOptions::hub_and_leaf(3), EngineConfig::default()).await;
    let edge_nodes = cluster.nodes_of("edge");
    ready_groups(&monitor, &[("edge", 3), ("hub", 3)]).await;

    let killed_at = Instant::now();
    for i in &edge_nodes {
        cluster.stop(*i, Stop::Kill).await.expect("kill");
    }
    let dark = events
        .expect(Raised, "META_105", None, Duration::from_secs(30))
        .await;
    eprintln!("META_105 raised {:?} after the kills", killed_at.elapsed());
    assert_eq!(dark.finding, "META_105/edge");
    assert_eq!(dark.domain.as_deref(), Some("edge"));
    for name in ["e1", "e2", "e3"] {
        assert!(dark.summary.contains(name), "{}", dark.summary);
    }
    edge_is_unheard_and_the_hub_is_still_judged(&monitor, &cluster, &hub_nodes).await;

    for i in &edge_nodes {
        cluster.restart(*i).await.expect("restart");
    }
    events
        .expect(Resolved, "META_105", None, Duration::from_secs(60))
        .await;
    ready_groups(&monitor, &[("edge", 3), ("hub", 3)]).await;
    heard_again(&monitor, "edge").await;

    // Retired on purpose: killed again, then forgotten through the CLI.
    for i in &edge_nodes {
        cluster.stop(*i, Stop::Kill).await.expect("kill");
    }
    events
        .expect(Raised, "META_105", None, Duration::from_secs(30))
        .await;
    let (code, text) = hub_cli(&cluster, &hub_nodes, &["forget-group", "edge"]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("Forgot meta group edge"), "{text}");
    assert!(text.contains("META_105/edge"), "{text}");
    events
        .expect(Resolved, "META_105", None, Duration::from_secs(20))
        .await;
    let status = ready_groups(&monitor, &[("hub", 3)]).await;
    assert!(
        status["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .all(|f| f["domain"] != "edge"),
        "{status:#}"
    );
    // Silence no longer raises anything, and a second forget is refused (unknown group).
    events.drain(Duration::from_secs(6)).await;
    assert_eq!(
        events.history_of("META_105/edge"),
        ["raised", "resolved", "raised", "resolved"],
        "{:#?}",
        events.lines()
    );
    let (code, text) = hub_cli(&cluster, &hub_nodes, &["forget-group", "edge"]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("unknown meta group edge"), "{text}");
    monitor.stop().await;
}

/// The leaf links to the edge cut (the edge keeps running): META_105 as for dead servers; the
/// links back resolve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_domain_behind_a_cut_leaf_link_is_unheard() {
    // A monitor that reaches the hub only (edge sites behind NAT, say): with links of its own to
    // the edge servers it would still hear them, and rightly not call the group unheard.
    let config = EngineConfig {
        discover_members: false,
        ..EngineConfig::default()
    };
    let options = ClusterOptions {
        proxied_leaves: true,
        ..ClusterOptions::hub_and_leaf(3)
    };
    let (cluster, hub_nodes, mut events, monitor) = hub_and_edge(options, config).await;
    ready_groups(&monitor, &[("edge", 3), ("hub", 3)]).await;

    let cut_at = Instant::now();
    cluster.cut_leaf_links().expect("leaf links proxied");
    let dark = events
        .expect(Raised, "META_105", None, Duration::from_secs(30))
        .await;
    eprintln!("META_105 raised {:?} after the cut", cut_at.elapsed());
    assert_eq!(dark.finding, "META_105/edge");
    assert!(dark
        .remediation
        .iter()
        .any(|r| r.step.contains("leaf node")));
    edge_is_unheard_and_the_hub_is_still_judged(&monitor, &cluster, &hub_nodes).await;

    cluster.heal_leaf_links().expect("leaf links proxied");
    events
        .expect(Resolved, "META_105", None, Duration::from_secs(60))
        .await;
    ready_groups(&monitor, &[("edge", 3), ("hub", 3)]).await;
    heard_again(&monitor, "edge").await;
    // Nothing else was raised by the cut: the edge group itself stayed whole.
    events.drain(Duration::from_secs(3)).await;
    assert!(
        events
            .lines()
            .iter()
            .all(|l| l.contains("META_105") || !l.contains("edge")),
        "{:#?}",
        events.lines()
    );
    monitor.stop().await;
}
