//! Wiring: runs observe → evaluate → reconcile → publish → serve in one loop. Polls on a timer,
//! re-evaluates at once on meta events, takes `now` once per round and passes it down.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::connection::State;
use async_nats::Client;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::Instrument;

use crate::checks::MemberState;
use crate::checks::{evaluate_all, Outcome, Thresholds};
pub use crate::connect::Connections;
use crate::findings::{reconcile, ActiveSet};
use crate::history::History;
use crate::observe::events::{self, EventError};
use crate::observe::gather::{self, GatherTiming};
use crate::observe::{MetaEvent, Snapshot};
use crate::publish::{Heartbeat, Publisher};
use crate::service::{self, EngineStatus, Instance};
use crate::store::{Claim, Loaded, Persistence, Record, StoreError, StoreSettings};

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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            thresholds: Thresholds::default(),
            poll_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(10),
            timing: GatherTiming::default(),
            store: None,
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

/// How long an instance that stopped answering pings still counts as alive.
const PEER_GRACE: Duration = Duration::from_secs(10);

/// Pings the other instances every two seconds and notes when each answered.
async fn track_peers(
    client: Client,
    me: String,
    peers: Arc<std::sync::Mutex<std::collections::BTreeMap<String, std::time::Instant>>>,
) {
    let mut every = tokio::time::interval(Duration::from_secs(2));
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let live = service::live_instances(&client, Duration::from_millis(500)).await;
        // A round without our own answer says our connection is down, not that peers are.
        if !live.contains(&me) {
            continue;
        }
        if let Ok(mut map) = peers.lock() {
            let now = std::time::Instant::now();
            for id in live {
                map.insert(id, now);
            }
            map.retain(|_, seen| seen.elapsed() < PEER_GRACE * 4);
        }
    }
}

