//! Records: the form in which findings are kept between runs (in the store's KV bucket) and
//! exchanged between instances, merged by [`Mark`] (a newer episode or revision stays), and the
//! KV keys they are kept under. Pure data; the product's `store` reads and writes them.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::checks::Finding;
use crate::findings::{ActiveFinding, Transition, TransitionKind};

/// Prefix of finding keys in the bucket.
pub const FINDING_PREFIX: &str = "finding.";

/// One finding's record in the bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Record {
    /// Raised and not resolved.
    Active(ActiveFinding),
    /// Resolved, kept for a while so late or restarted instances do not raise it again blindly.
    Resolved(ResolvedFinding),
}

/// What is stored under a finding's key: the record and the instance that wrote it, so an
/// instance whose write timed out can tell whether it landed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// Instance id of the writer.
    pub writer: String,
    /// The record.
    #[serde(flatten)]
    pub record: Record,
}

/// A finding after its resolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedFinding {
    /// The finding as last seen.
    pub finding: Finding,
    /// The episode it ended (0 in records of versions before episodes were numbered).
    #[serde(default)]
    pub episode: u64,
    /// The epoch the episode was raised in (empty in records of versions before epochs).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// Revision of the resolved event.
    pub revision: u64,
    /// When it was raised.
    pub raised_at: SystemTime,
    /// When it was resolved.
    pub resolved_at: SystemTime,
}

/// Orders what is known about one finding key: a later episode is newer, and within an episode
/// a higher revision is; a resolution ends its episode (it is newer than any revision of it). No
/// clock takes part: two instances that saw the same transition give it the same mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mark {
    /// The episode.
    pub episode: u64,
    /// The revision within it; `u64::MAX` once resolved.
    pub stage: u64,
}

impl Mark {
    /// The mark of an active state.
    pub fn active(episode: u64, revision: u64) -> Mark {
        Mark {
            episode,
            stage: revision,
        }
    }

    /// The mark of the end of an episode.
    pub fn resolved(episode: u64) -> Mark {
        Mark {
            episode,
            stage: u64::MAX,
        }
    }
}

impl Record {
    /// Its mark: the newer of two records about one key has the greater.
    pub fn mark(&self) -> Mark {
        match self {
            Record::Active(a) => Mark::active(a.episode, a.revision),
            Record::Resolved(r) => Mark::resolved(r.episode),
        }
    }

    /// The finding key.
    pub fn key(&self) -> &str {
        match self {
            Record::Active(a) => &a.finding.key,
            Record::Resolved(r) => &r.finding.key,
        }
    }

    /// The record a transition leaves behind.
    pub fn after(transition: &Transition) -> Record {
        match transition.kind {
            TransitionKind::Resolved => Record::Resolved(ResolvedFinding {
                finding: transition.finding.clone(),
                episode: transition.episode,
                epoch: transition.epoch.clone(),
                revision: transition.revision,
                raised_at: transition.raised_at,
                resolved_at: transition.at,
            }),
            TransitionKind::Raised | TransitionKind::Updated => Record::Active(ActiveFinding {
                finding: transition.finding.clone(),
                episode: transition.episode,
                epoch: transition.epoch.clone(),
                revision: transition.revision,
                raised_at: transition.raised_at,
                changed_at: transition.at,
            }),
        }
    }
}

/// The key a finding stored by an earlier version has now, when it differs: keys named the
/// leader's cluster (`META_001/C1/n2`), they now name the group (`META_001/default/n2`).
pub fn current_key(finding: &crate::checks::Finding) -> Option<String> {
    let group = crate::observe::GroupId::of(finding.domain.as_deref());
    let check = finding.check.as_str();
    let rest = finding.key.strip_prefix(check)?.strip_prefix('/')?;
    let (named, tail) = match rest.split_once('/') {
        Some((named, tail)) => (named, Some(tail)),
        None => (rest, None),
    };
    if named == group.label() {
        return None;
    }
    Some(match tail {
        Some(tail) => format!("{check}/{}/{tail}", group.label()),
        None => format!("{check}/{}", group.label()),
    })
}

/// Encodes a finding key into a KV key: `[-/_a-zA-Z0-9]` stay, everything else becomes `=XX`.
pub fn kv_key(finding: &str) -> String {
    let mut key = String::from(FINDING_PREFIX);
    for b in finding.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_') {
            key.push(b as char);
        } else {
            key.push_str(&format!("={b:02X}"));
        }
    }
    key
}
