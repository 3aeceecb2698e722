//! Evaluate: META_006 Meta quorum lost, one finding per meta group.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde_json::json;

use super::members::{offline_members, offline_names, MemberState, MetaAssessment};
use super::{
    group_key, peer_remove_command, seconds, CheckId, CheckSpec, Evaluation, Finding, Remediation,
    Setting, Severity,
};
use crate::history::History;

impl CheckId {
    /// META_006 Meta quorum lost.
    pub const META_006: CheckId = CheckId::new("META_006");
}

/// META_006 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::META_006,
    name: "Meta quorum lost",
    severity: Severity::Critical,
    category: "jetstream_meta",
    applies_to: "the meta group (one finding per group: per JetStream domain)",
    threshold: |_| {
        "fewer members are online than quorum_needed (same rule as META_001); a group with \
         quorum online but no leader is META_106"
            .to_string()
    },
    settings: |t| vec![Setting::offline_after(t)],
    runbook: include_str!("../../../../runbooks/META_006.md"),
    held_for: None,
    evaluate: |j| evaluate(j.meta, j.history, j.now),
};

/// Raised when the members online (judged as for META_001) are fewer than the quorum. A group
/// without a leader whose quorum is online is not this: META_106 times it.
pub fn evaluate(meta: &MetaAssessment, history: &History, now: SystemTime) -> Evaluation {
    let check = CheckId::META_006;
    let online = meta.members.iter().filter(|m| m.online()).count();
    let leaderless_for = history
        .leaderless_since
        .and_then(|since| now.duration_since(since).ok());
    let findings = if online < meta.quorum_needed {
        vec![finding(meta, online, leaderless_for, now)]
    } else {
        Vec::new()
    };
    Evaluation::ran(check, meta, findings, BTreeSet::new())
}

/// The recovery when stale peers (renamed or retired members never removed) hold quorum hostage.
fn stale_recovery(
    meta: &MetaAssessment,
    stale: &[&super::members::Member],
    online: usize,
) -> Vec<Remediation> {
    let missing = meta.quorum_needed.saturating_sub(online).max(1);
    let old_names: Vec<&str> = stale.iter().map(|m| m.name.as_str()).collect();
    let mut steps = vec![Remediation::with_command(
        format!(
            "The group counts {} members and needs {} for quorum, but only {} answer: {} stale peer(s) ({}) are renamed or retired servers that were never removed.",
            meta.cluster_size,
            meta.quorum_needed,
            online,
            stale.len(),
            old_names.join(", ")
        ),
        "nats server report jetstream",
    )];
    let donor = meta.non_members.first().cloned();
    let bring_back = match &donor {
        Some(d) => format!(
            "Stop {d} (it answers but is not a member) and start it again under an old name ({}) with the same store directory, so {} more member(s) answer and a leader can be elected.",
            old_names.join(" or "),
            missing
        ),
        None => format!(
            "Start {} server(s) under an old name ({}) with its store directory so {} of {} members answer and a leader can be elected.",
            missing,
            old_names.join(" or "),
            meta.quorum_needed,
            meta.cluster_size
        ),
    };
    steps.push(Remediation::step(bring_back));
    for member in stale {
        if let Some(peer) = &member.peer {
            steps.push(Remediation::with_command(
                format!(
                    "Once a leader is elected, remove stale peer {peer} ({}) so the group stops counting it.",
                    member.name
                ),
                peer_remove_command(peer),
            ));
        }
    }
    steps.push(Remediation::step(
        "Then rename the temporary server back, one at a time. In future rename one server at a time and remove its old peer before starting the next.",
    ));
    steps
}

