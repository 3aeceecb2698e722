//! `demo` (`scripts/demo`): a local 3-node cluster, nats-insights watching it, real faults one
//! after another, every finding event printed with the seconds since its fault.

use std::process::ExitCode;

use clap::Parser;
use nats_insights_tools::demo::{self, DemoArgs};

/// Starts a local 3-node cluster, runs the monitor on it, injects faults and prints each finding.
#[derive(Debug, Parser)]
#[command(name = "demo", version)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,
    /// Log filter of the demo (tracing-subscriber syntax). Errors only by default: the demo
    /// prints every finding event itself, and logs would only interleave.
    #[arg(
        long,
        env = "NATS_INSIGHTS_LOG",
        default_value = "error,async_nats=off"
    )]
    log: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    nats_insights_tools::init_logging(&cli.log);
    match demo::run(cli.demo).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("nats-insights: {message}");
            ExitCode::FAILURE
        }
    }
}
