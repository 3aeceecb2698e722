//! Persist's policy over the bucket ([`super::kv`]): what a start loads and carries over, the
//! backlog that holds the latest record per key until the bucket takes it, when a degraded or
//! unopened store is tried again, and the flush at shutdown. The engine drives it through
//! [`Persistence`]; its timers are the instance's ([`Timing`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use async_nats::Client;
use bytes::Bytes;

use super::kv::{Bucket, KvError, Latest, StoreError, EPOCH_KEY, HISTORY_KEY};
use super::StoreSettings;
use crate::findings::{ActiveFinding, ActiveSet, Episodes};
use crate::history::Histories;
use crate::record::{current_key, kv_key, Mark, Record, ResolvedFinding, Stored};
use crate::status::StoreHealth;
use crate::timing::Timing;

/// Resolved findings older than this are slimmed when the service starts: their evidence and
/// remediation go, their episode stays (it is what keeps the key's next raise from repeating an
/// id).
const RESOLVED_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The store's timers, taken from the instance's [`Timing`].
#[derive(Debug, Clone, Copy)]
struct Timers {
    /// A store that does not answer is tried again this often.
    retry: Duration,
    /// The history is written at most this often.
    history_every: Duration,
    /// How long a shutdown keeps trying to write the backlog.
    shutdown_flush: Duration,
}

impl From<&Timing> for Timers {
    fn from(timing: &Timing) -> Timers {
        Timers {
            retry: timing.store_retry,
            history_every: timing.history_every,
            shutdown_flush: timing.shutdown_flush,
        }
    }
}

/// Whether something last tried at `last` (never: `None`) is due again at `now`, once per `every`.
fn due(last: Option<Instant>, every: Duration, now: Instant) -> bool {
    last.is_none_or(|at| now.saturating_duration_since(at) >= every)
}

/// Whether the history, whose durable part reads `text` now, is to be written at `now`: when it
/// was never written, or it changed and the last write is `every` old.
fn history_due(
    written: Option<&(String, Instant)>,
    text: &str,
    every: Duration,
    now: Instant,
) -> bool {
    written.is_none_or(|(last, at)| last != text && due(Some(*at), every, now))
}

/// What a starting instance finds in the bucket.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Active findings.
    pub active: ActiveSet,
    /// The last episode each resolved key ended with (resolved records are kept for a day).
    pub ended: Episodes,
    /// The persisted history, if any.
    pub history: Option<Histories>,
    /// The epoch the bucket numbers episodes in (created by the first load of a bucket that
    /// had none); `None` when the bucket could not keep one.
    pub epoch: Option<String>,
    /// Records refused as impossible (numbers or keys that do not parse), for STATUS.
    pub malformed: u64,
}

/// The records waiting to be written, and what the bucket is known to hold.
#[derive(Debug, Default)]
struct Backlog {
    /// Latest record per key not yet written: what this instance or a peer published.
    waiting: BTreeMap<String, Record>,
    /// Mark of the state of each key the bucket is known to hold (written or read here): a
    /// record no newer needs no write.
    held: BTreeMap<String, Mark>,
}

impl Backlog {
    /// Queues `record` unless the bucket holds it or something newer; of two queued records of
    /// one key the newer stays.
    fn queue(&mut self, record: Record) {
        let key = kv_key(record.key());
        let mark = record.mark();
        if self.held.get(&key).is_some_and(|m| *m >= mark) {
            return;
        }
        if self.waiting.get(&key).is_none_or(|mine| mine.mark() < mark) {
            self.waiting.insert(key, record);
        }
    }

    /// What waits, in key order.
    fn pending(&self) -> Vec<(String, Record)> {
        self.waiting
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect()
    }

    /// `record` was written under `key` (or something newer is there): it no longer waits,
    /// unless a newer record of the key was queued meanwhile.
    fn written(&mut self, key: &str, record: &Record) {
        if self.waiting.get(key) == Some(record) {
            self.waiting.remove(key);
        }
    }

