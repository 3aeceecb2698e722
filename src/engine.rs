//! Wiring: runs observe → evaluate → reconcile → publish → serve in one loop. Polls on a timer,
//! re-evaluates at once on meta events, takes `now` once per round and passes it down.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::connection::State;
use async_nats::Client;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::Instrument;

use crate::checks::{evaluate_groups, Evaluation, MemberState, MetaAssessment, Thresholds};
pub use crate::connect::Connections;
use crate::findings::{reconcile, ActiveFinding, Transition, TransitionKind};
use crate::ha::{self, HaState, Shared, SharedPeers, STANDBY_GRACE, UNCLAIMED_SETTLE};
use crate::history::Histories;
use crate::observe::events::{self, EventError};
use crate::observe::gather::{self, GatherTiming, Plan};
use crate::observe::{MetaEvent, Snapshot};
use crate::publish::{FindingEvent, Heartbeat, Publisher, FINDING_PREFIX};
use crate::service::{self, EngineStatus, Instance};
use crate::store::{self, Claim, Loaded, Persistence, Record, StoreError, StoreSettings, Stored};

/// How long the attached server has to answer a round trip during a poll before the poll is cut
/// short as silent (a healthy server answers in milliseconds; the gather would wait 2 s).
const ATTACHED_ANSWER: Duration = Duration::from_secs(1);

/// How long a (re)connected instance waits for a peer's state: the first answer ends the wait,
/// so only an instance that runs alone waits this long.
const PEER_STATE_WAIT: Duration = Duration::from_millis(500);

/// Everything the engine needs besides the connection.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Check thresholds.
    pub thresholds: Thresholds,
    /// Time between polls.
    pub poll_interval: Duration,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// Gather timing.
    pub timing: GatherTiming,
    /// The KV bucket for state; `None` keeps state in memory.
    pub store: Option<StoreSettings>,
    /// Meta groups up to this size are polled in full, larger ones as `Plan::Large`.
    pub full_poll_max_members: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            thresholds: Thresholds::default(),
            poll_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(10),
            timing: GatherTiming::default(),
            store: None,
            full_poll_max_members: gather::FULL_POLL_MAX_MEMBERS,
        }
    }
}

