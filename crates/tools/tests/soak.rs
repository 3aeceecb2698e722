//! The chaos soak, short: 90 s of seeded faults on a 5-node cluster watched by two instances.

use std::time::Duration;

use nats_insights_tools::soak::{run, SoakOptions};

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
    // Every fault raised, nothing published twice, nothing left open, nothing raised without a
    // fault: what `scripts/soak` fails on.
    assert!(
        report.ok(),
        "seed {seed}: {}\n{report:#?}",
        report.summary()
    );
}

/// One instance (a restart leaves no monitor for a second; the restarted one has no peer to
/// learn from and relies on the bucket). Passes (seeds 1 and 2 here); not in the suite only to
/// keep the suite short: the two-instance run below exercises the same faults and restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "kept out of the suite for time (the two-instance run covers the same faults); run with --ignored"]
async fn ninety_seconds_of_chaos_without_a_miss_a_duplicate_or_a_false_finding() {
    ninety_seconds_of_chaos(1).await;
}

/// Two instances on one bucket while the faults also take the bucket's replicas away, and
/// restarts of either instance: every fault raised and resolved exactly once between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ninety_seconds_of_chaos_with_two_instances() {
    ninety_seconds_of_chaos(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_jetstream_churn_on_a_healthy_cluster_raises_nothing() {
    let report = nats_insights_tools::soak::churn(Duration::from_secs(40))
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