    /// The bucket holds the state `mark` under `key`.
    fn holds(&mut self, key: &str, mark: Mark) {
        self.held.insert(key.to_string(), mark);
    }

    fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    fn len(&self) -> usize {
        self.waiting.len()
    }
}

/// What the bucket's entries hold, sorted before anything is written back.
#[derive(Debug, Default)]
struct Sorted {
    /// What the instance starts from (the epoch only if the bucket has one).
    loaded: Loaded,
    /// Mark of each valid finding record, by key.
    held: Vec<(String, Mark)>,
    /// Resolved records kept past retention and not slimmed yet, by key.
    slim: Vec<(String, ResolvedFinding)>,
    /// Active records carried from an earlier version's key to their current one, which holds
    /// nothing yet: to be written there.
    carried: Vec<(String, Record)>,
    /// Keys an earlier version wrote, with their revisions: removed once the backlog is written.
    stale: Vec<(String, u64)>,
}

/// Whether a resolved record was already slimmed (see [`RESOLVED_RETENTION`]).
fn is_slim(resolved: &ResolvedFinding) -> bool {
    resolved.finding.evidence.is_null() && resolved.finding.remediation.is_empty()
}

/// Sorts the latest entry of every key as of `now`: the history, the epoch, and the finding
/// records (checked; an impossible one is counted and skipped).
fn sort(entries: Vec<Latest>, now: SystemTime) -> Sorted {
    let mut sorted = Sorted::default();
    let mut rekeyed: Vec<(String, u64, ActiveFinding)> = Vec::new();
    let mut present = BTreeSet::new();
    for entry in entries {
        let key = entry.key;
        if entry.deleted {
            continue;
        }
        present.insert(key.clone());
        if key == HISTORY_KEY {
            match Histories::from_json(&entry.value) {
                Ok(history) => sorted.loaded.history = Some(history),
                Err(e) => tracing::warn!(%e, "ignoring an unreadable stored history"),
            }
            continue;
        }
        if key == EPOCH_KEY {
            match std::str::from_utf8(&entry.value) {
                Ok(epoch) if crate::ha::ledger::valid_epoch(epoch) => {
                    sorted.loaded.epoch = Some(epoch.to_string())
                }
                _ => {
                    sorted.loaded.malformed += 1;
                    crate::log_malformed("stored epoch", &"not an epoch this service mints");
                }
            }
            continue;
        }
        let record = serde_json::from_slice::<Stored>(&entry.value)
            .map_err(|e| e.to_string())
            .and_then(|s| crate::ha::validate::record(s.record, now));
        if let Ok(record) = &record {
            sorted.held.push((key.clone(), record.mark()));
        }
        match record {
            Ok(Record::Active(mut active)) => {
                if let Some(current) = current_key(&active.finding) {
                    // Written by a version that keyed findings by the leader's cluster: carried
                    // over under its group's key below, so it is not raised a second time.
                    active.finding.key = current;
                    if active.finding.server.is_none() {
                        active.finding.cluster = None;
                    }
                    rekeyed.push((key.clone(), entry.revision, active));
                    continue;
                }
                sorted
                    .loaded
                    .active
                    .insert(active.finding.key.clone(), active);
            }
            Ok(Record::Resolved(resolved)) => {
                sorted
                    .loaded
                    .ended
                    .insert(resolved.finding.key.clone(), resolved.episode);
                let age = now.duration_since(resolved.resolved_at).unwrap_or_default();
                if age > RESOLVED_RETENTION && !is_slim(&resolved) {
                    sorted.slim.push((key, resolved));
                }
            }
            Err(e) => {
                sorted.loaded.malformed += 1;
                crate::log_malformed("stored finding", &format!("{key}: {e}"));
            }
        }
    }
    for (old, revision, active) in rekeyed {
        let current = kv_key(&active.finding.key);
        // A record under the current key is newer than the old one (this version wrote it
        // after carrying the old one over, and perhaps resolved it since): the old one is
        // only left over.
        if !present.contains(&current) {
            sorted
                .carried
                .push((current, Record::Active(active.clone())));
            sorted
                .loaded
                .active
                .insert(active.finding.key.clone(), active);
        }
        sorted.stale.push((old, revision));
    }
    sorted
}

