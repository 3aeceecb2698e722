//! Evaluate: META_110 Meta member catching up for long, one finding per member whose own RAFTZ
//! `_meta_` has shown it being caught up by the leader for longer than a minute.

use serde_json::json;

use super::sources::judge_held;
use super::{
    duration_words, seconds, server_key, CheckId, CheckSpec, Evaluation, Finding, Judged,
    Remediation, Setting, Severity,
};
use crate::thresholds::Thresholds;
use crate::time_format::rfc3339;

impl CheckId {
    /// META_110 Meta member catching up for long (this project's own code).
    pub const META_110: CheckId = CheckId::new("META_110");
}

/// META_110 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::META_110,
    name: "Meta member catching up for long",
    severity: Severity::Warning,
    category: "jetstream_meta",
    applies_to: "each meta group member whose RAFTZ was asked (one finding per server)",
    threshold: |t| {
        format!(
            "a member's RAFTZ _meta_ has shown catching_up for {} (every time it was asked)",
            duration_words(t.catching_up_after)
        )
    },
    settings: |t| {
        vec![Setting {
            name: "catching_up_after",
            flag: "--catching-up-after",
            env: "INSIGHTS_CATCHING_UP_AFTER",
            value: duration_words(t.catching_up_after),
            default: duration_words(Thresholds::default().catching_up_after),
        }]
    },
    runbook: include_str!("../../../../runbooks/META_110.md"),
    held_for: None,
    evaluate,
};

/// Raised for a member whose RAFTZ, asked this poll, has shown it catching up since more than
/// `catching_up_after` ago; members not asked this poll are undecided.
pub fn evaluate(j: &Judged<'_>) -> Evaluation {
    let check = CheckId::META_110;
    let meta = j.meta;
    judge_held(
        j,
        check,
        &j.history.extras.catching_up,
        |e| e.raft_meta.is_some(),
        j.thresholds.catching_up_after,
        |server, catching, age| {
            let raft = j.extras.get(server).and_then(|e| e.raft_meta.as_ref());
            Finding {
                check,
                key: server_key(check, meta, server),
                cluster: meta.cluster_of(server),
                domain: meta.domain.clone(),
                server: Some(server.to_string()),
                summary: format!(
                    "{server} has been catching up with the meta leader for {} (its raft layer \
                     says so each time it is asked): until it is done it does not count toward \
                     a quorum the group can rely on.",
                    seconds(age)
                ),
                evidence: json!({
                    "since": rfc3339(catching.since),
                    "committed": raft.map(|r| r.committed),
                    "applied": raft.map(|r| r.applied),
                    "unapplied": catching.last,
                }),
                remediation: vec![
                    Remediation::with_command(
                        format!("Watch {server}'s raft view of the meta group: committed and applied should climb."),
                        format!("nats server request raft --group _meta_ --name {server}"),
                    ),
                    Remediation::step(format!(
                        "Check {server}'s CPU, disk and network (a starved or slow server never \
                         finishes); a very large meta state (META_005) makes snapshots slow."
                    )),
                    Remediation::step(
                        "Do not restart it or another member meanwhile: a restart starts the \
                         catch-up again.",
                    ),
                ],
                // Material: that it is catching up (the figures move on their own).
                fingerprint: "catching_up".to_string(),
            }
        },
    )
}
