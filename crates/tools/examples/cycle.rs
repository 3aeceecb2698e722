//! Profiling aid (not part of the suite): the pure stages of one large-group round at N servers
//! (`cargo run --release -p nats-insights-tools --example cycle -- 5000 20`), each timed, medians
//! printed: decoding the leader's and 8 followers' replies, split, record, evaluate, reconcile.
//! Run under `perf record` or `valgrind --tool=callgrind` to see where a stage's time goes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use nats_insights::checks::{evaluate_groups, Evaluation, Thresholds};
use nats_insights::findings::{reconcile, ActiveSet};
use nats_insights::history::Histories;
use nats_insights::observe::jsz::decode_reply;
use nats_insights::observe::plan::FOLLOWER_SAMPLE;
use nats_insights::observe::{Snapshot, Via};
use nats_insights_tools::sim::Deployment;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5000);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    let deployment = Deployment::single(n);
    let thresholds = Thresholds::default();
    let start = SystemTime::now();
    let leaders: BTreeSet<usize> = deployment.leaders().collect();
    let followers: Vec<usize> = deployment
        .online()
        .filter(|i| !leaders.contains(i))
        .collect();
    // The follower replies of every round, built before timing (the simulator's work).
    let replies: Vec<Vec<(usize, Vec<u8>)>> = (0..rounds + 2)
        .map(|round| {
            leaders
                .iter()
                .copied()
                .chain(
                    followers
                        .iter()
                        .cycle()
                        .skip(round * FOLLOWER_SAMPLE)
                        .take(FOLLOWER_SAMPLE)
                        .copied(),
                )
                .map(|i| (i, deployment.reply(i)))
                .collect()
        })
        .collect();
    let mut histories = Histories::default();
    let mut active = ActiveSet::default();
    let names = [
        "decode",
        "known",
        "split",
        "record",
        "evaluate",
        "reconcile",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (round, round_replies) in replies.iter().enumerate() {
        let now = start + Duration::from_secs(round as u64);
        let t = Instant::now();
        let known = histories.known_servers();
        let known_ms = ms(t.elapsed());
        let t = Instant::now();
        let whole: BTreeSet<usize> = round_replies.iter().map(|(i, _)| *i).collect();
        let decoded = round_replies.iter().map(|(i, bytes)| {
            let via = if leaders.contains(i) {
                Via::Gather
            } else {
                Via::Direct
            };
            (decode_reply(bytes).expect("simulated reply decodes"), via)
        });
        let mut snapshot = Snapshot::from_replies(now, decoded, &known);
        let decode_ms = ms(t.elapsed());
        for i in deployment.online().filter(|i| !whole.contains(i)) {
            deployment.add_identity(&mut snapshot, i);
        }
        let t = Instant::now();
        let parts = histories.split(&snapshot);
        let split_ms = ms(t.elapsed());
        let t = Instant::now();
        histories.record_snapshots(&parts, &thresholds, now);
        let record_ms = ms(t.elapsed());
        let t = Instant::now();
        let groups = evaluate_groups(&parts, &histories, &thresholds, now);
        let evaluate_ms = ms(t.elapsed());
        let t = Instant::now();
        let evaluations: Vec<Evaluation> = groups
            .iter()
            .flat_map(|g| g.evaluations.iter().cloned())
            .collect();
        active = reconcile(&active, &Default::default(), &evaluations, now).0;
        let reconcile_ms = ms(t.elapsed());
        if round >= 2 {
            for (k, v) in [
                decode_ms,
                known_ms,
                split_ms,
                record_ms,
                evaluate_ms,
                reconcile_ms,
            ]
            .into_iter()
            .enumerate()
            {
                times[k].push(v);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut total = 0.0;
    for (name, v) in names.iter().zip(times.iter_mut()) {
        let m = median(v);
        total += m;
        println!("{name:>10}: {m:8.2} ms");
    }
    println!(
        "{:>10}: {total:8.2} ms ({} findings active)",
        "sum",
        active.len()
    );
}
