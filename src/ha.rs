//! High availability: what several instances watching one cluster share, so that each transition
//! is published once even while the state bucket cannot arbitrate.
//!
//! The published finding events are the shared truth. Every instance folds the events its peers
//! publish into its own state ([`Shared`]), keyed by finding and ordered by [`Rank`] (a later
//! episode, then a higher revision, wins), so a transition a peer already published is adopted,
//! never republished, and a late copy of an old event changes nothing. Each instance answers
//! `$INSIGHTS.HA.STATE.<instance>` with that state, so one that starts, or that missed events
//! while reconnecting, catches up from a live peer before it publishes.
//!
//! Who publishes when the store is unavailable: the longest-running live instance (start times
//! travel in the micro service metadata, so a restarted instance never takes over from a running
//! one that answered a ping within [`PRIMARY_SILENCE`]). The others hold a transition back and
//! publish it only if it is still wanted, and still unpublished, after [`STANDBY_GRACE`]: a dead
//! primary costs a few seconds, never a finding, and a stuck one (its server stopped) costs no
//! more than a missed ping round, so a stall shorter than the grace is still published.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_nats::Client;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::checks::Finding;
use crate::findings::{ActiveFinding, ActiveSet, Transition, TransitionKind, ADOPTED_FINGERPRINT};
use crate::publish::FindingEvent;
use crate::service;
use crate::store::{rank, Rank, Record, ResolvedFinding};

/// Prefix of the subjects on which each instance answers with its state.
pub const HA_STATE_PREFIX: &str = "$INSIGHTS.HA.STATE";
/// How long an instance that stopped answering pings still counts as alive (to learn state from).
pub const PEER_GRACE: Duration = Duration::from_secs(10);
/// How long an older instance that stopped answering pings still counts as the one that
/// publishes: pings go every two seconds, so it missed a round. Its connection is down or stuck
/// on a stopped server; if it is only reconnecting, it catches up from the peers' state before
/// it publishes anything, so the transition a standby published meanwhile is not repeated.
pub const PRIMARY_SILENCE: Duration = Duration::from_secs(3);
/// How long a transition is held back when another instance should publish it (the store cannot
/// arbitrate and this instance is not the primary), or when a peer just published the contrary.
pub const STANDBY_GRACE: Duration = Duration::from_secs(5);

/// How long an instance that cannot reach the store waits, before publishing a transition
/// unclaimed, for the event of a peer that can reach it and may be publishing the same one
/// claimed: two publications at the same instant cannot see each other.
pub const UNCLAIMED_SETTLE: Duration = Duration::from_millis(300);

/// The token that asks every instance at once (instance ids are 22-character nuids).
pub const ANY_INSTANCE: &str = "ANY";

/// The subject on which instance `id` answers with its state.
pub fn state_subject(id: &str) -> String {
    format!("{HA_STATE_PREFIX}.{id}")
}

/// Another instance, as the pings see it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// When it started (ms since the epoch; 0 if it did not say).
    pub started_ms: u64,
    /// When it last answered.
    pub seen: Instant,
}

/// The instances that answered the pings (this one included).
#[derive(Debug, Default)]
pub struct Peers {
    /// By instance id.
    pub map: BTreeMap<String, Peer>,
    /// Ping rounds this instance saw its own answer in: until one did, it knows nobody.
    pub rounds: u64,
    /// When the last such round ended.
    pub last_round: Option<Instant>,
}

impl Peers {
    /// Live peers other than `me`, longest-running first.
    pub fn oldest_first(&self, me: &str) -> Vec<String> {
        let mut live: Vec<(u64, &String)> = self
            .map
            .iter()
            .filter(|(id, p)| id.as_str() != me && p.seen.elapsed() < PEER_GRACE)
            .map(|(id, p)| (p.started_ms, id))
            .collect();
        live.sort();
        live.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// Notes that instance `id` (started at `started_ms`) answered just now.
    pub fn heard(&mut self, id: &str, started_ms: u64) {
        self.map.insert(
            id.to_string(),
            Peer {
                started_ms,
                seen: Instant::now(),
            },
        );
    }

    /// True when a peer may be running that this instance cannot name: it pinged recently and
    /// saw one, or its pings have not seen their own answer lately (its connection was stopped
    /// or moving), so one may have started meanwhile.
    pub fn may_have_peers(&self, me: &str) -> bool {
        let blind = self
            .last_round
            .is_none_or(|at| at.elapsed() > PRIMARY_SILENCE);
        blind || self.map.keys().any(|id| id != me)
    }

    /// True when this instance is the longest-running one that answered a ping within
    /// [`PRIMARY_SILENCE`] (ties: the smaller id). Never before it has seen a ping round of its
    /// own: a fresh instance does not know who runs.
    pub fn is_primary(&self, me: &str, started_ms: u64) -> bool {
        self.rounds > 0
            && self
                .map
                .iter()
                .filter(|(id, p)| id.as_str() != me && p.seen.elapsed() < PRIMARY_SILENCE)
                .all(|(id, p)| (p.started_ms, id.as_str()) > (started_ms, me))
    }
}

/// Peers as shared with the background pinger.
pub type SharedPeers = Arc<Mutex<Peers>>;

/// Pings the instances every two seconds and notes when each answered and when it started.
pub async fn track_peers(client: Client, me: String, peers: SharedPeers) {
    let mut every = tokio::time::interval(Duration::from_secs(2));
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let live = service::live_instances(&client, Duration::from_millis(500)).await;
        // A round without our own answer says our connection is down, not that peers are.
        if !live.iter().any(|i| i.id == me) {
            continue;
        }
        if let Ok(mut peers) = peers.lock() {
            let now = Instant::now();
            for instance in live {
                peers.heard(&instance.id, instance.started_ms);
            }
            peers.map.retain(|_, p| p.seen.elapsed() < PEER_GRACE * 4);
            peers.rounds += 1;
            peers.last_round = Some(now);
        }
    }
}

