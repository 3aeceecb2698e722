//! The high-availability decision as one state machine, without I/O and without a clock: the
//! engine feeds it [`Input`]s with its own `now` (time since the instance started, from its
//! monotonic clock), executes the [`Action`]s it returns, and calls it again at
//! [`Coordinator::next_deadline`]. `docs/ha.md` states the rule and its invariant.
//!
//! The rule: live instances are ordered by how long they have run (longest first; each one's
//! running time comes in its beats, so no two clocks are compared). The instance at position
//! `p` publishes a transition it wants once it has wanted it for `p x grace` and no peer has
//! published it meanwhile. A transition contrary to one a peer just published waits
//! `contrary_hold` first. Nothing is published before the instance has heard its peers' state
//! (or waited `sync_wait` for it) after a start, or after a reconnect while a peer is live, nor
//! while its server does not answer. Every copy of a transition carries the same event id, so a second copy (two
//! instances that could not hear each other) is a repeat consumers drop, never a second finding.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::findings::{ActiveSet, Transition, TransitionKind};
use crate::record::Record;
use crate::timing::HaTiming;

use super::ledger::Ledger;

pub use crate::timing::Now;

/// What an instance tells its peers when asked for its state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerState {
    /// Its instance id.
    pub instance: String,
    /// How long it has run (ms): orders the instances without comparing clocks.
    pub uptime_ms: u64,
    /// What it knows has been published.
    pub ledger: Ledger,
    /// It has heard a synced peer's state, or waited out the sync wait, since it started or
    /// reconnected: only then does its state end the wait of a peer that starts (one that is
    /// starting itself may know nothing yet, and its answer often comes first).
    #[serde(default)]
    pub synced: bool,
    /// The deployment it belongs to (`--deployment`); instances of another one are not peers.
    /// Set by the engine (empty from versions before deployments).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deployment: String,
}

/// Something that happened, for the coordinator to take into account.
#[derive(Debug, Clone)]
pub enum Input {
    /// A round was evaluated: `transitions` are what this instance wants published now (all of
    /// them: a transition wanted before and missing now is no longer wanted), `next` the active
    /// set reconcile computed (its evidence refreshes the ledger), `link` whether the server
    /// this instance publishes through answers a round trip.
    Evaluated {
        /// Reconcile's next active set.
        next: ActiveSet,
        /// Reconcile's transitions.
        transitions: Vec<Transition>,
        /// The publishing path answers.
        link: bool,
    },
    /// Only the publishing path's health changed (a round that could not evaluate).
    Link(bool),
    /// A peer announced itself.
    Beat {
        /// Its instance id.
        instance: String,
        /// How long it has run.
        uptime: Duration,
    },
    /// A finding event another instance published.
    Event(Record),
    /// A peer's state, answering [`Action::RequestState`].
    PeerState(PeerState),
    /// What the store holds (at start, or when it opened late).
    Stored(Ledger),
    /// The connection was re-established: events may have been missed.
    Reconnected,
    /// Publishing a transition failed: it is sent again.
    PublishFailed(Transition),
    /// Only time passed.
    Tick,
}

/// Something the engine must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Publish this transition's event; a failure is reported at once, before any other
    /// input, with [`Input::PublishFailed`].
    Publish(Transition),
    /// Write this record to the store (merged by mark there): what a peer published, or what
    /// this instance published, once the next input shows the publish did not fail.
    Persist(Record),
    /// Ask a peer for its state: `Some(id)` that one, `None` whichever answers first.
    RequestState(Option<String>),
    /// Announce this instance, with how long it has run.
    Beat(Duration),
}

/// A peer as this instance hears it.
#[derive(Debug, Clone, Copy)]
struct Peer {
    /// When it started, on this instance's clock (ms; negative if before this one started):
    /// the time it was heard less the running time it reported, bounded by what this instance
    /// saw (see [`Coordinator::heard`]).
    started: i128,
    /// When it was first heard (since it was last forgotten).
    first_heard: Now,
    /// When it was last heard.
    heard: Now,
}

/// A transition this instance wants published and has not published yet.
#[derive(Debug, Clone)]
struct Wanted {
    transition: Transition,
    since: Now,
}

/// The most peers remembered (the most recently heard stay): many instance ids, real or not,
/// cost bounded memory.
pub const PEERS_REMEMBERED: usize = 256;

/// A transition whose publish failed, and when to try it again.
#[derive(Debug, Clone)]
struct Unsent {
    transition: Transition,
    retry_at: Now,
}

