//! Live tests of the monitor's pinned links (one connection per configured server): a killed
//! server's link drops at once and the monitor polls then, without waiting for the dead server;
//! a link of the monitor's own that fails while its server is healthy raises nothing; given one
//! URL only, the monitor links every member itself (found in `connect_urls`, or in VARZ and
//! ROUTEZ when servers do not advertise) and sees a partitioned old leader as with every URL.

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nats_insights::engine::EngineConfig;
use nats_insights::findings::TransitionKind::{Raised, Resolved};
use support::{leader_other_than, others, try_request_json, Events, Monitor, EVENT_TIMEOUT};
use testbed::{Cluster, ClusterOptions, Stop, TcpProxy};

/// Polls so far apart that a test's window holds none after the first: what is raised in it was
/// found by the poll a dropped link called for.
const SLOW_POLL: Duration = Duration::from_secs(60);

/// Generous beside the few hundred milliseconds a dropped link's poll takes, and far short of
/// `SLOW_POLL`.
const BY_LINK: Duration = Duration::from_secs(10);

fn slow_polls() -> EngineConfig {
    EngineConfig {
        poll_interval: SLOW_POLL,
        ..EngineConfig::default()
    }
}

/// Waits until the monitor has polled `polls` times and sees `members` members.
async fn polled(monitor: &Monitor, polls: u64, members: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = try_request_json(&monitor.client, "$INSIGHTS.API.STATUS", "")
            .await
            .unwrap_or_default();
        let done = status["service"]["polls"].as_u64().unwrap_or(0);
        let seen = status["meta"]["members"].as_array().map_or(0, Vec::len);
        if done >= polls && seen == members {
            return;
        }
        assert!(Instant::now() < deadline, "monitor not ready: {status:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A follower of the meta group other than the server the monitor is attached to.
async fn follower_not(cluster: &Cluster, attached: &str) -> usize {
    let leader = cluster.meta_leader().await.expect("leader");
    (0..cluster.size())
        .find(|i| {
            let name = cluster.server_name(*i);
            name != leader && name != attached
        })
        .expect("a follower the monitor is not attached to")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_follower_is_raised_when_its_link_drops_without_waiting_for_a_poll() {
    let mut cluster = support::cluster(3).await;
    let monitor = Monitor::start_with(&cluster, slow_polls()).await;
    polled(&monitor, 1, 3).await;
    let attached = monitor.client.server_info().server_name;
    let victim = follower_not(&cluster, &attached).await;
    let name = cluster.server_name(victim);
    let mut events = Events::subscribe_via(&cluster, &others(3, &[victim])).await;

    cluster.stop(victim, Stop::Kill).await.expect("kill");
    let raised = events
        .expect(Raised, "META_001", Some(&name), BY_LINK)
        .await;
    assert_eq!(
        raised.evidence["answered_poll"], false,
        "{:#}",
        raised.evidence
    );
    // Only the dead server: the poll that did not wait for it heard everyone else.
    events.drain(Duration::from_secs(2)).await;
    assert_eq!(events.seen.len(), 1, "{:#?}", events.lines());
    monitor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitors_own_server_killed_is_raised_once_it_reconnected_and_nobody_else_is() {
    let mut cluster = support::cluster(3).await;
    let monitor = Monitor::start_with(&cluster, slow_polls()).await;
    polled(&monitor, 1, 3).await;
    // A follower, so that no election calls for a poll of its own.
    let attached = monitor.client.server_info().server_name;
    leader_other_than(&mut cluster, &attached).await;
    let index = cluster.index_of(&attached).expect("attached to a node");
    let mut events = Events::subscribe_via(&cluster, &others(3, &[index])).await;

    // The pinned link and the main connection drop together: the poll waits for the main
    // connection to come back through another server, and does not judge the others silent.
    cluster.stop(index, Stop::Kill).await.expect("kill");
    events
        .expect(Raised, "META_001", Some(&attached), BY_LINK)
        .await;
    events.drain(Duration::from_secs(2)).await;
    assert!(
        events
            .seen
            .iter()
            .all(|e| e.server.as_deref() == Some(attached.as_str())),
        "{:#?}",
        events.lines()
    );
    assert_ne!(monitor.client.server_info().server_name, attached);
    monitor.stop().await;
}

/// Names of the client connections node `i` holds.
async fn connection_names(cluster: &Cluster, i: usize) -> Vec<String> {
    let connz = cluster.monitor_json(i, "/connz").await.expect("connz");
    connz["connections"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_of_the_monitors_own_to_a_healthy_server_raises_nothing() {
    let cluster = support::cluster(3).await;
    // The monitor reaches node `cut` through a proxy the test controls; the routes between the
    // servers stay intact.
    let cut = 2;
    let port = cluster
        .client_url(cut)
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("client port");
    let proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("proxy");
    let proxy_url = format!("nats://{}", proxy.addr());
    let mut args = support::sys_connect(&cluster);
    args.servers[cut] = proxy_url.clone();
    // The main connection elsewhere: this is about the pinned link alone (the main connection's
    // own server going away is the reconnect's business).
    let name = cluster.server_name(cut);
    let mut tries = 0;
    let connections = loop {
        let connections = args.open("nats-insights-test").await.expect("connects");
        if connections.main.server_info().server_name != name {
            break connections;
        }
        tries += 1;
        assert!(tries < 20, "the main connection always lands on {name}");
    };
    let monitor = Monitor::start_connected(connections, EngineConfig::default());
    support::ready(&monitor, 3).await;
    let pinned = format!("direct {proxy_url}");
    let holds_link = |names: &[String]| names.iter().any(|n| n.ends_with(&pinned));
    assert!(
        holds_link(&connection_names(&cluster, cut).await),
        "the pinned link goes through the proxy"
    );
    let mut events = Events::subscribe(&cluster).await;
    let polls = monitor.status().await["service"]["polls"]
        .as_u64()
        .unwrap_or(0);

    proxy.cut();
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while holds_link(&connection_names(&cluster, cut).await) {
        assert!(Instant::now() < deadline, "the cut did not drop the link");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    events.drain(Duration::from_secs(10)).await;
    assert!(events.seen.is_empty(), "{:#?}", events.lines());
    let status = monitor.status().await;
    assert_eq!(status["status"], "ok", "{status:#}");
    assert!(
        status["service"]["polls"].as_u64().unwrap_or(0) > polls,
        "{status:#}"
    );
    assert_eq!(status["service"]["servers_answering"], 3, "{status:#}");
    monitor.stop().await;
}

/// Given the URL of one follower only, the monitor links every member and raises META_002 for
/// the old leader cut off from the others (it keeps claiming leadership), as with every URL
/// given; returns the links STATUS showed before the cut.
async fn one_url_sees_a_partitioned_old_leader(options: ClusterOptions) -> Vec<serde_json::Value> {
    let mut cluster = Cluster::start(ClusterOptions {
        proxied_routes: true,
        ..options
    })
    .await
    .expect("cluster starts");
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("meta leader elected");
    let given = support::follower(&cluster).await;
    let mut config = EngineConfig::default();
    // Leader changes are part of this fault; flapping is tested on its own.
    config.thresholds.flap_max = 10;
    let monitor = Monitor::start_via(&cluster, &[given], config).await;
    support::ready(&monitor, 3).await;
    let links = support::linked(&monitor, 3).await;
    // The main connection stays on the given follower: keep the leader elsewhere.
    let attached = monitor.client.server_info().server_name;
    assert_eq!(attached, cluster.server_name(given));
    let (leader, index, majority) = leader_other_than(&mut cluster, &attached).await;
    let mut events = Events::subscribe_via(&cluster, &majority).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    support::partition_leader_expect_disagreement(&cluster, &mut events, index, &leader).await;
    events
        .expect(Raised, "META_001", Some(&leader), EVENT_TIMEOUT)
        .await;
    cluster.heal(index).expect("heal");
    events
        .expect(Resolved, "META_002", None, Duration::from_secs(40))
        .await;
    monitor.stop().await;
    links
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_one_followers_url_a_partitioned_old_leader_raises_disagreement_as_with_every_url() {
    let links = one_url_sees_a_partitioned_old_leader(ClusterOptions::default()).await;
    // Found in the connect_urls the given server advertised (a server whose routes were not up
    // yet when the monitor connected is missing there: VARZ names it): the given server's link
    // too (the main connection fails over; it is no pinned link).
    assert!(
        links
            .iter()
            .all(|l| l["source"] == "connect_urls" || l["source"] == "varz"),
        "{links:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_that_do_not_advertise_are_found_in_varz_and_routez() {
    let links = one_url_sees_a_partitioned_old_leader(ClusterOptions {
        no_advertise: true,
        ..ClusterOptions::default()
    })
    .await;
    // They listen on every address: the client port from VARZ, the address from the routes.
    assert!(links.iter().all(|l| l["source"] == "routez"), "{links:#?}");
}
