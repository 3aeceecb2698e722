//! HA input checks: what peers and the bucket say about findings is network input. Before a
//! record, a peer's event, its state or its beat reaches the [`super::Coordinator`] it is checked
//! here (pure functions of the input, what this instance knows and `now`): numbers far beyond
//! anything real, timestamps in the future, keys that do not parse are refused, so no single
//! message can wrap an episode, pin a revision at its maximum or make a finding unraisable.

use std::time::{Duration, SystemTime};

use super::coordinator::PeerState;
use super::ledger::{valid_epoch, Ledger};
use crate::checks::Finding;
use crate::record::Record;

/// The largest episode or revision accepted at all: far above what a key reaches in centuries
/// of one transition a second, far below where adding to it could wrap.
pub const NUMBER_MAX: u64 = 1 << 40;
/// How many episodes a peer's event may be ahead of what this instance knows of its key: a peer
/// that raised and resolved a key this often while this instance heard nothing is not real.
pub const EPISODE_JUMP: u64 = 10_000;
/// How far in the future a stored or peer's timestamp may lie (instances' clocks may differ).
pub const FUTURE_TOLERANCE: Duration = Duration::from_secs(3600);
/// The longest finding key accepted.
pub const KEY_MAX_LEN: usize = 512;
/// The most entries a peer's ledger may carry (every check on every server of the largest
/// deployments is far fewer).
pub const LEDGER_MAX_ENTRIES: usize = 200_000;
/// The longest running time a beat may claim.
pub const UPTIME_MAX: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The longest instance id accepted (minted ones are 22-character nuids).
pub const INSTANCE_MAX_LEN: usize = 64;

/// Why an input was refused.
pub type Refusal = String;

/// Whether `key` is a finding key of `finding`'s check, group and server:
/// `CHECK/group` or `CHECK/group/server` (the group being the domain's label, or a cluster name
/// in records of earlier versions, hence not compared), printable, of bounded length.
pub fn key_of(finding: &Finding) -> Result<(), Refusal> {
    let key = &finding.key;
    if key.len() > KEY_MAX_LEN || key.chars().any(char::is_control) {
        return Err(format!(
            "finding key of {} bytes or with control characters",
            key.len()
        ));
    }
    let rest = key
        .strip_prefix(finding.check.as_str())
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| format!("finding key {key:?} does not start with {}/", finding.check))?;
    let mut parts = rest.splitn(2, '/');
    let group = parts.next().unwrap_or_default();
    if group.is_empty() {
        return Err(format!("finding key {key:?} names no meta group"));
    }
    match (parts.next(), &finding.server) {
        (None, None) => Ok(()),
        (Some(server), Some(named)) if server == named => Ok(()),
        (Some(server), None) if !server.is_empty() => Ok(()),
        _ => Err(format!(
            "finding key {key:?} and server {:?} disagree",
            finding.server
        )),
    }
}

fn number(what: &str, n: u64) -> Result<(), Refusal> {
    if n > NUMBER_MAX {
        return Err(format!("{what} {n} is beyond any real count"));
    }
    Ok(())
}

fn not_future(what: &str, at: SystemTime, now: SystemTime) -> Result<(), Refusal> {
    if at
        .duration_since(now)
        .is_ok_and(|ahead| ahead > FUTURE_TOLERANCE)
    {
        return Err(format!("{what} lies more than an hour in the future"));
    }
    Ok(())
}

fn epoch(epoch: &str) -> Result<(), Refusal> {
    if epoch.is_empty() || valid_epoch(epoch) {
        Ok(())
    } else {
        Err("an epoch this service would not mint".to_string())
    }
}

/// Checks a record (stored, in a peer's ledger, or left by a peer's event) on its own: a key that
/// parses, numbers in range, no timestamp in the future.
pub fn record(record: Record, now: SystemTime) -> Result<Record, Refusal> {
    match &record {
        Record::Active(a) => {
            key_of(&a.finding)?;
            number("episode", a.episode)?;
            number("revision", a.revision)?;
            epoch(&a.epoch)?;
            not_future("raised_at", a.raised_at, now)?;
            not_future("changed_at", a.changed_at, now)?;
        }
        Record::Resolved(r) => {
            key_of(&r.finding)?;
            number("episode", r.episode)?;
            number("revision", r.revision)?;
            epoch(&r.epoch)?;
            not_future("raised_at", r.raised_at, now)?;
            not_future("resolved_at", r.resolved_at, now)?;
        }
    }
    Ok(record)
}

/// Checks what a peer's event says against what this instance knows: as [`record`], and no
/// more than [`EPISODE_JUMP`] episodes ahead of the key's last known one.
pub fn event(candidate: Record, known: &Ledger, now: SystemTime) -> Result<Record, Refusal> {
    let candidate = record(candidate, now)?;
    let known_episode = known.mark(candidate.key()).map_or(0, |m| m.episode);
    let episode = candidate.mark().episode;
    if episode > known_episode.saturating_add(EPISODE_JUMP) {
        return Err(format!(
            "episode {episode} of {} is far beyond the {known_episode} known",
            candidate.key()
        ));
    }
    Ok(candidate)
}

/// Whether an instance id is one this service could have minted.
pub fn instance_id(id: &str) -> Result<(), Refusal> {
    if id.is_empty()
        || id.len() > INSTANCE_MAX_LEN
        || !id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err("an instance id this service would not mint".to_string());
    }
    Ok(())
}

