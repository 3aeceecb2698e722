//! The demo (`scripts/demo`, the `demo` binary). Starts a local 3-node cluster (accounts from
//! `deploy/`), runs the whole pipeline against it in-process, injects faults one after another
//! and prints every finding event with the time it took. Cleans up every process it started.

use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::oneshot;

use nats_insights::connect::ConnectArgs;
use nats_insights::engine::{self, EngineConfig};
use nats_insights::findings::TransitionKind;
use nats_insights::publish::FindingEvent;
use nats_insights::service::Instance;
use nats_insights::watch::{self, Received};
use testbed::{Cluster, ClusterOptions, Stop, SYS_PASSWORD, SYS_USER};

/// Flags of `demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How long to wait for each expected event before giving up.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub step_timeout: Duration,
    /// The META_003 flap window for the demo (the service's default is 10m).
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    pub flap_window: Duration,
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
        // Route links go through proxies the demo controls, so it can cut a server off.
        proxied_routes: true,
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
    let monitor = connections.main.clone();
    let mut config = EngineConfig::default();
    config.thresholds.flap_window = args.flap_window;
    // The demo's servers run nats-server's default sync interval: accepted here, so that the
    // events printed are those of the faults (META_107 would report every server at start).
    config.thresholds.sync_interval_max = std::time::Duration::from_secs(120);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let engine = tokio::spawn(engine::run(
        connections,
        config,
        Instance {
            id: nuid::next().to_string(),
            started: SystemTime::now(),
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    println!(
        "nats-insights is watching (flap window {} for the demo); finding events on $INSIGHTS.FINDING.> follow.\n",
        humantime::format_duration(args.flap_window)
    );

    let result = scenario(&mut cluster, &connect, &monitor, &args).await;
    let _ = stop_tx.send(());
    let _ = engine.await;
    drop(cluster);
    match result {
        Ok(()) => {
            println!(
                "Demo complete in {:.0} s: every fault raised its findings once and resolved them once. All processes stopped.",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(e) => Err(format!("demo failed: {e}")),
    }
}

/// Subscribes like an operator's `nats sub '$INSIGHTS.FINDING.>'`, through the given nodes only:
/// core NATS drops what is published while a subscriber's own server is down or cut off.
async fn watcher(
    connect: &ConnectArgs,
    cluster: &Cluster,
    nodes: &[usize],
) -> Result<(async_nats::Client, BoxStream<'static, Received>), String> {
    let mut args = connect.clone();
    args.servers = nodes.iter().map(|i| cluster.client_url(*i)).collect();
    let client = args
        .connect("nats-insights-demo-watch")
        .await
        .map_err(|e| e.to_string())?;
    let stream = watch::subscribe(&client).await.map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())?;
    Ok((client, stream))
}

async fn scenario(
    cluster: &mut Cluster,
    connect: &ConnectArgs,
    monitor: &async_nats::Client,
    args: &DemoArgs,
) -> Result<(), String> {
    use TransitionKind::{Raised, Resolved};
    let timeout = args.step_timeout;
    let leader = cluster.meta_leader().await.ok_or("no meta leader")?;
    let leader_index = cluster.index_of(&leader).ok_or("leader not in cluster")?;
    let others: Vec<usize> = (0..cluster.size()).filter(|i| *i != leader_index).collect();
    let (follower, survivor) = (others[0], others[1]);
    let follower_name = cluster.server_name(follower);
    let (_client, mut events) = watcher(connect, cluster, &[survivor]).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    step(
        &format!("1. Stopping follower {follower_name} gracefully (SIGTERM)"),
        &mut events,
        vec![(Raised, "META_001", Some(follower_name.clone()))],
        timeout,
        || cluster.stop(follower, Stop::Term),
    )
    .await?;
    step(
        &format!("2. Killing the meta leader {leader} (SIGKILL): 1 of 3 left, quorum lost"),
        &mut events,
        vec![
            (Raised, "META_001", Some(leader.clone())),
            (Raised, "META_006", None),
        ],
        timeout,
        || cluster.stop(leader_index, Stop::Kill),
    )
    .await?;
    step(
        &format!("3. Restarting {follower_name} and {leader}"),
        &mut events,
        vec![
            (Resolved, "META_001", Some(follower_name.clone())),
            (Resolved, "META_001", Some(leader.clone())),
            (Resolved, "META_006", None),
        ],
        timeout,
        || async {
            cluster.restart(follower).await?;
            cluster.restart(leader_index).await
        },
    )
    .await?;

    // Two forced elections. The leader they end on is cut off next; the monitor's own server
    // must not be that one, or its findings could only reach the isolated side.
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    let attached = cluster
        .index_of(&monitor.server_info().server_name)
        .unwrap_or(survivor);
    let current = cluster
        .meta_leader()
        .await
        .and_then(|l| cluster.index_of(&l))
        .ok_or("no meta leader")?;
    let target = (0..cluster.size())
        .find(|i| *i != attached && *i != current)
        .ok_or("no target")?;
    let via = (0..cluster.size())
        .find(|i| *i != current && *i != target)
        .ok_or("no intermediate")?;
    let (via_name, target_name) = (cluster.server_name(via), cluster.server_name(target));
    step(
        &format!("4. Forcing two meta leader step-downs ({via_name}, then {target_name}) within the flap window"),
        &mut events,
        vec![(Raised, "META_003", None)],
        timeout,
        || async {
            cluster.make_leader(via).await?;
            cluster.make_leader(target).await
        },
    )
    .await?;

    let majority: Vec<usize> = (0..cluster.size()).filter(|i| *i != target).collect();
    let (_client, mut events) = watcher(connect, cluster, &majority).await?;
    step(
        &format!("5. Cutting the meta leader {target_name} off from the others (its route links go through proxies)"),
        &mut events,
        vec![
            (Raised, "META_001", Some(target_name.clone())),
            (Raised, "META_002", None),
        ],
        timeout + Duration::from_secs(20),
        || async { cluster.partition(target) },
    )
    .await?;
    step(
        "6. Healing the partition",
        &mut events,
        vec![
            (Resolved, "META_002", None),
            (Resolved, "META_001", Some(target_name.clone())),
        ],
        timeout + Duration::from_secs(20),
        || async { cluster.heal(target) },
    )
    .await?;
    step(
        "7. Waiting for the leader changes to leave the flap window",
        &mut events,
        vec![(Resolved, "META_003", None)],
        args.flap_window + timeout,
        || async { Ok::<(), String>(()) },
    )
    .await
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
                "   +{:>5.2} s  {}",
                t0.elapsed().as_secs_f64(),
                watch::format_line(&event)
            ),
            Err(e) => println!("   {e}"),
        }
    }
    println!("   (nothing more for {} s)\n", QUIET.as_secs());
    Ok(())
}
