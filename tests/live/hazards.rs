//! Live tests of the checks that judge what every JSZ reply already carries beyond the meta
//! group's members: META_107 (a server flushing JetStream writes on nats-server's default
//! 2-minute timer instead of `sync_interval: always`), META_005 (the stream and consumer
//! replicas of the group over a lowered `--meta-assets-max`) and META_108 (servers on
//! nats-server 2.10.25, a release on the known-bad list that PyPI publishes, one of them then
//! upgraded in place to the 2.10 line's latest). Each causes the real condition on real
//! nats-server processes and asserts the finding is raised, and resolved once the condition
//! ends, for the right servers only.
//!
//! META_004 (a meta snapshot slower than 5 s): a follower holding 2,000 streams in its meta state
//! and starved of CPU across its minute snapshot tick is paused in the middle of the snapshot.
//!
//! The 2.10.25 server comes from `NATS_SERVER_BIN_2_10_25` or `target/nats-servers/2.10.25/`, the
//! 2.10 line's latest from `NATS_SERVER_BIN_2_10` or `target/nats-servers/2.10/`, where
//! `ensure_nats_servers_old` (scripts/lib/ensure.sh) puts them.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use nats_insights::checks::meta_108::known_bad;
use nats_insights::engine::EngineConfig;
use nats_insights::findings::TransitionKind::{self, Raised, Resolved};
use support::{ready, Events, Monitor, EVENT_TIMEOUT};
use testbed::{Cluster, ClusterOptions, Stop};

/// The default domain's group label in finding keys.
const GROUP: &str = "default";

/// A started cluster with a meta leader.
async fn started(options: ClusterOptions) -> Cluster {
    let cluster = Cluster::start(options).await.expect("cluster starts");
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("meta leader elected");
    cluster
}

/// Raises and resolves of `finding` (updates left out).
fn transitions(events: &Events, finding: &str) -> Vec<&'static str> {
    events
        .history_of(finding)
        .into_iter()
        .filter(|kind| *kind != TransitionKind::Updated.as_str())
        .collect()
}

/// META_107 for the two servers left at the default interval, none for the one on `sync_interval:
/// always`, with the product's default limit (1m); resolved for a server restarted with `always`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_servers_left_at_the_default_sync_interval_raise_lazy_fsync() {
    let mut cluster = started(ClusterOptions {
        jetstream_extra: BTreeMap::from([(2, "sync_interval: always".to_string())]),
        ..ClusterOptions::default()
    })
    .await;
    let synced = cluster_jsz(&cluster, 2).await["data"]["config"].clone();
    assert_eq!(synced["sync_always"], true, "{synced:#}");
    let lazy = cluster_jsz(&cluster, 0).await["data"]["config"].clone();
    assert_eq!(lazy["sync_interval"], 120_000_000_000u64, "{lazy:#}");
    assert!(lazy.get("sync_always").is_none(), "{lazy:#}");

    let mut events = Events::subscribe_via(&cluster, &[0, 1]).await;
    let monitor = Monitor::start_via_exact(&cluster, &[0, 1], EngineConfig::default()).await;
    ready(&monitor, 3).await;
    let (n1, n2, n3) = (
        cluster.server_name(0),
        cluster.server_name(1),
        cluster.server_name(2),
    );
    for name in [&n1, &n2] {
        let raised = events
            .expect(Raised, "META_107", Some(name), EVENT_TIMEOUT)
            .await;
        assert_eq!(raised.finding, format!("META_107/{GROUP}/{name}"));
        assert_eq!(raised.severity.as_str(), "info");
        assert!(
            raised.summary.contains("every 2m") && raised.summary.contains("sync_interval: always"),
            "{}",
            raised.summary
        );
    }
    events.drain(Duration::from_secs(3)).await;
    let key = |name: &str| format!("META_107/{GROUP}/{name}");
    assert!(
        transitions(&events, &key(&n3)).is_empty(),
        "nothing for {n3} on sync_interval: always: {:#?}",
        events.lines()
    );

    // n1 restarted with `sync_interval: always`: its finding resolves, n2's stays.
    cluster.set_jetstream_extra(0, "sync_interval: always");
    cluster.stop(0, Stop::Term).await.expect("stop");
    cluster.restart(0).await.expect("restart");
    events
        .expect(Resolved, "META_107", Some(&n1), 2 * EVENT_TIMEOUT)
        .await;
    events.drain(Duration::from_secs(3)).await;
    assert_eq!(transitions(&events, &key(&n1)), ["raised", "resolved"]);
    assert_eq!(transitions(&events, &key(&n2)), ["raised"]);
    assert!(transitions(&events, &key(&n3)).is_empty());
    monitor.stop().await;
}

