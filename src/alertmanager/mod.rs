//! Publish, second sink: the findings as alerts on Prometheus Alertmanager's API v2
//! (`--alertmanager-url`). This file is pure: which alerts the engine's status stands for, when
//! a target is due another send, how it backs off; `sender` is the I/O edge that posts them.
//!
//! Alertmanager merges alerts by label set, so the labels hold only what identifies a finding
//! (the check, its meta group, its server): two HA instances, or one that restarted, send the
//! same alert. An active alert carries no `endsAt` and is sent again every `--alertmanager-resend`,
//! well inside Alertmanager's `resolve_timeout`; a resolved one carries `endsAt` and is sent
//! again for a while, so an Alertmanager that was down at the resolution still learns of it.

pub mod sender;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde::Serialize;

use crate::checks::Finding;
use crate::connect::redact_url;
use crate::findings::{ActiveSet, Transition};
use crate::time_format;

/// Path of the alerts endpoint, appended to each `--alertmanager-url`.
pub const ALERTS_PATH: &str = "/api/v2/alerts";

/// Flags of `run` for sending findings to Alertmanager.
#[derive(Clone, Default, Args)]
pub struct AlertmanagerArgs {
    /// Send every finding as an alert to this Alertmanager (its base URL, e.g.
    /// `http://alertmanager:9093`; repeat the flag, or separate with commas, for each member of
    /// an Alertmanager cluster: each gets every alert). `user:password@` in the URL is basic auth.
    #[arg(
        long = "alertmanager-url",
        env = "INSIGHTS_ALERTMANAGER_URL",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub urls: Vec<String>,
    /// Basic auth user for every --alertmanager-url (a URL's own `user:password@` wins).
    #[arg(long, env = "INSIGHTS_ALERTMANAGER_USER", value_name = "USER")]
    pub alertmanager_user: Option<String>,
    /// Basic auth password (with --alertmanager-user).
    #[arg(
        long,
        env = "INSIGHTS_ALERTMANAGER_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub alertmanager_password: Option<String>,
    /// Basic auth password read from this file (trailing newline ignored), instead of
    /// --alertmanager-password.
    #[arg(
        long,
        env = "INSIGHTS_ALERTMANAGER_PASSWORD_FILE",
        value_name = "FILE",
        conflicts_with = "alertmanager_password"
    )]
    pub alertmanager_password_file: Option<PathBuf>,
    /// PEM file of the CA(s) that sign the Alertmanager's certificate (https URLs; the system's
    /// roots are trusted too).
    #[arg(long, env = "INSIGHTS_ALERTMANAGER_CA", value_name = "FILE")]
    pub alertmanager_ca: Option<PathBuf>,
    /// PEM client certificate, for an Alertmanager that asks for one (with --alertmanager-key).
    #[arg(
        long,
        env = "INSIGHTS_ALERTMANAGER_CERT",
        value_name = "FILE",
        requires = "alertmanager_key"
    )]
    pub alertmanager_cert: Option<PathBuf>,
    /// PEM private key of --alertmanager-cert.
    #[arg(
        long,
        env = "INSIGHTS_ALERTMANAGER_KEY",
        value_name = "FILE",
        requires = "alertmanager_cert"
    )]
    pub alertmanager_key: Option<PathBuf>,
    /// How often active alerts are sent again. Alertmanager resolves an alert it has not heard
    /// of for its `resolve_timeout` (5m by default): keep this well below that.
    #[arg(long, env = "INSIGHTS_ALERTMANAGER_RESEND", default_value = "1m", value_parser = humantime::parse_duration)]
    pub alertmanager_resend: Duration,
    /// How long one send may take before it counts as failed (and is retried with backoff).
    #[arg(long, env = "INSIGHTS_ALERTMANAGER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub alertmanager_timeout: Duration,
}

impl std::fmt::Debug for AlertmanagerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertmanagerArgs")
            .field(
                "urls",
                &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>(),
            )
            .field("alertmanager_user", &self.alertmanager_user)
            .field("alertmanager_ca", &self.alertmanager_ca)
            .field("alertmanager_cert", &self.alertmanager_cert)
            .field("alertmanager_resend", &self.alertmanager_resend)
            .finish_non_exhaustive()
    }
}