/// What has been published about each finding, as far as this instance knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shared {
    /// Raised and not resolved.
    pub active: ActiveSet,
    /// The rank of the last resolved episode of each key.
    pub resolved: BTreeMap<String, Rank>,
}

impl Shared {
    /// Starts from the active findings loaded from the store.
    pub fn new(active: ActiveSet) -> Self {
        Shared {
            active,
            resolved: BTreeMap::new(),
        }
    }

    /// The rank of the newest state known for `key`.
    pub fn known_rank(&self, key: &str) -> Option<Rank> {
        let active = self.active.get(key).map(|a| rank(a.raised_at, a.revision));
        active.max(self.resolved.get(key).copied())
    }

    /// Takes `record` if it is newer than what is known of its key; true if it was.
    pub fn fold(&mut self, record: Record) -> bool {
        let key = record.key().to_string();
        let incoming = record.rank();
        if self.known_rank(&key) >= Some(incoming) {
            return false;
        }
        match record {
            Record::Active(active) => {
                self.active.insert(key, active);
            }
            Record::Resolved(_) => {
                self.active.remove(&key);
                self.resolved.insert(key, incoming);
            }
        }
        true
    }

    /// Takes the resolution of `key`'s episode of rank `resolved` if newer; true if it was.
    pub fn fold_resolved(&mut self, key: &str, resolved: Rank) -> bool {
        if self.known_rank(key) >= Some(resolved) {
            return false;
        }
        self.active.remove(key);
        self.resolved.insert(key.to_string(), resolved);
        true
    }

    /// Takes from `other` whatever is newer; returns the keys that changed.
    pub fn merge(&mut self, other: Shared) -> Vec<String> {
        let mut changed = Vec::new();
        for (key, resolved) in other.resolved {
            if self.fold_resolved(&key, resolved) {
                changed.push(key);
            }
        }
        for (key, active) in other.active {
            if self.fold(Record::Active(active)) {
                changed.push(key);
            }
        }
        changed
    }
}

/// The record a finding event leaves behind (its fingerprint is not in the event: the next
/// evaluation supplies it). `None` if its times cannot be read.
pub fn record_of_event(event: &FindingEvent) -> Option<Record> {
    let raised_at = humantime::parse_rfc3339_weak(&event.raised_at).ok()?;
    let at = humantime::parse_rfc3339_weak(&event.timestamp).ok()?;
    let finding = Finding {
        check: event.check,
        key: event.finding.clone(),
        cluster: event.cluster.clone(),
        domain: event.domain.clone(),
        server: event.server.clone(),
        summary: event.summary.clone(),
        evidence: event.evidence.clone(),
        remediation: event.remediation.clone(),
        fingerprint: ADOPTED_FINGERPRINT.to_string(),
    };
    Some(match event.event {
        TransitionKind::Resolved => Record::Resolved(ResolvedFinding {
            finding,
            revision: event.revision,
            raised_at,
            resolved_at: at,
        }),
        TransitionKind::Raised | TransitionKind::Updated => Record::Active(ActiveFinding {
            finding,
            revision: event.revision,
            raised_at,
            changed_at: at,
        }),
    })
}

/// The transition that left `record` behind (the inverse of [`Record::after`]).
pub fn transition_of_record(record: &Record) -> Transition {
    match record {
        Record::Resolved(r) => Transition {
            kind: TransitionKind::Resolved,
            finding: r.finding.clone(),
            revision: r.revision,
            raised_at: r.raised_at,
            at: r.resolved_at,
        },
        Record::Active(a) => Transition {
            kind: if a.revision <= 1 {
                TransitionKind::Raised
            } else {
                TransitionKind::Updated
            },
            finding: a.finding.clone(),
            revision: a.revision,
            raised_at: a.raised_at,
            at: a.changed_at,
        },
    }
}

