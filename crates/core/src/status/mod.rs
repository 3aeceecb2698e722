//! Status: what the engine knows now ([`EngineStatus`]), written by the engine and read by the
//! API, the page, the metrics and the Alertmanager sender; and the STATUS response built from it.
//! Plain data, below every stage that shows it.

pub mod recent;

use std::time::SystemTime;

use serde::Serialize;

use crate::checks::{MetaAssessment, Remediation, Severity};
use crate::findings::ActiveSet;
use crate::time_format;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertmanagerHealth {
    /// The alerts endpoint (no credentials).
    pub url: String,
    /// `pending` (nothing sent yet), `ok` (the last send succeeded) or `failing`.
    pub state: &'static str,
    /// Alerts the last successful send carried.
    pub alerts: usize,
    /// Successful sends.
    pub sends: u64,
    /// Failed sends.
    pub failures: u64,
    /// Failed sends since the last success.
    pub consecutive_failures: u32,
    /// When a send last succeeded (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    /// Why the last send failed, while failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The store's health, for STATUS and heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StoreHealth {
    /// No `--state-server`: state lives in this process only and is lost on restart.
    #[default]
    Memory,
    /// Reads and writes succeed.
    Healthy {
        /// Bucket name.
        bucket: String,
    },
    /// The last operation failed; findings are still published, state waits in a backlog.
    Degraded {
        /// Bucket name.
        bucket: String,
        /// Since when.
        #[serde(with = "crate::time_format")]
        since: SystemTime,
        /// The last error.
        error: String,
        /// Records waiting to be written.
        backlog: usize,
    },
}
/// Whether one meta member has a pinned link (STATUS `service.links`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkHealth {
    /// Member (server name).
    pub server: String,
    /// True when a pinned link reaches it: its own view is asked on it even when its routes
    /// are cut.
    pub direct: bool,
    /// The link is up now (a link whose server is down reconnects to it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
    /// Where the link's address came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<LinkSource>,
    /// The link's address, without credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Without a link: why (partition detection is degraded for this member).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
/// Where a pinned link's address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkSource {
    /// A `--server` URL.
    Given,
    /// The servers' INFO `connect_urls`.
    ConnectUrls,
    /// The server's own VARZ (its client host and port).
    Varz,
    /// Its VARZ port at the address its peers' ROUTEZ show for it (it listens on every address).
    Routez,
}
/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}
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
    pub alertmanager: Vec<AlertmanagerHealth>,
    /// Whether each meta member has a pinned link (its own view is seen in a partition).
    pub links: Vec<LinkHealth>,
    /// Other instances of this deployment (HA peers) heard within the peer liveness window.
    pub ha_peers: usize,
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
    pub alertmanager: Vec<AlertmanagerHealth>,
    /// Each meta member and whether a pinned link reaches it; one without has partition
    /// detection degraded.
    pub links: Vec<LinkHealth>,
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

impl AlertmanagerHealth {
    /// An endpoint nothing was sent to yet.
    pub fn pending(url: &str) -> AlertmanagerHealth {
        AlertmanagerHealth {
            url: url.to_string(),
            state: "pending",
            alerts: 0,
            sends: 0,
            failures: 0,
            consecutive_failures: 0,
            last_success: None,
            last_error: None,
        }
    }
}
