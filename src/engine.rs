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
    /// Whether this instance was the primary when last asked, and when.
    primary: Option<(std::time::Instant, bool)>,
}

/// Runs until `shutdown` completes or the connection closes for good.
pub async fn run(
    connections: Connections,
    config: EngineConfig,
    instance: Instance,
    shutdown: impl Future<Output = ()>,
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
    let (status_tx, status_rx) = watch::channel(Arc::new(EngineStatus {
        store: persistence.health(),
        ..EngineStatus::default()
    }));
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
        primary: None,
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
    engine.persistence.flush(&engine.history).await;
    drop(engine);
    result
}

impl Engine {
    fn on_event(&mut self, event: MetaEvent) -> Trigger {
        tracing::info!(kind = event.kind(), detail = %event.describe(), "meta event");
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

    /// True when no live instance has a smaller id than this one (asked at most once a second).
    async fn is_primary(&mut self) -> bool {
        if let Some((at, primary)) = self.primary {
            if at.elapsed() < Duration::from_secs(1) {
                return primary;
            }
        }
        let live = service::live_instances(&self.client, Duration::from_millis(250)).await;
        let primary = live.iter().all(|id| *id >= self.instance.id);
        self.primary = Some((std::time::Instant::now(), primary));
        primary
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
