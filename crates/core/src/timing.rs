//! Every timer of the service in one place, with the relations between them (asserted in the
//! tests below). The pipeline's own intervals (poll, heartbeat, gather) come from the command
//! line; everything here is derived from them or fixed.

use std::time::Duration;

/// The service's timers.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Time between polls (`--poll-interval`).
    pub poll: Duration,
    /// How long one poll may wait for replies (`--gather-timeout` and the direct probes).
    pub gather: GatherTiming,
    /// Time between heartbeats on `$INSIGHTS.HEARTBEAT` (`--heartbeat-interval`).
    pub heartbeat: Duration,
    /// How long the attached server has to answer a round trip, during a poll or before a
    /// publication, before it counts as not answering.
    pub attached_answer: Duration,
    /// How often the connections may be moved off a server that does not answer or is cut off
    /// (each of the main and the state connection).
    pub move_every: Duration,
    /// How long a move waits to be attached elsewhere before the round goes on.
    pub move_settle: Duration,
    /// A pinned link dropped while the main connection was down too (the same server died):
    /// the poll it calls for is tried again this often until the main connection is back (at
    /// most until the next poll). A reconnect to another server on loopback or a LAN takes
    /// milliseconds.
    pub link_retry: Duration,
    /// The coordinator's timers (see [`HaTiming`]).
    pub ha: HaTiming,
    /// How often a store that does not answer is tried again.
    pub store_retry: Duration,
    /// The history is written at most this often.
    pub history_every: Duration,
    /// How long a shutdown keeps trying to write what the store would not take: longer than
    /// raft's longest election timeout, so a bucket whose stream leader died with the server
    /// just reported has a new leader in time to store that report.
    pub shutdown_flush: Duration,
    /// How a failing Alertmanager is retried: after 1 s, doubling up to 30 s (well inside the
    /// default `--alertmanager-resend`, so a recovered Alertmanager hears of the active alerts
    /// about as soon as it would have at the next resend).
    pub alert_backoff: Backoff,
    /// A resolved alert is sent again (with its `endsAt`) for this long, so an Alertmanager that
    /// was down at the resolution learns of it (Prometheus keeps resolved alerts as long).
    pub alert_resolved_kept: Duration,
    /// How long one publish of a finding event waits for the server's confirmation (a round
    /// trip after it) ...
    pub publish_confirm: Duration,
    /// ... and how many times it is sent before it counts as failed (the coordinator then
    /// tries again after its `publish_backoff`).
    pub delivery_attempts: u32,
}

/// nats-server's longest raft election timeout (`NATS_FACTS.md`: random 4-9 s): a stream or the
/// meta group whose leader died has a new one within this (given a quorum).
pub const RAFT_ELECTION_MAX: Duration = Duration::from_secs(9);

/// How long the shipped service units give a stopping process (`TimeoutStopSec` in
/// deploy/systemd, `terminationGracePeriodSeconds` in deploy/kubernetes).
pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// How long one connection attempt of the service's own connections (main, state, pinned) may
/// take. A stopped (SIGSTOP) server's kernel still accepts TCP and the server never sends its
/// INFO, so a reconnect that tries it waits this long: nats.go's default, kept short so that a
/// move off a stalled server is not paid for with seconds of the monitor's own silence.
pub const CONNECT: Duration = Duration::from_secs(2);

/// The timers of the high-availability coordinator ([`crate::ha::Coordinator`]); `docs/ha.md`
/// has them in a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HaTiming {
    /// Every instance announces itself this often (`$INSIGHTS.HA.BEAT`).
    pub beat: Duration,
    /// A peer not heard for this long no longer counts: it stopped, or it is cut off.
    pub peer_live: Duration,
    /// The wait per position: the instance at position `p` publishes a transition that has not
    /// appeared from a peer after `p x grace`.
    pub grace: Duration,
    /// A transition contrary to one a peer just published waits this long (views lag each
    /// other by a poll or two; a contrary view that persists is real).
    pub contrary_hold: Duration,
    /// After a start or a reconnect, publishing waits this long for a peer's state (the first
    /// answer ends the wait).
    pub sync_wait: Duration,
    /// A peer is remembered this long after it was last heard: one that comes back keeps the
    /// running time this instance saw it reach (a claim counts only as far as it was seen).
    pub peer_memory: Duration,
    /// A publish that failed is tried again after `min`, doubling with each failure in a row
    /// up to `max`: one that cannot succeed (a denied subject, a server refusing) is no hot
    /// loop, and one that failed by chance goes out again before a peer's grace is over.
    pub publish_backoff: Backoff,
}