/// The coordinator of one instance.
#[derive(Debug)]
pub struct Coordinator {
    me: String,
    /// When this instance started, on its own clock.
    born: Now,
    timing: HaTiming,
    ledger: Ledger,
    peers: BTreeMap<String, Peer>,
    wanted: BTreeMap<String, Wanted>,
    /// Keys a peer just changed, and until when a contrary transition waits.
    contrary: BTreeMap<String, Now>,
    /// Until when publishing waits for a peer's state (after a start or a reconnect).
    syncing: Option<Now>,
    link: bool,
    next_beat: Now,
    unsent: Vec<Unsent>,
    /// Failed publishes in a row, by key (cleared by one that goes out): how long the next try
    /// waits.
    failures: BTreeMap<String, u32>,
    /// Records of this instance's publications whose `Publish` is still queued.
    queued: Vec<Record>,
    /// Records of publications the engine has taken: persisted with the next input unless
    /// their publish failed meanwhile (a store holding a transition nobody published makes an
    /// instance that loads it skip the transition, or publish what follows it first).
    sent: Vec<Record>,
    actions: VecDeque<Action>,
}

fn ms(d: Duration) -> i128 {
    d.as_millis() as i128
}

impl Coordinator {
    /// A coordinator for instance `me` that starts at local time `now` with what the store
    /// loaded; it asks its peers for their state before it publishes anything, and holds a
    /// transition contrary to what it loaded for `contrary_hold`.
    pub fn new(me: &str, timing: HaTiming, stored: Ledger, now: Now) -> Coordinator {
        // What the store holds may have been published a moment ago, by a peer whose view
        // this instance's lags: a contrary view waits the hold, as after a peer's event.
        let hold = now + timing.contrary_hold;
        let contrary = stored
            .active
            .keys()
            .chain(stored.ended.keys())
            .map(|key| (key.clone(), hold))
            .collect();
        let mut c = Coordinator {
            me: me.to_string(),
            born: now,
            timing,
            ledger: stored,
            peers: BTreeMap::new(),
            wanted: BTreeMap::new(),
            contrary,
            syncing: Some(now + timing.sync_wait),
            link: true,
            next_beat: now,
            unsent: Vec::new(),
            failures: BTreeMap::new(),
            queued: Vec::new(),
            sent: Vec::new(),
            actions: VecDeque::new(),
        };
        c.actions.push_back(Action::RequestState(None));
        c.decide(now);
        c
    }

    /// What has been published, as far as this instance knows.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// This instance's state, for a peer that asks.
    pub fn peer_state(&self, now: Now) -> PeerState {
        PeerState {
            instance: self.me.clone(),
            uptime_ms: now.as_millis() as u64,
            ledger: self.ledger.clone(),
            synced: self.syncing.is_none_or(|until| now >= until),
            deployment: String::new(),
        }
    }

    /// True while a transition waits to be published.
    pub fn is_holding(&self) -> bool {
        !self.wanted.is_empty() || !self.unsent.is_empty()
    }

    /// This instance's position among the live instances (0: it publishes at once): how many
    /// live peers started before it. Start times are estimates (a beat's running time, less its
    /// delay in transit), so two that started within a beat of each other are ordered by id:
    /// both then agree, whichever way the delays fell.
    pub fn position(&self, now: Now) -> usize {
        self.live(now)
            .filter(|(id, p)| self.started_before(id, p))
            .count()
    }

    /// How many peers (other instances of the deployment) are live: heard within `peer_live`.
    pub fn live_peers(&self, now: Now) -> usize {
        self.live(now).count()
    }

    /// Whether `peer` comes before this instance in the order (it started earlier).
    fn started_before(&self, id: &str, peer: &Peer) -> bool {
        if peer.started.abs() < ms(self.timing.beat) {
            id < self.me.as_str()
        } else {
            peer.started < 0
        }
    }

    /// Whether the peer `id`, as last heard, started before this instance.
    fn ranks_before(&self, id: &str) -> bool {
        self.peers
            .get(id)
            .is_some_and(|peer| self.started_before(id, peer))
    }

    /// The live peers (heard within `peer_live`).
    fn live(&self, now: Now) -> impl Iterator<Item = (&String, &Peer)> {
        self.peers
            .iter()
            .filter(move |(_, p)| now.saturating_sub(p.heard) < self.timing.peer_live)
    }

