//! Evaluate: META_109 Meta quorum beyond the servers that exist, one finding per meta group: the
//! raft layer's own `_meta_` view (RAFTZ) counts more members than there are servers to vote,
//! so that even with every existing server up no leader can be elected.

use std::collections::BTreeSet;

use serde_json::json;

use crate::observe::extras::RaftMeta;

use super::{group_key, CheckId, CheckSpec, Evaluation, Finding, Judged, Remediation, Severity};

impl CheckId {
    /// META_109 Meta quorum beyond the servers that exist (this project's own code: Synadia
    /// Insights publishes none for the raft layer's own count).
    pub const META_109: CheckId = CheckId::new("META_109");
}

/// META_109 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::META_109,
    name: "Meta quorum beyond the servers that exist",
    severity: Severity::Critical,
    category: "jetstream_meta",
    applies_to: "the meta group (one finding per group: per JetStream domain)",
    threshold: |_| {
        "a member's RAFTZ _meta_ lists peers of no server it knows (renamed or retired without \
         peer-remove) and needs a quorum larger than the votes of itself and the peers whose \
         servers answer: no election can win"
            .to_string()
    },
    settings: |_| Vec::new(),
    runbook: include_str!("../../../../runbooks/META_109.md"),
    held_for: None,
    evaluate,
};

/// What one RAFTZ view says about the votes available.
struct Votes<'a> {
    server: &'a str,
    raft: &'a RaftMeta,
    /// Itself and the named peers whose servers answer this poll.
    voters: BTreeSet<&'a str>,
    /// Peers it cannot name.
    unnamed: usize,
}

/// Judged on this poll's RAFTZ answers (the leader's, and one member's in rotation): raised when
/// one lists peers it cannot name and needs more votes than it and the peers whose servers answer
/// can cast; undecided without any answer. Members merely down keep their names, so a plain
/// quorum loss is META_006 alone.
pub fn evaluate(j: &Judged<'_>) -> Evaluation {
    let check = CheckId::META_109;
    let meta = j.meta;
    let key = group_key(check, meta);
    let members: BTreeSet<&str> = meta.members.iter().map(|m| m.name.as_str()).collect();
    let answering: BTreeSet<&str> = meta
        .members
        .iter()
        .filter(|m| m.answered)
        .map(|m| m.name.as_str())
        .chain(meta.non_members.iter().map(String::as_str))
        .collect();
    let views: Vec<Votes<'_>> = j
        .extras
        .iter()
        .filter(|(name, _)| members.contains(name.as_str()))
        .filter_map(|(name, e)| e.raft_meta.as_ref().map(|r| (name.as_str(), r)))
        .filter(|(_, r)| r.size > 0)
        .map(|(server, raft)| Votes {
            server,
            raft,
            voters: raft
                .named
                .iter()
                .map(String::as_str)
                .filter(|n| answering.contains(n))
                .chain([server])
                .collect(),
            unnamed: raft.peers.saturating_sub(raft.named.len()),
        })
        .collect();
    if views.is_empty() {
        return Evaluation::ran(check, meta, Vec::new(), BTreeSet::from([key]));
    }
    let Some(v) = views
        .into_iter()
        .filter(|v| v.unnamed > 0 && v.raft.quorum_needed > v.voters.len())
        .max_by_key(|v| v.raft.quorum_needed - v.voters.len())
    else {
        return Evaluation::ran(check, meta, Vec::new(), BTreeSet::new());
    };
    let (server, raft) = (v.server, v.raft);
    let voters: Vec<&str> = v.voters.iter().copied().collect();
    let finding = Finding {
        check,
        key,
        cluster: None,
        domain: meta.domain.clone(),
        server: None,
        summary: format!(
            "The raft layer of {} needs {} votes for quorum (size {}), but in {server}'s view only \
             {} can vote ({}) and {} peers belong to no server it knows (renamed or retired without \
             peer-remove). Unless servers return under their old names, no leader can be elected.",
            meta.describe_group(),
            raft.quorum_needed,
            raft.size,
            voters.len(),
            voters.join(", "),
            v.unnamed
        ),
        evidence: json!({
            "reported_by": server,
            "raft_size": raft.size,
            "quorum_needed": raft.quorum_needed,
            "voters_answering": voters,
            "named_peers": raft.named,
            "unnamed_peers": v.unnamed,
            "raft_state": raft.state,
            "leader": raft.leader,
        }),
        remediation: vec![
            Remediation::with_command(
                "Read the raft layer's own view of the meta group: size, quorum and each peer's name.",
                format!("nats server request raft --group _meta_ --name {server}"),
            ),
            Remediation::step(
                "With a leader, remove each peer that belongs to no server by its peer id (the \
                 key of the unnamed entries); without one, no peer-remove can be applied: \
                 follow the recovery in runbooks/META_109.md.",
            ),
            Remediation::with_command(
                "Remove a stale peer (only while a leader exists).",
                "nats server cluster peer-remove <peer-id>",
            ),
        ],
        // Material: the figures.
        fingerprint: format!("{}/{}/{}", raft.size, raft.quorum_needed, voters.len()),
    };
    Evaluation::ran(check, meta, vec![finding], BTreeSet::new())
}
