//! Entry: `nats-insights demo`. Starts a local 3-node cluster (accounts from `deploy/`), runs the
//! whole pipeline against it in-process, injects faults one after another and prints every finding
//! event with the time it took. Cleans up every process it started.

use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::oneshot;

use crate::connect::ConnectArgs;
use crate::engine::{self, EngineConfig};
use crate::findings::TransitionKind;
use crate::publish::FindingEvent;
use crate::service::Instance;
use crate::testbed::{Cluster, ClusterOptions, Stop, SYS_PASSWORD, SYS_USER};
use crate::watch::{self, Received};

/// Flags of `demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How long to wait for each expected event before giving up.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub step_timeout: Duration,
}

/// How long each step keeps listening after its expected events, to show nothing repeats.
const QUIET: Duration = Duration::from_secs(3);

/// One expected event: its kind, check and (for per-server checks) server.
type Expectation = (TransitionKind, &'static str, Option<String>);

/// Runs the demo; fails if an expected event does not arrive in time.
pub async fn run(args: DemoArgs) -> Result<(), String> {
    let started = Instant::now();
    println!(
        "Starting a local 3-node JetStream cluster (nats-server from $NATS_SERVER_BIN or PATH)..."
    );
    let mut cluster = Cluster::start(ClusterOptions {
        cluster_name: "demo".to_string(),
        ..ClusterOptions::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    let names: Vec<String> = (0..cluster.size())
        .map(|i| cluster.server_name(i))
        .collect();
    println!(
        "Cluster up in {:.1} s: {} (meta leader {leader}); files in {}",
        started.elapsed().as_secs_f64(),
        names.join(", "),
        cluster.dir().display()
    );

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let connect = ConnectArgs {
        servers: cluster.client_urls(),
        user: Some(SYS_USER.to_string()),
        password: Some(SYS_PASSWORD.to_string()),
        ..ConnectArgs::default()
    };
    let connections = connect
        .open("nats-insights-demo")
        .await
        .map_err(|e| e.to_string())?;
    let instance = Instance {
        id: nuid::next().to_string(),
        started: SystemTime::now(),
    };
    let engine = tokio::spawn(engine::run(
        connections,
        EngineConfig::default(),
        instance,
        async move {
            let _ = stop_rx.await;
        },
    ));
    // The watcher, like an operator's `nats sub`, knows every server so it survives the faults.
    let watcher = connect
        .connect("nats-insights-demo-watch")
        .await
        .map_err(|e| e.to_string())?;
    let mut events = watch::subscribe(&watcher)
        .await
        .map_err(|e| e.to_string())?;
    println!("nats-insights is watching; finding events on $INSIGHTS.FINDING.> follow.\n");
    tokio::time::sleep(Duration::from_secs(3)).await;

    let follower = (0..cluster.size())
        .find(|i| cluster.server_name(*i) != leader)
        .ok_or("no follower")?;
    let follower_name = cluster.server_name(follower);
    let leader_index = cluster.index_of(&leader).ok_or("leader not in cluster")?;

    let result = async {
        step(
            &format!("1. Stopping follower {follower_name} gracefully (SIGTERM)"),
            &mut events,
            vec![(
                TransitionKind::Raised,
                "META_001",
                Some(follower_name.clone()),
            )],
            args.step_timeout,
            || cluster.stop(follower, Stop::Term),
        )
        .await?;
        step(
            &format!("2. Killing the meta leader {leader} (SIGKILL): 1 of 3 left, quorum lost"),
            &mut events,
            vec![
                (TransitionKind::Raised, "META_001", Some(leader.clone())),
                (TransitionKind::Raised, "META_006", None),
            ],
            args.step_timeout,
            || cluster.stop(leader_index, Stop::Kill),
        )
        .await?;
        step(
            &format!("3. Restarting {follower_name} and {leader}"),
            &mut events,
            vec![
                (
                    TransitionKind::Resolved,
                    "META_001",
                    Some(follower_name.clone()),
                ),
                (TransitionKind::Resolved, "META_001", Some(leader.clone())),
                (TransitionKind::Resolved, "META_006", None),
            ],
            args.step_timeout,
            || async {
                cluster.restart(follower).await?;
                cluster.restart(leader_index).await
            },
        )
        .await
    }
    .await;

    let _ = stop_tx.send(());
    let _ = engine.await;
    drop(cluster);
    match result {
        Ok(()) => {
            println!(
                "\nDemo complete in {:.0} s: every fault raised its findings once and resolved them once. All processes stopped.",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(e) => Err(format!("demo failed: {e}")),
    }
}

/// Injects one fault and waits for the expected events, printing every event that arrives.
async fn step<F, Fut, E>(
    title: &str,
    events: &mut BoxStream<'static, Received>,
    mut expected: Vec<Expectation>,
    timeout: Duration,
    inject: F,
) -> Result<(), String>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    println!("{title}");
    let t0 = Instant::now();
    inject().await.map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + timeout;
    while !expected.is_empty() {
        let next = tokio::time::timeout_at(deadline, events.next()).await;
        let event: FindingEvent = match next {
            Ok(Some(Ok(event))) => event,
            Ok(Some(Err(e))) => {
                println!("   {e}");
                continue;
            }
            Ok(None) => return Err("the finding subscription ended".to_string()),
            Err(_) => {
                let missing: Vec<String> = expected
                    .iter()
                    .map(|(k, c, s)| format!("{} {c} {}", k.as_str(), s.as_deref().unwrap_or("")))
                    .collect();
                return Err(format!("timed out waiting for {}", missing.join(", ")));
            }
        };
        println!(
            "   +{:>5.2} s  {}",
            t0.elapsed().as_secs_f64(),
            watch::format_line(&event)
        );
        expected.retain(|(kind, check, server)| {
            !(event.event == *kind
                && event.check.as_str() == *check
                && (server.is_none() || event.server.as_ref() == server.as_ref()))
        });
    }
    // Watch a little longer: nothing more may arrive (no repeats, no noise).
    let quiet = tokio::time::Instant::now() + QUIET;
    while let Ok(Some(received)) = tokio::time::timeout_at(quiet, events.next()).await {
        match received {
            Ok(event) => println!(
                "   +{:>5.2} s  {}  (not expected)",
                t0.elapsed().as_secs_f64(),
                watch::format_line(&event)
            ),
            Err(e) => println!("   {e}"),
        }
    }
    println!("   (nothing more for {} s)\n", QUIET.as_secs());
    Ok(())
}
