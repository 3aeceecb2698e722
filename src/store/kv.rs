//! Persist's edge: the JetStream KV bucket as the store uses it. Opens (or creates) the bucket,
//! reads the latest entry of one key from the stream's leader or of every key in one batched
//! direct get, and writes by compare-and-set on the revision last seen. Every error async-nats
//! hands over is classified here, once, into a [`KvError`]; what to do about it (the backlog, the
//! store's health) is [`super::persistence`]'s.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{
    AccountError, AccountErrorKind, CreateKeyValueError, CreateKeyValueErrorKind,
    CreateStreamError, CreateStreamErrorKind, PublishError, PublishErrorKind,
    RequestError as ApiRequestError, RequestErrorKind as ApiRequestErrorKind,
};
use async_nats::jetstream::kv::{self, EntryError, EntryErrorKind, UpdateError, UpdateErrorKind};
use async_nats::jetstream::stream::{
    DirectGetError, DirectGetErrorKind, LastRawMessageError, LastRawMessageErrorKind,
};
use async_nats::jetstream::{self, stream::StorageType, ErrorCode};
use async_nats::{Client, RequestError, RequestErrorKind, StatusCode};
use bytes::Bytes;
use futures::StreamExt;

use super::StoreSettings;

/// Key of the persisted history.
pub(super) const HISTORY_KEY: &str = "history";
/// Key of the epoch the bucket's records number episodes in ([`crate::ha::Ledger::epoch`]):
/// created once with the bucket's first load, so a bucket lost or recreated (no such key) never
/// lends its epoch to numbers counted again from one.
pub(super) const EPOCH_KEY: &str = "epoch";

/// Why the bucket as a whole cannot be used (opening it, or loading what it holds).
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

/// Why one operation on the bucket failed, decided where async-nats returns the error. Each
/// variant carries the text STATUS shows for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// No answer in time, or a refusal that passes with time: JetStream without quorum or leader
    /// (10008), a fresh cluster whose peers are not all counted yet (10005), nobody listening.
    #[error("{0}")]
    Unavailable(String),
    /// A compare-and-set lost: the key changed since the revision it expected (10071, or 10164
    /// from nats-server 2.15).
    #[error("{0}")]
    Conflict(String),
    /// The bucket's stream already exists with another configuration, or is being created by
    /// another instance at this moment (10058).
    #[error("{0}")]
    Exists(String),
    /// A refusal that retrying will not mend (JetStream not enabled, permissions, a bad config).
    #[error("{0}")]
    Config(String),
}

impl KvError {
    /// No answer within `limit` (a time limit of this service, not of async-nats).
    fn no_answer(limit: Duration) -> KvError {
        KvError::Unavailable(format!("no answer within {limit:?}"))
    }

    /// The same kind of failure, its text prefixed with what was being done.
    fn during(self, what: &str) -> KvError {
        let text = |detail: String| format!("{what}: {detail}");
        match self {
            KvError::Unavailable(d) => KvError::Unavailable(text(d)),
            KvError::Conflict(d) => KvError::Conflict(text(d)),
            KvError::Exists(d) => KvError::Exists(text(d)),
            KvError::Config(d) => KvError::Config(text(d)),
        }
    }

    /// As a failure of the whole bucket: only unavailability is worth waiting out.
    fn of_bucket(self, bucket: &str) -> StoreError {
        let bucket = bucket.to_string();
        match self {
            KvError::Unavailable(detail) => StoreError::Unavailable { bucket, detail },
            other => StoreError::Config {
                bucket,
                detail: other.to_string(),
            },
        }
    }
}

/// The kind of a failure, before its text is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Unavailable,
    Conflict,
    Exists,
    Config,
}

impl Class {
    fn with(self, detail: String) -> KvError {
        match self {
            Class::Unavailable => KvError::Unavailable(detail),
            Class::Conflict => KvError::Conflict(detail),
            Class::Exists => KvError::Exists(detail),
            Class::Config => KvError::Config(detail),
        }
    }
}

