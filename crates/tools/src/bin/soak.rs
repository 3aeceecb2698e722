//! `soak` (`scripts/soak`): the chaos soak. A local 5-node cluster, monitor instances in HA mode
//! (each a `nats-insights run` process with its own wall clock), seeded random faults for
//! `--duration`; fails on any missed, duplicated, false or unresolved finding, on any wrong
//! diagnosis (a finding whose check, reason or remediation does not fit the fault), and on a
//! monitor process that died by itself. With `--churn`: a healthy cluster under JetStream load instead,
//! failing on any finding.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nats_insights_tools::soak::{self, SoakOptions};

/// Default log filter of the soak itself (it prints its own report).
const QUIET_LOG: &str = "error,async_nats=off";

/// Chaos soak: a local 5-node cluster, two monitor processes, seeded random faults; checks every
/// fault was raised and resolved with one event id each, nothing else was raised, and every
/// diagnosis fits its fault.
#[derive(Debug, Parser)]
#[command(name = "soak", version)]
struct Cli {
    /// How long to inject faults.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Seed of the fault schedule and of the clocks (random when absent; printed so a run can
    /// be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Monitor instances sharing one state bucket (2 = HA mode), each its own process.
    #[arg(long, default_value_t = 2)]
    instances: usize,
    /// Each monitor process's wall clock is offset from the real one by up to this much, either
    /// way, chosen by the seed (libfaketime). 0 keeps every clock real.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    max_skew: Duration,
    /// Instead of faults: a healthy 3-node cluster under heavy JetStream churn for --duration;
    /// fails if any finding is raised.
    #[arg(long)]
    churn: bool,
    /// Log filter (tracing-subscriber syntax) of the soak, and when given, of the monitor
    /// processes too (their logs go to files; by default they log as `nats-insights run` does).
    #[arg(long, env = "NATS_INSIGHTS_LOG")]
    log: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    nats_insights_tools::init_logging(cli.log.as_deref().unwrap_or(QUIET_LOG));
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("nats-insights: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let bin = testbed::product_bin().map_err(|e| e.to_string())?;
    if cli.churn {
        println!(
            "JetStream churn on a healthy cluster for {}...",
            humantime::format_duration(cli.duration)
        );
        let report = soak::churn(cli.duration, &bin, cli.log.as_deref()).await?;
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
            println!("  monitor log: {}", report.log.display());
            Err(format!(
                "{} false findings under churn",
                report.findings.len()
            ))
        };
    }
    let seed = cli.seed.unwrap_or_else(|| fastrand::u64(..));
    println!(
        "Chaos soak for {} with seed {seed} (repeat with --seed {seed}), clocks within ±{}...",
        humantime::format_duration(cli.duration),
        humantime::format_duration(cli.max_skew)
    );
    let report = soak::run(SoakOptions {
        duration: cli.duration,
        seed,
        instances: cli.instances,
        max_skew: cli.max_skew,
        bin,
        log: cli.log,
    })
    .await?;
    for instance in &report.instances {
        println!("  {}", instance.line());
    }
    for fault in &report.faults {
        println!("  fault: {fault}");
    }
    for (what, list) in [
        ("missed", &report.missed),
        ("duplicated", &report.duplicated),
        ("repeated", &report.repeated),
        ("late", &report.late),
        ("false", &report.false_findings),
        ("wrong diagnosis", &report.wrong),
        ("unresolved", &report.unresolved),
        ("crashed", &report.crashed),
    ] {
        for item in list {
            println!("  {what}: {item}");
        }
    }
    println!("{}", report.summary());
    if report.ok() {
        Ok(())
    } else {
        for instance in &report.instances {
            println!(
                "  monitor {} log: {}",
                instance.index,
                instance.log.display()
            );
        }
        Err(format!("soak failed (seed {seed}): {}", report.summary()))
    }
}
