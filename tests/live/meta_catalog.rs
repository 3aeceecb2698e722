//! Live tests of the meta checks that watch the group's health beyond who is up: META_008
//! (the leader's JetStream API queue backed up), META_101 (a member that answers but lags the
//! leader), META_102 (the group's size changed), META_103 (an even group size) and META_104
//! (members on different nats-server versions). Each test causes the real condition on real
//! nats-server processes (a flood of API requests, a CPU-starved follower catching up, a
//! 4-server group, a peer removal, a renamed server, a 2.14 server upgraded in place), with
//! thresholds lowered where the defaults would make the test slow, and asserts the finding is
//! raised and resolved once and that nothing else was raised. The two tests whose condition is
//! load (the flood, the starved follower) run alone, the others beside each other.
//!
//! The 2.14 server comes from `NATS_SERVER_BIN_2_14` or `target/nats-servers/2.14/`, where
//! `ensure_nats_servers_old` (scripts/lib/ensure.sh) puts it; without it the version test fails
//! and says how to fetch it.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nats_insights::checks::Thresholds;
use nats_insights::engine::EngineConfig;
use nats_insights::findings::TransitionKind::{self, Raised, Resolved};
use nats_insights::publish::FindingEvent;
use support::{ready, Events, Monitor, EVENT_TIMEOUT};
use testbed::{Cluster, ClusterOptions, FloodOptions, Stop};

/// The default domain's group label in finding keys.
const GROUP: &str = "default";

/// Taken exclusively by the tests whose condition is load (the API flood, the starved
/// follower), shared by the others. Why: with a second cluster busy beside it, the flooded
/// leader once took long enough to answer the monitor's poll (gather and direct probe) that
/// META_001 judged it not answering; alone it answers every poll. The lock orders only this
/// module's tests: `scripts/test` runs the two load tests apart from the rest of the binary.
static LOAD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The engine's default configuration with `f` applied to its thresholds.
fn thresholds_with(f: impl FnOnce(&mut Thresholds)) -> EngineConfig {
    let mut config = EngineConfig::default();
    f(&mut config.thresholds);
    config
}

/// A started cluster with a meta leader, node 0 leading (fixed roles: the faults below pick
/// followers by index).
async fn cluster_led_by_0(options: ClusterOptions) -> Cluster {
    let cluster = Cluster::start(options).await.expect("cluster starts");
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("meta leader elected");
    cluster.make_leader(0).await.expect("node 0 leads");
    cluster
}

/// Raises and resolves of `finding` (updates left out: they may come with new evidence).
fn transitions(events: &Events, finding: &str) -> Vec<&'static str> {
    events
        .history_of(finding)
        .into_iter()
        .filter(|kind| *kind != TransitionKind::Updated.as_str())
        .collect()
}

/// Asserts that `finding` was raised once, then resolved once.
#[track_caller]
fn assert_raised_then_resolved(events: &Events, finding: &str) {
    assert_eq!(
        transitions(events, finding),
        ["raised", "resolved"],
        "{finding}: {:#?}",
        events.lines()
    );
}

/// Raise events of findings `expected` does not accept, as lines.
fn unexpected(events: &Events, expected: impl Fn(&FindingEvent) -> bool) -> Vec<String> {
    events
        .seen
        .iter()
        .filter(|e| e.event == Raised && !expected(e))
        .map(nats_insights::watch::format_line)
        .collect()
}

/// The event's summary and evidence as one text, to look for a server's name in.
fn text_of(event: &FindingEvent) -> String {
    format!("{} {}", event.summary, event.evidence)
}

/// The leader's own JSZ view (node `leader`).
async fn leader_meta(cluster: &Cluster, leader: usize) -> serde_json::Value {
    let view = cluster.jsz_direct(leader).await.expect("leader's JSZ");
    view["data"]["meta_cluster"].clone()
}

/// The replica entry of `name` in the leader's view, if listed.
fn replica<'a>(meta: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    meta["replicas"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == name)
}

