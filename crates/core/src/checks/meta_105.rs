//! Evaluate: META_105 Meta group unheard, one finding per meta group: a group the service heard
//! before of which no server answers any more, while the service still hears others.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde_json::json;

use crate::text::shell_quote;

use super::members::MetaAssessment;
use super::{
    duration_words, group_id_key, seconds, CheckId, CheckSpec, Evaluation, Finding, Judged,
    Outcome, Remediation, Setting, Severity, Thresholds,
};
use crate::history::History;
use crate::observe::GroupId;

impl CheckId {
    /// META_105 Meta group unheard (this project's own code).
    pub const META_105: CheckId = CheckId::new("META_105");
}

/// Polls in a row a group must be dark before it counts: one poll may miss a whole domain while
/// the one link to it reconnects.
pub const DARK_POLLS_MIN: u32 = 2;

/// META_105 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::META_105,
    name: "Meta group unheard",
    severity: Severity::Critical,
    category: "jetstream_meta",
    applies_to: "the meta group (one finding per group: per JetStream domain)",
    threshold: |t| {
        format!(
            "no server of a meta group the service heard before has answered for longer than {} \
             (and two polls in a row) while other servers still answer",
            duration_words(t.offline_after)
        )
    },
    settings: |t| vec![Setting::offline_after(t)],
    runbook: include_str!("../../../../runbooks/META_105.md"),
    held_for: None,
    evaluate,
};

/// A group that answers is heard: nothing to find (an earlier finding resolves).
pub fn evaluate(j: &Judged<'_>) -> Evaluation {
    Evaluation::ran(CheckId::META_105, j.meta, Vec::new(), BTreeSet::new())
}

/// A known group none of whose servers answered this poll while others did: raised once it has
/// been unheard for longer than `offline_after` (and `DARK_POLLS_MIN` polls), undecided before.
/// `unheard` is the group as its history last knew it ([`super::members::assess_unheard`]).
pub fn evaluate_dark(
    group: &GroupId,
    unheard: &MetaAssessment,
    history: &History,
    thresholds: &Thresholds,
    now: SystemTime,
) -> Evaluation {
    let check = CheckId::META_105;
    let key = group_id_key(check, group);
    let since = unheard.unheard_since.unwrap_or(now);
    let silent_for = now.duration_since(since).unwrap_or_default();
    let outcome = if silent_for > thresholds.offline_after && history.dark_polls >= DARK_POLLS_MIN {
        Outcome::Ran {
            findings: vec![finding(unheard, history, key, since, now)],
            undecided: BTreeSet::new(),
        }
    } else {
        Outcome::Ran {
            findings: Vec::new(),
            undecided: BTreeSet::from([key]),
        }
    };
    Evaluation {
        check,
        group: group.clone(),
        outcome,
    }
}

