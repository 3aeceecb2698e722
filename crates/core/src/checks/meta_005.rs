//! Evaluate: META_005 Meta state growth, one finding per meta group: the stream and consumer
//! replicas its servers hold (JSZ `streams` and `consumers` of each member) add up to more than
//! `--meta-assets-max`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::{
    group_key, CheckId, CheckSpec, Evaluation, Finding, Judged, Remediation, Setting, Severity,
    Thresholds,
};

impl CheckId {
    /// META_005 Meta state growth (Synadia Insights' code for the same condition).
    pub const META_005: CheckId = CheckId::new("META_005");
}

/// META_005 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::META_005,
    name: "Meta state growth",
    severity: Severity::Warning,
    category: "jetstream_meta",
    applies_to: "the meta group (one finding per group: per JetStream domain)",
    threshold: |t| {
        format!(
            "the stream and consumer replicas on the group's members (the sum of each member's \
             JSZ streams and consumers) exceed {}",
            t.meta_assets_max
        )
    },
    settings: |t| {
        vec![Setting {
            name: "meta_assets_max",
            flag: "--meta-assets-max",
            env: "INSIGHTS_META_ASSETS_MAX",
            value: t.meta_assets_max.to_string(),
            default: Thresholds::default().meta_assets_max.to_string(),
        }]
    },
    runbook: include_str!("../../../../runbooks/META_005.md"),
    held_for: None,
    evaluate,
};

/// What one member holds, from its own reply of this poll.
struct Held {
    streams: u64,
    consumers: u64,
    ha_assets: Option<u64>,
}

