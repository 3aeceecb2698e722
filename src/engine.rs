//! Wiring: runs observe → evaluate → reconcile → coordinate → publish → persist → serve in one
//! loop: a `select!` over the feeds (meta events, pinned links dropping, peers' events, beats and
//! state, forget requests) and the one [`TimerTable`], dispatching inputs to the two sans-IO
//! state machines, the [`Observer`] (when to gather, move, retry) and the [`Coordinator`] (who
//! publishes what, when), and executing their actions. Takes `now` once per round and passes it
//! down.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::connection::State;
use async_nats::Client;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::alertmanager::sender::Senders;
use crate::alertmanager::AlertmanagerSettings;
use crate::checks::{
    evaluate_groups, forgotten_group, Evaluation, GroupEvaluation, MetaAssessment, Thresholds,
};
use crate::connect::attached::Attached;
pub use crate::connect::Connections;
use crate::connect::{LinkDrops, Links};
use crate::findings::{reconcile, Transition};
use crate::ha::wire::{self, Beat};
use crate::ha::{Action, Coordinator, Executor, Input, Ledger, PeerState};
use crate::history::Histories;
use crate::observe::events::{self, EventError};
use crate::observe::gather;
use crate::observe::plan::{self, Plan};
use crate::observe::policy::{Action as ObserveAction, Input as ObserveInput, Observer, Polled};
use crate::observe::{MetaEvent, Snapshot};
use crate::publish::{FindingEvent, Heartbeat, Publisher, FINDING_PREFIX};
use crate::service::{self, EngineStatus, Instance};
use crate::store::{Loaded, Persistence, StoreError, StoreSettings};
use crate::timing::GatherTiming;
use crate::timing::{next_tick, Timer, TimerTable, Timing};

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
    /// Where findings are also sent as alerts (`--alertmanager-url`); `None` sends none.
    pub alertmanager: Option<AlertmanagerSettings>,
    /// Pin a connection to every meta member found (`--discover-members`), not only to the
    /// given URLs.
    pub discover_members: bool,
    /// The deployment this instance belongs to (`--deployment`, the bucket's name by default):
    /// only instances of the same one are HA peers.
    pub deployment: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            thresholds: Thresholds::default(),
            poll_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(10),
            timing: GatherTiming::default(),
            store: None,
            full_poll_max_members: plan::FULL_POLL_MAX_MEMBERS,
            alertmanager: None,
            discover_members: true,
            deployment: DEFAULT_DEPLOYMENT.to_string(),
        }
    }
}

/// The deployment of an instance given none: the default bucket's name.
pub const DEFAULT_DEPLOYMENT: &str = "insights";

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
    /// The Alertmanager client cannot be set up as configured.
    #[error("{0}")]
    Alertmanager(String),
}

/// What the loop waits on besides the timers.
struct Feeds {
    meta: futures::stream::BoxStream<'static, Result<MetaEvent, EventError>>,
    /// Every instance's finding events (peers' are the shared truth; a denied subscription only
    /// costs that knowledge).
    findings: Option<async_nats::Subscriber>,
    /// Every instance's beats.
    beats: Option<async_nats::Subscriber>,
    /// Answers to this instance's state requests.
    states: mpsc::UnboundedReceiver<PeerState>,
    /// The pinned links that dropped.
    drops: LinkDrops,
    /// Meta groups an operator retired (`$INSIGHTS.API.GROUP.FORGET`, passed on to every
    /// instance).
    forget: Option<async_nats::Subscriber>,
}

