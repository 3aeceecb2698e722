//! Criterion benchmark of the check evaluation alone (`scripts/bench`, part 2): `evaluate_all` on
//! snapshots decoded from simulated replies shaped like captured ones, at N = 10, 100, 1,000, for
//! the two shapes a poll produces (a large group's poll, and every server's whole view).

use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use nats_insights::checks::{evaluate_all, Thresholds};
use nats_insights::history::History;
use nats_insights::observe::jsz::decode_reply;
use nats_insights::observe::plan::KnownServer;
use nats_insights::observe::{Snapshot, Via};

// The simulator the `scale` driver of crates/tools uses too. Compiled in from there rather than
// reached as a dev-dependency: the tools crate depends on this one, and a dependency back would
// make a cycle.
#[allow(dead_code)] // the driver uses more of it than this benchmark
#[path = "../crates/tools/src/sim.rs"]
mod sim;
use sim::Deployment;

/// A snapshot of `group` as a poll would produce it: `full` holds every live server's whole view;
/// otherwise the leader's, 8 followers' and every other live server's identity.
fn snapshot(group: &Deployment, full: bool, taken_at: SystemTime) -> Snapshot {
    let known: Vec<KnownServer> = (0..group.len())
        .map(|i| KnownServer {
            name: group.names[i].clone(),
            id: group.ids[i].clone(),
        })
        .collect();
    let whole: Vec<usize> = if full {
        group.online().collect()
    } else {
        group.online().take(9).collect()
    };
    let replies = whole.iter().map(|&i| {
        let reply = decode_reply(&group.reply(i)).expect("simulated reply decodes");
        (reply, if i == 0 { Via::Gather } else { Via::Direct })
    });
    let mut snapshot = Snapshot::from_replies(taken_at, replies, &known);
    for i in group.online().filter(|i| !whole.contains(i)) {
        group.add_identity(&mut snapshot, i);
    }
    snapshot
}

fn evaluation(c: &mut Criterion) {
    let thresholds = Thresholds::default();
    for (shape, full) in [("evaluate_large", false), ("evaluate_full", true)] {
        let mut bench = c.benchmark_group(shape);
        bench
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for n in [10usize, 100, 1000] {
            let group = Deployment::single(n);
            let start = SystemTime::now();
            let mut history = History::default();
            // Two polls a second apart: the history knows every server, as after a few polls.
            history.record_snapshot(&snapshot(&group, full, start), &thresholds, start);
            let now = start + Duration::from_secs(1);
            let snap = snapshot(&group, full, now);
            history.record_snapshot(&snap, &thresholds, now);
            bench.bench_with_input(BenchmarkId::from_parameter(n), &snap, |b, snap| {
                b.iter(|| evaluate_all(snap, &history, &thresholds, now))
            });
        }
        bench.finish();
    }
}

criterion_group!(benches, evaluation);
criterion_main!(benches);