/// The KV-backed store: the bucket, and the backlog of what it has not taken yet.
pub struct KvStore {
    bucket: Bucket,
    instance: String,
    timers: Timers,
    backlog: Backlog,
    degraded: Option<(SystemTime, String)>,
    last_retry: Option<Instant>,
    history_written: Option<(String, Instant)>,
    /// Keys an earlier version wrote whose records were carried to their current key: removed
    /// once that key is written (retried with the backlog).
    stale_keys: Vec<(String, u64)>,
}

impl KvStore {
    /// Opens the bucket, creating it with a config fit for state when it is missing. The store
    /// keeps the default timers ([`Timing::default`]); the engine opens it through
    /// [`Persistence::start`] with the instance's.
    pub async fn open(
        client: Client,
        settings: StoreSettings,
        cluster_size: Option<usize>,
    ) -> Result<KvStore, StoreError> {
        Self::open_timed(
            client,
            settings,
            cluster_size,
            Timers::from(&Timing::default()),
        )
        .await
    }

    async fn open_timed(
        client: Client,
        settings: StoreSettings,
        cluster_size: Option<usize>,
        timers: Timers,
    ) -> Result<KvStore, StoreError> {
        let bucket = Bucket::open(client, &settings, cluster_size).await?;
        Ok(KvStore {
            bucket,
            instance: settings.instance,
            timers,
            backlog: Backlog::default(),
            degraded: None,
            last_retry: None,
            history_written: None,
            stale_keys: Vec::new(),
        })
    }

    /// Bucket name.
    pub fn bucket(&self) -> &str {
        self.bucket.name()
    }

    /// The store's health.
    pub fn health(&self) -> StoreHealth {
        match &self.degraded {
            None => StoreHealth::Healthy {
                bucket: self.bucket().to_string(),
            },
            Some((since, error)) => StoreHealth::Degraded {
                bucket: self.bucket().to_string(),
                since: *since,
                error: error.clone(),
                backlog: self.backlog.len(),
            },
        }
    }

    fn degrade(&mut self, error: String) {
        if self.degraded.is_none() {
            tracing::warn!(bucket = %self.bucket(), %error, "state store degraded: findings are still published, state will be written when it is back");
            self.degraded = Some((SystemTime::now(), error));
        } else if let Some((_, last)) = &mut self.degraded {
            *last = error;
        }
        self.last_retry = Some(Instant::now());
    }

    /// Reads every finding record and the history; purges resolved records past retention.
    pub async fn load(&mut self, now: SystemTime) -> Result<Loaded, StoreError> {
        let entries = self
            .bucket
            .entries()
            .await
            .map_err(|e| StoreError::Unavailable {
                bucket: self.bucket().to_string(),
                detail: e.to_string(),
            })?;
        let Sorted {
            mut loaded,
            held,
            slim,
            carried,
            stale,
        } = sort(entries, now);
        for (key, mark) in held {
            self.backlog.holds(&key, mark);
        }
        for (key, resolved) in slim {
            self.slim(&key, resolved).await;
        }
        if loaded.epoch.is_none() {
            loaded.epoch = self.create_epoch().await;
        }
        if !stale.is_empty() {
            tracing::info!(
                bucket = %self.bucket(),
                findings = stale.len(),
                "re-keying active findings written by an earlier version (keys now name the meta group's domain, not a cluster)"
            );
        }
        for (key, record) in carried {
            self.backlog.waiting.insert(key, record);
        }
        self.stale_keys.extend(stale);
        self.retry().await;
        Ok(loaded)
    }

