//! Evaluate: SERVER_008 Server crash loop, one finding per meta member restarted three times or
//! more within ten minutes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use super::server_101::RESTART_RAISED_WITHIN;
use super::{
    duration_words, server_key, CheckId, CheckSpec, Evaluation, Finding, Judged, Remediation,
    Severity,
};
use crate::time_format::rfc3339;

impl CheckId {
    /// SERVER_008 Server crash loop (after Synadia Insights' SERVER_008, restarts that repeat).
    pub const SERVER_008: CheckId = CheckId::new("SERVER_008");
}

/// Restarts within [`CRASH_LOOP_WINDOW`] that make a crash loop.
pub const CRASH_LOOP_RESTARTS: usize = 3;

/// The window restarts are counted in.
pub const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(600);

/// SERVER_008 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::SERVER_008,
    name: "Server crash loop",
    severity: Severity::Warning,
    category: "server",
    applies_to: "each meta group member (one finding per server)",
    threshold: |_| {
        format!(
            "a member restarted (a new server id, same version: upgrades not counted) {} times \
             or more within {w}; held until it has run {w} without a restart",
            CRASH_LOOP_RESTARTS,
            w = duration_words(CRASH_LOOP_WINDOW)
        )
    },
    settings: |_| Vec::new(),
    runbook: include_str!("../../../../runbooks/SERVER_008.md"),
    held_for: Some(CRASH_LOOP_WINDOW),
    evaluate,
};

/// Raised for each server with `CRASH_LOOP_RESTARTS` restarts in the last `CRASH_LOOP_WINDOW`,
/// the last within `RESTART_RAISED_WITHIN`; held (`held_for`) until `CRASH_LOOP_WINDOW` after
/// its last restart.
pub fn evaluate(j: &Judged<'_>) -> Evaluation {
    let check = CheckId::SERVER_008;
    let meta = j.meta;
    let from = j.now.checked_sub(CRASH_LOOP_WINDOW).unwrap_or(j.now);
    let fresh = j.now.checked_sub(RESTART_RAISED_WITHIN).unwrap_or(j.now);
    let mut findings = Vec::new();
    for server in j.history.extras.restarts.keys() {
        let recent = j.history.extras.restarts_since(server, from);
        // Raised (or refreshed) by a recent restart only, as SERVER_101.
        if recent.len() < CRASH_LOOP_RESTARTS || recent.last().is_none_or(|r| r.at < fresh) {
            continue;
        }
        let times: Vec<String> = recent.iter().map(|r| rfc3339(r.at)).collect();
        findings.push(Finding {
            check,
            key: server_key(check, meta, server),
            cluster: j
                .history
                .servers
                .get(server)
                .and_then(|r| r.cluster.clone()),
            domain: meta.domain.clone(),
            server: Some(server.clone()),
            summary: format!(
                "{server} restarted {} times within {}: a crash loop. Each restart costs the \
                 meta group a member and, for a leader, an election.",
                recent.len(),
                duration_words(CRASH_LOOP_WINDOW)
            ),
            evidence: json!({
                "restarts": recent.len(),
                "window_seconds": CRASH_LOOP_WINDOW.as_secs(),
                "at": times,
                "version": j.history.servers.get(server).and_then(|r| r.version.clone()),
            }),
            remediation: vec![
                Remediation::step(format!(
                    "Read {server}'s log around each restart and the system's (out of memory \
                     kills, failing liveness probes, panics)."
                )),
                Remediation::step(
                    "A Kubernetes liveness probe on the full /healthz kills servers that are \
                     only catching up: probe /healthz?js-enabled-only=true for liveness.",
                ),
                Remediation::step(
                    "Do not restart or upgrade other members until it stays up: each of its \
                     restarts takes one member away.",
                ),
            ],
            // Material: another restart (the count falling as restarts age out is not news).
            fingerprint: recent.last().map(|r| r.to_id.clone()).unwrap_or_default(),
        });
    }
    Evaluation::ran(check, meta, findings, BTreeSet::new())
}
