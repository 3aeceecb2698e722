//! The tools around nats-insights, kept out of the product crate: the demo (`demo`), the chaos
//! soak (`soak`) and the benchmark drivers (`detect`, `scale`), each a binary of this crate that
//! `scripts/demo`, `scripts/soak` and `scripts/bench` build in release mode and run. They use
//! the product as a library and the testbed crate for clusters and monitor processes.

pub mod bench;
pub mod demo;
pub mod sim;
pub mod soak;

/// Sets up logging to stderr for a tool: `filter` in tracing-subscriber syntax.
pub use nats_insights::cli::init_logging;
