//! The meta checks against the nats-server that `NATS_SERVER_BIN` names, so that each release
//! still run in the field is tried: `scripts/test` runs this file once per older minor (2.10,
//! 2.11, 2.12, 2.14; `ensure_nats_servers_old` in scripts/lib/ensure.sh fetches them) after the
//! whole suite has run on 2.15. One 3-server cluster, the monitor keeping state in a KV bucket
//! as in production: two step-downs (META_003), a crashed follower across a restart of the
//! monitor (META_001, not raised twice: the state was loaded), two of three crashed (META_006),
//! and nothing else raised.

use crate::support;

use std::time::{Duration, Instant};

use nats_insights::engine::EngineConfig;
use nats_insights::findings::TransitionKind;
use support::{Events, Monitor, EVENT_TIMEOUT};
use testbed::{nats_server_bin, Cluster, Stop};

const BUCKET: &str = "insights_versions";

/// `nats-server --version` of the binary the testbed runs, with its path.
fn server_version() -> String {
    let bin = nats_server_bin().expect("nats-server");
    let out = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .expect("nats-server --version");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    format!("{text} ({})", bin.display())
}

async fn wait_for_new_leader(cluster: &Cluster, before: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(leader) = cluster.wait_for_leader(Duration::from_secs(2)).await {
            if leader != before {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no new leader after {before} stepped down");
}

/// A 3-server cluster ready for JetStream. A fresh 2.10 cluster sometimes forms a meta group of
/// two that the third server never joins (see `support::readiness`): such a cluster is
/// replaced, at most twice.
async fn fresh_cluster() -> Cluster {
    let mut attempt = 1;
    loop {
        let cluster = support::cluster(3).await;
        match support::readiness::wait_for_jetstream(&cluster, Duration::from_secs(10)).await {
            Ok(()) => return cluster,
            Err(e) if attempt < 3 => {
                eprintln!("versions: fresh cluster not usable, replaced: {e}");
                attempt += 1;
            }
            Err(e) => panic!("three fresh clusters not usable: {e}"),
        }
    }
}

async fn start_monitor(cluster: &Cluster) -> (Monitor, usize) {
    let monitor = Monitor::start_with_state(cluster, EngineConfig::default(), BUCKET).await;
    support::ready(&monitor, 3).await;
    let attached = cluster
        .index_of(&monitor.client.server_info().server_name)
        .expect("attached to a node");
    (monitor, attached)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_checks_on_this_server_version() {
    let version = server_version();
    eprintln!("versions: {version}");
    let started = Instant::now();
    let lap = |what: &str| eprintln!("versions: {what} at {:.1?}", started.elapsed());
    let mut cluster = fresh_cluster().await;
    let (monitor, attached) = start_monitor(&cluster).await;
    // Pinned to the monitor's server, which no step below stops: no event is missed in a
    // reconnect.
    let mut events = Events::subscribe_via(&cluster, &[attached]).await;
    lap("ready");

    // META_003: two step-downs (LEADER_ELECTED advisories and polls).
    for _ in 0..2 {
        let before = cluster
            .wait_for_leader(Duration::from_secs(15))
            .await
            .expect("leader");
        cluster.step_down().await.expect("step down");
        wait_for_new_leader(&cluster, &before).await;
    }
    events
        .expect(TransitionKind::Raised, "META_003", None, EVENT_TIMEOUT)
        .await;
    lap("META_003 raised");

    // META_001: a follower crashes (nothing announces it; the leader stops hearing it).
    let leader = cluster
        .wait_for_leader(Duration::from_secs(15))
        .await
        .expect("leader");
    let f = (0..3)
        .find(|i| *i != attached && cluster.server_name(*i) != leader)
        .expect("a follower the monitor is not attached to");
    let name = cluster.server_name(f);
    cluster.stop(f, Stop::Kill).await.expect("kill");
    events
        .expect(
            TransitionKind::Raised,
            "META_001",
            Some(&name),
            EVENT_TIMEOUT,
        )
        .await;
    lap("META_001 raised");

    // A restarted monitor loads the active finding from its bucket and does not raise it again.
    // Without the state it would claim the finding, find the old instance's record and, that
    // writer being gone, publish a copy of the raise 5 s later: wait past that.
    monitor.stop().await;
    let (monitor, attached) = start_monitor(&cluster).await;
    let mut events_now = Events::subscribe_via(&cluster, &[attached]).await;
    events_now.drain(Duration::from_secs(8)).await;
    let raised_again = events_now
        .seen
        .iter()
        .any(|e| e.event == TransitionKind::Raised && e.server.as_deref() == Some(&name));
    // (On 2.10, which has no batched read, the state is read by walking the bucket.)
    assert!(
        !raised_again,
        "{version}: the restarted monitor raised META_001 again (state not loaded): {:#?}",
        events_now.lines()
    );
    let mut seen = std::mem::take(&mut events.seen);
    drop(events);
    lap("monitor restarted");
    cluster.restart(f).await.expect("restart");
    events_now
        .expect(
            TransitionKind::Resolved,
            "META_001",
            Some(&name),
            EVENT_TIMEOUT,
        )
        .await;
    lap("META_001 resolved");

    // META_006: two of three crash, the monitor's server stays.
    let crashed: Vec<usize> = (0..3).filter(|i| *i != attached).collect();
    for i in &crashed {
        cluster.stop(*i, Stop::Kill).await.expect("kill");
    }
    events_now
        .expect(TransitionKind::Raised, "META_006", None, EVENT_TIMEOUT)
        .await;
    lap("META_006 raised");
    for i in &crashed {
        cluster.restart(*i).await.expect("restart");
    }
    events_now
        .expect(TransitionKind::Resolved, "META_006", None, EVENT_TIMEOUT)
        .await;
    lap("META_006 resolved");
    monitor.stop().await;

    // Nothing else was raised: no disagreement from the elections, no healthy server offline.
    seen.append(&mut events_now.seen);
    let crashed_names: Vec<String> = crashed.iter().map(|i| cluster.server_name(*i)).collect();
    let unexpected: Vec<String> = seen
        .iter()
        .filter(|e| e.event == TransitionKind::Raised)
        .filter(|e| match e.check.as_str() {
            "META_003" | "META_006" => false,
            // The follower and the two crashed servers came back as new processes; the
            // survivor had no meta leader while two were down (its JetStream health).
            "SERVER_101" | "SERVER_014" => false,
            "META_001" => e
                .server
                .as_ref()
                .is_none_or(|s| *s != name && !crashed_names.contains(s)),
            _ => true,
        })
        .map(nats_insights::watch::format_line)
        .collect();
    assert!(
        unexpected.is_empty(),
        "{version}: unexpected findings: {unexpected:#?}"
    );
}