/// One server's direct JSZ view.
async fn cluster_jsz(cluster: &Cluster, i: usize) -> serde_json::Value {
    cluster.jsz_direct(i).await.expect("jsz")
}

/// META_005 with `--meta-assets-max` 8: three R3 streams (9 stream replicas) raise it, deleting
/// one (6) resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_replicas_over_a_lowered_limit_raise_meta_state_growth() {
    let cluster = started(ClusterOptions::default()).await;
    let mut events = Events::subscribe_via(&cluster, &[0, 1, 2]).await;
    let mut config = EngineConfig::default();
    config.thresholds.meta_assets_max = 8;
    let monitor = Monitor::start_via(&cluster, &[0, 1, 2], config).await;
    ready(&monitor, 3).await;

    let js = jetstream::new(cluster.app_client(0).await.expect("app client"));
    for i in 1..=3 {
        js.create_stream(jetstream::stream::Config {
            name: format!("HAZARD{i}"),
            subjects: vec![format!("hazard.{i}")],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .expect("stream created");
    }
    let raised = events.expect(Raised, "META_005", None, EVENT_TIMEOUT).await;
    assert_eq!(raised.finding, format!("META_005/{GROUP}"));
    assert_eq!(
        raised.evidence["stream_replicas"], 9,
        "{:#}",
        raised.evidence
    );
    assert_eq!(raised.evidence["limit"], 8);
    for name in (0..3).map(|i| cluster.server_name(i)) {
        assert_eq!(
            raised.evidence["by_server"][&name]["streams"], 3,
            "{:#}",
            raised.evidence
        );
    }

    js.delete_stream("HAZARD3").await.expect("stream deleted");
    events
        .expect(Resolved, "META_005", None, EVENT_TIMEOUT)
        .await;
    events.drain(Duration::from_secs(3)).await;
    assert_eq!(
        transitions(&events, &raised.finding),
        ["raised", "resolved"],
        "{:#?}",
        events.lines()
    );
    monitor.stop().await;
}

/// META_108 for every server of a cluster on nats-server 2.10.25 (consumers could skip
/// messages; fixed in 2.10.26), resolved for the one upgraded in place to the 2.10 line's
/// latest, kept for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_on_a_known_bad_release_raise_until_upgraded() {
    let bad = testbed::nats_server_bin_old("2.10.25").expect("nats-server 2.10.25");
    let fixed = testbed::nats_server_bin_old("2.10").expect("nats-server 2.10");
    let mut cluster = started(ClusterOptions {
        node_bins: (0..3).map(|i| (i, bad.clone())).collect(),
        ..ClusterOptions::default()
    })
    .await;
    let mut events = Events::subscribe_via(&cluster, &[0, 1]).await;
    let monitor = Monitor::start_via(&cluster, &[0, 1], EngineConfig::default()).await;
    ready(&monitor, 3).await;
    let names: Vec<String> = (0..3).map(|i| cluster.server_name(i)).collect();
    for name in &names {
        let raised = events
            .expect(Raised, "META_108", Some(name), EVENT_TIMEOUT)
            .await;
        assert_eq!(raised.severity.as_str(), "warning");
        assert!(
            raised.summary.contains("2.10.25") && raised.summary.contains("2.10.26"),
            "{}",
            raised.summary
        );
    }

    // A follower is upgraded (2.10 has no preferred step-down to fix the leader's place).
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let upgraded = (0..3)
        .rev()
        .find(|i| names[*i] != leader)
        .expect("a follower");
    cluster.stop(upgraded, Stop::Term).await.expect("stop");
    cluster.set_binary(upgraded, fixed).expect("binary");
    cluster
        .restart(upgraded)
        .await
        .expect("restart on the fixed release");
    let version = cluster_jsz(&cluster, upgraded).await["server"]["ver"].clone();
    assert!(
        version.as_str().is_some_and(|v| known_bad(v).is_none()),
        "upgraded to {version}"
    );
    events
        .expect(
            Resolved,
            "META_108",
            Some(&names[upgraded]),
            2 * EVENT_TIMEOUT,
        )
        .await;
    events.drain(Duration::from_secs(3)).await;
    let key = |name: &str| format!("META_108/{GROUP}/{name}");
    assert_eq!(
        transitions(&events, &key(&names[upgraded])),
        ["raised", "resolved"]
    );
    for name in names.iter().filter(|n| **n != names[upgraded]) {
        assert_eq!(
            transitions(&events, &key(name)),
            ["raised"],
            "{:#?}",
            events.lines()
        );
    }
    monitor.stop().await;
}

