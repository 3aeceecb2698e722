//! Live tests of the sources beyond JSZ (ROUTEZ, HEALTHZ, RAFTZ, GATEWAYZ) and the checks built
//! on them: the reply sizes that bound their cost (written in docs/new-sources.md), a route cut
//! by a proxy (CLUSTER_005), a member whose JetStream health fails once its group lost quorum
//! (SERVER_014), a member restarted three times (SERVER_101, SERVER_008), a member caught up over
//! a slow link (META_110).

use crate::support;

use std::time::{Duration, Instant};

use nats_insights::findings::TransitionKind::{Raised, Resolved};
use nats_insights_core::observe::extras::{
    decode_gatewayz, decode_healthz, decode_raftz, decode_routez, Source,
};
use support::{Events, Monitor};
use testbed::{Cluster, Stop};

/// Generous beside the 10 s a condition must hold and a poll every second.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(60);

/// Every server's id, by node index, from a JSZ gather.
async fn ids(cluster: &Cluster) -> Vec<String> {
    let mut ids = vec![String::new(); cluster.size()];
    for envelope in cluster.jsz_all().await.expect("jsz") {
        let name = envelope["server"]["name"].as_str().unwrap_or_default();
        if let Some(i) = cluster.index_of(name) {
            ids[i] = envelope["server"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
    }
    ids
}

/// Asks node `i` (id `id`) for `source` through node `via`: the reply's bytes.
async fn ask(cluster: &Cluster, via: usize, id: &str, source: Source) -> Vec<u8> {
    let client = cluster.sys_client(via).await.expect("sys client");
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(source.direct_subject(id), source.body().into()),
    )
    .await
    .expect("answers in time")
    .expect("answers");
    reply.payload.to_vec()
}

/// The reply sizes behind the cost figures in docs/new-sources.md: each source of each server
/// of a 3-node 2.15 cluster, decoded by the product's own decoders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_sizes_of_each_source_on_three_nodes() {
    let cluster = support::cluster(3).await;
    let ids = ids(&cluster).await;
    let mut lines = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let jsz = ask(&cluster, i, id, Source::Routez).await;
        let (_, routes) = decode_routez(&jsz).expect("routez decodes");
        assert_eq!(routes.remotes.len(), 2, "{routes:?}");
        let health = ask(&cluster, i, id, Source::Healthz).await;
        assert!(decode_healthz(&health).expect("healthz decodes").1.ok());
        let raft = ask(&cluster, i, id, Source::Raftz).await;
        let meta = decode_raftz(&raft)
            .expect("raftz decodes")
            .1
            .expect("_meta_");
        assert_eq!((meta.size, meta.quorum_needed), (3, 2), "{meta:?}");
        let gateways = ask(&cluster, i, id, Source::Gatewayz).await;
        let decoded = decode_gatewayz(&gateways);
        let client = cluster.sys_client(i).await.expect("sys");
        // The size of a plain `{}` request's reply, for the sources not asked.
        let plain = |token: &'static str| {
            let (client, subject) = (client.clone(), format!("$SYS.REQ.SERVER.{id}.{token}"));
            async move {
                let reply = client.request(subject, "{}".into()).await.expect(token);
                reply.payload.len()
            }
        };
        let full_jsz = plain("JSZ").await;
        let varz = plain("VARZ").await;
        let statsz = plain("STATSZ").await;
        let healthz_full = plain("HEALTHZ").await;
        lines.push(format!(
            "{}: ROUTEZ {} B ({} route connections), HEALTHZ js-meta-only {} B (plain {} B), \
             RAFTZ _meta_ {} B, GATEWAYZ {} B ({}), JSZ {} B, VARZ {} B, STATSZ {} B",
            cluster.server_name(i),
            jsz.len(),
            routes.connections,
            health.len(),
            healthz_full,
            raft.len(),
            gateways.len(),
            if decoded.is_ok() {
                "no gateways"
            } else {
                "refused"
            },
            full_jsz,
            varz,
            statsz
        ));
    }
    println!("{}", lines.join("\n"));
}