fn finding(
    meta: &MetaAssessment,
    online: usize,
    leaderless_for: Option<std::time::Duration>,
    now: SystemTime,
) -> Finding {
    let check = CheckId::META_006;
    let offline = offline_names(meta);
    let silent: Vec<&str> = meta
        .members
        .iter()
        .filter(|m| !m.answered)
        .map(|m| m.name.as_str())
        .collect();
    let answered = meta.members.iter().filter(|m| m.answered).count();
    let unknown: Vec<&str> = meta
        .members
        .iter()
        .filter(|m| m.state == MemberState::Unknown)
        .map(|m| m.name.as_str())
        .collect();
    let offline_list: Vec<&str> = offline.iter().map(String::as_str).collect();
    let missing = meta.quorum_needed.saturating_sub(online);
    let mut summary = format!(
        "{} has lost quorum: {} of {} members online, {} needed",
        capitalized(&meta.describe_group()),
        online,
        meta.cluster_size,
        meta.quorum_needed
    );
    if !offline_list.is_empty() {
        summary.push_str(&format!(" ({} offline)", offline_list.join(", ")));
    }
    let losses = cluster_losses(meta);
    if !losses.is_empty() {
        summary.push_str(&format!("; {}", losses.join(", ")));
    }
    match (meta.leader.as_deref(), leaderless_for) {
        (None, Some(d)) => summary.push_str(&format!("; no meta leader for {}", seconds(d))),
        (None, None) => summary.push_str("; no meta leader"),
        (Some(l), _) => summary.push_str(&format!("; {l} still claims leadership")),
    }
    summary.push('.');

    let stale: Vec<&super::members::Member> =
        meta.members.iter().filter(|m| m.name_unknown).collect();
    let mut remediation = Vec::new();
    if !stale.is_empty() {
        remediation.extend(stale_recovery(meta, &stale, online));
    } else if offline_list.is_empty() {
        remediation.push(Remediation::step(format!(
            "No member is known to be down, but {} could not be reached this round: check the servers and this monitor's connections to them.",
            unknown.join(", ")
        )));
    } else {
        remediation.push(Remediation::step(format!(
            "Start the offline members again ({}), one at a time, with their original server_name and store directory: {} more must rejoin for {} of {} members to answer.",
            offline_list.join(", "),
            missing.max(1),
            meta.quorum_needed,
            meta.cluster_size
        )));
    }
    remediation.push(Remediation::with_command(
        "Confirm which servers answer and which leader each reports.",
        "nats server report jetstream",
    ));
    remediation.push(Remediation::step(
        "Do not peer-remove members that can come back, and do not restart the servers that are still up: until quorum returns the JetStream API cannot create, update or delete anything.",
    ));

    let stale_names: Vec<String> = stale.iter().map(|m| m.name.clone()).collect();
    let offline_detail: Vec<serde_json::Value> = offline_members(meta)
        .map(|m| {
            let reasons = match &m.state {
                MemberState::Offline(r) => r.iter().map(|r| r.describe(now)).collect(),
                _ => Vec::new(),
            };
            json!({"name": m.name, "peer": m.peer, "reasons": reasons})
        })
        .collect();
    Finding {
        check,
        key: group_key(check, meta),
        cluster: None,
        domain: meta.domain.clone(),
        server: None,
        summary,
        evidence: json!({
            "expected_members": meta.cluster_size,
            "quorum_needed": meta.quorum_needed,
            "members_answered": answered,
            "members_online": online,
            "offline": offline_detail,
            "not_answering": silent,
            "undetermined": unknown,
            "stale_peers": stale_names,
            "live_non_members": meta.non_members,
            "leader": meta.leader,
            "clusters": meta.clusters,
            "leaderless_for_ms": leaderless_for.map(|d| d.as_millis() as u64),
        }),
        remediation,
        // Material: the set of offline members.
        fingerprint: offline_list.join(","),
    }
}

/// In a supercluster, what each cluster that has members offline lost: `c2 lost all 3
/// members`, `c1 lost 1 of 3 members`.
fn cluster_losses(meta: &MetaAssessment) -> Vec<String> {
    if !meta.is_supercluster() {
        return Vec::new();
    }
    meta.clusters
        .iter()
        // A one-server cluster (a standalone leaf node) is named among the offline members.
        .filter(|c| c.online < c.members && c.members > 1)
        .map(|c| match c.online {
            0 => format!("{} lost all {} members", c.cluster, c.members),
            online => format!(
                "{} lost {} of {} members",
                c.cluster,
                c.members - online,
                c.members
            ),
        })
        .collect()
}

/// `cluster C1` → `Cluster C1`, for the start of a sentence.
pub(crate) fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::checks::members::leaderless_assessment;
    use crate::checks::Outcome;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn findings(online: &[&str], offline: &[&str], leaderless_for: u64) -> Vec<Finding> {
        let meta = leaderless_assessment(online, offline);
        let history = History {
            leaderless_since: Some(t(0)),
            ..History::default()
        };
        match evaluate(&meta, &history, t(leaderless_for)).outcome {
            Outcome::Ran { findings, .. } => findings,
            Outcome::Skipped { reason } => panic!("skipped: {reason}"),
            Outcome::Retired => panic!("retired"),
        }
    }

    #[test]
    fn no_leader_with_every_member_online_is_no_quorum_loss_however_long() {
        for secs in [5, 15, 600] {
            assert!(
                findings(&["n1", "n2", "n3"], &[], secs).is_empty(),
                "{secs}"
            );
        }
    }

    #[test]
    fn fewer_online_than_the_quorum_is_quorum_lost_with_the_missing_members() {
        let f = findings(&["n1"], &["n2", "n3"], 5);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].summary.starts_with(
                "Cluster C1 has lost quorum: 1 of 3 members online, 2 needed (n2, n3 offline)"
            ),
            "{}",
            f[0].summary
        );
        assert_eq!(f[0].fingerprint, "n2,n3");
        assert!(f[0].remediation[0]
            .step
            .contains("Start the offline members again (n2, n3)"));
    }
}
