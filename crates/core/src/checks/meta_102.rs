//! Evaluate: META_102 Meta group size changed, one finding per meta group.

use std::collections::BTreeSet;

use serde_json::json;

use super::{
    duration_words, group_key, peer_remove_command, CheckId, CheckSpec, Evaluation, Finding,
    Judged, Remediation, Setting, Severity, Thresholds,
};
use crate::history::{SizeChange, StalePeer};
use crate::time_format::rfc3339;

impl CheckId {
    /// META_102 Meta group size changed (this project's own code).
    pub const META_102: CheckId = CheckId::new("META_102");
}

/// META_102 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::META_102,
    name: "Meta group size changed",
    severity: Severity::Warning,
    category: "jetstream_meta",
    applies_to: "the meta group (one finding per group: per JetStream domain)",
    threshold: |t| {
        format!(
            "the leader's cluster_size changed (a peer was removed, a server joined or was \
             renamed) within the last {}, and is not back to where it was",
            duration_words(t.size_change_hold)
        )
    },
    settings: |t| {
        vec![Setting {
            name: "size_change_hold",
            flag: "--size-change-hold",
            env: "INSIGHTS_SIZE_CHANGE_HOLD",
            value: duration_words(t.size_change_hold),
            default: duration_words(Thresholds::default().size_change_hold),
        }]
    },
    runbook: include_str!("../../../../runbooks/META_102.md"),
    held_for: None,
    evaluate,
};

/// Raised from a change of the leader's `cluster_size` until `size_change_hold` has passed
/// without another change, or the size is back to what it was before the first of the recent
/// changes. Changes are taken together: a removal followed by a join within the hold is one
/// finding about both.
pub fn evaluate(j: &Judged<'_>) -> Evaluation {
    let check = CheckId::META_102;
    let meta = j.meta;
    let history = j.history;
    let Some(size) = history.size.as_ref() else {
        return Evaluation::ran(
            check,
            meta,
            Vec::new(),
            BTreeSet::from([group_key(check, meta)]),
        );
    };
    let last = history.size_changes.last();
    let recent = last.is_some_and(|c| {
        j.now.duration_since(c.at).unwrap_or_default() < j.thresholds.size_change_hold
    });
    if !recent {
        return Evaluation::ran(check, meta, Vec::new(), BTreeSet::new());
    }
    // The run of changes each within the hold of the next: one episode of resizing.
    let mut first = history.size_changes.len() - 1;
    while first > 0 {
        let (earlier, later) = (
            &history.size_changes[first - 1],
            &history.size_changes[first],
        );
        if later.at.duration_since(earlier.at).unwrap_or_default() >= j.thresholds.size_change_hold
        {
            break;
        }
        first -= 1;
    }
    let run = &history.size_changes[first..];
    let from = run[0].from;
    if from == size.size {
        return Evaluation::ran(check, meta, Vec::new(), BTreeSet::new());
    }
    Evaluation::ran(
        check,
        meta,
        vec![finding(j, run, from, size.size)],
        BTreeSet::new(),
    )
}

fn finding(j: &Judged<'_>, run: &[SizeChange], from: usize, to: usize) -> Finding {
    let check = CheckId::META_102;
    let meta = j.meta;
    let mut left: BTreeSet<&str> = BTreeSet::new();
    let mut joined: BTreeSet<&str> = BTreeSet::new();
    for change in run {
        for name in &change.left {
            if !joined.remove(name.as_str()) {
                left.insert(name);
            }
        }
        for name in &change.joined {
            if !left.remove(name.as_str()) {
                joined.insert(name);
            }
        }
    }
    let stale: &[StalePeer] = run.last().map(|c| c.stale.as_slice()).unwrap_or_default();
    let list = |names: &BTreeSet<&str>| names.iter().copied().collect::<Vec<_>>().join(", ");
    let direction = if to > from { "grew" } else { "shrank" };
    let mut summary = format!(
        "The meta group of {} {direction} from {from} to {to} members (quorum {}) at {}",
        meta.describe_group(),
        to / 2 + 1,
        rfc3339(run[run.len() - 1].at)
    );
    match (left.is_empty(), joined.is_empty()) {
        (false, false) => summary.push_str(&format!(
            ": {} left, {} joined.",
            list(&left),
            list(&joined)
        )),
        (false, true) => summary.push_str(&format!(": {} left.", list(&left))),
        (true, false) => summary.push_str(&format!(": {} joined.", list(&joined))),
        (true, true) => summary.push('.'),
    }
    let grew_without_leaving = to > from && left.is_empty();
    let mut remediation = Vec::new();
    if grew_without_leaving {
        let who = if stale.is_empty() {
            "the old identity of any renamed server".to_string()
        } else {
            stale
                .iter()
                .map(|p| format!("{}, peer id {}", p.name, p.peer))
                .collect::<Vec<_>>()
                .join("; ")
        };
        summary.push_str(&format!(
            " No member left: if a server was renamed or rebuilt, its old peer ({who}) still \
             holds a quorum slot and must be peer-removed."
        ));
        // A member listed without a name is removed by its bare peer id, never by a name.
        let targets: Vec<&str> = match stale.is_empty() {
            true => vec!["<peer id>"],
            false => stale.iter().map(|p| p.peer.as_str()).collect(),
        };
        for target in targets {
            remediation.push(Remediation::with_command(
                "If the new member replaces a renamed or rebuilt server, remove the old peer once it is gone for good (it still counts towards quorum).",
                peer_remove_command(target),
            ));
        }
    } else if to < from {
        remediation.push(Remediation::with_command(
            "Check that the removal was planned: the removed server's own advisory names it, and the audit log says who called $JS.API.SERVER.REMOVE.",
            "nats sub '$JS.EVENT.ADVISORY.SERVER.REMOVED'",
        ));
    }
    remediation.push(Remediation::with_command(
        "Confirm the membership and size the group should have.",
        "nats server report jetstream",
    ));
    if to % 2 == 0 {
        remediation.push(Remediation::step(
            "The group now has an even number of members, which tolerates no more failures than one member fewer (META_103).",
        ));
    }
    Finding {
        check,
        key: group_key(check, meta),
        cluster: None,
        domain: meta.domain.clone(),
        server: None,
        summary,
        evidence: json!({
            "from": from,
            "to": to,
            "left": left,
            "joined": joined,
            "stale": stale,
            "changes": run,
            "hold": duration_words(j.thresholds.size_change_hold),
        }),
        remediation,
        // Material: where the size went and who moved.
        fingerprint: format!(
            "{to}|-{}|+{}",
            list(&left).replace(' ', ""),
            list(&joined).replace(' ', "")
        ),
    }
}