/// Checks a beat's claim: a real instance id and a running time below [`UPTIME_MAX`].
pub fn beat(instance: &str, uptime_ms: u64) -> Result<Duration, Refusal> {
    instance_id(instance)?;
    let uptime = Duration::from_millis(uptime_ms);
    if uptime > UPTIME_MAX {
        return Err(format!("a running time of {uptime_ms} ms"));
    }
    Ok(uptime)
}

/// Checks a peer's state: its id and running time as a beat's, its ledger no larger than
/// [`LEDGER_MAX_ENTRIES`]; entries that are not valid records are dropped (and counted in the
/// second value), so one bad entry costs only itself.
pub fn peer_state(mut state: PeerState, now: SystemTime) -> Result<(PeerState, u64), Refusal> {
    beat(&state.instance, state.uptime_ms)?;
    let ledger = std::mem::take(&mut state.ledger);
    if ledger.active.len() + ledger.ended.len() > LEDGER_MAX_ENTRIES {
        return Err(format!(
            "a ledger of {} entries",
            ledger.active.len() + ledger.ended.len()
        ));
    }
    let mut refused = 0;
    let mut clean = Ledger::default();
    if valid_epoch(&ledger.epoch) {
        clean.epoch = ledger.epoch;
    } else if !ledger.epoch.is_empty() {
        refused += 1;
    }
    for (key, active) in ledger.active {
        match record(Record::Active(active), now) {
            Ok(Record::Active(a)) if a.finding.key == key => {
                clean.active.insert(key, a);
            }
            _ => refused += 1,
        }
    }
    for (key, episode) in ledger.ended {
        let shaped = key.len() <= KEY_MAX_LEN
            && !key.chars().any(char::is_control)
            && key.split('/').count() >= 2
            && key
                .split('/')
                .next()
                .and_then(crate::checks::CheckId::parse)
                .is_some();
        if shaped && episode <= NUMBER_MAX {
            clean.ended.insert(key, episode);
        } else {
            refused += 1;
        }
    }
    state.ledger = clean;
    Ok((state, refused))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::ActiveFinding;
    use crate::record::ResolvedFinding;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn active(key: &str, episode: u64, revision: u64, when: SystemTime) -> Record {
        Record::Active(ActiveFinding {
            finding: crate::ha::test_finding(key),
            episode,
            epoch: String::new(),
            revision,
            raised_at: when,
            changed_at: when,
        })
    }

    #[test]
    fn impossible_numbers_future_times_and_bad_keys_are_refused() {
        let now = at(0);
        assert!(record(active("META_001/default/n2", 3, 2, now), now).is_ok());
        assert!(
            record(active("META_001/C1/n2", 3, 2, now), now).is_ok(),
            "legacy keys"
        );
        for bad in [
            active("META_001/default/n2", u64::MAX, 1, now),
            active("META_001/default/n2", 1, u64::MAX, now),
            active("META_001/default/n2", NUMBER_MAX + 1, 1, now),
            active("META_001/default/n2", 1, 1, at(7200)),
            active("META_002/default/n2", 1, 1, now),
            active("META_001/default/n3", 1, 1, now),
            active("META_001//n2", 1, 1, now),
            active("garbage", 1, 1, now),
            active("META_001/default/n2\u{1b}[2J", 1, 1, now),
        ] {
            assert!(record(bad.clone(), now).is_err(), "{bad:?}");
        }
        let resolved = Record::Resolved(ResolvedFinding {
            finding: crate::ha::test_finding("META_001/default/n2"),
            episode: 1,
            epoch: "bad epoch".into(),
            revision: 2,
            raised_at: now,
            resolved_at: now,
        });
        assert!(record(resolved, now).is_err());
    }

    #[test]
    fn an_event_far_ahead_of_what_is_known_is_refused() {
        let now = at(0);
        let mut known = Ledger::default();
        known.fold(active("META_001/default/n2", 5, 1, now));
        assert!(event(active("META_001/default/n2", 6, 1, now), &known, now).is_ok());
        assert!(event(
            active("META_001/default/n2", 5 + EPISODE_JUMP + 1, 1, now),
            &known,
            now
        )
        .is_err());
        assert!(event(active("META_001/default/n9", 3, 1, now), &known, now).is_err());
    }

    #[test]
    fn a_peer_state_keeps_its_good_entries_and_counts_the_bad() {
        let now = at(0);
        let mut ledger = Ledger {
            epoch: "Epoch1".into(),
            ..Ledger::default()
        };
        ledger.fold(active("META_001/default/n2", 5, 1, now));
        ledger.ended.insert("META_001/default/n3".into(), u64::MAX);
        ledger.ended.insert("nonsense".into(), 1);
        ledger.ended.insert("META_006/default".into(), 4);
        let state = PeerState {
            instance: "peer1".into(),
            uptime_ms: 1000,
            ledger,
            synced: true,
            deployment: String::new(),
        };
        let (clean, refused) = peer_state(state, now).expect("the state itself is fine");
        assert_eq!(refused, 2);
        assert_eq!(clean.ledger.epoch, "Epoch1");
        assert_eq!(clean.ledger.active.len(), 1);
        assert_eq!(clean.ledger.ended.len(), 1);
        assert!(beat("peer1", u64::MAX).is_err());
        assert!(beat("peer.1", 5).is_err());
    }
}
