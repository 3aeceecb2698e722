//! Evaluate: META_104 Meta version mismatch, one finding per meta group.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::{group_key, CheckId, CheckSpec, Evaluation, Finding, Judged, Remediation, Severity};

impl CheckId {
    /// META_104 Meta version mismatch (this project's own code).
    pub const META_104: CheckId = CheckId::new("META_104");
}

/// META_104 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::META_104,
    name: "Meta version mismatch",
    severity: Severity::Info,
    category: "jetstream_meta",
    applies_to: "the meta group (one finding per group: per JetStream domain)",
    threshold: |_| {
        "members of the group report different nats-server versions (each from its own reply, \
         or as last seen)"
            .to_string()
    },
    settings: |_| Vec::new(),
    runbook: include_str!("../../../../runbooks/META_104.md"),
    held_for: None,
    evaluate,
};

/// Raised while the members whose version is known do not all run the same one.
pub fn evaluate(j: &Judged<'_>) -> Evaluation {
    let check = CheckId::META_104;
    let meta = j.meta;
    let mut by_version: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for member in &meta.members {
        if let Some(version) = member.version.as_deref() {
            by_version.entry(version).or_default().push(&member.name);
        }
    }
    if by_version.len() < 2 {
        return Evaluation::ran(check, meta, Vec::new(), BTreeSet::new());
    }
    // The majority's version (ties: the highest-sorting, usually the newer release).
    let majority = by_version
        .iter()
        .max_by_key(|(version, servers)| (servers.len(), *version))
        .map(|(version, _)| *version)
        .unwrap_or_default();
    let parts: Vec<String> = by_version
        .iter()
        .map(|(version, servers)| format!("{version} on {}", servers.join(", ")))
        .collect();
    let odd: Vec<&str> = by_version
        .iter()
        .filter(|(version, _)| **version != majority)
        .flat_map(|(_, servers)| servers.iter().copied())
        .collect();
    let finding = Finding {
        check,
        key: group_key(check, meta),
        cluster: None,
        domain: meta.domain.clone(),
        server: None,
        summary: format!(
            "Members of {} run different nats-server versions: {}; {} differ{} from the \
             majority's {majority}. A rolling upgrade in progress is the expected cause: finish \
             it (or roll it back) one server at a time.",
            meta.describe_group(),
            parts.join("; "),
            odd.join(", "),
            if odd.len() == 1 { "s" } else { "" },
        ),
        evidence: json!({
            "versions": by_version,
            "majority": majority,
            "differing": odd,
        }),
        remediation: vec![
            Remediation::with_command(
                "List every server's version.",
                "nats server list",
            ),
            Remediation::step(
                "If an upgrade is under way, continue it: one server at a time, waiting until it is current again before the next, the meta leader last.",
            ),
            Remediation::step(
                "If no upgrade was planned, find how the odd servers were installed (package pinning, images) and bring them to the version the group runs.",
            ),
        ],
        // Material: who runs what.
        fingerprint: by_version
            .iter()
            .map(|(version, servers)| format!("{version}={}", servers.join(",")))
            .collect::<Vec<_>>()
            .join(";"),
    };
    Evaluation::ran(check, meta, vec![finding], BTreeSet::new())
}
