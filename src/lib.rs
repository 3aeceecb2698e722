//! nats-insights: watches the control plane of NATS JetStream (the meta groups, one per JetStream
//! domain) from the system account and publishes findings on NATS.
//!
//! # Layout
//!
//! One round runs **observe → evaluate → reconcile → coordinate → publish → persist → serve**
//! (docs/architecture.md). What each stage decides is pure and lives in the core crate
//! (`nats-insights-core`, re-exported here under the same names: [`observe`]'s data,
//! [`history`], [`checks`], [`findings`], [`ha`]'s coordinator, [`wire`], [`record`],
//! [`status`], [`api`], [`render`], [`timing`]); this crate is its I/O edges:
//!
//! - [`observe`]: the poll ([`observe::gather`]) and the event subscriptions
//!   ([`observe::events`]); [`connect`]: the connections, the pinned link to every meta member and
//!   the attached servers' health;
//! - [`ha`]: the beats and state requests on NATS ([`ha::wire`]);
//! - [`publish`]: finding events and heartbeats; [`alertmanager`]: the same findings as alerts;
//! - [`store`]: the JetStream KV bucket;
//! - [`service`]: the micro service API; [`http`]: `/metrics`, `/healthz`, the status page;
//! - [`engine`]: a `select!` over the feeds and one timer table, feeding the observer and the
//!   coordinator and executing their actions;
//! - [`cli`], [`config`], [`client`], [`watch`], [`shutdown`]: the command line, `--config`, the
//!   client commands and the signal that ends them.
//!
//! The harness is not part of this crate: real nats-server clusters, route proxies and monitor
//! processes are in `crates/testbed`; the demo, the chaos soak and the benchmark drivers in
//! `crates/tools`.

pub mod alertmanager;
pub mod cli;
pub mod client;
pub mod config;
pub mod connect;
pub mod engine;
pub mod ha;
pub mod http;
pub mod observe;
pub mod publish;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod watch;

// The pure core, under the names the stages had in this crate.
pub use nats_insights_core::{
    alerts, api, checks, findings, history, log_malformed, record, render, runbook, status, text,
    thresholds, time_format, timing, wire,
};

/// This build's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