    /// Replaces a resolved record kept past retention by the same record without evidence or
    /// remediation (a failure leaves it whole for the next start).
    async fn slim(&mut self, key: &str, mut resolved: ResolvedFinding) {
        resolved.finding.evidence = serde_json::Value::Null;
        resolved.finding.remediation.clear();
        let stored = Stored {
            writer: self.instance.clone(),
            record: Record::Resolved(resolved),
        };
        let Ok(value) = serde_json::to_vec(&stored) else {
            return;
        };
        let limit = self.bucket.timeout();
        if let Ok(Err(error)) =
            tokio::time::timeout(limit, self.bucket.update(key, value.into())).await
        {
            tracing::debug!(%error, key, "resolved record not slimmed");
        }
    }

    /// Creates the bucket's epoch key with a new epoch, or reads the one a peer created first;
    /// `None` when neither answers (the engine then mints one the bucket does not keep).
    async fn create_epoch(&mut self) -> Option<String> {
        let minted = nuid::next().to_string();
        match self.bucket.create(EPOCH_KEY, minted.clone().into()).await {
            Ok(()) => {
                tracing::info!(bucket = %self.bucket(), epoch = %minted, "new epoch of episode numbers (the bucket had none)");
                Some(minted)
            }
            Err(_) => match self.bucket.read(EPOCH_KEY).await {
                Ok(Some(latest)) if !latest.deleted => std::str::from_utf8(&latest.value)
                    .ok()
                    .filter(|e| crate::ha::ledger::valid_epoch(e))
                    .map(str::to_string),
                _ => None,
            },
        }
    }

    /// Removes the keys an earlier version wrote once their records are written under their
    /// current keys (the backlog is empty); what fails is tried again with the next retry.
    async fn purge_stale_keys(&mut self) {
        if !self.backlog.is_empty() {
            return;
        }
        for (key, revision) in std::mem::take(&mut self.stale_keys) {
            match self.bucket.purge(&key, revision).await {
                Ok(()) => {
                    self.backlog.held.remove(&key);
                }
                // Changed since (a purge that went through but whose answer was lost): leave it.
                Err(KvError::Conflict(_)) => {}
                Err(_) => self.stale_keys.push((key, revision)),
            }
        }
    }

