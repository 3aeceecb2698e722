//! Publish: the fifth stage. Turns transitions into the finding events downstream automation relies
//! on (`$INSIGHTS.FINDING.<CHECK>.<EVENT>`) and sends the heartbeat. Core NATS only: publishing
//! never waits on JetStream.

use std::collections::BTreeMap;
use std::time::SystemTime;

use async_nats::Client;
use serde::{Deserialize, Serialize};

use crate::checks::{CheckId, Remediation, Severity};
use crate::findings::{ActiveSet, Transition, TransitionKind};
use crate::time_format;

/// Subject prefix of finding events.
pub const FINDING_PREFIX: &str = "$INSIGHTS.FINDING";
/// Subject of the heartbeat.
pub const HEARTBEAT_SUBJECT: &str = "$INSIGHTS.HEARTBEAT";
/// `type` of a finding event.
pub const FINDING_TYPE: &str = "io.nats.insights.v1.finding";
/// `type` of a heartbeat.
pub const HEARTBEAT_TYPE: &str = "io.nats.insights.v1.heartbeat";

/// The subject a transition is published on, e.g. `$INSIGHTS.FINDING.META_001.RAISED`.
pub fn finding_subject(check: CheckId, kind: TransitionKind) -> String {
    format!(
        "{FINDING_PREFIX}.{}.{}",
        check.as_str(),
        kind.subject_token()
    )
}

/// The id of the event announcing `transition`: a digest of what the transition is, never of who
/// saw it or when: the epoch its episode was raised in, the finding key, its episode, the kind,
/// and for an update its revision (a raise is always revision 1; a resolution ends its episode
/// whatever revision it reached). Every instance that publishes the same transition sends the
/// same id, also as `Nats-Msg-Id`; the epoch keeps episode numbers that start again from one
/// (memory lost) from repeating an id (docs/ha.md). Episodes of versions before epochs (empty
/// epoch) keep the ids they were published with.
pub fn event_id(transition: &Transition) -> String {
    use sha2::Digest;
    let revision = match transition.kind {
        TransitionKind::Updated => transition.revision,
        TransitionKind::Raised | TransitionKind::Resolved => 0,
    };
    let mut text = format!(
        "{}\n{}\n{}\n{}",
        transition.finding.key,
        transition.episode,
        transition.kind.as_str(),
        revision
    );
    if !transition.epoch.is_empty() {
        text = format!("{}\n{text}", transition.epoch);
    }
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// The body of a finding event: the contract described in `schemas/finding.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FindingEvent {
    /// Always `io.nats.insights.v1.finding`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Id of the transition this event announces: every copy of it has the same id, whichever
    /// instance sends it ([`event_id`]), so consumers can drop copies by id.
    pub id: String,
    /// Stable key of the finding, the same for all its events.
    pub finding: String,
    /// `raised`, `updated` or `resolved`.
    pub event: TransitionKind,
    /// Which episode of the finding this is: 1 for its first raise, one more for each raise
    /// after a resolution (0 from versions that did not number them).
    #[serde(default)]
    pub episode: u64,
    /// The epoch the episode was numbered in (see [`event_id`]); absent from versions before
    /// epochs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// Grows with each event of the same episode (a raise is 1).
    pub revision: u64,
    /// Check id, e.g. `META_001`.
    pub check: CheckId,
    /// Check name.
    pub name: String,
    /// Severity.
    pub severity: Severity,
    /// Category.
    pub category: String,
    /// The affected server's own cluster, on per-server findings only (a meta group can span
    /// the clusters of a supercluster; the group is identified by `domain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// JetStream domain, omitted when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Affected server, for per-server findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// One sentence for a human.
    pub summary: String,
    /// Observed values.
    pub evidence: serde_json::Value,
    /// What to do.
    pub remediation: Vec<Remediation>,
    /// When the finding was raised (RFC 3339).
    pub raised_at: String,
    /// When this event happened (RFC 3339).
    pub timestamp: String,
    /// When it was resolved; only on resolved events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    /// The nats-insights instance that published it.
    pub instance: String,
    /// The deployment that instance belongs to (`--deployment`, its bucket by default): the
    /// instances of one deployment are each other's HA peers (absent from versions before).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deployment: String,
}

