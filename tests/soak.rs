//! The chaos soak, short: 90 s of seeded faults on a 5-node cluster watched by two instances.

use std::time::Duration;

use nats_insights::soak::{run, SoakOptions};

fn seed() -> u64 {
    std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261124)
}

/// 90 s of seeded faults with `instances` monitors on one bucket; asserts the ground truth.
async fn ninety_seconds_of_chaos(instances: usize) {
    let seed = seed();
    let report = run(SoakOptions {
        duration: Duration::from_secs(90),
        seed,
        instances,
    })
    .await
    .expect("soak runs");
    println!("{:#?}\n{}", report.faults, report.summary());
    assert!(
        report.expected > 0,
        "the schedule injected faults with victims"
    );
    assert!(
        report.ok(),
        "seed {seed}: {}\n{report:#?}",
        report.summary()
    );
}

/// Known to fail today: a restart of the monitor while the faults have degraded the in-cluster
/// state bucket loses the transitions published during the outage, and the new process raises or
/// resolves them again (see README, Reliability). Run with `--ignored`, or `scripts/soak`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts during a degraded store still repeat findings; run with --ignored"]
async fn ninety_seconds_of_chaos_without_a_miss_a_duplicate_or_a_false_finding() {
    ninety_seconds_of_chaos(1).await;
}

/// Two instances on one bucket while the faults also take the bucket's replicas away: known to
/// publish a rare duplicate when both instances lose the store at once (see README, Reliability).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "HA under a degraded store still publishes rare duplicates; run with --ignored"]
async fn ninety_seconds_of_chaos_with_two_instances() {
    ninety_seconds_of_chaos(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_jetstream_churn_on_a_healthy_cluster_raises_nothing() {
    let report = nats_insights::soak::churn(Duration::from_secs(40))
        .await
        .expect("churn runs");
    println!("{report:#?}");
    assert!(
        report.streams > 3 && report.messages > 1000,
        "real load: {report:?}"
    );
    assert!(
        report.findings.is_empty(),
        "false findings: {:#?}",
        report.findings
    );
}
