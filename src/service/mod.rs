//! Serve: the last stage. A NATS micro service (`nats-insights`) answering `$SRV.PING/INFO/STATS`
//! and `$INSIGHTS.API.STATUS` from the engine's latest status, never from the network directly.

use std::sync::Arc;
use std::time::SystemTime;

use async_nats::service::{self, ServiceExt};
use async_nats::Client;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::watch;

use crate::checks::{MetaAssessment, Remediation, Severity};
use crate::findings::ActiveSet;
use crate::store::StoreHealth;
use crate::time_format;

/// Micro service name.
pub const SERVICE_NAME: &str = "nats-insights";
/// Group of the API endpoints.
pub const API_GROUP: &str = "$INSIGHTS.API";
/// Largest request body accepted.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// What the engine knows now; the service answers from the latest one.
#[derive(Debug, Clone, Default)]
pub struct EngineStatus {
    /// The meta group as last assessed.
    pub meta: Option<MetaAssessment>,
    /// Active findings.
    pub active: ActiveSet,
    /// Last completed poll.
    pub last_poll: Option<SystemTime>,
    /// How long it took, in milliseconds.
    pub last_poll_ms: u64,
    /// Why checks were skipped in the last round, if they were.
    pub skipped: Option<String>,
    /// Polls done.
    pub polls: u64,
    /// Events received, by kind.
    pub events: std::collections::BTreeMap<String, u64>,
    /// Malformed inputs (replies and events) seen.
    pub malformed: u64,
    /// Where state is kept and whether it answers.
    pub store: StoreHealth,
}

/// Identity of this instance.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Unique per process.
    pub id: String,
    /// When it started.
    pub started: SystemTime,
}

/// One active finding as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FindingView {
    /// Stable key.
    pub finding: String,
    /// Check id.
    pub check: String,
    /// Check name.
    pub name: String,
    /// Severity.
    pub severity: Severity,
    /// Affected server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Cluster.
    pub cluster: String,
    /// Summary.
    pub summary: String,
    /// Latest evidence.
    pub evidence: serde_json::Value,
    /// Remediation.
    pub remediation: Vec<Remediation>,
    /// Revision of the last event.
    pub revision: u64,
    /// Raised at (RFC 3339).
    pub raised_at: String,
}

/// Active findings in API form, most severe first.
pub fn finding_views(active: &ActiveSet) -> Vec<FindingView> {
    let mut views: Vec<FindingView> = active
        .values()
        .map(|a| FindingView {
            finding: a.finding.key.clone(),
            check: a.finding.check.as_str().to_string(),
            name: a.finding.check.name().to_string(),
            severity: a.finding.check.severity(),
            server: a.finding.server.clone(),
            cluster: a.finding.cluster.clone(),
            summary: a.finding.summary.clone(),
            evidence: a.finding.evidence.clone(),
            remediation: a.finding.remediation.clone(),
            revision: a.revision,
            raised_at: time_format::rfc3339(a.raised_at),
        })
        .collect();
    views.sort_by(|a, b| (a.severity, &a.finding).cmp(&(b.severity, &b.finding)));
    views
}

/// The STATUS response (`schemas/status_response.json`).
#[derive(Debug, Serialize)]
pub struct StatusResponse {
    /// `io.nats.insights.v1.status_response`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `ok`, `warning`, `critical`, or `unknown` before the meta group was seen.
    pub status: &'static str,
    /// Instance id.
    pub instance: String,
    /// Version.
    pub version: &'static str,
    /// Now (RFC 3339).
    pub timestamp: String,
    /// Process uptime in milliseconds.
    pub uptime_ms: u64,
    /// The meta group.
    pub meta: Option<MetaAssessment>,
    /// Active findings.
    pub findings: Vec<FindingView>,
    /// Health of the service itself.
    pub service: ServiceHealth,
}

/// The service's own health in STATUS.
#[derive(Debug, Serialize)]
pub struct ServiceHealth {
    /// Last completed poll (RFC 3339).
    pub last_poll: Option<String>,
    /// Its duration.
    pub last_poll_ms: u64,
    /// Why checks could not run, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Polls done.
    pub polls: u64,
    /// Events received by kind.
    pub events: std::collections::BTreeMap<String, u64>,
    /// Malformed inputs seen.
    pub malformed: u64,
    /// Where state is kept and whether it answers.
    pub store: StoreHealth,
}