/// One Alertmanager to send to.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// The alerts endpoint (`.../api/v2/alerts`), without credentials.
    pub endpoint: String,
    /// Basic auth user and password.
    pub basic_auth: Option<(String, String)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("endpoint", &self.endpoint)
            .field("user", &self.basic_auth.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// What the sender needs: the targets and how they are reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertmanagerSettings {
    /// Every Alertmanager; each gets every alert.
    pub targets: Vec<Target>,
    /// CA certificates (PEM) trusted besides the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (PEM, concatenated), when the Alertmanager asks for one.
    pub identity_pem: Option<Vec<u8>>,
    /// Active alerts are sent again this often.
    pub resend: Duration,
    /// Longest one send may take.
    pub timeout: Duration,
}

impl AlertmanagerArgs {
    /// The settings these flags describe; `None` without `--alertmanager-url`. Errors are one
    /// line naming the flag.
    pub fn settings(&self) -> Result<Option<AlertmanagerSettings>, String> {
        let urls: Vec<&str> = self
            .urls
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Ok(None);
        }
        if self.alertmanager_resend < Duration::from_secs(1) {
            return Err("--alertmanager-resend must be at least 1s".to_string());
        }
        if self.alertmanager_resend >= Duration::from_secs(5 * 60) {
            tracing::warn!(
                resend = %humantime::format_duration(self.alertmanager_resend),
                "--alertmanager-resend is not below Alertmanager's default resolve_timeout (5m): active alerts may resolve between sends"
            );
        }
        if self.alertmanager_timeout.is_zero() {
            return Err("--alertmanager-timeout must be positive".to_string());
        }
        let password = match (
            &self.alertmanager_password,
            &self.alertmanager_password_file,
        ) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        format!(
                            "cannot read --alertmanager-password-file {}: {e}",
                            path.display()
                        )
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            (None, None) => None,
        };
        if password.is_some() && self.alertmanager_user.is_none() {
            return Err("--alertmanager-password needs --alertmanager-user".to_string());
        }
        let shared = self
            .alertmanager_user
            .clone()
            .map(|user| (user, password.unwrap_or_default()));
        let targets = urls
            .iter()
            .map(|url| parse_target(url, shared.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, target) in targets.iter().enumerate() {
            if targets[..i].iter().any(|t| t.endpoint == target.endpoint) {
                return Err(format!(
                    "--alertmanager-url {} is given twice",
                    target.endpoint
                ));
            }
        }
        let read = |flag: &str, path: &Option<PathBuf>| -> Result<Option<Vec<u8>>, String> {
            path.as_ref()
                .map(|p| {
                    std::fs::read(p).map_err(|e| {
                        format!("cannot read --alertmanager-{flag} {}: {e}", p.display())
                    })
                })
                .transpose()
        };
        let ca_pem = read("ca", &self.alertmanager_ca)?;
        let identity_pem = match (
            read("cert", &self.alertmanager_cert)?,
            read("key", &self.alertmanager_key)?,
        ) {
            (Some(mut cert), Some(key)) => {
                cert.push(b'\n');
                cert.extend_from_slice(&key);
                Some(cert)
            }
            _ => None,
        };
        let settings = AlertmanagerSettings {
            targets,
            ca_pem,
            identity_pem,
            resend: self.alertmanager_resend,
            timeout: self.alertmanager_timeout,
        };
        // Certificates that do not parse are a start-up error, not a failure at the first send.
        sender::client(&settings)?;
        Ok(Some(settings))
    }
}

/// Parses one `--alertmanager-url`: http or https, credentials taken out of it, the alerts path
/// appended unless it is there already.
pub fn parse_target(url: &str, shared: Option<(String, String)>) -> Result<Target, String> {
    let mut parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("--alertmanager-url {}: {e}", redact_url(url)))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "--alertmanager-url {}: the scheme must be http or https",
            redact_url(url)
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("--alertmanager-url {}: no host", redact_url(url)));
    }
    let own = (!parsed.username().is_empty()).then(|| {
        (
            percent_decode(parsed.username()),
            percent_decode(parsed.password().unwrap_or_default()),
        )
    });
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_query(None);
    parsed.set_fragment(None);
    let base = parsed.as_str().trim_end_matches('/').to_string();
    let endpoint = if base.ends_with(ALERTS_PATH) {
        base
    } else {
        format!("{base}{ALERTS_PATH}")
    };
    Ok(Target {
        endpoint,
        basic_auth: own.or(shared),
    })
}