/// The running pipeline's state.
struct Engine {
    client: Client,
    /// The pinned links: one per given URL, and those discovery opened to the other members.
    links: Links,
    config: EngineConfig,
    timing: Timing,
    publisher: Publisher,
    /// The memory of every meta group.
    history: Histories,
    snapshot: Snapshot,
    status: EngineStatus,
    status_tx: watch::Sender<Arc<EngineStatus>>,
    instance: Instance,
    persistence: Persistence,
    /// Who publishes what, when (sans-IO).
    coordinator: Coordinator,
    /// When this instance started on the monotonic clock: the coordinator's time is measured
    /// from it.
    origin: Instant,
    /// What this instance answers peers asking for its state.
    state_tx: watch::Sender<Arc<PeerState>>,
    /// Where state requests running in the background send their answers.
    states_tx: mpsc::UnboundedSender<PeerState>,
    /// The main connection's connect count last seen: a higher count means events may have
    /// been missed while reconnecting.
    connects: u64,
    /// The attached servers' health, and moving off them.
    attached: Attached,
    /// When to gather, when to trust a poll, when to move and retry (sans-IO).
    observer: Observer,
    /// Every deadline the loop wakes for, on `origin`.
    timers: TimerTable,
    /// The snapshot of the gather in progress, until the observer judges it.
    gathered: Option<Snapshot>,
    /// Polls that asked the sources beyond JSZ: turns their rotation.
    extras_round: u64,
    /// Each meta group as last assessed (kept while a round cannot assess it).
    assessed: BTreeMap<crate::observe::GroupId, MetaAssessment>,
    /// The Alertmanager senders (`--alertmanager-url`), fed by `status_tx`; their health goes
    /// into the status.
    alerts: Option<Senders>,
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
    // Several instances may share a process (tests): tag their logs.
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

/// Opens the store and loads what it holds (memory only without one).
async fn open_store(
    client: &Client,
    state: Option<Client>,
    config: &EngineConfig,
    instance: &Instance,
    timing: &Timing,
) -> Result<(Persistence, Loaded), EngineError> {
    let (Some(state), Some(mut settings)) = (state, config.store.clone()) else {
        return Ok((Persistence::Memory, Loaded::default()));
    };
    settings.instance = instance.id.clone();
    // The bucket's replicas are bounded by the meta group's size.
    let first = gather::poll(
        client,
        &[],
        &Plan::for_group(None, 0, &[], 0),
        config.timing,
    )
    .await
    .ok();
    let cluster_size = first
        .as_ref()
        .and_then(|s| s.meta_views().map(|(_, m)| m.cluster_size).max());
    Ok(Persistence::start(state, settings, cluster_size, timing).await?)
}

/// Subscribes to what the loop waits on.
async fn subscribe(client: &Client) -> Result<Feeds, EngineError> {
    let meta = events::subscribe(client).await?;
    let optional = |what: &'static str| {
        move |error: async_nats::SubscribeError| {
            tracing::warn!(%error, "cannot follow {what}");
        }
    };
    let findings = client
        .subscribe(format!("{FINDING_PREFIX}.>"))
        .await
        .map_err(optional("the finding events of peer instances"))
        .ok();
    let beats = client
        .subscribe(wire::BEAT_SUBJECT)
        .await
        .map_err(optional("the beats of peer instances"))
        .ok();
    let forget = client
        .subscribe(service::api::FORGET_SUBJECT)
        .await
        .map_err(optional("requests to forget a retired meta group"))
        .ok();
    let (_, states) = mpsc::unbounded_channel();
    Ok(Feeds {
        forget,
        meta,
        findings,
        beats,
        states,
        drops: LinkDrops::default(),
    })
}

/// The next message of an optional subscription (pending forever without one).
async fn next_of(sub: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match sub {
        Some(sub) => sub.next().await,
        None => std::future::pending().await,
    }
}