impl Timing {
    /// The timers for these pipeline intervals.
    pub fn new(poll: Duration, gather: GatherTiming, heartbeat: Duration) -> Timing {
        // The slowest poll: the gather waits it out, then the direct probes of the silent.
        let slowest_poll = gather.max_wait + gather.probe_timeout;
        let beat = Duration::from_secs(1);
        Timing {
            poll,
            gather,
            heartbeat,
            attached_answer: Duration::from_secs(1),
            move_every: Duration::from_secs(10),
            move_settle: Duration::from_secs(3),
            link_retry: Duration::from_millis(20),
            ha: HaTiming {
                beat,
                peer_live: beat * 7 / 2,
                grace: (poll + slowest_poll).max(Duration::from_secs(3)),
                contrary_hold: (poll * 3).max(Duration::from_secs(3)),
                sync_wait: beat * 3 / 2,
                peer_memory: Duration::from_secs(3600),
                publish_backoff: Backoff {
                    min: Duration::from_secs(1),
                    max: Duration::from_secs(30),
                },
            },
            store_retry: Duration::from_secs(3),
            history_every: Duration::from_secs(2),
            shutdown_flush: RAFT_ELECTION_MAX + Duration::from_secs(3),
            alert_backoff: Backoff {
                min: Duration::from_secs(1),
                max: Duration::from_secs(30),
            },
            alert_resolved_kept: Duration::from_secs(15 * 60),
            publish_confirm: Duration::from_secs(2),
            delivery_attempts: 4,
        }
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing::new(
            Duration::from_secs(1),
            GatherTiming::default(),
            Duration::from_secs(10),
        )
    }
}

/// How long a poll may wait.
#[derive(Debug, Clone, Copy)]
pub struct GatherTiming {
    /// Upper bound for the scatter-gather.
    pub max_wait: Duration,
    /// Stop once no reply arrived for this long (replies have stopped coming).
    pub idle_gap: Duration,
    /// Timeout of the direct request to a known server that did not answer the gather.
    pub probe_timeout: Duration,
    /// Once every known server answered, how long to wait for servers not known yet (one that
    /// misses it is found by the next poll).
    pub linger: Duration,
}

impl Default for GatherTiming {
    fn default() -> Self {
        GatherTiming {
            max_wait: Duration::from_millis(1500),
            idle_gap: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(500),
            linger: Duration::from_millis(25),
        }
    }
}

/// The timers of finding every meta member's own address and pinning a link to it (the
/// product's `connect::discovery`): fixed, not derived from the intervals.
#[derive(Debug, Clone, Copy)]
pub struct DiscoveryTiming {
    /// Least time between two discoveries.
    pub gap: Duration,
    /// A member still without a link is looked for again after this long while it answers (it
    /// may have been down, or slow to answer, at the last try), twice as long after each try ...
    pub retry_after: Duration,
    /// ... up to this.
    pub retry_max: Duration,
    /// How long one discovered link may take to connect.
    pub connect: Duration,
    /// How long the VARZ scatter-gather waits at most for the members it looks for (one that is
    /// down never answers).
    pub varz_wait: Duration,
    /// Timeout of one ROUTEZ request.
    pub routez_timeout: Duration,
}

/// The discovery timers.
pub const DISCOVERY: DiscoveryTiming = DiscoveryTiming {
    gap: Duration::from_secs(10),
    retry_after: Duration::from_secs(15),
    retry_max: Duration::from_secs(300),
    connect: Duration::from_secs(3),
    varz_wait: Duration::from_secs(2),
    routez_timeout: Duration::from_millis(750),
};

/// How a target backs off: the first retry after `min`, doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First retry delay.
    pub min: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The wait after `failures` failures in a row: `min`, doubling with each, at most `max`.
    pub fn delay(self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(16);
        self.min.saturating_mul(1u32 << exponent).min(self.max)
    }
}

