//! Serve: the API's pure half. Validates request bodies and builds every endpoint's response from
//! the engine's latest status; no NATS here, so each rule is unit-tested without a server.

pub mod catalog;
pub mod preflight;

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::checks::{CheckId, Severity, Thresholds};
use crate::findings::TransitionKind;
use crate::history::ChangeSource;
use crate::observe::{GroupId, DEFAULT_GROUP_LABEL};
use crate::status::{
    finding_views, status_response, EngineStatus, FindingState, FindingView, Instance, STATUS_TYPE,
};
use crate::time_format;
use crate::wire::{FindingEvent, API_GROUP, MAX_REQUEST_BYTES};

/// `type` of the FINDINGS response.
pub const FINDINGS_TYPE: &str = "io.nats.insights.v1.findings_response";
/// `type` of the HISTORY response.
pub const HISTORY_TYPE: &str = "io.nats.insights.v1.history_response";
/// `limit` when a request gives none.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 1000;

/// The endpoints of `$INSIGHTS.API`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    /// The meta group now and the service's health.
    Status,
    /// Active (and optionally recently resolved) findings.
    Findings,
    /// The check catalog with the configured thresholds.
    Checks,
    /// Recent finding transitions and meta leader changes.
    History,
    /// A check's runbook.
    Explain,
    /// May this server go down, be removed or renamed now; is the group whole again?
    Preflight,
    /// Forget a meta group retired on purpose (`GROUP.FORGET`): every instance drops its memory
    /// and resolves its findings.
    GroupForget,
}

impl Endpoint {
    /// Every endpoint, in the order they are registered.
    pub const ALL: [Endpoint; 7] = [
        Endpoint::Status,
        Endpoint::Findings,
        Endpoint::Checks,
        Endpoint::History,
        Endpoint::Explain,
        Endpoint::Preflight,
        Endpoint::GroupForget,
    ];

    /// The endpoint's name, also the last token of its subject.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Status => "STATUS",
            Endpoint::Findings => "FINDINGS",
            Endpoint::Checks => "CHECKS",
            Endpoint::History => "HISTORY",
            Endpoint::Explain => "EXPLAIN",
            Endpoint::Preflight => "PREFLIGHT",
            Endpoint::GroupForget => "GROUP_FORGET",
        }
    }

    /// Its subject within `$INSIGHTS.API` (its name, but `GROUP.FORGET`).
    pub fn token(self) -> &'static str {
        match self {
            Endpoint::GroupForget => "GROUP.FORGET",
            other => other.name(),
        }
    }

    /// Its full subject, e.g. `$INSIGHTS.API.STATUS`.
    pub fn subject(self) -> String {
        format!("{}.{}", API_GROUP, self.token())
    }

    /// The `type` of its successful responses.
    pub fn response_type(self) -> &'static str {
        match self {
            Endpoint::Status => STATUS_TYPE,
            Endpoint::Findings => FINDINGS_TYPE,
            Endpoint::Checks => catalog::CHECKS_TYPE,
            Endpoint::History => HISTORY_TYPE,
            Endpoint::Explain => crate::runbook::EXPLAIN_TYPE,
            Endpoint::Preflight => preflight::PREFLIGHT_TYPE,
            Endpoint::GroupForget => FORGET_TYPE,
        }
    }

    /// The endpoint whose name this is.
    pub fn from_name(name: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// Why a request was refused; becomes a micro error reply (`Nats-Service-Error-Code`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, unknown fields, wrong types, values out of range.
    #[error("{0}")]
    BadRequest(String),
    /// A check id that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A body over `MAX_REQUEST_BYTES`.
    #[error("request body is {0} bytes; the limit is {MAX_REQUEST_BYTES}")]
    TooLarge(usize),
    /// The response could not be produced or sent.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The micro error code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::TooLarge(_) => 413,
            ApiError::Internal(_) => 500,
        }
    }

    /// The description for the `Nats-Service-Error` header (one line).
    pub fn description(&self) -> String {
        self.to_string().replace(['\r', '\n'], " ")
    }
}

/// Decodes an optional JSON object body into `T`: empty means defaults; anything else must be an
/// object whose fields `T` knows, with the right types.
pub fn parse_body<T: DeserializeOwned + Default>(payload: &[u8]) -> Result<T, ApiError> {
    if payload.len() > MAX_REQUEST_BYTES {
        return Err(ApiError::TooLarge(payload.len()));
    }
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "request body must be a JSON object (or empty for the defaults)".to_string(),
        ));
    }
    T::deserialize(value).map_err(|e| ApiError::BadRequest(format!("invalid request: {e}")))
}