async fn run_instrumented(
    connections: Connections,
    config: EngineConfig,
    instance: Instance,
    shutdown: impl Future<Output = ()>,
    status_tx: watch::Sender<Arc<EngineStatus>>,
) -> Result<(), EngineError> {
    let origin = Instant::now();
    let Connections {
        main: client,
        direct,
        drops,
        direct_urls,
        opener,
        state,
        ..
    } = connections;
    let timing = Timing::new(
        config.poll_interval,
        config.timing,
        config.heartbeat_interval,
    );
    let mut feeds = subscribe(&client).await?;
    feeds.drops = drops;
    // State first: findings raised before a restart must be known before the first round, or
    // they would be raised a second time.
    let (persistence, loaded) = open_store(&client, state, &config, &instance, &timing).await?;
    status_tx.send_replace(Arc::new(EngineStatus {
        store: persistence.health(),
        ..EngineStatus::default()
    }));
    // No memory of episodes to number on from (memory mode, or a bucket that could not keep an
    // epoch): a new epoch, so numbers counted again from one name new episodes. A peer's state
    // may still bring the deployment's.
    let epoch = loaded.epoch.clone().unwrap_or_else(|| {
        let minted = nuid::next().to_string();
        tracing::info!(epoch = %minted, "new epoch of episode numbers (no stored one)");
        minted
    });
    let coordinator = Coordinator::new(
        &instance.id,
        timing.ha,
        Ledger {
            active: loaded.active,
            ended: loaded.ended,
            epoch,
        },
        origin.elapsed(),
    );
    let (state_tx, state_rx) = watch::channel(Arc::new(PeerState {
        deployment: config.deployment.clone(),
        ..coordinator.peer_state(origin.elapsed())
    }));
    let answerer = tokio::spawn(
        wire::answer_state(client.clone(), instance.id.clone(), state_rx).in_current_span(),
    );
    let (states_tx, states) = mpsc::unbounded_channel();
    feeds.states = states;
    let service = tokio::spawn(service::serve(
        client.clone(),
        instance.clone(),
        status_tx.subscribe(),
        config.thresholds,
    ));
    let alerts = match &config.alertmanager {
        Some(settings) => Some(
            crate::alertmanager::sender::spawn(settings, &timing, origin, status_tx.subscribe())
                .map_err(EngineError::Alertmanager)?,
        ),
        None => None,
    };
    let mut engine = Engine {
        alerts,
        publisher: Publisher::new(
            client.clone(),
            instance.id.clone(),
            config.deployment.clone(),
            &timing,
        ),
        connects: client.statistics().connects.load(Ordering::Relaxed),
        client,
        links: Links::new(
            direct,
            &direct_urls,
            match config.discover_members {
                true => opener,
                false => crate::connect::discovery::Opener::none(),
            },
        ),
        config: config.clone(),
        timing,
        history: loaded.history.unwrap_or_default(),
        snapshot: Snapshot::default(),
        status: EngineStatus {
            store: persistence.health(),
            malformed: loaded.malformed,
            ..EngineStatus::default()
        },
        persistence,
        coordinator,
        origin,
        state_tx,
        states_tx,
        attached: Attached::new(&timing),
        observer: Observer::new(timing.link_retry, config.full_poll_max_members),
        timers: TimerTable::default(),
        gathered: None,
        extras_round: 0,
        assessed: BTreeMap::new(),
        status_tx,
        instance,
    };
    engine.execute().await;
    // The first poll and heartbeat go out at once.
    let start = engine.now();
    engine.timers.set(Timer::Poll, start);
    engine.timers.set(Timer::Heartbeat, start);
    tokio::pin!(shutdown);

    let result = loop {
        let wake = engine.arm();
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = tokio::time::sleep_until(wake) => engine.on_timers().await,
            links = feeds.drops.next() => engine.on_links_down(&links).await,
            event = feeds.meta.next() => match event {
                Some(Ok(event)) => engine.on_event(event).await,
                Some(Err(error)) => engine.on_malformed_event(&error),
                None => break Err(EngineError::Closed),
            },
            Some(msg) = next_of(&mut feeds.findings) => engine.on_finding_event(&msg).await,
            Some(msg) = next_of(&mut feeds.beats) => engine.on_beat(&msg).await,
            Some(msg) = next_of(&mut feeds.forget) => engine.on_forget(&msg).await,
            Some(state) = feeds.states.recv() => engine.on_peer_state(state).await,
        }
        if service.is_finished() {
            break match service.await {
                Ok(Err(e)) => Err(e.into()),
                _ => Err(EngineError::Closed),
            };
        }
    };
    answerer.abort();
    engine.persistence.flush(&engine.history).await;
    drop(engine);
    result
}

