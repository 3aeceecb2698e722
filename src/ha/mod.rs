//! High availability, the I/O edge: the coordinator and its messages are pure
//! ([`nats_insights_core::ha`], re-exported here); [`wire`] sends and answers them on NATS.

pub use nats_insights_core::ha::*;

pub mod wire;
