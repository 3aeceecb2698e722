//! High availability: several instances watching one system publish each transition under one
//! id, and at most a few seconds late when one of them dies. The decision is the sans-IO
//! [`Coordinator`]; [`messages`] are its beats, state and the records peers' events leave;
//! [`Ledger`] is what each instance knows has been published. `docs/ha.md` states the rule,
//! its invariant and its timers.

pub mod coordinator;
pub mod executor;
pub mod ledger;
pub mod messages;
pub mod validate;

pub use coordinator::{Action, Coordinator, Input, Now, PeerState};
pub use executor::Executor;
pub use ledger::{transition_of_record, Ledger};
pub use messages::{record_of_event, BEAT_SUBJECT, HA_STATE_PREFIX};

/// A META_001 finding about `n2` under `key`, for the unit tests of this module.
#[cfg(test)]
pub(crate) fn test_finding(key: &str) -> crate::checks::Finding {
    crate::checks::Finding {
        check: crate::checks::CheckId::META_001,
        key: key.into(),
        cluster: None,
        domain: None,
        server: Some("n2".into()),
        summary: "s".into(),
        evidence: serde_json::json!({}),
        remediation: vec![],
        fingerprint: "n2".into(),
    }
}
