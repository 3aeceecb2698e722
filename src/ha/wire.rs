//! HA on the wire: the beats each instance sends (`$INSIGHTS.HA.BEAT`), the state it answers
//! with (`$INSIGHTS.HA.STATE.<instance>` and `.ANY`), and the record a peer's finding event
//! leaves. I/O only; what to make of it is the [`super::Coordinator`]'s.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::checks::Finding;
use crate::findings::{ActiveFinding, TransitionKind, ADOPTED_FINGERPRINT};
use crate::publish::FindingEvent;
use crate::store::{Record, ResolvedFinding};

use super::coordinator::PeerState;

/// Prefix of the subjects on which each instance answers with its state.
pub const HA_STATE_PREFIX: &str = "$INSIGHTS.HA.STATE";
/// The subject every instance announces itself on.
pub const BEAT_SUBJECT: &str = "$INSIGHTS.HA.BEAT";
/// The token that asks every instance at once (instance ids are 22-character nuids).
pub const ANY_INSTANCE: &str = "ANY";

/// The subject on which instance `id` answers with its state.
pub fn state_subject(id: &str) -> String {
    format!("{HA_STATE_PREFIX}.{id}")
}

/// A beat: who runs, and for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Beat {
    /// Instance id.
    pub instance: String,
    /// How long it has run (ms).
    pub uptime_ms: u64,
    /// Its deployment (`--deployment`): instances of another one are not peers (empty from
    /// versions before deployments).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deployment: String,
}

/// Whether something an instance of `theirs` sent concerns deployment `mine` (empty: a version
/// before deployments, taken as the same).
pub fn same_deployment(mine: &str, theirs: &str) -> bool {
    theirs.is_empty() || theirs == mine
}

/// Sends a beat (a failure is logged: the next one follows).
pub async fn send_beat(client: &Client, me: &str, deployment: &str, uptime: Duration) {
    let beat = Beat {
        instance: me.to_string(),
        uptime_ms: uptime.as_millis() as u64,
        deployment: deployment.to_string(),
    };
    let Ok(body) = serde_json::to_vec(&beat) else {
        return;
    };
    if let Err(error) = client.publish(BEAT_SUBJECT, body.into()).await {
        tracing::debug!(%error, "cannot send a beat");
    }
}

/// The record a finding event leaves behind (its fingerprint is not in the event: the next
/// evaluation supplies it). `None` if its times cannot be read.
pub fn record_of_event(event: &FindingEvent) -> Option<Record> {
    let raised_at = humantime::parse_rfc3339_weak(&event.raised_at).ok()?;
    let at = humantime::parse_rfc3339_weak(&event.timestamp).ok()?;
    let finding = Finding {
        check: event.check,
        key: event.finding.clone(),
        cluster: event.cluster.clone(),
        domain: event.domain.clone(),
        server: event.server.clone(),
        summary: event.summary.clone(),
        evidence: event.evidence.clone(),
        remediation: event.remediation.clone(),
        fingerprint: ADOPTED_FINGERPRINT.to_string(),
    };
    Some(match event.event {
        TransitionKind::Resolved => Record::Resolved(ResolvedFinding {
            finding,
            episode: event.episode,
            epoch: event.epoch.clone(),
            revision: event.revision,
            raised_at,
            resolved_at: at,
        }),
        TransitionKind::Raised | TransitionKind::Updated => Record::Active(ActiveFinding {
            finding,
            episode: event.episode,
            epoch: event.epoch.clone(),
            revision: event.revision,
            raised_at,
            changed_at: at,
        }),
    })
}

/// Answers `$INSIGHTS.HA.STATE.<me>` and `$INSIGHTS.HA.STATE.ANY` with the latest state until the
/// channel closes.
pub async fn answer_state(client: Client, me: String, state: watch::Receiver<Arc<PeerState>>) {
    let subscribed = futures::future::try_join(
        client.subscribe(state_subject(&me)),
        client.subscribe(state_subject(ANY_INSTANCE)),
    )
    .await;
    let mut requests = match subscribed {
        Ok((mine, any)) => futures::stream::select(mine, any),
        Err(error) => {
            tracing::warn!(%error, "cannot answer state requests of peer instances");
            return;
        }
    };
    let mut closed = state.clone();
    loop {
        tokio::select! {
            request = requests.next() => {
                let Some(request) = request else { return };
                let Some(reply) = request.reply else { continue };
                let body = serde_json::to_vec(&**state.borrow()).unwrap_or_default();
                if let Err(error) = client.publish(reply, body.into()).await {
                    tracing::debug!(%error, "cannot answer a state request");
                }
            }
            changed = closed.changed() => {
                if changed.is_err() { return; }
            }
        }
    }
}

/// Asks instance `from` (or every instance, `None`) for its state and takes the first answer of
/// one other than `me` in `deployment`, waiting at most `wait`: no need to know which peers run
/// (one may have started moments ago), and a dead one costs nothing.
pub async fn request_state(
    client: &Client,
    me: &str,
    deployment: &str,
    from: Option<&str>,
    wait: Duration,
) -> Option<PeerState> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.ok()?;
    client
        .publish_with_reply(
            state_subject(from.unwrap_or(ANY_INSTANCE)),
            inbox,
            "".into(),
        )
        .await
        .ok()?;
    let first = async {
        while let Some(reply) = replies.next().await {
            match serde_json::from_slice::<PeerState>(&reply.payload) {
                Ok(state)
                    if state.instance != me && same_deployment(deployment, &state.deployment) =>
                {
                    return Some(state)
                }
                _ => continue,
            }
        }
        None
    };
    tokio::time::timeout(wait, first).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::Transition;
    use std::time::SystemTime;

    #[test]
    fn an_event_leaves_the_record_of_its_transition_with_the_same_mark_and_id() {
        let transition = Transition {
            kind: TransitionKind::Resolved,
            finding: crate::ha::test_finding("META_001/default/n2"),
            episode: 3,
            epoch: String::new(),
            revision: 2,
            raised_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_123),
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_009_456),
        };
        let event = FindingEvent::from_transition(&transition, "publisher");
        let record = record_of_event(&event).expect("readable");
        assert_eq!(record.mark(), Record::after(&transition).mark());
        let again = super::super::ledger::transition_of_record(&record);
        assert_eq!(FindingEvent::from_transition(&again, "peer").id, event.id);
        let Record::Resolved(r) = record else {
            panic!("resolved")
        };
        assert_eq!(r.finding.fingerprint, ADOPTED_FINGERPRINT);
    }
}
