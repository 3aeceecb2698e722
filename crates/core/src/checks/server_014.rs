//! Evaluate: SERVER_014 JetStream health failing, one finding per member whose own HEALTHZ
//! (`js-meta-only`) has reported JetStream unhealthy.

use serde_json::json;

use super::sources::judge_held;
use super::{
    duration_words, seconds, server_key, CheckId, CheckSpec, Evaluation, Finding, Judged,
    Remediation, Setting, Severity,
};
use crate::thresholds::Thresholds;
use crate::time_format::rfc3339;

impl CheckId {
    /// SERVER_014 JetStream health failing (Synadia Insights' code for the same condition).
    pub const SERVER_014: CheckId = CheckId::new("SERVER_014");
}

/// SERVER_014 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::SERVER_014,
    name: "JetStream health failing",
    severity: Severity::Critical,
    category: "server",
    applies_to: "each meta group member whose HEALTHZ was asked (one finding per server)",
    threshold: |t| {
        format!(
            "a member's HEALTHZ (js-meta-only) has reported JetStream unhealthy (no contact with \
             a meta leader, not current with it, still recovering, a meta write error) for {}",
            duration_words(t.health_failing_after)
        )
    },
    settings: |t| {
        vec![Setting {
            name: "health_failing_after",
            flag: "--health-failing-after",
            env: "INSIGHTS_HEALTH_FAILING_AFTER",
            value: duration_words(t.health_failing_after),
            default: duration_words(Thresholds::default().health_failing_after),
        }]
    },
    runbook: include_str!("../../../../runbooks/SERVER_014.md"),
    held_for: None,
    evaluate,
};

/// Raised for a member whose HEALTHZ, asked this poll, has failed for `health_failing_after`;
/// members not asked this poll are undecided.
pub fn evaluate(j: &Judged<'_>) -> Evaluation {
    let check = CheckId::SERVER_014;
    let meta = j.meta;
    judge_held(
        j,
        check,
        &j.history.extras.unhealthy,
        |e| e.health.is_some(),
        j.thresholds.health_failing_after,
        |server, failing, age| {
            let health = j.extras.get(server).and_then(|e| e.health.as_ref());
            Finding {
                check,
                key: server_key(check, meta, server),
                cluster: meta.cluster_of(server),
                domain: meta.domain.clone(),
                server: Some(server.to_string()),
                summary: format!(
                    "{server} has reported its JetStream unhealthy for {}: \"{}\". It cannot \
                     serve JetStream requests that need the meta layer.",
                    seconds(age),
                    failing.last
                ),
                evidence: json!({
                    "error": failing.last,
                    "status": health.map(|h| &h.status),
                    "status_code": health.map(|h| h.status_code),
                    "since": rfc3339(failing.since),
                }),
                remediation: vec![
                    Remediation::with_command(
                        format!("Ask {server} for its JetStream health."),
                        format!("nats server request healthz --name {server} --js-meta-only"),
                    ),
                    Remediation::step(
                        "\"not established contact with a meta leader\": the group has no leader \
                         or this server cannot reach it; see META_006, META_001 and CLUSTER_005.",
                    ),
                    Remediation::step(
                        "\"not current with the meta leader\" or \"recovering\": it is catching \
                         up; watch that it ends. A write or apply error: check its disk and logs.",
                    ),
                ],
                // Material: what it says.
                fingerprint: failing.last.clone(),
            }
        },
    )
}
