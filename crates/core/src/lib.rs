//! nats-insights-core: everything nats-insights decides, without I/O. The product crate
//! (`nats-insights`) gathers, subscribes, persists, publishes and serves; this crate turns what it
//! observed into findings and answers. It depends on neither tokio nor async-nats.
//!
//! # Layout, in the order a round runs
//!
//! - [`observe`]: the observation as plain data ([`observe::Snapshot`], [`observe::MetaEvent`]),
//!   the JSZ and event decoders and the plan of a poll; one part per meta group
//!   ([`observe::GroupId`]: the domain).
//! - [`history`]: what earlier polls and events showed, per group.
//! - [`checks`]: evaluate. One pure function per check of (meta group, history, thresholds,
//!   `now`), each file exporting its spec; [`runbook`] their runbooks; [`thresholds`] the limits.
//! - [`findings`]: reconcile. The lifecycle, `reconcile(previous, ended, evaluated, now)`.
//! - [`ha`]: coordinate. The sans-IO coordinator that decides which instance publishes which
//!   transition when; [`record`] the form findings are kept and exchanged in.
//! - [`wire`]: the events and heartbeats as published; [`alerts`]: the Alertmanager alerts and
//!   their outbox.
//! - [`status`]: what the engine knows now, and the STATUS response; [`api`]: the API's requests
//!   and answers; [`render`]: the STATUS response as text and as the status page.
//! - Leaves every stage may use: [`timing`] (every timer), [`text`], [`time_format`].
//!
//! Imports run one way down this list (`tests/pure/layout.rs` fails on any cycle between modules).

pub mod alerts;
pub mod api;
pub mod check_output;
pub mod checks;
pub mod findings;
pub mod ha;
pub mod history;
pub mod observe;
pub mod record;
pub mod render;
pub mod runbook;
pub mod status;
pub mod text;
pub mod thresholds;
pub mod time_format;
pub mod timing;
pub mod wire;

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// This build's version (the workspace's crates share it).
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
