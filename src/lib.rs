//! nats-insights: watches a NATS JetStream cluster's meta group from the system account and
//! publishes findings on NATS. The pipeline, top to bottom:
//! observe → evaluate (`checks`) → reconcile (`findings`) → publish → serve (`service`),
//! wired by `engine`.

pub mod checks;
pub mod cli;
pub mod client;
pub mod config;
pub mod connect;
pub mod demo;
pub mod engine;
pub mod findings;
pub mod ha;
pub mod history;
pub mod metrics;
pub mod observe;
pub mod publish;
pub mod runbook;
pub mod service;
pub mod soak;
pub mod store;
pub mod testbed;
pub mod time_format;
pub mod watch;

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// This build's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Logs a malformed input at most once per ten seconds per kind, so garbage cannot flood the log.
/// Callers count every occurrence themselves.
pub fn log_malformed(kind: &'static str, error: &dyn std::fmt::Display) {
    static LAST: Mutex<Vec<(&'static str, Instant)>> = Mutex::new(Vec::new());
    let now = Instant::now();
    let Ok(mut last) = LAST.lock() else {
        return;
    };
    match last.iter_mut().find(|(k, _)| *k == kind) {
        Some((_, at)) if now.duration_since(*at) < Duration::from_secs(10) => {
            tracing::debug!(%error, "malformed {kind}");
            return;
        }
        Some((_, at)) => *at = now,
        None => last.push((kind, now)),
    }
    tracing::warn!(%error, "malformed {kind} ignored (further ones within 10 s are logged at debug)");
}
