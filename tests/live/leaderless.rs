//! Live tests of a meta group without a leader: META_106 (no leader for longer than
//! `--leaderless-after` although a quorum of members is online) against META_006 (quorum lost).
//! Every route of a 3-node cluster cut at its proxies leaves three servers that each answer the
//! monitor on their own connection but cannot elect anyone: META_106, never META_006. A leader
//! stopped (SIGTERM) and restarted, and a leader put in lame duck, are normal elections: neither
//! check is raised. A whole cluster stopped and started again at once loses its quorum while it is
//! down (META_006), but not once every member is back and electing.

use crate::support;

use std::time::{Duration, Instant, SystemTime};

use nats_insights::engine::EngineConfig;
use nats_insights::findings::TransitionKind::{Raised, Resolved};
use support::{Events, Monitor};
use testbed::{Cluster, Stop};

/// The engine's defaults (the default `--leaderless-after` is what is tested), with leader
/// changes allowed: they are part of these faults, flapping is tested on its own.
fn config() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.thresholds.flap_max = 10;
    config
}

/// Waits until node `i` has exited by itself (lame duck ends with the process exiting).
async fn exited(cluster: &mut Cluster, i: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while cluster.is_running(i) {
        assert!(
            Instant::now() < deadline,
            "node {i} still runs {timeout:?} after lame duck"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_cut_leaves_a_group_leaderless_with_quorum_online_not_quorum_lost() {
    let cluster = support::proxied_cluster().await;
    // The monitor starts on node 0, and may move off it once node 0 is cut off; with every route
    // cut, what it publishes reaches only the clients of the node it is on: the subscriber
    // listens on each node. Each member's own view comes over the monitor's direct link to it.
    let monitor = Monitor::start_via(&cluster, &[0], config()).await;
    let mut events = Events::subscribe_each(&cluster).await;
    support::ready(&monitor, 3).await;
    support::linked(&monitor, 3).await;

    let cut_at = Instant::now();
    for i in 0..3 {
        cluster.partition(i).expect("cut");
    }
    // The old leader claims leadership until it notices it lost its quorum (10-20 s), then no
    // server names a leader; the finding follows --leaderless-after (12 s) later.
    let leaderless = events
        .expect(Raised, "META_106", None, Duration::from_secs(90))
        .await;
    eprintln!("META_106 raised {:?} after the cut", cut_at.elapsed());
    assert_eq!(leaderless.finding, "META_106/default");
    assert!(
        leaderless
            .summary
            .contains("although 3 of 3 members are online"),
        "{}",
        leaderless.summary
    );
    assert_eq!(leaderless.evidence["members_online"], 3);
    assert!(
        cut_at.elapsed() > Duration::from_secs(12),
        "raised before --leaderless-after: {:?}",
        cut_at.elapsed()
    );
    // Each server still answers on its own connection.
    for i in 0..3 {
        let own = cluster.jsz_direct(i).await.expect("own view");
        assert!(
            testbed::jsz_leader(&own).is_none(),
            "node {i} names a leader: {own:#}"
        );
    }

    for i in 0..3 {
        cluster.heal(i).expect("heal");
    }
    events
        .expect(Resolved, "META_106", None, Duration::from_secs(60))
        .await;
    events.drain(Duration::from_secs(3)).await;
    assert!(
        events.seen.iter().all(|e| e.check.as_str() != "META_006"),
        "every member stayed online: {:#?}",
        events.lines()
    );
    assert!(support::raised_in_history(&monitor, "META_006")
        .await
        .is_empty());
    assert_eq!(
        events.history_of("META_106/default"),
        ["raised", "resolved"],
        "{:#?}",
        events.lines()
    );
    monitor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_and_restarted_or_in_lame_duck_is_a_normal_election() {
    let mut cluster = support::cluster(3).await;
    let monitor = Monitor::start_with(&cluster, config()).await;
    let mut events = Events::subscribe(&cluster).await;
    support::ready(&monitor, 3).await;

    // SIGTERM to the leader, a new leader elected, the old one started again.
    let leader = cluster.meta_leader().await.expect("leader");
    let index = cluster.index_of(&leader).expect("leader index");
    cluster.stop(index, Stop::Term).await.expect("stop");
    let started = Instant::now();
    let next = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("a new leader");
    eprintln!(
        "new leader {next} {:?} after SIGTERM to {leader}",
        started.elapsed()
    );
    cluster.restart(index).await.expect("restart");
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("leader with the old one back");
    support::ready(&monitor, 3).await;
    departed_and_back(&mut events, &leader).await;

    // Lame duck: the leader hands over and exits by itself; then it is started again.
    let leader = cluster.meta_leader().await.expect("leader");
    let index = cluster.index_of(&leader).expect("leader index");
    cluster
        .stop(index, Stop::LameDuck)
        .await
        .expect("lame duck");
    exited(&mut cluster, index, Duration::from_secs(60)).await;
    let next = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("a new leader");
    eprintln!("new leader {next} after lame duck of {leader}");
    cluster.restart(index).await.expect("restart");
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("leader with the old one back");
    support::ready(&monitor, 3).await;
    departed_and_back(&mut events, &leader).await;

    // Longer than --leaderless-after: an election that had outlasted it would show by now.
    events.drain(Duration::from_secs(15)).await;
    for check in ["META_006", "META_106"] {
        assert!(
            events.seen.iter().all(|e| e.check.as_str() != check),
            "{check} in a normal election: {:#?}",
            events.lines()
        );
        let held = support::raised_in_history(&monitor, check).await;
        assert!(held.is_empty(), "{check}: {held:#?}");
    }
    monitor.stop().await;
}

/// Once every member is online again: a server stopped and started at once may come back
/// before the monitor raised anything (its shutdown event lost with the connection it was
/// sent on); if it was raised, it is resolved.
async fn departed_and_back(events: &mut Events, server: &str) {
    events.drain(Duration::from_secs(2)).await;
    if events
        .history_of(&format!("META_001/default/{server}"))
        .contains(&"raised")
    {
        events
            .expect(Resolved, "META_001", Some(server), Duration::from_secs(30))
            .await;
    }
}

/// When a HISTORY entry was published.
fn at(entry: &serde_json::Value) -> SystemTime {
    entry["at"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .unwrap_or_else(|| panic!("no time: {entry}"))
}

/// Finding events of `check` the monitor holds in HISTORY, oldest first: (event, when).
async fn episodes(monitor: &Monitor, check: &str) -> Vec<(String, SystemTime)> {
    let history = support::request_json(
        &monitor.client,
        "$INSIGHTS.API.HISTORY",
        r#"{"limit": 1000}"#,
    )
    .await
    .1;
    let mut events: Vec<(String, SystemTime)> = history["entries"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|x| x["check"] == check && x["event"] != "updated")
                .map(|x| (x["event"].as_str().unwrap_or("?").to_string(), at(x)))
                .collect()
        })
        .unwrap_or_default();
    events.sort_by_key(|(_, t)| *t);
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_restarted_at_once_is_no_quorum_loss_once_every_member_is_back() {
    let mut cluster = support::cluster(3).await;
    let monitor = Monitor::start_with(&cluster, config()).await;
    support::ready(&monitor, 3).await;

    for i in 0..3 {
        cluster.stop(i, Stop::Term).await.expect("stop");
    }
    for i in 0..3 {
        cluster.restart(i).await.expect("restart");
    }
    // Every member accepts clients again: from here on they are all up, electing.
    let back = SystemTime::now();
    let back_at = Instant::now();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("a leader after the restart");
    let election = back_at.elapsed();
    eprintln!("leader {leader} {election:?} after every member was back");
    // The monitor back on its feet (its connection reconnected, every member polled).
    support::ready(&monitor, 3).await;
    // Longer than --leaderless-after, so a META_106 that was coming has come.
    tokio::time::sleep(Duration::from_secs(13)).await;

    // A quorum loss while the servers were down is true; once they are all back it is not.
    // (The monitor reconnects and re-pins its links within a poll or two: 3 s of slack.)
    let quorum = episodes(&monitor, "META_006").await;
    eprintln!("META_006: {quorum:?}, back at {back:?}");
    let slack = Duration::from_secs(3);
    for (event, when) in &quorum {
        if event == "raised" {
            assert!(
                *when <= back + slack,
                "META_006 raised after every member was back: {quorum:?}, back {back:?}"
            );
        }
    }
    if let Some((event, when)) = quorum.last() {
        assert_eq!(event, "resolved", "{quorum:?}");
        assert!(
            *when <= back + slack,
            "META_006 held after every member was back: {quorum:?}, back {back:?}"
        );
    }
    // META_106 only if the election itself outlasted --leaderless-after.
    let leaderless = episodes(&monitor, "META_106").await;
    eprintln!("META_106: {leaderless:?}");
    if election < Duration::from_secs(12) {
        assert!(
            leaderless.is_empty(),
            "election took {election:?}: {leaderless:?}"
        );
    }
    monitor.stop().await;
}
