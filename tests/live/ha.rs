//! High availability across clocks: two `nats-insights run` processes on one bucket whose wall
//! clocks are 10 s apart (libfaketime, Debian's `faketime`), as on two hosts that disagree about
//! the time. Every transition is published once, under one id, whichever instance sends it and
//! whichever dies.

use crate::support;

use std::time::{Duration, Instant, SystemTime};

use nats_insights::findings::TransitionKind::{Raised, Resolved};
use support::{cluster, follower, others, try_request_json, Events, EVENT_TIMEOUT};
use testbed::{ClockOffset, Cluster, Monitor, MonitorSpec, Stop};

/// The real binary with state in the cluster's JetStream account, its wall clock `offset_ms`
/// from the real one (libfaketime; the monotonic clock, which timers and the coordinator use,
/// is left alone, as on a host whose time of day is wrong).
fn spawn_skewed(cluster: &Cluster, bucket: &str, offset_ms: i64, log: &str) -> Monitor {
    let args = cluster.run_args(Some(bucket));
    let mut spec = MonitorSpec::new(
        env!("CARGO_BIN_EXE_nats-insights"),
        args,
        cluster.dir().join(log),
    )
    .with_clock_offset(ClockOffset(offset_ms));
    spec.env.push((
        "NATS_INSIGHTS_LOG".to_string(),
        "nats_insights=info,nats_insights::engine=debug".to_string(),
    ));
    Monitor::start(spec).expect("binary starts (libfaketime: apt-get install faketime)")
}

/// The heartbeat of each instance: its id and the wall-clock time it says it is.
async fn heartbeats(client: &async_nats::Client, n: usize) -> Vec<(String, SystemTime)> {
    use futures::StreamExt;
    let mut beats = client
        .subscribe("$INSIGHTS.HEARTBEAT")
        .await
        .expect("subscribe");
    let mut seen: Vec<(String, SystemTime)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while seen.len() < n {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, beats.next()).await else {
            panic!("heartbeats of {n} instances expected, got {seen:?}");
        };
        let beat: serde_json::Value = serde_json::from_slice(&msg.payload).expect("json");
        let id = beat["instance"].as_str().unwrap_or_default().to_string();
        let at = beat["timestamp"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .expect("a timestamp");
        if !seen.iter().any(|(i, _)| *i == id) {
            seen.push((id, at));
        }
    }
    seen
}

/// How many answers a request gets within half a second.
async fn replies(client: &async_nats::Client, subject: &str) -> usize {
    use futures::StreamExt;
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish_with_reply(subject.to_string(), inbox, "".into())
        .await
        .expect("publish");
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    let mut n = 0;
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, answers.next()).await {
        n += 1;
    }
    n
}

/// Waits until `n` instances answer STATUS after two polls each.
async fn up(client: &async_nats::Client, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let pings = replies(client, "$SRV.PING.nats-insights").await;
        let polled = try_request_json(client, "$INSIGHTS.API.STATUS", "")
            .await
            .and_then(|s| s["service"]["polls"].as_u64())
            .unwrap_or(0);
        if pings >= n && polled >= 2 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} instances never came up ({pings})"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_ten_seconds_apart_publish_every_transition_once_under_one_id() {
    let mut cluster = cluster(3).await;
    let watcher = cluster.sys_client(0).await.expect("client");
    let mut ahead = spawn_skewed(&cluster, "skew", 10_000, "ahead.log");
    let mut behind = spawn_skewed(&cluster, "skew", 0, "behind.log");
    up(&watcher, 2).await;
    // The clocks really differ: the instances' heartbeats are 10 s apart (give or take the
    // heartbeat interval).
    let beats = heartbeats(&watcher, 2).await;
    let apart = match beats[0].1.duration_since(beats[1].1) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    assert!(
        apart > Duration::from_secs(3),
        "clocks not skewed: {beats:?}"
    );

    // Three faults in turn; the third after the instance that published the first two died.
    let mut published_by: Vec<String> = Vec::new();
    for round in 0..3 {
        let f = follower(&cluster).await;
        let name = cluster.server_name(f);
        let mut events = Events::subscribe_via(&cluster, &others(3, &[f])).await;
        if round == 2 {
            // Kill whichever instance published so far; the other carries on alone.
            let gone = published_by.last().cloned().unwrap_or_default();
            let victim = if is_ahead(&beats, &gone) {
                &mut ahead
            } else {
                &mut behind
            };
            victim.stop(Stop::Kill).await.expect("SIGKILL");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        cluster.stop(f, Stop::Kill).await.expect("kill");
        let raised = events
            .expect(Raised, "META_001", Some(&name), EVENT_TIMEOUT)
            .await;
        published_by.push(raised.instance.clone());
        cluster.restart(f).await.expect("restart");
        events
            .expect(Resolved, "META_001", Some(&name), EVENT_TIMEOUT)
            .await;
        events.drain(Duration::from_secs(4)).await;
        events.assert_raised_then_resolved(&raised.finding);
        assert!(
            events.repeats.is_empty(),
            "round {round}: copies were sent: {:#?}\nahead:\n{}\nbehind:\n{}",
            events.repeats,
            ahead.log_tail(40),
            behind.log_tail(40)
        );
    }
    let _ = ahead.stop(Stop::Term).await;
    let _ = behind.stop(Stop::Term).await;
}

/// True when `instance` is the one whose heartbeat said the later time (the instance ahead).
fn is_ahead(beats: &[(String, SystemTime)], instance: &str) -> bool {
    let latest = beats
        .iter()
        .max_by_key(|(_, at)| *at)
        .map(|(id, _)| id.as_str());
    latest == Some(instance)
}