fn finding(
    meta: &MetaAssessment,
    history: &History,
    key: String,
    since: SystemTime,
    now: SystemTime,
) -> Finding {
    let check = CheckId::META_105;
    let names: Vec<&str> = meta.members.iter().map(|m| m.name.as_str()).collect();
    let clusters: Vec<&str> = meta.clusters.iter().map(|c| c.cluster.as_str()).collect();
    let silent_for = now.duration_since(since).unwrap_or_default();
    let label = meta.group.label();
    let group_words = match meta.group.domain() {
        Some(domain) => format!("the meta group of domain {domain}"),
        None => "the meta group of the default domain".to_string(),
    };
    let summary = format!(
        "No server of {group_words} ({}) has answered for {} (since {}): its servers are down, \
         or the link to them from the servers nats-insights is attached to (leaf node, gateway \
         or route) is cut. Its state is unknown.",
        names.join(", "),
        seconds(silent_for),
        crate::time_format::rfc3339(since),
    );
    let forget = match meta.group.domain() {
        Some(domain) => format!("nats-insights forget-group {}", shell_quote(domain)),
        None => "nats-insights forget-group default".to_string(),
    };
    let remediation = vec![
        Remediation::step(format!(
            "Check whether the nats-server processes of {group_words} are running ({}); start \
             any that are down with their original server_name and store directory.",
            names.join(", ")
        )),
        Remediation::with_command(
            "If they run, check the link between them and the servers nats-insights is attached \
             to: the leaf node connection (the leaf remote of the group's servers and the hub's \
             leafnodes port), the gateway, or the routes, and that they share the system \
             account.",
            "nats server request leafnodes",
        ),
        Remediation::with_command(
            "List the servers that answer and their gateways; a group behind a gateway is \
             missing there too.",
            "nats server request gateways",
        ),
        Remediation::with_command(
            "If the group was retired on purpose, tell nats-insights to forget it (every \
             instance forgets it and resolves its findings).",
            forget,
        ),
    ];
    Finding {
        check,
        key,
        cluster: None,
        domain: meta.domain.clone(),
        server: None,
        summary,
        evidence: json!({
            "group": label,
            "members": names,
            "clusters": clusters,
            "unheard_since": crate::time_format::rfc3339(since),
            "unheard_for_ms": silent_for.as_millis() as u64,
            "last_leader": history.leader,
        }),
        remediation,
        // Material: who is missing; the growing silence is not.
        fingerprint: names.join(","),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::checks::members::assess_unheard;
    use crate::history::ServerRecord;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn edge() -> (GroupId, History) {
        let mut history = History::default();
        for name in ["e1", "e2", "e3"] {
            history.servers.insert(
                name.to_string(),
                ServerRecord {
                    server_id: format!("id-{name}"),
                    last_answered: t(10),
                    cluster: Some("edge".into()),
                    version: Some("2.15.1".into()),
                    restarted_at: None,
                    missed: 0,
                },
            );
        }
        history.leader = Some("e1".into());
        (GroupId::of(Some("edge")), history)
    }

    fn judge(history: &History, now: SystemTime) -> Evaluation {
        let (group, _) = edge();
        let meta = assess_unheard(&group, history, now).expect("known group");
        evaluate_dark(&group, &meta, history, &Thresholds::default(), now)
    }

    #[test]
    fn a_group_silent_past_offline_after_is_raised_naming_it_its_members_and_since_when() {
        let (_, mut history) = edge();
        history.record_dark(t(12));
        history.record_dark(t(14));
        assert_eq!(history.dark_since, Some(t(10)));
        let evaluation = judge(&history, t(14));
        let Outcome::Ran {
            findings,
            undecided,
        } = &evaluation.outcome
        else {
            panic!("{evaluation:?}");
        };
        assert!(undecided.is_empty());
        assert_eq!(findings.len(), 1);
        let f = &findings[0];
        assert_eq!(f.key, "META_105/edge");
        assert_eq!(f.domain.as_deref(), Some("edge"));
        assert!(f.summary.contains("domain edge"), "{}", f.summary);
        assert!(f.summary.contains("e1, e2, e3"), "{}", f.summary);
        assert!(f.summary.contains("4.0 s"), "{}", f.summary);
        assert_eq!(
            f.evidence["unheard_since"],
            crate::time_format::rfc3339(t(10))
        );
        let steps: Vec<&str> = f.remediation.iter().map(|r| r.step.as_str()).collect();
        assert!(steps[0].contains("running"), "{steps:?}");
        assert!(steps[1].contains("leaf node"), "{steps:?}");
        assert!(f
            .remediation
            .iter()
            .any(|r| r.command.as_deref() == Some("nats-insights forget-group edge")));
    }

    #[test]
    fn a_short_or_single_poll_silence_is_undecided() {
        let (_, mut history) = edge();
        // One poll only, long after the last answer (a leaf link reconnecting).
        history.record_dark(t(20));
        let once = judge(&history, t(20));
        assert_eq!(
            once.outcome,
            Outcome::Ran {
                findings: Vec::new(),
                undecided: BTreeSet::from(["META_105/edge".to_string()]),
            }
        );
        // Two polls, but within offline_after of the last answer.
        let (_, mut history) = edge();
        history.record_dark(t(11));
        history.record_dark(t(12));
        let Outcome::Ran {
            findings,
            undecided,
        } = judge(&history, t(12)).outcome
        else {
            panic!("ran");
        };
        assert!(findings.is_empty());
        assert_eq!(undecided.len(), 1);
    }

    #[test]
    fn the_unheard_group_shows_every_member_unknown_and_no_leader() {
        let (group, mut history) = edge();
        history.record_dark(t(15));
        let meta = assess_unheard(&group, &history, t(15)).expect("known");
        assert_eq!(meta.unheard_since, Some(t(10)));
        assert_eq!(meta.leader, None);
        assert_eq!(meta.members.len(), 3);
        assert!(meta
            .members
            .iter()
            .all(|m| m.state == super::super::MemberState::Unknown && !m.leader));
        assert_eq!(meta.clusters.len(), 1);
        assert_eq!(meta.clusters[0].online, 0);
        // A group never heard has nothing to show.
        assert!(assess_unheard(&group, &History::default(), t(15)).is_none());
    }

    #[test]
    fn the_forget_command_takes_a_hostile_domain_as_one_argument() {
        for domain in crate::text::HOSTILE_NAMES {
            let (_, mut history) = edge();
            history.record_dark(t(12));
            history.record_dark(t(14));
            let group = GroupId::of(Some(domain));
            let meta = assess_unheard(&group, &history, t(14)).expect("known group");
            let evaluation = evaluate_dark(&group, &meta, &history, &Thresholds::default(), t(14));
            let Outcome::Ran { findings, .. } = &evaluation.outcome else {
                panic!("{evaluation:?}");
            };
            let command = findings[0]
                .remediation
                .iter()
                .find_map(|r| r.command.as_deref().filter(|c| c.contains("forget-group")))
                .expect("forget step");
            assert_eq!(
                crate::text::shell_words(command),
                ["nats-insights", "forget-group", domain]
            );
        }
    }
}
