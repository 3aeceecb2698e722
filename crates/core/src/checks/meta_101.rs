//! Evaluate: META_101 Meta member behind, one finding per member that answers but lags.

use std::collections::BTreeSet;

use serde_json::json;

use super::members::{Member, MemberState};
use super::{
    duration_words, seconds, server_key, CheckId, CheckSpec, Evaluation, Finding, Judged,
    Remediation, Setting, Severity, Thresholds,
};

impl CheckId {
    /// META_101 Meta member behind (this project's own code).
    pub const META_101: CheckId = CheckId::new("META_101");
}

/// META_101 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::META_101,
    name: "Meta member behind",
    severity: Severity::Warning,
    category: "jetstream_meta",
    applies_to: "each meta group member that answers (one finding per server)",
    threshold: |t| {
        format!(
            "a member that answers and is not offline is not current in the leader's view, or \
             lags by more than {} operations, for longer than {}",
            t.lag_max,
            duration_words(t.behind_after)
        )
    },
    settings: |t| {
        let d = Thresholds::default();
        vec![
            Setting {
                name: "lag_max",
                flag: "--lag-max",
                env: "INSIGHTS_LAG_MAX",
                value: t.lag_max.to_string(),
                default: d.lag_max.to_string(),
            },
            Setting {
                name: "behind_after",
                flag: "--behind-after",
                env: "INSIGHTS_BEHIND_AFTER",
                value: duration_words(t.behind_after),
                default: duration_words(d.behind_after),
            },
        ]
    },
    runbook: include_str!("../../../../runbooks/META_101.md"),
    held_for: None,
    evaluate,
};

/// Raises one finding per online follower the leader has shown behind for `behind_after`.
/// Offline members are never raised (META_001 covers them); without a leader view nothing can
/// be judged and every member's key is undecided.
pub fn evaluate(j: &Judged<'_>) -> Evaluation {
    let check = CheckId::META_101;
    let meta = j.meta;
    let Some(leader) = meta.leader.as_deref() else {
        let undecided = meta
            .members
            .iter()
            .map(|m| server_key(check, meta, &m.name))
            .collect();
        return Evaluation::ran(check, meta, Vec::new(), undecided);
    };
    let mut findings = Vec::new();
    let mut undecided = BTreeSet::new();
    for member in meta.members.iter().filter(|m| !m.leader) {
        match member.state {
            MemberState::Online => {}
            // Not judged online: META_001 speaks for it, or it cannot be judged this round.
            MemberState::Unknown => {
                undecided.insert(server_key(check, meta, &member.name));
                continue;
            }
            MemberState::Offline(_) => continue,
        }
        // Behind now, or caught up only moments ago (`CATCH_UP_SETTLE`): a starved member
        // looks caught up for a poll now and then.
        let Some(behind) = j.history.behind.get(&member.name) else {
            continue;
        };
        let behind_for = j.now.duration_since(behind.since).unwrap_or_default();
        if behind_for >= j.thresholds.behind_after {
            findings.push(finding(j, leader, member, behind_for));
        }
    }
    Evaluation::ran(check, meta, findings, undecided)
}

fn finding(
    j: &Judged<'_>,
    leader: &str,
    member: &Member,
    behind_for: std::time::Duration,
) -> Finding {
    let check = CheckId::META_101;
    let meta = j.meta;
    let how = if member.lag > j.thresholds.lag_max {
        format!(
            "{} operations behind (more than the {} allowed)",
            member.lag, j.thresholds.lag_max
        )
    } else if member.current == Some(false) {
        format!("not current ({} operations behind)", member.lag)
    } else {
        "caught up only a moment ago".to_string()
    };
    Finding {
        check,
        key: server_key(check, meta, &member.name),
        cluster: member.cluster.clone(),
        domain: meta.domain.clone(),
        server: Some(member.name.clone()),
        summary: format!(
            "Meta member {} of {} answers but has been behind for {}: leader {leader} shows it {how}. \
             It does not count towards quorum until it catches up.",
            meta.member_label(member),
            meta.describe_group(),
            seconds(behind_for),
        ),
        evidence: json!({
            "leader": leader,
            "lag": member.lag,
            "current": member.current,
            "lag_max": j.thresholds.lag_max,
            "behind_for_ms": behind_for.as_millis() as u64,
            "active_ms": member.active.map(|a| a.as_millis() as u64),
        }),
        remediation: vec![
            Remediation::step(format!(
                "If {} restarted a moment ago, give it time: it replays what the group did while it was away.",
                member.name
            )),
            Remediation::with_command(
                format!(
                    "Otherwise check {} for a slow or full disk, CPU starvation or packet loss on its routes, and watch whether its lag falls.",
                    member.name
                ),
                "nats server report jetstream",
            ),
            Remediation::step(
                "Do not peer-remove a member that is catching up; restart it only if its lag never falls.",
            ),
        ],
        // Nothing in it is material once raised: its lag moves every poll.
        fingerprint: String::new(),
    }
}