impl FindingEvent {
    /// Builds the event for a transition.
    pub fn from_transition(transition: &Transition, instance: &str) -> Self {
        let f = &transition.finding;
        let at = time_format::rfc3339(transition.at);
        FindingEvent {
            kind: FINDING_TYPE.to_string(),
            id: event_id(transition),
            finding: f.key.clone(),
            event: transition.kind,
            episode: transition.episode,
            epoch: transition.epoch.clone(),
            revision: transition.revision,
            check: f.check,
            name: f.check.name().to_string(),
            severity: f.check.severity(),
            category: f.check.category().to_string(),
            cluster: f.cluster.clone(),
            domain: f.domain.clone(),
            server: f.server.clone(),
            summary: match transition.kind {
                TransitionKind::Resolved => format!(
                    "Resolved after {}: {}",
                    crate::checks::seconds(
                        transition
                            .at
                            .duration_since(transition.raised_at)
                            .unwrap_or_default()
                    ),
                    f.summary
                ),
                _ => f.summary.clone(),
            },
            evidence: f.evidence.clone(),
            remediation: f.remediation.clone(),
            raised_at: time_format::rfc3339(transition.raised_at),
            resolved_at: (transition.kind == TransitionKind::Resolved).then(|| at.clone()),
            timestamp: at,
            instance: instance.to_string(),
            deployment: String::new(),
        }
    }

    /// The subject this event goes to.
    pub fn subject(&self) -> String {
        finding_subject(self.check, self.event)
    }
}

/// The periodic proof of life: `schemas/heartbeat.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    /// Always `io.nats.insights.v1.heartbeat`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Instance id.
    pub instance: String,
    /// Service version.
    pub version: String,
    /// When it was sent (RFC 3339).
    pub timestamp: String,
    /// When the last poll completed (RFC 3339), null before the first.
    pub last_poll: Option<String>,
    /// Active findings by severity.
    pub active: BTreeMap<String, usize>,
    /// Active findings in all.
    pub active_total: usize,
}

impl Heartbeat {
    /// Builds a heartbeat from the active set.
    pub fn new(
        instance: &str,
        active: &ActiveSet,
        last_poll: Option<SystemTime>,
        now: SystemTime,
    ) -> Self {
        let mut counts: BTreeMap<String, usize> =
            [Severity::Critical, Severity::Warning, Severity::Info]
                .into_iter()
                .map(|s| (s.as_str().to_string(), 0))
                .collect();
        for a in active.values() {
            *counts
                .entry(a.finding.check.severity().as_str().to_string())
                .or_default() += 1;
        }
        Heartbeat {
            kind: HEARTBEAT_TYPE.to_string(),
            instance: instance.to_string(),
            version: crate::VERSION.to_string(),
            timestamp: time_format::rfc3339(now),
            last_poll: last_poll.map(time_format::rfc3339),
            active: counts,
            active_total: active.len(),
        }
    }
}

/// The largest finding event sent, headers included: the shipped findings stream's
/// `max_msg_size` (deploy/findings-stream.json). A larger event, or one larger than the server's
/// `max_payload`, is shortened ([`shorten`]), never dropped.
pub const EVENT_MAX_BYTES: usize = 64 * 1024;
/// Room kept for the headers (`Nats-Msg-Id`) and the protocol line.
const HEADER_ROOM: usize = 256;
/// Items of a list kept when an event is shortened.
const LIST_KEEP: usize = 8;
/// Characters of a text kept when an event is shortened.
const TEXT_KEEP: usize = 200;

/// Fits `event`'s body within `limit` bytes, cutting what matters least first: lists in the
/// evidence down to their first items and "and N more", long texts in it and a very long
/// summary; then the evidence to a note and the remediation to its first step; then the
/// remediation and the summary to a line. The identity (id, key,
/// episode, revision, check, times) is never cut. True if anything was cut.
pub fn shorten(event: &mut FindingEvent, limit: usize) -> bool {
    let fits = |e: &FindingEvent| serde_json::to_vec(e).map_or(0, |b| b.len()) <= limit;
    if fits(event) {
        return false;
    }
    let note = serde_json::Value::String(format!(
        "shortened to fit {limit} bytes (the server's max_payload or the findings stream's max_msg_size)"
    ));
    cap_value(&mut event.evidence);
    cap_text(&mut event.summary, TEXT_KEEP * 4);
    if let serde_json::Value::Object(map) = &mut event.evidence {
        map.insert("shortened".to_string(), note.clone());
    }
    if fits(event) {
        return true;
    }
    event.evidence = serde_json::json!({ "shortened": note });
    event.remediation.truncate(1);
    for step in &mut event.remediation {
        cap_text(&mut step.step, TEXT_KEEP * 2);
        if let Some(command) = &mut step.command {
            cap_text(command, TEXT_KEEP * 2);
        }
    }
    if fits(event) {
        return true;
    }
    event.remediation.clear();
    cap_text(&mut event.summary, TEXT_KEEP);
    true
}