/// A body that takes no fields (STATUS, CHECKS): empty or `{}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

/// FINDINGS request as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingsRequest {
    /// Only this check, e.g. `META_001`.
    pub check: Option<String>,
    /// Only this severity.
    pub severity: Option<String>,
    /// Also list recently resolved findings.
    pub include_resolved: Option<bool>,
    /// At most this many (1..=1000, default 50).
    pub limit: Option<u64>,
}

/// FINDINGS request once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingsQuery {
    /// Check filter.
    pub check: Option<CheckId>,
    /// Severity filter.
    pub severity: Option<Severity>,
    /// Include recently resolved findings.
    pub include_resolved: bool,
    /// At most this many.
    pub limit: usize,
}

/// HISTORY request as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    /// At most this many entries (1..=1000, default 50).
    pub limit: Option<u64>,
}

/// EXPLAIN request as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// The check, e.g. `META_006`.
    pub check: Option<String>,
}

/// `type` of the GROUP.FORGET response.
pub const FORGET_TYPE: &str = "io.nats.insights.v1.group_forget_response";

/// Where a GROUP.FORGET request is passed on to every instance (the API's queue group reaches
/// one): `{"domain": "<label>"}`, each instance's engine forgets the group.
pub const FORGET_SUBJECT: &str = "$INSIGHTS.HA.FORGET";

/// GROUP.FORGET request as sent (also the broadcast on [`FORGET_SUBJECT`]).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetRequest {
    /// The group's JetStream domain, `default` for the unnamed domain.
    pub domain: Option<String>,
}

impl ForgetRequest {
    /// The group named, or a 400 without one.
    pub fn group(&self) -> Result<GroupId, ApiError> {
        match self.domain.as_deref().map(str::trim) {
            None | Some("") => Err(ApiError::BadRequest(
                "missing \"domain\": send {\"domain\": \"edge\"} (\"default\" for the unnamed domain)"
                    .to_string(),
            )),
            Some(DEFAULT_GROUP_LABEL) => Ok(GroupId::of(None)),
            Some(domain) => Ok(GroupId::of(Some(domain))),
        }
    }
}

/// The GROUP.FORGET response (`schemas/group_forget_response.json`): what every instance is
/// told to forget.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForgetResponse {
    /// `io.nats.insights.v1.group_forget_response`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Now (RFC 3339).
    pub timestamp: String,
    /// The group forgotten (its domain, `default` for the unnamed one).
    pub group: String,
    /// Its JetStream domain, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Its members as last known.
    pub members: Vec<String>,
    /// Since when it was unheard, if it was (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unheard_since: Option<String>,
    /// Its active findings, which every instance resolves.
    pub findings: Vec<String>,
}

