//! Observe: one poll. Scatter-gathers JSZ from every server, then asks each known server that stayed
//! silent directly, so a slow reply is not mistaken for a dead server.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use async_nats::Client;
use futures::future::join_all;
use futures::StreamExt;

use super::jsz::decode_reply;
use super::plan::{direct_idz_subject, direct_jsz_subject, KnownServer, Plan, PING_IDZ, PING_JSZ};
use super::{ServerIdentity, ServerView, Snapshot, Via};
use crate::timing::GatherTiming;

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

/// Body of the JSZ request that only servers that believe they lead answer.
const LEADER_ONLY: &str = r#"{"leader_only":true}"#;

/// Runs one poll as `plan` says, then asks each known server that stayed silent directly, so a
/// slow reply is not mistaken for a dead server.
pub async fn poll(
    client: &Client,
    known: &[KnownServer],
    plan: &Plan,
    timing: GatherTiming,
) -> Result<Snapshot, GatherError> {
    poll_sparing(client, known, &BTreeSet::new(), plan, timing).await
}

/// The known servers a gather waits for: all but `spared`. Once they answered, it lingers only
/// briefly; a spared server that did not answer by then is asked directly like any silent one.
fn expected<'a>(known: &'a [KnownServer], spared: &BTreeSet<String>) -> BTreeSet<&'a str> {
    known
        .iter()
        .map(|k| k.name.as_str())
        .filter(|name| !spared.contains(*name))
        .collect()
}

/// [`poll`], whose gather does not wait for the `spared` servers (those whose pinned links just
/// dropped: most likely dead, and waiting for a dead server holds the gather for its idle gap).
/// They are still asked directly when silent: a live one answers there, a dead one's id has no
/// responders, so it is found unanswered at once.
pub async fn poll_sparing(
    client: &Client,
    known: &[KnownServer],
    spared: &BTreeSet<String>,
    plan: &Plan,
    timing: GatherTiming,
) -> Result<Snapshot, GatherError> {
    let started = Instant::now();
    let mut snapshot = Snapshot {
        taken_at: Some(SystemTime::now()),
        ..Snapshot::default()
    };
    let expected = expected(known, spared);
    match plan {
        Plan::Full => {
            scatter(client, PING_JSZ, "{}", &expected, timing, |payload| {
                accept(&mut snapshot, decode_view(payload, Via::Gather))
            })
            .await?;
        }
        Plan::Large { sample } => {
            poll_large(client, &mut snapshot, &expected, sample, timing).await?;
        }
    }
    probe_silent(client, &mut snapshot, known, timing, plan != &Plan::Full).await;
    snapshot.duration = started.elapsed();
    let attached = client.server_info().server_name;
    snapshot.attached_cluster = snapshot
        .views
        .get(&attached)
        .and_then(|v| v.server.cluster.clone());
    Ok(snapshot)
}