/// META_004 for real. With 2,000 streams a meta snapshot's encoding takes 10-50 ms of CPU
/// (measured here); nats-server takes one every minute when the meta log has new entries. A
/// follower starved of CPU (10 ms slices between 6 s pauses) from just before its next minute
/// tick for 100 s is paused in the middle of that encoding and reports the snapshot took over
/// 6 s once it runs again; a later snapshot, fast, resolves it. About five minutes, and the
/// pause must land inside an encoding of 10-50 ms: beside the other live tests of the suite it
/// missed once in two runs, so it is run by hand, alone
/// (`cargo test --test live hazards::a_follower_paused -- --ignored`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about five minutes, timing-sensitive: run alone with --ignored"]
async fn a_follower_paused_during_its_meta_snapshot_raises_snapshot_slow() {
    let cluster = started(ClusterOptions::default()).await;
    cluster.make_leader(0).await.expect("node 0 leads");
    let js = jetstream::new(cluster.app_client(0).await.expect("app client"));
    let create = |names: std::ops::Range<usize>, prefix: &'static str| {
        let js = js.clone();
        async move {
            futures::stream::iter(names)
                .map(|i| {
                    let js = js.clone();
                    async move {
                        js.create_stream(jetstream::stream::Config {
                            name: format!("{prefix}{i}"),
                            subjects: vec![format!("{prefix}.{i}").to_lowercase()],
                            storage: jetstream::stream::StorageType::Memory,
                            num_replicas: 1,
                            ..Default::default()
                        })
                        .await
                        .is_ok()
                    }
                })
                .buffer_unordered(16)
                .filter(|ok| futures::future::ready(*ok))
                .count()
                .await
        }
    };
    assert_eq!(create(0..2_000, "SNAP").await, 2_000);

    let mut events = Events::subscribe_via(&cluster, &[0, 1]).await;
    let monitor = Monitor::start_via(&cluster, &[0, 1], EngineConfig::default()).await;
    ready(&monitor, 3).await;
    let victim = cluster.server_name(2);
    let snapshot_of = |view: serde_json::Value| view["data"]["meta_cluster"]["snapshot"].clone();
    let taken = |snap: &serde_json::Value| snap["last_duration"].as_u64().is_some();

    // Its first snapshot with the streams: the minute ticks are counted from it.
    let deadline = Instant::now() + Duration::from_secs(150);
    let first = loop {
        let snap = snapshot_of(cluster_jsz(&cluster, 2).await);
        if taken(&snap) {
            break snap;
        }
        assert!(Instant::now() < deadline, "no snapshot: {snap:#}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let tick = Instant::now();
    // New meta entries, so that the next tick snapshots again.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(create(0..20, "MORE").await, 20);
    tokio::time::sleep_until((tick + Duration::from_secs(48)).into()).await;
    let starved = cluster
        .starve(2, Duration::from_millis(10), Duration::from_secs(6))
        .expect("starve");
    // Long enough for its slices to add up to loading, decoding and encoding the snapshot.
    tokio::time::sleep_until((tick + Duration::from_secs(150)).into()).await;
    drop(starved);
    let deadline = Instant::now() + Duration::from_secs(30);
    let slow = loop {
        let snap = snapshot_of(cluster_jsz(&cluster, 2).await);
        if snap["last_time"] != first["last_time"] && taken(&snap) {
            break snap;
        }
        assert!(
            Instant::now() < deadline,
            "no second snapshot: {first:#} {snap:#}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let took = slow["last_duration"].as_u64().unwrap_or(0);
    assert!(
        took > 5_000_000_000,
        "not slow: first {first:#}, then {slow:#}"
    );

    let raised = events
        .expect(Raised, "META_004", Some(&victim), EVENT_TIMEOUT)
        .await;
    assert_eq!(raised.finding, format!("META_004/{GROUP}/{victim}"));
    assert_eq!(raised.evidence["last_duration_ms"], took / 1_000_000);
    // The next snapshot, unhindered, is fast.
    assert_eq!(create(0..20, "AGAIN").await, 20);
    events
        .expect(
            Resolved,
            "META_004",
            Some(&victim),
            Duration::from_secs(100),
        )
        .await;
    events.drain(Duration::from_secs(2)).await;
    assert_eq!(
        transitions(&events, &raised.finding),
        ["raised", "resolved"]
    );
    monitor.stop().await;
}
