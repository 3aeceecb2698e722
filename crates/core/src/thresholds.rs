//! Thresholds: the configured limits the checks compare against (and the history times), a leaf
//! every stage from history to the page may read.

use std::time::Duration;

/// Configured limits the checks compare against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// A peer the leader has not heard from for this long is offline; also the longest a group may
    /// go without any reported leader.
    pub offline_after: Duration,
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
