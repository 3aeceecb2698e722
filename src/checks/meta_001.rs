//! Evaluate: META_001 Offline meta replica, one finding per offline member.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde_json::json;

use super::members::{Member, MemberState, MetaAssessment, OfflineReason};
use super::{server_key, CheckId, Evaluation, Finding, Outcome, Remediation};

/// Raises one finding per member judged offline; members that cannot be judged are left undecided.
pub fn evaluate(meta: &MetaAssessment, now: SystemTime) -> Evaluation {
    let check = CheckId::Meta001;
    let mut findings = Vec::new();
    let mut undecided = BTreeSet::new();
    for member in &meta.members {
        match &member.state {
            MemberState::Online => {}
            MemberState::Unknown => {
                undecided.insert(server_key(check, meta, &member.name));
            }
            MemberState::Offline(reasons) => findings.push(finding(meta, member, reasons, now)),
        }
    }
    Evaluation {
        check,
        outcome: Outcome::Ran {
            findings,
            undecided,
        },
    }
}

fn finding(
    meta: &MetaAssessment,
    member: &Member,
    reasons: &[OfflineReason],
    now: SystemTime,
) -> Finding {
    let check = CheckId::Meta001;
    let clauses: Vec<String> = reasons.iter().map(|r| r.describe(now)).collect();
    let role = if member.leader {
        "meta leader"
    } else {
        "meta replica"
    };
    let summary = format!(
        "{} {} of cluster {} is offline: {}.",
        role,
        member.name,
        meta.cluster,
        clauses.join("; ")
    );
    let graceful = reasons
        .iter()
        .any(|r| matches!(r, OfflineReason::Departed { .. }));
    let mut remediation = Vec::new();
    if graceful {
        remediation.push(Remediation::step(format!(
            "{} was stopped on purpose; if this is not planned maintenance, start nats-server on it again with the same server_name and store directory.",
            member.name
        )));
    } else {
        remediation.push(Remediation::step(format!(
            "Check whether the nats-server process on {} is running and read its log for a crash or a fatal error; restart it with the same server_name and store directory.",
            member.name
        )));
        remediation.push(Remediation::with_command(
            format!(
                "If it is running, check that its cluster routes reach the other servers ({}).",
                other_members(meta, &member.name)
            ),
            "nats server report jetstream",
        ));
    }
    remediation.push(Remediation::step(format!(
        "Bring back one server at a time: {} of {} members must stay online for the meta group to keep its quorum.",
        meta.quorum_needed, meta.cluster_size
    )));
    Finding {
        check,
        key: server_key(check, meta, &member.name),
        cluster: meta.cluster.clone(),
        domain: meta.domain.clone(),
        server: Some(member.name.clone()),
        summary,
        evidence: json!({
            "server": member.name,
            "peer": member.peer,
            "leader": meta.leader,
            "was_leader": member.leader,
            "answered_poll": member.answered,
            "reasons": reasons,
            "cluster_size": meta.cluster_size,
            "quorum_needed": meta.quorum_needed,
        }),
        remediation,
        // Identity alone is material: a changing reason or `active` is not news.
        fingerprint: member.name.clone(),
    }
}

fn other_members(meta: &MetaAssessment, except: &str) -> String {
    let names: Vec<&str> = meta
        .members
        .iter()
        .map(|m| m.name.as_str())
        .filter(|n| *n != except)
        .collect();
    names.join(", ")
}