/// An instance's answer on its state subject.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HaState {
    /// Its instance id.
    pub instance: String,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// What it knows has been published.
    pub shared: Shared,
}

/// Answers `$INSIGHTS.HA.STATE.<me>` and `$INSIGHTS.HA.STATE.ANY` with the latest state until the
/// channel closes.
pub async fn answer_state(client: Client, me: String, state: watch::Receiver<Arc<HaState>>) {
    let subscribed = futures::future::try_join(
        client.subscribe(state_subject(&me)),
        client.subscribe(state_subject(ANY_INSTANCE)),
    )
    .await;
    let mut requests = match subscribed {
        Ok((mine, any)) => futures::stream::select(mine, any),
        Err(error) => {
            tracing::warn!(%error, "cannot answer state requests of peer instances");
            return;
        }
    };
    let mut closed = state.clone();
    loop {
        tokio::select! {
            request = requests.next() => {
                let Some(request) = request else { return };
                let Some(reply) = request.reply else { continue };
                let body = serde_json::to_vec(&**state.borrow()).unwrap_or_default();
                if let Err(error) = client.publish(reply, body.into()).await {
                    tracing::debug!(%error, "cannot answer a state request");
                }
            }
            changed = closed.changed() => {
                if changed.is_err() { return; }
            }
        }
    }
}

/// Asks every instance for its state and takes the first answer of one other than `me`, waiting
/// at most `wait`: no need to know which peers run (one may have started moments ago), and a
/// dead one costs nothing.
pub async fn request_any_state(client: &Client, me: &str, wait: Duration) -> Option<HaState> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.ok()?;
    client
        .publish_with_reply(state_subject(ANY_INSTANCE), inbox, "".into())
        .await
        .ok()?;
    let first = async {
        while let Some(reply) = replies.next().await {
            match serde_json::from_slice::<HaState>(&reply.payload) {
                Ok(state) if state.instance != me => return Some(state),
                _ => continue,
            }
        }
        None
    };
    tokio::time::timeout(wait, first).await.ok().flatten()
}

