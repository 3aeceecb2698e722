//! Serve: the last stage. A NATS micro service (`nats-insights`) answering `$SRV.PING/INFO/STATS`
//! and the `$INSIGHTS.API.*` endpoints from the engine's latest status, never from the network
//! directly. This file is the I/O edge; `api` parses requests and builds responses.

pub mod api;
pub mod catalog;
pub mod preflight;
pub mod recent;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_nats::service::{self, ServiceExt};
use async_nats::Client;
use futures::stream::{self as fstream, StreamExt};
use serde::Serialize;
use tokio::sync::watch;

use crate::checks::{MetaAssessment, Remediation, Severity, Thresholds};
use crate::findings::ActiveSet;
use crate::store::StoreHealth;
use crate::time_format;
use api::{ApiError, Context, Endpoint};

/// Micro service name.
pub const SERVICE_NAME: &str = "nats-insights";
/// Group of the API endpoints.
pub const API_GROUP: &str = "$INSIGHTS.API";
/// Largest request body accepted.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Header on every API reply: the micro service id (`id` of `$SRV.PING.nats-insights`) of the
/// instance that answered, so a client can tell the service's answers from anyone else's.
pub const SERVICE_ID_HEADER: &str = "Nats-Service-Id";
/// `type` of the STATUS response.
pub const STATUS_TYPE: &str = "io.nats.insights.v1.status_response";

/// What the engine knows now; the service answers from the latest one.
#[derive(Debug, Clone, Default)]
pub struct EngineStatus {
    /// Every meta group as last assessed (one per JetStream domain), by group.
    pub meta_groups: Vec<MetaAssessment>,
    /// Servers that answered the last completed poll.
    pub servers_answering: usize,
    /// Recent transitions, resolved findings and leader changes (HISTORY, FINDINGS).
    pub recent: recent::Recent,
    /// Active findings.
    pub active: ActiveSet,
    /// Last completed poll.
    pub last_poll: Option<SystemTime>,
    /// How long it took, in milliseconds.
    pub last_poll_ms: u64,
    /// Bytes of the replies it received.
    pub last_poll_bytes: u64,
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
    /// Each `--alertmanager-url`'s health (empty without one).
    pub alertmanager: Vec<crate::alertmanager::AlertmanagerHealth>,
    /// Whether each meta member has a pinned link (its own view is seen in a partition).
    pub links: Vec<crate::connect::LinkHealth>,
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
    /// Active, or resolved (FINDINGS with `include_resolved`).
    pub state: FindingState,
    /// Affected server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The affected server's own cluster (per-server findings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// JetStream domain of the meta group, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
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
    /// Resolved at (RFC 3339), for resolved findings only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
}

/// Whether a finding is still raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingState {
    /// Raised and not resolved.
    Active,
    /// Resolved recently.
    Resolved,
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
            state: FindingState::Active,
            server: a.finding.server.clone(),
            cluster: a.finding.cluster.clone(),
            domain: a.finding.domain.clone(),
            summary: a.finding.summary.clone(),
            evidence: a.finding.evidence.clone(),
            remediation: a.finding.remediation.clone(),
            revision: a.revision,
            raised_at: time_format::rfc3339(a.raised_at),
            resolved_at: None,
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
    /// The first meta group. Deprecated: read `meta_groups`, which lists every group (one per
    /// JetStream domain); kept for one release.
    pub meta: Option<MetaAssessment>,
    /// Every meta group the service watches, one per JetStream domain.
    pub meta_groups: Vec<MetaAssessment>,
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
    /// Servers that answered it.
    pub servers_answering: usize,
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
    /// Each `--alertmanager-url` and whether alerts reach it (absent without one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alertmanager: Vec<crate::alertmanager::AlertmanagerHealth>,
    /// Each meta member and whether a pinned link reaches it; one without has partition
    /// detection degraded.
    pub links: Vec<crate::connect::LinkHealth>,
}

