//! A deterministic, seeded simulation of three instances' HA coordinators (issue 17, item 4).
//!
//! Each schedule, drawn from one seed, runs the real [`reconcile`] and the real [`Coordinator`]
//! of three instances through 25-50 s of faults and the quiet after them: a few META_001 keys go
//! faulty and clear (the ground truth), every instance polls once a second at its own phase and
//! sees the truth with its own lag, on its own skewed wall clock, and the coordinators' actions
//! are executed by the engine's own executor (`nats_insights::ha::Executor`), over a simulated
//! network and store with injected faults. What a consumer of the finding events sees is then checked against the
//! truth. `cargo test` runs 10,000 schedules; the ignored `many_more_...` test runs 200,000 others
//! (`HA_SIM_SCHEDULES` sets either count, `HA_SIM_THREADS` the threads). A failing seed prints
//! its schedule and a trace; `HA_SIM_SEED=<seed> cargo test --test pure ha_sim:: -- --nocapture`
//! replays it alone (`HA_SIM_TRACE=all` adds the beats to the trace).
//!
//! # The model
//!
//! - Global time in ms; discrete events in a priority queue (ties in insertion order).
//! - Instance `i` polls at `phase_i + n s` and sees key `k` faulty at `t` when the truth was
//!   faulty at `t - lag_i` (`lag_i` up to 1.5 s); faults and gaps last at least 4 s, blips less
//!   than a poll (seen or not). Its wall clock (the `now` reconcile dates transitions with) is
//!   off by up to ±10 s; its coordinator's `now` is the time since its (re)start.
//! - Publish: the event goes to the consumer and, as `record_of_event` of the event (so the
//!   adopted-fingerprint path runs), to every peer it reaches after 1-50 ms (up to 2 s in a slow
//!   spell). While the instance's server is stopped the publish fails (`PublishFailed` at once,
//!   as the engine reports an unconfirmed publish), and the stopped server may deliver that copy
//!   when it resumes. Beats go to every peer reached. `RequestState` reaches the peer asked (or
//!   all), each answers with `peer_state` when the request arrives, and the first answer within
//!   `sync_wait` is taken. `Persist` writes the store (a map merged by mark) when it is up, else
//!   a backlog written by the next retry (every 3 s) once it is back; an instance whose store was
//!   down at start writes nothing until a retry opens it, then writes what is active and takes
//!   `Input::Stored` (as `Persistence::maintain` does); a (re)start loads the store if it is up,
//!   with the store's epoch (created by the first start that finds it up), else mints an epoch.
//! - Faults: pairs of instances cut from each other (both ways), slow spells, lossy spells,
//!   store outages, an instance's server stopped (publishing fails, it is cut from its peers,
//!   then `Reconnected` once it moved), crashes (all state lost) and restarts a few seconds
//!   later, and the skewed clocks. `Input::Tick` comes at each `next_deadline`; a deadline that
//!   is already due after an input is a failure (the engine would wake at once, forever).
//!
//! # The invariants, checked on what the consumer received
//!
//! Every copy is traced to the observation it came from (its raise's `raised_at`, or its
//! resolution's `at`, is its publisher's wall clock at the poll that wanted it), so each copy
//! names the true fault it is about; a resolution is about the fault its episode was raised for.
//!
//! 1. Delivered: a fault is RAISED if some instance is healthy (up, its server up, the same run
//!    since 3 s before the fault, so its start-up wait and the hold on what it loaded are over)
//!    from then until it has seen the fault for its longest possible wait (a grace per peer that
//!    may be ahead of it, and a contrary hold after any news of the key) and still sees it.
//!    Every raised fault is RESOLVED, in the same episode.
//! 2. One id: all copies of one fault's raise carry one event id and all copies of its
//!    resolution one id; no raise id names two faults. Repeated copies of an id are counted and
//!    reported, not failures.
//! 3. No raise again without a new fault: a new RAISED id after a RESOLVED one is about a later
//!    fault than the resolved one, and a key is never raised twice without a resolution between.
//! 4. Nothing unobserved: each id's fault was seen faulty (raise) or seen cleared after it
//!    (resolution) by some instance at or before its first copy, every copy of a resolution was
//!    published by an instance that saw the key clear after that fault, the consumer never gets
//!    a resolution of a raise it did not see, and no UPDATED is published (no finding changes
//!    materially here, so one would be made up, e.g. by a peer's adopted fingerprint).
//! 5. Convergence: once the faults end, the run goes on until everyone is up with its store open
//!    and its backlog written, nothing is held or active and every ledger names the consumer's
//!    last episode of each key, then 4 s more (at most 20 s in all): every instance's ledger then
//!    has nothing active and names, for each key, the last episode the consumer saw.
//!
//! Whether the store ends as new as the consumer is counted, not judged: a state learnt from a
//! peer is not written, and an instance that opens the store late writes only what is active.
//!
//! # What the design cannot guarantee, and how the generator avoids it
//!
//! - **A transition lost on its way to a peer that would not publish it itself.** While
//!   messages between two running instances are lost (a cut, a lossy spell, a stopped server),
//!   one may publish a transition the other neither receives nor publishes: a blip only some
//!   instances see, or a fault or a clearance shorter than the other's wait (its position's
//!   graces, after a poll, its lag and perhaps a contrary hold). Their ledgers part: the one
//!   behind numbers the next episode of that key as the one already used, and if it publishes
//!   first its raise carries an id consumers drop as a repeat. Only a state exchange (after a
//!   silence of `peer_live`, a reconnect or a restart) or a newer event of the key heals that; a
//!   short cut or scattered losses bring neither. So from 12 s before each disturbance to 1 s
//!   after it, every fault and every clearance lasts at least 12 s (`SELF_PUBLISHED`): the
//!   generator drops the faults that would be or leave a shorter one.
//! - **A start with nothing to learn from.** An instance that (re)starts knows what the store
//!   holds and what the first synced peer's answer says. If no synced peer answers within
//!   `sync_wait` (none runs or is reachable, or the answers are lost or slow) and the store is
//!   down or behind (a record is written once the next input shows its publish did not fail,
//!   so a crash right after a publish loses it; a degraded store's backlog waits for the retry;
//!   an instance that started without the store writes only what is active when it opens it; a
//!   crash loses the backlog), it numbers episodes from less than was published. The
//!   generator (re)starts an instance only while the store is up or a peer surely answers
//!   (running for 3 s, reachable, no loss around); what is left (the store up but behind, and
//!   no synced answer in time) is found at run time: an instance that ends its start-up wait
//!   knowing less than the consumer had seen when it started, without a synced peer's answer,
//!   makes the schedule not judged. Those are counted; more than 1% of a run fails it.
//!
//! Not simulated: material changes within a fault (UPDATED transitions), more than one meta
//! group, `Input::Link` and undecided keys.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use nats_insights::checks::{CheckId, Evaluation, Finding, Outcome};
use nats_insights::findings::{reconcile, Transition, TransitionKind};
use nats_insights::ha::{record_of_event, Action, Coordinator, Executor, Input, Ledger, PeerState};
use nats_insights::observe::GroupId;
use nats_insights::publish::FindingEvent;
use nats_insights::record::{Mark, Record};
use nats_insights::timing::{HaTiming, Timing};