impl Engine {
    /// The coordinator's time: since this instance started, on the monotonic clock.
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Arms the timers the state machines ask for and returns when the loop wakes next (the
    /// poll timer is always armed).
    fn arm(&mut self) -> tokio::time::Instant {
        let now = self.now();
        self.timers
            .set(Timer::Coordinator, self.coordinator.next_deadline(now));
        match self.observer.next_deadline() {
            Some(at) => self.timers.set(Timer::LinkRetry, at),
            None => self.timers.stop(Timer::LinkRetry),
        }
        let (timer, at) = self.timers.next().unwrap_or((Timer::Poll, now));
        tracing::trace!(
            timer = timer.as_str(),
            in_ms = at.saturating_sub(now).as_millis() as u64,
            "next wake"
        );
        tokio::time::Instant::from_std(self.origin + at)
    }

    /// Serves every timer that is due.
    async fn on_timers(&mut self) {
        let now = self.now();
        for (timer, due) in self.timers.expire(now) {
            match timer {
                Timer::Poll => {
                    let next = next_tick(due, now, self.timing.poll);
                    self.timers.set(Timer::Poll, next);
                    self.observe(ObserveInput::PollDue).await;
                }
                Timer::Heartbeat => {
                    let next = next_tick(due, now, self.timing.heartbeat);
                    self.timers.set(Timer::Heartbeat, next);
                    self.heartbeat().await;
                }
                Timer::Coordinator => self.handle(Input::Tick).await,
                Timer::LinkRetry => self.observe(ObserveInput::Tick).await,
            }
        }
    }

    /// Feeds the coordinator one input (after telling it of a reconnect it has not heard of)
    /// and executes what it decides.
    async fn handle(&mut self, input: Input) {
        let connects = self.client.statistics().connects.load(Ordering::Relaxed);
        if connects != self.connects && self.client.connection_state() == State::Connected {
            self.connects = connects;
            let now = self.now();
            self.coordinator.handle(Input::Reconnected, now);
        }
        let now = self.now();
        self.coordinator.handle(input, now);
        self.execute().await;
    }

    /// Executes the coordinator's actions by the rules of [`Executor`] (the simulation follows
    /// the same): a failed publish is reported at once, one that went out is persisted in the
    /// same execution.
    async fn execute(&mut self) {
        let mut learned = Vec::new();
        let mut executor = Executor::new();
        while let Some(action) = executor.next(&mut self.coordinator, self.origin.elapsed()) {
            match action {
                Action::Publish(ref transition) => {
                    let sent = self.announce(transition).await;
                    let now = self.now();
                    executor.published(&mut self.coordinator, action, sent, now);
                }
                Action::Persist(record) => {
                    // What was published, here or by a peer: what HISTORY lists.
                    learned.push(crate::ha::transition_of_record(&record));
                    self.persistence.write(record);
                }
                Action::RequestState(from) => self.request_state(from),
                Action::Beat(uptime) => {
                    wire::send_beat(
                        &self.client,
                        &self.instance.id,
                        &self.config.deployment,
                        uptime,
                    )
                    .await
                }
            }
        }
        if !learned.is_empty() {
            self.status
                .recent
                .record(&learned, &self.history.leader_changes());
            // Written before STATUS says so and before anything else waits.
            self.persistence.write_now().await;
            self.status.store = self.persistence.health();
        }
        self.publish_status();
    }

    /// Asks a peer (or any) for its state in the background; the answer comes back as an input.
    fn request_state(&self, from: Option<String>) {
        let client = self.client.clone();
        let me = self.instance.id.clone();
        let deployment = self.config.deployment.clone();
        let answers = self.states_tx.clone();
        let wait = self.timing.ha.sync_wait;
        tokio::spawn(async move {
            let asked = wire::request_state(&client, &me, &deployment, from.as_deref(), wait);
            if let Some(state) = asked.await {
                let _ = answers.send(state);
            }
        });
    }

    async fn on_event(&mut self, event: MetaEvent) {
        tracing::info!(kind = event.kind(), detail = %event.describe(), "meta event");
        *self
            .status
            .events
            .entry(event.kind().to_string())
            .or_default() += 1;
        self.history.record_event(&event);
        let attached = self.client.server_info().server_name;
        self.observe(ObserveInput::Event {
            event: &event,
            attached: &attached,
        })
        .await;
    }

    fn on_malformed_event(&mut self, error: &EventError) {
        self.status.malformed += 1;
        crate::log_malformed("event", error);
    }

    /// Counts and logs (once per kind and ten seconds) an input refused as impossible.
    fn refuse(&mut self, kind: &'static str, why: &dyn std::fmt::Display) {
        self.status.malformed += 1;
        crate::log_malformed(kind, why);
    }

    /// A finding event: a peer's is news for the coordinator (this instance's own echo is not),
    /// once checked against what this instance knows ([`crate::ha::validate`]).
    async fn on_finding_event(&mut self, msg: &async_nats::Message) {
        let event = match serde_json::from_slice::<FindingEvent>(&msg.payload) {
            Ok(event) => event,
            Err(error) => return self.refuse("finding event", &error),
        };
        // Another deployment's events (its own bucket, sharing this system account) are not a
        // peer's news.
        if event.instance == self.instance.id
            || !wire::same_deployment(&self.config.deployment, &event.deployment)
        {
            return;
        }
        let Some(record) = crate::ha::record_of_event(&event) else {
            return self.refuse("finding event", &"unreadable raised_at or timestamp");
        };
        let checked =
            crate::ha::validate::event(record, self.coordinator.ledger(), SystemTime::now());
        match checked {
            Ok(record) => {
                tracing::debug!(finding = %event.finding, episode = event.episode, revision = event.revision, "a peer instance's event");
                self.handle(Input::Event(record)).await;
            }
            Err(why) => self.refuse("finding event", &why),
        }
    }

    /// An operator retired a meta group: the next round forgets it and resolves its findings.
    async fn on_forget(&mut self, msg: &async_nats::Message) {
        let group = match service::api::parse_body::<service::api::ForgetRequest>(&msg.payload)
            .and_then(|request| request.group())
        {
            Ok(group) => group,
            Err(error) => {
                self.status.malformed += 1;
                crate::log_malformed("request to forget a group", &error);
                return;
            }
        };
        tracing::info!(group = %group, "forgetting a retired meta group");
        self.observe(ObserveInput::Forget(group)).await;
    }

    async fn on_beat(&mut self, msg: &async_nats::Message) {
        let beat = match serde_json::from_slice::<Beat>(&msg.payload) {
            Ok(beat) => beat,
            Err(error) => return self.refuse("HA beat", &error),
        };
        if beat.instance == self.instance.id
            || !wire::same_deployment(&self.config.deployment, &beat.deployment)
        {
            return;
        }
        match crate::ha::validate::beat(&beat.instance, beat.uptime_ms) {
            Ok(uptime) => {
                self.handle(Input::Beat {
                    instance: beat.instance,
                    uptime,
                })
                .await
            }
            Err(why) => self.refuse("HA beat", &why),
        }
    }

    /// A peer's answer to a state request, checked entry by entry.
    async fn on_peer_state(&mut self, state: PeerState) {
        if !wire::same_deployment(&self.config.deployment, &state.deployment) {
            return;
        }
        match crate::ha::validate::peer_state(state, SystemTime::now()) {
            Ok((state, refused)) => {
                if refused > 0 {
                    self.refuse(
                        "peer state entry",
                        &format!("{refused} impossible entries of {} dropped", state.instance),
                    );
                    self.status.malformed += refused - 1;
                }
                self.handle(Input::PeerState(state)).await;
            }
            Err(why) => self.refuse("peer state", &why),
        }
    }

    async fn heartbeat(&self) {
        let beat = Heartbeat::new(
            &self.instance.id,
            &self.coordinator.ledger().active,
            self.status.last_poll,
            SystemTime::now(),
        );
        if let Err(error) = self.publisher.heartbeat(&beat).await {
            tracing::warn!(%error, "cannot publish heartbeat");
        }
    }

    /// Pinned links dropped: the servers they were attached to become suspects (a link keeps
    /// the last server info it had, so a dead server is still named), and a round gathers now.
    async fn on_links_down(&mut self, links: &BTreeSet<usize>) {
        let suspects: BTreeSet<String> = links
            .iter()
            .filter_map(|i| self.links.client(*i))
            .map(|c| c.server_info().server_name)
            .filter(|name| !name.is_empty())
            .collect();
        tracing::debug!(?suspects, "pinned links dropped; polling now");
        self.observe(ObserveInput::LinksDown(suspects)).await;
    }

    /// Feeds the observer one input and executes what it decides, one action at a time (each
    /// reports back before the next is decided): gathers, moves, and the rounds it judges.
    async fn observe(&mut self, input: ObserveInput<'_>) {
        let now = self.now();
        self.observer.handle(input, now);
        loop {
            let batch: Vec<ObserveAction> = self.observer.actions().collect();
            if batch.is_empty() {
                break;
            }
            for action in batch {
                match action {
                    ObserveAction::Gather { spared } => self.gather(&spared).await,
                    ObserveAction::MoveAway(why) => {
                        let moved = self.attached.move_away(&self.client, why).await;
                        let now = self.now();
                        self.observer.handle(ObserveInput::Moved(moved), now);
                    }
                    ObserveAction::Skip(why) => {
                        self.gathered = None;
                        self.status.skipped = Some(why);
                        self.publish_status();
                    }
                    ObserveAction::Evaluate { gathered, forget } => {
                        self.round(gathered, forget).await
                    }
                }
            }
        }
    }

    /// One gather: every server's JSZ through the main connection (not waiting for `spared`)
    /// and the pinned links' own views, reported to the observer.
    async fn gather(&mut self, spared: &BTreeSet<String>) {
        if self.client.connection_state() != State::Connected {
            let now = self.now();
            self.observer.handle(
                ObserveInput::Polled {
                    polled: Polled::Disconnected,
                    connected: false,
                },
                now,
            );
            return;
        }
        let known = self.history.known_servers();
        let plan = self.observer.plan(&known, &self.snapshot);
        let direct = self.links.clients();
        let connects = self.client.statistics().connects.load(Ordering::Relaxed);
        let (polled, own) = tokio::join!(
            gather::poll_or_silence(
                &self.client,
                &known,
                spared,
                &plan,
                self.config.timing,
                self.timing.attached_answer,
            ),
            gather::own_views(&direct, self.config.timing.probe_timeout),
        );
        // The main connection dropped and came back (or not yet) during the poll: its silence
        // is the reconnect's, not its server's.
        let reconnected = self.client.statistics().connects.load(Ordering::Relaxed) != connects
            || self.client.connection_state() != State::Connected;
        let polled = match polled {
            Ok(mut snapshot) => {
                // Nothing came back through the main connection while servers answer on their
                // own links: its server is stopped or cut off (or the connection was
                // reconnecting), and the silence of every server without a direct answer says
                // nothing.
                let silent = snapshot.views.is_empty() && !own.is_empty();
                plan::merge_views(&mut snapshot, own);
                // The sources beyond JSZ, of the few servers this round's rotation names.
                self.extras_round = self.extras_round.wrapping_add(1);
                crate::observe::extras_io::gather_extras(
                    &self.client,
                    &mut snapshot,
                    self.extras_round,
                    self.config.timing.probe_timeout,
                )
                .await;
                snapshot.links_down = direct
                    .iter()
                    .filter(|c| c.connection_state() != State::Connected)
                    .map(|c| c.server_info().server_name)
                    .filter(|name| !name.is_empty())
                    .collect();
                let group_size = group_size(&snapshot);
                self.gathered = Some(snapshot);
                Polled::Done {
                    silent,
                    reconnected,
                    group_size,
                }
            }
            Err(error) => {
                tracing::warn!(%error, "poll failed");
                Polled::Failed(error.to_string())
            }
        };
        let connected = self.client.connection_state() == State::Connected;
        let now = self.now();
        self.observer
            .handle(ObserveInput::Polled { polled, connected }, now);
    }

    /// Takes the gather the observer judged as this round's snapshot.
    fn take_gathered(&mut self) {
        let Some(snapshot) = self.gathered.take() else {
            return;
        };
        self.status.polls += 1;
        self.status.malformed += snapshot.malformed;
        self.status.last_poll_ms = snapshot.duration.as_millis() as u64;
        self.status.last_poll = Some(SystemTime::now());
        self.status.servers_answering = snapshot.views.len();
        self.status.last_poll_bytes = snapshot.bytes;
        self.snapshot = snapshot;
    }

    /// One pass through the rest of the pipeline, on this round's snapshot (`gathered`) or the
    /// last one: evaluate, reconcile, hand the transitions to the coordinator (which publishes
    /// what is due), persist.
    async fn round(&mut self, gathers: bool, forget: BTreeSet<crate::observe::GroupId>) {
        if gathers {
            self.take_gathered();
        }
        let now = SystemTime::now();
        let groups = self.evaluate(gathers, forget, now);
        if gathers {
            self.maintain_links();
        }
        let metas: Vec<&MetaAssessment> = groups.iter().filter_map(|g| g.meta.as_ref()).collect();
        let evaluations: Vec<Evaluation> = groups
            .iter()
            .flat_map(|g| g.evaluations.iter().cloned())
            .collect();
        let state_client = self.persistence.client().cloned();
        let unanswered = match self.snapshot.views.is_empty() {
            true => Default::default(),
            false => self.snapshot.unanswered.clone(),
        };
        self.attached
            .keep_state_fit(state_client.as_ref(), &unanswered, &metas)
            .await;
        let ledger = self.coordinator.ledger();
        let (next, transitions) = reconcile(&ledger.active, &ledger.ended, &evaluations, now);
        // A round trip only when something would be published: it costs a poll nothing else.
        let asked = !transitions.is_empty() || self.coordinator.is_holding();
        let footing = self.observer.take_footing();
        let link = self
            .attached
            .publishable(&self.client, &metas, asked, footing)
            .await;
        self.handle(Input::Evaluated {
            next,
            transitions,
            link,
        })
        .await;
        let cluster_size = self.state_group_size(&metas);
        self.persistence.save_history(&self.history).await;
        let active = self.coordinator.ledger().active.clone();
        if let Some(loaded) = self.persistence.maintain(&active, cluster_size).await {
            // The store came back after a start without it: what other instances (or a
            // previous run) hold is news to this run.
            self.status.malformed += loaded.malformed;
            self.handle(Input::Stored(Ledger {
                active: loaded.active,
                ended: loaded.ended,
                epoch: loaded.epoch.unwrap_or_default(),
            }))
            .await;
        }
        self.status.store = self.persistence.health();
        self.status
            .recent
            .record(&[], &self.history.leader_changes());
        self.publish_status();
    }

    /// Judges every meta group (one per JetStream domain) on its own part of the last poll and
    /// notes what STATUS shows of them.
    fn evaluate(
        &mut self,
        gathered: bool,
        forgotten: BTreeSet<crate::observe::GroupId>,
        now: SystemTime,
    ) -> Vec<GroupEvaluation> {
        for group in &forgotten {
            self.history.forget(group);
            self.assessed.remove(group);
        }
        let parts = self.history.split(&self.snapshot);
        if gathered {
            self.history
                .record_snapshots(&parts, &self.config.thresholds, now);
        }
        let mut groups = evaluate_groups(&parts, &self.history, &self.config.thresholds, now);
        // A forgotten group whose servers answered in this very poll is simply a new group.
        for group in forgotten {
            if !groups.iter().any(|g| g.group == group) {
                groups.push(forgotten_group(&group));
            }
        }
        // (A group's reason names its domain.)
        self.status.skipped = match groups.is_empty() {
            true if self.snapshot.views.is_empty() => {
                Some("no server answered the JSZ poll".to_string())
            }
            true => Some("no server reported a JetStream meta group".to_string()),
            // A group no server of which answers is shown as unheard (META_105), and does not
            // keep the other groups from being judged (preflight).
            false => groups
                .iter()
                .filter(|g| g.unheard.is_none())
                .find_map(|g| g.skipped().map(str::to_string)),
        };
        for group in &groups {
            if let Some(meta) = group.meta.as_ref().or(group.unheard.as_ref()) {
                self.assessed.insert(group.group.clone(), meta.clone());
            }
        }
        self.status.meta_groups = self.assessed.values().cloned().collect();
        groups
    }

    /// Opens pinned links to the members that have none (in the background), and notes in
    /// STATUS which members have one.
    fn maintain_links(&mut self) {
        let members: BTreeSet<String> = self
            .assessed
            .values()
            .flat_map(|m| m.members.iter())
            .filter(|m| !m.name_unknown)
            .map(|m| m.name.clone())
            .collect();
        let answering: BTreeSet<String> = self.snapshot.views.keys().cloned().collect();
        self.links.maintain(&self.client, &members, &answering);
        self.status.malformed += self.links.take_malformed();
        self.status.links = self.links.health(&members);
    }

    /// The size of the group the state connection's server is in (its JetStream domain), else
    /// of the largest group: it bounds the bucket's replicas.
    fn state_group_size(&self, metas: &[&MetaAssessment]) -> Option<usize> {
        let state_server = self.persistence.server();
        metas
            .iter()
            .find(|m| {
                state_server
                    .as_ref()
                    .is_some_and(|s| m.members.iter().any(|member| member.name == *s))
            })
            .or_else(|| metas.iter().max_by_key(|m| m.cluster_size))
            .map(|m| m.cluster_size)
    }

    /// Publishes a transition's event and logs it; false if it could not be sent.
    async fn announce(&self, transition: &Transition) -> bool {
        match self.publisher.transition(transition).await {
            Ok(event) => {
                tracing::info!(
                    subject = %event.subject(),
                    server = %self.client.server_info().server_name,
                    finding = %event.finding,
                    episode = event.episode,
                    revision = event.revision,
                    id = %event.id,
                    "{}", event.summary
                );
                true
            }
            Err(error) => {
                tracing::error!(%error, finding = %transition.finding.key, "cannot publish finding event");
                false
            }
        }
    }

    /// Makes the current state what peers get when they ask, and what the API answers: a
    /// consumer that hears an event and asks STATUS sees it.
    fn publish_status(&mut self) {
        let now = self.now();
        self.state_tx.send_replace(Arc::new(PeerState {
            deployment: self.config.deployment.clone(),
            ..self.coordinator.peer_state(now)
        }));
        self.status.active = self.coordinator.ledger().active.clone();
        self.status.ha_peers = self.coordinator.live_peers(now);
        if let Some(alerts) = &self.alerts {
            self.status.alertmanager = alerts.health.borrow().clone();
        }
        self.status_tx.send_replace(Arc::new(self.status.clone()));
    }
}
