//! Observe, the I/O edge of events: subscribes to the system-account events that change meta
//! state and decodes them ([`decode_event`]) into one stream.

use std::time::SystemTime;

use async_nats::{Client, Message, SubscribeError};
use futures::stream::{self, BoxStream, StreamExt};

pub use nats_insights_core::observe::events::*;

use crate::observe::MetaEvent;

/// Subscribes to every event subject and merges them into one stream of decoded events.
pub async fn subscribe(
    client: &Client,
) -> Result<BoxStream<'static, Result<MetaEvent, EventError>>, SubscribeError> {
    let mut subscriptions = Vec::with_capacity(EVENT_SUBJECTS.len());
    for subject in EVENT_SUBJECTS {
        subscriptions.push(client.subscribe(subject).await?);
    }
    Ok(stream::select_all(subscriptions)
        .map(|msg: Message| decode_event(msg.subject.as_str(), &msg.payload, SystemTime::now()))
        .boxed())
}
