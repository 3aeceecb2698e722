//! The live tests, one binary: real nats-server clusters on loopback (and Alertmanager,
//! Prometheus, Chromium, the product binary), real faults, the findings observed as an operator
//! sees them. Each module was a test binary of its own; together they compile `support` and link
//! once. `scripts/test` runs them two at a time (`--test-threads`), `versions::` apart: it runs
//! once per older nats-server minor (`cargo test --test live versions::`), the rest on 2.15 with
//! `--skip versions::`.

// Shared with the pure binary (`tests/pure/main.rs`), compiled once in each.
#[path = "../support/mod.rs"]
mod support;

mod alertmanager;
mod capture_fixtures;
mod check;
mod cluster;
mod dashboard;
mod deploy;
mod ha;
mod hazards;
mod leaderless;
mod links;
mod meta_catalog;
mod operator;
mod ops;
mod rolling;
mod secrets;
mod sources;
mod status_page;
mod store;
mod testbed;
mod topologies;
mod versions;
