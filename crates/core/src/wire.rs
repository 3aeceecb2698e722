//! Wire: the shapes the service puts on NATS and others read: the finding event
//! (`$INSIGHTS.FINDING.<CHECK>.<EVENT>`), the heartbeat, their subjects and ids. Pure data,
//! below the stages that send (`publish`) and serve (`service`) them.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::checks::{CheckId, Remediation, Severity};
use crate::findings::{ActiveSet, Transition, TransitionKind};
use crate::time_format;

/// Name of the micro service (`$SRV.PING.nats-insights`).
pub const SERVICE_NAME: &str = "nats-insights";
/// Group of the API endpoints.
pub const API_GROUP: &str = "$INSIGHTS.API";
/// Largest request body accepted.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Header on every API reply: the micro service id (`id` of `$SRV.PING.nats-insights`) of the
/// instance that answered, so a client can tell the service's answers from anyone else's.
pub const SERVICE_ID_HEADER: &str = "Nats-Service-Id";

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
pub const HEADER_ROOM: usize = 256;
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
