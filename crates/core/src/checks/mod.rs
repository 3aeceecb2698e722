//! Evaluate: the second stage. Each check is a pure function of the observed meta group, the
//! history, the thresholds and `now`, returning findings (or saying it could not run).

pub mod members;

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::history::{Histories, History};
use crate::observe::{GroupId, Snapshot};
use crate::text::shell_quote;
pub use crate::thresholds::Thresholds;
pub use members::{assess_members, assess_unheard, MemberState, MetaAssessment, OfflineReason};

pub mod cluster_005;
pub mod cluster_007;
pub mod server_008;
pub mod server_014;
pub mod server_101;
pub mod sources;

pub mod meta_001;
pub mod meta_002;
pub mod meta_003;
pub mod meta_004;
pub mod meta_005;
pub mod meta_006;
pub mod meta_008;
pub mod meta_101;
pub mod meta_102;
pub mod meta_103;
pub mod meta_104;
pub mod meta_105;
pub mod meta_106;
pub mod meta_107;
pub mod meta_108;
pub mod meta_109;
pub mod meta_110;

/// Every check's spec, in catalog order (CHECKS, EXPLAIN, evaluation). Adding a check is its
/// file, its `mod` line above and its entry here; everything else reads the spec.
///
/// Codes below 100 are those of Synadia Insights' public catalogue (META_001 to 008,
/// CLUSTER_005, CLUSTER_007, SERVER_008, SERVER_014), used for the same condition; codes from
/// 101 up are this project's own range, for checks that catalogue does not publish a code for.
pub const SPECS: &[&CheckSpec] = &[
    &meta_001::SPEC,
    &meta_002::SPEC,
    &meta_003::SPEC,
    &meta_004::SPEC,
    &meta_005::SPEC,
    &meta_006::SPEC,
    &meta_008::SPEC,
    &meta_101::SPEC,
    &meta_102::SPEC,
    &meta_103::SPEC,
    &meta_104::SPEC,
    &meta_105::SPEC,
    &meta_106::SPEC,
    &meta_107::SPEC,
    &meta_108::SPEC,
    &meta_109::SPEC,
    &meta_110::SPEC,
    &cluster_005::SPEC,
    &cluster_007::SPEC,
    &server_008::SPEC,
    &server_014::SPEC,
    &server_101::SPEC,
];

/// Everything the service knows about one check, exported by the check's own module as `SPEC`:
/// the catalog (`$INSIGHTS.API.CHECKS`), the runbook (`explain`) and the evaluation all read it.
pub struct CheckSpec {
    /// Its id, e.g. `META_001`.
    pub id: CheckId,
    /// Human name.
    pub name: &'static str,
    /// Severity of its findings.
    pub severity: Severity,
    /// Category of its findings.
    pub category: &'static str,
    /// What one finding is about.
    pub applies_to: &'static str,
    /// When it is raised, in words, with the configured values filled in.
    pub threshold: fn(&Thresholds) -> String,
    /// The configured values it compares against, as the flags set them.
    pub settings: fn(&Thresholds) -> Vec<Setting>,
    /// Its runbook (markdown with the sections of [`crate::runbook::SECTIONS`]).
    pub runbook: &'static str,
    /// For a check whose findings note an event rather than a condition that clears (a
    /// restart): once raised, a finding stays until this long after it last changed, whatever a
    /// later round finds. Another instance that missed the event (it sampled the servers at
    /// other moments, or started after it) would otherwise resolve what this one raises, round
    /// after round. `None` for every check of a condition.
    pub held_for: Option<Duration>,
    /// The check itself: a pure function of one meta group's judgement.
    pub evaluate: fn(&Judged<'_>) -> Evaluation,
}

/// What a check judges: one meta group as assessed, its history, the thresholds and `now`.
pub struct Judged<'a> {
    /// The group's members as judged.
    pub meta: &'a MetaAssessment,
    /// The group's memory.
    pub history: &'a History,
    /// Configured limits.
    pub thresholds: &'a Thresholds,
    /// The time of the round.
    pub now: SystemTime,
    /// The servers' clock at this poll ([`crate::observe::Snapshot::server_now`]).
    pub server_now: Option<SystemTime>,
    /// What the sources beyond JSZ said this poll, by server (only the servers asked).
    pub extras: &'a std::collections::BTreeMap<String, crate::observe::ServerExtras>,
}