/// Caps every list in `value` at [`LIST_KEEP`] items (and "and N more") and every text at
/// [`TEXT_KEEP`] characters.
fn cap_value(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Array(items) => {
            if items.len() > LIST_KEEP {
                let more = items.len() - LIST_KEEP;
                items.truncate(LIST_KEEP);
                items.push(serde_json::Value::String(format!("and {more} more")));
            }
            items.iter_mut().for_each(cap_value);
        }
        serde_json::Value::Object(map) => map.values_mut().for_each(cap_value),
        serde_json::Value::String(text) => cap_text(text, TEXT_KEEP),
        _ => {}
    }
}

fn cap_text(text: &mut String, keep: usize) {
    if let Some((cut, _)) = text.char_indices().nth(keep) {
        text.truncate(cut);
        text.push('…');
    }
}

/// How long a publish may wait for the server's confirmation.
const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// How many times one event is sent before giving up.
const DELIVERY_ATTEMPTS: u32 = 4;

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Encoding (cannot really fail for these types, but never unwrap).
    #[error("cannot encode event: {0}")]
    Encode(#[from] serde_json::Error),
    /// Never confirmed by a server.
    #[error("{subject} was not confirmed by any server after {attempts} attempts")]
    Unconfirmed {
        /// Subject.
        subject: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The client refused (disconnected with a full buffer, or closed).
    #[error("cannot publish {subject}: {source}")]
    Send {
        /// Subject.
        subject: String,
        /// Client error.
        source: async_nats::PublishError,
    },
}

/// True when the server the client is attached to answers a request within `wait`, proving it
/// processed everything the client sent before. `Client::flush` is no such proof: it returns once
/// the bytes are in the socket, which a stopped (SIGSTOP) or cut-off server still accepts, and
/// delivers them whenever it wakes. The request is the `$SRV.PING` of the service's own micro
/// service (a subject the service may publish anyway); "no responders" is an answer too.
pub async fn round_trip(client: &Client, wait: std::time::Duration) -> bool {
    let subject = format!("$SRV.PING.{}", crate::service::SERVICE_NAME);
    match tokio::time::timeout(wait, client.request(subject, "".into())).await {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => error.kind() == async_nats::RequestErrorKind::NoResponders,
        Err(_) => false,
    }
}

/// Publishes events on the system-account connection.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    instance: String,
    deployment: String,
}

impl Publisher {
    /// A publisher for one instance of `deployment`.
    pub fn new(client: Client, instance: String, deployment: String) -> Self {
        Publisher {
            client,
            instance,
            deployment,
        }
    }

    /// Publishes one transition; returns the event sent.
    pub async fn transition(&self, transition: &Transition) -> Result<FindingEvent, PublishError> {
        let mut event = FindingEvent::from_transition(transition, &self.instance);
        event.deployment = self.deployment.clone();
        // (0 before the first INFO: no limit known but ours.)
        let limit = match self.client.server_info().max_payload {
            0 => EVENT_MAX_BYTES,
            max => max.min(EVENT_MAX_BYTES),
        }
        .saturating_sub(HEADER_ROOM);
        if shorten(&mut event, limit) {
            tracing::warn!(finding = %event.finding, limit, "finding event shortened to fit");
        }
        self.send(event.subject(), &event.id, &event).await?;
        Ok(event)
    }

