//! Evaluate: what the checks built on the sources beyond JSZ share (CLUSTER_005, CLUSTER_007,
//! SERVER_014, META_110): a condition a server's own reply showed, held since a time, judged only
//! for the servers whose source this poll answered. The others are undecided: not asked, not
//! answering or too old to have the source is unknown, never ok.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{server_key, CheckId, Evaluation, Finding, Judged};
use crate::history::Since;
use crate::observe::ServerExtras;

/// The checks that judge only what the sources beyond JSZ said: without them (a fixture of JSZ
/// replies alone, a server not asked this poll) every key of theirs is undecided.
pub const EXTRA_SOURCE_CHECKS: &[CheckId] = &[
    CheckId::CLUSTER_005,
    CheckId::CLUSTER_007,
    CheckId::SERVER_014,
    CheckId::META_109,
    CheckId::META_110,
];

/// Judges every server of the group (members and those this poll's extras name): a server
/// whose source answered now (`answered`) is raised when `held` has an entry for it older than
/// `after` (`raise` builds the finding), undecided while younger, clear without one; every other
/// server is undecided.
pub fn judge_held<T>(
    j: &Judged<'_>,
    check: CheckId,
    held: &BTreeMap<String, Since<T>>,
    answered: fn(&ServerExtras) -> bool,
    after: Duration,
    raise: impl Fn(&str, &Since<T>, Duration) -> Finding,
) -> Evaluation {
    let meta = j.meta;
    // In name order, each once (a sorted list: a set of a thousand names cost as much to build
    // and drop as the rest of the check).
    let mut servers: Vec<&str> = meta
        .members
        .iter()
        .map(|m| m.name.as_str())
        .chain(j.extras.keys().map(String::as_str))
        .chain(held.keys().map(String::as_str))
        .collect();
    servers.sort_unstable();
    servers.dedup();
    let mut findings = Vec::new();
    // Keys in name order, made a set once at the end and built only for the undecided: a large
    // group's poll asks a few servers, and inserting the other thousand keys one by one cost
    // more than the rest of the check.
    let mut undecided = Vec::new();
    for server in servers {
        if !j.extras.get(server).is_some_and(answered) {
            undecided.push(server_key(check, meta, server));
            continue;
        }
        let Some(entry) = held.get(server) else {
            continue;
        };
        let age = j.now.duration_since(entry.since).unwrap_or_default();
        if age >= after {
            findings.push(raise(server, entry, age));
        } else {
            undecided.push(server_key(check, meta, server));
        }
    }
    Evaluation::ran(check, meta, findings, undecided.into_iter().collect())
}
