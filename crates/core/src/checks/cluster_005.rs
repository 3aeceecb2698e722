//! Evaluate: CLUSTER_005 Routes missing between meta members, one finding per member whose own
//! ROUTEZ lacks a route to another member of its cluster that answers.

use serde_json::json;

use super::sources::judge_held;
use super::{
    duration_words, seconds, server_key, CheckId, CheckSpec, Evaluation, Finding, Judged,
    Remediation, Setting, Severity,
};
use crate::thresholds::Thresholds;
use crate::time_format::rfc3339;

impl CheckId {
    /// CLUSTER_005 Routes missing (Synadia Insights' code for the same condition).
    pub const CLUSTER_005: CheckId = CheckId::new("CLUSTER_005");
}

/// CLUSTER_005 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::CLUSTER_005,
    name: "Routes missing between meta members",
    severity: Severity::Warning,
    category: "cluster",
    applies_to: "each meta group member whose ROUTEZ was asked (one finding per server)",
    threshold: |t| {
        format!(
            "a member's ROUTEZ lists fewer routes to the other members of its cluster that answer \
             than there are such members (members - 1), for {}",
            duration_words(t.routes_missing_after)
        )
    },
    settings: |t| {
        vec![Setting {
            name: "routes_missing_after",
            flag: "--routes-missing-after",
            env: "INSIGHTS_ROUTES_MISSING_AFTER",
            value: duration_words(t.routes_missing_after),
            default: duration_words(Thresholds::default().routes_missing_after),
        }]
    },
    runbook: include_str!("../../../../runbooks/CLUSTER_005.md"),
    held_for: None,
    evaluate,
};

/// Raised for a member whose last ROUTEZ (asked this poll) has lacked routes to answering
/// members of its cluster for `routes_missing_after`; members not asked this poll are undecided.
pub fn evaluate(j: &Judged<'_>) -> Evaluation {
    let check = CheckId::CLUSTER_005;
    let meta = j.meta;
    judge_held(
        j,
        check,
        &j.history.extras.routes_short,
        |e| e.routes.is_some(),
        j.thresholds.routes_missing_after,
        |server, short, age| {
            let missing: Vec<&str> = short.last.iter().map(String::as_str).collect();
            let routes = j
                .extras
                .get(server)
                .and_then(|e| e.routes.as_ref())
                .map_or(0, |r| r.remotes.len());
            Finding {
                check,
                key: server_key(check, meta, server),
                cluster: meta.cluster_of(server),
                domain: meta.domain.clone(),
                server: Some(server.to_string()),
                summary: format!(
                    "{server} has had no route to {} for {}: it reaches {routes} other servers \
                     by route, while {} more members of its cluster answer. The meta group is one \
                     more cut away from a partition (and {server} cannot reach {} directly).",
                    missing.join(", "),
                    seconds(age),
                    missing.len(),
                    missing.join(", ")
                ),
                evidence: json!({
                    "missing": missing,
                    "routes_to": j.extras.get(server).and_then(|e| e.routes.as_ref()).map(|r| &r.remotes),
                    "route_connections": j.extras.get(server).and_then(|e| e.routes.as_ref()).map(|r| r.connections),
                    "since": rfc3339(short.since),
                }),
                remediation: vec![
                    Remediation::with_command(
                        format!("List {server}'s routes and compare with the cluster's servers."),
                        format!("nats server request routes --name {server}"),
                    ),
                    Remediation::step(format!(
                        "Check the network between {server} and {} (firewalls, security groups, \
                         the cluster port) and that every server's `cluster.routes` lists every \
                         other one.",
                        missing.join(", ")
                    )),
                    Remediation::step(
                        "Do not restart or remove meta members until the routes are back: each \
                         one lost may split the group.",
                    ),
                ],
                // Material: who is missing.
                fingerprint: missing.join(","),
            }
        },
    )
}
