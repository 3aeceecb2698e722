//! Consumer side of publish: follows `$INSIGHTS.FINDING.>`; each event is rendered as one line by
//! [`format_line`] (pure, in the core). Used by the demo, the tests, and operators
//! (`nats-insights watch`).

use async_nats::{Client, SubscribeError};
use futures::stream::{BoxStream, StreamExt};

pub use nats_insights_core::render::watch::*;
use nats_insights_core::wire::{FindingEvent, FINDING_PREFIX};

/// A finding event as received, or why it could not be decoded.
pub type Received = Result<FindingEvent, String>;

/// Subscribes to every finding event.
pub async fn subscribe(client: &Client) -> Result<BoxStream<'static, Received>, SubscribeError> {
    let subscriber = client.subscribe(format!("{FINDING_PREFIX}.>")).await?;
    Ok(subscriber
        .map(|msg| {
            serde_json::from_slice::<FindingEvent>(&msg.payload)
                .map_err(|e| format!("undecodable event on {}: {e}", msg.subject))
        })
        .boxed())
}