/// Validates a GROUP.FORGET request against the groups the service knows: the group and what
/// forgetting it drops, or a 404 naming the known groups.
pub fn forget_group(
    payload: &[u8],
    status: &EngineStatus,
    now: SystemTime,
) -> Result<(GroupId, ForgetResponse), ApiError> {
    let group = parse_body::<ForgetRequest>(payload)?.group()?;
    let Some(meta) = status.meta_groups.iter().find(|m| m.group == group) else {
        let known: Vec<&str> = status.meta_groups.iter().map(|m| m.group.label()).collect();
        return Err(ApiError::NotFound(format!(
            "unknown meta group {}; known: {}",
            group.label(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    };
    let findings = status
        .active
        .values()
        .filter(|a| GroupId::of(a.finding.domain.as_deref()) == group)
        .map(|a| a.finding.key.clone())
        .collect();
    let response = ForgetResponse {
        kind: FORGET_TYPE.to_string(),
        timestamp: time_format::rfc3339(now),
        group: group.label().to_string(),
        domain: group.domain().map(str::to_string),
        members: meta.members.iter().map(|m| m.name.clone()).collect(),
        unheard_since: meta.unheard_since.map(time_format::rfc3339),
        findings,
    };
    Ok((group, response))
}

/// A check id or a 404 naming the known ones.
pub fn parse_check(text: &str) -> Result<CheckId, ApiError> {
    CheckId::parse(text).ok_or_else(|| {
        ApiError::NotFound(format!(
            "unknown check {text}; known: {}",
            CheckId::all()
                .into_iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// A severity (case-insensitive) or a 400 naming the known ones.
pub fn parse_severity(text: &str) -> Result<Severity, ApiError> {
    [Severity::Critical, Severity::Warning, Severity::Info]
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(text))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown severity {text}; known: critical, warning, info"
            ))
        })
}

fn parse_limit(limit: Option<u64>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => Ok(n as usize),
        Some(n) => Err(ApiError::BadRequest(format!(
            "limit {n} is out of range: use 1 to {MAX_LIMIT}"
        ))),
    }
}

impl FindingsRequest {
    /// Validates the filters.
    pub fn validate(self) -> Result<FindingsQuery, ApiError> {
        Ok(FindingsQuery {
            check: self.check.as_deref().map(parse_check).transpose()?,
            severity: self.severity.as_deref().map(parse_severity).transpose()?,
            include_resolved: self.include_resolved.unwrap_or(false),
            limit: parse_limit(self.limit)?,
        })
    }
}

/// The FINDINGS response (`schemas/findings_response.json`).
#[derive(Debug, Serialize)]
pub struct FindingsResponse {
    /// `io.nats.insights.v1.findings_response`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Now (RFC 3339).
    pub timestamp: String,
    /// Findings matching the filters before `limit` was applied.
    pub total: usize,
    /// Active findings (most severe first), then resolved ones (newest first) if asked for.
    pub findings: Vec<FindingView>,
}

/// Builds the FINDINGS response.
pub fn findings_response(
    status: &EngineStatus,
    query: &FindingsQuery,
    now: SystemTime,
) -> FindingsResponse {
    let mut all = finding_views(&status.active);
    if query.include_resolved {
        all.extend(status.recent.resolved.iter().rev().map(|t| {
            let event = FindingEvent::from_transition(t, "");
            FindingView {
                finding: event.finding,
                check: event.check.as_str().to_string(),
                name: event.name,
                severity: event.severity,
                state: FindingState::Resolved,
                server: event.server,
                cluster: event.cluster,
                domain: event.domain,
                summary: t.finding.summary.clone(),
                evidence: event.evidence,
                remediation: event.remediation,
                revision: event.revision,
                raised_at: event.raised_at,
                resolved_at: event.resolved_at,
            }
        }));
    }
    let matching: Vec<FindingView> = all
        .into_iter()
        .filter(|f| query.check.is_none_or(|c| f.check == c.as_str()))
        .filter(|f| query.severity.is_none_or(|s| f.severity == s))
        .collect();
    FindingsResponse {
        kind: FINDINGS_TYPE,
        timestamp: time_format::rfc3339(now),
        total: matching.len(),
        findings: matching.into_iter().take(query.limit).collect(),
    }
}

/// One entry of HISTORY.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HistoryEntry {
    /// A finding was raised, updated or resolved (the event that was published).
    Finding {
        /// When (RFC 3339).
        at: String,
        /// `raised`, `updated` or `resolved`.
        event: TransitionKind,
        /// Finding key.
        finding: String,
        /// Check id.
        check: CheckId,
        /// Severity.
        severity: Severity,
        /// The affected server's own cluster (per-server findings).
        #[serde(skip_serializing_if = "Option::is_none")]
        cluster: Option<String>,
        /// JetStream domain of the meta group, when set.
        #[serde(skip_serializing_if = "Option::is_none")]
        domain: Option<String>,
        /// Affected server, for per-server findings.
        #[serde(skip_serializing_if = "Option::is_none")]
        server: Option<String>,
        /// Revision of the event.
        revision: u64,
        /// The event's summary.
        summary: String,
        /// When the finding's episode was raised (RFC 3339), so that an update or a resolve
        /// still says when its episode began once the raise has left the list.
        raised_at: String,
    },
    /// The meta leader changed.
    LeaderChange {
        /// When it was seen (RFC 3339).
        at: String,
        /// The previous leader.
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        /// The new leader.
        to: String,
        /// What revealed it first.
        source: ChangeSource,
        /// JetStream domain of the meta group, when set.
        #[serde(skip_serializing_if = "Option::is_none")]
        domain: Option<String>,
    },
}

/// The HISTORY response (`schemas/history_response.json`).
#[derive(Debug, Serialize)]
pub struct HistoryResponse {
    /// `io.nats.insights.v1.history_response`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Now (RFC 3339).
    pub timestamp: String,
    /// Entries held before `limit` was applied.
    pub total: usize,
    /// Newest first.
    pub entries: Vec<HistoryEntry>,
}

/// Builds the HISTORY response: transitions and leader changes merged, newest first.
pub fn history_response(status: &EngineStatus, limit: usize, now: SystemTime) -> HistoryResponse {
    let recent = &status.recent;
    let mut timed: Vec<(SystemTime, HistoryEntry)> = recent
        .transitions
        .iter()
        .map(|t| {
            let event = FindingEvent::from_transition(t, "");
            (
                t.at,
                HistoryEntry::Finding {
                    at: event.timestamp,
                    event: event.event,
                    finding: event.finding,
                    check: event.check,
                    severity: event.severity,
                    cluster: event.cluster,
                    domain: event.domain,
                    server: event.server,
                    revision: event.revision,
                    summary: event.summary,
                    raised_at: event.raised_at,
                },
            )
        })
        .chain(recent.leader_changes.iter().map(|c| {
            (
                c.at,
                HistoryEntry::LeaderChange {
                    at: time_format::rfc3339(c.at),
                    from: c.from.clone(),
                    to: c.to.clone(),
                    source: c.source,
                    domain: c.domain.clone(),
                },
            )
        }))
        .collect();
    // Stable: entries at the same instant keep their recorded order, then the whole is reversed.
    timed.sort_by_key(|(at, _)| *at);
    let total = timed.len();
    HistoryResponse {
        kind: HISTORY_TYPE,
        timestamp: time_format::rfc3339(now),
        total,
        entries: timed
            .into_iter()
            .rev()
            .take(limit)
            .map(|(_, e)| e)
            .collect(),
    }
}

/// The service's own counters, in each endpoint's `data` of `$SRV.STATS`
/// (`schemas/stats_data.json`).
#[derive(Debug, Clone, Serialize)]
pub struct StatsData {
    /// Instance id.
    pub instance: String,
    /// Polls done.
    pub polls: u64,
    /// Last completed poll (RFC 3339), null before the first.
    pub last_poll: Option<String>,
    /// Its duration in milliseconds.
    pub last_poll_ms: u64,
    /// Servers that answered the last poll.
    pub servers_answering: usize,
    /// Meta events received, all kinds.
    pub events: u64,
    /// Malformed inputs (replies and events) seen.
    pub malformed: u64,
    /// Active findings.
    pub active_findings: usize,
    /// This endpoint's refused requests by error code.
    pub rejected: BTreeMap<String, u64>,
}

/// Builds one endpoint's stats `data`.
pub fn stats_data(
    status: &EngineStatus,
    instance: &Instance,
    rejected: &BTreeMap<u16, u64>,
) -> StatsData {
    StatsData {
        instance: instance.id.clone(),
        polls: status.polls,
        last_poll: status.last_poll.map(time_format::rfc3339),
        last_poll_ms: status.last_poll_ms,
        servers_answering: status.servers_answering,
        events: status.events.values().sum(),
        malformed: status.malformed,
        active_findings: status.active.len(),
        rejected: rejected
            .iter()
            .map(|(code, n)| (code.to_string(), *n))
            .collect(),
    }
}

/// What a request is answered from.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The engine's latest status.
    pub status: &'a EngineStatus,
    /// This instance.
    pub instance: &'a Instance,
    /// The thresholds the checks run with.
    pub thresholds: &'a Thresholds,
    /// Now.
    pub now: SystemTime,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::Internal(format!("cannot encode: {e}")))
}

