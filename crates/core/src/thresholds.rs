//! Thresholds: the configured limits the checks compare against (and the history times), a leaf
//! every stage from history to the page may read.

use std::time::Duration;

/// raft's longest election timeout: a follower that stops hearing its leader waits a random
/// 4 to 9 s before it campaigns (nats-server `server/raft.go`, `maxElectionTimeoutDefault`).
pub const RAFT_ELECTION_TIMEOUT_MAX: Duration = Duration::from_secs(9);

/// The default time between polls (`--poll-interval`).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The default of `--leaderless-after`: raft's longest election timeout, one poll to see the
/// winner, and 2 s for the campaign itself and a loaded machine. A normal election (a leader
/// stopped, crashed or in lame duck, a rolling restart) ends well inside it.
pub const LEADERLESS_AFTER_DEFAULT: Duration =
    Duration::from_secs(RAFT_ELECTION_TIMEOUT_MAX.as_secs() + DEFAULT_POLL_INTERVAL.as_secs() + 2);

/// The default of `--routes-missing-after` (CLUSTER_005): longer than a restarted server takes
/// to open its routes (under a second measured on 2.15) and than a configured route's reconnect
/// (retried every second), so rolling restarts raise nothing.
pub const ROUTES_MISSING_AFTER_DEFAULT: Duration = Duration::from_secs(10);

/// The default of `--gateway-lost-after` (CLUSTER_007): longer than a gateway's reconnect
/// (retried every second) and a restarted server's gateway handshake.
pub const GATEWAY_LOST_AFTER_DEFAULT: Duration = Duration::from_secs(10);

/// The default of `--health-failing-after` (SERVER_014): a server that just started reports
/// "still recovering meta layer" for a moment, and an election after a leader crash leaves
/// followers without a leader for up to raft's longest election timeout (9 s) plus the vote:
/// 15 s keeps a normal election, with a poll's granularity, clear of it.
pub const HEALTH_FAILING_AFTER_DEFAULT: Duration = Duration::from_secs(15);

/// The default of `--catching-up-after` (META_110): a member that restarted or was cut off for
/// a while receives a snapshot and the entries since, normally within seconds; a minute means
/// the snapshot is large, the link slow or the member starved.
pub const CATCHING_UP_AFTER_DEFAULT: Duration = Duration::from_secs(60);

/// Configured limits the checks compare against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// A peer the leader has not heard from for this long is offline.
    pub offline_after: Duration,
    /// META_106 is raised when no server has reported a meta leader for longer than this while a
    /// quorum of members is online (longer than any normal election: see
    /// [`LEADERLESS_AFTER_DEFAULT`]).
    pub leaderless_after: Duration,
    /// Servers may disagree about the leader this long before META_002 is raised.
    pub disagreement_after: Duration,
    /// META_003 is raised when the leader changed more than this many times ...
    pub flap_max: usize,
    /// ... within this window.
    pub flap_window: Duration,
    /// META_008 is raised when the meta leader has more JetStream API requests pending than
    /// this ...
    pub pending_max: u64,
    /// ... for longer than this.
    pub pending_after: Duration,
    /// META_101 is raised for a member the leader shows not current, or lagging by more than
    /// this many operations ...
    pub lag_max: u64,
    /// ... for longer than this.
    pub behind_after: Duration,
    /// META_102 stays raised this long after the group's size last changed.
    pub size_change_hold: Duration,
    /// META_103 is raised when the group's size has been even this long.
    pub even_after: Duration,
    /// META_005 is raised when the stream and consumer replicas of the group's servers add up
    /// to more than this.
    pub meta_assets_max: u64,
    /// META_107 is raised for a server whose JetStream flushes to disk less often than this
    /// (and not on every write).
    pub sync_interval_max: Duration,
    /// CLUSTER_005 is raised for a member whose ROUTEZ has lacked routes to other members of
    /// its cluster for this long.
    pub routes_missing_after: Duration,
    /// CLUSTER_007 is raised for a server whose GATEWAYZ has lacked a gateway to another
    /// cluster of the group for this long.
    pub gateway_lost_after: Duration,
    /// SERVER_014 is raised for a member whose HEALTHZ has failed for this long.
    pub health_failing_after: Duration,
    /// META_110 is raised for a member whose RAFTZ has shown it catching up for this long.
    pub catching_up_after: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            offline_after: Duration::from_secs(3),
            leaderless_after: LEADERLESS_AFTER_DEFAULT,
            disagreement_after: Duration::from_secs(3),
            flap_max: 1,
            flap_window: Duration::from_secs(600),
            pending_max: 500,
            pending_after: Duration::from_secs(5),
            lag_max: 200,
            behind_after: Duration::from_secs(10),
            size_change_hold: Duration::from_secs(600),
            even_after: Duration::from_secs(30),
            meta_assets_max: 5_000,
            sync_interval_max: Duration::from_secs(60),
            routes_missing_after: ROUTES_MISSING_AFTER_DEFAULT,
            gateway_lost_after: GATEWAY_LOST_AFTER_DEFAULT,
            health_failing_after: HEALTH_FAILING_AFTER_DEFAULT,
            catching_up_after: CATCHING_UP_AFTER_DEFAULT,
        }
    }
}

/// Whether the leader's figures for a member it hears say it is behind: not current, or more
/// than `lag_max` operations behind. The history times it for META_101; the status page shows it.
pub fn shows_behind(current: bool, lag: u64, lag_max: u64) -> bool {
    !current || lag > lag_max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaderless_after_outlasts_the_longest_election_and_one_poll() {
        let t = Thresholds::default();
        assert!(t.leaderless_after > RAFT_ELECTION_TIMEOUT_MAX + DEFAULT_POLL_INTERVAL);
        assert!(t.leaderless_after > t.offline_after);
    }
}
