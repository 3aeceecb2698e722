//! Live tests of durable state (issue step 3): restart safety, several instances on one bucket,
//! and a monitor that keeps publishing when the store it keeps state in is down.

use crate::support;

use std::time::{Duration, Instant, SystemTime};

use nats_insights::checks::{CheckId, Finding};
use nats_insights::engine::EngineConfig;
use nats_insights::findings::Transition;
use nats_insights::findings::TransitionKind::{Raised, Resolved, Updated};
use nats_insights::record::{kv_key, Mark, Record, Stored};
use nats_insights::status::StoreHealth;
use nats_insights::store::{KvStore, StoreSettings};
use support::{
    cluster, follower, move_leader, others, ready, try_request_json, Events, Monitor, EVENT_TIMEOUT,
};
use testbed::{Cluster, Stop};

async fn healthy(monitor: &Monitor) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let store = monitor.status().await["service"]["store"].clone();
        if store["state"] == "healthy" {
            return;
        }
        assert!(Instant::now() < deadline, "store never healthy: {store:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_monitor_neither_repeats_nor_forgets_and_resolves_what_cleared_while_it_was_down(
) {
    let mut cluster = cluster(3).await;
    let f = follower(&cluster).await;
    let name = cluster.server_name(f);
    let others = others(3, &[f]);
    let mut events = Events::subscribe_via(&cluster, &others).await;
    let config = || {
        let mut c = EngineConfig::default();
        c.thresholds.flap_window = Duration::from_secs(120);
        c
    };

    let first = Monitor::start_with_state(&cluster, config(), "restart").await;
    ready(&first, 3).await;
    assert_eq!(first.status().await["service"]["store"]["state"], "healthy");
    cluster.stop(f, Stop::Kill).await.expect("kill");
    let raised = events
        .expect(Raised, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    move_leader(&mut cluster).await; // leader change 1 of 2
                                     // The bucket is R3 in this cluster: losing a replica may cost it a few seconds of leader
                                     // election (the store degrades, then writes its backlog). Stop only once it is written.
    healthy(&first).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // let the history reach the bucket
    first.stop().await;

    // A new process on the same bucket: the fault is still there, so nothing is raised again.
    let second = Monitor::start_with_state(&cluster, config(), "restart").await;
    ready(&second, 3).await;
    events.drain(Duration::from_secs(4)).await;
    assert_eq!(
        events.history_of(&raised.finding),
        ["raised"],
        "{:#?}",
        events.lines()
    );
    let active = second.status().await["findings"].clone();
    assert!(
        active.as_array().is_some_and(|f| f
            .iter()
            .any(|x| x["finding"] == raised.finding.as_str() && x["revision"] == 1)),
        "the restarted monitor holds the finding: {active:#}"
    );
    // The flapping window survived the restart: the second change raises META_003.
    move_leader(&mut cluster).await;
    let flap = events.expect(Raised, "META_003", None, EVENT_TIMEOUT).await;
    assert_eq!(flap.evidence["count"], 2, "{:#}", flap.evidence);
    second.stop().await;

    // The fault clears while no monitor runs: the next one resolves it on start.
    cluster.restart(f).await.expect("restart");
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let third = Monitor::start_with_state(&cluster, config(), "restart").await;
    let resolved = events
        .expect(Resolved, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    assert_eq!(resolved.revision, raised.revision + 1);
    assert_eq!(resolved.raised_at, raised.raised_at);
    events.drain(Duration::from_secs(2)).await;
    events.assert_raised_then_resolved(&raised.finding);
    third.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_publish_each_transition_once_and_the_survivor_carries_on() {
    let mut cluster = cluster(3).await;
    let f = follower(&cluster).await;
    let name = cluster.server_name(f);
    let others = others(3, &[f]);
    let mut events = Events::subscribe_via(&cluster, &others).await;
    let a = Monitor::start_with_state(&cluster, EngineConfig::default(), "ha").await;
    let b = Monitor::start_with_state(&cluster, EngineConfig::default(), "ha").await;
    ready(&a, 3).await;
    ready(&b, 3).await;

    cluster.stop(f, Stop::Kill).await.expect("kill");
    let raised = events
        .expect(Raised, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    events.drain(Duration::from_secs(4)).await;
    assert_eq!(
        events.history_of(&raised.finding),
        ["raised"],
        "exactly once: {:#?}",
        events.lines()
    );
    // Both instances agree on what is active.
    let keys = |status: serde_json::Value| -> Vec<String> {
        status["findings"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter_map(|x| x["finding"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(keys(a.status().await), keys(b.status().await));
    assert_eq!(keys(a.status().await), vec![raised.finding.clone()]);

    // Kill the instance that published; the other resolves, once.
    let (survivor, gone) = if raised.instance == a.instance {
        (b, a)
    } else {
        (a, b)
    };
    gone.stop().await;
    cluster.restart(f).await.expect("restart");
    let resolved = events
        .expect(Resolved, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    assert_eq!(resolved.instance, survivor.instance);
    events.drain(Duration::from_secs(3)).await;
    events.assert_raised_then_resolved(&raised.finding);
    survivor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_loss_is_published_on_time_even_though_the_state_bucket_is_in_the_lost_cluster() {
    let mut cluster = cluster(3).await;
    let mut events = Events::subscribe_via(&cluster, &[0]).await;
    let monitor = Monitor::start_with_state(&cluster, EngineConfig::default(), "degraded").await;
    ready(&monitor, 3).await;
    assert_eq!(
        monitor.status().await["service"]["store"]["state"],
        "healthy"
    );

    let killed = Instant::now();
    cluster.stop(1, Stop::Kill).await.expect("kill");
    cluster.stop(2, Stop::Kill).await.expect("kill");
    let quorum = events.expect(Raised, "META_006", None, EVENT_TIMEOUT).await;
    let latency = killed.elapsed();
    assert!(
        latency < Duration::from_secs(6),
        "META_006 after {latency:?}: the store held it back"
    );
    // The write that fails comes after the publish and takes its timeout to fail: wait for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let store = monitor.status().await["service"]["store"].clone();
        if store["state"] == "degraded" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store never reported the lost bucket: {store:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    cluster.restart(1).await.expect("restart");
    cluster.restart(2).await.expect("restart");
    events
        .expect(Resolved, "META_006", None, Duration::from_secs(40))
        .await;
    // Once the bucket answers again the backlog is written and the store is healthy.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let store = monitor.status().await["service"]["store"].clone();
        if store["state"] == "healthy" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "store never recovered: {store:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let history = events.history_of(&quorum.finding);
    assert_eq!(
        history.iter().filter(|h| **h == "raised").count(),
        1,
        "{:#?}",
        events.lines()
    );
    monitor.stop().await;
}

/// A child process killed when dropped, so a failing test leaves no binary running.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the real binary with state in the cluster's JetStream account.
fn spawn_binary(cluster: &Cluster, bucket: &str) -> Killed {
    std::process::Command::new(env!("CARGO_BIN_EXE_nats-insights"))
        .args(cluster.run_args(Some(bucket)))
        .env_remove("NATS_URL")
        .stdout(std::process::Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(cluster.dir().join(format!("{bucket}.log")))
                .map(std::process::Stdio::from)
                .unwrap_or_else(|_| std::process::Stdio::null()),
        )
        .spawn()
        .map(Killed)
        .expect("binary starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binary_killed_mid_fault_does_not_raise_again_when_restarted() {
    let mut cluster = cluster(3).await;
    let f = follower(&cluster).await;
    let name = cluster.server_name(f);
    let others = others(3, &[f]);
    let mut events = Events::subscribe_via(&cluster, &others).await;
    let watcher = cluster.sys_client(others[0]).await.expect("client");
    let mut first = spawn_binary(&cluster, "killed");
    let deadline = Instant::now() + Duration::from_secs(30);
    while try_request_json(&watcher, "$INSIGHTS.API.STATUS", "")
        .await
        .is_none_or(|s| s["service"]["polls"].as_u64().unwrap_or(0) < 2)
    {
        assert!(Instant::now() < deadline, "binary did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.stop(f, Stop::Kill).await.expect("kill");
    let raised = events
        .expect(Raised, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    // Wait until the record is stored (the bucket may be re-electing after losing a replica).
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let status = try_request_json(&watcher, "$INSIGHTS.API.STATUS", "")
            .await
            .unwrap_or_default();
        if status["service"]["store"]["state"] == "healthy" {
            break;
        }
        assert!(Instant::now() < deadline, "store never healthy: {status:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    first.0.kill().expect("SIGKILL");
    let _ = first.0.wait();

    let second = spawn_binary(&cluster, "killed");
    events.drain(Duration::from_secs(6)).await;
    assert_eq!(
        events.history_of(&raised.finding),
        ["raised"],
        "{:#?}",
        events.lines()
    );
    cluster.restart(f).await.expect("restart");
    events
        .expect(Resolved, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    events.drain(Duration::from_secs(2)).await;
    events.assert_raised_then_resolved(&raised.finding);
    drop(second);
}

/// Moves the leader of the state bucket's stream to `server` (the APP account holds it).
async fn bucket_leader_to(cluster: &Cluster, bucket: &str, server: &str) {
    let app = cluster.app_client(0).await.expect("app client");
    let js = async_nats::jetstream::new(app.clone());
    let stream = format!("KV_{bucket}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempt = 0;
    loop {
        let leader = js.get_stream(&stream).await.ok().and_then(|s| {
            s.cached_info()
                .cluster
                .as_ref()
                .and_then(|c| c.leader.clone())
        });
        if leader.as_deref() == Some(server) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the leader of {stream} stays on {leader:?}, not {server}"
        );
        // 2.10 knows no preferred placement: every other try is a plain step-down, which lands
        // on a random replica.
        attempt += 1;
        let body = if attempt % 2 == 1 {
            serde_json::json!({ "placement": { "preferred": server } }).to_string()
        } else {
            String::new()
        };
        let _ = app
            .request(
                format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
                body.into(),
            )
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The worst place for a short stall: the primary instance is attached to the server that
/// stops, and that server also leads the state bucket, so nothing can be claimed. The standby
/// must not wait out its full grace for a primary that cannot answer: the finding is raised
/// while the server is still stopped, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_stall_of_the_primary_instances_server_that_also_leads_the_bucket_is_raised_once() {
    let cluster = cluster(3).await;
    let primary = Monitor::start_with_state(&cluster, EngineConfig::default(), "stall").await;
    ready(&primary, 3).await;
    healthy(&primary).await;
    let victim = primary.client.server_info().server_name;
    let v = cluster.index_of(&victim).expect("attached to a node");
    // The standby must watch from elsewhere, or nobody could see the stall in time.
    let mut standby = Monitor::start_with_state(&cluster, EngineConfig::default(), "stall").await;
    while standby.client.server_info().server_name == victim {
        standby.stop().await;
        standby = Monitor::start_with_state(&cluster, EngineConfig::default(), "stall").await;
    }
    ready(&standby, 3).await;
    bucket_leader_to(&cluster, "stall", &victim).await;
    let others: Vec<usize> = (0..3).filter(|i| *i != v).collect();
    let mut events = Events::subscribe_via(&cluster, &others).await;
    // A few ping rounds, so each instance knows the other and which one is older.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let stall = Duration::from_secs(5);
    cluster.pause(v).expect("SIGSTOP");
    // Raised while the server is still stopped (a miss panics here; drop kills it anyway).
    let raised = events
        .expect(Raised, "META_001", Some(&victim), stall)
        .await;
    cluster.resume(v).expect("SIGCONT");
    events
        .expect(Resolved, "META_001", Some(&victim), EVENT_TIMEOUT)
        .await;
    events.drain(Duration::from_secs(4)).await;
    events.assert_raised_then_resolved(&raised.finding);
    primary.stop().await;
    standby.stop().await;
}

/// A monitor stopped right after it raised the crash of the server that led its state bucket
/// (Kubernetes rescheduling it while a node fails) must still store the raise before it exits:
/// the bucket needs a new stream leader first, which raft takes up to its longest election
/// timeout to elect. Without the record the next monitor would publish the raise again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_stopped_right_after_raising_the_crash_of_its_buckets_leader_stores_the_raise() {
    let mut cluster = cluster(3).await;
    let first = Monitor::start_with_state(&cluster, EngineConfig::default(), "stopnow").await;
    ready(&first, 3).await;
    healthy(&first).await;
    let attached = first.client.server_info().server_name;
    let leader = cluster.meta_leader().await.expect("leader");
    let f = (0..3)
        .find(|i| cluster.server_name(*i) != attached && cluster.server_name(*i) != leader)
        .expect("a follower the monitor is not attached to");
    let name = cluster.server_name(f);
    bucket_leader_to(&cluster, "stopnow", &name).await;
    let a = cluster.index_of(&attached).expect("attached to a node");
    let mut events = Events::subscribe_via(&cluster, &[a]).await;

    cluster.stop(f, Stop::Kill).await.expect("kill");
    let raised = events
        .expect(Raised, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    first.stop().await;
    let state = cluster.app_client(a).await.expect("app client");
    let record = stored(&state, "stopnow", &raised.finding).await;
    assert!(
        matches!(&record.record, Record::Active(active) if active.revision == raised.revision),
        "the raise was stored before the monitor exited: {record:#?}"
    );

    let second = Monitor::start_with_state(&cluster, EngineConfig::default(), "stopnow").await;
    ready(&second, 3).await;
    events.drain(Duration::from_secs(8)).await;
    assert_eq!(
        events.history_of(&raised.finding),
        ["raised"],
        "{:#?}",
        events.lines()
    );
    second.stop().await;
}

fn transition(kind: nats_insights::findings::TransitionKind, revision: u64) -> Transition {
    transition_of("n2", Duration::ZERO, kind, revision)
}

/// A META_001 transition for `server`, of the episode raised `late` after a fixed moment.
fn transition_of(
    server: &str,
    late: Duration,
    kind: nats_insights::findings::TransitionKind,
    revision: u64,
) -> Transition {
    // In the past: a record dated more than an hour ahead is refused as impossible.
    let raised_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000) + late;
    Transition {
        kind,
        finding: Finding {
            check: CheckId::META_001,
            key: format!("META_001/default/{server}"),
            cluster: None,
            domain: None,
            server: Some(server.to_string()),
            summary: format!("{server} is offline"),
            evidence: serde_json::json!({}),
            remediation: Vec::new(),
            fingerprint: format!("f{revision}"),
        },
        episode: 1,
        epoch: String::new(),
        revision,
        raised_at,
        at: raised_at + Duration::from_secs(revision),
    }
}

async fn stored(client: &async_nats::Client, bucket: &str, finding: &str) -> Stored {
    let kv = async_nats::jetstream::new(client.clone())
        .get_key_value(bucket)
        .await
        .expect("bucket");
    let entry = kv
        .get(kv_key(finding))
        .await
        .expect("read")
        .expect("present");
    serde_json::from_slice(&entry).expect("a stored record")
}

/// The bucket is restart memory merged by mark: whichever instance writes last, an older state
/// of a key never replaces a newer one, and a new episode replaces the resolved one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_merge_by_episode_and_revision_whoever_writes_last() {
    let cluster = cluster(3).await;
    let settings = |instance: &str| StoreSettings {
        bucket: "insights_merge".to_string(),
        replicas: 3,
        timeout: Duration::from_secs(2),
        instance: instance.to_string(),
    };
    let client = cluster.app_client(0).await.expect("client");
    let mut a = KvStore::open(client.clone(), settings("a"), Some(3))
        .await
        .expect("open a");
    let mut b = KvStore::open(client.clone(), settings("b"), Some(3))
        .await
        .expect("open b");
    let key = transition(Raised, 1).finding.key.clone();
    let there = || stored(&client, "insights_merge", &key);

    a.write(Record::after(&transition(Updated, 2)));
    a.retry().await;
    assert_eq!(there().await.record, Record::after(&transition(Updated, 2)));
    // `b` learned of the raise late: its write leaves the newer update in place.
    b.write(Record::after(&transition(Raised, 1)));
    b.retry().await;
    assert_eq!(there().await.writer, "a");
    // `b` resolves; `a`'s late copy of the update does not reopen the episode.
    b.write(Record::after(&transition(Resolved, 3)));
    b.retry().await;
    a.write(Record::after(&transition(Updated, 2)));
    a.flush().await;
    let resolved = there().await;
    assert_eq!(
        (resolved.writer.as_str(), resolved.record.mark()),
        ("b", Mark::resolved(1))
    );
    assert!(
        matches!(a.health(), StoreHealth::Healthy { .. }),
        "{:?}",
        a.health()
    );
    // The next episode replaces the resolution, and a restart learns both.
    let mut next = transition(Raised, 1);
    next.episode = 2;
    a.write(Record::after(&next));
    a.retry().await;
    assert_eq!(there().await.record.mark(), Mark::active(2, 1));
    let mut fresh = KvStore::open(client.clone(), settings("c"), Some(3))
        .await
        .expect("open c");
    let loaded = fresh.load(SystemTime::now()).await.expect("load");
    assert_eq!(loaded.active[&key].episode, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_finding_stored_by_the_previous_version_is_carried_over_not_raised_again() {
    let mut cluster = cluster(3).await;
    let f = follower(&cluster).await;
    let name = cluster.server_name(f);
    let others = others(3, &[f]);
    // A first run creates the bucket.
    let first = Monitor::start_with_state(&cluster, EngineConfig::default(), "legacy").await;
    ready(&first, 3).await;
    healthy(&first).await;
    first.stop().await;

    // The previous version keyed findings by the leader's cluster name and raised this one while
    // the follower was down; it is still down when the new version starts on the bucket.
    let old_key = format!("META_001/insights-test/{name}");
    let mut record = Record::after(&transition_of(&name, Duration::ZERO, Raised, 1));
    let raised_at = SystemTime::now() - Duration::from_secs(60);
    if let Record::Active(active) = &mut record {
        active.finding.key = old_key.clone();
        active.finding.cluster = Some("insights-test".to_string());
        // What the check itself fingerprints (the member's name): nothing new to say.
        active.finding.fingerprint = name.clone();
        active.raised_at = raised_at;
        active.changed_at = raised_at;
    }
    let kv = async_nats::jetstream::new(cluster.app_client(others[0]).await.expect("client"))
        .get_key_value("legacy")
        .await
        .expect("bucket");
    let stale = record.clone();
    let value = serde_json::to_vec(&Stored {
        writer: "previous-version".to_string(),
        record,
    })
    .expect("encode");
    kv.put(kv_key(&old_key), value.into()).await.expect("write");
    cluster.stop(f, Stop::Kill).await.expect("kill");

    let mut events = Events::subscribe_via(&cluster, &others).await;
    let monitor = Monitor::start_with_state(&cluster, EngineConfig::default(), "legacy").await;
    ready(&monitor, 3).await;
    events.drain(Duration::from_secs(5)).await;
    assert!(events.lines().is_empty(), "{:#?}", events.lines());
    let new_key = format!("META_001/default/{name}");
    let status = monitor.status().await;
    let listed: Vec<&str> = status["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["finding"].as_str())
        .collect();
    assert_eq!(listed, [new_key.as_str()], "{status:#}");
    // (Reads may time out for a moment while the bucket's stream replaces the killed replica.)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let new = kv.get(kv_key(&new_key)).await.ok().flatten();
        let old = kv.get(kv_key(&old_key)).await.ok().flatten();
        if new.is_some() && old.is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new key is written and the old one removed: new {new:?}, old {old:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    cluster.restart(f).await.expect("restart");
    let resolved = events
        .expect(Resolved, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    assert_eq!(resolved.finding, new_key);
    assert_eq!(
        resolved.revision, 2,
        "the resolution follows the carried raise"
    );
    monitor.stop().await;

    // An old key left over (its purge was lost) next to the resolved current key: the current
    // key is newer, so a later start neither raises nor resolves anything again.
    let value = serde_json::to_vec(&Stored {
        writer: "previous-version".to_string(),
        record: stale,
    })
    .expect("encode");
    kv.put(kv_key(&old_key), value.into()).await.expect("write");
    let again = Monitor::start_with_state(&cluster, EngineConfig::default(), "legacy").await;
    ready(&again, 3).await;
    events.drain(Duration::from_secs(4)).await;
    assert_eq!(
        events.history_of(&new_key),
        ["resolved"],
        "{:#?}",
        events.lines()
    );
    let status = again.status().await;
    // Only the note of n1's restart (SERVER_101, info) may be active.
    let active: Vec<&serde_json::Value> = status["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["check"] != "SERVER_101")
        .collect();
    assert!(active.is_empty(), "{status:#}");
    again.stop().await;
}

/// Forged records in the bucket and forged peer events with impossible numbers (2^64-1, a
/// negative, a time in the year 9999): refused and counted, and a real crash of every server
/// they name is raised and resolved as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_records_and_peer_events_are_refused_and_real_crashes_still_raise_and_resolve() {
    let mut cluster = cluster(3).await;
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    let followers: Vec<usize> = (0..3)
        .filter(|i| cluster.server_name(*i) != leader)
        .collect();
    let (a, b) = (followers[0], followers[1]);
    let (name_a, name_b) = (cluster.server_name(a), cluster.server_name(b));
    let key = |name: &str| format!("META_001/default/{name}");

    // The bucket, as a damaged or tampered one holds it, before any monitor opens it.
    let app = cluster.app_client(0).await.expect("app connects");
    let js = async_nats::jetstream::new(app);
    let kv = loop {
        match js
            .create_key_value(async_nats::jetstream::kv::Config {
                bucket: "forged".into(),
                history: 5,
                num_replicas: 3,
                ..Default::default()
            })
            .await
        {
            Ok(kv) => break kv,
            Err(e) => {
                eprintln!("bucket not created yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let finding = |name: &str| {
        serde_json::json!({"check": "META_001", "key": key(name), "server": name,
            "summary": "forged", "evidence": {}, "remediation": [], "fingerprint": name})
    };
    let forged_records = [
        (
            key(&name_a),
            serde_json::json!({"writer": "forger", "state": "resolved", "finding": finding(&name_a),
            "episode": u64::MAX, "revision": u64::MAX,
            "raised_at": {"secs_since_epoch": 1_800_000_000u64, "nanos_since_epoch": 0},
            "resolved_at": {"secs_since_epoch": 1_800_000_000u64, "nanos_since_epoch": 0}}),
        ),
        (
            key(&name_b),
            serde_json::json!({"writer": "forger", "state": "active", "finding": finding(&name_b),
            "episode": 1, "revision": u64::MAX,
            "raised_at": {"secs_since_epoch": 253_402_300_799u64, "nanos_since_epoch": 0},
            "changed_at": {"secs_since_epoch": 253_402_300_799u64, "nanos_since_epoch": 0}}),
        ),
        (
            "META_006/default".to_string(),
            serde_json::json!({"writer": "forger", "state": "resolved",
            "finding": {"check": "META_006", "key": "META_006/default", "summary": "forged", "evidence": {}, "remediation": [], "fingerprint": ""},
            "episode": -1, "revision": 2,
            "raised_at": {"secs_since_epoch": 1_800_000_000u64, "nanos_since_epoch": 0},
            "resolved_at": {"secs_since_epoch": 1_800_000_000u64, "nanos_since_epoch": 0}}),
        ),
    ];
    for (finding, record) in &forged_records {
        // A stream created a moment ago may still answer "stream not found" on its first
        // writes while its R3 group elects a leader: retry, as a real writer would.
        let body: Vec<u8> = serde_json::to_vec(record).expect("json");
        let mut tries = 0;
        while let Err(e) = kv.put(kv_key(finding), body.clone().into()).await {
            tries += 1;
            assert!(tries < 20, "forged record written: {e}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    let monitor = Monitor::start_with_state(&cluster, EngineConfig::default(), "forged").await;
    ready(&monitor, 3).await;
    let refused_at_load = monitor.status().await["service"]["malformed"]
        .as_u64()
        .unwrap_or_default();
    assert!(
        refused_at_load >= 3,
        "the forged records are counted: {refused_at_load}"
    );

    // Forged peer events: the end of an episode that would wrap the next raise of a, and a
    // revision that would pin b's finding at its maximum.
    let sys = cluster.sys_client(0).await.expect("sys connects");
    let event = |name: &str, kind: &str, episode: u64, revision: u64, at: &str| {
        serde_json::json!({"type": "io.nats.insights.v1.finding", "id": "forged", "finding": key(name),
            "event": kind, "episode": episode, "revision": revision, "check": "META_001",
            "name": "Meta Replica Offline", "severity": "critical", "category": "meta",
            "server": name, "summary": "forged", "evidence": {}, "remediation": [],
            "raised_at": at, "timestamp": at, "instance": "forger"})
    };
    let forged_events = [
        (
            "RESOLVED",
            event(
                &name_a,
                "resolved",
                u64::MAX,
                u64::MAX,
                "2026-12-01T00:00:00Z",
            ),
        ),
        (
            "RAISED",
            event(&name_b, "raised", 1, u64::MAX - 1, "2026-12-01T00:00:00Z"),
        ),
        (
            "RAISED",
            event(&name_b, "raised", 2, 1, "9999-12-31T23:59:59Z"),
        ),
    ];
    for (kind, body) in &forged_events {
        sys.publish(
            format!("$INSIGHTS.FINDING.META_001.{kind}"),
            serde_json::to_vec(body).expect("json").into(),
        )
        .await
        .expect("forged event published");
    }
    sys.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let malformed = monitor.status().await["service"]["malformed"]
        .as_u64()
        .unwrap_or_default();
    assert!(
        malformed >= refused_at_load + 3,
        "the forged events are counted: {malformed}"
    );

    // Real crashes of both named servers, one at a time.
    let mut events = Events::subscribe(&cluster).await;
    for (i, name) in [(a, &name_a), (b, &name_b)] {
        cluster.stop(i, Stop::Kill).await.expect("kill");
        let raised = events
            .expect(Raised, "META_001", Some(name), EVENT_TIMEOUT)
            .await;
        assert!(raised.episode < 1 << 41, "{raised:?}");
        cluster.restart(i).await.expect("restart");
        let resolved = events
            .expect(Resolved, "META_001", Some(name), EVENT_TIMEOUT)
            .await;
        assert_eq!(
            (resolved.episode, resolved.revision),
            (raised.episode, raised.revision + 1)
        );
    }
    monitor.stop().await;
}

/// Twenty instances that do not exist beat on the HA subject claiming a day of running time, and
/// a second deployment (its own bucket) watches the same system: neither delays nor silences a
/// crash. Each deployment raises it at once, under its own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_peers_and_another_deployment_neither_delay_nor_silence_a_crash() {
    let mut cluster = cluster(3).await;
    let f = follower(&cluster).await;
    let name = cluster.server_name(f);
    let mut events = Events::subscribe_via(&cluster, &others(3, &[f])).await;
    let config = |deployment: &str| EngineConfig {
        deployment: deployment.to_string(),
        ..EngineConfig::default()
    };
    let a = Monitor::start_with_state(&cluster, config("alpha"), "alpha").await;
    let b = Monitor::start_with_state(&cluster, config("beta"), "beta").await;
    ready(&a, 3).await;
    ready(&b, 3).await;
    // The fakes appear while the instances run, past their start-up wait: one heard during that
    // wait may really have run for a day (only permissions keep such a one out).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let sys = cluster.sys_client(0).await.expect("sys connects");
    let forger = tokio::spawn(async move {
        loop {
            for i in 0..20 {
                for deployment in ["alpha", ""] {
                    let beat = serde_json::json!({"instance": format!("fake{i:02}{deployment}"),
                        "uptime_ms": 86_400_000u64, "deployment": deployment});
                    let _ = sys
                        .publish("$INSIGHTS.HA.BEAT", beat.to_string().into())
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;

    let killed = Instant::now();
    cluster.stop(f, Stop::Kill).await.expect("kill");
    let first = events
        .expect(Raised, "META_001", Some(&name), Duration::from_secs(10))
        .await;
    let second = events
        .expect(Raised, "META_001", Some(&name), Duration::from_secs(10))
        .await;
    let took = killed.elapsed();
    forger.abort();
    let mut deployments = [first.deployment.as_str(), second.deployment.as_str()];
    deployments.sort();
    assert_eq!(
        deployments,
        ["alpha", "beta"],
        "each deployment raised it once"
    );
    assert_ne!(first.id, second.id);
    assert!(took < Duration::from_secs(10), "raised after {took:?}");
    a.stop().await;
    b.stop().await;
}
