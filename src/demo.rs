//! Entry: `nats-insights demo`, a guided tour on a local cluster.

use clap::Args;

/// Flags of `demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {}

/// Runs the demo.
pub async fn run(_args: DemoArgs) -> Result<(), String> {
    Err("demo not built yet".to_string())
}