    /// Takes one input at local time `now`; the actions it leads to are in [`Self::actions`].
    pub fn handle(&mut self, input: Input, now: Now) {
        // The engine reports a failed publish at once, before any other input.
        match &input {
            Input::PublishFailed(transition) => {
                let failed = Record::after(transition);
                self.sent
                    .retain(|r| (r.key(), r.mark()) != (failed.key(), failed.mark()));
            }
            _ => {
                for record in self.sent.drain(..) {
                    self.failures.remove(record.key());
                    self.actions.push_back(Action::Persist(record));
                }
            }
        }
        match input {
            Input::Evaluated {
                next,
                transitions,
                link,
            } => {
                self.link = link;
                self.ledger.refresh(&next);
                self.want(transitions, now);
            }
            Input::Link(link) => self.link = link,
            Input::Beat { instance, uptime } => self.heard(&instance, uptime, now),
            Input::Event(record) => {
                let key = record.key().to_string();
                if self.ledger.fold(record.clone()) {
                    // Whatever this instance wanted for the key was decided before the peer
                    // spoke; what it wants next is judged against the peer's state.
                    self.wanted.remove(&key);
                    self.contrary.insert(key, now + self.timing.contrary_hold);
                    self.actions.push_back(Action::Persist(record));
                }
            }
            Input::PeerState(state) => {
                if state.instance != self.me {
                    self.heard(&state.instance, Duration::from_millis(state.uptime_ms), now);
                    // The instances number in the epoch of the longest-running one.
                    let elder = self.ranks_before(&state.instance);
                    self.ledger.adopt_epoch(&state.ledger.epoch, elder);
                    for key in self.ledger.merge(state.ledger) {
                        self.wanted.remove(&key);
                        self.contrary.insert(key, now + self.timing.contrary_hold);
                    }
                    if state.synced {
                        self.syncing = None;
                    }
                }
            }
            Input::Stored(stored) => {
                for key in self.ledger.merge(stored) {
                    self.wanted.remove(&key);
                    self.contrary.insert(key, now + self.timing.contrary_hold);
                }
            }
            Input::Reconnected => {
                // Only a peer that can exist is waited for: one heard within its liveness
                // window may have published while this instance's link was down. With none
                // (a single instance, or peers long silent) the wait would only delay the
                // news of the fault that cut the link, often the crash of this instance's own
                // server; a peer heard again later is asked for its state then.
                if self.live(now).next().is_some() {
                    self.syncing = Some(now + self.timing.sync_wait);
                }
                self.actions.push_back(Action::RequestState(None));
            }
            Input::PublishFailed(transition) => {
                let failures = self
                    .failures
                    .entry(transition.finding.key.clone())
                    .or_default();
                *failures = failures.saturating_add(1);
                let retry_at = now + self.timing.publish_backoff.delay(*failures);
                self.unsent.push(Unsent {
                    transition,
                    retry_at,
                });
            }
            Input::Tick => {}
        }
        self.decide(now);
    }