/// Instances.
const N: usize = 3;
const IDS: [&str; N] = ["alpha", "bravo", "charlie"];
const POLL: u64 = 1_000;
const POLL_TIMER: usize = 0;
const RETRY_TIMER: usize = 1;
const TICK_TIMER: usize = 2;
const STORE_RETRY: u64 = 3_000;
/// Wall clocks start here (ms since the epoch), each off by its instance's offset.
const BASE_MS: i64 = 1_800_000_000_000;
/// A fault or a clearance this long is published by every instance that sees it and does not
/// hear it published: the last in line waits two graces, after a poll, its lag and perhaps a
/// contrary hold.
const SELF_PUBLISHED: u64 = 12_000;
/// An instance that must raise a fault has run this long before it: its sync wait and the
/// contrary hold on what it loaded at start are over.
const STARTED_BEFORE: u64 = 3_000;
/// Quiet time after the last fault, at most, before the end state is judged.
const QUIET: u64 = 20_000;
/// How long a run goes on once everything has settled.
const SETTLED: u64 = 4_000;

// ---------------------------------------------------------------------------------------------
// The schedule

/// Everything a seed decides before the run.
#[derive(Debug, Clone)]
struct Plan {
    seed: u64,
    /// Truth and faults end by then.
    end_faults: u64,
    end: u64,
    /// Per key: the intervals it is faulty, sorted, at least 4 s apart.
    truth: Vec<Vec<(u64, u64)>>,
    lag: [u64; N],
    phase: [u64; N],
    offset: [i64; N],
    start: [u64; N],
    /// Instance, down at, up again at.
    crashes: Vec<(usize, u64, u64)>,
    /// Instance whose server is stopped, from, to.
    stopped: Vec<(usize, u64, u64)>,
    /// Pair cut from each other, from, to.
    cuts: Vec<(usize, usize, u64, u64)>,
    /// From, to, longest delay.
    slow: Vec<(u64, u64, u64)>,
    /// From, to, loss per mille.
    lossy: Vec<(u64, u64, u32)>,
    store_down: Vec<(u64, u64)>,
}

/// The beat period (ms), as `Timing::default().ha.beat`.
const BEAT_MS: u64 = 1_000;

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

impl Plan {
    fn new(seed: u64) -> Plan {
        let mut rng = fastrand::Rng::with_seed(seed);
        let end_faults = rng.u64(25_000..=50_000);
        let keys = rng.usize(1..=3);
        let mut truth = Vec::new();
        for _ in 0..keys {
            let mut intervals = Vec::new();
            let mut t = rng.u64(1_000..12_000);
            loop {
                let blip = rng.u32(0..4) == 0;
                let len = if blip {
                    rng.u64(100..900)
                } else {
                    rng.u64(4_000..20_000)
                };
                if t + len + 4_000 > end_faults {
                    break;
                }
                intervals.push((t, t + len));
                t += len + rng.u64(4_000..15_000);
            }
            truth.push(intervals);
        }
        let mut plan = Plan {
            seed,
            end_faults,
            end: end_faults + QUIET,
            truth,
            lag: [0; N],
            phase: [0; N],
            offset: [0; N],
            start: [0; N],
            crashes: Vec::new(),
            stopped: Vec::new(),
            cuts: Vec::new(),
            slow: Vec::new(),
            lossy: Vec::new(),
            store_down: Vec::new(),
        };
        for i in 0..N {
            plan.lag[i] = rng.u64(0..=1_500);
            plan.phase[i] = rng.u64(0..POLL);
            plan.offset[i] = rng.i64(-10_000..=10_000);
            plan.start[i] = if rng.u32(0..5) == 0 {
                rng.u64(0..30_000)
            } else {
                rng.u64(0..3_000)
            };
        }
        let faults = rng.usize(0..=7);
        for _ in 0..faults {
            let from = rng.u64(2_000..end_faults - 3_000);
            let span = |rng: &mut fastrand::Rng, lo: u64, hi: u64| {
                (from, (from + rng.u64(lo..=hi)).min(end_faults))
            };
            match rng.u32(0..6) {
                0 => {
                    let (a, b) = (rng.usize(0..N), rng.usize(0..N - 1));
                    let b = if b >= a { b + 1 } else { b };
                    let (f, t) = span(&mut rng, 1_000, 10_000);
                    plan.cuts.push((a.min(b), a.max(b), f, t));
                }
                1 => {
                    let (f, t) = span(&mut rng, 1_000, 8_000);
                    plan.slow.push((f, t, rng.u64(100..=2_000)));
                }
                2 => {
                    let (f, t) = span(&mut rng, 1_000, 8_000);
                    plan.lossy.push((f, t, rng.u32(100..=600)));
                }
                3 => {
                    let (f, t) = span(&mut rng, 2_000, 20_000);
                    plan.store_down.push((f, t));
                }
                4 => {
                    let i = rng.usize(0..N);
                    let (f, t) = span(&mut rng, 1_000, 8_000);
                    if !plan
                        .stopped
                        .iter()
                        .any(|&(j, a, b)| j == i && overlaps((a, b), (f, t)))
                    {
                        plan.stopped.push((i, f, t));
                    }
                }
                _ => {
                    let i = rng.usize(0..N);
                    let (f, t) = span(&mut rng, 2_000, 8_000);
                    let t = t.max(f + 1_000);
                    if f > plan.start[i]
                        && !plan
                            .crashes
                            .iter()
                            .any(|&(j, a, b)| j == i && overlaps((a, b + 3_000), (f, t + 3_000)))
                    {
                        plan.crashes.push((i, f, t));
                    }
                }
            }
        }
        plan.crashes.sort_by_key(|&(_, down, _)| down);
        plan.avoid_the_unguaranteed();
        plan
    }

    /// Drops what the design cannot guarantee (the module doc says what and why).
    fn avoid_the_unguaranteed(&mut self) {
        // A start with nothing to remember from: the store down, and no peer sure to answer.
        let first_fault = self
            .truth
            .iter()
            .filter_map(|f| f.first().map(|&(s, _)| s))
            .min()
            .unwrap_or(u64::MAX);
        // (Dropping a crash or starting earlier only makes the others remember more.)
        loop {
            if let Some(i) =
                (0..N).find(|&i| self.start[i] >= first_fault && !self.remembers(i, self.start[i]))
            {
                self.start[i] = 0;
            } else if let Some(c) = (0..self.crashes.len())
                .find(|&c| !self.remembers(self.crashes[c].0, self.crashes[c].2))
            {
                self.crashes.remove(c);
            } else {
                break;
            }
        }
        // A transition whose event may be lost on its way to a peer that would not publish it
        // itself: around the time messages are lost, every fault and every clearance lasts
        // long enough for the last instance in line to publish it.
        let mut disturbed: Vec<(u64, u64)> = Vec::new();
        disturbed.extend(self.cuts.iter().map(|&(_, _, a, b)| (a, b)));
        disturbed.extend(self.lossy.iter().map(|&(a, b, _)| (a, b)));
        disturbed.extend(self.stopped.iter().map(|&(_, a, b)| (a, b)));
        let near = |t: u64| {
            disturbed
                .iter()
                .any(|&(a, b)| a.saturating_sub(SELF_PUBLISHED) <= t && t <= b + 1_000)
        };
        for intervals in &mut self.truth {
            let mut f = 0;
            while f < intervals.len() {
                let (s, e) = intervals[f];
                // The raise (the fault is long enough), then the resolution (the clearance is).
                let gap = intervals.get(f + 1).map_or(u64::MAX, |&(next, _)| next - e);
                if near(s) && e - s < SELF_PUBLISHED {
                    intervals.remove(f);
                } else if near(e) && gap < SELF_PUBLISHED {
                    intervals.remove(f + 1);
                } else {
                    f += 1;
                }
            }
        }
    }

