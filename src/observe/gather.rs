//! Observe: one poll. Scatter-gathers JSZ from every server, then asks each known server that stayed
//! silent directly, so a slow reply is not mistaken for a dead server.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use async_nats::Client;
use futures::future::join_all;
use futures::StreamExt;

use super::jsz::decode_reply;
use super::{ServerView, Snapshot, Via};

/// Subject of the JSZ scatter-gather.
pub const PING_JSZ: &str = "$SYS.REQ.SERVER.PING.JSZ";

/// Subject that reaches one server's JSZ directly.
pub fn direct_jsz_subject(server_id: &str) -> String {
    format!("$SYS.REQ.SERVER.{server_id}.JSZ")
}

/// How long a poll may wait.
#[derive(Debug, Clone, Copy)]
pub struct GatherTiming {
    /// Upper bound for the scatter-gather.
    pub max_wait: Duration,
    /// Stop once no reply arrived for this long (replies have stopped coming).
    pub idle_gap: Duration,
    /// Timeout of the direct request to a known server that did not answer the gather.
    pub probe_timeout: Duration,
}

impl Default for GatherTiming {
    fn default() -> Self {
        GatherTiming {
            max_wait: Duration::from_millis(1500),
            idle_gap: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(500),
        }
    }
}

/// A server this service has seen before: the name it carries and the id of its current process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownServer {
    /// Server name.
    pub name: String,
    /// Last server id seen.
    pub id: String,
}

/// Why a poll could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    /// Subscribing to the reply inbox failed.
    #[error("cannot subscribe to the JSZ reply inbox: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// Sending the request failed (disconnected, or not permitted).
    #[error("cannot publish {PING_JSZ}: {0}")]
    Publish(#[from] async_nats::PublishError),
}

/// Runs one poll: the scatter-gather, then direct requests to the known servers that stayed silent.
pub async fn poll(
    client: &Client,
    known: &[KnownServer],
    timing: GatherTiming,
) -> Result<Snapshot, GatherError> {
    let started = Instant::now();
    let taken_at = SystemTime::now();
    let mut snapshot = Snapshot {
        taken_at: Some(taken_at),
        ..Snapshot::default()
    };
    let expected: BTreeSet<&str> = known.iter().map(|k| k.name.as_str()).collect();

    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(PING_JSZ, inbox, "{}".into())
        .await?;
    let deadline = started + timing.max_wait;
    loop {
        let all_known_answered =
            !expected.is_empty() && expected.iter().all(|n| snapshot.views.contains_key(*n));
        // Once every known server answered, linger only briefly for servers we do not know yet.
        let wait = if all_known_answered {
            timing.idle_gap / 4
        } else if snapshot.views.is_empty() && snapshot.malformed == 0 {
            deadline.saturating_duration_since(Instant::now())
        } else {
            timing.idle_gap
        };
        let wait = wait.min(deadline.saturating_duration_since(Instant::now()));
        if wait.is_zero() {
            break;
        }
        match tokio::time::timeout(wait, replies.next()).await {
            Ok(Some(msg)) => accept(&mut snapshot, &msg.payload, Via::Gather),
            Ok(None) | Err(_) => break,
        }
    }
    // Dropping the subscriber unsubscribes; late replies are discarded by the server.
    drop(replies);

    let silent: Vec<&KnownServer> = known
        .iter()
        .filter(|k| !snapshot.views.contains_key(&k.name))
        .collect();
    let probes = silent.iter().map(|k| async move {
        let request = client.request(direct_jsz_subject(&k.id), "{}".into());
        match tokio::time::timeout(timing.probe_timeout, request).await {
            Ok(Ok(msg)) => Some(msg.payload),
            _ => None,
        }
    });
    for (known, payload) in silent.iter().zip(join_all(probes).await) {
        match payload {
            Some(payload) => accept(&mut snapshot, &payload, Via::Direct),
            None => {
                snapshot.unanswered.insert(known.name.clone());
            }
        }
    }
    snapshot.duration = started.elapsed();
    Ok(snapshot)
}

/// Asks the server a pinned connection is attached to for its own view, over that connection:
/// this works even when the server's routes are cut. `None` while disconnected or silent.
pub async fn own_view(client: &Client, timeout: Duration) -> Option<ServerView> {
    if client.connection_state() != async_nats::connection::State::Connected {
        return None;
    }
    let server_id = client.server_info().server_id;
    if server_id.is_empty() {
        return None;
    }
    let request = client.request(direct_jsz_subject(&server_id), "{}".into());
    let msg = tokio::time::timeout(timeout, request).await.ok()?.ok()?;
    match decode_reply(&msg.payload) {
        Ok(reply) => Some(ServerView::from_reply(reply, Via::Direct)),
        Err(error) => {
            crate::log_malformed("JSZ reply", &error);
            None
        }
    }
}

/// Each pinned connection's own view, asked in parallel.
pub async fn own_views(clients: &[Client], timeout: Duration) -> Vec<ServerView> {
    join_all(clients.iter().map(|c| own_view(c, timeout)))
        .await
        .into_iter()
        .flatten()
        .collect()
}

fn accept(snapshot: &mut Snapshot, payload: &[u8], via: Via) {
    match decode_reply(payload) {
        Ok(reply) => {
            let view = ServerView::from_reply(reply, via);
            snapshot.unanswered.remove(&view.server.name);
            snapshot.views.insert(view.server.name.clone(), view);
        }
        Err(error) => {
            snapshot.malformed += 1;
            crate::log_malformed("JSZ reply", &error);
        }
    }
}

/// Merges views from other connections into a snapshot: a server's direct answer counts as an answer.
pub fn merge_views(snapshot: &mut Snapshot, views: impl IntoIterator<Item = ServerView>) {
    let mut extra: BTreeMap<String, ServerView> = BTreeMap::new();
    for view in views {
        extra.insert(view.server.name.clone(), view);
    }
    for (name, view) in extra {
        snapshot.unanswered.remove(&name);
        snapshot.views.entry(name).or_insert(view);
    }
}
