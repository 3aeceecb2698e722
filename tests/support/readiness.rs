//! When a fresh testbed cluster is ready for JetStream work: agreeing on a meta leader (what
//! `Cluster::start` waits for) is not enough on every server version.
//!
//! Seen on loopback: right after the election, creating an R3 stream can fail with 10005 "no
//! suitable peers for placement, peer offline" until the leader has every server's JetStream
//! stats (2.10, 2.11 and 2.12: 1 or 2 fresh clusters in 12; not seen on 2.14 and 2.15). And on
//! 2.10 about one fresh 3-server cluster in 7 forms a meta group of 2 (`cluster_size` 2) that the
//! third server, though it follows the leader, never joins.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use testbed::{jsz_leader, Cluster};

const PROBE_STREAM: &str = "TESTBED_PLACEMENT_PROBE";

/// Waits until the meta leader counts every server as a member, then until a stream replicated
/// on every server (up to 3) can be created (it is deleted again). `Err` says which did not
/// happen within `timeout`.
pub async fn wait_for_jetstream(cluster: &Cluster, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let size = cluster.size();
    loop {
        let views = cluster.jsz_all().await.unwrap_or_default();
        let leader_view = views.iter().find(|v| {
            jsz_leader(v).is_some()
                && jsz_leader(v) == v.pointer("/server/name").and_then(|n| n.as_str())
        });
        let members = leader_view.map(|v| {
            let meta = &v["data"]["meta_cluster"];
            let listed = meta["replicas"].as_array().map_or(0, Vec::len) + 1;
            listed.max(meta["cluster_size"].as_u64().unwrap_or(0) as usize)
        });
        if members == Some(size) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the meta group has {members:?} of {size} members: {:?}",
                views
                    .iter()
                    .map(|v| v["data"]["meta_cluster"].to_string())
                    .collect::<Vec<_>>()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let client = cluster
        .app_client(0)
        .await
        .map_err(|e| format!("JetStream-account client: {e}"))?;
    let js = jetstream::new(client);
    loop {
        let created = js
            .create_stream(jetstream::stream::Config {
                name: PROBE_STREAM.to_string(),
                subjects: vec!["testbed.placement.probe".to_string()],
                storage: jetstream::stream::StorageType::Memory,
                num_replicas: size.min(3),
                ..Default::default()
            })
            .await;
        match created {
            Ok(_) => {
                js.delete_stream(PROBE_STREAM)
                    .await
                    .map_err(|e| format!("deleting {PROBE_STREAM}: {e}"))?;
                return Ok(());
            }
            Err(e) if Instant::now() > deadline => {
                return Err(format!("no replicated stream can be placed yet: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