/// Classifies an error from async-nats: by the first link of its source chain whose type tells
/// (an error kind, or the JetStream error code the server answered with), else by its text.
pub(super) fn classify(error: &(dyn StdError + 'static)) -> KvError {
    let mut link = Some(error);
    let mut class = None;
    while let Some(e) = link {
        class = typed(e);
        if class.is_some() {
            break;
        }
        link = e.source();
    }
    let detail = error.to_string();
    class.unwrap_or_else(|| by_text(&detail)).with(detail)
}

/// What one link of an error chain says by its type, if anything.
fn typed(e: &(dyn StdError + 'static)) -> Option<Class> {
    if let Some(e) = e.downcast_ref::<jetstream::Error>() {
        return by_code(e.error_code());
    }
    if let Some(e) = e.downcast_ref::<UpdateError>() {
        return match e.kind() {
            UpdateErrorKind::TimedOut => Some(Class::Unavailable),
            UpdateErrorKind::WrongLastRevision => Some(Class::Conflict),
            UpdateErrorKind::InvalidKey | UpdateErrorKind::Other => None,
        };
    }
    if let Some(e) = e.downcast_ref::<PublishError>() {
        return match e.kind() {
            PublishErrorKind::TimedOut => Some(Class::Unavailable),
            PublishErrorKind::WrongLastSequence => Some(Class::Conflict),
            _ => None,
        };
    }
    if let Some(e) = e.downcast_ref::<CreateKeyValueError>() {
        return (e.kind() == CreateKeyValueErrorKind::TimedOut).then_some(Class::Unavailable);
    }
    if let Some(e) = e.downcast_ref::<CreateStreamError>() {
        return match e.kind() {
            CreateStreamErrorKind::TimedOut => Some(Class::Unavailable),
            CreateStreamErrorKind::JetStream(e) => by_code(e.error_code()),
            _ => None,
        };
    }
    if let Some(e) = e.downcast_ref::<AccountError>() {
        return match e.kind() {
            AccountErrorKind::TimedOut => Some(Class::Unavailable),
            AccountErrorKind::JetStream(e) => by_code(e.error_code()),
            _ => None,
        };
    }
    if let Some(e) = e.downcast_ref::<ApiRequestError>() {
        // No responders on the JetStream API is told apart from the core request's: it means
        // JetStream is not there for this account, which waiting does not change.
        return (e.kind() == ApiRequestErrorKind::TimedOut).then_some(Class::Unavailable);
    }
    if let Some(e) = e.downcast_ref::<RequestError>() {
        return matches!(
            e.kind(),
            RequestErrorKind::TimedOut | RequestErrorKind::NoResponders
        )
        .then_some(Class::Unavailable);
    }
    if let Some(e) = e.downcast_ref::<EntryError>() {
        return (e.kind() == EntryErrorKind::TimedOut).then_some(Class::Unavailable);
    }
    if let Some(e) = e.downcast_ref::<DirectGetError>() {
        return (e.kind() == DirectGetErrorKind::TimedOut).then_some(Class::Unavailable);
    }
    if let Some(e) = e.downcast_ref::<LastRawMessageError>() {
        if let LastRawMessageErrorKind::JetStream(e) = e.kind() {
            return by_code(e.error_code());
        }
    }
    None
}

/// What a JetStream error code says; `None` for the codes whose meaning is in their text.
fn by_code(code: ErrorCode) -> Option<Class> {
    match code {
        // async-nats maps 10071 to its wrong-revision kind but not 10164, the code nats-server
        // 2.15 answers a lost compare-and-set with.
        ErrorCode::STREAM_WRONG_LAST_SEQUENCE | ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT => {
            Some(Class::Conflict)
        }
        // Leaderless or without quorum; a fresh cluster's first placement (seen on 2.10-2.12
        // right after the first election). Both pass with time.
        ErrorCode::CLUSTER_NOT_AVAILABLE | ErrorCode::CLUSTER_NO_PEERS => Some(Class::Unavailable),
        ErrorCode::STREAM_NAME_EXIST => Some(Class::Exists),
        _ => None,
    }
}

/// The last resort when no type in the chain tells: I/O failures carry only text, and several
/// server errors are a generic code around the text of their cause ("{err}"), so a time-out
/// there is known by its words alone.
fn by_text(detail: &str) -> Class {
    let d = detail.to_ascii_lowercase();
    let passes = [
        "timed out",
        "timeout",
        "temporarily unavailable",
        "no suitable peers",
    ];
    if passes.iter().any(|p| d.contains(p)) {
        Class::Unavailable
    } else {
        Class::Config
    }
}

/// A direct get the server refused, by its status: a 408 or 5xx passes, the rest does not.
fn refusal(what: &str, msg: &async_nats::Message, status: StatusCode) -> KvError {
    let detail = format!(
        "{what} refused: {} {}",
        status.as_u16(),
        msg.description.as_deref().unwrap_or_default()
    );
    if status == StatusCode::TIMEOUT || status.as_u16() >= 500 {
        KvError::Unavailable(detail)
    } else {
        KvError::Config(detail)
    }
}

/// The latest value of one key, as a read returns it.
#[derive(Debug, Clone)]
pub(super) struct Latest {
    /// The key (the subject less the bucket's prefix).
    pub(super) key: String,
    /// Its KV revision (the stream sequence).
    pub(super) revision: u64,
    /// Whether it is a delete or purge marker.
    pub(super) deleted: bool,
    /// The value.
    pub(super) value: Bytes,
}

/// An open bucket, and the revision of each key as last written or read here (what the next
/// compare-and-set of the key expects).
pub(super) struct Bucket {
    client: Client,
    kv: kv::Store,
    name: String,
    timeout: Duration,
    revisions: BTreeMap<String, u64>,
}

impl Bucket {
    /// Opens the bucket, creating it with a config fit for state when it is missing.
    pub(super) async fn open(
        client: Client,
        settings: &StoreSettings,
        cluster_size: Option<usize>,
    ) -> Result<Bucket, StoreError> {
        let js = jetstream::new(client.clone());
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
                Ok(Err(e)) => match classify(&e) {
                    // Someone else is creating it: open it next time round.
                    error @ (KvError::Exists(_) | KvError::Unavailable(_)) => error,
                    error => return Err(error.of_bucket(&settings.bucket)),
                },
                Err(_) => KvError::Unavailable("timed out creating the bucket".to_string()),
            };
            if Instant::now() > deadline {
                return Err(StoreError::Unavailable {
                    bucket: settings.bucket.clone(),
                    detail: last_error.to_string(),
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
            return Err(StoreError::Config {
                bucket: settings.bucket.clone(),
                detail: "the bucket does not answer reads".to_string(),
            });
        }
        Ok(Bucket {
            client,
            kv,
            name: settings.bucket.clone(),
            timeout: settings.timeout,
            revisions: BTreeMap::new(),
        })
    }

    /// Bucket name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The state connection.
    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    /// The longest one operation may take (`--state-timeout`).
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Reads the latest message of a key from the bucket's stream leader, retrying briefly
    /// within the timeout. Not a direct get: those are answered by any replica, and one that is
    /// still catching up (restarted moments ago) answers with an older revision or none, which
    /// would make a claim lose to a state it already replaced. The leader is also what any write
    /// needs, so it costs a claim nothing it did not need anyway.
    pub(super) async fn read(&self, key: &str) -> Result<Option<Latest>, KvError> {
        let limit = self.timeout;
        let subject = format!("{}{}", self.kv.prefix, key);
        let attempts = async {
            let mut last = KvError::Unavailable(String::new());
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
                    Err(e) => last = classify(&e),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(last)
        };
        tokio::time::timeout(limit, attempts)
            .await
            .unwrap_or_else(|_| Err(KvError::no_answer(limit)))
    }

    /// [`Self::read`], remembering the revision read (or that the key has none) for the next
    /// compare-and-set.
    pub(super) async fn refresh(&mut self, key: &str) -> Result<Option<Latest>, KvError> {
        let latest = self.read(key).await?;
        match &latest {
            Some(entry) => self.revisions.insert(key.to_string(), entry.revision),
            None => self.revisions.remove(key),
        };
        Ok(latest)
    }

    /// Writes `value` under `key` if the key is still at the revision last seen here (none: the
    /// key must not exist), remembering the new revision. No time limit of its own: the caller's
    /// covers it with what else it does.
    pub(super) async fn update(&mut self, key: &str, value: Bytes) -> Result<(), KvError> {
        let revision = self.revisions.get(key).copied().unwrap_or(0);
        let written = self
            .kv
            .update(key, value, revision)
            .await
            .map_err(|e| classify(&e))?;
        self.revisions.insert(key.to_string(), written);
        Ok(())
    }

    /// Writes `value` under `key` whatever is there (within the timeout).
    pub(super) async fn put(&mut self, key: &str, value: Bytes) -> Result<(), KvError> {
        match tokio::time::timeout(self.timeout, self.kv.put(key, value)).await {
            Ok(Ok(revision)) => {
                self.revisions.insert(key.to_string(), revision);
                Ok(())
            }
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(KvError::no_answer(self.timeout)),
        }
    }

    /// Creates `key` with `value` unless it exists (within the timeout).
    pub(super) async fn create(&mut self, key: &str, value: Bytes) -> Result<(), KvError> {
        match tokio::time::timeout(self.timeout, self.kv.create(key, value)).await {
            Ok(Ok(revision)) => {
                self.revisions.insert(key.to_string(), revision);
                Ok(())
            }
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(KvError::no_answer(self.timeout)),
        }
    }

    /// Purges `key` if it is still at `revision` (within the timeout); [`KvError::Conflict`]
    /// when it changed since.
    pub(super) async fn purge(&mut self, key: &str, revision: u64) -> Result<(), KvError> {
        match tokio::time::timeout(
            self.timeout,
            self.kv.purge_expect_revision(key, Some(revision)),
        )
        .await
        {
            Ok(Ok(())) => {
                self.revisions.remove(key);
                Ok(())
            }
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(KvError::no_answer(self.timeout)),
        }
    }

    /// The latest entry of every key, remembering each key's revision.
    pub(super) async fn entries(&mut self) -> Result<Vec<Latest>, KvError> {
        let entries = self.latest_entries().await?;
        for entry in &entries {
            self.revisions.insert(entry.key.clone(), entry.revision);
        }
        Ok(entries)
    }

    /// The latest entry of every key, in one batched direct get (`multi_last`, nats-server 2.11+).
    /// No consumer is created, so this works while the JetStream API is slow or has no meta
    /// leader, as long as a replica of the bucket's stream answers.
    async fn latest_entries(&self) -> Result<Vec<Latest>, KvError> {
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| classify(&e))?;
        let body =
            serde_json::json!({ "multi_last": [format!("{}>", self.kv.prefix)] }).to_string();
        self.client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{}", self.kv.stream_name),
                inbox,
                body.into(),
            )
            .await
            .map_err(|e| classify(&e))?;
        let mut entries = Vec::new();
        loop {
            let msg = match tokio::time::timeout(self.timeout * 3, replies.next()).await {
                Ok(Some(msg)) => msg,
                Ok(None) => {
                    return Err(KvError::Unavailable(
                        "the reply subscription ended".to_string(),
                    ))
                }
                Err(_) => {
                    return Err(KvError::Unavailable(
                        "no answer to the batched read".to_string(),
                    ))
                }
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
                    return Err(refusal("batched read", &msg, status))
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
    async fn walk_entries(&self) -> Result<Vec<Latest>, KvError> {
        let subject = format!("$JS.API.DIRECT.GET.{}", self.kv.stream_name);
        let filter = format!("{}>", self.kv.prefix);
        let mut latest: BTreeMap<String, Latest> = BTreeMap::new();
        let mut seq: u64 = 1;
        // Bounded: a bucket of this service holds far fewer messages.
        for _ in 0..100_000 {
            let body = serde_json::json!({ "seq": seq, "next_by_subj": filter }).to_string();
            let msg = match tokio::time::timeout(
                self.timeout * 3,
                self.client.request(subject.clone(), body.into()),
            )
            .await
            {
                Ok(Ok(msg)) => msg,
                Ok(Err(e)) => return Err(classify(&e).during("walking the bucket")),
                Err(_) => {
                    return Err(KvError::Unavailable(
                        "no answer while walking the bucket".to_string(),
                    ))
                }
            };
            match msg.status {
                Some(status) if status == StatusCode::NOT_FOUND => break,
                Some(status) if status.as_u16() >= 300 => {
                    return Err(refusal("walking the bucket", &msg, status))
                }
                _ => {}
            }
            let sequence = msg
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Sequence"))
                .and_then(|v| v.as_str().parse::<u64>().ok());
            let Some(found) = sequence else {
                return Err(KvError::Config(
                    "a walked message carries no sequence".to_string(),
                ));
            };
            seq = found + 1;
            if let Some(entry) = self.latest_of(msg) {
                latest.insert(entry.key.clone(), entry);
            }
        }
        Ok(latest.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error the server answered with.
    fn server(code: u64, description: &str) -> jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": 400,
            "err_code": code,
            "description": description,
        }))
        .expect("a JetStream API error")
    }

    /// How a compare-and-set that lost with `code` reaches the store: an update error around
    /// the publish error around the server's answer.
    fn lost_update(code: u64) -> UpdateError {
        UpdateError::with_source(
            UpdateErrorKind::Other,
            PublishError::with_source(PublishErrorKind::Other, server(code, "wrong last sequence")),
        )
    }

    fn create_refused(code: u64, description: &str) -> CreateKeyValueError {
        CreateKeyValueError::with_source(
            CreateKeyValueErrorKind::BucketCreate,
            CreateStreamError::new(CreateStreamErrorKind::JetStream(server(code, description))),
        )
    }

    #[test]
    fn a_lost_compare_and_set_is_a_conflict_by_kind_or_by_either_server_code() {
        let by_kind = UpdateError::new(UpdateErrorKind::WrongLastRevision);
        assert!(matches!(classify(&by_kind), KvError::Conflict(_)));
        for code in [10071, 10164] {
            let error = lost_update(code);
            assert!(
                matches!(classify(&error), KvError::Conflict(_)),
                "{code}: {:?}",
                classify(&error)
            );
        }
        // Another refusal of an update is no conflict.
        let refused = UpdateError::with_source(
            UpdateErrorKind::Other,
            PublishError::with_source(PublishErrorKind::Other, server(10077, "store failed")),
        );
        assert!(matches!(classify(&refused), KvError::Config(_)));
    }

    #[test]
    fn what_passes_with_time_is_unavailable_and_what_does_not_is_config() {
        let unavailable: Vec<Box<dyn StdError>> = vec![
            Box::new(create_refused(
                10008,
                "JetStream system temporarily unavailable",
            )),
            Box::new(create_refused(10005, "no suitable peers for placement")),
            Box::new(CreateKeyValueError::new(CreateKeyValueErrorKind::TimedOut)),
            Box::new(CreateKeyValueError::with_source(
                CreateKeyValueErrorKind::JetStream,
                AccountError::new(AccountErrorKind::TimedOut),
            )),
            Box::new(UpdateError::new(UpdateErrorKind::TimedOut)),
            Box::new(RequestError::new(RequestErrorKind::NoResponders)),
            Box::new(RequestError::new(RequestErrorKind::TimedOut)),
            Box::new(EntryError::new(EntryErrorKind::TimedOut)),
            // A generic code around its cause's text: only the text tells.
            Box::new(create_refused(10049, "stream create: raft timeout")),
        ];
        for error in &unavailable {
            assert!(
                matches!(classify(error.as_ref()), KvError::Unavailable(_)),
                "{error}"
            );
        }
        let config: Vec<Box<dyn StdError>> = vec![
            Box::new(CreateKeyValueError::with_source(
                CreateKeyValueErrorKind::JetStream,
                AccountError::new(AccountErrorKind::JetStream(server(
                    10039,
                    "JetStream not enabled for account",
                ))),
            )),
            // Nobody answers the JetStream API: JetStream is not enabled for the account.
            Box::new(CreateKeyValueError::with_source(
                CreateKeyValueErrorKind::BucketCreate,
                CreateStreamError::new(CreateStreamErrorKind::JetStreamUnavailable),
            )),
            Box::new(create_refused(
                10052,
                "replicas > 1 not supported in non-clustered mode",
            )),
            Box::new(std::io::Error::other("connection reset")),
        ];
        for error in &config {
            assert!(
                matches!(classify(error.as_ref()), KvError::Config(_)),
                "{error}"
            );
        }
    }

    #[test]
    fn a_bucket_created_meanwhile_with_another_config_is_told_apart() {
        let error = create_refused(
            10058,
            "stream name already in use with a different configuration",
        );
        assert!(matches!(classify(&error), KvError::Exists(_)));
    }

    #[test]
    fn the_text_shown_is_async_nats_own() {
        let error = create_refused(10008, "JetStream system temporarily unavailable");
        assert_eq!(classify(&error).to_string(), error.to_string());
        assert_eq!(
            KvError::no_answer(Duration::from_secs(1)).to_string(),
            "no answer within 1s"
        );
        assert_eq!(
            KvError::Unavailable("request timed out".into())
                .during("walking the bucket")
                .to_string(),
            "walking the bucket: request timed out"
        );
    }

    #[test]
    fn a_bucket_fails_as_a_whole_only_for_good_when_it_is_not_unavailable() {
        let unavailable = KvError::Unavailable("x".into()).of_bucket("b");
        assert!(matches!(unavailable, StoreError::Unavailable { .. }));
        for error in [KvError::Config("x".into()), KvError::Exists("x".into())] {
            assert!(matches!(error.of_bucket("b"), StoreError::Config { .. }));
        }
    }
}