    /// Whether instance `i` starting at `t` learns what was published: the store is up, or a
    /// peer that runs (and has run for a while) answers its state request for sure.
    fn remembers(&self, i: usize, t: u64) -> bool {
        let wait = Timing::default().ha.sync_wait.as_millis() as u64 + 100;
        let clear = |a: u64, b: u64| {
            !self.lossy.iter().any(|&(f, u, _)| overlaps((f, u), (a, b)))
                && !self
                    .stopped
                    .iter()
                    .any(|&(j, f, u)| j == i && overlaps((f, u), (a, b)))
        };
        self.store_up(t)
            || (clear(t, t + wait)
                && (0..N).filter(|&j| j != i).any(|j| {
                    self.healthy(j, t.saturating_sub(3_000), t + wait)
                        && !self.cuts.iter().any(|&(x, y, f, u)| {
                            (x, y) == (i.min(j), i.max(j)) && overlaps((f, u), (t, t + wait))
                        })
                }))
    }

    fn store_up(&self, t: u64) -> bool {
        !self.store_down.iter().any(|&(a, b)| a <= t && t < b)
    }

    fn server_up(&self, i: usize, t: u64) -> bool {
        !self
            .stopped
            .iter()
            .any(|&(j, a, b)| j == i && a <= t && t < b)
    }

    fn cut(&self, i: usize, j: usize, t: u64) -> bool {
        let (a, b) = (i.min(j), i.max(j));
        self.cuts
            .iter()
            .any(|&(x, y, f, u)| (x, y) == (a, b) && f <= t && t < u)
    }

    fn max_delay(&self, t: u64) -> u64 {
        self.slow
            .iter()
            .filter(|&&(a, b, _)| a <= t && t < b)
            .map(|&(_, _, d)| d)
            .max()
            .unwrap_or(50)
    }

    fn loss(&self, t: u64) -> u32 {
        self.lossy
            .iter()
            .filter(|&&(a, b, _)| a <= t && t < b)
            .map(|&(_, _, l)| l)
            .max()
            .unwrap_or(0)
    }

    /// The truth of `key` at `t`: `Ok(fault)` inside a fault, `Err(gap)` in the gap after fault
    /// `gap - 1` (gap 0 comes before the first).
    fn truth_at(&self, key: usize, t: u64) -> Result<usize, usize> {
        let intervals = &self.truth[key];
        let gap = intervals.partition_point(|&(a, _)| a <= t);
        match gap.checked_sub(1) {
            Some(f) if t < intervals[f].1 => Ok(f),
            _ => Err(gap),
        }
    }

    /// When instance `i`'s incarnation running at `t` started (None if it is down then).
    fn incarnation(&self, i: usize, t: u64) -> Option<u64> {
        if t < self.start[i] {
            return None;
        }
        let mut started = self.start[i];
        for &(j, down, up) in &self.crashes {
            if j != i {
                continue;
            }
            if down <= t && t < up {
                return None;
            }
            if up <= t {
                started = started.max(up);
            }
        }
        Some(started)
    }

    /// Up, its server up, and the same incarnation throughout `[from, to]`.
    fn healthy(&self, i: usize, from: u64, to: u64) -> bool {
        let Some(started) = self.incarnation(i, from) else {
            return false;
        };
        self.incarnation(i, to) == Some(started)
            && !self
                .crashes
                .iter()
                .any(|&(j, a, b)| j == i && overlaps((a, b), (from, to + 1)))
            && !self
                .stopped
                .iter()
                .any(|&(j, a, b)| j == i && overlaps((a, b), (from, to + 1)))
    }

    /// How many peers of `i` may be ahead of it while it runs in `[from, to]`: peers with an
    /// incarnation older than `i`'s that runs at some time in that span.
    fn ahead(&self, i: usize, from: u64, to: u64) -> u32 {
        let Some(mine) = self.incarnation(i, to) else {
            return N as u32;
        };
        let mut ahead = 0;
        for j in (0..N).filter(|&j| j != i) {
            let mut starts = vec![(self.start[j], u64::MAX)];
            for &(k, down, up) in &self.crashes {
                if k == j {
                    starts.push((up, u64::MAX));
                    for s in starts.iter_mut() {
                        if s.0 < down && down < s.1 {
                            s.1 = down;
                        }
                    }
                }
            }
            // An incarnation is (start, end): older than mine and alive somewhere in the span.
            // Two that started within a beat of each other are ordered by id (start times are
            // estimates), so one that started up to a beat after mine may be ahead too.
            let older = starts
                .iter()
                .any(|&(s, e)| s <= mine + BEAT_MS && overlaps((s, e), (from, to + 1)));
            if older {
                ahead += 1;
            }
        }
        ahead
    }

    fn first_poll_at_or_after(&self, i: usize, t: u64) -> u64 {
        let phase = self.phase[i];
        if t <= phase {
            return phase;
        }
        phase + (t - phase).div_ceil(POLL) * POLL
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "seed {} faults until {} end {}",
            self.seed,
            secs(self.end_faults),
            secs(self.end)
        );
        for (i, id) in IDS.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {id}: starts {} lag {} ms phase {} ms clock {:+} ms",
                secs(self.start[i]),
                self.lag[i],
                self.phase[i],
                self.offset[i]
            );
        }
        for (k, intervals) in self.truth.iter().enumerate() {
            let list: Vec<String> = intervals
                .iter()
                .enumerate()
                .map(|(f, &(a, b))| format!("#{f} {}-{}", secs(a), secs(b)))
                .collect();
            let _ = writeln!(s, "  key {k}: {}", list.join(", "));
        }
        for &(i, a, b) in &self.crashes {
            let _ = writeln!(s, "  crash {} {}-{}", IDS[i], secs(a), secs(b));
        }
        for &(i, a, b) in &self.stopped {
            let _ = writeln!(s, "  server of {} stopped {}-{}", IDS[i], secs(a), secs(b));
        }
        for &(i, j, a, b) in &self.cuts {
            let _ = writeln!(s, "  cut {}-{} {}-{}", IDS[i], IDS[j], secs(a), secs(b));
        }
        for &(a, b, d) in &self.slow {
            let _ = writeln!(s, "  slow {}-{} up to {d} ms", secs(a), secs(b));
        }
        for &(a, b, l) in &self.lossy {
            let _ = writeln!(s, "  lossy {}-{} {l} per mille", secs(a), secs(b));
        }
        for &(a, b) in &self.store_down {
            let _ = writeln!(s, "  store down {}-{}", secs(a), secs(b));
        }
        s
    }
}

fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

fn wall(global: u64, offset: i64) -> SystemTime {
    let ms = BASE_MS + global as i64 + offset;
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64)
}

fn wall_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis() as i64
}

fn key_name(k: usize) -> String {
    format!("META_001/default/n{}", k + 1)
}

fn key_index(key: &str) -> usize {
    key.rsplit('n')
        .next()
        .and_then(|n| n.parse::<usize>().ok())
        .map(|n| n - 1)
        .expect("a simulated key")
}

fn finding(k: usize) -> Finding {
    Finding {
        check: CheckId::META_001,
        key: key_name(k),
        cluster: None,
        domain: None,
        server: Some(format!("n{}", k + 1)),
        summary: format!("n{} is offline", k + 1),
        evidence: serde_json::Value::Null,
        remediation: vec![],
        fingerprint: format!("n{}", k + 1),
    }
}

// ---------------------------------------------------------------------------------------------
// The run

