//! Live tests of the testbed itself: real nats-server clusters on loopback.

use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{jsz_leader, Cluster, ClusterOptions, Stop};

/// The replica entry named `name` in a JSZ envelope's `meta_cluster.replicas`.
fn replica<'a>(envelope: &'a Value, name: &str) -> Option<&'a Value> {
    envelope
        .pointer("/data/meta_cluster/replicas")?
        .as_array()?
        .iter()
        .find(|r| r["name"] == name)
}

fn offline(replica: &Value) -> bool {
    replica["offline"].as_bool().unwrap_or(false)
}

fn active_ns(replica: &Value) -> u64 {
    replica["active"].as_u64().unwrap_or(0)
}

/// Index of the meta leader and of one follower.
async fn leader_and_follower(cluster: &Cluster) -> (usize, usize) {
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    let li = cluster.index_of(&leader).unwrap();
    (li, (li + 1) % cluster.size())
}

/// Remote server names of node `i`'s routes, from `/routez`.
async fn route_peers(cluster: &Cluster, i: usize) -> Vec<String> {
    let routez = cluster.routez(i).await.unwrap();
    routez["routes"]
        .as_array()
        .map(|routes| {
            routes
                .iter()
                .filter_map(|r| r["remote_name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn cluster_agrees_on_leader_and_steps_down() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    assert_eq!(cluster.size(), 3);
    let before = cluster
        .wait_for_leader(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        cluster.meta_leader().await.as_deref(),
        Some(before.as_str())
    );
    let gather = cluster.jsz_all().await.unwrap();
    assert_eq!(gather.len(), 3, "{gather:#?}");
    for envelope in &gather {
        assert_eq!(jsz_leader(envelope), Some(before.as_str()));
        assert_eq!(envelope["data"]["meta_cluster"]["cluster_size"], 3);
    }

    cluster.step_down().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(after) = cluster.wait_for_leader(Duration::from_secs(1)).await {
            if after != before {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "leader still {before} after step-down"
        );
    }

    for target in [0, 2] {
        cluster.make_leader(target).await.unwrap();
        assert_eq!(
            cluster.meta_leader().await,
            Some(cluster.server_name(target))
        );
    }
}

#[tokio::test]
async fn graceful_stop_shows_offline_and_restart_brings_it_back() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let (li, fi) = leader_and_follower(&cluster).await;
    let follower = cluster.server_name(fi);

    cluster.stop(fi, Stop::Term).await.unwrap();
    assert!(!cluster.is_running(fi));
    let stopped = Instant::now();
    loop {
        let view = cluster.jsz_direct(li).await.unwrap();
        if replica(&view, &follower).is_some_and(offline) {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(2),
            "{follower} not offline 2 s after SIGTERM: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    cluster.restart(fi).await.unwrap();
    assert!(cluster.is_running(fi));
    let restarted = Instant::now();
    loop {
        let view = cluster.jsz_direct(li).await.unwrap();
        if replica(&view, &follower).is_some_and(|r| !offline(r) && r["current"] == true) {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(15),
            "{follower} not back 15 s after restart: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn killed_follower_goes_silent_but_not_offline() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let (li, fi) = leader_and_follower(&cluster).await;
    let follower = cluster.server_name(fi);

    cluster.stop(fi, Stop::Kill).await.unwrap();
    let killed = Instant::now();
    loop {
        let view = cluster.jsz_direct(li).await.unwrap();
        let r = replica(&view, &follower).unwrap().clone();
        assert!(!offline(&r), "a crash must not look offline yet: {r}");
        if active_ns(&r) > 3_000_000_000 {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "active for {follower} did not grow past 3 s: {r}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn partitioned_leader_keeps_claiming_while_majority_reelects() {
    let cluster = Cluster::start(ClusterOptions {
        proxied_routes: true,
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let (li, _) = leader_and_follower(&cluster).await;
    let old = cluster.server_name(li);
    let others: Vec<usize> = (0..3).filter(|&i| i != li).collect();

    cluster.partition(li).unwrap();
    let cut = Instant::now();
    // Routes really are gone on both sides (nothing bypasses the proxies).
    loop {
        let isolated = route_peers(&cluster, li).await;
        let mut towards = Vec::new();
        for &o in &others {
            towards.extend(
                route_peers(&cluster, o)
                    .await
                    .into_iter()
                    .filter(|n| *n == old),
            );
        }
        if isolated.is_empty() && towards.is_empty() {
            break;
        }
        assert!(
            cut.elapsed() < Duration::from_secs(3),
            "routes survive the partition: isolated {isolated:?}, towards it {towards:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The others still route to each other.
    for &o in &others {
        assert!(!route_peers(&cluster, o).await.is_empty());
    }

    // The majority elects a new leader; the isolated node still claims the old leadership.
    let new = loop {
        let a = jsz_leader(&cluster.jsz_direct(others[0]).await.unwrap()).map(str::to_owned);
        let b = jsz_leader(&cluster.jsz_direct(others[1]).await.unwrap()).map(str::to_owned);
        if let (Some(a), Some(b)) = (a, b) {
            if a == b && a != old {
                break a;
            }
        }
        assert!(cut.elapsed() < Duration::from_secs(20), "no new leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let gather = cluster.jsz_all_from(others[0]).await.unwrap();
    assert_eq!(
        gather.len(),
        2,
        "the isolated node must not answer the gather"
    );
    for _ in 0..3 {
        let isolated = cluster.jsz_direct(li).await.unwrap();
        assert_eq!(jsz_leader(&isolated), Some(old.as_str()), "{isolated:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_ne!(new, old);

    cluster.heal(li).unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(cluster.jsz_all().await.unwrap().len(), 3);
    assert!(!leader.is_empty());
}

#[tokio::test]
async fn dropping_the_cluster_leaves_no_server_behind() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    // Drop must also kill a paused (SIGSTOP) node.
    cluster.pause(0).unwrap();
    assert!(cluster.is_running(0));
    let dir = cluster.dir().to_owned();
    let pgrep = |dir: &std::path::Path| {
        std::process::Command::new("pgrep")
            .arg("-f")
            .arg(dir)
            .output()
            .unwrap()
    };
    assert!(pgrep(&dir).status.success(), "pgrep should see the server");
    drop(cluster);
    let left = pgrep(&dir);
    assert!(
        !left.status.success(),
        "servers left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    if std::env::var_os(testbed::KEEP_ENV).is_none() {
        assert!(!dir.exists());
    }
}

#[tokio::test]
async fn restart_on_a_taken_port_fails_clearly() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let (_, fi) = leader_and_follower(&cluster).await;
    cluster.stop(fi, Stop::Term).await.unwrap();
    let port: u16 = cluster
        .client_url(fi)
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let err = cluster.restart(fi).await.unwrap_err();
    assert!(
        matches!(err, testbed::TestbedError::PortInUse { .. }),
        "{err}"
    );
    println!("{err}");
    drop(squatter);
    cluster.restart(fi).await.unwrap();
}

/// `server.name` → the whole envelope, for a gather.
fn by_name(gather: &[Value]) -> std::collections::BTreeMap<String, &Value> {
    gather
        .iter()
        .filter_map(|e| Some((e["server"]["name"].as_str()?.to_owned(), e)))
        .collect()
}

#[tokio::test]
async fn supercluster_is_one_meta_group_whose_leader_moves_by_cluster() {
    let mut cluster = Cluster::start(ClusterOptions::supercluster(3, 3))
        .await
        .unwrap();
    assert_eq!(cluster.size(), 9);
    assert_eq!(cluster.clusters(), ["c1", "c2", "c3"]);
    assert_eq!(cluster.nodes_of("c2"), [3, 4, 5]);
    assert_eq!(cluster.server_name(3), "n4");
    assert_eq!(cluster.domain_of(3), None);
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    let gather = cluster.jsz_all().await.unwrap();
    let views = by_name(&gather);
    assert_eq!(views.len(), 9, "{gather:#?}");
    for (name, envelope) in &views {
        let i = cluster.index_of(name).unwrap();
        assert_eq!(jsz_leader(envelope), Some(leader.as_str()), "{name}");
        assert_eq!(
            envelope["data"]["meta_cluster"]["cluster_size"], 9,
            "{name}: {:#}",
            envelope["data"]["meta_cluster"]
        );
        assert_eq!(
            envelope["server"]["cluster"],
            cluster.cluster_of(i).as_str()
        );
        // The group's name is the reporting server's own cluster, not one name per group.
        assert_eq!(
            envelope["data"]["meta_cluster"]["name"],
            cluster.cluster_of(i).as_str()
        );
    }

    // Start outside c3 so that the placement really moves the leader.
    if cluster.cluster_of(cluster.index_of(&leader).unwrap()) == "c3" {
        cluster.step_down_to_cluster("c1").await.unwrap();
    }
    let moved = cluster.step_down_to_cluster("c3").await.unwrap();
    assert_eq!(cluster.cluster_of(cluster.index_of(&moved).unwrap()), "c3");
    assert_eq!(cluster.meta_leader().await.as_deref(), Some(moved.as_str()));

    // Losing a whole cluster leaves 6 of 9: the leader in c3 keeps its quorum.
    let killed = cluster.stop_cluster("c2", Stop::Kill).await.unwrap();
    assert_eq!(killed, [3, 4, 5]);
    assert_eq!(
        cluster
            .wait_for_leader(Duration::from_secs(10))
            .await
            .unwrap(),
        moved
    );
    assert_eq!(cluster.jsz_all().await.unwrap().len(), 6);
}

#[tokio::test]
async fn hub_and_leaf_domains_have_a_leader_each_seen_from_the_hub() {
    let cluster = Cluster::start(ClusterOptions::hub_and_leaf(3))
        .await
        .unwrap();
    assert_eq!(cluster.clusters(), ["hub", "edge"]);
    assert_eq!(cluster.server_name(3), "e1");
    assert_eq!(cluster.domain_of(0).as_deref(), Some("hub"));
    assert_eq!(cluster.domain_of(3).as_deref(), Some("edge"));
    let leaders = cluster
        .wait_for_leaders(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(leaders.len(), 2, "{leaders:?}");
    let hub = leaders[&Some("hub".to_owned())].clone();
    let edge = leaders[&Some("edge".to_owned())].clone();
    assert!(hub.starts_with('h') && edge.starts_with('e'), "{leaders:?}");

    // One gather from a hub server reaches both groups.
    let gather = cluster.jsz_all_from(0).await.unwrap();
    let views = by_name(&gather);
    assert_eq!(views.len(), 6, "{gather:#?}");
    for (name, envelope) in &views {
        let i = cluster.index_of(name).unwrap();
        let domain = cluster.domain_of(i).unwrap();
        assert_eq!(envelope["server"]["domain"], domain.as_str());
        let expected = if domain == "hub" { &hub } else { &edge };
        assert_eq!(jsz_leader(envelope), Some(expected.as_str()), "{name}");
        assert_eq!(envelope["data"]["meta_cluster"]["cluster_size"], 3);
    }

    // The edge group steps down on `$JS.edge.API...` sent through a hub server; the hub's
    // leader stays.
    cluster.step_down_in(Some("edge")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = cluster
            .wait_for_leaders(Duration::from_secs(5))
            .await
            .unwrap();
        if now[&Some("edge".to_owned())] != edge {
            assert_eq!(now[&Some("hub".to_owned())], hub);
            break;
        }
        assert!(Instant::now() < deadline, "edge leader still {edge}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let e3 = cluster.index_of("e3").unwrap();
    cluster.make_leader(e3).await.unwrap();
    assert_eq!(
        cluster.meta_leader_of_domain(Some("edge")).await.as_deref(),
        Some("e3")
    );
}

#[tokio::test]
async fn hub_with_leaves_is_one_meta_group_that_only_the_hub_leads() {
    let empty = Cluster::start(ClusterOptions::hub_with_leaves(3, 0)).await;
    assert!(
        matches!(empty, Err(testbed::TestbedError::Invalid(_))),
        "{empty:?}"
    );
    let mut cluster = Cluster::start(ClusterOptions::hub_with_leaves(3, 2))
        .await
        .unwrap();
    assert_eq!(cluster.size(), 5);
    assert_eq!(cluster.clusters(), ["hub", "l1", "l2"]);
    let l1 = cluster.index_of("l1").unwrap();
    assert_eq!(l1, 3);
    assert_eq!(cluster.cluster_of(l1), "l1");
    assert_eq!(cluster.domain_of(l1).as_deref(), Some("hub"));
    let leaders = cluster
        .wait_for_leaders(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(leaders.len(), 1, "one group: {leaders:?}");
    let leader = leaders[&Some("hub".to_owned())].clone();
    assert!(leader.starts_with('h'), "{leader}");

    // One gather from a hub server: every server in one group of 5, each leaf naming itself
    // as its cluster.
    let gather = cluster.jsz_all_from(0).await.unwrap();
    let views = by_name(&gather);
    assert_eq!(views.len(), 5, "{gather:#?}");
    for (name, envelope) in &views {
        let i = cluster.index_of(name).unwrap();
        let meta = &envelope["data"]["meta_cluster"];
        assert_eq!(envelope["server"]["domain"], "hub", "{name}");
        assert_eq!(
            envelope["server"]["cluster"],
            cluster.cluster_of(i).as_str()
        );
        assert_eq!(meta["name"], cluster.cluster_of(i).as_str(), "{name}");
        assert_eq!(jsz_leader(envelope), Some(leader.as_str()), "{name}");
        assert_eq!(meta["cluster_size"], 5, "{name}: {meta:#}");
        assert_eq!(meta["quorum_needed"], 3, "{name}: {meta:#}");
    }

    // A leaf never leads: the server accepts a step-down towards it, and through the
    // election that follows (timeouts of 4-9 s) only hub servers are named.
    cluster.step_down_to("l1").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        for (i, named) in cluster.leader_views().await {
            assert!(
                named.as_deref().is_none_or(|l| l.starts_with('h')),
                "{} names leader {named:?}",
                cluster.server_name(i)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    assert!(after.starts_with('h'), "{after}");

    // A crashed leaf leaves the gather and, restarted, follows the same leader again.
    cluster.stop(l1, Stop::Kill).await.unwrap();
    assert_eq!(cluster.jsz_all_from(0).await.unwrap().len(), 4);
    cluster.restart(l1).await.unwrap();
    assert_eq!(
        cluster
            .wait_for_leader(Duration::from_secs(30))
            .await
            .unwrap(),
        after
    );
    assert_eq!(cluster.jsz_all_from(0).await.unwrap().len(), 5);
}
