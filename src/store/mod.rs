//! Persist: the fourth stage. Keeps finding state and the observation history in a JetStream KV
//! bucket (in a JetStream-enabled account, never the system account). The bucket is restart
//! memory, not an arbiter: what was published (here or by a peer) is written after it, merged by
//! [`Mark`] (a newer episode or revision stays), so an instance that starts knows each key's
//! episode. The store never blocks publishing: when it is unreachable the latest state per key
//! waits in a backlog, and STATUS reports the store as degraded.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::kv::{self, UpdateErrorKind};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self, stream::StorageType};
use async_nats::{Client, StatusCode};
use bytes::Bytes;
use futures::StreamExt;

use crate::findings::{ActiveFinding, ActiveSet, Episodes};
use crate::history::Histories;
use crate::record::{current_key, kv_key, Mark, Record, ResolvedFinding, Stored};
use crate::status::StoreHealth;

/// Key of the persisted history.
const HISTORY_KEY: &str = "history";
/// Key of the epoch the bucket's records number episodes in ([`crate::ha::Ledger::epoch`]):
/// created once with the bucket's first load, so a bucket lost or recreated (no such key) never
/// lends its epoch to numbers counted again from one.
const EPOCH_KEY: &str = "epoch";
/// Resolved findings older than this are slimmed when the service starts: their evidence and
/// remediation go, their episode stays (it is what keeps the key's next raise from repeating an
/// id).
const RESOLVED_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// The store's timers (one place for all of them: [`crate::timing::Timing`]).
fn timing() -> crate::timing::Timing {
    crate::timing::Timing::default()
}

pub use crate::connect::StoreSettings;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bucket could not be created or opened for a reason that retrying will not fix.
    #[error("cannot use KV bucket {bucket}: {detail}")]
    Config {
        /// Bucket.
        bucket: String,
        /// Why.
        detail: String,
    },
    /// JetStream did not answer in time or refused for now.
    #[error("KV bucket {bucket} unavailable: {detail}")]
    Unavailable {
        /// Bucket.
        bucket: String,
        /// Why.
        detail: String,
    },
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

/// The KV-backed store.
pub struct KvStore {
    settings: StoreSettings,
    instance: String,
    client: Client,
    kv: kv::Store,
    /// KV revision of each key as last written or read by this instance.
    revisions: BTreeMap<String, u64>,
    /// Latest record per key not yet written: what this instance or a peer published.
    backlog: BTreeMap<String, Record>,
    /// Mark of the state of each key the bucket is known to hold (written or read here): a
    /// record no newer needs no write.
    stored: BTreeMap<String, Mark>,
    degraded: Option<(SystemTime, String)>,
    last_retry: Option<Instant>,
    history_written: Option<(String, Instant)>,
    /// Keys an earlier version wrote whose records were carried to their current key: removed
    /// once that key is written (retried with the backlog).
    stale_keys: Vec<(String, u64)>,
}

/// The latest value of one key, as a batched read returns it.
struct Latest {
    key: String,
    revision: u64,
    deleted: bool,
    value: Bytes,
}

/// Whether a resolved record was already slimmed (see [`RESOLVED_RETENTION`]).
fn is_slim(resolved: &ResolvedFinding) -> bool {
    resolved.finding.evidence.is_null() && resolved.finding.remediation.is_empty()
}

/// Why a direct get was refused, for the store's health.
fn refusal(what: &str, msg: &async_nats::Message, status: u16) -> String {
    format!(
        "{what} refused: {status} {}",
        msg.description.as_deref().unwrap_or_default()
    )
}

/// True when an update lost its compare-and-set: another write came first. nats-server 2.15
/// answers it with error code 10164 ("wrong last sequence"), which async-nats does not map to
/// its wrong-revision kind (it knows 10071), so the code is read from the error too.
fn is_conflict(error: &kv::UpdateError) -> bool {
    if error.kind() == UpdateErrorKind::WrongLastRevision {
        return true;
    }
    let text = format!("{error} {:?}", std::error::Error::source(error));
    text.contains("wrong last sequence") || text.contains("10071") || text.contains("10164")
}

fn is_unavailable(detail: &str) -> bool {
    // JetStream answers these while it has no quorum or no leader; they pass with time.
    let d = detail.to_ascii_lowercase();
    d.contains("timed out")
        || d.contains("timeout")
        || d.contains("no responders")
        || d.contains("temporarily unavailable")
        || d.contains("10008")
        // "no suitable peers for placement": a fresh cluster whose peers are not all counted
        // yet (seen on 2.10-2.12 right after the first election); it passes too.
        || d.contains("10005")
        || d.contains("no suitable peers")
}