/// One configured value a check compares against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// Name, as in the flag without dashes and with underscores.
    pub name: &'static str,
    /// The flag that sets it.
    pub flag: &'static str,
    /// Its environment variable.
    pub env: &'static str,
    /// The value in force, as the flag would accept it (`3s`, `1`).
    pub value: String,
    /// The built-in default, in the same form.
    pub default: String,
}

/// A duration as the flags take it (`3s`, `10m`, `1m 30s`).
pub fn duration_words(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Setting {
    /// `--offline-after`, shared by the checks that judge members online.
    pub fn offline_after(t: &Thresholds) -> Setting {
        Setting {
            name: "offline_after",
            flag: "--offline-after",
            env: "INSIGHTS_OFFLINE_AFTER",
            value: duration_words(t.offline_after),
            default: duration_words(Thresholds::default().offline_after),
        }
    }
}

/// A check's id as on the wire and in subjects (`META_001`). Each check module declares its own
/// as an associated constant (`CheckId::META_001`); only ids of the catalog exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckId(&'static str);

impl Serialize for CheckId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for CheckId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CheckId, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        CheckId::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown check {text:?}")))
    }
}

/// How urgent a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Needs action now.
    Critical,
    /// Needs attention soon.
    Warning,
    /// For information.
    Info,
}

impl Severity {
    /// Lowercase name as used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl CheckId {
    /// An id; only check modules declare them.
    pub(crate) const fn new(id: &'static str) -> CheckId {
        CheckId(id)
    }

    /// Every check, in catalog order.
    pub fn all() -> Vec<CheckId> {
        SPECS.iter().map(|s| s.id).collect()
    }

    /// The id as on the wire and in subjects, e.g. `META_001`.
    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// Its spec.
    pub fn spec(self) -> &'static CheckSpec {
        // Ids exist only for the catalog's checks (`new` is private to the crate, `parse` reads
        // the catalog), so the search always finds it.
        SPECS
            .iter()
            .copied()
            .find(|s| s.id == self)
            .unwrap_or(SPECS[0])
    }

    /// Human name.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Severity of its findings.
    pub fn severity(self) -> Severity {
        self.spec().severity
    }

    /// Category of its findings.
    pub fn category(self) -> &'static str {
        self.spec().category
    }

    /// Parses `META_001` (case-insensitive).
    pub fn parse(s: &str) -> Option<CheckId> {
        SPECS
            .iter()
            .map(|spec| spec.id)
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `nats server cluster peer-remove <peer>`, the name or peer id quoted for a POSIX shell.
pub fn peer_remove_command(peer: &str) -> String {
    format!("nats server cluster peer-remove {}", shell_quote(peer))
}

/// The meta leader step-down request that places leadership in `cluster`: the cluster name
/// JSON-escaped inside the payload, the payload quoted for a POSIX shell.
pub fn stepdown_to_cluster_command(cluster: &str) -> String {
    let payload = serde_json::json!({"placement": {"cluster": cluster}}).to_string();
    format!(
        "nats request '$JS.API.META.LEADER.STEPDOWN' {}",
        shell_quote(&payload)
    )
}

/// One remediation step; `command` is something an operator can paste.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remediation {
    /// What to do.
    pub step: String,
    /// The command that does it, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

impl Remediation {
    /// A step without a command.
    pub fn step(step: impl Into<String>) -> Self {
        Remediation {
            step: step.into(),
            command: None,
        }
    }

    /// A step with a command.
    pub fn with_command(step: impl Into<String>, command: impl Into<String>) -> Self {
        Remediation {
            step: step.into(),
            command: Some(command.into()),
        }
    }
}

/// Something wrong, as one check sees it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Which check.
    pub check: CheckId,
    /// Stable identity, e.g. `META_001/default/n2` or `META_006/edge`: the check, the meta
    /// group (its domain, `default` for none) and, for per-server findings, the server.
    pub key: String,
    /// The affected member's own cluster, for per-server findings (a finding about the whole
    /// group has none: in a supercluster the group spans several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// JetStream domain, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Affected server, for per-server findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// One sentence for a human.
    pub summary: String,
    /// The observed values behind it.
    pub evidence: serde_json::Value,
    /// What to do about it.
    pub remediation: Vec<Remediation>,
    /// The facts whose change is material (an UPDATED event); evidence may move without it.
    pub fingerprint: String,
}

