//! Alerts: which Alertmanager alerts the engine's status stands for, and when a target is due
//! another send (the outbox). Pure; the product's `alertmanager` sender posts them.
//!
//! Alertmanager merges alerts by label set, so the labels hold only what identifies a finding
//! (the check, its meta group, its server): two HA instances, or one that restarted, send the
//! same alert. An active alert carries no `endsAt` and is sent again every `--alertmanager-resend`,
//! well inside Alertmanager's `resolve_timeout`; a resolved one carries `endsAt` and is sent
//! again for a while, so an Alertmanager that was down at the resolution still learns of it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::checks::Finding;
use crate::findings::{ActiveSet, Transition};
use crate::time_format;
use crate::timing::Backoff;

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

/// When a target is sent to and how it backs off: pure, on the process's monotonic clock
/// (`now` is [`crate::timing::Now`], time since the engine started).
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    /// The identities of what the last successful send carried, and when it went out.
    delivered: Option<(Vec<Alert>, Duration)>,
    /// Failed sends since the last success.
    failures: u32,
    /// No attempt before this (backoff after a failure).
    not_before: Duration,
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
}