/// `%XX` sequences of a URL's user info, decoded.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// One alert as Alertmanager's API v2 takes it (`postableAlert`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// What identifies it: `alertname`, `check`, `severity`, `domain`, `cluster`, `server`.
    pub labels: BTreeMap<String, String>,
    /// What describes it: `summary`, `remediation`, `runbook`.
    pub annotations: BTreeMap<String, String>,
    /// When the finding was raised (RFC 3339).
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// When it was resolved (RFC 3339); absent while active.
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
}

impl Alert {
    /// What a send must deliver when it changes: the label set and the times. Annotations (the
    /// summary's figures move every round) go out with the next resend.
    fn identity(&self) -> (&BTreeMap<String, String>, &str, Option<&str>) {
        (&self.labels, &self.starts_at, self.ends_at.as_deref())
    }
}

/// The labels of a finding's alert: the same on every instance that holds the finding.
pub fn labels(finding: &Finding) -> BTreeMap<String, String> {
    let check = finding.check;
    let mut labels = BTreeMap::from([
        ("alertname".to_string(), check.name().to_string()),
        ("check".to_string(), check.as_str().to_string()),
        (
            "severity".to_string(),
            check.severity().as_str().to_string(),
        ),
    ]);
    for (name, value) in [
        ("domain", &finding.domain),
        ("cluster", &finding.cluster),
        ("server", &finding.server),
    ] {
        if let Some(value) = value {
            labels.insert(name.to_string(), value.clone());
        }
    }
    labels
}

fn alert_of(finding: &Finding, raised_at: SystemTime, ended: Option<SystemTime>) -> Alert {
    let check = finding.check.as_str();
    let mut annotations = BTreeMap::from([
        ("summary".to_string(), finding.summary.clone()),
        (
            "runbook".to_string(),
            format!("nats-insights explain {check} (runbooks/{check}.md)"),
        ),
        ("finding".to_string(), finding.key.clone()),
    ]);
    if let Some(first) = finding.remediation.first() {
        let text = match &first.command {
            Some(command) => format!("{} ({command})", first.step),
            None => first.step.clone(),
        };
        annotations.insert("remediation".to_string(), text);
    }
    Alert {
        labels: labels(finding),
        annotations,
        starts_at: time_format::rfc3339(raised_at),
        ends_at: ended.map(time_format::rfc3339),
    }
}

/// The alerts `active` and the recent resolutions stand for at `now`: one per active finding,
/// and one per finding resolved within `resolved_kept` (with its `endsAt`) unless its labels
/// are active again. Sorted by labels, so that equal states compare equal.
pub fn alerts<'a>(
    active: &ActiveSet,
    resolved: impl IntoIterator<Item = &'a Transition>,
    now: SystemTime,
    resolved_kept: Duration,
) -> Vec<Alert> {
    let mut out: Vec<Alert> = active
        .values()
        .map(|a| alert_of(&a.finding, a.raised_at, None))
        .collect();
    let firing: BTreeSet<BTreeMap<String, String>> = out.iter().map(|a| a.labels.clone()).collect();
    let mut ended: BTreeMap<BTreeMap<String, String>, Alert> = BTreeMap::new();
    for t in resolved {
        let recent = now
            .duration_since(t.at)
            .map_or(true, |age| age <= resolved_kept);
        let labels = labels(&t.finding);
        if !recent || firing.contains(&labels) {
            continue;
        }
        // The latest resolution of a label set stands (the list is oldest first).
        ended.insert(labels, alert_of(&t.finding, t.raised_at, Some(t.at)));
    }
    out.extend(ended.into_values());
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out
}

/// When a target is sent to and how it backs off: pure, on the sender's monotonic clock
/// (`now` is time since the sender started).
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    /// The identities of what the last successful send carried, and when it went out.
    delivered: Option<(Vec<Alert>, Duration)>,
    /// Failed sends since the last success.
    failures: u32,
    /// No attempt before this (backoff after a failure).
    not_before: Duration,
}

/// How a target backs off: the first retry after `min`, doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First retry delay.
    pub min: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The wait after `failures` failures in a row: `min`, doubling with each, at most `max`.
    pub fn delay(self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(16);
        self.min.saturating_mul(1u32 << exponent).min(self.max)
    }
}

