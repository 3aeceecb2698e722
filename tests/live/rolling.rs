//! Preflight live: the `preflight` and `wait healthy` commands (the product binary, with its exit
//! codes) against a monitor watching a real 3-server cluster: a restart refused while another
//! server is down, an ungated roll that loses meta quorum beside the same roll gated by
//! `deploy/rolling-restart.sh` that never does (stepping the leader down first, on preflight's
//! `leader` field), a rename one at a time that ends without a stale
//! peer while a bulk rename is refused, and removal only of a server that is down.

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use nats_insights::findings::TransitionKind::Raised;
use support::{cluster, ready, request_json, Events, Monitor};
use testbed::{Cluster, Stop, SYS_PASSWORD, SYS_USER};

/// Runs the product binary with the cluster's system-account connection flags; returns the exit
/// code and what it printed (stdout, then stderr).
async fn cli(cluster: &Cluster, args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nats-insights"))
        .args(args)
        .args([
            "--server",
            &cluster.client_urls().join(","),
            "--user",
            SYS_USER,
            "--password",
            SYS_PASSWORD,
        ])
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("nats-insights runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Raise events of `check` (META_006, META_106) the monitor holds in HISTORY.
async fn raises(monitor: &Monitor, check: &str) -> usize {
    support::raised_in_history(monitor, check).await.len()
}

async fn wait_healthy(cluster: &Cluster, server: Option<&str>) {
    let mut args = vec!["wait", "healthy", "--timeout", "60s"];
    if let Some(server) = server {
        args.extend(["--server-name", server]);
    }
    let (code, text) = cli(cluster, &args).await;
    assert_eq!(code, 0, "wait healthy: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_of_three_down_a_restart_is_refused_until_it_is_back() {
    let mut cluster = cluster(3).await;
    let monitor = Monitor::start(&cluster).await;
    ready(&monitor, 3).await;
    let victim = support::follower(&cluster).await;
    let other = (0..3)
        .find(|i| *i != victim)
        .map(|i| cluster.server_name(i))
        .expect("another");
    let (code, text) = cli(&cluster, &["preflight", "restart", &other]).await;
    assert_eq!(code, 0, "a healthy group restarts one at a time: {text}");

    cluster.stop(victim, Stop::Kill).await.expect("kill");
    let down = cluster.server_name(victim);
    // Until the monitor sees it (about a second), then refused, naming the down server.
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (code, text) = cli(&cluster, &["preflight", "restart", &other]).await;
        if code == 1 {
            break text;
        }
        assert!(Instant::now() < deadline, "never refused: {code} {text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(text.contains("NOT SAFE") && text.contains(&down), "{text}");

    cluster.restart(victim).await.expect("restart");
    let (code, text) = cli(&cluster, &["preflight", "restart", &other, "--wait", "60s"]).await;
    assert_eq!(code, 0, "allowed once it is back: {text}");
    let (code, text) = cli(&cluster, &["preflight", "restart", "x9"]).await;
    assert_eq!(code, 3, "a stranger is unknown: {text}");
    monitor.stop().await;
}

/// Restarts each server the script asks for: `--restart` touches `<dir>/<name>` and waits for
/// the test to remove it once the server runs again; `--step-down` does the same with
/// `<dir>/step-down`, which steps the meta leader down.
async fn serve_restarts(cluster: &mut Cluster, dir: &Path, script: &mut tokio::process::Child) {
    loop {
        if let Ok(Some(status)) = script.try_wait() {
            let said = std::fs::read_to_string(dir.join("script.log")).unwrap_or_default();
            assert!(
                status.success(),
                "rolling-restart.sh failed: {status}\n{said}"
            );
            return;
        }
        let step_down = dir.join("step-down");
        if step_down.exists() {
            cluster.step_down().await.expect("step down");
            std::fs::remove_file(&step_down).expect("done");
        }
        for i in 0..cluster.size() {
            let request = dir.join(cluster.server_name(i));
            if request.exists() {
                cluster.stop(i, Stop::Term).await.expect("stop");
                cluster.restart(i).await.expect("start");
                std::fs::remove_file(&request).expect("done");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ungated_roll_loses_quorum_and_the_same_roll_gated_by_preflight_does_not() {
    let mut cluster = cluster(3).await;
    let monitor = Monitor::start(&cluster).await;
    ready(&monitor, 3).await;

    // Ungated, as a careless script does: the next server goes down before the previous one is
    // back (here: before its process is even started again). The monitor must see the loss
    // before the roll goes on, or the test could not fail.
    // (Watched through the server that stays up meanwhile.)
    let mut events = Events::subscribe_via(&cluster, &[2]).await;
    cluster.stop(0, Stop::Term).await.expect("stop");
    cluster.stop(1, Stop::Term).await.expect("stop");
    events
        .expect(Raised, "META_006", None, Duration::from_secs(30))
        .await;
    cluster.restart(0).await.expect("start");
    cluster.stop(2, Stop::Term).await.expect("stop");
    cluster.restart(1).await.expect("start");
    cluster.restart(2).await.expect("start");
    wait_healthy(&cluster, None).await;
    let before = raises(&monitor, "META_006").await;
    let leaderless_before = raises(&monitor, "META_106").await;

    // Gated: the shipped script, restarting and stepping down through the test, the meta
    // leader first: it decides the step-down on preflight's `leader` field.
    let dir = tempdir("rolling");
    let leader = cluster
        .wait_for_leader(Duration::from_secs(15))
        .await
        .expect("leader");
    let mut names: Vec<String> = (0..3).map(|i| cluster.server_name(i)).collect();
    names.sort_by_key(|n| *n != leader);
    let restart = format!(
        "touch {0}/{{}} && while [ -e {0}/{{}} ]; do sleep 0.1; done",
        dir.display()
    );
    let step_down = format!(
        "touch {0}/step-down && while [ -e {0}/step-down ]; do sleep 0.1; done",
        dir.display()
    );
    let log = std::fs::File::create(dir.join("script.log")).expect("log");
    let mut script = tokio::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/rolling-restart.sh"
        ))
        .args([
            "--restart",
            &restart,
            "--step-down",
            &step_down,
            "--wait",
            "60s",
        ])
        .args(["--healthy-timeout", "60s"])
        .args(&names)
        .stderr(log)
        .env("NATS_INSIGHTS", env!("CARGO_BIN_EXE_nats-insights"))
        .env("NATS_URL", cluster.client_urls().join(","))
        .env("NATS_USER", SYS_USER)
        .env("NATS_PASSWORD", SYS_PASSWORD)
        .env("NO_COLOR", "1")
        .spawn()
        .expect("rolling-restart.sh");
    tokio::time::timeout(
        Duration::from_secs(240),
        serve_restarts(&mut cluster, &dir, &mut script),
    )
    .await
    .expect("the gated roll finished");
    let said = std::fs::read_to_string(dir.join("script.log")).unwrap_or_default();
    assert!(
        said.contains(&format!("{leader} leads the meta group; stepping it down")),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    // The monitor has seen the end of it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        raises(&monitor, "META_006").await,
        before,
        "the gated roll lost meta quorum"
    );
    assert_eq!(
        raises(&monitor, "META_106").await,
        leaderless_before,
        "the gated roll's elections were called leaderless"
    );
    monitor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_gated_one_at_a_time_leaves_no_stale_peer_and_a_bulk_rename_is_refused() {
    let mut cluster = cluster(3).await;
    let monitor = Monitor::start(&cluster).await;
    ready(&monitor, 3).await;
    let old = cluster.server_name(0);
    let peer = {
        let (_, status) = request_json(&monitor.client, "$INSIGHTS.API.STATUS", "").await;
        status["meta"]["members"]
            .as_array()
            .and_then(|m| m.iter().find(|x| x["name"] == old.as_str()))
            .and_then(|x| x["peer"].as_str())
            .map(str::to_string)
            .expect("peer id of the renamed server")
    };
    let (code, text) = cli(&cluster, &["preflight", "rename", &old, "--to", "m1"]).await;
    assert_eq!(code, 0, "{text}");
    if cluster.meta_leader().await.as_deref() == Some(old.as_str()) {
        support::move_leader(&mut cluster).await;
    }
    cluster.stop(0, Stop::Term).await.expect("stop");
    cluster.rename(0, "m1").await.expect("rename");

    // Before the old peer is removed, the next rename is refused.
    let next = cluster.server_name(1);
    let (code, text) = cli(&cluster, &["preflight", "rename", &next, "--to", "m2"]).await;
    assert_eq!(
        code, 1,
        "a rename before the previous one is complete: {text}"
    );

    let (code, text) = cli(&cluster, &["preflight", "remove", &old, "--wait", "60s"]).await;
    assert_eq!(code, 0, "the old peer may go once m1 is current: {text}");
    let sys = cluster.sys_client(1).await.expect("sys");
    let removed = sys
        .request(
            "$JS.API.SERVER.REMOVE",
            serde_json::json!({ "peer_id": peer }).to_string().into(),
        )
        .await
        .expect("peer removal answered");
    assert!(
        !String::from_utf8_lossy(&removed.payload).contains("\"error\""),
        "{}",
        String::from_utf8_lossy(&removed.payload)
    );
    wait_healthy(&cluster, Some("m1")).await;
    let (_, status) = request_json(&monitor.client, "$INSIGHTS.API.STATUS", "").await;
    let members = status["meta"]["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{status:#}");
    assert!(
        members.iter().all(|m| m["name_unknown"] == false),
        "no stale peer: {status:#}"
    );
    monitor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_of_a_running_server_is_refused_and_of_a_killed_one_allowed() {
    let mut cluster = cluster(3).await;
    let monitor = Monitor::start(&cluster).await;
    ready(&monitor, 3).await;
    let victim = support::follower(&cluster).await;
    let name = cluster.server_name(victim);
    let (code, text) = cli(&cluster, &["preflight", "remove", &name]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("online"), "{text}");
    cluster.stop(victim, Stop::Kill).await.expect("kill");
    let (code, text) = cli(&cluster, &["preflight", "remove", &name, "--wait", "20s"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("nats server cluster peer-remove {name}")),
        "{text}"
    );
    monitor.stop().await;
}

fn tempdir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "nats-insights-{label}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