    /// [`KvStore::load`] at start, tried again while it fails for up to ten state timeouts: an
    /// instance started without its state would publish again what is already published, and a
    /// bucket that just lost a replica (the fault being watched may be that) answers slowly for
    /// a few seconds.
    async fn load_patiently(&mut self) -> Result<Loaded, StoreError> {
        let deadline = Instant::now() + self.bucket.timeout() * 10;
        loop {
            match self.load(SystemTime::now()).await {
                Ok(loaded) => return Ok(loaded),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "state not loaded yet; trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// Writes one record unless the bucket holds the same or a newer state of its key (by
    /// [`Mark`]): compare-and-set on the revision last seen, so a newer record another instance
    /// wrote meanwhile is never overwritten by an older one.
    async fn write_record(&mut self, key: &str, record: &Record) -> Result<(), String> {
        let stored = Stored {
            writer: self.instance.clone(),
            record: record.clone(),
        };
        let value: Bytes = serde_json::to_vec(&stored)
            .map_err(|e| format!("cannot encode a finding record: {e}"))?
            .into();
        for _ in 0..3 {
            match self.bucket.update(key, value.clone()).await {
                Ok(()) => {
                    self.backlog.holds(key, record.mark());
                    return Ok(());
                }
                Err(KvError::Conflict(_)) => {
                    let Some(entry) = self.bucket.refresh(key).await.map_err(|e| e.to_string())?
                    else {
                        continue;
                    };
                    if entry.deleted {
                        continue;
                    }
                    let theirs = serde_json::from_slice::<Stored>(&entry.value).ok();
                    if let Some(theirs) = theirs {
                        self.backlog.holds(key, theirs.record.mark());
                        if theirs.record.mark() >= record.mark() {
                            // The same or a newer state is stored already.
                            return Ok(());
                        }
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Err(format!("{key} keeps changing under the write"))
    }

    /// Writes the history when what matters in it changed (at most every few seconds).
    pub async fn save_history(&mut self, history: &Histories) {
        if self.degraded.is_some() {
            return;
        }
        let Ok(text) = serde_json::to_string(&history.durable()) else {
            return;
        };
        let every = self.timers.history_every;
        if !history_due(self.history_written.as_ref(), &text, every, Instant::now()) {
            return;
        }
        let Ok(value) = history.to_json() else {
            return;
        };
        match self.bucket.put(HISTORY_KEY, value.into()).await {
            Ok(()) => self.history_written = Some((text, Instant::now())),
            Err(e) => self.degrade(e.to_string()),
        }
    }

    /// Writes the backlog now (on shutdown: nothing this process knows may be lost), trying
    /// again until it is written or the shutdown flush time has passed.
    pub async fn flush(&mut self) {
        let deadline = Instant::now() + self.timers.shutdown_flush;
        while !self.backlog.is_empty() {
            self.degraded
                .get_or_insert((SystemTime::now(), "writing backlog".to_string()));
            self.last_retry = None;
            self.retry().await;
            if self.backlog.is_empty() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Queues `record` to be written (by the next [`Self::retry`]) unless the bucket is known to
    /// hold it or something newer; of two queued records of one key the newer stays.
    pub fn write(&mut self, record: Record) {
        self.backlog.queue(record);
    }

    /// Writes the backlog (latest state per key wins): at once while healthy, now and then while
    /// degraded, returning to healthy when everything is written.
    pub async fn retry(&mut self) {
        let healthy = self.degraded.is_none();
        if healthy && self.backlog.is_empty() {
            if !self.stale_keys.is_empty() {
                self.purge_stale_keys().await;
            }
            return;
        }
        if !healthy {
            let now = Instant::now();
            if !due(self.last_retry, self.timers.retry, now) {
                return;
            }
            self.last_retry = Some(now);
        }
        let limit = self.bucket.timeout();
        for (key, record) in self.backlog.pending() {
            match tokio::time::timeout(limit, self.write_record(&key, &record)).await {
                Ok(Ok(())) => self.backlog.written(&key, &record),
                Ok(Err(e)) => {
                    self.degrade(e);
                    return;
                }
                Err(_) => {
                    self.degrade(format!("no answer within {limit:?}"));
                    return;
                }
            }
        }
        if healthy {
            return;
        }
        // Prove the bucket answers even with an empty backlog. A read, not stream info: the
        // JetStream API stalls without a meta leader even when the bucket's stream is fine.
        match self.bucket.read(HISTORY_KEY).await {
            Ok(_) => {
                tracing::info!(bucket = %self.bucket(), "state store healthy again; backlog written");
                self.degraded = None;
            }
            Err(e) => self.degrade(e.to_string()),
        }
    }
}

/// Where the engine keeps state: memory only, a KV store, or a KV store still being opened
/// (unreachable at start; retried without holding anything up).
pub enum Persistence {
    /// No `--state-server`.
    Memory,
    /// The bucket is open.
    Kv(Box<KvStore>),
    /// Not open yet.
    Opening(Box<Pending>),
}

/// A store that could not be opened yet.
pub struct Pending {
    /// The state-account connection.
    client: Client,
    /// Bucket settings.
    settings: StoreSettings,
    /// The store's timers.
    timers: Timers,
    /// Why the last attempt failed.
    error: String,
    /// When it failed.
    since: SystemTime,
    /// When it was last tried.
    last_try: Instant,
}

impl Persistence {
    /// The state connection, when there is one.
    pub fn client(&self) -> Option<&Client> {
        match self {
            Persistence::Memory => None,
            Persistence::Kv(kv) => Some(kv.bucket.client()),
            Persistence::Opening(pending) => Some(&pending.client),
        }
    }

    /// The server the state connection is attached to (none while it is not connected).
    pub fn server(&self) -> Option<String> {
        self.client()
            .filter(|c| c.connection_state() == async_nats::connection::State::Connected)
            .map(|c| c.server_info().server_name)
    }

    /// Moves the state connection to another server. Its own pings would notice a stopped or
    /// cut-off server only after seconds, and every claim made meanwhile would time out.
    pub async fn move_away(&self) {
        if let Some(client) = self.client() {
            if let Err(error) = client.force_reconnect().await {
                tracing::warn!(%error, "cannot move the state connection to another server");
            }
        }
    }

    /// Opens the store at start with the instance's `timing`: a configuration error is fatal,
    /// unavailability is retried later.
    pub async fn start(
        client: Client,
        settings: StoreSettings,
        cluster_size: Option<usize>,
        timing: &Timing,
    ) -> Result<(Persistence, Loaded), StoreError> {
        let timers = Timers::from(timing);
        match KvStore::open_timed(client.clone(), settings.clone(), cluster_size, timers).await {
            Ok(mut store) => match store.load_patiently().await {
                Ok(loaded) => {
                    tracing::info!(bucket = %store.bucket(), active = loaded.active.len(), history = loaded.history.is_some(), "state loaded");
                    Ok((Persistence::Kv(Box::new(store)), loaded))
                }
                Err(e) => {
                    tracing::warn!(bucket = %store.bucket(), error = %e, "cannot load state; starting without it");
                    store.degrade(e.to_string());
                    Ok((Persistence::Kv(Box::new(store)), Loaded::default()))
                }
            },
            Err(StoreError::Unavailable { detail, .. }) => {
                tracing::warn!(bucket = %settings.bucket, %detail, "state store unavailable at start; running from memory until it answers");
                Ok((
                    Persistence::Opening(Box::new(Pending {
                        client,
                        settings,
                        timers,
                        error: detail,
                        since: SystemTime::now(),
                        last_try: Instant::now(),
                    })),
                    Loaded::default(),
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Queues `record` (what was published, here or by a peer) to be written with the next
    /// [`Self::maintain`]; a store not open yet gets what is active when it opens.
    pub fn write(&mut self, record: Record) {
        if let Persistence::Kv(store) = self {
            store.write(record);
        }
    }

    /// Writes what is queued now (see [`KvStore::retry`]: at once while healthy, now and then
    /// while degraded).
    pub async fn write_now(&mut self) {
        if let Persistence::Kv(store) = self {
            store.retry().await;
        }
    }

    /// Persists the history when it changed.
    pub async fn save_history(&mut self, history: &Histories) {
        if let Persistence::Kv(store) = self {
            store.save_history(history).await;
        }
    }

    /// Retries a degraded or unopened store; returns what a late open loaded, to merge.
    pub async fn maintain(
        &mut self,
        active: &ActiveSet,
        cluster_size: Option<usize>,
    ) -> Option<Loaded> {
        match self {
            Persistence::Memory => None,
            Persistence::Kv(store) => {
                store.retry().await;
                None
            }
            Persistence::Opening(pending) => {
                let now = Instant::now();
                if !due(Some(pending.last_try), pending.timers.retry, now) {
                    return None;
                }
                pending.last_try = now;
                match KvStore::open_timed(
                    pending.client.clone(),
                    pending.settings.clone(),
                    cluster_size,
                    pending.timers,
                )
                .await
                {
                    Ok(mut store) => {
                        let loaded = store.load(SystemTime::now()).await.unwrap_or_default();
                        // What this run raised while the store was away must be written too.
                        for finding in active.values() {
                            store.write(Record::Active(finding.clone()));
                        }
                        if !store.backlog.is_empty() {
                            store.degraded =
                                Some((SystemTime::now(), "writing backlog".to_string()));
                            store.last_retry = None;
                            store.retry().await;
                        }
                        tracing::info!(bucket = %store.bucket(), "state store opened");
                        *self = Persistence::Kv(Box::new(store));
                        Some(loaded)
                    }
                    Err(e) => {
                        pending.error = e.to_string();
                        None
                    }
                }
            }
        }
    }

    /// On shutdown: writes whatever waits in the backlog.
    pub async fn flush(&mut self, history: &Histories) {
        if let Persistence::Kv(store) = self {
            store.flush().await;
            store.history_written = None;
            store.save_history(history).await;
            if !store.backlog.is_empty() {
                tracing::warn!(bucket = %store.bucket(), records = store.backlog.len(), "state store unavailable at shutdown: the last transitions were published but not stored");
            }
        }
    }

    /// Health for STATUS.
    pub fn health(&self) -> StoreHealth {
        match self {
            Persistence::Memory => StoreHealth::Memory,
            Persistence::Kv(store) => store.health(),
            Persistence::Opening(pending) => StoreHealth::Degraded {
                bucket: pending.settings.bucket.clone(),
                since: pending.since,
                error: pending.error.clone(),
                backlog: 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A META_001 finding for `server` of cluster `c` (keyed as an earlier version did).
    fn finding(server: &str) -> crate::checks::Finding {
        crate::checks::Finding {
            check: crate::checks::CheckId::META_001,
            key: format!("META_001/c/{server}"),
            cluster: None,
            domain: None,
            server: Some(server.into()),
            summary: "s".into(),
            evidence: serde_json::json!({"a": 1}),
            remediation: vec![],
            fingerprint: server.into(),
        }
    }

    /// The same finding under its current key.
    fn current(server: &str) -> crate::checks::Finding {
        crate::checks::Finding {
            key: format!("META_001/default/{server}"),
            ..finding(server)
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn active(finding: crate::checks::Finding, episode: u64, revision: u64) -> Record {
        Record::Active(ActiveFinding {
            finding,
            episode,
            epoch: String::new(),
            revision,
            raised_at: at(1_800_000_000),
            changed_at: at(1_800_000_000),
        })
    }

    fn resolved(finding: crate::checks::Finding, episode: u64, when: SystemTime) -> Record {
        Record::Resolved(ResolvedFinding {
            finding,
            episode,
            epoch: String::new(),
            revision: 2,
            raised_at: when,
            resolved_at: when,
        })
    }

    fn entry(key: &str, revision: u64, value: impl Into<Bytes>) -> Latest {
        Latest {
            key: key.to_string(),
            revision,
            deleted: false,
            value: value.into(),
        }
    }

    fn stored(key: &str, revision: u64, record: Record) -> Latest {
        let value = serde_json::to_vec(&Stored {
            writer: "i1".into(),
            record,
        })
        .expect("encodes");
        entry(key, revision, value)
    }

    #[test]
    fn a_degraded_store_is_tried_again_once_per_retry_interval() {
        let every = Duration::from_secs(3);
        let t0 = Instant::now();
        assert!(due(None, every, t0), "the first attempt is at once");
        assert!(!due(Some(t0), every, t0 + Duration::from_secs(2)));
        assert!(due(Some(t0), every, t0 + every));
        // A clock read before the last attempt (another task's `now`) is not due.
        assert!(!due(Some(t0 + every), every, t0));
    }

    #[test]
    fn the_history_is_written_when_it_changed_and_not_more_often_than_its_interval() {
        let every = Duration::from_secs(2);
        let t0 = Instant::now();
        assert!(history_due(None, "a", every, t0));
        let written = ("a".to_string(), t0);
        assert!(!history_due(Some(&written), "a", every, t0 + every * 10));
        assert!(!history_due(Some(&written), "b", every, t0 + every / 2));
        assert!(history_due(Some(&written), "b", every, t0 + every));
    }

    #[test]
    fn the_store_takes_its_timers_from_the_instance() {
        let timing = Timing::new(
            Duration::from_millis(250),
            crate::timing::GatherTiming::default(),
            Duration::from_secs(5),
        );
        let timers = Timers::from(&timing);
        assert_eq!(timers.retry, timing.store_retry);
        assert_eq!(timers.history_every, timing.history_every);
        assert_eq!(timers.shutdown_flush, timing.shutdown_flush);
    }

    #[test]
    fn the_backlog_keeps_the_newest_record_per_key_and_nothing_the_bucket_holds() {
        let mut backlog = Backlog::default();
        let key = kv_key(&current("n2").key);
        backlog.queue(active(current("n2"), 1, 2));
        backlog.queue(active(current("n2"), 1, 1));
        assert_eq!(
            backlog.pending(),
            vec![(key.clone(), active(current("n2"), 1, 2))]
        );
        // Written while a newer record was queued: the newer one still waits.
        backlog.queue(active(current("n2"), 1, 3));
        backlog.written(&key, &active(current("n2"), 1, 2));
        assert_eq!(backlog.len(), 1);
        backlog.written(&key, &active(current("n2"), 1, 3));
        assert!(backlog.is_empty());
        // The bucket holds the resolution: an update of that episode is not queued, the next
        // episode is.
        backlog.holds(&key, Mark::resolved(1));
        backlog.queue(active(current("n2"), 1, 4));
        assert!(backlog.is_empty());
        backlog.queue(active(current("n2"), 2, 1));
        assert_eq!(backlog.len(), 1);
    }

    #[test]
    fn a_load_sorts_records_history_and_epoch_and_counts_what_is_impossible() {
        let now = at(1_800_000_000) + Duration::from_secs(3 * 24 * 3600);
        let old = at(1_800_000_000);
        let mut deleted = stored(
            "finding.META_001/default/n9",
            9,
            active(current("n9"), 1, 1),
        );
        deleted.deleted = true;
        let mut slim = resolved(current("n4"), 2, old);
        if let Record::Resolved(r) = &mut slim {
            r.finding.evidence = serde_json::Value::Null;
        }
        let entries = vec![
            stored(
                "finding.META_001/default/n2",
                4,
                active(current("n2"), 3, 1),
            ),
            stored(
                "finding.META_001/default/n3",
                5,
                resolved(current("n3"), 1, old),
            ),
            stored("finding.META_001/default/n4", 6, slim),
            stored(
                "finding.META_001/default/n5",
                7,
                resolved(current("n5"), 1, now),
            ),
            entry("finding.META_001/default/n6", 8, "not json"),
            deleted,
            entry(EPOCH_KEY, 1, "abc123"),
        ];
        let sorted = sort(entries, now);
        assert_eq!(
            sorted.loaded.active.keys().collect::<Vec<_>>(),
            ["META_001/default/n2"]
        );
        assert_eq!(sorted.loaded.ended.len(), 3);
        assert_eq!(sorted.loaded.ended["META_001/default/n4"], 2);
        assert_eq!(sorted.loaded.epoch.as_deref(), Some("abc123"));
        assert_eq!(sorted.loaded.malformed, 1);
        assert!(sorted.loaded.history.is_none());
        assert_eq!(sorted.held.len(), 4);
        // Only the resolution past retention that still carries evidence is slimmed.
        let slimmed: Vec<_> = sorted.slim.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(slimmed, ["finding.META_001/default/n3"]);
        assert!(sorted.carried.is_empty() && sorted.stale.is_empty());
    }

    #[test]
    fn an_earlier_versions_key_is_carried_over_unless_the_current_key_holds_a_record() {
        let now = at(1_800_000_100);
        let entries = vec![
            // Only under the old key: carried over.
            stored("finding.META_001/c/n2", 3, active(finding("n2"), 1, 1)),
            // Under both: the current key's record stays.
            stored("finding.META_001/c/n3", 4, active(finding("n3"), 1, 1)),
            stored(
                "finding.META_001/default/n3",
                5,
                resolved(current("n3"), 1, now),
            ),
        ];
        let sorted = sort(entries, now);
        assert_eq!(
            sorted.carried,
            vec![(
                "finding.META_001/default/n2".to_string(),
                active(current("n2"), 1, 1)
            )]
        );
        assert_eq!(
            sorted.loaded.active.keys().collect::<Vec<_>>(),
            ["META_001/default/n2"]
        );
        assert_eq!(
            sorted.stale,
            vec![
                ("finding.META_001/c/n2".to_string(), 3),
                ("finding.META_001/c/n3".to_string(), 4)
            ]
        );
    }
}