/// CLUSTER_005: the route between two members cut by its proxies (both directions) raises a
/// finding naming both ends; healed, it resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_005_a_cut_route_between_two_members_is_raised_and_resolved() {
    let cluster = support::proxied_cluster().await;
    let monitor = Monitor::start(&cluster).await;
    support::ready(&monitor, 3).await;
    // Watched through the third server: a watcher on one end of the cut hears nothing the
    // monitor publishes from the other (routes do not forward).
    let mut events = Events::subscribe_via(&cluster, &[2]).await;
    let (a, b) = (0, 1);
    let (name_a, name_b) = (cluster.server_name(a), cluster.server_name(b));
    let started = Instant::now();
    cluster.proxy(a, b).expect("proxied").cut();
    cluster.proxy(b, a).expect("proxied").cut();
    let raised = events
        .expect(Raised, "CLUSTER_005", None, SOURCE_TIMEOUT)
        .await;
    println!(
        "CLUSTER_005 raised after {:?}: {}",
        started.elapsed(),
        raised.summary
    );
    let server = raised.server.clone().expect("per server");
    let other = if server == name_a { &name_b } else { &name_a };
    assert!(
        server == name_a || server == name_b,
        "raised for an end of the cut: {server}"
    );
    assert!(
        raised.summary.contains(other.as_str()),
        "names the other end: {}",
        raised.summary
    );
    assert_eq!(raised.evidence["missing"], serde_json::json!([other]));
    let healed = Instant::now();
    cluster.proxy(a, b).expect("proxied").heal();
    cluster.proxy(b, a).expect("proxied").heal();
    events
        .expect(Resolved, "CLUSTER_005", Some(&server), SOURCE_TIMEOUT)
        .await;
    println!("CLUSTER_005 resolved {:?} after the heal", healed.elapsed());
    // The third server never lost a route: no finding about it.
    let third = cluster.server_name(2);
    assert!(
        !events
            .seen
            .iter()
            .any(|e| e.check.as_str() == "CLUSTER_005"
                && e.server.as_deref() == Some(third.as_str())),
        "{:#?}",
        events.lines()
    );
    monitor.stop().await;
}

/// SERVER_014: two of three members killed, the survivor's meta layer has no leader: its own
/// HEALTHZ says so and SERVER_014 is raised for it; the two back, it resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_014_a_member_without_a_meta_leader_reports_unhealthy_and_recovers() {
    let mut cluster = support::cluster(3).await;
    let monitor = Monitor::start(&cluster).await;
    support::ready(&monitor, 3).await;
    let survivor = 2;
    let name = cluster.server_name(survivor);
    let mut events = Events::subscribe_via(&cluster, &[survivor]).await;
    let started = Instant::now();
    cluster.stop(0, Stop::Kill).await.expect("kill");
    cluster.stop(1, Stop::Kill).await.expect("kill");
    let raised = events
        .expect(Raised, "SERVER_014", Some(&name), Duration::from_secs(90))
        .await;
    println!(
        "SERVER_014 raised after {:?}: {}",
        started.elapsed(),
        raised.summary
    );
    assert!(
        raised.evidence["error"]
            .as_str()
            .unwrap_or_default()
            .contains("meta leader"),
        "{:#}",
        raised.evidence
    );
    let back = Instant::now();
    cluster.restart(0).await.expect("restart");
    cluster.restart(1).await.expect("restart");
    events
        .expect(Resolved, "SERVER_014", Some(&name), Duration::from_secs(90))
        .await;
    println!(
        "SERVER_014 resolved {:?} after the restarts",
        back.elapsed()
    );
    monitor.stop().await;
}

