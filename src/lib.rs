//! nats-insights: watches the control plane of NATS JetStream (the meta groups, one per JetStream
//! domain) from the system account and publishes findings on NATS. The pipeline, top to bottom:
//! observe → evaluate (`checks`) → reconcile (`findings`) → coordinate (`ha`) → persist
//! (`store`) → publish → serve (`service`), wired by `engine`.
//!
//! # Layout
//!
//! - [`observe`]: the JSZ gather, pinned per-server views and the meta events, as plain data
//!   ([`observe::Snapshot`], [`observe::MetaEvent`]); a poll is split into one part per meta
//!   group ([`observe::GroupId`]: the domain).
//! - [`history`]: what earlier polls and events showed, per group ([`history::Histories`]).
//! - [`checks`]: one pure function per check of (meta group, history, thresholds, `now`), each
//!   file exporting its [`checks::CheckSpec`]; [`checks::members`] judges who is online for all.
//! - [`findings`]: the lifecycle, a pure `reconcile(previous, ended, evaluated, now)` that
//!   numbers episodes.
//! - [`ha`]: the sans-IO coordinator that decides which instance publishes which transition
//!   when, so several instances publish each once under one id; [`timing`]: every timer.
//! - [`store`]: the JetStream KV bucket (findings and history), restart memory merged by mark.
//! - [`publish`]: finding events and heartbeats; [`watch`] follows them.
//! - [`service`]: the micro service API; [`runbook`]: the runbooks it and `explain` serve;
//!   [`metrics`]: Prometheus metrics, `/healthz` and the status page.
//! - [`engine`]: runs the stages in a loop and executes the coordinator's actions; [`connect`]:
//!   connections and their failures, the attached servers' health (`connect::attached`);
//!   [`cli`], [`config`], [`client`]: the command line, `--config` and the client commands;
//!   [`text`]: network text escaped for terminals and names quoted for a shell.
//!
//! The harness is not part of this crate: real nats-server clusters, route proxies and monitor
//! processes are in `crates/testbed`; the demo, the chaos soak and the benchmark drivers in
//! `crates/tools` (see docs/architecture.md).
//!
//! docs/architecture.md describes the stages and where each lives.

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