/// Raised when the replicas counted exceed the limit. A member whose view did not arrive this
/// poll (silent, or not sampled in a large group) counts as its last reply said (the history);
/// one never counted since the monitor started (or an older server without the fields) is
/// missing: over the limit without it, the sum is a lower bound and already over; under it, the
/// group is undecided, as a missing count could tip it.
pub fn evaluate(j: &Judged<'_>) -> Evaluation {
    let check = CheckId::META_005;
    let meta = j.meta;
    let key = group_key(check, meta);
    let mut held: BTreeMap<&str, Held> = BTreeMap::new();
    let mut missing = Vec::new();
    let mut remembered = Vec::new();
    for member in &meta.members {
        let now = member
            .facts
            .as_ref()
            .and_then(|f| Some((f.streams?, f.consumers?, f.ha_assets)));
        let last = || {
            j.history
                .assets
                .get(&member.name)
                .map(|a| (a.streams, a.consumers, a.ha_assets))
        };
        let (streams, consumers, ha_assets) = match now {
            Some(counts) => counts,
            None => match last() {
                Some(counts) => {
                    remembered.push(member.name.as_str());
                    counts
                }
                None => {
                    missing.push(member.name.as_str());
                    continue;
                }
            },
        };
        held.insert(
            &member.name,
            Held {
                streams,
                consumers,
                ha_assets,
            },
        );
    }
    let streams: u64 = held
        .values()
        .map(|h| h.streams)
        .fold(0, u64::saturating_add);
    let consumers: u64 = held
        .values()
        .map(|h| h.consumers)
        .fold(0, u64::saturating_add);
    let total = streams.saturating_add(consumers);
    let max = j.thresholds.meta_assets_max;
    if total <= max {
        let undecided = if missing.is_empty() {
            BTreeSet::new()
        } else {
            BTreeSet::from([key])
        };
        return Evaluation::ran(check, meta, Vec::new(), undecided);
    }
    let busiest = held
        .iter()
        .filter_map(|(name, h)| h.ha_assets.map(|a| (a, *name)))
        .max();
    let at_least = if missing.is_empty() { "" } else { "at least " };
    let finding = Finding {
        check,
        key,
        cluster: None,
        domain: meta.domain.clone(),
        server: None,
        summary: format!(
            "The members of {} hold {at_least}{total} stream and consumer replicas ({streams} \
             stream, {consumers} consumer), over the limit of {max}: the meta layer tracks \
             every one, so its snapshots, catch-ups and leader elections grow slower with \
             them{}.",
            meta.describe_group(),
            match busiest {
                Some((assets, name)) => format!(
                    "; {name} takes part in the most raft groups ({assets} ha_assets)"
                ),
                None => String::new(),
            },
        ),
        evidence: json!({
            "replicas": total,
            "stream_replicas": streams,
            "consumer_replicas": consumers,
            "limit": max,
            "by_server": held.iter().map(|(name, h)| (name.to_string(), json!({
                "streams": h.streams,
                "consumers": h.consumers,
                "ha_assets": h.ha_assets,
            }))).collect::<BTreeMap<String, serde_json::Value>>(),
            "as_last_seen": remembered,
            "not_counted": missing,
        }),
        remediation: vec![
            Remediation::with_command(
                "See which accounts and streams hold the most consumers and replicas.",
                "nats server report jetstream",
            ),
            Remediation::step(
                "Remove unused streams and consumers; replace many ephemeral or per-client durable consumers with fewer shared ones; lower replicas where R3 is not needed.",
            ),
            Remediation::step(
                "If the growth is intended, spread it: more JetStream servers share the stream and consumer raft groups (each server's ha_assets), though the meta layer still tracks them all.",
            ),
        ],
        // Material: that it is over; the count moves without an update.
        fingerprint: "over".to_string(),
    };
    Evaluation::ran(check, meta, vec![finding], BTreeSet::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_support::{fixture, judge_with, keys, set_data_field};

    fn thresholds(max: u64) -> Thresholds {
        Thresholds {
            meta_assets_max: max,
            ..Thresholds::default()
        }
    }

    fn with_assets() -> Vec<serde_json::Value> {
        let mut replies = fixture("healthy_3.json");
        for server in ["n1", "n2", "n3"] {
            set_data_field(&mut replies, server, "streams", json!(3));
            set_data_field(&mut replies, server, "consumers", json!(2));
            set_data_field(&mut replies, server, "ha_assets", json!(6));
        }
        replies
    }

    #[test]
    fn replicas_over_the_limit_raise_one_finding_for_the_group() {
        let replies = with_assets();
        let (findings, _) = keys(&judge_with(&replies, &[], &thresholds(14), evaluate));
        assert_eq!(findings, ["META_005/default"]);
        let (findings, undecided) = keys(&judge_with(&replies, &[], &thresholds(15), evaluate));
        assert!(findings.is_empty() && undecided.is_empty());
    }

    #[test]
    fn a_member_not_counted_leaves_the_group_undecided_unless_already_over() {
        let replies = with_assets();
        // n3 answered with its identity only (a large group's poll): 10 counted.
        let (findings, undecided) = keys(&judge_with(&replies, &["n3"], &thresholds(12), evaluate));
        assert!(findings.is_empty());
        assert_eq!(undecided, ["META_005/default"]);
        let e = judge_with(&replies, &["n3"], &thresholds(9), evaluate);
        let f = crate::checks::test_support::findings(&e);
        assert!(f[0].summary.contains("at least 10"), "{}", f[0].summary);
        assert_eq!(f[0].evidence["not_counted"], json!(["n3"]));
    }

    #[test]
    fn a_member_not_sampled_counts_as_its_last_reply_said() {
        use crate::checks::test_support::snapshot;
        use crate::history::History;
        let replies = with_assets();
        let mut history = History::default();
        let at = std::time::SystemTime::UNIX_EPOCH;
        history.record_snapshot(&snapshot(&replies, &[]), &thresholds(12), at);
        let sampled = snapshot(&replies, &["n3"]);
        history.record_snapshot(&sampled, &thresholds(12), at);
        let t = thresholds(12);
        let meta = crate::checks::assess_members(&sampled, &history, &t, at).expect("meta");
        let e = evaluate(&crate::checks::Judged {
            meta: &meta,
            history: &history,
            thresholds: &t,
            now: at,
            server_now: None,
            extras: &Default::default(),
        });
        let f = crate::checks::test_support::findings(&e);
        assert_eq!(f[0].evidence["replicas"], 15, "{:#}", f[0].evidence);
        assert_eq!(f[0].evidence["as_last_seen"], json!(["n3"]));
        assert!(!f[0].summary.contains("at least"), "{}", f[0].summary);
    }

    #[test]
    fn the_captured_empty_cluster_is_under_the_default() {
        let replies = fixture("healthy_3.json");
        let (findings, undecided) =
            keys(&judge_with(&replies, &[], &Thresholds::default(), evaluate));
        assert!(findings.is_empty() && undecided.is_empty());
    }
}