/// What a check concluded this round.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It ran. Findings are what is wrong now; `undecided` keys could not be judged (partial data)
    /// and keep whatever state they had.
    Ran {
        /// Current findings.
        findings: Vec<Finding>,
        /// Keys that must neither be raised nor resolved this round.
        undecided: BTreeSet<String>,
    },
    /// It could not run; nothing it found earlier may be resolved.
    Skipped {
        /// Why, for logs and status.
        reason: String,
    },
    /// Its group was retired by an operator: everything it found resolves, held findings
    /// (`CheckSpec::held_for`) too.
    Retired,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Which check.
    pub check: CheckId,
    /// The meta group it judged: only that group's findings are raised or resolved by it.
    pub group: GroupId,
    /// Its result.
    pub outcome: Outcome,
}

impl Evaluation {
    /// A check that ran on `meta`.
    pub fn ran(
        check: CheckId,
        meta: &MetaAssessment,
        findings: Vec<Finding>,
        undecided: BTreeSet<String>,
    ) -> Self {
        Evaluation {
            check,
            group: meta.group.clone(),
            outcome: Outcome::Ran {
                findings,
                undecided,
            },
        }
    }

    fn skipped(check: CheckId, group: &GroupId, reason: &str) -> Self {
        Evaluation {
            check,
            group: group.clone(),
            outcome: Outcome::Skipped {
                reason: reason.to_string(),
            },
        }
    }
}

/// One meta group's result of a round.
#[derive(Debug, Clone)]
pub struct GroupEvaluation {
    /// The group.
    pub group: GroupId,
    /// Its members as judged, when any of its servers answered with a meta view.
    pub meta: Option<MetaAssessment>,
    /// Every check's result on it.
    pub evaluations: Vec<Evaluation>,
    /// When none of its servers answered while others did: the group as its history last knew
    /// it, every member unknown and `unheard_since` set (META_105 judged it).
    pub unheard: Option<MetaAssessment>,
}

impl GroupEvaluation {
    /// Why its checks could not run, if they could not.
    pub fn skipped(&self) -> Option<&str> {
        self.evaluations.iter().find_map(|e| match &e.outcome {
            Outcome::Skipped { reason } => Some(reason.as_str()),
            Outcome::Ran { .. } | Outcome::Retired => None,
        })
    }
}

/// Runs every check on every meta group of a poll, each on its own part of the poll and its own
/// history (`parts` from [`Histories::split`]).
pub fn evaluate_groups(
    parts: &std::collections::BTreeMap<GroupId, Snapshot>,
    histories: &Histories,
    thresholds: &Thresholds,
    now: SystemTime,
) -> Vec<GroupEvaluation> {
    let empty = History::default();
    // A group is dark only while the service hears other servers (its own connection works).
    let heard = parts.values().any(|p| !p.views.is_empty());
    parts
        .iter()
        .map(|(group, part)| {
            let history = histories.groups.get(group).unwrap_or(&empty);
            let (meta, mut evaluations) = evaluate_group(group, part, history, thresholds, now);
            let unheard = match (heard, part.views.is_empty()) {
                (true, true) => assess_unheard(group, history, now),
                _ => None,
            };
            if let Some(unheard) = &unheard {
                let dark = meta_105::evaluate_dark(group, unheard, history, thresholds, now);
                for evaluation in &mut evaluations {
                    if evaluation.check == CheckId::META_105 {
                        *evaluation = dark.clone();
                    }
                }
            }
            GroupEvaluation {
                group: group.clone(),
                meta,
                evaluations,
                unheard,
            }
        })
        .collect()
}

