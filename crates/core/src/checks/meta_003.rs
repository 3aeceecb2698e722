//! Evaluate: META_003 Meta leader flapping, one finding per meta group.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::members::MetaAssessment;
use super::{
    duration_words, group_key, CheckId, CheckSpec, Evaluation, Finding, Remediation, Setting,
    Severity, Thresholds,
};
use crate::history::History;
use crate::time_format::rfc3339;

impl CheckId {
    /// META_003 Meta leader flapping.
    pub const META_003: CheckId = CheckId::new("META_003");
}

/// META_003 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::META_003,
    name: "Meta leader flapping",
    severity: Severity::Warning,
    category: "jetstream_meta",
    applies_to: "the meta group (one finding per group: per JetStream domain)",
    threshold: |t| {
        format!(
            "the meta leader changed more than {} time{} within {}, the last within {}",
            t.flap_max,
            if t.flap_max == 1 { "" } else { "s" },
            duration_words(t.flap_window),
            duration_words(raise_within(t))
        )
    },
    settings: |t| {
        let d = Thresholds::default();
        vec![
            Setting {
                name: "flap_max",
                flag: "--flap-max",
                env: "INSIGHTS_FLAP_MAX",
                value: t.flap_max.to_string(),
                default: d.flap_max.to_string(),
            },
            Setting {
                name: "flap_window",
                flag: "--flap-window",
                env: "INSIGHTS_FLAP_WINDOW",
                value: duration_words(t.flap_window),
                default: duration_words(d.flap_window),
            },
        ]
    },
    runbook: include_str!("../../../../runbooks/META_003.md"),
    held_for: None,
    evaluate: |j| evaluate(j.meta, j.history, j.thresholds, j.now, j.server_now),
};

/// How recent the last leader change must be for flapping to be raised: a quarter of the
/// window, at most 30 s (an election is seen within a poll, or at once from its advisory).
pub fn raise_within(thresholds: &Thresholds) -> Duration {
    (thresholds.flap_window / 4).min(Duration::from_secs(30))
}

/// Raised when the leader changed more than `flap_max` times within `flap_window`, the last
/// within [`raise_within`]; resolves when the window no longer holds that many. Ages are taken
/// on the servers' clock (`server_now`) where the changes carry it: a history written by an
/// instance whose clock is seconds off this one's would otherwise count a change just out of the
/// window as in it.
pub fn evaluate(
    meta: &MetaAssessment,
    history: &History,
    thresholds: &Thresholds,
    now: SystemTime,
    server_now: Option<SystemTime>,
) -> Evaluation {
    let check = CheckId::META_003;
    let changes = history.leader_changes_within(thresholds.flap_window, now, server_now);
    // Raised only on a recent change; kept (undecided) while older ones still count. Where a
    // change has no servers' time, instances age it on their own clocks and disagree on the
    // moment the window lets go of it by their skew (a history loaded from the bucket carries
    // another instance's clock): the one that lets go first resolves, and the one behind must
    // not raise it again on a change long past.
    let stale = changes
        .last()
        .is_some_and(|c| c.age(now, server_now) > raise_within(thresholds));
    if changes.len() > thresholds.flap_max && stale {
        return Evaluation::ran(
            check,
            meta,
            Vec::new(),
            BTreeSet::from([group_key(check, meta)]),
        );
    }
    let findings = if changes.len() > thresholds.flap_max {
        let listed: Vec<serde_json::Value> = changes
            .iter()
            .map(|c| json!({"at": rfc3339(c.at), "from": c.from, "to": c.to, "source": c.source}))
            .collect();
        let path: Vec<String> = std::iter::once(changes[0].from.clone().unwrap_or_default())
            .chain(changes.iter().map(|c| c.to.clone()))
            .collect();
        let window = humantime::format_duration(thresholds.flap_window).to_string();
        vec![Finding {
            check,
            key: group_key(check, meta),
            cluster: None,
            domain: meta.domain.clone(),
            server: None,
            summary: format!(
                "The meta leader of {} changed {} times within {} ({}), more than the {} allowed.",
                meta.describe_group(),
                changes.len(),
                window,
                path.join(" → "),
                thresholds.flap_max
            ),
            evidence: json!({
                "changes": listed,
                "count": changes.len(),
                "window": window,
                "max": thresholds.flap_max,
                "leader": meta.leader,
            }),
            remediation: vec![
                Remediation::step(
                    "Check whether the step-downs were requested (an operator, automation, a rolling restart); if so, no action is needed once they stop.",
                ),
                Remediation::with_command(
                    "Otherwise look for what makes leaders lose their followers: CPU or disk stalls on the leaders, long GC pauses, route flaps or packet loss between the servers.",
                    "nats server report jetstream",
                ),
                Remediation::step(
                    "Do not restart servers to stop flapping: every restart forces another election.",
                ),
            ],
            // Material: a further change. Changes leaving the window are not news.
            fingerprint: changes
                .last()
                .map(|c| rfc3339(c.at))
                .unwrap_or_default(),
        }]
    } else {
        Vec::new()
    };
    Evaluation::ran(check, meta, findings, BTreeSet::new())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::evaluate;
    use crate::checks::members::leaderless_assessment;
    use crate::checks::test_support::findings;
    use crate::checks::Thresholds;
    use crate::history::{ChangeSource, History};

    fn at(secs: f64) -> SystemTime {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        if secs < 0.0 {
            base - Duration::from_secs_f64(-secs)
        } else {
            base + Duration::from_secs_f64(secs)
        }
    }

    /// Two leader changes 21 s apart on the servers' clock: the first recorded by an instance
    /// whose clock runs 3 s ahead, the second by one 1.7 s behind, and judged by the latter.
    fn history() -> History {
        let mut h = History::default();
        h.observe_leader("n1", ChangeSource::Poll, at(-10.0), Some(at(-10.0)));
        h.observe_leader("n2", ChangeSource::Advisory, at(3.0), Some(at(0.0)));
        h.observe_leader("n3", ChangeSource::Advisory, at(21.0 - 1.7), Some(at(21.0)));
        h
    }

    fn thresholds() -> Thresholds {
        Thresholds {
            flap_max: 1,
            flap_window: Duration::from_secs(20),
            ..Thresholds::default()
        }
    }

    #[test]
    fn changes_written_on_other_clocks_are_aged_on_the_servers_clock() {
        let meta = leaderless_assessment(&["n1", "n2", "n3"], &[]);
        let (h, t) = (history(), thresholds());
        // On this instance's clock the first change looks 16.8 s old: inside the window.
        let e = evaluate(&meta, &h, &t, at(21.5 - 1.7), Some(at(21.5)));
        assert!(findings(&e).is_empty(), "{e:?}");
        // Without the servers' time, ages fall back to the instance's clock.
        let e = evaluate(&meta, &h, &t, at(21.5 - 1.7), None);
        assert_eq!(findings(&e).len(), 1, "{e:?}");
        // Two changes within the window on the servers' clock are flapping, whatever the
        // instance's clock says.
        let mut h = h;
        h.observe_leader("n1", ChangeSource::Poll, at(30.0 + 4.0), Some(at(30.0)));
        let e = evaluate(&meta, &h, &t, at(31.0 + 4.0), Some(at(31.0)));
        assert_eq!(findings(&e).len(), 1, "{e:?}");
    }
}
