//! High availability: several instances watching one system publish each transition under one
//! id, and at most a few seconds late when one of them dies. The decision is the sans-IO
//! [`Coordinator`]; [`wire`] carries its beats, state requests and the peers' events;
//! [`Ledger`] is what each instance knows has been published. `docs/ha.md` states the rule,
//! its invariant and its timers.

pub mod coordinator;
pub mod ledger;
pub mod wire;

pub use coordinator::{Action, Coordinator, Input, Now, PeerState};
pub use ledger::{transition_of_record, Ledger};
pub use wire::{record_of_event, BEAT_SUBJECT, HA_STATE_PREFIX};