/// Prints `meta_catalog <test>: <what> at <seconds since the fault>` (`--nocapture`), the
/// timings the module documentation quotes.
struct Lap {
    test: &'static str,
    since: Instant,
}

impl Lap {
    fn start(test: &'static str) -> Lap {
        Lap {
            test,
            since: Instant::now(),
        }
    }

    fn at(&self, what: &str) {
        eprintln!(
            "meta_catalog {}: {what} at {:.1} s",
            self.test,
            self.since.elapsed().as_secs_f64()
        );
    }
}

/// The checks' findings that a test expects besides the one it is about: META_001 for the
/// servers it stops on purpose.
fn offline_of(event: &FindingEvent, stopped: &[String]) -> bool {
    event.check.as_str() == "META_001" && event.server.as_ref().is_some_and(|s| stopped.contains(s))
}

/// Waits until the leader (node `leader`) has heard from `name` within the last second and
/// `name`'s own view names that leader: a restarted server is back in the group.
async fn wait_back_in_group(cluster: &Cluster, leader: usize, name: &str) {
    let node = cluster.index_of(name).expect("node");
    let leader_name = cluster.server_name(leader);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let meta = leader_meta(cluster, leader).await;
        let heard = replica(&meta, name)
            .is_some_and(|r| r["active"].as_u64().is_some_and(|a| a < 1_000_000_000));
        let follows = cluster
            .jsz_direct(node)
            .await
            .ok()
            .is_some_and(|v| testbed::jsz_leader(&v) == Some(leader_name.as_str()));
        if heard && follows {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not back in the group: {meta:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leader's entry for `name` once it shows it not current (a few samples: the leader's
/// view is a moment's).
async fn behind_entry(cluster: &Cluster, leader: usize, name: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..10 {
        last = replica(&leader_meta(cluster, leader).await, name)
            .cloned()
            .unwrap_or_default();
        if last["current"] == false {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the leader never showed {name} behind: {last}");
}

/// META_008: a flood of JetStream API requests through the meta leader keeps its API queue
/// backed up (JSZ `pending` near 2,000, see `testbed::FloodOptions`): raised once pending has
/// stayed above 50 for a second, resolved once the flood stops and the queue drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_api_requests_raises_meta_pending_high_until_it_stops() {
    let _alone = LOAD.write().await;
    let cluster = cluster_led_by_0(ClusterOptions::default()).await;
    let config = thresholds_with(|t| {
        t.pending_max = 50;
        t.pending_after = Duration::from_secs(1);
    });
    let monitor = Monitor::start_via(&cluster, &[1, 2], config).await;
    ready(&monitor, 3).await;
    let mut events = Events::subscribe_via(&cluster, &[1, 2]).await;

    let flood = cluster
        .flood_js_api(0, &FloodOptions::default())
        .await
        .expect("flood starts");
    let lap = Lap::start("META_008 after the flood started");
    let raised = events.expect(Raised, "META_008", None, EVENT_TIMEOUT).await;
    lap.at("raised");
    assert_eq!(raised.finding, format!("META_008/{GROUP}"));
    let pending = leader_meta(&cluster, 0).await["pending"].as_u64();
    assert!(
        pending.is_some_and(|p| p > 50),
        "the leader's queue is backed up while raised: {pending:?}"
    );
    let stats = flood.stop().await.expect("flood ran");
    assert!(stats.answered > 0, "{stats:?}");
    let lap = Lap::start("META_008 after the flood stopped");
    events
        .expect(Resolved, "META_008", None, EVENT_TIMEOUT)
        .await;
    lap.at(&format!(
        "resolved (pending {pending:?} while raised, {stats:?})"
    ));

    events.drain(Duration::from_secs(3)).await;
    assert_raised_then_resolved(&events, &raised.finding);
    let others = unexpected(&events, |e| e.check.as_str() == "META_008");
    assert!(others.is_empty(), "raised besides META_008: {others:#?}");
    monitor.stop().await;
}

/// META_101: a follower stopped while the meta group keeps committing (the leader lists it
/// offline, ever further behind) is META_001's, not META_101's; restarted and then starved of
/// CPU (50 ms running, 250 ms paused) under the same churn it answers every poll and the
/// leader hears from it, but shows it 50-280 entries behind (`current: false`) in most polls:
/// raised once that has lasted 2 s, resolved once the churn stops and it catches up.
///
/// A poll that lands in the slice the follower runs in can find it caught up (about one in
/// seven, never two in a row; see `Cluster::churn_meta`), which restarts the 2 s: hence the
/// longer wait for the raise, and the churn stops right after it. The healthy follower shows
/// behind in about one poll in forty, never in the three in a row that 2 s takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starved_follower_that_lags_raises_meta_member_behind_but_an_offline_one_does_not() {
    let _alone = LOAD.write().await;
    let mut cluster = cluster_led_by_0(ClusterOptions::default()).await;
    let behind_after = Duration::from_secs(2);
    let config = thresholds_with(|t| {
        t.lag_max = 20;
        t.behind_after = behind_after;
    });
    let monitor = Monitor::start_via(&cluster, &[0, 1], config).await;
    ready(&monitor, 3).await;
    let mut events = Events::subscribe_via(&cluster, &[0, 1]).await;
    let (slow, name) = (2, cluster.server_name(2));
    let churn = cluster
        .churn_meta(1, 2, &[slow])
        .await
        .expect("churn starts");

    // Offline: the leader's lag for it grows, but META_001 has it.
    cluster.stop(slow, Stop::Term).await.expect("stop");
    events
        .expect(Raised, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    events.drain(behind_after + Duration::from_secs(3)).await;
    let lag_while_down = replica(&leader_meta(&cluster, 0).await, &name)
        .and_then(|r| r["lag"].as_u64())
        .unwrap_or(0);
    assert!(lag_while_down > 20, "the churn ran: lag {lag_while_down}");
    assert!(
        events.seen.iter().all(|e| e.check.as_str() != "META_101"),
        "META_101 raised for an offline member: {:#?}",
        events.lines()
    );

    // Back, then starved: it answers and is heard, but falls behind.
    cluster.restart(slow).await.expect("restart");
    wait_back_in_group(&cluster, 0, &name).await;
    let starved = cluster
        .starve(slow, Duration::from_millis(50), Duration::from_millis(250))
        .expect("starve");
    let lap = Lap::start("META_101 after the starving began");
    events
        .expect(Resolved, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    let raised = events
        .expect(Raised, "META_101", Some(&name), 2 * EVENT_TIMEOUT)
        .await;
    lap.at("raised");
    assert_eq!(raised.finding, format!("META_101/{GROUP}/{name}"));
    let entry = behind_entry(&cluster, 0, &name).await;
    assert_ne!(entry["offline"], true, "not offline: {entry}");

    let stats = churn.stop().await.expect("churn ran");
    drop(starved);
    let lap = Lap::start("META_101 after the churn and the starving stopped");
    events
        .expect(Resolved, "META_101", Some(&name), EVENT_TIMEOUT)
        .await;
    lap.at(&format!(
        "resolved (lag {} while raised, {lag_while_down} while down; churn {stats:?})",
        entry["lag"]
    ));

    events.drain(Duration::from_secs(3)).await;
    assert_raised_then_resolved(&events, &raised.finding);
    assert_raised_then_resolved(&events, &format!("META_001/{GROUP}/{name}"));
    let stopped = [name.clone()];
    let others = unexpected(&events, |e| {
        // Restarted (SERVER_101) and starved (its JetStream health, SERVER_014) are true too.
        let own = e.server.as_deref() == Some(name.as_str());
        e.finding == raised.finding
            || offline_of(e, &stopped)
            || (own && matches!(e.check.as_str(), "SERVER_101" | "SERVER_014"))
    });
    assert!(others.is_empty(), "raised besides: {others:#?}");
    monitor.stop().await;
}

/// META_103 and META_102: a 4-server group is even (raised after 1 s); one server stopped
/// and peer-removed shrinks it to 3: META_102 raised naming the removed server, META_103
/// resolved; META_102 resolves once the 5 s hold passes without another change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_even_group_then_a_removed_peer_raise_even_size_and_size_changed() {
    let _shared = LOAD.read().await;
    let mut cluster = cluster_led_by_0(ClusterOptions {
        size: 4,
        ..ClusterOptions::default()
    })
    .await;
    let hold = Duration::from_secs(5);
    let config = thresholds_with(|t| {
        t.even_after = Duration::from_secs(1);
        t.size_change_hold = hold;
    });
    let monitor = Monitor::start_via(&cluster, &[0, 1, 2], config).await;
    ready(&monitor, 4).await;
    let mut events = Events::subscribe_via(&cluster, &[0, 1, 2]).await;

    let lap = Lap::start("META_103 after the monitor was ready");
    let even = events.expect(Raised, "META_103", None, EVENT_TIMEOUT).await;
    lap.at("raised");
    assert_eq!(even.finding, format!("META_103/{GROUP}"));

    let (gone, name) = (3, cluster.server_name(3));
    cluster.stop(gone, Stop::Term).await.expect("stop");
    cluster.remove_peer(&name).await.expect("peer removed");
    let lap = Lap::start("META_102/103 after the peer removal");
    let changed = events.expect(Raised, "META_102", None, EVENT_TIMEOUT).await;
    lap.at("META_102 raised");
    assert_eq!(changed.finding, format!("META_102/{GROUP}"));
    assert!(
        text_of(&changed).contains(&name),
        "names the removed server {name}: {}",
        text_of(&changed)
    );
    events
        .expect(Resolved, "META_103", None, EVENT_TIMEOUT)
        .await;
    lap.at("META_103 resolved");
    let changed_at = Instant::now();
    events
        .expect(Resolved, "META_102", None, hold + EVENT_TIMEOUT)
        .await;
    lap.at("META_102 resolved");
    assert!(
        changed_at.elapsed() + Duration::from_secs(1) >= hold,
        "META_102 held for {:?}",
        changed_at.elapsed()
    );

    events.drain(Duration::from_secs(2)).await;
    assert_raised_then_resolved(&events, &even.finding);
    assert_raised_then_resolved(&events, &changed.finding);
    let stopped = [name.clone()];
    let others = unexpected(&events, |e| {
        e.finding == even.finding || e.finding == changed.finding || offline_of(e, &stopped)
    });
    assert!(others.is_empty(), "raised besides: {others:#?}");
    monitor.stop().await;
}

/// META_102 on growth: a follower stopped and started again under a new name on the same
/// store dir joins as a new member while its old name stays counted (a stale peer): the
/// group grows from 3 to 4, raised naming the stale peer; removing the stale peer brings it
/// back to 3 and resolves it. (META_103 is held off: the 4 would be even.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_server_grows_the_group_and_raises_size_changed_until_its_old_peer_is_removed() {
    let _shared = LOAD.read().await;
    let mut cluster = cluster_led_by_0(ClusterOptions::default()).await;
    let config = thresholds_with(|t| {
        t.size_change_hold = Duration::from_secs(600);
        t.even_after = Duration::from_secs(600);
    });
    let monitor = Monitor::start_via(&cluster, &[0, 1], config).await;
    ready(&monitor, 3).await;
    let mut events = Events::subscribe_via(&cluster, &[0, 1]).await;

    let (renamed, old) = (2, cluster.server_name(2));
    let new = "m3";
    cluster.stop(renamed, Stop::Term).await.expect("stop");
    cluster.rename(renamed, new).await.expect("rename");
    let lap = Lap::start("META_102 after the renamed server started");
    let grown = events.expect(Raised, "META_102", None, EVENT_TIMEOUT).await;
    lap.at("raised");
    assert_eq!(grown.finding, format!("META_102/{GROUP}"));
    let text = text_of(&grown);
    assert!(
        text.contains(&old) && text.contains(new),
        "names the stale peer {old} and the new member {new}: {text}"
    );
    assert_eq!(leader_meta(&cluster, 0).await["cluster_size"], 4);

    cluster.remove_peer(&old).await.expect("stale peer removed");
    let lap = Lap::start("META_102 after the stale peer's removal");
    events
        .expect(Resolved, "META_102", None, EVENT_TIMEOUT)
        .await;
    lap.at("resolved");

    events.drain(Duration::from_secs(3)).await;
    assert_raised_then_resolved(&events, &grown.finding);
    let stopped = [old.clone()];
    let others = unexpected(&events, |e| {
        e.finding == grown.finding || offline_of(e, &stopped)
    });
    assert!(others.is_empty(), "raised besides: {others:#?}");
    monitor.stop().await;
}

/// META_104: one of three servers on nats-server 2.14 (the others on the suite's 2.15): raised
/// (severity info) while it runs 2.14, resolved once it has been restarted on 2.15 on the
/// same store dir, a rolling upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_an_older_release_raises_version_mismatch_until_it_is_upgraded() {
    let _shared = LOAD.read().await;
    let old_bin = testbed::nats_server_bin_old("2.14").expect("nats-server 2.14");
    let new_bin = testbed::nats_server_bin().expect("nats-server");
    let mut cluster = cluster_led_by_0(ClusterOptions {
        node_bins: BTreeMap::from([(2, old_bin)]),
        ..ClusterOptions::default()
    })
    .await;
    let monitor = Monitor::start_via(&cluster, &[0, 1], EngineConfig::default()).await;
    ready(&monitor, 3).await;
    let mut events = Events::subscribe_via(&cluster, &[0, 1]).await;

    let versions: Vec<String> = cluster
        .jsz_all()
        .await
        .expect("jsz")
        .iter()
        .map(|v| format!("{} {}", v["server"]["name"], v["server"]["ver"]))
        .collect();
    let lap = Lap::start("META_104 after the monitor was ready");
    let mixed = events.expect(Raised, "META_104", None, EVENT_TIMEOUT).await;
    lap.at(&format!("raised ({versions:?})"));
    assert_eq!(mixed.finding, format!("META_104/{GROUP}"), "{versions:?}");
    assert_eq!(mixed.severity.as_str(), "info", "{:#}", mixed.evidence);
    assert!(
        text_of(&mixed).contains("2.14."),
        "names the older version: {}",
        text_of(&mixed)
    );

    let (upgraded, name) = (2, cluster.server_name(2));
    cluster.stop(upgraded, Stop::Term).await.expect("stop");
    let lap = Lap::start("META_104 after the 2.14 server stopped");
    // Stopped, it is still counted with the version it last reported.
    events.drain(Duration::from_secs(3)).await;
    assert_eq!(
        transitions(&events, &mixed.finding),
        ["raised"],
        "not resolved while the 2.14 server is down: {:#?}",
        events.lines()
    );
    cluster.set_binary(upgraded, new_bin).expect("binary");
    cluster.restart(upgraded).await.expect("restart on 2.15");
    lap.at("restarted on 2.15");
    events
        .expect(Resolved, "META_104", None, EVENT_TIMEOUT)
        .await;
    lap.at("resolved");
    wait_back_in_group(&cluster, 0, &name).await;

    events.drain(Duration::from_secs(3)).await;
    assert_raised_then_resolved(&events, &mixed.finding);
    let stopped = [name.clone()];
    let others = unexpected(&events, |e| {
        e.finding == mixed.finding || offline_of(e, &stopped)
    });
    assert!(others.is_empty(), "raised besides: {others:#?}");
    monitor.stop().await;
}
