//! Evaluate: SERVER_101 Server restarted, one finding per meta member that came back under a new
//! server id (same version) within the last five minutes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use super::{
    duration_words, server_key, CheckId, CheckSpec, Evaluation, Finding, Judged, Remediation,
    Severity,
};
use crate::time_format::rfc3339;

impl CheckId {
    /// SERVER_101 Server restarted (this project's own code: Synadia Insights publishes no code
    /// for a single restart, only for restarts that repeat, SERVER_008).
    pub const SERVER_101: CheckId = CheckId::new("SERVER_101");
}

/// How long a restart stays raised (`held_for`: from when its finding last changed).
pub const RESTART_HOLD: Duration = Duration::from_secs(300);

/// How recent a restart must be to be raised (or its finding refreshed): a restart is seen at
/// the first poll the new process answers. An older one in the history (loaded from the bucket,
/// written by another instance on its own clock) raises nothing anew: by the time another
/// instance's hold has ended on its clock, this one's would otherwise raise it again on a clock
/// a few seconds behind.
pub const RESTART_RAISED_WITHIN: Duration = Duration::from_secs(60);

/// SERVER_101 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::SERVER_101,
    name: "Server restarted",
    severity: Severity::Info,
    category: "server",
    applies_to: "each meta group member (one finding per server)",
    threshold: |_| {
        format!(
            "a member answered under a new server id with the same nats-server version (a \
             restart, not an upgrade) within the last {}",
            duration_words(RESTART_HOLD)
        )
    },
    settings: |_| Vec::new(),
    runbook: include_str!("../../../../runbooks/SERVER_101.md"),
    held_for: Some(RESTART_HOLD),
    evaluate,
};

/// Raised for each server whose last restart is younger than `RESTART_RAISED_WITHIN`, and held
/// (`held_for`) until `RESTART_HOLD` after.
pub fn evaluate(j: &Judged<'_>) -> Evaluation {
    let check = CheckId::SERVER_101;
    let meta = j.meta;
    let from = j.now.checked_sub(RESTART_HOLD).unwrap_or(j.now);
    let fresh = j.now.checked_sub(RESTART_RAISED_WITHIN).unwrap_or(j.now);
    let mut findings = Vec::new();
    for (server, restarts) in &j.history.extras.restarts {
        let Some(last) = restarts.last().filter(|r| r.at >= fresh) else {
            continue;
        };
        let recent = restarts.iter().filter(|r| r.at >= from).count();
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
                "{server} restarted: it answered as a new process (server id {}) at {}, with \
                 the same nats-server version, so not an upgrade.",
                last.to_id,
                rfc3339(last.at)
            ),
            evidence: json!({
                "at": rfc3339(last.at),
                "from_id": last.from_id,
                "to_id": last.to_id,
                "restarts_in_hold": recent,
                "version": j.history.servers.get(server).and_then(|r| r.version.clone()),
            }),
            remediation: vec![
                Remediation::step(format!(
                    "If nobody restarted {server} on purpose, read its log and the system's \
                     (out of memory kills, panics) from before {}.",
                    rfc3339(last.at)
                )),
                Remediation::step(
                    "Repeated restarts raise SERVER_008 (crash loop); META_101 shows whether it \
                     caught up with the meta group.",
                ),
            ],
            // Material: which process.
            fingerprint: last.to_id.clone(),
        });
    }
    Evaluation::ran(check, meta, findings, BTreeSet::new())
}