/// Local time: how long since the process started, on its monotonic clock. Every deadline of
/// the engine and the coordinator is on this one origin.
pub type Now = Duration;

/// Every deadline the engine can wake for, by name (quinn-proto's timer table, for a monitor).
/// Besides these, only the Alertmanager senders wake on a deadline of their own (their
/// outbox's `next_look`, on the same origin), in tasks apart so HTTP never waits in a round;
/// everything else waits on I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// The next poll (`--poll-interval`).
    Poll,
    /// The next heartbeat on `$INSIGHTS.HEARTBEAT` (`--heartbeat-interval`).
    Heartbeat,
    /// The coordinator's next deadline ([`crate::ha::Coordinator::next_deadline`]): a beat,
    /// the end of the sync wait, a grace, a hold, a backoff or a peer going silent.
    Coordinator,
    /// The poll a dropped pinned link called for, tried again while the main connection moves
    /// off the same dead server (`link_retry`).
    LinkRetry,
}

impl Timer {
    /// Every timer, in the order ties are served.
    pub const ALL: [Timer; 4] = [
        Timer::Poll,
        Timer::LinkRetry,
        Timer::Coordinator,
        Timer::Heartbeat,
    ];

    fn slot(self) -> usize {
        match self {
            Timer::Poll => 0,
            Timer::LinkRetry => 1,
            Timer::Coordinator => 2,
            Timer::Heartbeat => 3,
        }
    }

    /// The timer's name, for logs and STATUS.
    pub fn as_str(self) -> &'static str {
        match self {
            Timer::Poll => "poll",
            Timer::Heartbeat => "heartbeat",
            Timer::Coordinator => "coordinator",
            Timer::LinkRetry => "link_retry",
        }
    }
}

/// When each [`Timer`] is due (or not armed), on the one [`Now`] origin: "when does the process
/// wake next, and why" is [`TimerTable::next`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerTable {
    at: [Option<Now>; 4],
}

impl TimerTable {
    /// Arms `timer` for `at` (replacing what it was armed for).
    pub fn set(&mut self, timer: Timer, at: Now) {
        self.at[timer.slot()] = Some(at);
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: Timer) {
        self.at[timer.slot()] = None;
    }

    /// When `timer` is due, if armed.
    pub fn get(&self, timer: Timer) -> Option<Now> {
        self.at[timer.slot()]
    }

    /// The earliest armed timer and when it is due (ties in [`Timer::ALL`]'s order).
    pub fn next(&self) -> Option<(Timer, Now)> {
        Timer::ALL
            .iter()
            .filter_map(|t| self.get(*t).map(|at| (*t, at)))
            .min_by_key(|(_, at)| *at)
    }

    /// Disarms and returns the timers due at `now` with when each was due, in [`Timer::ALL`]'s
    /// order.
    pub fn expire(&mut self, now: Now) -> Vec<(Timer, Now)> {
        let due: Vec<(Timer, Now)> = Timer::ALL
            .into_iter()
            .filter_map(|t| self.get(t).filter(|at| *at <= now).map(|at| (t, at)))
            .collect();
        for (t, _) in &due {
            self.stop(*t);
        }
        due
    }
}

