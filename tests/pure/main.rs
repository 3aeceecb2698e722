//! The pure tests, one binary: the stages on captured fixtures, the schemas, bounded fuzzing of
//! the decoders, the deployment files, the seeded HA simulation and the Prometheus rules. No
//! server is started here; each module was a test binary of its own, and together they link
//! once (`cargo test --test pure`, or `cargo test --test pure fuzz::` for one module).

// Shared with the live binary (`tests/live/main.rs`), compiled once in each.
#[path = "../support/mod.rs"]
mod support;

mod fixtures;
mod fuzz;
mod groups;
mod ha_sim;
mod layout;
mod packaging;
mod preflight;
mod prometheus_rules;
mod schemas;
mod sources;
