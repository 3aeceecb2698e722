//! Consumer side of publish: follows `$INSIGHTS.FINDING.>` and renders each event as one line.
//! Used by the demo, the tests, and operators (`nats-insights watch`).

use async_nats::{Client, SubscribeError};
use futures::stream::{BoxStream, StreamExt};

use crate::publish::{FindingEvent, FINDING_PREFIX};

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

/// One line per event: time (the event's own, RFC 3339 UTC), event, check, severity, server,
/// summary.
pub fn format_line(event: &FindingEvent) -> String {
    format!(
        "{} {:<8} {} {:<8} {:<10} {}",
        event.timestamp,
        event.event.as_str().to_uppercase(),
        event.check,
        event.severity.as_str(),
        event.server.as_deref().unwrap_or("-"),
        event.summary
    )
}