/// A group an operator forgot (retired on purpose): every check ran and found nothing, so its
/// active findings resolve once; no assessment is left to show.
pub fn forgotten_group(group: &GroupId) -> GroupEvaluation {
    GroupEvaluation {
        group: group.clone(),
        meta: None,
        evaluations: SPECS
            .iter()
            .map(|spec| Evaluation {
                check: spec.id,
                group: group.clone(),
                outcome: Outcome::Retired,
            })
            .collect(),
        unheard: None,
    }
}

/// Runs every check on one meta group's part of a poll.
pub fn evaluate_group(
    group: &GroupId,
    snapshot: &Snapshot,
    history: &History,
    thresholds: &Thresholds,
    now: SystemTime,
) -> (Option<MetaAssessment>, Vec<Evaluation>) {
    let Some(meta) = assess_members(snapshot, history, thresholds, now) else {
        let reason = match (snapshot.views.is_empty(), group.domain()) {
            (true, None) => "no server answered the JSZ poll".to_string(),
            (true, Some(domain)) => format!("no server of domain {domain} answered the JSZ poll"),
            (false, None) => "no server reported a JetStream meta group".to_string(),
            (false, Some(domain)) => {
                format!("no server of domain {domain} reported a JetStream meta group")
            }
        };
        return (
            None,
            SPECS
                .iter()
                .map(|spec| Evaluation::skipped(spec.id, group, &reason))
                .collect(),
        );
    };
    let judged = Judged {
        meta: &meta,
        history,
        thresholds,
        now,
        server_now: snapshot.plausible_server_now(now),
        extras: &snapshot.extras,
    };
    let evaluations = SPECS.iter().map(|spec| (spec.evaluate)(&judged)).collect();
    (Some(meta), evaluations)
}

/// Runs every check on a poll of a single meta group (fixtures, benchmarks): the group is the
/// domain its servers report.
pub fn evaluate_all(
    snapshot: &Snapshot,
    history: &History,
    thresholds: &Thresholds,
    now: SystemTime,
) -> (Option<MetaAssessment>, Vec<Evaluation>) {
    let group = snapshot
        .views
        .values()
        .next()
        .map(|v| GroupId::of(v.server.domain.as_deref()))
        .unwrap_or_default();
    evaluate_group(&group, snapshot, history, thresholds, now)
}

/// Key of a per-group finding: the check and the group (its domain, or `default`), never a
/// cluster name, which changes when leadership moves across a supercluster.
pub fn group_key(check: CheckId, meta: &MetaAssessment) -> String {
    format!("{}/{}", check, meta.group.label())
}

/// Key of a per-group finding from the group alone (a group no server answers for has no
/// assessment of its own).
pub fn group_id_key(check: CheckId, group: &GroupId) -> String {
    format!("{}/{}", check, group.label())
}

/// Key of a per-server finding. Built by hand rather than formatted or joined: checks that judge
/// every member build one for each member they cannot judge, thousands per poll at 1,000 servers.
pub fn server_key(check: CheckId, meta: &MetaAssessment, server: &str) -> String {
    let (check, group) = (check.as_str(), meta.group.label());
    let mut key = String::with_capacity(check.len() + group.len() + server.len() + 2);
    for part in [check, "/", group, "/", server] {
        key.push_str(part);
    }
    key
}

