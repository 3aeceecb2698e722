//! HA messages: what instances say to each other on NATS (beats on `$INSIGHTS.HA.BEAT`, state on
//! `$INSIGHTS.HA.STATE.<instance>` and `.ANY`) and the record a peer's finding event leaves.
//! Pure data; the product's `ha::wire` sends and answers them.

use serde::{Deserialize, Serialize};

use crate::checks::Finding;
use crate::findings::{ActiveFinding, TransitionKind, ADOPTED_FINGERPRINT};
use crate::record::{Record, ResolvedFinding};
use crate::wire::FindingEvent;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::Transition;
    use std::time::{Duration, SystemTime};

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