    /// Publishes a heartbeat: once, unconfirmed. A lost heartbeat is replaced by the next one, and
    /// waiting for a stopped server here would hold the pipeline (and the findings) behind a
    /// proof of life; moving off a server that does not answer is the round's job.
    pub async fn heartbeat(&self, heartbeat: &Heartbeat) -> Result<(), PublishError> {
        let payload: bytes::Bytes = serde_json::to_vec(heartbeat)?.into();
        match tokio::time::timeout(
            CONFIRM_TIMEOUT,
            self.client.publish(HEARTBEAT_SUBJECT, payload),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(PublishError::Send {
                subject: HEARTBEAT_SUBJECT.to_string(),
                source,
            }),
            Err(_) => Err(PublishError::Unconfirmed {
                subject: HEARTBEAT_SUBJECT.to_string(),
                attempts: 1,
            }),
        }
    }

    /// Publishes and confirms the server has processed it: a request sent after it on the same
    /// connection is answered (a server handles one connection's messages in order). If not, for
    /// example because the server we are attached to is shutting down, stopped or cut off, it
    /// reconnects and sends the same payload again (same event `id`, so consumers can drop a
    /// duplicate).
    /// `id` also goes out as `Nats-Msg-Id`: a stream that captures the events keeps one copy.
    async fn send<T: Serialize>(
        &self,
        subject: String,
        id: &str,
        body: &T,
    ) -> Result<(), PublishError> {
        let payload: bytes::Bytes = serde_json::to_vec(body)?.into();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.client
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await
                .map_err(|source| PublishError::Send {
                    subject: subject.clone(),
                    source,
                })?;
            if round_trip(&self.client, CONFIRM_TIMEOUT).await {
                return Ok(());
            }
            if attempt >= DELIVERY_ATTEMPTS {
                return Err(PublishError::Unconfirmed {
                    subject,
                    attempts: attempt,
                });
            }
            // The server did not answer a round trip: it may be stopped or cut off while the
            // connection still looks up, and would deliver this copy only when it wakes. Move
            // to another server and send again from there (the same event id, so the late copy
            // is recognisable as one).
            tracing::warn!(%subject, attempt, "publish not confirmed; reconnecting and sending again");
            if self.client.connection_state() == async_nats::connection::State::Connected {
                if let Err(error) = self.client.force_reconnect().await {
                    tracing::debug!(%error, "cannot reconnect");
                }
            }
            self.wait_connected(CONFIRM_TIMEOUT).await;
        }
    }

    async fn wait_connected(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.client.connection_state() != async_nats::connection::State::Connected
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{CheckId, Finding};
    use std::time::{Duration, SystemTime};

    fn event(members: usize) -> FindingEvent {
        let names: Vec<String> = (0..members).map(|i| format!("server-{i:04}")).collect();
        let transition = Transition {
            kind: TransitionKind::Raised,
            finding: Finding {
                check: CheckId::META_006,
                key: "META_006/default".into(),
                cluster: None,
                domain: None,
                server: None,
                summary: format!("lost quorum: {}", names.join(", ")),
                evidence: serde_json::json!({"offline": names, "size": members}),
                remediation: vec![
                    Remediation::with_command("start them", "x ".repeat(500)),
                    Remediation::step("then look"),
                ],
                fingerprint: "f".into(),
            },
            episode: 2,
            epoch: "E1".into(),
            revision: 1,
            raised_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        };
        FindingEvent::from_transition(&transition, "instance")
    }

    #[test]
    fn a_small_event_is_sent_whole() {
        let mut small = event(3);
        let before = small.clone();
        assert!(!shorten(&mut small, EVENT_MAX_BYTES));
        assert_eq!(small, before);
    }

    #[test]
    fn a_large_event_is_shortened_to_fit_keeping_its_identity() {
        for limit in [EVENT_MAX_BYTES - HEADER_ROOM, 4096, 1024 - HEADER_ROOM] {
            let mut large = event(5000);
            let before = large.clone();
            assert!(shorten(&mut large, limit));
            let size = serde_json::to_vec(&large).expect("encodes").len();
            assert!(size <= limit, "{size} > {limit}");
            assert_eq!(
                (&large.id, &large.finding, large.episode, &large.epoch),
                (&before.id, &before.finding, before.episode, &before.epoch)
            );
        }
        let mut lists = event(5000);
        shorten(&mut lists, 4096);
        let offline = lists.evidence["offline"].as_array().expect("a list still");
        assert_eq!(offline.len(), LIST_KEEP + 1);
        assert_eq!(offline[LIST_KEEP], "and 4992 more");
    }
}