/// SERVER_101 and SERVER_008: a member killed and started again three times within a minute is
/// raised as restarted at the first, and as a crash loop at the third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_008_a_member_restarted_three_times_in_a_minute_is_a_crash_loop() {
    let mut cluster = support::cluster(3).await;
    let monitor = Monitor::start(&cluster).await;
    support::ready(&monitor, 3).await;
    let victim = support::follower(&cluster).await;
    let name = cluster.server_name(victim);
    let watchers: Vec<usize> = support::others(3, &[victim]);
    let mut events = Events::subscribe_via(&cluster, &watchers).await;
    let started = Instant::now();
    for round in 1..=3 {
        cluster.stop(victim, Stop::Kill).await.expect("kill");
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.restart(victim).await.expect("restart");
        if round == 1 {
            let raised = events
                .expect(Raised, "SERVER_101", Some(&name), SOURCE_TIMEOUT)
                .await;
            println!(
                "SERVER_101 after {:?}: {}",
                started.elapsed(),
                raised.summary
            );
        } else {
            // Seen answering under its new id before the next kill.
            let deadline = Instant::now() + SOURCE_TIMEOUT;
            loop {
                let status = monitor.status().await;
                let fresh = status["meta_groups"][0]["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["name"] == name.as_str() && m["answered"] == true);
                if fresh {
                    break;
                }
                assert!(Instant::now() < deadline, "{status:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let looped = events
        .expect(Raised, "SERVER_008", Some(&name), SOURCE_TIMEOUT)
        .await;
    println!(
        "SERVER_008 after {:?}: {}",
        started.elapsed(),
        looped.summary
    );
    assert_eq!(looped.evidence["restarts"], 3, "{:#}", looped.evidence);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "within a minute"
    );
    // No other server restarted.
    assert!(
        !events
            .seen
            .iter()
            .any(|e| matches!(e.check.as_str(), "SERVER_101" | "SERVER_008")
                && e.server.as_deref() != Some(name.as_str())),
        "{:#?}",
        events.lines()
    );
    monitor.stop().await;
}

/// META_109: the three servers of a cluster renamed one at a time without peer-remove (the
/// rolling rename of NATS_FACTS): the raft layer counts five members needing three, the live
/// members can name fewer than that, and no leader can ever be elected (nats-server issue 6403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_109_a_rolling_rename_leaves_a_quorum_the_existing_servers_cannot_reach() {
    let mut cluster = support::cluster(3).await;
    let monitor = Monitor::start(&cluster).await;
    support::ready(&monitor, 3).await;
    for i in 0..3 {
        cluster.stop(i, Stop::Term).await.expect("stop");
        cluster
            .rename(i, &format!("m{}", i + 1))
            .await
            .expect("rename");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ids = ids(&cluster).await;
    for (i, id) in ids.iter().enumerate() {
        if id.is_empty() {
            continue;
        }
        let raft = ask(&cluster, i, id, Source::Raftz).await;
        println!(
            "{}: {}",
            cluster.server_name(i),
            String::from_utf8_lossy(&raft)
        );
    }
    // Servers restart in turn (a subscriber would miss events): judge by STATUS.
    let deadline = Instant::now() + Duration::from_secs(90);
    let finding = loop {
        let status = support::try_request_json(&monitor.client, "$INSIGHTS.API.STATUS", "")
            .await
            .unwrap_or_default();
        let found = status["findings"]
            .as_array()
            .and_then(|f| f.iter().find(|x| x["check"] == "META_109").cloned());
        if let Some(found) = found {
            break found;
        }
        assert!(Instant::now() < deadline, "no META_109: {status:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "META_109: {}\n{:#}",
        finding["summary"], finding["evidence"]
    );
    let evidence = &finding["evidence"];
    let quorum = evidence["quorum_needed"].as_u64().expect("quorum");
    let voters = evidence["voters_answering"]
        .as_array()
        .expect("voters")
        .len() as u64;
    assert!(quorum > voters, "{evidence:#}");
    assert!(
        evidence["unnamed_peers"].as_u64().expect("unnamed") > 0,
        "{evidence:#}"
    );
    monitor.stop().await;
}

/// CLUSTER_007: in a 3x3 supercluster whose gateway listeners sit behind proxies, every gateway
/// into c3 cut: the members of c1 and c2 lose their outbound gateway to c3 and are raised,
/// naming it; healed, they resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_007_gateways_into_one_cluster_of_a_supercluster_cut_and_healed() {
    let cluster = Cluster::start(testbed::ClusterOptions {
        proxied_gateways: true,
        ..testbed::ClusterOptions::supercluster(3, 3)
    })
    .await
    .expect("supercluster starts");
    cluster
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    // The monitor and the watcher in c1: the cut keeps c1 from sending into c3.
    let c1 = [0, 1, 2];
    let monitor = Monitor::start_via(&cluster, &c1, Default::default()).await;
    support::ready(&monitor, 9).await;
    let mut events = Events::subscribe_via(&cluster, &c1).await;
    let started = Instant::now();
    cluster.cut_gateways_to("c3").expect("proxied");
    let raised = events
        .expect(Raised, "CLUSTER_007", None, Duration::from_secs(90))
        .await;
    println!(
        "CLUSTER_007 after {:?}: {}",
        started.elapsed(),
        raised.summary
    );
    assert_eq!(
        raised.evidence["missing"],
        serde_json::json!(["c3"]),
        "{:#}",
        raised.evidence
    );
    assert_ne!(
        raised.cluster.as_deref(),
        Some("c3"),
        "c3's own gateways are up"
    );
    let server = raised.server.clone().expect("per server");
    cluster.heal_gateways_to("c3").expect("proxied");
    events
        .expect(
            Resolved,
            "CLUSTER_007",
            Some(&server),
            Duration::from_secs(90),
        )
        .await;
    println!("CLUSTER_007 resolved {:?} after the cut", started.elapsed());
    monitor.stop().await;
}

/// The sources on the oldest minor still run in the field (`ensure_nats_servers_old` fetches
/// 2.10.26): every reply decodes; HEALTHZ ignores the unknown `js-meta-only` and runs its whole
/// check (ok on a healthy cluster); RAFTZ answers from 2.10.26 on. Skipped (passes, says so) when
/// no 2.10 binary is at hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_sources_decode_on_nats_server_2_10() {
    let Ok(bin) = testbed::nats_server_bin_old("2.10") else {
        eprintln!("no nats-server 2.10: run `. scripts/lib/ensure.sh && ensure_nats_servers_old`");
        return;
    };
    let cluster = Cluster::start(testbed::ClusterOptions {
        node_bins: (0..3).map(|i| (i, bin.clone())).collect(),
        ..testbed::ClusterOptions::default()
    })
    .await
    .expect("2.10 cluster starts");
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let ids = ids(&cluster).await;
    for (i, id) in ids.iter().enumerate() {
        let routes = ask(&cluster, i, id, Source::Routez).await;
        let (server, decoded) = decode_routez(&routes).expect("routez decodes");
        assert!(server
            .ver
            .as_deref()
            .unwrap_or_default()
            .starts_with("2.10."));
        assert_eq!(decoded.remotes.len(), 2, "{decoded:?}");
        let health = ask(&cluster, i, id, Source::Healthz).await;
        assert!(decode_healthz(&health).expect("healthz decodes").1.ok());
        let raft = ask(&cluster, i, id, Source::Raftz).await;
        let meta = decode_raftz(&raft)
            .expect("raftz decodes")
            .1
            .expect("_meta_");
        println!(
            "{} ({}): ROUTEZ {} B, HEALTHZ {} B, RAFTZ {} B size {} quorum {}",
            server.name,
            server.ver.unwrap_or_default(),
            routes.len(),
            health.len(),
            raft.len(),
            meta.size,
            meta.quorum_needed
        );
        // (A fresh 2.10 group may still count two while the third joins: see versions.rs.)
        assert!((2..=3).contains(&meta.size), "{meta:?}");
        assert_eq!(meta.quorum_needed, meta.size / 2 + 1, "{meta:?}");
    }
}

/// How fast the link between the meta leader and the victim of the META_110 test carries each
/// way while it catches up: its [`CATCH_UP_BYTES`] take about 20 s.
const CATCH_UP_RATE: u64 = 512 * 1024;

/// Meta entries written while the victim is cut off: consumers with 100 KB of metadata each
/// (nats-server allows 128 KB), random so that the compressed assignment stays large.
const CATCH_UP_BYTES: usize = 10 * 1024 * 1024;
const PADDING: usize = 100 * 1024;

/// `len` characters nothing compresses (nuids are random base62).
fn incompressible(len: usize) -> String {
    let mut s = String::with_capacity(len + 32);
    while s.len() < len {
        s.push_str(&nuid::next().to_string());
    }
    s.truncate(len);
    s
}

/// META_110 for real: the route between the meta leader and a follower cut for the second it
/// takes to write 10 MB of meta entries (consumers with large metadata) and then healed as a slow
/// link (512 KB/s each way): the follower sees the gap on the leader's next append entry and
/// asks to be caught up, and its own RAFTZ reports `catching_up` for the ~20 s the entries take
/// to arrive. With `--catching-up-after` 2 s the finding is raised for that member only; the
/// link's limit lifted, the catch-up ends and it resolves. The monitor and the watcher sit on the
/// third server, whose links are not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_110_a_member_caught_up_over_a_slow_link_is_raised_until_it_is_done() {
    use async_nats::jetstream;
    use nats_insights::engine::EngineConfig;

    let cluster = support::proxied_cluster().await;
    let (leader, watcher, victim) = (0, 1, 2);
    cluster.make_leader(leader).await.expect("node 0 leads");
    let name = cluster.server_name(victim);
    let victim_id = ids(&cluster).await[victim].clone();
    let mut config = EngineConfig::default();
    config.thresholds.catching_up_after = Duration::from_secs(2);
    let monitor = Monitor::start_via(&cluster, &[watcher], config).await;
    support::ready(&monitor, 3).await;
    let mut events = Events::subscribe_via(&cluster, &[watcher]).await;

    // A stream the consumers hang on, kept off the victim (an R1 stream placed on it would
    // wait for it while it is cut off).
    let js = jetstream::new(cluster.app_client(leader).await.expect("app client"));
    let mut base = None;
    for i in 0..12 {
        let mut stream = js
            .create_stream(jetstream::stream::Config {
                name: format!("CATCHUP{i}"),
                subjects: vec![format!("catchup.{i}")],
                storage: jetstream::stream::StorageType::Memory,
                ..Default::default()
            })
            .await
            .expect("stream created");
        let info = stream.info().await.expect("stream info");
        let placed = info.cluster.as_ref().and_then(|c| c.leader.clone());
        if placed.is_some_and(|p| p != name) {
            base = Some(stream);
            break;
        }
    }
    let base = base.expect("a stream placed off the victim");

    // Cut: every append entry the leader sends meanwhile is lost to the victim. Short (raft's
    // shortest election timeout is 4 s) so that the victim does not campaign.
    let cut_at = Instant::now();
    cluster.proxy(leader, victim).expect("proxied").cut();
    cluster.proxy(victim, leader).expect("proxied").cut();
    let consumers = CATCH_UP_BYTES / PADDING;
    let created = futures::future::join_all((0..consumers).map(|i| {
        let base = &base;
        async move {
            base.create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some(format!("C{i}")),
                metadata: [("padding".to_string(), incompressible(PADDING))].into(),
                ..Default::default()
            })
            .await
            .is_ok()
        }
    }))
    .await;
    assert!(created.iter().all(|ok| *ok), "every consumer created");
    for (from, to) in [(leader, victim), (victim, leader)] {
        let proxy = cluster.proxy(from, to).expect("proxied");
        proxy.throttle(Some(CATCH_UP_RATE));
        proxy.heal();
    }
    println!(
        "{consumers} consumers written in {:?} while cut off",
        cut_at.elapsed()
    );

    let raised = events
        .expect(Raised, "META_110", Some(&name), SOURCE_TIMEOUT)
        .await;
    println!(
        "META_110 raised {:?} after the cut: {}\n{:#}",
        cut_at.elapsed(),
        raised.summary,
        raised.evidence
    );
    assert_eq!(raised.server.as_deref(), Some(name.as_str()));
    assert!(
        raised.evidence["since"].is_string(),
        "{:#}",
        raised.evidence
    );
    // Its own raft layer, asked directly, still says so.
    let raft = ask(&cluster, watcher, &victim_id, Source::Raftz).await;
    let meta = decode_raftz(&raft)
        .expect("raftz decodes")
        .1
        .expect("_meta_");
    println!("{name}'s RAFTZ now: {meta:?}");
    assert!(meta.catching_up, "{meta:?}");
    assert_eq!(
        cluster.meta_leader().await.as_deref(),
        Some(cluster.server_name(leader).as_str()),
        "the leader kept its place: the victim did not campaign"
    );

    let lifted = Instant::now();
    for (from, to) in [(leader, victim), (victim, leader)] {
        cluster.proxy(from, to).expect("proxied").throttle(None);
    }
    events
        .expect(Resolved, "META_110", Some(&name), SOURCE_TIMEOUT)
        .await;
    println!(
        "META_110 resolved {:?} after the limit was lifted",
        lifted.elapsed()
    );
    // Nobody else was catching up.
    assert!(
        !events
            .seen
            .iter()
            .any(|e| e.check.as_str() == "META_110" && e.server.as_deref() != Some(name.as_str())),
        "{:#?}",
        events.lines()
    );
    monitor.stop().await;
}