impl KvStore {
    /// Opens the bucket, creating it with a config fit for state when it is missing.
    pub async fn open(
        client: Client,
        settings: StoreSettings,
        cluster_size: Option<usize>,
    ) -> Result<KvStore, StoreError> {
        let js_client = client.clone();
        let js = jetstream::new(client);
        let bucket = settings.bucket.clone();
        let classify = |detail: String| {
            if is_unavailable(&detail) {
                StoreError::Unavailable {
                    bucket: bucket.clone(),
                    detail,
                }
            } else {
                StoreError::Config {
                    bucket: bucket.clone(),
                    detail,
                }
            }
        };
        let replicas = settings
            .replicas
            .min(cluster_size.unwrap_or(settings.replicas))
            .max(1);
        let config = kv::Config {
            bucket: settings.bucket.clone(),
            description: "nats-insights finding state and meta-group history".to_string(),
            // A few revisions per key help an operator see what happened.
            history: 5,
            storage: StorageType::File,
            num_replicas: replicas,
            max_value_size: 1024 * 1024,
            ..Default::default()
        };
        // Start-up may be patient: several instances may create the bucket at the same moment,
        // and a fresh stream takes a moment to elect its leader.
        let deadline = Instant::now() + settings.timeout * 10;
        let kv = loop {
            let opened =
                tokio::time::timeout(settings.timeout * 3, js.get_key_value(&settings.bucket))
                    .await;
            if let Ok(Ok(kv)) = opened {
                break kv;
            }
            // Missing (or not answering): create it; an identical config is accepted if another
            // instance just did.
            let last_error = match tokio::time::timeout(
                settings.timeout * 3,
                js.create_key_value(config.clone()),
            )
            .await
            {
                Ok(Ok(kv)) => {
                    tracing::info!(bucket = %settings.bucket, replicas, "created KV bucket for state");
                    break kv;
                }
                Ok(Err(e)) => {
                    let detail = e.to_string();
                    // Someone else is creating it: open it next time round.
                    if !detail.contains("already in use") && !is_unavailable(&detail) {
                        return Err(classify(detail));
                    }
                    detail
                }
                Err(_) => "timed out creating the bucket".to_string(),
            };
            if Instant::now() > deadline {
                return Err(StoreError::Unavailable {
                    bucket: settings.bucket.clone(),
                    detail: last_error,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // A new bucket's stream elects its own leader: wait until it answers a read, so the first
        // claim does not time out and degrade the store for nothing.
        let ready = async {
            loop {
                match tokio::time::timeout(settings.timeout, kv.entry(HISTORY_KEY)).await {
                    Ok(Ok(_)) => return,
                    Ok(Err(e)) => tracing::debug!(%e, "bucket not ready yet"),
                    Err(_) => tracing::debug!("bucket not ready yet"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        if tokio::time::timeout(settings.timeout * 10, ready)
            .await
            .is_err()
        {
            return Err(classify("the bucket does not answer reads".to_string()));
        }
        Ok(KvStore {
            client: js_client,
            instance: settings.instance.clone(),
            settings,
            kv,
            revisions: BTreeMap::new(),
            backlog: BTreeMap::new(),
            stored: BTreeMap::new(),
            degraded: None,
            last_retry: None,
            history_written: None,
            stale_keys: Vec::new(),
        })
    }

    /// Reads the latest message of a key from the bucket's stream leader, retrying briefly
    /// within the timeout. Not a direct get: those are answered by any replica, and one that is
    /// still catching up (restarted moments ago) answers with an older revision or none, which
    /// would make a claim lose to a state it already replaced. The leader is also what any write
    /// needs, so it costs a claim nothing it did not need anyway.
    async fn read(&self, key: &str) -> Result<Option<Latest>, String> {
        self.read_within(key, self.settings.timeout).await
    }

    /// [`Self::read`] with its own time limit.
    async fn read_within(&self, key: &str, limit: Duration) -> Result<Option<Latest>, String> {
        let subject = format!("{}{}", self.kv.prefix, key);
        let attempts = async {
            let mut last = String::new();
            for _ in 0..5 {
                match self
                    .kv
                    .stream
                    .get_last_raw_message_by_subject(&subject)
                    .await
                {
                    Ok(msg) => {
                        let deleted = msg
                            .headers
                            .get("KV-Operation")
                            .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
                        return Ok(Some(Latest {
                            key: key.to_string(),
                            revision: msg.sequence,
                            deleted,
                            value: msg.payload,
                        }));
                    }
                    Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                        return Ok(None)
                    }
                    Err(e) => last = e.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(last)
        };
        tokio::time::timeout(limit, attempts)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
    }

    /// Bucket name.
    pub fn bucket(&self) -> &str {
        &self.settings.bucket
    }

    /// The store's health.
    pub fn health(&self) -> StoreHealth {
        match &self.degraded {
            None => StoreHealth::Healthy {
                bucket: self.settings.bucket.clone(),
            },
            Some((since, error)) => StoreHealth::Degraded {
                bucket: self.settings.bucket.clone(),
                since: *since,
                error: error.clone(),
                backlog: self.backlog.len(),
            },
        }
    }

    fn degrade(&mut self, error: String) {
        if self.degraded.is_none() {
            tracing::warn!(bucket = %self.settings.bucket, %error, "state store degraded: findings are still published, state will be written when it is back");
            self.degraded = Some((SystemTime::now(), error));
        } else if let Some((_, last)) = &mut self.degraded {
            *last = error;
        }
        self.last_retry = Some(Instant::now());
    }

    /// Reads every finding record and the history; purges resolved records past retention.
    pub async fn load(&mut self, now: SystemTime) -> Result<Loaded, StoreError> {
        let unavailable = |detail: String| StoreError::Unavailable {
            bucket: self.settings.bucket.clone(),
            detail,
        };
        let mut loaded = Loaded::default();
        let mut rekeyed: Vec<(String, u64, ActiveFinding)> = Vec::new();
        let mut present = std::collections::BTreeSet::new();
        let entries = match self.latest_entries().await {
            Ok(entries) => entries,
            Err(e) => return Err(unavailable(e)),
        };
        for entry in entries {
            let key = entry.key;
            self.revisions.insert(key.clone(), entry.revision);
            if entry.deleted {
                continue;
            }
            present.insert(key.clone());
            if key == HISTORY_KEY {
                match Histories::from_json(&entry.value) {
                    Ok(history) => loaded.history = Some(history),
                    Err(e) => tracing::warn!(%e, "ignoring an unreadable stored history"),
                }
                continue;
            }
            if key == EPOCH_KEY {
                match std::str::from_utf8(&entry.value) {
                    Ok(epoch) if crate::ha::ledger::valid_epoch(epoch) => {
                        loaded.epoch = Some(epoch.to_string())
                    }
                    _ => {
                        loaded.malformed += 1;
                        crate::log_malformed("stored epoch", &"not an epoch this service mints");
                    }
                }
                continue;
            }
            let record = serde_json::from_slice::<Stored>(&entry.value)
                .map_err(|e| e.to_string())
                .and_then(|s| crate::ha::validate::record(s.record, now));
            if let Ok(record) = &record {
                self.stored.insert(key.clone(), record.mark());
            }
            match record {
                Ok(Record::Active(mut active)) => {
                    if let Some(current) = current_key(&active.finding) {
                        // Written by a version that keyed findings by the leader's cluster:
                        // carried over under its group's key below, so it is not raised a
                        // second time.
                        active.finding.key = current;
                        if active.finding.server.is_none() {
                            active.finding.cluster = None;
                        }
                        rekeyed.push((key.clone(), entry.revision, active));
                        continue;
                    }
                    loaded.active.insert(active.finding.key.clone(), active);
                }
                Ok(Record::Resolved(resolved)) => {
                    loaded
                        .ended
                        .insert(resolved.finding.key.clone(), resolved.episode);
                    let age = now.duration_since(resolved.resolved_at).unwrap_or_default();
                    if age > RESOLVED_RETENTION && !is_slim(&resolved) {
                        self.slim(&key, entry.revision, resolved).await;
                    }
                }
                Err(e) => {
                    loaded.malformed += 1;
                    crate::log_malformed("stored finding", &format!("{key}: {e}"));
                }
            }
        }
        if loaded.epoch.is_none() {
            loaded.epoch = self.create_epoch().await;
        }
        if !rekeyed.is_empty() {
            tracing::info!(
                bucket = %self.settings.bucket,
                findings = rekeyed.len(),
                "re-keying active findings written by an earlier version (keys now name the meta group's domain, not a cluster)"
            );
        }
        for (old, revision, active) in rekeyed {
            let current = kv_key(&active.finding.key);
            // A record under the current key is newer than the old one (this version wrote it
            // after carrying the old one over, and perhaps resolved it since): the old one is
            // only left over.
            if !present.contains(&current) {
                self.backlog.insert(current, Record::Active(active.clone()));
                loaded.active.insert(active.finding.key.clone(), active);
            }
            self.stale_keys.push((old, revision));
        }
        self.retry().await;
        Ok(loaded)
    }

    /// Replaces a resolved record kept past retention by the same record without evidence or
    /// remediation (a failure leaves it whole for the next start).
    async fn slim(&mut self, key: &str, revision: u64, mut resolved: ResolvedFinding) {
        resolved.finding.evidence = serde_json::Value::Null;
        resolved.finding.remediation.clear();
        let stored = Stored {
            writer: self.instance.clone(),
            record: Record::Resolved(resolved),
        };
        let Ok(value) = serde_json::to_vec(&stored) else {
            return;
        };
        if let Ok(Ok(revision)) = tokio::time::timeout(
            self.settings.timeout,
            self.kv.update(key, value.into(), revision),
        )
        .await
        {
            self.revisions.insert(key.to_string(), revision);
        }
    }

    /// Creates the bucket's epoch key with a new epoch, or reads the one a peer created first;
    /// `None` when neither answers (the engine then mints one the bucket does not keep).
    async fn create_epoch(&mut self) -> Option<String> {
        let minted = nuid::next().to_string();
        let created = tokio::time::timeout(
            self.settings.timeout,
            self.kv.create(EPOCH_KEY, minted.clone().into()),
        )
        .await;
        match created {
            Ok(Ok(revision)) => {
                self.revisions.insert(EPOCH_KEY.to_string(), revision);
                tracing::info!(bucket = %self.settings.bucket, epoch = %minted, "new epoch of episode numbers (the bucket had none)");
                Some(minted)
            }
            _ => match self.read(EPOCH_KEY).await {
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
            match tokio::time::timeout(
                self.settings.timeout,
                self.kv.purge_expect_revision(&key, Some(revision)),
            )
            .await
            {
                Ok(Ok(())) => {
                    self.revisions.remove(&key);
                    self.stored.remove(&key);
                }
                // Changed since (a purge that went through but whose answer was lost): leave it.
                Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                _ => self.stale_keys.push((key, revision)),
            }
        }
    }

    /// [`KvStore::load`] at start, tried again while it fails for up to ten state timeouts: an
    /// instance started without its state would publish again what is already published, and a
    /// bucket that just lost a replica (the fault being watched may be that) answers slowly for
    /// a few seconds.
    async fn load_patiently(&mut self) -> Result<Loaded, StoreError> {
        let deadline = Instant::now() + self.settings.timeout * 10;
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

    /// The latest entry of every key, in one batched direct get (`multi_last`, nats-server 2.11+).
    /// No consumer is created, so this works while the JetStream API is slow or has no meta
    /// leader, as long as a replica of the bucket's stream answers.
    async fn latest_entries(&self) -> Result<Vec<Latest>, String> {
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| e.to_string())?;
        let body =
            serde_json::json!({ "multi_last": [format!("{}>", self.kv.prefix)] }).to_string();
        self.client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{}", self.kv.stream_name),
                inbox,
                body.into(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut entries = Vec::new();
        loop {
            let msg = match tokio::time::timeout(self.settings.timeout * 3, replies.next()).await {
                Ok(Some(msg)) => msg,
                Ok(None) => return Err("the reply subscription ended".to_string()),
                Err(_) => return Err("no answer to the batched read".to_string()),
            };
            match msg.status {
                // 204: end of batch; 404: the bucket is empty.
                Some(status) if status.as_u16() == 204 || status == StatusCode::NOT_FOUND => break,
                // nats-server before 2.11 knows no batched read ("408 Empty Request"): walk the
                // stream message by message instead.
                Some(status) if status.as_u16() == 408 && entries.is_empty() => {
                    return self.walk_entries().await;
                }
                Some(status) if status.as_u16() >= 300 => {
                    return Err(refusal("batched read", &msg, status.as_u16()))
                }
                _ => {}
            }
            if let Some(entry) = self.latest_of(msg) {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// The entry a direct get returned: its key (the subject less the bucket's prefix), its
    /// revision (the stream sequence) and whether it is a delete or purge marker.
    fn latest_of(&self, msg: async_nats::Message) -> Option<Latest> {
        let header = |name: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        let key = header("Nats-Subject")?
            .strip_prefix(self.kv.prefix.as_str())?
            .to_string();
        Some(Latest {
            key,
            revision: header("Nats-Sequence")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            deleted: header("KV-Operation").is_some_and(|op| op == "DEL" || op == "PURGE"),
            value: msg.payload,
        })
    }

    /// The latest entry of every key by walking the bucket's stream with direct gets
    /// (`next_by_subj`), for servers without the batched read (nats-server 2.10). Like the batched
    /// read it needs no consumer; it reads every kept revision, which for a state bucket (a few
    /// revisions of a few keys) is a few requests.
    async fn walk_entries(&self) -> Result<Vec<Latest>, String> {
        let subject = format!("$JS.API.DIRECT.GET.{}", self.kv.stream_name);
        let filter = format!("{}>", self.kv.prefix);
        let mut latest: BTreeMap<String, Latest> = BTreeMap::new();
        let mut seq: u64 = 1;
        // Bounded: a bucket of this service holds far fewer messages.
        for _ in 0..100_000 {
            let body = serde_json::json!({ "seq": seq, "next_by_subj": filter }).to_string();
            let msg = match tokio::time::timeout(
                self.settings.timeout * 3,
                self.client.request(subject.clone(), body.into()),
            )
            .await
            {
                Ok(Ok(msg)) => msg,
                Ok(Err(e)) => return Err(format!("walking the bucket: {e}")),
                Err(_) => return Err("no answer while walking the bucket".to_string()),
            };
            match msg.status {
                Some(status) if status == StatusCode::NOT_FOUND => break,
                Some(status) if status.as_u16() >= 300 => {
                    return Err(refusal("walking the bucket", &msg, status.as_u16()))
                }
                _ => {}
            }
            let sequence = msg
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Sequence"))
                .and_then(|v| v.as_str().parse::<u64>().ok());
            let Some(found) = sequence else {
                return Err("a walked message carries no sequence".to_string());
            };
            seq = found + 1;
            if let Some(entry) = self.latest_of(msg) {
                latest.insert(entry.key.clone(), entry);
            }
        }
        Ok(latest.into_values().collect())
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
            let revision = self.revisions.get(key).copied().unwrap_or(0);
            let written = self
                .kv
                .update(key, value.clone(), revision)
                .await
                .map_err(|e| (is_conflict(&e), e.to_string()));
            match written {
                Ok(revision) => {
                    self.revisions.insert(key.to_string(), revision);
                    self.stored.insert(key.to_string(), record.mark());
                    return Ok(());
                }
                Err((true, _)) => {
                    let Some(entry) = self.read(key).await? else {
                        self.revisions.remove(key);
                        continue;
                    };
                    self.revisions.insert(key.to_string(), entry.revision);
                    if entry.deleted {
                        continue;
                    }
                    let theirs = serde_json::from_slice::<Stored>(&entry.value).ok();
                    if let Some(theirs) = theirs {
                        self.stored.insert(key.to_string(), theirs.record.mark());
                        if theirs.record.mark() >= record.mark() {
                            // The same or a newer state is stored already.
                            return Ok(());
                        }
                    }
                }
                Err((false, e)) => return Err(e),
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
        if let Some((last, at)) = &self.history_written {
            if *last == text || at.elapsed() < timing().history_every {
                return;
            }
        }
        let Ok(value) = history.to_json() else {
            return;
        };
        match tokio::time::timeout(
            self.settings.timeout,
            self.kv.put(HISTORY_KEY, value.into()),
        )
        .await
        {
            Ok(Ok(revision)) => {
                self.revisions.insert(HISTORY_KEY.to_string(), revision);
                self.history_written = Some((text, Instant::now()));
            }
            Ok(Err(e)) => self.degrade(e.to_string()),
            Err(_) => self.degrade(format!("no answer within {:?}", self.settings.timeout)),
        }
    }

    /// Writes the backlog now (on shutdown: nothing this process knows may be lost), trying
    /// again until it is written or the shutdown flush time has passed.
    pub async fn flush(&mut self) {
        let deadline = Instant::now() + timing().shutdown_flush;
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
        let key = kv_key(record.key());
        let mark = record.mark();
        if self.stored.get(&key).is_some_and(|m| *m >= mark) {
            return;
        }
        if self.backlog.get(&key).is_none_or(|mine| mine.mark() < mark) {
            self.backlog.insert(key, record);
        }
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
        if !healthy
            && self
                .last_retry
                .is_some_and(|at| at.elapsed() < timing().store_retry)
        {
            return;
        }
        if !healthy {
            self.last_retry = Some(Instant::now());
        }
        let pending: Vec<(String, Record)> = self
            .backlog
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        for (key, record) in pending {
            match tokio::time::timeout(self.settings.timeout, self.write_record(&key, &record))
                .await
            {
                Ok(Ok(())) => {
                    // Unless a newer record of the key was queued meanwhile.
                    if self.backlog.get(&key) == Some(&record) {
                        self.backlog.remove(&key);
                    }
                }
                Ok(Err(e)) => {
                    self.degrade(e);
                    return;
                }
                Err(_) => {
                    self.degrade(format!("no answer within {:?}", self.settings.timeout));
                    return;
                }
            }
        }
        if healthy {
            return;
        }
        // Prove the bucket answers even with an empty backlog. A read, not stream info: the
        // JetStream API stalls without a meta leader even when the bucket's stream is fine.
        match self.read(HISTORY_KEY).await {
            Ok(_) => {
                tracing::info!(bucket = %self.settings.bucket, "state store healthy again; backlog written");
                self.degraded = None;
            }
            Err(e) => self.degrade(e),
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
            Persistence::Kv(kv) => Some(&kv.client),
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

    /// Opens the store at start: a configuration error is fatal, unavailability is retried later.
    pub async fn start(
        client: Client,
        settings: StoreSettings,
        cluster_size: Option<usize>,
    ) -> Result<(Persistence, Loaded), StoreError> {
        match KvStore::open(client.clone(), settings.clone(), cluster_size).await {
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
                if pending.last_try.elapsed() < timing().store_retry {
                    return None;
                }
                pending.last_try = Instant::now();
                match KvStore::open(
                    pending.client.clone(),
                    pending.settings.clone(),
                    cluster_size,
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

    /// A META_001 finding for `server` of cluster `c`.
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

    #[test]
    fn stored_records_round_trip_with_their_writer() {
        let finding = finding("n2");
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for record in [
            Record::Active(ActiveFinding {
                finding: finding.clone(),
                episode: 1,
                epoch: String::new(),
                revision: 1,
                raised_at: at,
                changed_at: at,
            }),
            Record::Resolved(ResolvedFinding {
                finding,
                episode: 1,
                epoch: String::new(),
                revision: 2,
                raised_at: at,
                resolved_at: at,
            }),
        ] {
            let stored = Stored {
                writer: "i1".into(),
                record,
            };
            let text = serde_json::to_string(&stored).expect("encodes");
            assert!(text.contains("\"writer\":\"i1\""), "{text}");
            assert_eq!(
                serde_json::from_str::<Stored>(&text).expect("decodes"),
                stored
            );
        }
    }

    #[test]
    fn marks_order_episodes_then_revisions_and_a_resolution_ends_its_episode() {
        assert!(Mark::active(1, 9) < Mark::active(2, 1));
        assert!(Mark::active(2, 1) < Mark::active(2, 2));
        assert!(Mark::active(2, 7) < Mark::resolved(2));
        assert!(Mark::resolved(2) < Mark::active(3, 1));
    }

    #[test]
    fn finding_keys_become_valid_kv_keys() {
        assert_eq!(kv_key("META_001/c1/n2"), "finding.META_001/c1/n2");
        assert_eq!(
            kv_key("META_006/my cluster.eu"),
            "finding.META_006/my=20cluster=2Eeu"
        );
        assert_ne!(kv_key("a=b"), kv_key("a.b"));
    }

    #[test]
    fn keys_of_the_previous_version_are_carried_to_the_group_key() {
        let old = finding("n2");
        assert_eq!(current_key(&old).as_deref(), Some("META_001/default/n2"));
        let current = crate::checks::Finding {
            key: "META_001/default/n2".into(),
            ..old.clone()
        };
        assert_eq!(current_key(&current), None);
        let edge = crate::checks::Finding {
            key: "META_006/leaf-cluster".into(),
            check: crate::checks::CheckId::META_006,
            domain: Some("edge".into()),
            server: None,
            ..old.clone()
        };
        assert_eq!(current_key(&edge).as_deref(), Some("META_006/edge"));
        let already = crate::checks::Finding {
            key: "META_006/edge".into(),
            ..edge
        };
        assert_eq!(current_key(&already), None);
    }
}