enum Ev {
    Start(usize),
    Crash(usize),
    Resume(usize),
    /// A beat of instance `.2` reaches `.0` (incarnation `.1`).
    Beat(usize, u32, usize, Duration),
    /// Any other message (boxed: the queue moves its entries around).
    Deliver(usize, u32, Box<Input>),
    /// A state request reaches `to`; its answer goes to `from` (incarnation `gen`).
    Ask {
        to: usize,
        from: usize,
        gen: u32,
        request: usize,
    },
    Answer(usize, u32, usize, Box<PeerState>),
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
struct Node {
    up: bool,
    /// Incarnation: messages to an earlier one are dropped.
    gen: u32,
    started: u64,
    coord: Option<Coordinator>,
    /// The store was open at start or opened since (else persisting waits for the open).
    store_open: bool,
    /// Writes failed: the backlog waits for the next retry.
    degraded: bool,
    backlog: BTreeMap<String, Record>,
    /// Publications that failed while the server was stopped and that it delivers on resuming.
    late: Vec<Transition>,
    /// After a start that loaded less than the consumer had seen: those marks, until the
    /// start-up wait ends.
    recall: Option<Vec<Option<Mark>>>,
    /// A synced peer's state reached it since it started.
    heard_synced: bool,
}

/// One copy of an event the consumer received.
#[derive(Debug, Clone)]
struct Delivered {
    at: u64,
    by: usize,
    key: usize,
    kind: TransitionKind,
    episode: u64,
    id: String,
    /// The fault it is about: for a raise the fault its publisher saw, for a resolution the
    /// fault that ended before the gap its publisher saw (None: no fault had ended).
    fault: Option<usize>,
    /// A copy a stopped server delivered on resuming.
    late: bool,
}

struct Sim<'p> {
    plan: &'p Plan,
    timing: HaTiming,
    rng: fastrand::Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Queued>,
    nodes: Vec<Node>,
    store: BTreeMap<String, Record>,
    sink: Vec<Delivered>,
    /// `[i][k][fault]`: when instance `i` first saw fault `fault` of key `k` (u64::MAX: never).
    seen_fault: Vec<Vec<Vec<u64>>>,
    /// `[i][k][gap]`: when `i` first saw gap `gap` of key `k`.
    seen_gap: Vec<Vec<Vec<u64>>>,
    /// `[i][k]`: when news from outside (a peer's event or state, the store) changed what `i`
    /// knows of key `k`.
    news: Vec<Vec<Vec<u64>>>,
    /// State requests: answered yet, and until when an answer is taken.
    requests: Vec<(bool, u64)>,
    /// The evaluation of a poll that sees faulty the keys in each bit set of its index.
    evaluations: Vec<Evaluation>,
    keys: Vec<String>,
    trace: Option<Vec<String>>,
    trace_beats: bool,
    failures: Vec<String>,
    steps: u64,
    /// Each instance's timers, kept out of the queue (which they would crowd): at
    /// `3 i + POLL_TIMER` its next poll, `+ RETRY_TIMER` its next store retry, `+ TICK_TIMER`
    /// its coordinator's deadline (u64::MAX: none).
    timers: [u64; 3 * N],
    /// The newest mark the consumer has seen of each key.
    seen_marks: Vec<Option<Mark>>,
    /// Why an instance ended its start-up wait without knowing what had been published.
    amnesia: Option<String>,
    /// The store's epoch key (created by the first start that finds the store up), and how many
    /// epochs were minted: a start without the store mints one, as the engine does.
    store_epoch: Option<String>,
    epochs: u64,
}

impl<'p> Sim<'p> {
    fn new(plan: &'p Plan, trace: bool) -> Sim<'p> {
        let keys = plan.truth.len();
        let per_key = |extra: usize| -> Vec<Vec<Vec<u64>>> {
            (0..N)
                .map(|_| {
                    plan.truth
                        .iter()
                        .map(|f| vec![u64::MAX; f.len() + extra])
                        .collect()
                })
                .collect()
        };
        let mut sim = Sim {
            plan,
            timing: Timing::default().ha,
            rng: fastrand::Rng::with_seed(plan.seed ^ 0x9e37_79b9_7f4a_7c15),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: (0..N).map(|_| Node::default()).collect(),
            store: BTreeMap::new(),
            sink: Vec::new(),
            seen_fault: per_key(0),
            seen_gap: per_key(1),
            news: (0..N).map(|_| vec![Vec::new(); keys]).collect(),
            requests: Vec::new(),
            evaluations: (0..1usize << keys)
                .map(|faulty| Evaluation {
                    check: CheckId::META_001,
                    group: GroupId::default(),
                    outcome: Outcome::Ran {
                        findings: (0..keys)
                            .filter(|k| faulty & (1 << k) != 0)
                            .map(finding)
                            .collect(),
                        undecided: Default::default(),
                    },
                })
                .collect(),
            keys: (0..keys).map(key_name).collect(),
            trace: trace.then(Vec::new),
            trace_beats: std::env::var("HA_SIM_TRACE").is_ok_and(|v| v == "all"),
            failures: Vec::new(),
            steps: 0,
            timers: [u64::MAX; 3 * N],
            seen_marks: vec![None; keys],
            amnesia: None,
            store_epoch: None,
            epochs: 0,
        };
        for i in 0..N {
            sim.push(plan.start[i], Ev::Start(i));
            sim.timers[i * 3 + POLL_TIMER] = plan.phase[i];
            sim.timers[i * 3 + RETRY_TIMER] = sim.rng.u64(0..STORE_RETRY);
        }
        for &(i, down, up) in &plan.crashes {
            sim.push(down, Ev::Crash(i));
            sim.push(up, Ev::Start(i));
        }
        for &(i, _, up) in &plan.stopped {
            sim.push(up, Ev::Resume(i));
        }
        sim
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace.push(format!("{:>8} {}", secs(self.now), line()));
        }
    }

    fn local(&self, i: usize) -> Duration {
        Duration::from_millis(self.now - self.nodes[i].started)
    }

    /// Whether a message from `i` to `j` gets through now (both up, their servers up, not cut).
    fn reaches(&self, i: usize, j: usize) -> bool {
        let t = self.now;
        self.nodes[i].up
            && self.nodes[j].up
            && self.plan.server_up(i, t)
            && self.plan.server_up(j, t)
            && !self.plan.cut(i, j, t)
    }

    /// A network delay, or None if the message is lost.
    fn delay(&mut self) -> Option<u64> {
        let loss = self.plan.loss(self.now);
        if loss > 0 && self.rng.u32(0..1000) < loss {
            return None;
        }
        Some(self.rng.u64(1..=self.plan.max_delay(self.now)))
    }

    fn send(&mut self, from: usize, to: usize, input: Input) {
        if !self.reaches(from, to) {
            return;
        }
        if let Some(d) = self.delay() {
            let gen = self.nodes[to].gen;
            self.push(self.now + d, Ev::Deliver(to, gen, Box::new(input)));
        }
    }

    fn run(&mut self) {
        let mut end = self.plan.end;
        let mut next_check = self.plan.end_faults;
        loop {
            // Timers first at the same time, then the queue in order.
            let (timer_at, timer) = self.next_timer();
            let queued = self.queue.peek().map_or(u64::MAX, |q| q.at);
            let at = timer_at.min(queued);
            if at > end {
                break;
            }
            // Once everything has settled, a few seconds more show nothing follows.
            if at >= next_check && end == self.plan.end {
                next_check = at + POLL;
                if self.settled() {
                    end = at + SETTLED;
                }
            }
            self.now = at;
            self.steps += 1;
            match timer {
                Some((i, timer)) if timer_at <= queued => self.fire(i, timer),
                _ => {
                    let Queued { ev, .. } = self.queue.pop().expect("an event");
                    self.step(ev);
                }
            }
            if self.steps > 200_000 {
                self.failures
                    .push("runaway: more than 200,000 events in one schedule".into());
                break;
            }
        }
        self.now = end;
    }

