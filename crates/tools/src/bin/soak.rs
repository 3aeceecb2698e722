//! `soak` (`scripts/soak`): the chaos soak. A local 5-node cluster, two monitor instances in HA
//! mode, seeded random faults for `--duration`; fails on any missed, duplicated, false or
//! unresolved finding. With `--churn`: a healthy cluster under JetStream load instead, failing on
//! any finding.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nats_insights_tools::soak;

/// Chaos soak: a local 5-node cluster, two monitor instances, seeded random faults; checks every
/// fault was raised and resolved exactly once and nothing else was raised.
#[derive(Debug, Parser)]
#[command(name = "soak", version)]
struct Cli {
    /// How long to inject faults.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Seed of the fault schedule (random when absent; printed so a run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Monitor instances sharing one state bucket (2 = HA mode).
    #[arg(long, default_value_t = 2)]
    instances: usize,
    /// Instead of faults: a healthy 3-node cluster under heavy JetStream churn for --duration;
    /// fails if any finding is raised.
    #[arg(long)]
    churn: bool,
    /// Log filter (tracing-subscriber syntax). Errors only by default: the soak prints its own
    /// report.
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
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("nats-insights: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Cli) -> Result<(), String> {
    if args.churn {
        println!(
            "JetStream churn on a healthy cluster for {}...",
            humantime::format_duration(args.duration)
        );
        let report = soak::churn(args.duration).await?;
        for line in &report.findings {
            println!("  false finding: {line}");
        }
        println!(
            "streams {}, consumers {}, messages {}, API errors {}, findings {}",
            report.streams,
            report.consumers,
            report.messages,
            report.api_errors,
            report.findings.len()
        );
        return if report.findings.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} false findings under churn",
                report.findings.len()
            ))
        };
    }
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    println!(
        "Chaos soak for {} with seed {seed} (repeat with --seed {seed})...",
        humantime::format_duration(args.duration)
    );
    let report = soak::run(soak::SoakOptions {
        duration: args.duration,
        seed,
        instances: args.instances,
    })
    .await?;
    println!("  monitors at start: {}", report.monitors.join(", "));
    for fault in &report.faults {
        println!("  fault: {fault}");
    }
    for (what, list) in [
        ("missed", &report.missed),
        ("duplicated", &report.duplicated),
        ("false", &report.false_findings),
        ("unresolved", &report.unresolved),
    ] {
        for item in list {
            println!("  {what}: {item}");
        }
    }
    println!("{}", report.summary());
    if report.ok() {
        Ok(())
    } else {
        Err(format!("soak failed (seed {seed}): {}", report.summary()))
    }
}