/// Why the engine stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Event subscriptions could not be made.
    #[error("cannot subscribe to meta events: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// The event stream ended: the connection was closed.
    #[error("the NATS connection was closed")]
    Closed,
    /// The micro service failed.
    #[error(transparent)]
    Service(#[from] service::ServiceError),
    /// The state store cannot be used as configured.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What started a round.
enum Trigger {
    /// The poll timer: gather first.
    Poll,
    /// An event that needs fresh views (a new leader, a removed peer).
    Regather,
    /// An event fully described by itself (shutdown, lame duck): judge now with the last views.
    Reevaluate,
}

/// A transition this instance wants to publish and has not.
#[derive(Debug, Clone)]
struct Held {
    kind: TransitionKind,
    /// When it was first wanted.
    since: std::time::Instant,
    /// The same, as wall-clock time: a held raise keeps it as its `raised_at`.
    first_at: SystemTime,
}

/// A record another instance wrote in the bucket, adopted when this instance's claim lost, whose
/// event this instance has not seen. Its writer publishes it, unless the claim's answer was lost
/// to the writer too (it then held the transition back) and the writer stopped before publishing:
/// then this instance must, or the finding stays unpublished and its resolution would come alone.
struct Unconfirmed {
    /// Who wrote it.
    writer: String,
    /// The adopted record.
    record: Record,
    /// When it was adopted.
    since: std::time::Instant,
}

/// The running pipeline's state.
struct Engine {
    client: Client,
    direct: Vec<Client>,
    config: EngineConfig,
    publisher: Publisher,
    /// The memory of every meta group.
    history: Histories,
    /// What has been published about each finding (by this instance or its peers).
    shared: Shared,
    snapshot: Snapshot,
    status: EngineStatus,
    status_tx: watch::Sender<Arc<EngineStatus>>,
    instance: Instance,
    persistence: Persistence,
    /// Instances, when each started and last answered a ping (kept by a background task).
    peers: SharedPeers,
    /// When this instance started (ms since the epoch): the longest-running live one publishes
    /// while the store cannot arbitrate.
    started_ms: u64,
    /// Peers' finding events, folded into `shared` before each round.
    peer_events: Option<async_nats::Subscriber>,
    /// What this instance answers peers asking for its state.
    ha_tx: watch::Sender<Arc<HaState>>,
    /// Transitions wanted but not published yet, and since when.
    held: BTreeMap<String, Held>,
    /// Keys a peer changed, and when: a contrary transition waits for `STANDBY_GRACE`.
    peer_changed: BTreeMap<String, std::time::Instant>,
    /// Records adopted from the bucket on a lost claim whose event has not been seen yet.
    unconfirmed: BTreeMap<String, Unconfirmed>,
    /// The main connection's connect count when state was last synced from a peer: a higher
    /// count means events may have been missed while reconnecting.
    synced_connects: u64,
    /// When the main connection was last moved away from its server.
    moved_at: Option<std::time::Instant>,
    /// When the state connection was last moved away from its server.
    state_moved_at: Option<std::time::Instant>,
    /// Set when the attached server announced it is leaving: move before the next publish.
    moving: bool,
    /// The last poll got nothing through the main connection while servers answered on their
    /// direct links (its server is stopped or cut off, and moving did not help yet).
    attached_silent: bool,
    /// Members of every meta group as last seen (chooses how to poll); `None` before any view.
    group_size: Option<usize>,
    /// Each meta group as last assessed (kept while a round cannot assess it).
    assessed: BTreeMap<crate::observe::GroupId, MetaAssessment>,
}

/// True when `server` answers but the meta group judges it offline while others are online: it
/// is cut off from the group, and what goes through it reaches only its side.
fn cut_off(meta: &MetaAssessment, server: &str) -> bool {
    meta.members
        .iter()
        .any(|m| m.name == server && m.answered && matches!(m.state, MemberState::Offline(_)))
        && meta.members.iter().any(|m| m.online())
}

/// The members of every meta group in a snapshot (the largest size any view of a group
/// reports, added up over the groups): how many servers a full poll asks.
fn group_size(snapshot: &Snapshot) -> Option<usize> {
    let mut sizes: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    for (view, meta) in snapshot.meta_views() {
        let size = sizes.entry(view.server.domain.as_deref()).or_default();
        *size = (*size).max(meta.cluster_size.max(meta.replicas.len()));
    }
    (!sizes.is_empty()).then(|| sizes.values().sum())
}

/// Runs until `shutdown` completes or the connection closes for good.
pub async fn run(
    connections: Connections,
    config: EngineConfig,
    instance: Instance,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EngineError> {
    let (status_tx, _) = watch::channel(Arc::default());
    run_with_status(connections, config, instance, shutdown, status_tx).await
}

/// Like `run`, publishing each status on `status_tx`, whose receivers (e.g. the metrics endpoint)
/// the caller subscribed before.
pub async fn run_with_status(
    connections: Connections,
    config: EngineConfig,
    instance: Instance,
    shutdown: impl Future<Output = ()>,
    status_tx: watch::Sender<Arc<EngineStatus>>,
) -> Result<(), EngineError> {
    // Several instances may share a process (tests, the soak): tag their logs.
    let tail = instance
        .id
        .get(instance.id.len().saturating_sub(4)..)
        .unwrap_or_default()
        .to_string();
    let span = tracing::info_span!("instance", id = %tail);
    run_instrumented(connections, config, instance, shutdown, status_tx)
        .instrument(span)
        .await
}

async fn run_instrumented(
    connections: Connections,
    config: EngineConfig,
    instance: Instance,
    shutdown: impl Future<Output = ()>,
    status_tx: watch::Sender<Arc<EngineStatus>>,
) -> Result<(), EngineError> {
    let Connections {
        main: client,
        direct,
        state,
        ..
    } = connections;
    let mut event_stream = events::subscribe(&client).await?;
    // State first: findings raised before a restart must be known before the first round, or
    // they would be raised a second time.
    let (persistence, loaded) = match (state, config.store.clone()) {
        (Some(state), Some(mut settings)) => {
            settings.instance = instance.id.clone();
            let first = gather::poll(
                &client,
                &[],
                &Plan::for_group(None, 0, &[], 0),
                config.timing,
            )
            .await
            .ok();
            let cluster_size = first
                .as_ref()
                .and_then(|s| s.meta_views().map(|(_, m)| m.cluster_size).max());
            Persistence::start(state, settings, cluster_size).await?
        }
        _ => (Persistence::Memory, Loaded::default()),
    };
    status_tx.send_replace(Arc::new(EngineStatus {
        store: persistence.health(),
        ..EngineStatus::default()
    }));
    let peers = SharedPeers::default();
    let pinger = tokio::spawn(
        ha::track_peers(client.clone(), instance.id.clone(), Arc::clone(&peers)).in_current_span(),
    );
    let started_ms = service::unix_ms(instance.started);
    let (ha_tx, ha_rx) = watch::channel(Arc::new(HaState {
        instance: instance.id.clone(),
        started_ms,
        shared: Shared::default(),
    }));
    let answerer = tokio::spawn(
        ha::answer_state(client.clone(), instance.id.clone(), ha_rx).in_current_span(),
    );
    // Peers' events are the shared truth (a denied subscription only costs that knowledge).
    let peer_events = match client.subscribe(format!("{FINDING_PREFIX}.>")).await {
        Ok(events) => Some(events),
        Err(error) => {
            tracing::warn!(%error, "cannot follow the finding events of peer instances");
            None
        }
    };
    let status_rx = status_tx.subscribe();
    let service = tokio::spawn(service::serve(
        client.clone(),
        instance.clone(),
        status_rx,
        config.thresholds,
    ));
    let mut engine = Engine {
        publisher: Publisher::new(client.clone(), instance.id.clone()),
        client,
        direct,
        config: config.clone(),
        history: loaded.history.unwrap_or_default(),
        shared: Shared::new(loaded.active),
        snapshot: Snapshot::default(),
        status: EngineStatus {
            store: persistence.health(),
            ..EngineStatus::default()
        },
        persistence,
        peers: Arc::clone(&peers),
        started_ms,
        peer_events,
        ha_tx,
        held: BTreeMap::new(),
        peer_changed: BTreeMap::new(),
        unconfirmed: BTreeMap::new(),
        synced_connects: 0,
        moved_at: None,
        state_moved_at: None,
        moving: false,
        attached_silent: false,
        group_size: None,
        assessed: BTreeMap::new(),
        status_tx,
        instance,
    };
    let mut poll = tokio::time::interval(config.poll_interval);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut heartbeat = tokio::time::interval(config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);

    let result = loop {
        let trigger = tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = poll.tick() => Trigger::Poll,
            event = event_stream.next() => match event {
                Some(Ok(event)) => engine.on_event(event),
                Some(Err(error)) => { engine.on_malformed_event(&error); continue; }
                None => break Err(EngineError::Closed),
            },
            _ = heartbeat.tick() => { engine.heartbeat().await; continue; }
        };
        if service.is_finished() {
            break match service.await {
                Ok(Err(e)) => Err(e.into()),
                _ => Err(EngineError::Closed),
            };
        }
        engine.round(trigger).await;
    };
    pinger.abort();
    answerer.abort();
    engine.persistence.flush(&engine.history).await;
    drop(engine);
    result
}

impl Engine {
    fn on_event(&mut self, event: MetaEvent) -> Trigger {
        tracing::info!(kind = event.kind(), detail = %event.describe(), "meta event");
        if let MetaEvent::Shutdown { server, .. } | MetaEvent::LameDuck { server, .. } = &event {
            if *server == self.client.server_info().server_name {
                self.moving = true;
            }
        }
        *self
            .status
            .events
            .entry(event.kind().to_string())
            .or_default() += 1;
        self.history.record_event(&event);
        match event {
            MetaEvent::Shutdown { .. } | MetaEvent::LameDuck { .. } => Trigger::Reevaluate,
            MetaEvent::LeaderElected { .. } | MetaEvent::ServerRemoved { .. } => Trigger::Regather,
        }
    }

    fn on_malformed_event(&mut self, error: &EventError) {
        self.status.malformed += 1;
        crate::log_malformed("event", error);
    }

    async fn heartbeat(&self) {
        let beat = Heartbeat::new(
            &self.instance.id,
            &self.shared.active,
            self.status.last_poll,
            SystemTime::now(),
        );
        if let Err(error) = self.publisher.heartbeat(&beat).await {
            tracing::warn!(%error, "cannot publish heartbeat");
        }
    }

    /// One pass through the pipeline.
    async fn round(&mut self, trigger: Trigger) {
        if matches!(trigger, Trigger::Poll | Trigger::Regather) {
            if self.client.connection_state() != State::Connected {
                self.status.skipped = Some("disconnected from NATS; reconnecting".to_string());
                self.publish_status();
                return;
            }
            let known = self.history.known_servers();
            let mut retried = false;
            let polled = loop {
                let plan = self.plan(&known);
                let connects = self.client.statistics().connects.load(Ordering::Relaxed);
                let (polled, own) = tokio::join!(
                    gather::poll_or_silence(
                        &self.client,
                        &known,
                        &plan,
                        self.config.timing,
                        ATTACHED_ANSWER,
                    ),
                    gather::own_views(&self.direct, self.config.timing.probe_timeout),
                );
                // The main connection dropped and came back (or not yet) during the poll: its
                // silence is the reconnect's, not its server's.
                let reconnected = self.client.statistics().connects.load(Ordering::Relaxed)
                    != connects
                    || self.client.connection_state() != State::Connected;
                let polled = polled.map(|mut snapshot| {
                    // Nothing came back through the main connection while servers answer on
                    // their own links: the server it is attached to is stopped or cut off (or
                    // the connection was reconnecting), and the silence of every server
                    // without a direct answer says nothing.
                    let silent = snapshot.views.is_empty() && !own.is_empty();
                    gather::merge_views(&mut snapshot, own);
                    (snapshot, silent)
                });
                // Poll again at once (after moving, unless the connection just moved by
                // itself), not after a later round-trip check, so that a short stall is still
                // published while it lasts.
                if !retried {
                    let again = match &polled {
                        Ok((_, true)) => reconnected || self.move_away("does not answer").await,
                        // The connection dropped mid-poll (its server was killed): the replies
                        // and direct requests in flight were lost with it, so the servers that
                        // had not answered yet were not heard, not silent.
                        Ok((_, false)) => reconnected,
                        Err(_) => false,
                    };
                    if again {
                        tracing::debug!(reconnected, "polling again");
                        retried = true;
                        continue;
                    }
                }
                // Dropped again: this snapshot decides nothing that gets published.
                break polled.map(|(snapshot, silent)| (snapshot, silent || reconnected));
            };
            match polled {
                Ok((snapshot, silent)) => {
                    self.attached_silent = silent;
                    self.status.polls += 1;
                    self.status.malformed += snapshot.malformed;
                    self.status.last_poll_ms = snapshot.duration.as_millis() as u64;
                    self.status.last_poll = Some(SystemTime::now());
                    self.status.servers_answering = snapshot.views.len();
                    self.status.last_poll_bytes = snapshot.bytes;
                    if let Some(size) = group_size(&snapshot) {
                        self.group_size = Some(size);
                    }
                    self.snapshot = snapshot;
                }
                Err(error) => {
                    tracing::warn!(%error, "poll failed");
                    self.status.skipped = Some(error.to_string());
                    self.publish_status();
                    return;
                }
            }
        }
        let now = SystemTime::now();
        // Every meta group (one per JetStream domain) is judged on its own part of the poll.
        let parts = self.history.split(&self.snapshot);
        if matches!(trigger, Trigger::Poll | Trigger::Regather) {
            self.history.record_snapshots(&parts, now);
        }
        let groups = evaluate_groups(&parts, &self.history, &self.config.thresholds, now);
        // (A group's reason names its domain.)
        self.status.skipped = match groups.is_empty() {
            true if self.snapshot.views.is_empty() => {
                Some("no server answered the JSZ poll".to_string())
            }
            true => Some("no server reported a JetStream meta group".to_string()),
            false => groups.iter().find_map(|g| g.skipped().map(str::to_string)),
        };
        for group in &groups {
            if let Some(meta) = &group.meta {
                self.assessed.insert(group.group.clone(), meta.clone());
            }
        }
        // Set now: the status published with each event below must show what raised it.
        self.status.meta_groups = self.assessed.values().cloned().collect();
        let metas: Vec<&MetaAssessment> = groups.iter().filter_map(|g| g.meta.as_ref()).collect();
        let evaluations: Vec<Evaluation> = groups
            .iter()
            .flat_map(|g| g.evaluations.iter().cloned())
            .collect();
        if std::mem::take(&mut self.moving) {
            self.move_away("is going away").await;
        }
        // Nothing is published through a server that is silent (the snapshot gathered through
        // it is partial: hold what it concludes) or cut off.
        let mut stuck = self.attached_silent;
        {
            // Findings published through a server cut off from the group reach only its side:
            // move first, publish after.
            let attached = self.client.server_info().server_name;
            if metas.iter().any(|meta| cut_off(meta, &attached)) {
                self.move_away("is cut off from the meta group").await;
                // Still there (a move was made moments ago, or failed): publish nothing
                // through it this round.
                stuck |= self.client.server_info().server_name == attached;
            }
        }
        self.keep_state_connection_fit(&metas).await;
        // What peers published meanwhile is the state this round starts from.
        self.catch_up().await;
        let previous = self.shared.active.clone();
        let (mut next, mut transitions) = reconcile(&previous, &evaluations, now);
        // A transition no longer wanted was never published: nothing to say about it.
        self.held.retain(|key, held| {
            transitions
                .iter()
                .any(|t| t.finding.key == *key && t.kind == held.kind)
        });
        for transition in &mut transitions {
            let held = self
                .held
                .entry(transition.finding.key.clone())
                .or_insert(Held {
                    kind: transition.kind,
                    since: std::time::Instant::now(),
                    first_at: transition.at,
                });
            // A raise held back keeps the time it was first seen.
            if transition.kind == TransitionKind::Raised {
                transition.raised_at = held.first_at;
                if let Some(active) = next.get_mut(&transition.finding.key) {
                    active.raised_at = held.first_at;
                }
            }
        }
        // The shared state changes only with what is published (here or by a peer): the state
        // each transition leads to waits aside until it is.
        let mut wanted: BTreeMap<String, Option<ActiveFinding>> = BTreeMap::new();
        for transition in &transitions {
            let key = &transition.finding.key;
            wanted.insert(key.clone(), next.remove(key));
            if let Some(before) = previous.get(key) {
                next.insert(key.clone(), before.clone());
            }
        }
        self.shared.active = next;
        // A connection that is down, or attached to a server that does not answer (stopped,
        // cut off), would only buffer events to deliver them late, after a peer published
        // them: hold everything and move.
        let live = transitions.is_empty() || (!stuck && self.connection_answers().await);
        if !live {
            self.move_away("does not answer").await;
        }
        let mut published = Vec::new();
        let mut settled = None;
        for transition in &transitions {
            let key = transition.finding.key.clone();
            let waited = self
                .held
                .get(&key)
                .is_some_and(|h| h.since.elapsed() >= STANDBY_GRACE);
            // A peer just published the contrary: views lag each other by a poll or two, so
            // this one must persist before it counts.
            let contested = self
                .peer_changed
                .get(&key)
                .is_some_and(|at| at.elapsed() < STANDBY_GRACE);
            if !live || (contested && !waited) {
                continue;
            }
            // What this would follow was adopted from the bucket and not seen published yet:
            // publishing it first would tell consumers of a change to a finding they never saw.
            if self.unconfirmed.contains_key(&key) {
                continue;
            }
            // Claim before publishing: with several instances on one bucket only the winner
            // publishes; an unavailable store never holds a finding back for long.
            match self.persistence.claim(transition).await {
                Claim::Won => {
                    // A peer that published it unclaimed (its store unavailable) while this
                    // claim was under way has said it already.
                    // (What it wrote is then a ghost the peer's state overwrites.)
                    self.drain_peer_events();
                    if !self.held.contains_key(&key) {
                        continue;
                    }
                    self.persistence.published(transition);
                }
                Claim::Unavailable => {
                    // The store cannot arbitrate: the longest-running live instance publishes;
                    // the others hold the transition back, and publish it themselves only if
                    // it is still unpublished after STANDBY_GRACE (the primary may be dead).
                    // Events peers published meanwhile are folded first.
                    self.drain_peer_events();
                    if !self.held.contains_key(&key) {
                        // A peer published about this key meanwhile: its state stands.
                        continue;
                    }
                    if !self.is_primary() && !waited {
                        tracing::debug!(finding = %key, "store unavailable; holding back for the primary instance");
                        continue;
                    }
                    // A peer that reaches the store may be publishing the same transition,
                    // claimed, at this very moment: give its event time to arrive, and hear
                    // what the peers have published (once a round).
                    let heard = match settled {
                        Some(heard) => heard,
                        None => {
                            tokio::time::sleep(UNCLAIMED_SETTLE).await;
                            let heard = self.hear_peers().await;
                            settled = Some(heard);
                            heard
                        }
                    };
                    if !self.held.contains_key(&key) {
                        continue;
                    }
                    // The peer that answered may be the longer-running one, missed by pings
                    // sent while this instance's connection was stuck or cut off.
                    if heard && !self.is_primary() && !waited {
                        tracing::debug!(finding = %key, "store unavailable; a longer-running peer answered, holding back for it");
                        continue;
                    }
                    // Peers run but none answers, and this instance's server reached at most
                    // half of the servers: it is on the small side of a cut, and a peer on the
                    // other side, which reaches the store, publishes. (A peer silent while this
                    // side is the large one is stopped or stuck, or cut off itself.)
                    if !heard && !waited && self.snapshot.main_path_in_minority() {
                        tracing::debug!(finding = %key, "store unavailable and no peer instance answers; holding back");
                        continue;
                    }
                    self.persistence.published_unclaimed(transition);
                }
                Claim::Lost(stored) => {
                    tracing::debug!(finding = %key, record = ?stored.as_ref().map(|s| s.record.rank()), "claim lost; adopting the stored record");
                    self.held.remove(&key);
                    if let Some(stored) = stored {
                        let Stored { writer, record } = *stored;
                        // A state of the open episode no later than the one known published,
                        // only dated later by an instance that saw the fault a moment later:
                        // nothing new to publish.
                        let mine = self.shared.active.get(&key);
                        let known = matches!(&record, Record::Active(theirs)
                            if mine.is_some_and(|m| m.revision >= theirs.revision));
                        if !known && self.shared.fold(record.clone()) {
                            self.unconfirmed.insert(
                                key.clone(),
                                Unconfirmed {
                                    writer,
                                    record,
                                    since: std::time::Instant::now(),
                                },
                            );
                        }
                    }
                    continue;
                }
            }
            self.held.remove(&key);
            match wanted.remove(&key).flatten() {
                Some(active) => {
                    self.shared.active.insert(key.clone(), active);
                }
                None => {
                    self.shared.active.remove(&key);
                }
            }
            if transition.kind == TransitionKind::Resolved {
                self.shared
                    .fold_resolved(&key, store::resolved_rank(transition.at));
            }
            // Peers asking for the state from now on must get it with this transition, even
            // while the rest of the round waits on a slow store: one that starts, or reconnects,
            // and drained this event already would otherwise take the older state over it. The
            // API, likewise: a consumer that hears the event and asks STATUS must see it.
            self.publish_status();
            self.announce(transition).await;
            published.push(transition.clone());
        }
        if live {
            published.extend(self.publish_unconfirmed().await);
        }
        self.status
            .recent
            .record(&published, &self.history.leader_changes());
        // The bucket's replicas are bounded by the size of the group the state connection is
        // in (its JetStream domain), else of the largest group.
        let state_server = self.persistence.server();
        let cluster_size = metas
            .iter()
            .find(|m| {
                state_server
                    .as_ref()
                    .is_some_and(|s| m.members.iter().any(|member| member.name == *s))
            })
            .or_else(|| metas.iter().max_by_key(|m| m.cluster_size))
            .map(|m| m.cluster_size);
        self.persistence.save_history(&self.history).await;
        if let Some(loaded) = self
            .persistence
            .maintain(&self.shared.active, cluster_size)
            .await
        {
            // The store came back after a start without it: adopt what other instances (or a
            // previous run) hold that this run has not seen.
            for (_, record) in loaded.active {
                self.shared.fold(Record::Active(record));
            }
        }
        self.status.store = self.persistence.health();
        self.publish_status();
    }

    /// Publishes a transition's event and logs it (a failure is logged: the state moves on).
    async fn announce(&self, transition: &Transition) {
        match self.publisher.transition(transition).await {
            Ok(event) => tracing::info!(
                subject = %event.subject(),
                server = %self.client.server_info().server_name,
                finding = %event.finding,
                revision = event.revision,
                "{}", event.summary
            ),
            Err(error) => {
                tracing::error!(%error, finding = %transition.finding.key, "cannot publish finding event")
            }
        }
    }

    /// Publishes the adopted records whose events never came: after `STANDBY_GRACE` when their
    /// writer is gone (a restarted instance has a new id), after three times that when it is
    /// still there (it would have published by then). A record the state moved past is dropped.
    async fn publish_unconfirmed(&mut self) -> Vec<Transition> {
        let live = self
            .peers
            .lock()
            .map(|p| p.oldest_first(&self.instance.id))
            .unwrap_or_default();
        let mut published = Vec::new();
        let keys: Vec<String> = self.unconfirmed.keys().cloned().collect();
        for key in keys {
            let Some(u) = self.unconfirmed.get(&key) else {
                continue;
            };
            if self.shared.known_rank(&key) != Some(u.record.rank()) {
                self.unconfirmed.remove(&key);
                continue;
            }
            let wait = if live.contains(&u.writer) {
                STANDBY_GRACE * 3
            } else {
                STANDBY_GRACE
            };
            if u.since.elapsed() < wait {
                continue;
            }
            let Some(u) = self.unconfirmed.remove(&key) else {
                continue;
            };
            let transition = ha::transition_of_record(&u.record);
            tracing::warn!(finding = %key, writer = %u.writer, "a transition another instance stored was never published; publishing it");
            self.persistence.published(&transition);
            self.announce(&transition).await;
            published.push(transition);
        }
        published
    }

    /// Moves the main connection to another server and waits (briefly) until it is attached
    /// there, so what is published next reaches the group. At most once every ten seconds.
    /// True when it is now attached to another server.
    async fn move_away(&mut self, why: &str) -> bool {
        if self
            .moved_at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(10))
        {
            return false;
        }
        self.moved_at = Some(std::time::Instant::now());
        let server = self.client.server_info().server_name;
        tracing::warn!(%server, "the server this monitor is attached to {why}; moving to another");
        if let Err(error) = self.client.force_reconnect().await {
            tracing::warn!(%error, "cannot move to another server");
            return false;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let moved = self.client.connection_state() == State::Connected
                && self.client.server_info().server_name != server;
            if moved || tokio::time::Instant::now() >= deadline {
                return moved;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Moves the state connection off a server that answered nothing on any path or is cut off
    /// from the meta group (at most once every ten seconds): claims through it would time out
    /// and the transitions go out unclaimed, perhaps twice.
    async fn keep_state_connection_fit(&mut self, metas: &[&MetaAssessment]) {
        let Some(server) = self.persistence.server() else {
            return;
        };
        let unheard = self.snapshot.unanswered.contains(&server) && !self.snapshot.views.is_empty();
        if !(unheard || metas.iter().any(|m| cut_off(m, &server)))
            || self
                .state_moved_at
                .is_some_and(|at| at.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        self.state_moved_at = Some(std::time::Instant::now());
        tracing::warn!(%server, "the state connection's server does not answer or is cut off; moving it to another");
        self.persistence.move_away().await;
    }

    /// How to poll next: in full for small groups; for large ones the leader, every server's
    /// identity and a sample of followers that rotates with each poll (the leader is not sampled:
    /// it answers anyway).
    fn plan(&self, known: &[gather::KnownServer]) -> Plan {
        // Every group's leader answers anyway (one per domain).
        let leaders: std::collections::BTreeSet<&str> = self
            .snapshot
            .meta_views()
            .filter(|(v, m)| m.leader_name() == Some(v.server.name.as_str()))
            .map(|(v, _)| v.server.name.as_str())
            .collect();
        let followers: Vec<gather::KnownServer> = known
            .iter()
            .filter(|k| !leaders.contains(k.name.as_str()))
            .cloned()
            .collect();
        Plan::for_group(
            self.group_size,
            self.config.full_poll_max_members,
            &followers,
            self.status.polls,
        )
    }

    /// True when this is the longest-running live instance. Peers are pinged in the background;
    /// one that answered within `PRIMARY_SILENCE` still counts, so a peer that is only
    /// reconnecting (its server just died) is not mistaken for a dead one.
    fn is_primary(&self) -> bool {
        self.peers
            .lock()
            .map(|p| p.is_primary(&self.instance.id, self.started_ms))
            .unwrap_or(false)
    }

    /// True when the main connection is up and its server answers a round trip (a flush only
    /// proves the bytes reached the socket: a stopped server still takes them).
    async fn connection_answers(&self) -> bool {
        self.client.connection_state() == State::Connected
            && crate::publish::round_trip(&self.client, Duration::from_secs(1)).await
    }

    /// Folds the finding events peers published since the last call.
    fn drain_peer_events(&mut self) {
        let Some(events) = self.peer_events.as_mut() else {
            return;
        };
        let mut records = Vec::new();
        while let Some(Some(msg)) = events.next().now_or_never() {
            let Ok(event) = serde_json::from_slice::<FindingEvent>(&msg.payload) else {
                continue;
            };
            if event.instance == self.instance.id {
                continue;
            }
            if let Some(record) = ha::record_of_event(&event) {
                records.push(record);
            }
        }
        for record in records {
            let key = record.key().to_string();
            let rank = record.rank();
            if self
                .unconfirmed
                .get(&key)
                .is_some_and(|u| u.record.rank() <= rank)
            {
                self.unconfirmed.remove(&key);
            }
            let known = self.shared.known_rank(&key);
            let adopted = self.shared.fold(record.clone());
            tracing::debug!(finding = %key, ?rank, ?known, adopted, "a peer instance's event");
            if adopted {
                self.persistence.adopted(record);
                // Whatever this instance wanted for the key was decided before the peer spoke.
                self.held.remove(&key);
                self.peer_changed.insert(key, std::time::Instant::now());
            }
        }
        self.peer_changed
            .retain(|_, at| at.elapsed() < STANDBY_GRACE * 2);
    }

    /// The state of whichever peer answers first; that peer counts as seen (with its start
    /// time) for choosing the primary.
    async fn ask_peers(&self) -> Option<HaState> {
        let state = ha::request_any_state(&self.client, &self.instance.id, PEER_STATE_WAIT).await?;
        if let Ok(mut peers) = self.peers.lock() {
            peers.heard(&state.instance, state.started_ms);
        }
        Some(state)
    }

    /// Folds what peers published (their events, and the state of whichever answers first).
    /// False when peers ran lately and none answers now.
    async fn hear_peers(&mut self) -> bool {
        self.drain_peer_events();
        let known = self
            .peers
            .lock()
            .map(|p| !p.oldest_first(&self.instance.id).is_empty())
            .unwrap_or(true);
        if !known {
            return true;
        }
        let Some(state) = self.ask_peers().await else {
            return false;
        };
        self.drain_peer_events();
        let now = std::time::Instant::now();
        for key in self.shared.merge(state.shared) {
            self.held.remove(&key);
            self.peer_changed.insert(key, now);
        }
        true
    }

    /// Brings the shared state up to date before a round: peers' events, and, after a
    /// (re)connect during which events may have been missed, a live peer's whole state.
    async fn catch_up(&mut self) {
        self.drain_peer_events();
        let connects = self.client.statistics().connects.load(Ordering::Relaxed);
        if connects == self.synced_connects || self.client.connection_state() != State::Connected {
            return;
        }
        let may_have_peers = self
            .peers
            .lock()
            .map(|p| p.may_have_peers(&self.instance.id))
            .unwrap_or(true);
        // Whoever answers first: a peer started while this connection was stuck is not known by
        // name yet, and one known by name may have died since.
        let state = if may_have_peers {
            self.ask_peers().await
        } else {
            None
        };
        if let Some(state) = state {
            let id = state.instance.clone();
            let changed = if self.synced_connects == 0 {
                // Starting: a running peer's state is what was published. The bucket may
                // also hold a claim whose write timed out, landed, and was then held back
                // (never published): resolving that would be a RESOLVED without RAISED.
                let mut from_peer = state.shared;
                for (key, mine) in &self.shared.active {
                    if let Some(theirs) = from_peer.active.get_mut(key) {
                        if store::rank(theirs.raised_at, theirs.revision)
                            == store::rank(mine.raised_at, mine.revision)
                        {
                            theirs.finding.fingerprint = mine.finding.fingerprint.clone();
                        }
                    }
                }
                let changed: Vec<String> = self
                    .shared
                    .active
                    .keys()
                    .chain(from_peer.active.keys())
                    .filter(|k| self.shared.active.get(*k) != from_peer.active.get(*k))
                    .cloned()
                    .collect();
                self.shared = from_peer;
                changed
            } else {
                self.shared.merge(state.shared)
            };
            tracing::debug!(peer = %id, changed = changed.len(), "synced finding state from a peer instance");
            let now = std::time::Instant::now();
            for key in changed {
                self.held.remove(&key);
                self.peer_changed.insert(key, now);
            }
        }
        self.synced_connects = connects;
    }

    /// Makes the current shared state what peers get when they ask for it.
    fn share_state(&self) {
        self.ha_tx.send_replace(Arc::new(HaState {
            instance: self.instance.id.clone(),
            started_ms: self.started_ms,
            shared: self.shared.clone(),
        }));
    }

    fn publish_status(&mut self) {
        self.share_state();
        self.status.active = self.shared.active.clone();
        self.status_tx.send_replace(Arc::new(self.status.clone()));
    }
}