    /// Everyone up, holding nothing, and agreeing with the consumer that nothing is active.
    fn settled(&self) -> bool {
        let mut ended = None;
        self.nodes.iter().all(|node| {
            let Some(coord) = node.coord.as_ref().filter(|_| node.up) else {
                return false;
            };
            let ledger = coord.ledger();
            node.store_open
                && !node.degraded
                && !coord.is_holding()
                && ledger.active.is_empty()
                && *ended.get_or_insert(&ledger.ended) == &ledger.ended
        }) && self
            .keys
            .iter()
            .zip(&self.seen_marks)
            .all(|(k, seen)| ended.and_then(|e| e.get(k)).map(|&e| Mark::resolved(e)) == *seen)
    }

    /// The earliest timer: its time, and which (instance, timer).
    fn next_timer(&self) -> (u64, Option<(usize, usize)>) {
        let mut next = (u64::MAX, None);
        for (j, &at) in self.timers.iter().enumerate() {
            if at < next.0 {
                next = (at, Some((j / 3, j % 3)));
            }
        }
        next
    }

    fn fire(&mut self, i: usize, timer: usize) {
        let up = self.nodes[i].up;
        match timer {
            POLL_TIMER => {
                self.timers[i * 3 + POLL_TIMER] += POLL;
                if up {
                    self.poll(i);
                }
            }
            RETRY_TIMER => {
                self.timers[i * 3 + RETRY_TIMER] += STORE_RETRY;
                if up {
                    self.retry_store(i);
                }
            }
            _ => {
                self.timers[i * 3 + TICK_TIMER] = u64::MAX;
                self.handle(i, Input::Tick);
            }
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Start(i) => self.start(i),
            Ev::Crash(i) => {
                self.log(|| format!("{} crashes", IDS[i]));
                let node = &mut self.nodes[i];
                node.up = false;
                node.gen += 1;
                node.coord = None;
                node.backlog.clear();
                node.late.clear();
                node.store_open = false;
                node.degraded = false;
                self.timers[i * 3 + TICK_TIMER] = u64::MAX;
            }
            Ev::Resume(i) => {
                if !self.nodes[i].up {
                    return;
                }
                self.log(|| format!("{}'s server resumes; it reconnects", IDS[i]));
                for transition in std::mem::take(&mut self.nodes[i].late) {
                    self.deliver(i, &transition, true);
                }
                self.handle(i, Input::Reconnected);
            }
            Ev::Beat(i, gen, from, uptime) => {
                if self.nodes[i].up && self.nodes[i].gen == gen {
                    if self.trace_beats {
                        self.log(|| format!("{} <- beat of {} up {uptime:?}", IDS[i], IDS[from]));
                    }
                    let instance = IDS[from].to_string();
                    self.handle(i, Input::Beat { instance, uptime });
                }
            }
            Ev::Deliver(i, gen, input) => {
                if self.nodes[i].up && self.nodes[i].gen == gen {
                    self.news_input(i, *input);
                }
            }
            Ev::Ask {
                to,
                from,
                gen,
                request,
            } => {
                if !self.nodes[to].up {
                    return;
                }
                let state = self.nodes[to]
                    .coord
                    .as_ref()
                    .expect("up")
                    .peer_state(self.local(to));
                if self.reaches(to, from) {
                    if let Some(d) = self.delay() {
                        let state = Box::new(state);
                        self.push(self.now + d, Ev::Answer(from, gen, request, state));
                    }
                }
            }
            Ev::Answer(i, gen, request, state) => {
                let (answered, until) = self.requests[request];
                if self.nodes[i].up && self.nodes[i].gen == gen && !answered && self.now <= until {
                    self.requests[request].0 = true;
                    self.nodes[i].heard_synced |= state.synced;
                    self.news_input(i, Input::PeerState(*state));
                }
            }
        }
    }

    /// An input from outside: notes which keys it changed.
    fn news_input(&mut self, i: usize, input: Input) {
        let before: Vec<Option<Mark>> = self.marks(i);
        if self.trace.is_some() {
            let text = describe_input(&input);
            self.log(|| format!("{} <- {text}", IDS[i]));
        }
        self.handle(i, input);
        if self.nodes[i].coord.is_none() {
            return;
        }
        let after = self.marks(i);
        for (k, (b, a)) in before.iter().zip(after.iter()).enumerate() {
            if b != a {
                let now = self.now;
                self.news[i][k].push(now);
            }
        }
    }

    fn marks(&self, i: usize) -> Vec<Option<Mark>> {
        let ledger = self.nodes[i].coord.as_ref().map(|c| c.ledger());
        self.keys
            .iter()
            .map(|k| ledger.and_then(|l| l.mark(k)))
            .collect()
    }

    fn start(&mut self, i: usize) {
        self.epochs += 1;
        let minted = format!("E{}", self.epochs);
        let stored = if self.plan.store_up(self.now) {
            self.nodes[i].store_open = true;
            let mut ledger = load(&self.store);
            ledger.epoch = self.store_epoch.get_or_insert(minted).clone();
            ledger
        } else {
            self.nodes[i].store_open = false;
            Ledger {
                epoch: minted,
                ..Ledger::default()
            }
        };
        if self.trace.is_some() {
            let text = match self.nodes[i].store_open {
                true => format!("loaded {}", describe_ledger(&stored)),
                false => "the store is down".into(),
            };
            self.log(|| format!("{} starts ({text})", IDS[i]));
        }
        let behind = self
            .keys
            .iter()
            .zip(&self.seen_marks)
            .any(|(k, seen)| stored.mark(k) < *seen);
        let node = &mut self.nodes[i];
        node.recall = behind.then(|| self.seen_marks.clone());
        node.heard_synced = false;
        node.up = true;
        node.started = self.now;
        node.degraded = false;
        node.coord = Some(Coordinator::new(
            IDS[i],
            self.timing,
            stored,
            Duration::ZERO,
        ));
        self.execute(i);
    }

    fn poll(&mut self, i: usize) {
        let t = self.now;
        let seen_at = t.saturating_sub(self.plan.lag[i]);
        let mut faulty = 0;
        for k in 0..self.keys.len() {
            match self.plan.truth_at(k, seen_at) {
                Ok(f) => {
                    let first = &mut self.seen_fault[i][k][f];
                    *first = (*first).min(t);
                    faulty |= 1 << k;
                }
                Err(g) => {
                    let first = &mut self.seen_gap[i][k][g];
                    *first = (*first).min(t);
                }
            }
        }
        let ledger = self.nodes[i].coord.as_ref().expect("up").ledger();
        let (next, transitions) = reconcile(
            &ledger.active,
            &ledger.ended,
            std::slice::from_ref(&self.evaluations[faulty]),
            wall(t, self.plan.offset[i]),
        );
        let link = self.plan.server_up(i, t);
        if self.trace.is_some() && !transitions.is_empty() {
            let text = describe_transitions(&transitions);
            self.log(|| format!("{} polls: wants {text} (link {link})", IDS[i]));
        }
        self.handle(
            i,
            Input::Evaluated {
                next,
                transitions,
                link,
            },
        );
    }

    fn retry_store(&mut self, i: usize) {
        if !self.plan.store_up(self.now) {
            return;
        }
        if !self.nodes[i].store_open {
            // Persistence::maintain: open, load, write what is active, then Input::Stored.
            self.nodes[i].store_open = true;
            let mut loaded = load(&self.store);
            self.epochs += 1;
            let minted = format!("E{}", self.epochs);
            loaded.epoch = self.store_epoch.get_or_insert(minted).clone();
            let active: Vec<Record> = self.nodes[i]
                .coord
                .as_ref()
                .expect("up")
                .ledger()
                .active
                .values()
                .map(|a| Record::Active(a.clone()))
                .collect();
            for record in active {
                merge_into(&mut self.store, record);
            }
            self.log(|| format!("{} opens the store", IDS[i]));
            self.news_input(i, Input::Stored(loaded));
        } else if self.nodes[i].degraded {
            for (_, record) in std::mem::take(&mut self.nodes[i].backlog) {
                merge_into(&mut self.store, record);
            }
            self.nodes[i].degraded = false;
        }
    }

