//! Observe, the I/O edge: one poll ([`gather`]), the sources beyond JSZ asked of a few servers
//! per poll ([`extras_io`]) and the event subscriptions ([`events`]). What they produce is plain
//! data, defined with its decoders in the core ([`nats_insights_core::observe`], re-exported
//! here).

pub use nats_insights_core::observe::*;

pub mod events;
#[path = "extras.rs"]
pub mod extras_io;
pub mod gather;