/// [`poll_sparing`], cut short when the server the client is attached to does not answer a round
/// trip within `attached_wait` while the poll runs: a stopped or cut-off server answers nothing,
/// and the gather would wait its whole `max_wait` and every probe's timeout for replies that
/// cannot come. The snapshot is then empty, every known server unanswered (the caller sees its
/// own links' views and knows the path, not the servers, is silent).
pub async fn poll_or_silence(
    client: &Client,
    known: &[KnownServer],
    spared: &BTreeSet<String>,
    plan: &Plan,
    timing: GatherTiming,
    attached_wait: Duration,
) -> Result<Snapshot, GatherError> {
    let started = Instant::now();
    let taken_at = SystemTime::now();
    let silent = async {
        if crate::connect::round_trip(client, attached_wait).await {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        polled = poll_sparing(client, known, spared, plan, timing) => polled,
        () = silent => Ok(Snapshot {
            taken_at: Some(taken_at),
            unanswered: known.iter().map(|k| k.name.clone()).collect(),
            duration: started.elapsed(),
            ..Snapshot::default()
        }),
    }
}

/// Collects the replies to one scatter-gather request. Stops at `max_wait`; once every expected
/// server answered, lingers for `linger` for unknown ones; otherwise stops when replies pause for
/// `idle_gap` (or, before any reply, waits up to `max_wait`). `answer` decodes one reply and says
/// which server it came from (`None`: malformed).
async fn scatter(
    client: &Client,
    subject: &str,
    body: &'static str,
    expected: &BTreeSet<&str>,
    timing: GatherTiming,
    mut answer: impl FnMut(&[u8]) -> Option<String>,
) -> Result<(), GatherError> {
    let started = Instant::now();
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(subject.to_string(), inbox, body.into())
        .await?;
    let deadline = started + timing.max_wait;
    // Counted as replies arrive: checking every expected name after each reply was quadratic
    // (0.7 s of CPU per poll at 5,000 servers).
    let mut answered: BTreeSet<String> = BTreeSet::new();
    let mut expected_answered = 0;
    let mut any = false;
    loop {
        let all_known_answered = !expected.is_empty() && expected_answered == expected.len();
        let wait = if all_known_answered {
            timing.linger
        } else if !any {
            deadline.saturating_duration_since(Instant::now())
        } else {
            timing.idle_gap
        };
        let wait = wait.min(deadline.saturating_duration_since(Instant::now()));
        if wait.is_zero() {
            break;
        }
        match tokio::time::timeout(wait, replies.next()).await {
            Ok(Some(msg)) => {
                any = true;
                if let Some(name) = answer(&msg.payload) {
                    if expected.contains(name.as_str()) && answered.insert(name) {
                        expected_answered += 1;
                    }
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    // Dropping the subscriber unsubscribes; late replies are discarded by the server.
    drop(replies);
    Ok(())
}

/// What a direct request to one server came back with.
enum Probe<T> {
    /// Its reply, decoded as it arrived.
    Answered(T),
    /// No responders: nothing in the cluster subscribes to its request subject any more (a
    /// crashed or stopped server).
    Gone,
    /// No reply within the timeout (or another error): a stalled, busy or cut-off server.
    Silent,
}

/// Asks each of `servers` directly (`subject` made from its id) at once, decoding each reply as
/// it arrives (while the other requests of the poll are still being answered, rather than all
/// after the last); [`Probe::Silent`] for each that stays silent for `timeout`.
async fn ask_each<T>(
    client: &Client,
    servers: &[&KnownServer],
    subject: fn(&str) -> String,
    body: &'static str,
    timeout: Duration,
    decode: impl Fn(bytes::Bytes) -> T + Copy,
) -> Vec<Probe<T>> {
    join_all(servers.iter().map(|k| async move {
        let request = client.request(subject(&k.id), body.into());
        match tokio::time::timeout(timeout, request).await {
            Ok(Ok(msg)) => Probe::Answered(decode(msg.payload)),
            Ok(Err(e)) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {
                Probe::Gone
            }
            _ => Probe::Silent,
        }
    }))
    .await
}

/// The large-group poll (see `Plan::Large`) into `snapshot`. The three requests run at once.
async fn poll_large(
    client: &Client,
    snapshot: &mut Snapshot,
    expected: &BTreeSet<&str>,
    sample: &[KnownServer],
    timing: GatherTiming,
) -> Result<(), GatherError> {
    let mut identities: Vec<ServerIdentity> = Vec::new();
    let mut leader_replies: Vec<Decoded> = Vec::new();
    let idz_done = tokio::sync::Notify::new();
    let (mut identity_bytes, mut identity_malformed) = (0, 0);
    let idz = async {
        let result = scatter(client, PING_IDZ, "", expected, timing, |payload| {
            identity_bytes += payload.len() as u64;
            let name = decode_identity(payload, &mut identities);
            identity_malformed += u64::from(name.is_none());
            name
        })
        .await;
        idz_done.notify_one();
        result
    };
    let leaders = collect_leaders(client, timing, &idz_done, &mut leader_replies);
    let sample: Vec<&KnownServer> = sample.iter().collect();
    let followers = ask_each(
        client,
        &sample,
        direct_jsz_subject,
        "{}",
        timing.probe_timeout,
        |payload| decode_view(&payload, Via::Direct),
    );
    let (idz, leaders, followers) = tokio::join!(idz, leaders, followers);
    idz?;
    leaders?;
    for decoded in leader_replies {
        accept(snapshot, decoded);
    }
    for probe in followers {
        if let Probe::Answered(decoded) = probe {
            accept(snapshot, decoded);
        }
    }
    snapshot.bytes += identity_bytes;
    snapshot.malformed += identity_malformed;
    for identity in identities {
        // A whole view beats an identity.
        snapshot
            .views
            .entry(identity.name.clone())
            .or_insert_with(|| ServerView {
                server: identity,
                meta: None,
                via: Via::Identity,
                jetstream: false,
                facts: None,
            });
    }
    Ok(())
}

/// Asks each known server missing from the snapshot directly, for its JSZ view or with
/// `identity` only its IDZ; those that stay silent are marked unanswered.
async fn probe_silent(
    client: &Client,
    snapshot: &mut Snapshot,
    known: &[KnownServer],
    timing: GatherTiming,
    identity: bool,
) {
    let silent: Vec<&KnownServer> = known
        .iter()
        .filter(|k| !snapshot.views.contains_key(&k.name))
        .collect();
    let (subject, body): (fn(&str) -> String, &'static str) = if identity {
        (direct_idz_subject, "")
    } else {
        (direct_jsz_subject, "{}")
    };
    // Kept as they come (one small IDZ, or one view) and decoded after, by kind.
    let replies = ask_each(client, &silent, subject, body, timing.probe_timeout, |b| b).await;
    for (known, probe) in silent.iter().zip(replies) {
        match probe {
            Probe::Answered(payload) if identity => {
                snapshot.bytes += payload.len() as u64;
                let mut found = Vec::new();
                if decode_identity(&payload, &mut found).is_none() {
                    snapshot.malformed += 1;
                }
                for identity in found {
                    snapshot.views.insert(
                        identity.name.clone(),
                        ServerView {
                            server: identity,
                            meta: None,
                            via: Via::Identity,
                            jetstream: false,
                            facts: None,
                        },
                    );
                }
            }
            Probe::Answered(payload) => {
                accept(snapshot, decode_view(&payload, Via::Direct));
            }
            Probe::Gone => {
                snapshot.unanswered.insert(known.name.clone());
            }
            Probe::Silent => {
                snapshot.unanswered.insert(known.name.clone());
                snapshot.busy.insert(known.name.clone());
            }
        }
    }
}

/// Collects the JSZ replies of every server that believes it leads. With no leader nobody
/// answers: stop when the identity gather finished rather than at `max_wait` (replies already
/// received are still taken).
async fn collect_leaders(
    client: &Client,
    timing: GatherTiming,
    idz_done: &tokio::sync::Notify,
    replies: &mut Vec<Decoded>,
) -> Result<(), GatherError> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(PING_JSZ, inbox, LEADER_ONLY.into())
        .await?;
    let mut deadline = tokio::time::Instant::now() + timing.max_wait;
    let mut idz_finished = false;
    loop {
        tokio::select! {
            reply = tokio::time::timeout_at(deadline, sub.next()) => match reply {
                Ok(Some(msg)) => {
                    replies.push(decode_view(&msg.payload, Via::Gather));
                    // A rival leader answers about as fast: linger a little for it.
                    deadline = deadline.min(tokio::time::Instant::now() + timing.idle_gap);
                }
                Ok(None) | Err(_) => break,
            },
            // The identity gather ends a linger after the last known server answered, and a
            // rival leader answers as fast as any server: by then its reply is in. Lingering
            // once more here held every large poll 25 ms longer for nothing.
            _ = idz_done.notified(), if !idz_finished => {
                idz_finished = true;
                deadline = deadline.min(tokio::time::Instant::now());
            }
        }
    }
    Ok(())
}

/// Decodes an IDZ reply into `into`, returning the server name (`None`, logged: malformed).
fn decode_identity(payload: &[u8], into: &mut Vec<ServerIdentity>) -> Option<String> {
    match serde_json::from_slice::<ServerIdentity>(payload) {
        Ok(identity) => {
            let name = identity.name.clone();
            into.push(identity);
            Some(name)
        }
        Err(error) => {
            crate::log_malformed("IDZ reply", &error);
            None
        }
    }
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

/// One JSZ reply, decoded: its size and its view (`None`: malformed, already logged).
struct Decoded {
    bytes: u64,
    view: Option<ServerView>,
}

/// Decodes one JSZ reply.
fn decode_view(payload: &[u8], via: Via) -> Decoded {
    let view = match decode_reply(payload) {
        Ok(reply) => Some(ServerView::from_reply(reply, via)),
        Err(error) => {
            crate::log_malformed("JSZ reply", &error);
            None
        }
    };
    Decoded {
        bytes: payload.len() as u64,
        view,
    }
}

/// Puts one decoded JSZ reply into the snapshot; returns who answered (`None`: malformed,
/// counted).
fn accept(snapshot: &mut Snapshot, decoded: Decoded) -> Option<String> {
    snapshot.bytes += decoded.bytes;
    let Some(view) = decoded.view else {
        snapshot.malformed += 1;
        return None;
    };
    let name = view.server.name.clone();
    snapshot.unanswered.remove(&name);
    snapshot.busy.remove(&name);
    snapshot.views.insert(name.clone(), view);
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::plan::{merge_views, FOLLOWER_SAMPLE};

    fn known(n: usize) -> Vec<KnownServer> {
        (0..n)
            .map(|i| KnownServer {
                name: format!("n{i}"),
                id: format!("ID{i}"),
            })
            .collect()
    }

    fn view(name: &str) -> ServerView {
        ServerView {
            server: crate::observe::jsz::ServerIdentity {
                name: name.to_string(),
                id: format!("ID{name}"),
                cluster: None,
                domain: None,
                ver: None,
            },
            meta: None,
            via: Via::Direct,
            jetstream: true,
            facts: None,
        }
    }

    #[test]
    fn views_only_on_own_links_say_which_side_of_a_cut_the_main_path_is_on() {
        // Cut off alone: the main path reached its own server only.
        let mut cut_off = Snapshot::default();
        cut_off.views.insert("n1".into(), view("n1"));
        merge_views(&mut cut_off, ["n1", "n2", "n3", "n4", "n5"].map(view));
        assert!(cut_off.reach_impaired);
        assert_eq!(cut_off.main_reach, 1);
        assert!(cut_off.main_path_in_minority());
        // The large side: one server answered only on its own link.
        let mut large = Snapshot::default();
        for name in ["n1", "n2", "n3", "n4"] {
            large.views.insert(name.into(), view(name));
        }
        merge_views(&mut large, ["n1", "n2", "n3", "n4", "n5"].map(view));
        assert!(large.reach_impaired);
        assert!(!large.main_path_in_minority());
        // Nothing through the main path: its server is silent, not on a side.
        let mut silent = Snapshot::default();
        merge_views(&mut silent, ["n2", "n3"].map(view));
        assert!(!silent.reach_impaired);
        assert!(!silent.main_path_in_minority());
    }

    #[test]
    fn a_gather_does_not_wait_for_spared_servers_but_still_for_every_other_known_one() {
        let servers = known(3);
        let all = expected(&servers, &BTreeSet::new());
        assert_eq!(all, BTreeSet::from(["n0", "n1", "n2"]));
        let spared = BTreeSet::from(["n1".to_string(), "gone".to_string()]);
        assert_eq!(
            expected(&servers, &spared),
            BTreeSet::from(["n0", "n2"]),
            "a spared name that is not known changes nothing"
        );
    }

    #[test]
    fn small_groups_are_polled_in_full_and_large_or_unknown_ones_cheaply() {
        let servers = known(3);
        assert_eq!(Plan::for_group(Some(3), 64, &servers, 0), Plan::Full);
        assert_eq!(Plan::for_group(Some(64), 64, &servers, 0), Plan::Full);
        assert!(matches!(
            Plan::for_group(Some(65), 64, &servers, 0),
            Plan::Large { .. }
        ));
        // Before the first poll the size is unknown: the first poll must not be a full one.
        assert_eq!(
            Plan::for_group(None, 64, &[], 0),
            Plan::Large { sample: Vec::new() }
        );
    }

    #[test]
    fn the_follower_sample_rotates_through_every_known_server() {
        let servers = known(20);
        let mut seen = BTreeSet::new();
        for round in 0..3 {
            let Plan::Large { sample } = Plan::for_group(Some(1000), 64, &servers, round) else {
                panic!("a large group is polled cheaply");
            };
            assert_eq!(sample.len(), FOLLOWER_SAMPLE);
            seen.extend(sample.into_iter().map(|k| k.name));
        }
        assert_eq!(seen.len(), 20, "three rounds of 8 cover 20 servers");
    }
}