    fn persist(&mut self, i: usize, record: Record) {
        let node = &mut self.nodes[i];
        if !node.store_open {
            return;
        }
        if !node.degraded && self.plan.store_up(self.now) {
            merge_into(&mut self.store, record);
        } else {
            node.degraded = true;
            merge_into(&mut node.backlog, record);
        }
    }

    fn handle(&mut self, i: usize, input: Input) {
        let now = self.local(i);
        // What it knows once it has taken the input, before it publishes anything.
        let known = self.nodes[i]
            .recall
            .is_some()
            .then(|| self.known_with(i, &input));
        self.nodes[i].coord.as_mut().expect("up").handle(input, now);
        if let Some(known) = known {
            self.recall(i, known);
        }
        self.execute(i);
    }

    /// The newest mark of each key that instance `i` knows, or `input` brings.
    fn known_with(&self, i: usize, input: &Input) -> Vec<Option<Mark>> {
        let ledger = self.nodes[i].coord.as_ref().expect("up").ledger();
        self.keys
            .iter()
            .map(|k| {
                let brought = match input {
                    Input::PeerState(state) => state.ledger.mark(k),
                    Input::Stored(stored) => stored.mark(k),
                    Input::Event(record) if record.key() == k => Some(record.mark()),
                    _ => None,
                };
                ledger.mark(k).max(brought)
            })
            .collect()
    }

    /// Once an instance that started behind the consumer ends its start-up wait: whether it
    /// learnt what it missed (from what it knew before it could publish again).
    fn recall(&mut self, i: usize, known: Vec<Option<Mark>>) {
        let now = self.local(i);
        let node = &mut self.nodes[i];
        let coord = node.coord.as_ref().expect("up");
        if !coord.peer_state(now).synced {
            return;
        }
        let expected = node.recall.take().expect("recalling");
        let missing: Vec<String> = known
            .iter()
            .zip(&expected)
            .enumerate()
            .filter(|(_, (known, seen))| known < seen)
            .map(|(k, (_, seen))| format!("key {k} at {seen:?}"))
            .collect();
        // With a synced peer's answer it knew what that peer knew (an event in flight may
        // still come): what it publishes is judged. Without one, only the store spoke.
        if missing.is_empty() || self.nodes[i].heard_synced || self.amnesia.is_some() {
            return;
        }
        let text = format!(
            "{} started at {} and ended its wait without {}: no synced peer answered in time and the store knew less",
            IDS[i],
            secs(self.nodes[i].started),
            missing.join(", ")
        );
        self.log(|| format!("AMNESIA: {text}"));
        self.amnesia = Some(text);
    }

    /// Executes the coordinator's actions by the engine's own rules ([`Executor`]); only what
    /// each action does is simulated.
    fn execute(&mut self, i: usize) {
        let now = self.local(i);
        let mut executor = Executor::new();
        while let Some(action) = executor.next(self.nodes[i].coord.as_mut().expect("up"), now) {
            match action {
                Action::Publish(ref transition) => {
                    let sent = self.plan.server_up(i, self.now);
                    if sent {
                        self.deliver(i, transition, false);
                    } else {
                        self.log(|| {
                            format!(
                                "{} cannot publish {}",
                                IDS[i],
                                describe_transitions(std::slice::from_ref(transition))
                            )
                        });
                        if self.rng.bool() {
                            self.nodes[i].late.push(transition.clone());
                        }
                    }
                    let coord = self.nodes[i].coord.as_mut().expect("up");
                    executor.published(coord, action, sent, now);
                }
                Action::Persist(record) => self.persist(i, record),
                Action::RequestState(from) => {
                    let request = self.requests.len();
                    self.requests
                        .push((false, self.now + self.timing.sync_wait.as_millis() as u64));
                    let gen = self.nodes[i].gen;
                    for j in (0..N).filter(|&j| j != i) {
                        if from.as_deref().is_some_and(|id| id != IDS[j]) || !self.reaches(i, j) {
                            continue;
                        }
                        if let Some(d) = self.delay() {
                            self.push(
                                self.now + d,
                                Ev::Ask {
                                    to: j,
                                    from: i,
                                    gen,
                                    request,
                                },
                            );
                        }
                    }
                }
                Action::Beat(uptime) => {
                    for j in (0..N).filter(|&j| j != i) {
                        if self.reaches(i, j) {
                            if let Some(d) = self.delay() {
                                let gen = self.nodes[j].gen;
                                self.push(self.now + d, Ev::Beat(j, gen, i, uptime));
                            }
                        }
                    }
                }
            }
        }
        let coord = self.nodes[i].coord.as_ref().expect("up");
        let due = coord.next_deadline(now);
        if due <= now {
            // Everything due now was just done: the engine would wake at once, again and again.
            if self.failures.is_empty() {
                self.failures.push(format!(
                    "{} at {}: next_deadline answers now, after handling an input now (the engine would spin until something changes)",
                    IDS[i],
                    secs(self.now)
                ));
            }
            return;
        }
        let due = self.nodes[i].started + due.as_nanos().div_ceil(1_000_000) as u64;
        self.timers[i * 3 + TICK_TIMER] = due;
    }

    /// A publication that got through: to the consumer and the peers.
    fn deliver(&mut self, i: usize, transition: &Transition, late: bool) {
        let event = FindingEvent::from_transition(transition, IDS[i]);
        let key = key_index(&transition.finding.key);
        let copy = Delivered {
            at: self.now,
            by: i,
            key,
            kind: transition.kind,
            episode: transition.episode,
            id: event.id.clone(),
            fault: self.fault_of(i, key, transition),
            late,
        };
        self.log(|| {
            format!(
                "{} PUBLISHES {}{} id {} (fault {:?})",
                IDS[i],
                describe_transitions(std::slice::from_ref(transition)),
                if late { " (late copy)" } else { "" },
                &event.id[..8],
                copy.fault
            )
        });
        let mark = match copy.kind {
            TransitionKind::Resolved => Mark::resolved(copy.episode),
            _ => Mark::active(copy.episode, transition.revision),
        };
        self.seen_marks[key] = self.seen_marks[key].max(Some(mark));
        self.sink.push(copy);
        let record = record_of_event(&event).expect("an event's times read back");
        for j in (0..N).filter(|&j| j != i) {
            self.send(i, j, Input::Event(record.clone()));
        }
    }

    /// The fault a transition instance `i` publishes is about, from the poll that wanted it.
    fn fault_of(&self, i: usize, key: usize, transition: &Transition) -> Option<usize> {
        let at = match transition.kind {
            TransitionKind::Raised => transition.raised_at,
            _ => transition.at,
        };
        let poll = (wall_ms(at) - BASE_MS - self.plan.offset[i]) as u64;
        let seen_at = poll.saturating_sub(self.plan.lag[i]);
        match (transition.kind, self.plan.truth_at(key, seen_at)) {
            (TransitionKind::Raised, Ok(f)) => Some(f),
            (TransitionKind::Resolved, Err(g)) => g.checked_sub(1),
            _ => None,
        }
    }
}

