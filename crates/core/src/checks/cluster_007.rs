//! Evaluate: CLUSTER_007 Gateway lost, one finding per meta group member whose own GATEWAYZ
//! has no outbound gateway to another cluster of its supercluster that answers.

use serde_json::json;

use super::sources::judge_held;
use super::{
    duration_words, seconds, server_key, CheckId, CheckSpec, Evaluation, Finding, Judged,
    Remediation, Setting, Severity,
};
use crate::thresholds::Thresholds;
use crate::time_format::rfc3339;

impl CheckId {
    /// CLUSTER_007 Gateway lost (Synadia Insights' code for the same condition).
    pub const CLUSTER_007: CheckId = CheckId::new("CLUSTER_007");
}

/// CLUSTER_007 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::CLUSTER_007,
    name: "Gateway lost",
    severity: Severity::Warning,
    category: "cluster",
    applies_to:
        "each meta group member of a supercluster whose GATEWAYZ was asked (one finding per server)",
    threshold: |t| {
        format!(
            "a member's GATEWAYZ has had no outbound gateway connection to a cluster the \
             supercluster's GATEWAYZ replies name (own names, outbound and inbound gateways), \
             for {}",
            duration_words(t.gateway_lost_after)
        )
    },
    settings: |t| {
        vec![Setting {
            name: "gateway_lost_after",
            flag: "--gateway-lost-after",
            env: "INSIGHTS_GATEWAY_LOST_AFTER",
            value: duration_words(t.gateway_lost_after),
            default: duration_words(Thresholds::default().gateway_lost_after),
        }]
    },
    runbook: include_str!("../../../../runbooks/CLUSTER_007.md"),
    held_for: None,
    evaluate,
};

/// Raised for a member whose GATEWAYZ, asked this poll, has lacked an outbound gateway to an
/// answering cluster for `gateway_lost_after`; members not asked this poll are undecided.
pub fn evaluate(j: &Judged<'_>) -> Evaluation {
    let check = CheckId::CLUSTER_007;
    let meta = j.meta;
    judge_held(
        j,
        check,
        &j.history.extras.gateways_down,
        |e| e.gateways.is_some(),
        j.thresholds.gateway_lost_after,
        |server, down, age| {
            let clusters: Vec<&str> = down.last.iter().map(String::as_str).collect();
            let own = meta.cluster_of(server);
            Finding {
                check,
                key: server_key(check, meta, server),
                cluster: own.clone(),
                domain: meta.domain.clone(),
                server: Some(server.to_string()),
                summary: format!(
                    "{server}{} has had no outbound gateway to cluster {} for {}: its messages \
                     to that cluster, meta traffic included, have no path of their own.",
                    own.as_deref()
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default(),
                    clusters.join(", "),
                    seconds(age)
                ),
                evidence: json!({
                    "missing": clusters,
                    "outbound": j.extras.get(server).and_then(|e| e.gateways.as_ref()).map(|g| &g.outbound),
                    "since": rfc3339(down.since),
                }),
                remediation: vec![
                    Remediation::with_command(
                        format!("List {server}'s gateways."),
                        format!("nats server request gateways --name {server}"),
                    ),
                    Remediation::step(format!(
                        "Check the network from {server} to the gateway port of {} (firewalls, \
                         load balancers, DNS of the gateway URLs) and the gateway block's `name` \
                         and `gateways` on both sides.",
                        clusters.join(", ")
                    )),
                    Remediation::step(
                        "Keep meta leadership where most members are reachable; do not move it \
                         across the lost gateway.",
                    ),
                ],
                // Material: which clusters.
                fingerprint: clusters.join(","),
            }
        },
    )
}