impl Outbox {
    /// Whether `alerts` should be sent now: something changed since the last delivery (a new,
    /// resolved or re-raised alert), or the resend interval passed with alerts to keep alive; in
    /// both cases only once any backoff is over.
    pub fn due(&self, alerts: &[Alert], now: Duration, resend: Duration) -> bool {
        if now < self.not_before {
            return false;
        }
        match &self.delivered {
            None => !alerts.is_empty() || self.failures > 0,
            Some((sent, at)) => {
                let changed = sent.len() != alerts.len()
                    || sent
                        .iter()
                        .zip(alerts)
                        .any(|(a, b)| a.identity() != b.identity());
                changed || (!alerts.is_empty() && now >= *at + resend)
            }
        }
    }

    /// Records a send of `alerts` at `now` that succeeded or failed.
    pub fn record(&mut self, alerts: &[Alert], ok: bool, now: Duration, backoff: Backoff) {
        if ok {
            self.delivered = Some((alerts.to_vec(), now));
            self.failures = 0;
            self.not_before = now;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.not_before = now + backoff.delay(self.failures);
        }
    }

    /// Failed sends since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The latest moment the sender must look again without a status change: the end of the
    /// backoff, or the next resend.
    pub fn next_look(&self, now: Duration, resend: Duration) -> Duration {
        let resend_at = self
            .delivered
            .as_ref()
            .map_or(now + resend, |(_, at)| *at + resend);
        if self.failures > 0 {
            self.not_before.max(now)
        } else {
            resend_at.max(now)
        }
    }
}

/// One Alertmanager's health, for STATUS (`service.alertmanager`) and the metrics.
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

impl AlertmanagerHealth {
    /// A target nothing was sent to yet.
    pub fn pending(target: &Target) -> AlertmanagerHealth {
        AlertmanagerHealth {
            url: target.endpoint.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{CheckId, Remediation};
    use crate::findings::{ActiveFinding, TransitionKind};

    fn finding(check: CheckId, server: Option<&str>, summary: &str) -> Finding {
        Finding {
            check,
            key: match server {
                Some(s) => format!("{}/default/{s}", check.as_str()),
                None => format!("{}/default", check.as_str()),
            },
            cluster: server.map(|_| "east".to_string()),
            domain: None,
            server: server.map(str::to_string),
            summary: summary.to_string(),
            evidence: serde_json::json!({}),
            remediation: vec![
                Remediation {
                    step: "Restart it".to_string(),
                    command: Some("systemctl restart nats-server".to_string()),
                },
                Remediation::step("Then look at its logs"),
            ],
            fingerprint: String::new(),
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn active(findings: &[Finding]) -> ActiveSet {
        findings
            .iter()
            .map(|f| {
                (
                    f.key.clone(),
                    ActiveFinding {
                        finding: f.clone(),
                        episode: 1,
                        epoch: String::new(),
                        revision: 1,
                        raised_at: at(0),
                        changed_at: at(0),
                    },
                )
            })
            .collect()
    }

    fn resolution(f: &Finding, when: u64) -> Transition {
        Transition {
            kind: TransitionKind::Resolved,
            finding: f.clone(),
            episode: 1,
            epoch: String::new(),
            revision: 2,
            raised_at: at(0),
            at: at(when),
        }
    }

    const KEPT: Duration = Duration::from_secs(900);
    const NONE: &[Transition] = &[];

    #[test]
    fn an_active_finding_is_an_alert_labelled_by_what_identifies_it() {
        let f = finding(CheckId::META_001, Some("n2"), "n2 is offline");
        let alerts = alerts(&active(&[f]), NONE, at(10), KEPT);
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!(a.labels["alertname"], CheckId::META_001.name());
        assert_eq!(a.labels["check"], "META_001");
        assert_eq!(a.labels["severity"], "critical");
        assert_eq!(a.labels["server"], "n2");
        assert_eq!(a.labels["cluster"], "east");
        assert!(!a.labels.contains_key("domain"), "no domain, no label");
        assert_eq!(a.annotations["summary"], "n2 is offline");
        assert_eq!(
            a.annotations["remediation"],
            "Restart it (systemctl restart nats-server)"
        );
        assert_eq!(
            a.annotations["runbook"],
            "nats-insights explain META_001 (runbooks/META_001.md)"
        );
        assert_eq!(a.starts_at, time_format::rfc3339(at(0)));
        assert_eq!(a.ends_at, None);
        let json = serde_json::to_value(a).expect("serializes");
        assert!(json.get("endsAt").is_none(), "{json}");
        assert!(json["startsAt"].is_string(), "{json}");
    }

    #[test]
    fn a_resolution_is_sent_with_its_end_for_a_while_unless_raised_again() {
        let f = finding(CheckId::META_001, Some("n2"), "n2 is offline");
        let resolved = [resolution(&f, 100)];
        let now = alerts(&ActiveSet::new(), &resolved, at(200), KEPT);
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].ends_at, Some(time_format::rfc3339(at(100))));
        assert!(alerts(&ActiveSet::new(), &resolved, at(100 + 901), KEPT).is_empty());
        // Raised again: the active alert alone.
        let again = alerts(&active(&[f]), &resolved, at(200), KEPT);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].ends_at, None);
    }