fn merge_into(map: &mut BTreeMap<String, Record>, record: Record) {
    let key = record.key().to_string();
    if map.get(&key).is_none_or(|r| r.mark() < record.mark()) {
        map.insert(key, record);
    }
}

fn load(store: &BTreeMap<String, Record>) -> Ledger {
    let mut ledger = Ledger::default();
    for record in store.values() {
        ledger.fold(record.clone());
    }
    ledger
}

fn describe_transitions(transitions: &[Transition]) -> String {
    let parts: Vec<String> = transitions
        .iter()
        .map(|t| {
            format!(
                "{} k{} e{} r{}",
                t.kind.subject_token(),
                key_index(&t.finding.key),
                t.episode,
                t.revision
            )
        })
        .collect();
    parts.join(", ")
}

fn describe_ledger(ledger: &Ledger) -> String {
    let mut parts: Vec<String> = ledger
        .active
        .iter()
        .map(|(k, a)| format!("k{} active e{} r{}", key_index(k), a.episode, a.revision))
        .collect();
    parts.extend(
        ledger
            .ended
            .iter()
            .map(|(k, e)| format!("k{} ended e{e}", key_index(k))),
    );
    format!("[{}]", parts.join(", "))
}

fn describe_record(record: &Record) -> String {
    match record {
        Record::Active(a) => format!(
            "k{} active e{} r{}",
            key_index(&a.finding.key),
            a.episode,
            a.revision
        ),
        Record::Resolved(r) => format!("k{} resolved e{}", key_index(&r.finding.key), r.episode),
    }
}