/// Keys of per-server findings of `check` for the servers the group's history knows but this
/// poll's membership does not list (a leaderless moment on a release whose views then omit the
/// reporter, for one): undecided, so that their findings are not resolved by a blind spot. A
/// peer removed from the group leaves the history, and its finding resolves.
pub fn unlisted_known(
    check: CheckId,
    meta: &MetaAssessment,
    history: &History,
) -> BTreeSet<String> {
    // Both lists are in name order, so one walk along the members finds them: scanning the
    // members for every known server was quadratic (150 ms per poll at 5,000 servers, three
    // checks asking), and a set of them built per check cost more than the rest of the check.
    let mut members = meta.members.iter().map(|m| m.name.as_str()).peekable();
    history
        .servers
        .keys()
        .filter(|name| {
            while members.next_if(|m| *m < name.as_str()).is_some() {}
            members.next_if_eq(&name.as_str()).is_none()
        })
        .map(|name| server_key(check, meta, name))
        .collect()
}

/// Whole seconds and tenths, for summaries.
pub fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Helpers for the checks' unit tests: captured JSZ replies (`tests/fixtures`), edited, judged.
#[cfg(test)]
pub(crate) mod test_support {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::observe::{jsz::JszReply, Via};

    /// A fixture's replies as JSON, to edit.
    pub fn fixture(name: &str) -> Vec<serde_json::Value> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures")
            .join(name);
        let text = std::fs::read_to_string(&path).expect("fixture");
        serde_json::from_str(&text).expect("fixture JSON")
    }

    /// Sets `meta_cluster.<field>` in `server`'s reply.
    pub fn set_meta_field(
        replies: &mut [serde_json::Value],
        server: &str,
        field: &str,
        value: serde_json::Value,
    ) {
        let reply = replies
            .iter_mut()
            .find(|r| r["server"]["name"] == server)
            .expect("server in fixture");
        reply["data"]["meta_cluster"][field] = value;
    }

    /// Sets `data.<field>` in `server`'s reply.
    pub fn set_data_field(
        replies: &mut [serde_json::Value],
        server: &str,
        field: &str,
        value: serde_json::Value,
    ) {
        let reply = replies
            .iter_mut()
            .find(|r| r["server"]["name"] == server)
            .expect("server in fixture");
        reply["data"][field] = value;
    }

    /// The replies as one poll's snapshot (`identity`: servers only their IDZ answered for, as
    /// in a large group's poll).
    pub fn snapshot(replies: &[serde_json::Value], identity: &[&str]) -> Snapshot {
        let decoded = replies.iter().map(|r| {
            let reply: JszReply = serde_json::from_value(r.clone()).expect("reply");
            let via = if identity.contains(&reply.server.name.as_str()) {
                Via::Identity
            } else {
                Via::Gather
            };
            (reply, via)
        });
        let mut snapshot = Snapshot::from_replies(SystemTime::UNIX_EPOCH, decoded, &[]);
        for view in snapshot.views.values_mut() {
            if view.via == Via::Identity {
                view.meta = None;
                view.facts = None;
                view.jetstream = false;
            }
        }
        snapshot
    }

    /// One check run on the replies, with these thresholds.
    pub fn judge_with(
        replies: &[serde_json::Value],
        identity: &[&str],
        thresholds: &Thresholds,
        evaluate: fn(&Judged<'_>) -> Evaluation,
    ) -> Evaluation {
        let snapshot = snapshot(replies, identity);
        let history = History::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        let meta = assess_members(&snapshot, &history, thresholds, now).expect("a meta group");
        evaluate(&Judged {
            meta: &meta,
            history: &history,
            thresholds,
            now,
            server_now: snapshot.plausible_server_now(now),
            extras: &Default::default(),
        })
    }

    /// One check run on the replies with the default thresholds.
    pub fn judge_fixture(
        replies: &[serde_json::Value],
        evaluate: fn(&Judged<'_>) -> Evaluation,
    ) -> Evaluation {
        judge_with(replies, &[], &Thresholds::default(), evaluate)
    }

    /// The findings of an evaluation that ran.
    pub fn findings(e: &Evaluation) -> Vec<Finding> {
        match &e.outcome {
            Outcome::Ran { findings, .. } => findings.clone(),
            Outcome::Skipped { reason } => panic!("skipped: {reason}"),
            Outcome::Retired => panic!("retired"),
        }
    }

    /// Keys of the findings and of the undecided, of an evaluation that ran.
    pub fn keys(e: &Evaluation) -> (Vec<String>, Vec<String>) {
        match &e.outcome {
            Outcome::Ran {
                findings,
                undecided,
            } => (
                findings.iter().map(|f| f.key.clone()).collect(),
                undecided.iter().cloned().collect(),
            ),
            Outcome::Skipped { reason } => panic!("skipped: {reason}"),
            Outcome::Retired => panic!("retired"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_has_one_spec_per_id_and_ids_round_trip() {
        let ids = CheckId::all();
        let unique: BTreeSet<CheckId> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "duplicate ids in SPECS");
        for id in ids {
            assert_eq!(id.spec().id, id);
            assert_eq!(CheckId::parse(&id.as_str().to_lowercase()), Some(id));
            let json = serde_json::to_string(&id).expect("json");
            assert_eq!(json, format!("\"{id}\""));
            assert_eq!(serde_json::from_str::<CheckId>(&json).expect("decodes"), id);
        }
        assert!(serde_json::from_str::<CheckId>("\"META_999\"").is_err());
        assert_eq!(CheckId::parse("META_999"), None);
    }

    #[test]
    fn unlisted_known_names_every_known_server_the_membership_leaves_out() {
        use crate::history::ServerRecord;
        // Known servers before, between and after the members, and members never known.
        let meta = members::leaderless_assessment(&["b", "d", "f"], &["h"]);
        let mut history = History::default();
        for name in ["a", "b", "c", "d", "e", "g", "h", "i", "j"] {
            history.servers.insert(
                name.to_string(),
                ServerRecord {
                    server_id: format!("id-{name}"),
                    last_answered: SystemTime::UNIX_EPOCH,
                    cluster: None,
                    version: None,
                    restarted_at: None,
                    missed: 0,
                },
            );
        }
        let unlisted: Vec<String> = unlisted_known(CheckId::META_004, &meta, &history)
            .into_iter()
            .collect();
        let keys = ["a", "c", "e", "g", "i", "j"].map(|n| format!("META_004/default/{n}"));
        assert_eq!(unlisted, keys);
        assert_eq!(
            server_key(CheckId::META_004, &meta, "n2"),
            "META_004/default/n2"
        );
    }

    #[test]
    fn remediation_commands_pass_hostile_names_to_the_shell_as_one_argument() {
        for name in crate::text::HOSTILE_NAMES.iter().chain(&["n2", "ZnRYvR3s"]) {
            let words = crate::text::shell_words(&peer_remove_command(name));
            assert_eq!(words, ["nats", "server", "cluster", "peer-remove", name]);
            let words = crate::text::shell_words(&stepdown_to_cluster_command(name));
            assert_eq!(
                words[..3],
                ["nats", "request", "$JS.API.META.LEADER.STEPDOWN"]
            );
            assert_eq!(words.len(), 4, "{words:?}");
            let payload: serde_json::Value = serde_json::from_str(&words[3]).expect("JSON");
            assert_eq!(payload["placement"]["cluster"], *name);
        }
        assert_eq!(
            peer_remove_command("n2"),
            "nats server cluster peer-remove n2"
        );
        assert_eq!(
            stepdown_to_cluster_command("east"),
            r#"nats request '$JS.API.META.LEADER.STEPDOWN' '{"placement":{"cluster":"east"}}'"#
        );
    }
}
