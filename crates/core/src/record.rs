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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A META_001 finding for `server` of cluster `c` (keyed as an earlier version did).
    fn finding(server: &str) -> crate::checks::Finding {
        crate::checks::Finding {
            check: crate::checks::CheckId::META_001,
            key: format!("META_001/c/{server}"),
            cluster: None,
            domain: None,
            server: Some(server.into()),
            summary: "s".into(),
            evidence: serde_json::json!({"a": 1}),
            remediation: vec![],
            fingerprint: server.into(),
        }
    }

    /// The same finding under its current key.
    fn current(server: &str) -> crate::checks::Finding {
        crate::checks::Finding {
            key: format!("META_001/default/{server}"),
            ..finding(server)
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn stored_records_round_trip_with_their_writer() {
        let finding = finding("n2");
        let at = at(1_800_000_000);
        for record in [
            Record::Active(ActiveFinding {
                finding: finding.clone(),
                episode: 1,
                epoch: String::new(),
                revision: 1,
                raised_at: at,
                changed_at: at,
            }),
            Record::Resolved(ResolvedFinding {
                finding,
                episode: 1,
                epoch: String::new(),
                revision: 2,
                raised_at: at,
                resolved_at: at,
            }),
        ] {
            let stored = Stored {
                writer: "i1".into(),
                record,
            };
            let text = serde_json::to_string(&stored).expect("encodes");
            assert!(text.contains("\"writer\":\"i1\""), "{text}");
            assert_eq!(
                serde_json::from_str::<Stored>(&text).expect("decodes"),
                stored
            );
        }
    }

    #[test]
    fn marks_order_episodes_then_revisions_and_a_resolution_ends_its_episode() {
        assert!(Mark::active(1, 9) < Mark::active(2, 1));
        assert!(Mark::active(2, 1) < Mark::active(2, 2));
        assert!(Mark::active(2, 7) < Mark::resolved(2));
        assert!(Mark::resolved(2) < Mark::active(3, 1));
    }

    #[test]
    fn finding_keys_become_valid_kv_keys() {
        assert_eq!(kv_key("META_001/c1/n2"), "finding.META_001/c1/n2");
        assert_eq!(
            kv_key("META_006/my cluster.eu"),
            "finding.META_006/my=20cluster=2Eeu"
        );
        assert_ne!(kv_key("a=b"), kv_key("a.b"));
    }

    #[test]
    fn keys_of_the_previous_version_are_carried_to_the_group_key() {
        let old = finding("n2");
        assert_eq!(current_key(&old).as_deref(), Some("META_001/default/n2"));
        assert_eq!(current_key(&current("n2")), None);
        let edge = crate::checks::Finding {
            key: "META_006/leaf-cluster".into(),
            check: crate::checks::CheckId::META_006,
            domain: Some("edge".into()),
            server: None,
            ..old.clone()
        };
        assert_eq!(current_key(&edge).as_deref(), Some("META_006/edge"));
        let already = crate::checks::Finding {
            key: "META_006/edge".into(),
            ..edge
        };
        assert_eq!(current_key(&already), None);
    }
}