    #[test]
    fn a_change_is_sent_at_once_a_figure_in_the_summary_waits_for_the_resend() {
        let resend = Duration::from_secs(60);
        let backoff = Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(30),
        };
        let mut outbox = Outbox::default();
        assert!(!outbox.due(&[], Duration::ZERO, resend), "nothing to say");
        let one = alerts(
            &active(&[finding(CheckId::META_001, Some("n2"), "for 1 s")]),
            NONE,
            at(1),
            KEPT,
        );
        assert!(outbox.due(&one, Duration::ZERO, resend));
        outbox.record(&one, true, Duration::ZERO, backoff);
        let moved = alerts(
            &active(&[finding(CheckId::META_001, Some("n2"), "for 5 s")]),
            NONE,
            at(5),
            KEPT,
        );
        assert!(!outbox.due(&moved, Duration::from_secs(5), resend));
        assert!(
            outbox.due(&moved, Duration::from_secs(60), resend),
            "resend"
        );
        let two = alerts(
            &active(&[
                finding(CheckId::META_001, Some("n2"), "x"),
                finding(CheckId::META_001, Some("n3"), "y"),
            ]),
            NONE,
            at(6),
            KEPT,
        );
        assert!(
            outbox.due(&two, Duration::from_secs(6), resend),
            "new alert"
        );
        assert_eq!(
            outbox.next_look(Duration::from_secs(6), resend),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn a_failing_target_backs_off_doubling_up_to_the_cap_and_recovers() {
        let resend = Duration::from_secs(60);
        let backoff = Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(30),
        };
        let one = alerts(
            &active(&[finding(CheckId::META_006, None, "quorum lost")]),
            NONE,
            at(1),
            KEPT,
        );
        let mut outbox = Outbox::default();
        let mut now = Duration::ZERO;
        let mut delays = Vec::new();
        for _ in 0..7 {
            assert!(outbox.due(&one, now, resend));
            outbox.record(&one, false, now, backoff);
            let next = outbox.next_look(now, resend);
            assert!(!outbox.due(&one, next - Duration::from_millis(1), resend));
            delays.push((next - now).as_secs());
            now = next;
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(outbox.failures(), 7);
        outbox.record(&one, true, now, backoff);
        assert_eq!(outbox.failures(), 0);
        assert!(!outbox.due(&one, now + Duration::from_secs(1), resend));
    }

    #[test]
    fn urls_take_the_alerts_path_and_give_up_their_credentials() {
        let t = parse_target("http://am:9093", None).expect("valid");
        assert_eq!(t.endpoint, "http://am:9093/api/v2/alerts");
        assert_eq!(t.basic_auth, None);
        let t = parse_target("https://u%40x:p%3Aw@am.example/prefix/", None).expect("valid");
        assert_eq!(t.endpoint, "https://am.example/prefix/api/v2/alerts");
        assert_eq!(t.basic_auth, Some(("u@x".to_string(), "p:w".to_string())));
        let shared = Some(("ops".to_string(), "s".to_string()));
        let t = parse_target("http://am:9093/api/v2/alerts", shared.clone()).expect("valid");
        assert_eq!(t.endpoint, "http://am:9093/api/v2/alerts");
        assert_eq!(t.basic_auth, shared);
        assert!(parse_target("ftp://am", None).is_err());
        assert!(parse_target("am:9093", None).is_err());
        assert!(!redact_url("http://u:secret@am:9093").contains("secret"));
    }
}