/// The running pipeline's state.
struct Engine {
    client: Client,
    direct: Vec<Client>,
    config: EngineConfig,
    publisher: Publisher,
    history: History,
    active: ActiveSet,
    snapshot: Snapshot,
    status: EngineStatus,
    status_tx: watch::Sender<Arc<EngineStatus>>,
    instance: Instance,
    persistence: Persistence,
    /// Other instances and when each last answered a ping (kept by a background task).
    peers: Arc<std::sync::Mutex<std::collections::BTreeMap<String, std::time::Instant>>>,
    /// When the main connection was last moved away from its server.
    moved_at: Option<std::time::Instant>,
    /// Set when the attached server announced it is leaving: move before the next publish.
    moving: bool,
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
            let first = gather::poll(&client, &[], config.timing).await.ok();
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
    let peers = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let pinger = tokio::spawn(
        track_peers(client.clone(), instance.id.clone(), Arc::clone(&peers)).in_current_span(),
    );
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
        active: loaded.active,
        snapshot: Snapshot::default(),
        status: EngineStatus {
            store: persistence.health(),
            ..EngineStatus::default()
        },
        persistence,
        peers: Arc::clone(&peers),
        moved_at: None,
        moving: false,
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
            &self.active,
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
            let (polled, own) = tokio::join!(
                gather::poll(&self.client, &known, self.config.timing),
                gather::own_views(&self.direct, self.config.timing.probe_timeout),
            );
            match polled {
                Ok(mut snapshot) => {
                    gather::merge_views(&mut snapshot, own);
                    self.status.polls += 1;
                    self.status.malformed += snapshot.malformed;
                    self.status.last_poll_ms = snapshot.duration.as_millis() as u64;
                    self.status.last_poll = Some(SystemTime::now());
                    self.status.servers_answering = snapshot.views.len();
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
        if matches!(trigger, Trigger::Poll | Trigger::Regather) {
            self.history.record_snapshot(&self.snapshot, now);
        }
        let (meta, evaluations) =
            evaluate_all(&self.snapshot, &self.history, &self.config.thresholds, now);
        self.status.skipped = evaluations.iter().find_map(|e| match &e.outcome {
            Outcome::Skipped { reason } => Some(reason.clone()),
            Outcome::Ran { .. } => None,
        });
        if std::mem::take(&mut self.moving) {
            self.move_away("is going away").await;
        }
        if let Some(meta) = &meta {
            // Findings published through a server cut off from the group reach only its side:
            // move first, publish after.
            let attached = self.client.server_info().server_name;
            let cut_off = meta.members.iter().any(|m| {
                m.name == attached && m.answered && matches!(m.state, MemberState::Offline(_))
            });
            if cut_off && meta.members.iter().any(|m| m.online()) {
                self.move_away("is cut off from the meta group").await;
            }
        }
        let (next, transitions) = reconcile(&self.active, &evaluations, now);
        self.active = next;
        for transition in &transitions {
            // Claim before publishing: with several instances on one bucket only the winner
            // publishes; an unavailable store never holds a finding back.
            match self.persistence.claim(transition).await {
                Claim::Won => {}
                Claim::Unavailable => {
                    // The store cannot arbitrate: the live instance with the smallest id
                    // publishes, the others stand by (a lone instance always publishes).
                    if !self.is_primary().await {
                        tracing::info!(finding = %transition.finding.key, "store unavailable; another instance publishes");
                        continue;
                    }
                }
                Claim::Lost(record) => {
                    self.adopt(&transition.finding.key, record);
                    continue;
                }
            }
            match self.publisher.transition(transition).await {
                Ok(event) => tracing::info!(
                    subject = %event.subject(),
                    finding = %event.finding,
                    revision = event.revision,
                    "{}", event.summary
                ),
                Err(error) => {
                    tracing::error!(%error, finding = %transition.finding.key, "cannot publish finding event")
                }
            }
        }
        self.status
            .recent
            .record(&transitions, &self.history.leader_changes);
        let cluster_size = meta.as_ref().map(|m| m.cluster_size);
        if meta.is_some() {
            self.status.meta = meta;
        }
        self.persistence.save_history(&self.history).await;
        if let Some(loaded) = self.persistence.maintain(&self.active, cluster_size).await {
            // The store came back after a start without it: adopt what other instances (or a
            // previous run) hold that this run has not seen.
            for (key, record) in loaded.active {
                self.active.entry(key).or_insert(record);
            }
        }
        self.status.store = self.persistence.health();
        self.publish_status();
    }

    /// Moves the main connection to another server and waits (briefly) until it is attached
    /// there, so what is published next reaches the group. At most once every ten seconds.
    async fn move_away(&mut self, why: &str) {
        if self
            .moved_at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        self.moved_at = Some(std::time::Instant::now());
        let server = self.client.server_info().server_name;
        tracing::warn!(%server, "the server this monitor is attached to {why}; moving to another");
        if let Err(error) = self.client.force_reconnect().await {
            tracing::warn!(%error, "cannot move to another server");
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline
            && (self.client.connection_state() != State::Connected
                || self.client.server_info().server_name == server)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// True when no instance seen alive recently has a smaller id than this one. Peers are
    /// pinged in the background; one that answered within `PEER_GRACE` still counts, so a peer
    /// that is only reconnecting (its server just died) is not mistaken for a dead one.
    async fn is_primary(&mut self) -> bool {
        let peers = self.peers.lock().map(|p| p.clone()).unwrap_or_default();
        peers
            .iter()
            .filter(|(_, seen)| seen.elapsed() < PEER_GRACE)
            .all(|(id, _)| *id >= self.instance.id)
    }

    /// Takes another instance's record for a key as this instance's state.
    fn adopt(&mut self, key: &str, record: Option<Box<Record>>) {
        match record.map(|r| *r) {
            Some(Record::Active(active)) => {
                self.active.insert(key.to_string(), active);
            }
            Some(Record::Resolved(_)) | None => {
                self.active.remove(key);
            }
        }
    }

    fn publish_status(&mut self) {
        self.status.active = self.active.clone();
        self.status_tx.send_replace(Arc::new(self.status.clone()));
    }
}
