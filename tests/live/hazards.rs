//! Live tests of the checks that judge what every JSZ reply already carries beyond the meta
//! group's members: META_107 (a server flushing JetStream writes on nats-server's default
//! 2-minute timer instead of `sync_interval: always`), META_005 (the stream and consumer
//! replicas of the group over a lowered `--meta-assets-max`) and META_108 (servers on
//! nats-server 2.10.25, a release on the known-bad list that PyPI publishes, one of them then
//! upgraded in place to the 2.10 line's latest). Each causes the real condition on real
//! nats-server processes and asserts the finding is raised, and resolved once the condition
//! ends, for the right servers only.
//!
//! META_004 (a meta snapshot slower than 5 s): a member holding 2,000 streams in its meta state
//! is restarted and paused (SIGSTOP) in the middle of the snapshot it takes once recovered.
//!
//! The 2.10.25 server comes from `NATS_SERVER_BIN_2_10_25` or `target/nats-servers/2.10.25/`, the
//! 2.10 line's latest from `NATS_SERVER_BIN_2_10` or `target/nats-servers/2.10/`, where
//! `ensure_nats_servers_old` (scripts/lib/ensure.sh) puts them.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use nats_insights::checks::meta_004::SNAPSHOT_SLOW;
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

/// The stream count and each stream's description length of META_004's meta state: about 8 MB
/// of stream assignments, whose snapshot encoding took 40-150 ms unhindered on a loaded 2-core
/// machine (hundreds of slices of the starving in [`pause_in_recovery_snapshot`]).
const SNAPSHOT_STREAMS: usize = 2_000;
const SNAPSHOT_DESCRIPTION: usize = 4_000;

/// How long META_004's test keeps the restarted member stopped in the middle of its snapshot.
const SNAPSHOT_HOLD: Duration = Duration::from_secs(6);

/// What nats-server logs before it loads its meta log (`enableJetStreamClustering` in
/// server/jetstream_cluster.go), and just before a blocking meta snapshot (`monitorCluster`):
/// the first snapshot after the meta log is recovered is a blocking one.
const META_CONTROLLER_STARTS: &str = "Creating JetStream metadata controller";
const BLOCKING_SNAPSHOT_STARTS: &str = "Metalayer blocking snapshot starting";

