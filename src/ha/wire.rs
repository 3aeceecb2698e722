//! HA on the wire: sends the beats (`$INSIGHTS.HA.BEAT`), answers state requests
//! (`$INSIGHTS.HA.STATE.<instance>` and `.ANY`) and asks peers for theirs. I/O only; the messages
//! are [`nats_insights_core::ha::messages`], what to make of them the coordinator's.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use futures::StreamExt;
use tokio::sync::watch;

pub use nats_insights_core::ha::messages::*;
use nats_insights_core::ha::PeerState;

/// Sends a beat (a failure is logged: the next one follows).
pub async fn send_beat(client: &Client, me: &str, deployment: &str, uptime: Duration) {
    let beat = Beat {
        instance: me.to_string(),
        uptime_ms: uptime.as_millis() as u64,
        deployment: deployment.to_string(),
    };
    let Ok(body) = serde_json::to_vec(&beat) else {
        return;
    };
    if let Err(error) = client.publish(BEAT_SUBJECT, body.into()).await {
        tracing::debug!(%error, "cannot send a beat");
    }
}

/// Answers `$INSIGHTS.HA.STATE.<me>` and `$INSIGHTS.HA.STATE.ANY` with the latest state until the
/// channel closes.
pub async fn answer_state(client: Client, me: String, state: watch::Receiver<Arc<PeerState>>) {
    let subscribed = futures::future::try_join(
        client.subscribe(state_subject(&me)),
        client.subscribe(state_subject(ANY_INSTANCE)),
    )
    .await;
    let (mine, any) = match subscribed {
        Ok(subscriptions) => subscriptions,
        Err(error) => {
            tracing::warn!(%error, "cannot answer state requests of peer instances");
            return;
        }
    };
    let mut requests = std::pin::pin!(futures::stream::select(mine, any)
        .take_until(crate::shutdown::sender_dropped(state.clone())));
    while let Some(request) = requests.next().await {
        let Some(reply) = request.reply else { continue };
        let body = serde_json::to_vec(&**state.borrow()).unwrap_or_default();
        if let Err(error) = client.publish(reply, body.into()).await {
            tracing::debug!(%error, "cannot answer a state request");
        }
    }
}

/// Asks instance `from` (or every instance, `None`) for its state and takes the first answer of
/// one other than `me` in `deployment`, waiting at most `wait`: no need to know which peers run
/// (one may have started moments ago), and a dead one costs nothing.
pub async fn request_state(
    client: &Client,
    me: &str,
    deployment: &str,
    from: Option<&str>,
    wait: Duration,
) -> Option<PeerState> {
    let inbox = client.new_inbox();
    let replies = client.subscribe(inbox.clone()).await.ok()?;
    client
        .publish_with_reply(
            state_subject(from.unwrap_or(ANY_INSTANCE)),
            inbox,
            "".into(),
        )
        .await
        .ok()?;
    // The first answer of another instance of this deployment (others, and undecodable ones, are
    // skipped).
    let mut answers = replies.filter_map(|reply| {
        let state = serde_json::from_slice::<PeerState>(&reply.payload)
            .ok()
            .filter(|s| s.instance != me && same_deployment(deployment, &s.deployment));
        futures::future::ready(state)
    });
    tokio::time::timeout(wait, answers.next())
        .await
        .ok()
        .flatten()
}
