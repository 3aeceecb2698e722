//! Evaluate: META_001 Offline meta replica, one finding per offline member.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde_json::json;

use super::members::{Member, MemberState, MetaAssessment, OfflineReason};
use super::{
    duration_words, peer_remove_command, server_key, stepdown_to_cluster_command, CheckId,
    CheckSpec, Evaluation, Finding, Remediation, Setting, Severity,
};

impl CheckId {
    /// META_001 Offline meta replica.
    pub const META_001: CheckId = CheckId::new("META_001");
}

/// META_001 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::META_001,
    name: "Offline meta replica",
    severity: Severity::Critical,
    category: "jetstream_meta",
    applies_to: "each meta group member (one finding per server)",
    threshold: |t| {
        format!(
            "a member announced a shutdown or lame duck, the leader flags it offline, the leader \
             has not heard from it for {}, or it stopped answering both the JSZ gather and a \
             direct request",
            duration_words(t.offline_after)
        )
    },
    settings: |t| vec![Setting::offline_after(t)],
    runbook: include_str!("../../../../runbooks/META_001.md"),
    held_for: None,
    evaluate: |j| evaluate(j.meta, j.now),
};

/// Raises one finding per member judged offline; members that cannot be judged are left undecided.
pub fn evaluate(meta: &MetaAssessment, now: SystemTime) -> Evaluation {
    let check = CheckId::META_001;
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
    Evaluation::ran(check, meta, findings, undecided)
}

fn finding(
    meta: &MetaAssessment,
    member: &Member,
    reasons: &[OfflineReason],
    now: SystemTime,
) -> Finding {
    let check = CheckId::META_001;
    let clauses: Vec<String> = reasons.iter().map(|r| r.describe(now)).collect();
    let role = if member.leader {
        "meta leader"
    } else {
        "meta replica"
    };
    let peer = member.peer.as_deref().unwrap_or("<peer-id>");
    let summary = if member.name_unknown {
        format!(
            "Meta peer {peer} ({}) of {} is a probable stale peer: no live server carries its name, so it was most likely renamed or decommissioned without being removed from the meta group, which still counts it ({} members, {} needed for quorum).",
            known_as(member),
            meta.describe_group(),
            meta.cluster_size,
            meta.quorum_needed
        )
    } else {
        format!(
            "{} {} of {} is offline: {}.",
            role,
            meta.member_label(member),
            meta.describe_group(),
            clauses.join("; ")
        )
    };
    // In a supercluster, a cluster with no member online is lost as a whole (a site, a
    // gateway): say so in every one of its members' findings.
    let summary = match meta
        .clusters
        .iter()
        .find(|c| Some(&c.cluster) == member.cluster.as_ref())
    {
        Some(c) if meta.is_supercluster() && c.online == 0 && c.members > 1 => format!(
            "{summary} All {} members of cluster {} are offline.",
            c.members, c.cluster
        ),
        _ => summary,
    };
    let graceful = reasons
        .iter()
        .any(|r| matches!(r, OfflineReason::Departed { .. }));
    let mut remediation = Vec::new();
    if member.name_unknown {
        remediation.push(Remediation::step(format!(
            "Confirm that no server will come back as {}: a renamed server now runs under a new name, a retired one is gone for good.",
            known_as(member)
        )));
        remediation.push(Remediation::with_command(
            "Remove the stale peer so the meta group stops counting it (only once it is gone for good; this cannot be undone by restarting it). With no meta leader, first follow the META_006 recovery.",
            peer_remove_command(peer),
        ));
    } else if graceful {
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
                "If it is running, check that its links to the other members are up ({}): cluster routes, the gateways of a supercluster, or the leaf connection of a leaf node.",
                other_members(meta, &member.name)
            ),
            "nats server report jetstream",
        ));
    }
    if member.leader && member.answered {
        // A leader cut off from its followers keeps claiming leadership: in a supercluster,
        // placement moves leadership to a cluster whose members are healthy.
        if let Some(target) = healthy_cluster(meta, member.cluster.as_deref()) {
            remediation.push(Remediation::with_command(
                format!("Move meta leadership to cluster {target}, whose members are all online."),
                stepdown_to_cluster_command(target),
            ));
        }
    }
    remediation.push(Remediation::step(format!(
        "Bring back one server at a time: {} of {} members must stay online for the meta group to keep its quorum.",
        meta.quorum_needed, meta.cluster_size
    )));
    Finding {
        check,
        key: server_key(check, meta, &member.name),
        cluster: member.cluster.clone(),
        domain: meta.domain.clone(),
        server: Some(member.name.clone()),
        summary,
        evidence: json!({
            "server": member.name,
            "server_cluster": member.cluster,
            "peer": member.peer,
            "leader": meta.leader,
            "was_leader": member.leader,
            "stale_peer": member.name_unknown,
            "answered_poll": member.answered,
            "reasons": reasons,
            "cluster_size": meta.cluster_size,
            "quorum_needed": meta.quorum_needed,
        }),
        remediation,
        // Identity is material, and so is learning it is stale, or that it announced its stop
        // (the remedy changes: a shutdown event processed just after the poll that raised the
        // finding must still reach the operator); a changing reason or `active` is not news.
        fingerprint: if member.name_unknown {
            format!("{}:stale", member.name)
        } else if graceful {
            format!("{}:stopped", member.name)
        } else {
            member.name.clone()
        },
    }
}

/// In a supercluster, another cluster all of whose members are online.
fn healthy_cluster<'a>(meta: &'a MetaAssessment, except: Option<&str>) -> Option<&'a str> {
    if !meta.is_supercluster() {
        return None;
    }
    // A standalone leaf node takes its own name as cluster name and never leads: only clusters
    // of several servers can take leadership by placement.
    meta.clusters
        .iter()
        .find(|c| Some(c.cluster.as_str()) != except && c.members > 1 && c.online == c.members)
        .map(|c| c.cluster.as_str())
}

/// How to name a member no live server carries.
fn known_as(member: &Member) -> String {
    if member.name.starts_with("peer-") {
        "name no longer known".to_string()
    } else {
        format!("last known as {}", member.name)
    }
}

/// The first few other members by name, for a remediation sentence: a group of a thousand
/// servers must not put a thousand names in every finding.
fn other_members(meta: &MetaAssessment, except: &str) -> String {
    const SHOWN: usize = 5;
    let shown: Vec<&str> = meta
        .members
        .iter()
        .map(|m| m.name.as_str())
        .filter(|n| *n != except)
        .take(SHOWN)
        .collect();
    // Members are in name order: whether `except` is one of them is found by bisection, and
    // the rest counted without walking a thousand-member list once per finding.
    let listed = meta
        .members
        .binary_search_by(|m| m.name.as_str().cmp(except))
        .is_ok();
    match meta.members.len() - usize::from(listed) - shown.len() {
        0 => shown.join(", "),
        rest => format!("{} and {rest} more", shown.join(", ")),
    }
}