/// Milliseconds since the epoch of `t`.
pub fn ms(t: SystemTime) -> u64 {
    service::unix_ms(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::CheckId;

    fn finding(key: &str) -> Finding {
        Finding {
            check: CheckId::META_001,
            key: key.into(),
            cluster: None,
            domain: None,
            server: Some("n2".into()),
            summary: "s".into(),
            evidence: serde_json::json!({}),
            remediation: vec![],
            fingerprint: "n2".into(),
        }
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn active(key: &str, raised: u64, revision: u64) -> Record {
        Record::Active(ActiveFinding {
            finding: finding(key),
            revision,
            raised_at: t(raised),
            changed_at: t(raised),
        })
    }

    fn resolved(key: &str, raised: u64, revision: u64) -> Record {
        Record::Resolved(ResolvedFinding {
            finding: finding(key),
            revision,
            raised_at: t(raised),
            resolved_at: t(raised + 5),
        })
    }

    #[test]
    fn newer_records_win_and_late_copies_of_old_ones_change_nothing() {
        let mut shared = Shared::default();
        assert!(shared.fold(active("k", 1, 1)));
        assert!(!shared.fold(active("k", 1, 1)), "the same event twice");
        assert!(shared.fold(resolved("k", 1, 2)));
        assert!(shared.active.is_empty());
        assert!(
            !shared.fold(active("k", 1, 1)),
            "a late raise of a resolved episode"
        );
        assert!(shared.active.is_empty());
        assert!(shared.fold(active("k", 10, 1)), "a new episode");
        assert!(
            !shared.fold(resolved("k", 1, 2)),
            "an old resolution does not end a new episode"
        );
        assert_eq!(shared.active["k"].raised_at, t(10));
    }

    #[test]
    fn a_resolution_ends_the_episode_however_late_another_instance_dated_it() {
        // The publisher raised at 1 and resolved at 6; a peer that saw the fault at 3 holds
        // the same episode as raised at 3.
        let mut shared = Shared::default();
        assert!(shared.fold(active("k", 3, 1)));
        assert!(shared.fold(resolved("k", 1, 2)), "the resolution ends it");
        assert!(shared.active.is_empty());
        assert!(
            !shared.fold(active("k", 3, 1)),
            "its later copy does not reopen it"
        );
        assert!(shared.fold(active("k", 7, 1)), "a raise after it does");
    }

    #[test]
    fn merging_a_peers_state_takes_its_resolutions_and_new_findings() {
        let mut mine = Shared::default();
        mine.fold(active("stale", 1, 1));
        mine.fold(active("mine", 2, 1));
        let mut peer = Shared::default();
        peer.fold(active("stale", 1, 1));
        peer.fold(resolved("stale", 1, 2));
        peer.fold(active("theirs", 3, 1));
        let mut changed = mine.merge(peer);
        changed.sort();
        assert_eq!(changed, ["stale", "theirs"]);
        assert!(!mine.active.contains_key("stale"));
        assert!(mine.active.contains_key("mine") && mine.active.contains_key("theirs"));
    }

    #[test]
    fn events_become_records_of_the_same_rank_as_the_publishers() {
        let mut a = ActiveFinding {
            finding: finding("k"),
            revision: 1,
            raised_at: t(1) + Duration::from_nanos(1_234_567),
            changed_at: t(1),
        };
        let transition = crate::findings::Transition {
            kind: TransitionKind::Raised,
            finding: a.finding.clone(),
            revision: 1,
            raised_at: a.raised_at,
            at: a.raised_at,
        };
        let event = FindingEvent::from_transition(&transition, "i");
        let record = record_of_event(&event).expect("readable");
        a.changed_at = a.raised_at;
        assert_eq!(record.rank(), rank(a.raised_at, 1));
        let Record::Active(adopted) = record else {
            panic!("raised is active")
        };
        assert_eq!(adopted.finding.fingerprint, ADOPTED_FINGERPRINT);
    }

    #[test]
    fn a_stored_transition_published_again_carries_the_first_events_id() {
        let raised_at = t(1) + Duration::from_nanos(1_234_567);
        let transition = crate::findings::Transition {
            kind: TransitionKind::Resolved,
            finding: finding("k"),
            revision: 2,
            raised_at,
            at: t(9) + Duration::from_nanos(7_654_321),
        };
        let first = FindingEvent::from_transition(&transition, "publisher");
        // What the bucket holds, and what a peer learns from the event, lead to the same id.
        let again = transition_of_record(&Record::after(&transition));
        assert_eq!(FindingEvent::from_transition(&again, "peer").id, first.id);
        let learned = record_of_event(&first).expect("readable");
        let again = transition_of_record(&learned);
        assert_eq!(FindingEvent::from_transition(&again, "peer").id, first.id);
        // The same fault seen a moment later by another instance is another event.
        let later = crate::findings::Transition {
            raised_at: raised_at + Duration::from_millis(600),
            ..transition.clone()
        };
        assert_ne!(FindingEvent::from_transition(&later, "peer").id, first.id);
        let raised = crate::findings::Transition {
            kind: TransitionKind::Raised,
            revision: 1,
            at: raised_at,
            ..transition
        };
        assert_ne!(
            FindingEvent::from_transition(&raised, "publisher").id,
            first.id
        );
    }

    #[test]
    fn peers_may_run_unseen_until_a_recent_ping_round_saw_none() {
        let mut peers = Peers::default();
        assert!(peers.may_have_peers("b"), "no ping round yet");
        let now = Instant::now();
        peers.last_round = Some(now);
        peers.map.insert(
            "b".into(),
            Peer {
                started_ms: 200,
                seen: now,
            },
        );
        assert!(!peers.may_have_peers("b"), "a fresh round saw only b");
        if let Some(long_ago) = now.checked_sub(PRIMARY_SILENCE * 2) {
            peers.last_round = Some(long_ago);
            assert!(
                peers.may_have_peers("b"),
                "blind since: one may have started"
            );
        }
        peers.last_round = Some(now);
        peers.rounds = 1;
        assert!(peers.is_primary("b", 200), "alone");
        // z, running longer, answered a state request between ping rounds.
        peers.heard("z", 100);
        assert!(peers.may_have_peers("b"));
        assert!(!peers.is_primary("b", 200), "z heard: z publishes");
    }

    #[test]
    fn the_longest_running_live_instance_is_primary() {
        let mut peers = Peers::default();
        assert!(!peers.is_primary("b", 200), "not before a ping round");
        let now = Instant::now();
        peers.rounds = 1;
        peers.map.insert(
            "b".into(),
            Peer {
                started_ms: 200,
                seen: now,
            },
        );
        assert!(peers.is_primary("b", 200), "alone");
        peers.map.insert(
            "z".into(),
            Peer {
                started_ms: 100,
                seen: now,
            },
        );
        assert!(!peers.is_primary("b", 200), "z runs longer");
        assert!(peers.is_primary("z", 100));
        assert_eq!(peers.oldest_first("b"), ["z"]);
        // z missed a ping round: stuck or gone, b publishes; z is still one to learn from.
        if let Some(z) = now.checked_sub(PRIMARY_SILENCE) {
            peers.map.insert(
                "z".into(),
                Peer {
                    started_ms: 100,
                    seen: z,
                },
            );
            assert!(peers.is_primary("b", 200), "z silent");
            assert_eq!(peers.oldest_first("b"), ["z"]);
        }
    }
}