    /// The actions to execute, in order (drained).
    pub fn actions(&mut self) -> impl Iterator<Item = Action> + '_ {
        self.sent.append(&mut self.queued);
        self.actions.drain(..)
    }

    /// When to call [`Self::handle`] with [`Input::Tick`] at the latest.
    pub fn next_deadline(&self, now: Now) -> Now {
        let mut next = self.next_beat;
        if let Some(until) = self.syncing {
            next = next.min(until);
        }
        // Peers going silent change the position.
        for peer in self.peers.values() {
            let gone = peer.heard + self.timing.peer_live;
            if gone > now {
                next = next.min(gone);
            }
        }
        // What is held waits for an input while nothing can be published (the end of the sync
        // wait is a deadline already; the link comes back with a round): counting it would
        // make every call due at once.
        let blocked = self.syncing.is_some() || !self.link;
        for unsent in self.unsent.iter().filter(|_| !blocked) {
            next = next.min(unsent.retry_at);
        }
        let wait = self.timing.grace * self.position(now) as u32;
        for (key, wanted) in self.wanted.iter().filter(|_| !blocked) {
            let mut due = wanted.since + wait;
            if let Some(until) = self.contrary.get(key) {
                due = due.max(*until);
            }
            next = next.min(due);
        }
        next.max(now)
    }

    /// Notes that `instance` (running for `uptime`) was heard at `now`; asks a peer that
    /// comes back after a silence (or is new) for its state, as it may have published what
    /// this instance did not hear.
    fn heard(&mut self, instance: &str, uptime: Duration, now: Now) {
        if instance == self.me {
            return;
        }
        let known = self.peers.get(instance);
        let back = known.is_none_or(|p| now.saturating_sub(p.heard) >= self.timing.peer_live);
        let first_heard = known.map_or(now, |p| p.first_heard);
        // A claimed running time counts only as far as this instance saw it: a peer that first
        // spoke well after this instance's start-up wait was not running (and beating) long
        // before, whatever it claims; one heard during the wait may have run for days.
        let mut started = ms(now) - ms(uptime);
        if first_heard > self.born + self.timing.sync_wait {
            started = started.max(ms(first_heard) - 2 * ms(self.timing.beat));
        }
        self.peers.insert(
            instance.to_string(),
            Peer {
                started,
                first_heard,
                heard: now,
            },
        );
        if back {
            self.actions
                .push_back(Action::RequestState(Some(instance.to_string())));
        }
    }

    /// Replaces what this instance wants with this round's transitions (a held raise keeps the
    /// time it was first wanted).
    fn want(&mut self, transitions: Vec<Transition>, now: Now) {
        let mut wanted = BTreeMap::new();
        for mut transition in transitions {
            let key = transition.finding.key.clone();
            // Reconcile works from the ledger: a transition it already holds is not news.
            if self.ledger.mark(&key) >= Some(Record::after(&transition).mark()) {
                continue;
            }
            let since = match self.wanted.remove(&key) {
                Some(before)
                    if (
                        before.transition.kind,
                        before.transition.episode,
                        before.transition.revision,
                    ) == (transition.kind, transition.episode, transition.revision) =>
                {
                    if transition.kind == TransitionKind::Raised {
                        transition.raised_at = before.transition.raised_at;
                        transition.at = before.transition.at;
                    }
                    before.since
                }
                _ => now,
            };
            wanted.insert(key, Wanted { transition, since });
        }
        self.wanted = wanted;
    }

    /// Publishes what is due and beats when it is time.
    fn decide(&mut self, now: Now) {
        if now >= self.next_beat {
            self.actions.push_back(Action::Beat(now));
            self.next_beat = now + self.timing.beat;
        }
        if self.syncing.is_some_and(|until| now >= until) {
            self.syncing = None;
        }
        self.contrary.retain(|_, until| *until > now);
        // Peers are remembered well past their silence (bounded in time and number), so one
        // that comes back after a partition keeps the running time this instance saw it reach.
        self.peers
            .retain(|_, p| now.saturating_sub(p.heard) < self.timing.peer_memory);
        if self.peers.len() > PEERS_REMEMBERED {
            let mut heard: Vec<Now> = self.peers.values().map(|p| p.heard).collect();
            heard.sort_unstable();
            let cutoff = heard[heard.len() - PEERS_REMEMBERED];
            self.peers.retain(|_, p| p.heard >= cutoff);
        }
        if self.syncing.is_some() || !self.link {
            return;
        }
        let (due, later): (Vec<Unsent>, Vec<Unsent>) = std::mem::take(&mut self.unsent)
            .into_iter()
            .partition(|u| now >= u.retry_at);
        self.unsent = later;
        for Unsent { transition, .. } in due {
            self.queued.push(Record::after(&transition));
            self.actions.push_back(Action::Publish(transition));
        }
        let wait = self.timing.grace * self.position(now) as u32;
        // What follows a transition still waiting to be sent again waits behind it: a key's
        // events go out in order.
        let retrying: BTreeSet<&str> = self
            .unsent
            .iter()
            .map(|u| u.transition.finding.key.as_str())
            .collect();
        let due: Vec<String> = self
            .wanted
            .iter()
            .filter(|(key, w)| {
                now >= w.since + wait
                    && self.contrary.get(*key).is_none_or(|until| now >= *until)
                    && !retrying.contains(key.as_str())
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            let Some(wanted) = self.wanted.remove(&key) else {
                continue;
            };
            let mut transition = wanted.transition;
            // A raise is numbered in the epoch the instances share when it goes out (reconcile
            // knows episodes, not epochs); what follows it keeps its raise's.
            if transition.kind == TransitionKind::Raised && transition.epoch.is_empty() {
                transition.epoch = self.ledger.epoch.clone();
            }
            if self.ledger.apply(&transition) {
                self.queued.push(Record::after(&transition));
                self.actions.push_back(Action::Publish(transition));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::ActiveFinding;
    use std::time::SystemTime;

    fn timing() -> HaTiming {
        crate::timing::Timing::default().ha
    }

    fn s(secs: f64) -> Now {
        Duration::from_secs_f64(secs)
    }

    fn raise(key: &str, episode: u64) -> Transition {
        Transition {
            kind: TransitionKind::Raised,
            finding: crate::ha::test_finding(key),
            episode,
            epoch: String::new(),
            revision: 1,
            raised_at: SystemTime::UNIX_EPOCH,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    /// Instance b, started at 0, that has heard the state of a, running for a minute: a is at
    /// position 0, b at 1.
    fn behind_a_long_running_peer() -> Coordinator {
        let mut b = Coordinator::new("b", timing(), Ledger::default(), s(0.0));
        b.handle(
            Input::PeerState(PeerState {
                instance: "a".into(),
                uptime_ms: 60_000,
                ledger: Ledger::default(),
                synced: true,
                deployment: String::new(),
            }),
            s(0.1),
        );
        b
    }

    fn published(c: &mut Coordinator) -> Vec<Transition> {
        c.actions()
            .filter_map(|a| match a {
                Action::Publish(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    fn evaluated(c: &mut Coordinator, transitions: Vec<Transition>, now: Now) -> Vec<Transition> {
        c.handle(
            Input::Evaluated {
                next: ActiveSet::new(),
                transitions,
                link: true,
            },
            now,
        );
        published(c)
    }

    #[test]
    fn alone_it_publishes_once_the_sync_wait_is_over() {
        let mut c = Coordinator::new("a", timing(), Ledger::default(), s(0.0));
        assert!(c.actions().any(|a| a == Action::RequestState(None)));
        assert!(
            evaluated(&mut c, vec![raise("k", 1)], s(0.5)).is_empty(),
            "syncing"
        );
        c.handle(Input::Tick, s(1.0));
        assert!(
            published(&mut c).is_empty(),
            "a beat is due, the sync wait is not over"
        );
        c.handle(Input::Tick, timing().sync_wait);
        assert_eq!(published(&mut c).len(), 1);
        assert_eq!(
            c.ledger().mark("k"),
            Some(crate::record::Mark::active(1, 1))
        );
        assert!(
            evaluated(&mut c, vec![], s(3.0)).is_empty(),
            "published once"
        );
    }

    #[test]
    fn alone_a_reconnect_publishes_at_once_with_a_live_peer_it_waits_for_its_state() {
        // Alone: the crash of its own server (the link back at once elsewhere) is news at once.
        let mut c = Coordinator::new("a", timing(), Ledger::default(), s(0.0));
        c.handle(Input::Tick, timing().sync_wait);
        let _ = published(&mut c);
        let later = timing().sync_wait + s(30.0);
        c.handle(Input::Reconnected, later);
        assert_eq!(evaluated(&mut c, vec![raise("k", 1)], later).len(), 1);

        // With a peer heard within its liveness window, the peer may have published while the
        // link was down: its state is waited for, as after a start.
        let mut b = behind_a_long_running_peer();
        let at = timing().sync_wait;
        b.handle(
            Input::Beat {
                instance: "a".into(),
                uptime: s(60.0) + at,
            },
            at,
        );
        b.handle(Input::Reconnected, at);
        assert!(b.actions().any(|a| a == Action::RequestState(None)));
        let grace = timing().grace;
        assert!(evaluated(&mut b, vec![raise("k", 1)], at + grace).is_empty());
        b.handle(Input::Tick, at + timing().sync_wait + grace);
        assert_eq!(
            published(&mut b).len(),
            1,
            "published after the wait and its grace"
        );

        // A peer silent beyond its liveness window cannot have been waited on.
        let gone = at + timing().peer_live + s(1.0);
        b.handle(Input::Reconnected, gone);
        assert_eq!(evaluated(&mut b, vec![raise("k2", 1)], gone).len(), 1);
    }

    #[test]
    fn the_second_instance_waits_a_grace_then_publishes_what_the_first_did_not() {
        let mut b = behind_a_long_running_peer();
        assert_eq!(b.position(s(0.1)), 1);
        assert!(evaluated(&mut b, vec![raise("k", 1)], s(1.0)).is_empty());
        b.handle(
            Input::Beat {
                instance: "a".into(),
                uptime: s(61.0),
            },
            s(1.1),
        );
        assert!(evaluated(&mut b, vec![raise("k", 1)], s(2.0)).is_empty());
        b.handle(
            Input::Beat {
                instance: "a".into(),
                uptime: s(62.0),
            },
            s(2.1),
        );
        let due = s(1.0) + timing().grace;
        b.handle(Input::Tick, due - s(0.01));
        assert!(published(&mut b).is_empty(), "still within the grace");
        assert!(b.next_deadline(due - s(0.01)) <= due);
        b.handle(Input::Tick, due);
        assert_eq!(
            published(&mut b).len(),
            1,
            "a said nothing within the grace"
        );
    }

    #[test]
    fn a_peers_event_ends_the_wait_and_its_contrary_waits_the_hold() {
        let mut b = behind_a_long_running_peer();
        assert!(evaluated(&mut b, vec![raise("k", 1)], s(1.0)).is_empty());
        b.handle(Input::Event(Record::after(&raise("k", 1))), s(1.5));
        assert!(published(&mut b).is_empty());
        // a goes silent and resolves nothing; b's view clears at once: contrary, held.
        let mut resolve = raise("k", 1);
        resolve.kind = TransitionKind::Resolved;
        resolve.revision = 2;
        assert!(evaluated(&mut b, vec![resolve.clone()], s(2.0)).is_empty());
        // a stopped (silent past peer_live): b is at position 0, the hold is what is left.
        let later = s(1.5) + timing().contrary_hold.max(timing().peer_live);
        assert!(evaluated(&mut b, vec![resolve], later).len() == 1);
    }

    #[test]
    fn instances_started_within_a_beat_are_ordered_by_id_whatever_the_delays() {
        // a and b started 300 ms apart; each hears the other's beat late by a different delay.
        let mut a = Coordinator::new("a", timing(), Ledger::default(), s(0.0));
        let mut b = Coordinator::new("b", timing(), Ledger::default(), s(0.0));
        // (Both within their start-up wait, when instances that run together hear each other.)
        a.handle(
            Input::Beat {
                instance: "b".into(),
                uptime: s(0.7),
            },
            s(1.05),
        );
        b.handle(
            Input::Beat {
                instance: "a".into(),
                uptime: s(1.0),
            },
            s(0.9),
        );
        assert_eq!((a.position(s(1.1)), b.position(s(1.1))), (0, 1));
        // Started far apart: the longer-running one is first, whatever the ids.
        let mut z = Coordinator::new("z", timing(), Ledger::default(), s(0.0));
        z.handle(
            Input::Beat {
                instance: "b".into(),
                uptime: s(2.0),
            },
            s(30.0),
        );
        b.handle(
            Input::Beat {
                instance: "z".into(),
                uptime: s(30.0),
            },
            s(1.2),
        );
        assert_eq!(z.position(s(30.0)), 0);
        assert_eq!(b.position(s(1.2)), 2, "after a and z");
    }

    #[test]
    fn a_publication_is_persisted_only_once_it_did_not_fail() {
        let persisted = |actions: &[Action]| {
            actions
                .iter()
                .filter(|a| matches!(a, Action::Persist(_)))
                .count()
        };
        let mut c = Coordinator::new("a", timing(), Ledger::default(), s(0.0));
        c.handle(Input::Tick, timing().sync_wait);
        c.handle(
            Input::Evaluated {
                next: ActiveSet::new(),
                transitions: vec![raise("k", 1)],
                link: true,
            },
            s(2.0),
        );
        let actions: Vec<Action> = c.actions().collect();
        assert!(actions.contains(&Action::Publish(raise("k", 1))));
        assert_eq!(persisted(&actions), 0, "not before the publish is tried");
        // The publish failed (the engine says so before anything else): a peer that loaded the
        // record from the store would take the raise as published and never send it.
        c.handle(Input::PublishFailed(raise("k", 1)), s(2.0));
        let actions: Vec<Action> = c.actions().collect();
        assert!(
            !actions.contains(&Action::Publish(raise("k", 1))),
            "not again at once: a publish that fails at once would loop"
        );
        assert_eq!(persisted(&actions), 0);
        assert!(c.next_deadline(s(2.0)) <= s(3.0), "it wakes for the retry");
        c.handle(Input::Tick, s(2.9));
        assert!(!c.actions().any(|a| matches!(a, Action::Publish(_))));
        c.handle(Input::Tick, s(3.0));
        let actions: Vec<Action> = c.actions().collect();
        assert!(
            actions.contains(&Action::Publish(raise("k", 1))),
            "sent again"
        );
        c.handle(Input::Tick, s(3.5));
        let actions: Vec<Action> = c.actions().collect();
        assert!(
            actions.contains(&Action::Persist(Record::after(&raise("k", 1)))),
            "the second try went out"
        );
        assert_eq!(persisted(&actions), 1);
    }

    #[test]
    fn peers_that_appear_later_claiming_long_uptimes_rank_after_this_instance() {
        let mut c = Coordinator::new("m", timing(), Ledger::default(), s(0.0));
        c.handle(Input::Tick, timing().sync_wait);
        // Twenty instances no one heard before, each claiming a day of running time.
        let day = Duration::from_secs(86_400);
        for t in 0..10 {
            for i in 0..20 {
                let instance = format!("fake{i:02}");
                c.handle(
                    Input::Beat {
                        instance,
                        uptime: day,
                    },
                    s(60.0 + f64::from(t)),
                );
            }
        }
        assert_eq!(c.position(s(69.0)), 0, "it still publishes at once");
        let sent = evaluated(&mut c, vec![raise("k", 1)], s(69.5));
        assert_eq!(sent.len(), 1);
        // A peer heard during the start-up wait may well have run for a day: it ranks first.
        let mut d = Coordinator::new("d", timing(), Ledger::default(), s(0.0));
        d.handle(
            Input::Beat {
                instance: "old".into(),
                uptime: day,
            },
            s(0.5),
        );
        assert_eq!(d.position(s(1.0)), 1);
    }

    #[test]
    fn raises_go_out_in_the_epoch_of_the_longest_running_instance() {
        let with_epoch = |epoch: &str| Ledger {
            epoch: epoch.into(),
            ..Ledger::default()
        };
        // b starts with an epoch of its own and hears a, running for a minute: it takes a's.
        let mut b = Coordinator::new("b", timing(), with_epoch("Bnew"), s(0.0));
        let elder = PeerState {
            instance: "a".into(),
            uptime_ms: 60_000,
            ledger: with_epoch("Aold"),
            synced: true,
            deployment: String::new(),
        };
        b.handle(Input::PeerState(elder), s(0.1));
        assert_eq!(b.ledger().epoch, "Aold");
        // a hears b, younger: it keeps its own.
        let mut a = Coordinator::new("a", timing(), with_epoch("Aold"), s(0.0));
        let younger = PeerState {
            instance: "b".into(),
            uptime_ms: 100,
            ledger: with_epoch("Bnew"),
            synced: true,
            deployment: String::new(),
        };
        a.handle(Input::PeerState(younger), s(60.0));
        assert_eq!(a.ledger().epoch, "Aold");
        // The raise is stamped with it as it goes out; what follows keeps the raise's.
        let sent = evaluated(&mut a, vec![raise("k", 1)], s(61.0));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].epoch, "Aold");
        assert_eq!(a.ledger().active["k"].epoch, "Aold");
    }

    #[test]
    fn a_publish_that_keeps_failing_backs_off_and_holds_what_follows() {
        let mut c = Coordinator::new("a", timing(), Ledger::default(), s(0.0));
        c.handle(Input::Tick, timing().sync_wait);
        evaluated(&mut c, vec![raise("k", 1)], s(2.0));
        let mut now = s(2.0);
        let mut tries = vec![];
        c.handle(Input::PublishFailed(raise("k", 1)), now);
        while now < s(120.0) {
            now = c.next_deadline(now).max(now + Duration::from_millis(1));
            c.handle(Input::Tick, now);
            for action in c.actions().collect::<Vec<_>>() {
                if let Action::Publish(t) = action {
                    tries.push(now.as_secs_f64().round() as u64);
                    c.handle(Input::PublishFailed(t), now);
                }
            }
        }
        // 1 s, then doubling up to 30 s: a handful of tries in two minutes, not thousands.
        assert_eq!(tries[..6], [3, 5, 9, 17, 33, 63], "{tries:?}");
        assert!(tries.len() < 10, "{tries:?}");
        // A resolution of the key waits behind the raise still being retried.
        let mut resolved = raise("k", 1);
        resolved.kind = TransitionKind::Resolved;
        resolved.revision = 2;
        assert!(evaluated(&mut c, vec![resolved], now).is_empty());
    }

    #[test]
    fn a_peer_that_is_starting_too_does_not_end_the_wait() {
        let mut stored = Ledger::default();
        stored.fold(Record::Resolved(crate::record::ResolvedFinding {
            finding: raise("k", 3).finding,
            episode: 3,
            epoch: String::new(),
            revision: 2,
            raised_at: SystemTime::UNIX_EPOCH,
            resolved_at: SystemTime::UNIX_EPOCH,
        }));
        let mut a = Coordinator::new("a", timing(), stored, s(0.0));
        let mut b = Coordinator::new("b", timing(), Ledger::default(), s(0.0));
        // c started with b, the store down: its answer (the first to come) knows nothing.
        let c = Coordinator::new("c", timing(), Ledger::default(), s(0.0));
        let young = c.peer_state(s(0.05));
        assert!(!young.synced);
        b.handle(Input::PeerState(young), s(0.05));
        assert!(
            evaluated(&mut b, vec![raise("k", 1)], s(0.1)).is_empty(),
            "still waiting"
        );
        // a ran long enough to know: its state ends b's wait.
        a.handle(Input::Tick, timing().sync_wait);
        let known = a.peer_state(timing().sync_wait);
        assert!(known.synced);
        b.handle(Input::PeerState(known), s(0.2));
        assert_eq!(b.ledger().mark("k"), Some(crate::record::Mark::resolved(3)));
        assert!(
            evaluated(&mut b, vec![raise("k", 1)], s(0.3)).is_empty(),
            "a raise of an episode that ended is not news"
        );
    }

    #[test]
    fn what_it_cannot_publish_does_not_make_it_due_at_once() {
        let mut c = Coordinator::new("a", timing(), Ledger::default(), s(0.0));
        assert!(evaluated(&mut c, vec![raise("k", 1)], s(0.5)).is_empty());
        assert!(
            c.next_deadline(s(0.5)) > s(0.5),
            "syncing: the engine would wake again at once, and again"
        );
        c.handle(Input::Tick, timing().sync_wait);
        assert_eq!(published(&mut c).len(), 1);
        c.handle(
            Input::Evaluated {
                next: ActiveSet::new(),
                transitions: vec![raise("j", 1)],
                link: false,
            },
            s(2.0),
        );
        assert!(published(&mut c).is_empty(), "its server does not answer");
        assert!(
            c.next_deadline(s(2.0)) > s(2.0),
            "the link comes back with a round"
        );
        assert_eq!(evaluated(&mut c, vec![raise("j", 1)], s(3.0)).len(), 1);
    }

    #[test]
    fn what_the_store_says_is_a_peers_news_for_a_contrary_view() {
        // A peer raised k a moment ago and the record is stored; this instance starts with a
        // view that lags (it does not see the fault yet) and is first in line.
        let mut stored = Ledger::default();
        stored.apply(&raise("k", 1));
        let mut c = Coordinator::new("c", timing(), stored, s(0.0));
        c.handle(Input::Tick, timing().sync_wait);
        let mut resolve = raise("k", 1);
        resolve.kind = TransitionKind::Resolved;
        resolve.revision = 2;
        assert!(
            evaluated(&mut c, vec![resolve.clone()], timing().sync_wait).is_empty(),
            "held: its view may only lag the raise it loaded"
        );
        let after = timing().contrary_hold;
        assert!(c.next_deadline(timing().sync_wait) <= after);
        assert_eq!(
            evaluated(&mut c, vec![resolve], after).len(),
            1,
            "a contrary view that lasts the hold is real"
        );
        // The same for what a store that opened late brings.
        let mut late = Ledger::default();
        late.apply(&raise("j", 4));
        c.handle(Input::Stored(late), s(10.0));
        let mut resolve = raise("j", 4);
        resolve.kind = TransitionKind::Resolved;
        resolve.revision = 2;
        assert!(evaluated(&mut c, vec![resolve.clone()], s(10.5)).is_empty());
        assert_eq!(evaluated(&mut c, vec![resolve], s(10.0) + after).len(), 1);
    }

    #[test]
    fn ids_are_the_transitions_not_the_observers() {
        let t = raise("k", 7);
        let mut other = t.clone();
        other.raised_at = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        other.at = other.raised_at;
        assert_eq!(crate::wire::event_id(&t), crate::wire::event_id(&other));
        let mut next = t.clone();
        next.episode = 8;
        assert_ne!(crate::wire::event_id(&t), crate::wire::event_id(&next));
    }

    #[test]
    fn a_stored_ledger_names_the_episode_and_a_restart_does_not_raise_again() {
        let mut stored = Ledger::default();
        stored.fold(Record::Active(ActiveFinding {
            finding: raise("k", 3).finding,
            episode: 3,
            epoch: String::new(),
            revision: 1,
            raised_at: SystemTime::UNIX_EPOCH,
            changed_at: SystemTime::UNIX_EPOCH,
        }));
        let mut c = Coordinator::new("a", timing(), stored, s(0.0));
        c.handle(Input::Tick, s(2.0));
        assert!(evaluated(&mut c, vec![raise("k", 3)], s(2.1)).is_empty());
    }
}