/// The next tick of a periodic timer that was due at `due` and served at `now`: one `period`
/// after it was due, or, when serving it ran past that (a slow round), one `period` after
/// `now`, so a late tick delays the next instead of bunching them.
pub fn next_tick(due: Now, now: Now, period: Duration) -> Now {
    let next = due + period;
    if next <= now {
        now + period
    } else {
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relations the protocol relies on, for the defaults and for other poll intervals.
    #[test]
    fn the_timers_keep_their_relations() {
        for poll in [100, 500, 1_000, 2_000, 5_000].map(Duration::from_millis) {
            let t = Timing::new(poll, GatherTiming::default(), Duration::from_secs(10));
            let slowest_poll = t.gather.max_wait + t.gather.probe_timeout;
            // A missed beat or two is not a death.
            assert!(t.ha.peer_live > t.ha.beat * 3, "{t:?}");
            // The instance at position 0 sees a fault at most one (slow) poll after any other:
            // its event arrives before the instance at position 1 has waited out its grace.
            assert!(t.ha.grace >= t.poll + slowest_poll, "{t:?}");
            // Views lag each other by up to two polls: a contrary view held this long persists.
            assert!(t.ha.contrary_hold >= t.poll * 2, "{t:?}");
            // A peer is remembered well past the time it counts as live.
            assert!(t.ha.peer_memory > t.ha.peer_live * 100, "{t:?}");
            // A publish that failed by chance goes out again before a peer's grace would make
            // it publish instead, and backing off never waits past a few graces.
            assert!(t.ha.publish_backoff.min < t.ha.grace, "{t:?}");
            assert!(t.ha.publish_backoff.max <= t.ha.grace * 10, "{t:?}");
            // One delivery attempt in doubt ends before the peer behind would publish the same
            // transition; a publish given up on is tried again no sooner than a backoff later.
            assert!(t.publish_confirm < t.ha.grace, "{t:?}");
            assert!(t.attached_answer <= t.publish_confirm, "{t:?}");
            assert!(t.delivery_attempts >= 2, "{t:?}");
            // A peer beats within the sync wait, so a starting instance knows who runs.
            assert!(t.ha.sync_wait > t.ha.beat, "{t:?}");
            // A stop stores what it published even when the bucket's leader just died, and
            // ends (its last attempt and the history's write take a few `--state-timeout`s,
            // 1 s by default) within the grace the shipped units give it.
            assert!(t.shutdown_flush > RAFT_ELECTION_MAX, "{t:?}");
            assert!(
                t.shutdown_flush + Duration::from_secs(4) < STOP_GRACE,
                "{t:?}"
            );
            // A dead instance at position 0 costs at most the grace or its silence, never more
            // than a few seconds at the default poll.
            if poll == Duration::from_secs(1) {
                assert!(t.ha.grace.min(t.ha.peer_live) <= Duration::from_secs(4));
            }
            // A poll cut short by a silent attached server ends before the gather would.
            assert!(t.attached_answer < slowest_poll, "{t:?}");
            // A poll called for by a dropped link waits for a reconnect, not for the next tick.
            assert!(t.link_retry * 5 <= t.poll, "{t:?}");
            // A move settles before the next move may start.
            assert!(t.move_settle < t.move_every, "{t:?}");
            // The history is written at least every few polls at the default.
            assert!(t.history_every >= t.ha.beat, "{t:?}");
        }
    }

    #[test]
    fn the_discovery_timers_keep_their_relations() {
        let d = DISCOVERY;
        // One discovery (VARZ, then ROUTEZ, then the connects, with a second's margin on the
        // connect) ends before the next may start.
        assert!(
            d.varz_wait + d.routez_timeout + d.connect + Duration::from_secs(1) < d.gap,
            "{d:?}"
        );
        // A member is looked for again no more often than discoveries run, and backing off
        // goes well past a first retry without growing without bound.
        assert!(d.retry_after >= d.gap, "{d:?}");
        assert!(d.retry_max >= d.retry_after * 8, "{d:?}");
        assert!(d.retry_max <= Duration::from_secs(600), "{d:?}");
        // One try of the service's own connections is no longer than a discovered link's.
        assert!(CONNECT <= d.connect, "{d:?}");
    }

    #[test]
    fn the_table_says_which_timer_wakes_next_and_serves_ties_in_order() {
        let s = Duration::from_secs;
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Heartbeat, s(10));
        t.set(Timer::Coordinator, s(2));
        t.set(Timer::Poll, s(2));
        assert_eq!(t.next(), Some((Timer::Poll, s(2))));
        assert_eq!(t.expire(s(1)), []);
        assert_eq!(
            t.expire(s(2)),
            [(Timer::Poll, s(2)), (Timer::Coordinator, s(2))]
        );
        assert_eq!(t.next(), Some((Timer::Heartbeat, s(10))));
        t.stop(Timer::Heartbeat);
        assert_eq!(t.next(), None);
    }

    #[test]
    fn a_late_tick_delays_the_next_instead_of_bunching() {
        let ms = Duration::from_millis;
        assert_eq!(next_tick(ms(1000), ms(1010), ms(1000)), ms(2000));
        assert_eq!(next_tick(ms(1000), ms(2500), ms(1000)), ms(3500));
    }
}