/// Answers one request: the JSON body of the reply, or the error to reply with.
pub fn handle(endpoint: Endpoint, payload: &[u8], ctx: Context<'_>) -> Result<Vec<u8>, ApiError> {
    match endpoint {
        Endpoint::Status => {
            parse_body::<NoFields>(payload)?;
            encode(&status_response(ctx.status, ctx.instance, ctx.now))
        }
        Endpoint::Findings => {
            let query = parse_body::<FindingsRequest>(payload)?.validate()?;
            encode(&findings_response(ctx.status, &query, ctx.now))
        }
        Endpoint::Checks => {
            parse_body::<NoFields>(payload)?;
            encode(&catalog::checks_response(
                ctx.thresholds,
                &ctx.status.active,
            ))
        }
        Endpoint::History => {
            let limit = parse_limit(parse_body::<HistoryRequest>(payload)?.limit)?;
            encode(&history_response(ctx.status, limit, ctx.now))
        }
        Endpoint::Explain => encode(&crate::runbook::runbook(explain_check(payload)?)),
        Endpoint::Preflight => {
            let question = parse_body::<preflight::PreflightRequest>(payload)?.validate()?;
            encode(&preflight::preflight(&question, ctx.status, ctx.now))
        }
        // The service passes the request on to every instance (`FORGET_SUBJECT`) once it is valid.
        Endpoint::GroupForget => encode(&forget_group(payload, ctx.status, ctx.now)?.1),
    }
}

