//! Observe, the I/O of the sources beyond JSZ: asks the few servers the core's
//! [`nats_insights_core::observe::extras::plan`] names for ROUTEZ, HEALTHZ, RAFTZ or GATEWAYZ,
//! all at once and each directly, and files the answers in the snapshot. A server that does not
//! answer (or is too old to know the subject) is left without a value: unknown.

use std::time::Duration;

use async_nats::Client;
use futures::future::join_all;

use super::extras::{file_answer, plan, Ask};
use super::Snapshot;

/// Asks this poll's share of the extra sources and files the answers in `snapshot`
/// (`round` turns the rotation). Bytes received count in `snapshot.bytes`; a malformed reply in
/// `snapshot.malformed`.
pub async fn gather_extras(
    client: &Client,
    snapshot: &mut Snapshot,
    round: u64,
    timeout: Duration,
) {
    let asks = plan(snapshot, round);
    if asks.is_empty() {
        return;
    }
    let replies = join_all(asks.iter().map(|ask| ask_one(client, ask, timeout))).await;
    for (ask, reply) in asks.iter().zip(replies) {
        let Some(payload) = reply else {
            continue;
        };
        snapshot.bytes += payload.len() as u64;
        match file_answer(&mut snapshot.extras, ask.source, &payload) {
            Ok(name) if name != ask.server => {
                // A reused id answered under another name: drop what it said.
                tracing::debug!(asked = %ask.server, %name, "extras reply from another server");
                snapshot.extras.remove(&name);
            }
            Ok(_) => {}
            Err(super::extras::ExtrasError::Refused { .. }) => {}
            Err(error) => {
                snapshot.malformed += 1;
                crate::log_malformed("extras reply", &error);
            }
        }
    }
}

async fn ask_one(client: &Client, ask: &Ask, timeout: Duration) -> Option<bytes::Bytes> {
    let request = client.request(ask.source.direct_subject(&ask.id), ask.source.body().into());
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(msg)) => Some(msg.payload),
        _ => None,
    }
}
