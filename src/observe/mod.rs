//! Observe, the I/O edge: one poll ([`gather`]) and the event subscriptions ([`events`]). What
//! they produce is plain data, defined with its decoders in the core
//! ([`nats_insights_core::observe`], re-exported here).

pub use nats_insights_core::observe::*;

pub mod events;
pub mod gather;