/// The check an EXPLAIN body (`{"check": "META_006"}`) names.
pub fn explain_check(payload: &[u8]) -> Result<CheckId, ApiError> {
    let request = parse_body::<ExplainRequest>(payload)?;
    let check = request.check.ok_or_else(|| {
        ApiError::BadRequest("missing \"check\": send {\"check\": \"META_001\"}".to_string())
    })?;
    parse_check(&check)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::checks::Finding;
    use crate::findings::{ActiveFinding, Transition};
    use crate::history::LeaderChange;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn finding(check: CheckId, server: &str) -> Finding {
        Finding {
            check,
            key: format!("{check}/c/{server}"),
            cluster: None,
            domain: None,
            server: Some(server.into()),
            summary: format!("{server} is off"),
            evidence: serde_json::json!({"server": server}),
            remediation: vec![],
            fingerprint: String::new(),
        }
    }

    fn transition(kind: TransitionKind, f: Finding, at: u64) -> Transition {
        Transition {
            kind,
            finding: f,
            episode: 1,
            epoch: String::new(),
            revision: if kind == TransitionKind::Raised { 1 } else { 2 },
            raised_at: t(0),
            at: t(at),
        }
    }

    fn status() -> EngineStatus {
        let mut status = EngineStatus::default();
        for (check, server) in [(CheckId::META_001, "n2"), (CheckId::META_003, "n1")] {
            let f = finding(check, server);
            status.active.insert(
                f.key.clone(),
                ActiveFinding {
                    finding: f,
                    episode: 1,
                    epoch: String::new(),
                    revision: 1,
                    raised_at: t(1),
                    changed_at: t(1),
                },
            );
        }
        let gone = finding(CheckId::META_001, "n3");
        let changes = [LeaderChange {
            at: t(3),
            from: Some("n1".into()),
            to: "n2".into(),
            source: ChangeSource::Advisory,
            server_at: None,
            domain: None,
        }];
        status.recent.record(
            &[
                transition(TransitionKind::Raised, gone.clone(), 2),
                transition(TransitionKind::Resolved, gone, 4),
            ],
            &changes,
        );
        status
    }

    fn code(r: Result<Vec<u8>, ApiError>) -> u16 {
        r.expect_err("refused").code()
    }

    fn ctx<'a>(status: &'a EngineStatus, instance: &'a Instance) -> Context<'a> {
        static THRESHOLDS: Thresholds = Thresholds {
            offline_after: Duration::from_secs(3),
            leaderless_after: crate::thresholds::LEADERLESS_AFTER_DEFAULT,
            disagreement_after: Duration::from_secs(3),
            flap_max: 1,
            flap_window: Duration::from_secs(600),
            pending_max: 500,
            pending_after: Duration::from_secs(5),
            lag_max: 200,
            behind_after: Duration::from_secs(10),
            size_change_hold: Duration::from_secs(600),
            even_after: Duration::from_secs(30),
            meta_assets_max: 5_000,
            sync_interval_max: Duration::from_secs(60),
            routes_missing_after: crate::thresholds::ROUTES_MISSING_AFTER_DEFAULT,
            gateway_lost_after: crate::thresholds::GATEWAY_LOST_AFTER_DEFAULT,
            health_failing_after: crate::thresholds::HEALTH_FAILING_AFTER_DEFAULT,
            catching_up_after: crate::thresholds::CATCHING_UP_AFTER_DEFAULT,
        };
        Context {
            status,
            instance,
            thresholds: &THRESHOLDS,
            now: t(10),
        }
    }

    #[test]
    fn bodies_are_validated_with_the_right_codes() {
        let status = status();
        let instance = Instance {
            id: "i".into(),
            started: t(0),
        };
        let c = ctx(&status, &instance);
        for endpoint in Endpoint::ALL {
            // EXPLAIN and PREFLIGHT need a body (the check; the action and server).
            if ![
                Endpoint::Explain,
                Endpoint::Preflight,
                Endpoint::GroupForget,
            ]
            .contains(&endpoint)
            {
                assert!(handle(endpoint, b"", c).is_ok(), "{endpoint:?} empty");
                assert!(handle(endpoint, b" {} ", c).is_ok(), "{endpoint:?} {{}}");
            }
            for bad in [
                &b"{not json"[..],
                b"[1]",
                b"null",
                b"\"x\"",
                b"{\"zzz\": 1}",
            ] {
                assert_eq!(code(handle(endpoint, bad, c)), 400, "{endpoint:?} {bad:?}");
            }
            let huge = vec![b' '; MAX_REQUEST_BYTES + 1];
            assert_eq!(code(handle(endpoint, &huge, c)), 413);
        }
        for (body, want) in [
            (&br#"{"check": "META_999"}"#[..], 404),
            (br#"{"check": 1}"#, 400),
            (br#"{"severity": "fatal"}"#, 400),
            (br#"{"severity": 2}"#, 400),
            (br#"{"limit": 0}"#, 400),
            (br#"{"limit": 1001}"#, 400),
            (br#"{"limit": -1}"#, 400),
            (br#"{"limit": "5"}"#, 400),
            (br#"{"include_resolved": "yes"}"#, 400),
        ] {
            assert_eq!(
                code(handle(Endpoint::Findings, body, c)),
                want,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(code(handle(Endpoint::History, br#"{"limit": 0}"#, c)), 400);
        assert_eq!(code(handle(Endpoint::Explain, b"{}", c)), 400);
        assert_eq!(code(handle(Endpoint::Explain, b"", c)), 400);
        assert_eq!(
            code(handle(Endpoint::Explain, br#"{"check": "META_404"}"#, c)),
            404
        );
        let error = parse_body::<FindingsRequest>(br#"{"chek": "META_001"}"#).expect_err("typo");
        assert!(error.description().contains("chek"), "{error}");
    }

    #[test]
    fn findings_filter_limit_and_include_resolved() {
        let status = status();
        let query = |json: &str| {
            parse_body::<FindingsRequest>(json.as_bytes())
                .and_then(FindingsRequest::validate)
                .expect("valid")
        };
        let all = findings_response(&status, &query("{}"), t(10));
        assert_eq!(all.total, 2);
        assert!(all.findings.iter().all(|f| f.state == FindingState::Active));
        assert_eq!(all.findings[0].severity, Severity::Critical);

        let warn = findings_response(&status, &query(r#"{"severity":"WARNING"}"#), t(10));
        assert_eq!(warn.findings.len(), 1);
        assert_eq!(warn.findings[0].check, "META_003");

        let m1 = findings_response(
            &status,
            &query(r#"{"check":"meta_001","include_resolved":true}"#),
            t(10),
        );
        assert_eq!(m1.total, 2);
        assert_eq!(m1.findings[1].state, FindingState::Resolved);
        assert_eq!(m1.findings[1].server.as_deref(), Some("n3"));
        assert!(m1.findings[1].resolved_at.is_some());

        let limited = findings_response(
            &status,
            &query(r#"{"include_resolved":true,"limit":1}"#),
            t(10),
        );
        assert_eq!((limited.total, limited.findings.len()), (3, 1));
    }

    #[test]
    fn history_is_newest_first_and_limited() {
        let status = status();
        let history = history_response(&status, 10, t(10));
        assert_eq!(history.total, 3);
        let kinds: Vec<String> = history
            .entries
            .iter()
            .map(|e| match e {
                HistoryEntry::Finding { event, .. } => event.as_str().to_string(),
                HistoryEntry::LeaderChange { to, .. } => format!("leader {to}"),
            })
            .collect();
        assert_eq!(kinds, ["resolved", "leader n2", "raised"]);
        // A resolve carries its episode's raise, at t(0), not its own time.
        match &history.entries[0] {
            HistoryEntry::Finding { at, raised_at, .. } => {
                assert_eq!(raised_at, &time_format::rfc3339(t(0)));
                assert_ne!(raised_at, at);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(history_response(&status, 1, t(10)).entries.len(), 1);
    }

    #[test]
    fn endpoint_names_round_trip_and_match_the_micro_name_rule() {
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::from_name(e.name()), Some(e));
            assert!(e
                .name()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            assert!(e.response_type().starts_with("io.nats.insights.v1."));
        }
    }
}
