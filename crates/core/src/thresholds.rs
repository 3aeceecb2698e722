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