/// Follows the log of a starting nats-server (`log` past `offset`). From
/// [`META_CONTROLLER_STARTS`] on, it starves the process (the pid opens each line) of CPU, 5 ms
/// slices between 40 ms pauses, reading the log in each pause; once [`BLOCKING_SNAPSHOT_STARTS`]
/// is there, the pause it is in lasts [`SNAPSHOT_HOLD`] and the process runs freely again. The
/// server ran at most one slice since the line, a fraction of the encoding's CPU, so the hold
/// lands inside the snapshot: a member paused by its host in the middle of its snapshot.
/// Returns the pid.
fn pause_in_recovery_snapshot(log: std::path::PathBuf, offset: u64) -> Result<u32, String> {
    let since = |needle: &str| -> Option<String> {
        let text = std::fs::read(&log).ok()?;
        let text = String::from_utf8_lossy(text.get(offset as usize..)?).into_owned();
        text.lines().find(|l| l.contains(needle)).map(str::to_owned)
    };
    let signal = |pid: u32, name: &str| {
        std::process::Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .map_err(|e| format!("kill -{name} {pid}: {e}"))
            .map(drop)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let line = loop {
        if let Some(line) = since(META_CONTROLLER_STARTS) {
            break line;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no {META_CONTROLLER_STARTS:?} in {}",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let pid = line
        .strip_prefix('[')
        .and_then(|rest| rest.split(']').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .ok_or_else(|| format!("no pid in {line:?}"))?;
    loop {
        signal(pid, "STOP")?;
        let pause = Instant::now();
        while pause.elapsed() < Duration::from_millis(40) {
            if since(BLOCKING_SNAPSHOT_STARTS).is_some() {
                std::thread::sleep(SNAPSHOT_HOLD.saturating_sub(pause.elapsed()));
                signal(pid, "CONT")?;
                return Ok(pid);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        signal(pid, "CONT")?;
        if Instant::now() > deadline {
            return Err(format!(
                "no {BLOCKING_SNAPSHOT_STARTS:?} in {}",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Kills node `i` and restarts it with [`pause_in_recovery_snapshot`] watching, then returns
/// the durations (ns) of the snapshots its JSZ reports in the 2 s after the first one, and its
/// log since the restart.
async fn restarted_and_paused_in_snapshot(cluster: &mut Cluster, i: usize) -> (Vec<u64>, String) {
    let log = cluster.log_path(i);
    let offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    cluster.stop(i, Stop::Kill).await.expect("kill");
    let watched = log.clone();
    let watcher = std::thread::spawn(move || pause_in_recovery_snapshot(watched, offset));
    cluster.restart(i).await.expect("restart");
    let paused = tokio::task::spawn_blocking(move || watcher.join())
        .await
        .expect("join")
        .expect("watcher");
    let pid = paused.expect("paused in its snapshot");
    assert_eq!(cluster.pid(i), Some(pid));
    // The encoding ends once the member runs again; a member catching up may snapshot again
    // at once, hiding the slow figure.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen: Vec<serde_json::Value> = Vec::new();
    let mut first: Option<Instant> = None;
    while first.is_none_or(|t| t.elapsed() < Duration::from_secs(2)) {
        let snap = victim_snapshot(cluster, i).await;
        assert!(
            first.is_some() || Instant::now() < deadline,
            "no snapshot: {snap:#}"
        );
        if snap["last_duration"].is_u64() {
            first.get_or_insert_with(Instant::now);
            if seen.last().map(|s| &s["last_time"]) != Some(&snap["last_time"]) {
                seen.push(snap);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read(&log).unwrap_or_default();
    let since = String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default());
    let took = seen
        .iter()
        .filter_map(|s| s["last_duration"].as_u64())
        .collect();
    (took, since.into_owned())
}

/// Node `i`'s own JSZ `meta_cluster.snapshot`.
async fn victim_snapshot(cluster: &Cluster, i: usize) -> serde_json::Value {
    cluster_jsz(cluster, i).await["data"]["meta_cluster"]["snapshot"].clone()
}

/// META_004 for real, at Insights' 5 s level: a member paused by its host in the middle of a
/// snapshot of a large meta state. nats-server snapshots the meta layer when it has recovered
/// its meta log at start, blocking, after logging that it starts (also on becoming leader, on
/// peer changes and on its minute tick if the log grew: `monitorCluster` in
/// server/jetstream_cluster.go), and JSZ `meta_cluster.snapshot` reports how long the encoding
/// took (`encodeMetaSnapshot`; the field since nats-server 2.11.11, 2.12.2 and 2.14.0). So a
/// member holding 2,000 streams with 4,000-byte descriptions is killed and restarted, starved
/// while it recovers, and stopped (SIGSTOP) for 6 s as soon as its log says the snapshot starts
/// ([`pause_in_recovery_snapshot`]): its snapshot takes over 6 s, at the product's default 5 s
/// level, no threshold lowered. nats-server's own log must agree ("Metalayer blocking snapshot
/// took", written above 2 s). Resolved by its next snapshot, fast: often one it takes within
/// 0.1 s as it catches up with the leader (the monitor's request queued during the pause is
/// answered first, with the slow figure), else the one it takes on becoming leader, which the
/// test then makes it (new meta entries first: a snapshot needs some); either way the figure
/// JSZ keeps at the end is fast. The other members raise nothing. About 20 s, and 10 s more for each restart again (at most two; see the loop).
/// (It replaces a five-minute test that starved a follower across its
/// minute tick and hoped a pause would land in a 10-50 ms encoding: the log says when it runs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_paused_in_its_meta_snapshot_raises_snapshot_slow() {
    let mut cluster = started(ClusterOptions::default()).await;
    cluster.make_leader(0).await.expect("node 0 leads");
    let js = jetstream::new(cluster.app_client(0).await.expect("app client"));
    let create = |names: std::ops::Range<usize>| {
        let js = js.clone();
        let description = "d".repeat(SNAPSHOT_DESCRIPTION);
        async move {
            futures::stream::iter(names)
                .map(|i| {
                    let (js, description) = (js.clone(), description.clone());
                    async move {
                        js.create_stream(jetstream::stream::Config {
                            name: format!("SNAP{i}"),
                            description: Some(description),
                            subjects: vec![format!("snap.{i}")],
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
    assert_eq!(create(0..SNAPSHOT_STREAMS).await, SNAPSHOT_STREAMS);

    let mut events = Events::subscribe_via(&cluster, &[0, 1]).await;
    let monitor = Monitor::start_via(&cluster, &[0, 1], EngineConfig::default()).await;
    ready(&monitor, 3).await;
    let names: Vec<String> = (0..3).map(|i| cluster.server_name(i)).collect();
    let victim = &names[2];

    // The pause must come before the encoding ends, and the slow figure must stay in JSZ until
    // a poll reads it: on a loaded machine the server may outrun one slice, or snapshot again
    // within 100 ms as it catches up (each about one run in seven here). Then it is restarted
    // again.
    let key = format!("META_004/{GROUP}/{victim}");
    let mut attempt = 0;
    let took = loop {
        attempt += 1;
        let (took, log) = restarted_and_paused_in_snapshot(&mut cluster, 2).await;
        let secs: Vec<String> = took
            .iter()
            .map(|ns| format!("{:.2} s", *ns as f64 / 1e9))
            .collect();
        eprintln!("META_004: attempt {attempt}: the paused member's snapshots took {secs:?}");
        let slow = took
            .iter()
            .copied()
            .find(|ns| *ns > SNAPSHOT_SLOW.as_nanos() as u64);
        if let Some(slow) = slow {
            assert!(
                log.contains("Metalayer blocking snapshot took"),
                "nats-server did not log the snapshot"
            );
            let seen = Instant::now();
            while seen.elapsed() < Duration::from_secs(8)
                && !transitions(&events, &key).contains(&"raised")
            {
                events.drain(Duration::from_millis(500)).await;
            }
            if transitions(&events, &key).contains(&"raised") {
                break slow;
            }
        }
        assert!(attempt < 3, "no slow snapshot raised: {took:?}\n{log}");
        // Something new in the meta log, so that the next recovery snapshots again.
        let next = SNAPSHOT_STREAMS + attempt * 5;
        assert_eq!(create(next..next + 5).await, 5);
    };

    let raised = events
        .expect(Raised, "META_004", Some(victim), EVENT_TIMEOUT)
        .await;
    assert_eq!(raised.finding, key);
    assert_eq!(raised.evidence["last_duration_ms"], took / 1_000_000);
    assert_eq!(raised.evidence["level"], "warning", "{:#}", raised.evidence);

    // New meta entries, then leadership: the victim snapshots again at once, unhindered.
    assert_eq!(
        create(SNAPSHOT_STREAMS + 50..SNAPSHOT_STREAMS + 55).await,
        5
    );
    cluster.make_leader(2).await.expect("the victim leads");
    events
        .expect(Resolved, "META_004", Some(victim), EVENT_TIMEOUT)
        .await;
    let fast = victim_snapshot(&cluster, 2).await;
    eprintln!(
        "META_004: unhindered, its next snapshot took {} ms",
        fast["last_duration"].as_u64().unwrap_or(0) / 1_000_000
    );
    assert!(
        fast["last_duration"]
            .as_u64()
            .is_some_and(|ns| ns < SNAPSHOT_SLOW.as_nanos() as u64),
        "{fast:#}"
    );
    events.drain(Duration::from_secs(2)).await;
    assert_eq!(
        transitions(&events, &raised.finding),
        ["raised", "resolved"]
    );
    for name in &names[..2] {
        assert!(
            transitions(&events, &format!("META_004/{GROUP}/{name}")).is_empty(),
            "{:#?}",
            events.lines()
        );
    }
    monitor.stop().await;
}