/// Builds the STATUS response.
pub fn status_response(
    status: &EngineStatus,
    instance: &Instance,
    now: SystemTime,
) -> StatusResponse {
    let findings = finding_views(&status.active);
    let overall = match findings.iter().map(|f| f.severity).min() {
        _ if status.meta.is_none() => "unknown",
        Some(Severity::Critical) => "critical",
        Some(Severity::Warning) => "warning",
        _ => "ok",
    };
    StatusResponse {
        kind: "io.nats.insights.v1.status_response",
        status: overall,
        instance: instance.id.clone(),
        version: crate::VERSION,
        timestamp: time_format::rfc3339(now),
        uptime_ms: now
            .duration_since(instance.started)
            .unwrap_or_default()
            .as_millis() as u64,
        meta: status.meta.clone(),
        findings,
        service: ServiceHealth {
            last_poll: status.last_poll.map(time_format::rfc3339),
            last_poll_ms: status.last_poll_ms,
            skipped: status.skipped.clone(),
            polls: status.polls,
            events: status.events.clone(),
            malformed: status.malformed,
            store: status.store.clone(),
        },
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Registering the micro service or an endpoint failed.
    #[error("cannot start the {SERVICE_NAME} micro service: {0}")]
    Start(async_nats::Error),
}

/// A request body that failed validation: (code, description).
pub type Rejection = (usize, String);

/// Validates an optional JSON object body.
pub fn parse_request(
    payload: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, Rejection> {
    if payload.len() > MAX_REQUEST_BYTES {
        return Err((
            413,
            format!("request body exceeds {MAX_REQUEST_BYTES} bytes"),
        ));
    }
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err((400, "request body must be a JSON object".to_string())),
        Err(e) => Err((400, format!("request body is not valid JSON: {e}"))),
    }
}

/// Answers `$INSIGHTS.API.EXPLAIN` (`{"check": "META_006"}`) with the check's runbook.
pub fn explain(payload: &[u8]) -> Result<bytes::Bytes, Rejection> {
    let request = parse_request(payload)?;
    let check = match request.get("check") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => {
            return Err((
                400,
                "\"check\" must be a string such as \"META_001\"".to_string(),
            ))
        }
        None => {
            return Err((
                400,
                "missing \"check\": send {\"check\": \"META_001\"}".to_string(),
            ))
        }
    };
    if let Some(unknown) = request.keys().find(|k| k.as_str() != "check") {
        return Err((400, format!("unknown field \"{unknown}\"")));
    }
    let id = crate::checks::CheckId::parse(&check).ok_or_else(|| {
        (
            404,
            format!(
                "unknown check {check}; known: {}",
                crate::checks::CheckId::ALL.map(|c| c.as_str()).join(", ")
            ),
        )
    })?;
    serde_json::to_vec(&crate::runbook::runbook(id))
        .map(Into::into)
        .map_err(|e| (500, e.to_string()))
}

/// The instance ids of every nats-insights instance that answers `$SRV.PING.nats-insights` within
/// `wait` (each one's micro service carries its instance id in its metadata).
pub async fn live_instances(client: &Client, wait: std::time::Duration) -> Vec<String> {
    let inbox = client.new_inbox();
    let Ok(mut replies) = client.subscribe(inbox.clone()).await else {
        return Vec::new();
    };
    if client
        .publish_with_reply(format!("$SRV.PING.{SERVICE_NAME}"), inbox, "".into())
        .await
        .is_err()
    {
        return Vec::new();
    }
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, replies.next()).await {
        if let Ok(ping) = serde_json::from_slice::<serde_json::Value>(&msg.payload) {
            if let Some(id) = ping["metadata"]["instance"].as_str() {
                ids.push(id.to_string());
            }
        }
    }
    ids
}

/// Starts the micro service and answers requests until the status channel closes.
pub async fn serve(
    client: Client,
    instance: Instance,
    status: watch::Receiver<Arc<EngineStatus>>,
) -> Result<(), ServiceError> {
    let service = client
        .service_builder()
        .description("Watches the JetStream meta group and reports findings")
        .metadata(
            [("instance".to_string(), instance.id.clone())]
                .into_iter()
                .collect(),
        )
        .start(SERVICE_NAME, crate::VERSION)
        .await
        .map_err(ServiceError::Start)?;
    let group = service.group(API_GROUP);
    let mut status_endpoint = group
        .endpoint("STATUS")
        .await
        .map_err(ServiceError::Start)?;
    let mut explain_endpoint = group
        .endpoint("EXPLAIN")
        .await
        .map_err(ServiceError::Start)?;
    let mut closed = status.clone();
    loop {
        tokio::select! {
            request = explain_endpoint.next() => {
                let Some(request) = request else { break };
                let reply = explain(&request.message.payload)
                    .map_err(|(code, status)| service::error::Error { status, code });
                if let Err(error) = request.respond(reply).await {
                    tracing::warn!(%error, "cannot answer an EXPLAIN request");
                }
            }
            request = status_endpoint.next() => {
                let Some(request) = request else { break };
                let current = status.borrow().clone();
                let reply = match parse_request(&request.message.payload) {
                    Ok(_) => serde_json::to_vec(&status_response(&current, &instance, SystemTime::now()))
                        .map(Into::into)
                        .map_err(|e| service::error::Error { status: e.to_string(), code: 500 }),
                    Err((code, status)) => Err(service::error::Error { status, code }),
                };
                if let Err(error) = request.respond(reply).await {
                    tracing::warn!(%error, "cannot answer a STATUS request");
                }
            }
            changed = closed.changed() => {
                if changed.is_err() { break; }
            }
        }
    }
    if let Err(error) = service.stop().await {
        tracing::debug!(%error, "stopping the micro service");
    }
    Ok(())
}