/// Builds the STATUS response.
pub fn status_response(
    status: &EngineStatus,
    instance: &Instance,
    now: SystemTime,
) -> StatusResponse {
    let findings = finding_views(&status.active);
    let overall = match findings.iter().map(|f| f.severity).min() {
        _ if status.meta_groups.is_empty() => "unknown",
        Some(Severity::Critical) => "critical",
        Some(Severity::Warning) => "warning",
        _ => "ok",
    };
    StatusResponse {
        kind: STATUS_TYPE,
        status: overall,
        instance: instance.id.clone(),
        version: crate::VERSION,
        timestamp: time_format::rfc3339(now),
        uptime_ms: now
            .duration_since(instance.started)
            .unwrap_or_default()
            .as_millis() as u64,
        meta: status.meta_groups.first().cloned(),
        meta_groups: status.meta_groups.clone(),
        findings,
        service: ServiceHealth {
            last_poll: status.last_poll.map(time_format::rfc3339),
            last_poll_ms: status.last_poll_ms,
            servers_answering: status.servers_answering,
            skipped: status.skipped.clone(),
            polls: status.polls,
            events: status.events.clone(),
            malformed: status.malformed,
            store: status.store.clone(),
            alertmanager: status.alertmanager.clone(),
            links: status.links.clone(),
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

/// Refused requests by endpoint and error code, shared with the `$SRV.STATS` handler.
type Rejections = Arc<Mutex<BTreeMap<Endpoint, BTreeMap<u16, u64>>>>;

fn rejections_of(rejections: &Rejections, endpoint: Endpoint) -> BTreeMap<u16, u64> {
    let guard = match rejections.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    guard.get(&endpoint).cloned().unwrap_or_default()
}

fn count_rejection(rejections: &Rejections, endpoint: Endpoint, code: u16) {
    let mut guard = match rejections.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    *guard.entry(endpoint).or_default().entry(code).or_default() += 1;
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Passes a valid GROUP.FORGET request on to every instance (this one included): the micro
/// service's queue group delivered it to this instance only.
async fn forget_everywhere(
    client: &Client,
    payload: &[u8],
    status: &EngineStatus,
) -> Result<(), ApiError> {
    let (group, _) = api::forget_group(payload, status, SystemTime::now())?;
    let body = serde_json::to_vec(&api::ForgetRequest {
        domain: Some(group.label().to_string()),
    })
    .map_err(|e| ApiError::Internal(format!("cannot encode: {e}")))?;
    client
        .publish(api::FORGET_SUBJECT, body.into())
        .await
        .map_err(|e| ApiError::Internal(format!("cannot tell the instances: {e}")))?;
    client
        .flush()
        .await
        .map_err(|e| ApiError::Internal(format!("cannot tell the instances: {e}")))?;
    tracing::info!(group = %group, "forgetting a retired meta group, as asked");
    Ok(())
}

/// Starts the micro service and answers requests until the status channel closes.
pub async fn serve(
    client: Client,
    instance: Instance,
    status: watch::Receiver<Arc<EngineStatus>>,
    thresholds: Thresholds,
) -> Result<(), ServiceError> {
    let rejections: Rejections = Arc::default();
    let stats_status = status.clone();
    let stats_rejections = rejections.clone();
    let stats_instance = instance.clone();
    let service = client
        .service_builder()
        .description("Watches the JetStream meta group and reports findings")
        .metadata(
            [
                ("instance".to_string(), instance.id.clone()),
                // Lets peers prefer the longest-running instance as the one that publishes
                // while the state store cannot arbitrate.
                ("started".to_string(), unix_ms(instance.started).to_string()),
            ]
            .into_iter()
            .collect(),
        )
        .stats_handler(move |name, _| {
            let current = stats_status.borrow().clone();
            let rejected = Endpoint::from_name(&name)
                .map(|e| rejections_of(&stats_rejections, e))
                .unwrap_or_default();
            serde_json::to_value(api::stats_data(&current, &stats_instance, &rejected))
                .unwrap_or_default()
        })
        .start(SERVICE_NAME, crate::VERSION)
        .await
        .map_err(ServiceError::Start)?;
    let service_id = service.info().await.id;
    let group = service.group(API_GROUP);
    let mut streams = Vec::new();
    for endpoint in Endpoint::ALL {
        let requests = group
            .endpoint_builder()
            .name(endpoint.name())
            .metadata(
                [(
                    "response_type".to_string(),
                    endpoint.response_type().to_string(),
                )]
                .into_iter()
                .collect(),
            )
            .add(endpoint.token())
            .await
            .map_err(ServiceError::Start)?;
        streams.push(requests.map(move |request| (endpoint, request)).boxed());
    }
    let mut requests = fstream::select_all(streams);
    let mut closed = status.clone();
    loop {
        tokio::select! {
            request = requests.next() => {
                let Some((endpoint, request)) = request else { break };
                let current = status.borrow().clone();
                let ctx = Context {
                    status: &current,
                    instance: &instance,
                    thresholds: &thresholds,
                    now: SystemTime::now(),
                };
                let max_payload = client.server_info().max_payload;
                let reply = api::handle(endpoint, &request.message.payload, ctx).and_then(|body| {
                    if max_payload > 0 && body.len() > max_payload {
                        Err(ApiError::Internal(format!(
                            "the response is {} bytes, over the server's max_payload of {max_payload}: ask for fewer with \"limit\"",
                            body.len()
                        )))
                    } else {
                        Ok(body)
                    }
                });
                let reply = match (endpoint, reply) {
                    (Endpoint::GroupForget, Ok(body)) => {
                        forget_everywhere(&client, &request.message.payload, &current).await.map(|()| body)
                    }
                    (_, reply) => reply,
                };
                let reply = reply.map(bytes::Bytes::from).map_err(|error| {
                    tracing::debug!(endpoint = endpoint.name(), code = error.code(), %error, "request refused");
                    count_rejection(&rejections, endpoint, error.code());
                    service::error::Error { status: error.description(), code: usize::from(error.code()) }
                });
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(SERVICE_ID_HEADER, service_id.as_str());
                if let Err(error) = request.respond_with_headers(reply, headers).await {
                    tracing::debug!(endpoint = endpoint.name(), %error, "cannot answer a request");
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