fn describe_input(input: &Input) -> String {
    match input {
        Input::Event(record) => format!("event {}", describe_record(record)),
        Input::Beat { instance, uptime } => format!("beat {instance} up {uptime:?}"),
        Input::PeerState(state) => format!(
            "state of {} (up {} ms) {}",
            state.instance,
            state.uptime_ms,
            describe_ledger(&state.ledger)
        ),
        Input::Stored(ledger) => format!("stored {}", describe_ledger(ledger)),
        other => format!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The invariants

/// What one schedule came to.
struct Verdict {
    failures: Vec<String>,
    /// Why the schedule was not judged.
    excluded: Option<String>,
    /// The store ended behind what the consumer saw.
    store_behind: bool,
    copies: usize,
    late: usize,
    repeats: usize,
    must: usize,
    trace: Option<Vec<String>>,
}

fn run_schedule(seed: u64, trace: bool) -> Verdict {
    let plan = Plan::new(seed);
    let mut sim = Sim::new(&plan, trace);
    sim.run();
    let mut failures = std::mem::take(&mut sim.failures);
    let (must, repeats, store_behind) = match sim.amnesia {
        // Outside what the design guarantees (see the module doc): not judged.
        Some(_) => (0, 0, false),
        None => check(&plan, &sim, &mut failures),
    };
    Verdict {
        excluded: sim.amnesia.take(),
        store_behind,
        failures,
        copies: sim.sink.len(),
        late: sim.sink.iter().filter(|c| c.late).count(),
        repeats,
        must,
        trace: sim.trace.take(),
    }
}

/// Checks the invariants; returns how many faults had to be delivered and how many copies were
/// repeats of an id.
fn check(plan: &Plan, sim: &Sim, failures: &mut Vec<String>) -> (usize, usize, bool) {
    let timing = sim.timing;
    let grace = timing.grace.as_millis() as u64;
    let hold = timing.contrary_hold.as_millis() as u64;
    let mut must_total = 0;
    let mut repeats = 0;
    let mut store_behind = false;
    for k in 0..plan.truth.len() {
        let faults = &plan.truth[k];
        // Each id: its first copy; every further copy is a repeat.
        let mut ids: BTreeMap<&str, &Delivered> = BTreeMap::new();
        let mut firsts: Vec<&Delivered> = Vec::new();
        // The fault each raised episode is about (from its first copy).
        let mut raised: BTreeMap<u64, Option<usize>> = BTreeMap::new();
        for copy in sim.sink.iter().filter(|c| c.key == k) {
            if copy.kind == TransitionKind::Updated {
                // The simulated findings never change materially (an adopted fingerprint
                // included): an update is made up.
                failures.push(format!(
                    "(4) key {k}: UPDATED e{} by {} at {}, with nothing changed",
                    copy.episode,
                    IDS[copy.by],
                    secs(copy.at)
                ));
            }
            if copy.kind == TransitionKind::Raised {
                raised.entry(copy.episode).or_insert(copy.fault);
            }
            match ids.get(copy.id.as_str()) {
                Some(first) => {
                    repeats += 1;
                    if copy.kind == TransitionKind::Raised && first.fault != copy.fault {
                        failures.push(format!(
                            "(2) key {k}: the raise id {} (e{}) names fault {:?} and, by {} at {}, fault {:?}",
                            &copy.id[..8], copy.episode, first.fault, IDS[copy.by],
                            secs(copy.at), copy.fault
                        ));
                    }
                }
                None => {
                    ids.insert(&copy.id, copy);
                    firsts.push(copy);
                }
            }
            // A resolution is about a clearance after the fault its episode was raised for.
            if copy.kind == TransitionKind::Resolved {
                if let Some(&Some(f)) = raised.get(&copy.episode) {
                    if copy.fault.is_none_or(|cleared| cleared < f) {
                        failures.push(format!(
                            "(4) key {k}: e{} (raised for fault #{f}) resolved by {} at {}, who saw it clear only after fault {:?}",
                            copy.episode, IDS[copy.by], secs(copy.at), copy.fault
                        ));
                    }
                }
            }
        }
        // (4) observed before its first copy.
        for first in &firsts {
            let seen = match first.kind {
                TransitionKind::Raised => first
                    .fault
                    .map(|f| (0..N).map(|i| sim.seen_fault[i][k][f]).min().unwrap()),
                _ => raised.get(&first.episode).copied().flatten().map(|f| {
                    (0..N)
                        .flat_map(|i| sim.seen_gap[i][k][f + 1..].iter().copied())
                        .min()
                        .unwrap()
                }),
            };
            if seen.is_none_or(|seen| seen > first.at) {
                failures.push(format!(
                    "(4) key {k}: {:?} e{} by {} at {} is about fault {:?}, which no instance saw {} by then",
                    first.kind, first.episode, IDS[first.by], secs(first.at), first.fault,
                    if first.kind == TransitionKind::Raised { "faulty" } else { "cleared" }
                ));
            }
        }
        // (3) and (4): the consumer's sequence of new ids.
        let mut active: Option<&Delivered> = None;
        let mut resolved: Option<usize> = None;
        for first in &firsts {
            match first.kind {
                TransitionKind::Raised => {
                    if let Some(before) = active {
                        failures.push(format!(
                            "(3) key {k}: raised again (e{} of fault {:?} by {} at {}) while e{} of fault {:?} is not resolved",
                            first.episode, first.fault, IDS[first.by], secs(first.at),
                            before.episode, before.fault
                        ));
                    }
                    if let Some(r) = resolved {
                        if first.fault.is_none_or(|f| f <= r) {
                            failures.push(format!(
                                "(3) key {k}: e{} raised by {} at {} is about fault {:?}, not one after the resolved fault #{r}",
                                first.episode, IDS[first.by], secs(first.at), first.fault
                            ));
                        }
                    }
                    active = Some(first);
                }
                TransitionKind::Resolved => {
                    match active {
                        Some(a) if a.episode == first.episode => resolved = a.fault,
                        _ => failures.push(format!(
                            "(4) key {k}: e{} resolved by {} at {}, a raise the consumer never saw (raised: {:?})",
                            first.episode, IDS[first.by], secs(first.at),
                            active.map(|a| a.episode)
                        )),
                    }
                    active = None;
                }
                TransitionKind::Updated => {}
            }
        }
        // (2) one id per fault's raise and resolution; (1) delivered.
        for (f, &(s, e)) in faults.iter().enumerate() {
            let raises: Vec<&Delivered> = firsts
                .iter()
                .copied()
                .filter(|c| c.kind == TransitionKind::Raised && c.fault == Some(f))
                .collect();
            let resolutions: Vec<&Delivered> = firsts
                .iter()
                .copied()
                .filter(|c| {
                    c.kind == TransitionKind::Resolved && raised.get(&c.episode) == Some(&Some(f))
                })
                .collect();
            for (what, copies) in [("raise", &raises), ("resolution", &resolutions)] {
                if copies.len() > 1 {
                    let list: Vec<String> = copies
                        .iter()
                        .map(|c| {
                            format!(
                                "e{} {} by {} at {}",
                                c.episode,
                                &c.id[..8],
                                IDS[c.by],
                                secs(c.at)
                            )
                        })
                        .collect();
                    failures.push(format!(
                        "(2) key {k}: the {what} of fault #{f} has {} ids: {}",
                        copies.len(),
                        list.join("; ")
                    ));
                }
            }
            // Must it have been raised? Some instance healthy for as long as it needs.
            let must = (0..N).find(|&i| {
                let lag = plan.lag[i];
                let t0 = plan.first_poll_at_or_after(i, s + lag);
                let t_off = plan.first_poll_at_or_after(i, e + lag);
                let p = plan.ahead(i, s.saturating_sub(8_000), e + 5_000) as u64;
                let mut due = t0 + p * grace;
                for &tn in &sim.news[i][k] {
                    if tn + hold < t0 || tn > due {
                        continue;
                    }
                    due = due
                        .max(tn + hold)
                        .max(plan.first_poll_at_or_after(i, tn + 1) + p * grace);
                }
                due + 200 < t_off && plan.healthy(i, s.saturating_sub(STARTED_BEFORE), due + 200)
            });
            if must.is_some() {
                must_total += 1;
            }
            match (raises.first(), resolutions.first(), must) {
                (None, _, Some(i)) => failures.push(format!(
                    "(1) key {k}: fault #{f} ({}-{}) never raised, though {} was healthy long enough",
                    secs(s),
                    secs(e),
                    IDS[i]
                )),
                (Some(raise), None, _) => failures.push(format!(
                    "(1) key {k}: fault #{f} ({}-{}) raised (e{}) but never resolved",
                    secs(s),
                    secs(e),
                    raise.episode
                )),
                (Some(raise), Some(r), _) if r.episode != raise.episode => {
                    failures.push(format!(
                        "(1) key {k}: fault #{f} raised as e{} and resolved as e{}",
                        raise.episode, r.episode
                    ))
                }
                _ => {}
            }
        }
    }
    // (5) the end state.
    let mut ledgers = Vec::new();
    for (i, node) in sim.nodes.iter().enumerate() {
        match &node.coord {
            Some(c) if node.up => ledgers.push((i, c.ledger())),
            _ => failures.push(format!("(5) {} is not up at the end", IDS[i])),
        }
    }
    for (i, ledger) in &ledgers {
        if !ledger.active.is_empty() {
            failures.push(format!(
                "(5) {} still holds {} at the end",
                IDS[*i],
                describe_ledger(ledger)
            ));
        }
    }
    for k in 0..plan.truth.len() {
        let key = key_name(k);
        let stored = sim.store.get(&key).map(Record::mark);
        let last_seen = sim
            .sink
            .iter()
            .filter(|c| c.key == k)
            .map(|c| c.episode)
            .max();
        if stored != last_seen.map(Mark::resolved) {
            // Not an invariant (see the module doc), counted.
            store_behind = true;
        }
        for (i, ledger) in &ledgers {
            let ended = ledger.ended.get(&key).copied();
            if ended != last_seen {
                failures.push(format!(
                    "(5) key {k}: {} ends at episode {ended:?}, the consumer's last is {last_seen:?}",
                    IDS[*i]
                ));
            }
        }
    }
    (must_total, repeats, store_behind)
}

// ---------------------------------------------------------------------------------------------
// The tests

/// Runs `count` schedules from `first` on every core; panics with the first failing seed's
/// schedule and trace.
fn run_many(first: u64, count: u64) {
    let started = Instant::now();
    let next = AtomicU64::new(first);
    let failed: Mutex<Option<(u64, Vec<String>)>> = Mutex::new(None);
    let totals = Mutex::new([0usize; 7]);
    let threads = std::env::var("HA_SIM_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut sums = [0usize; 7];
                loop {
                    let seed = next.fetch_add(1, AtomicOrdering::Relaxed);
                    if seed >= first + count || failed.lock().unwrap().is_some() {
                        break;
                    }
                    let outcome = run_schedule(seed, false);
                    sums[0] += outcome.copies;
                    sums[1] += outcome.late;
                    sums[2] += outcome.repeats;
                    sums[3] += outcome.must;
                    sums[4] += 1;
                    sums[5] += usize::from(outcome.excluded.is_some());
                    sums[6] += usize::from(outcome.store_behind);
                    if !outcome.failures.is_empty() {
                        let mut failed = failed.lock().unwrap();
                        if failed.as_ref().is_none_or(|(s, _)| seed < *s) {
                            *failed = Some((seed, outcome.failures));
                        }
                    }
                }
                let mut totals = totals.lock().unwrap();
                for (total, sum) in totals.iter_mut().zip(sums) {
                    *total += sum;
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let [copies, late, repeats, must, ran, excluded, behind] = *totals.lock().unwrap();
    eprintln!(
        "{ran} schedules in {elapsed:.2?} ({:.0}/s on {threads} threads), {excluded} not judged (a start that learnt less than was published): {copies} copies published ({late} late from a resumed server), {repeats} of them repeats of an id; {must} faults had to be delivered; the store ended behind the consumer in {behind}",
        ran as f64 / elapsed.as_secs_f64()
    );
    assert!(
        excluded * 100 <= ran,
        "{excluded} of {ran} schedules were not judged: the generator should avoid what the design cannot guarantee"
    );
    if let Some((seed, failures)) = failed.into_inner().unwrap() {
        let replay = run_schedule(seed, true);
        panic!(
            "seed {seed} breaks the invariants (replay: HA_SIM_SEED={seed} cargo test --test pure ha_sim::)\n{}\ntrace:\n{}\n\nfailures:\n{}",
            Plan::new(seed).describe(),
            replay.trace.unwrap_or_default().join("\n"),
            failures.join("\n")
        );
    }
}

#[test]
fn simulated_schedules_keep_the_invariants() {
    if let Ok(seed) = std::env::var("HA_SIM_SEED") {
        let seed: u64 = seed.parse().expect("HA_SIM_SEED is a number");
        let outcome = run_schedule(seed, true);
        eprintln!(
            "{}\n{}\n{}",
            Plan::new(seed).describe(),
            outcome.trace.unwrap_or_default().join("\n"),
            outcome
                .excluded
                .map_or(String::new(), |why| format!("not judged: {why}"))
        );
        assert!(
            outcome.failures.is_empty(),
            "seed {seed}:\n{}",
            outcome.failures.join("\n")
        );
        return;
    }
    let count = std::env::var("HA_SIM_SCHEDULES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    run_many(0, count);
}

#[test]
#[ignore = "long: 200,000 schedules"]
fn many_more_simulated_schedules_keep_the_invariants() {
    let count = std::env::var("HA_SIM_SCHEDULES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    run_many(1_000_000, count);
}
