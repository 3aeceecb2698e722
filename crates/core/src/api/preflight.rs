//! Serve: preflight, the question a restart script asks before each step (`$INSIGHTS.API.PREFLIGHT`):
//! can this server go down now without costing meta quorum, may this peer be removed, may this
//! server be renamed, and is the group whole again. A pure function of the engine's status.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::checks::members::{Member, MemberState, MetaAssessment, OfflineReason};
use crate::checks::{CheckId, Remediation, Severity};
use crate::observe::GroupId;
use crate::status::EngineStatus;
use crate::time_format;

/// `type` of the PREFLIGHT response.
pub const PREFLIGHT_TYPE: &str = "io.nats.insights.v1.preflight_response";

/// A status older than this says nothing about now: the answer is unknown.
pub const STATUS_STALE_AFTER: Duration = Duration::from_secs(10);

/// A member that stopped gracefully this recently may be restarting: it is not removed.
pub const RESTART_GRACE: Duration = Duration::from_secs(60);

/// What the caller is about to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Stop the server and start it again under the same name.
    Restart,
    /// Stop the server (for longer).
    Stop,
    /// Remove the server's peer from the meta group (`peer-remove`).
    Remove,
    /// Restart the server under a new `server_name`.
    Rename,
    /// Not an action: is the group whole again (a leader, every member answering and current,
    /// no active critical finding)?
    Healthy,
}

impl Action {
    fn parse(text: &str) -> Result<Action, ApiError> {
        match text.to_ascii_lowercase().as_str() {
            "restart" => Ok(Action::Restart),
            "stop" => Ok(Action::Stop),
            "remove" => Ok(Action::Remove),
            "rename" => Ok(Action::Rename),
            "healthy" => Ok(Action::Healthy),
            _ => Err(ApiError::BadRequest(format!(
                "unknown action {text:?}; known: restart, stop, remove, rename, healthy"
            ))),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Action::Restart => "restart",
            Action::Stop => "stop",
            Action::Remove => "remove",
            Action::Rename => "rename",
            Action::Healthy => "healthy",
        }
    }
}

/// PREFLIGHT request as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreflightRequest {
    /// `restart`, `stop`, `remove`, `rename` or `healthy`.
    pub action: Option<String>,
    /// The server (its `server_name`); optional for `healthy` (then every group).
    pub server: Option<String>,
    /// The new name, for `rename` only.
    pub to: Option<String>,
}

/// PREFLIGHT request once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// What is about to happen.
    pub action: Action,
    /// To which server.
    pub server: Option<String>,
    /// Its new name (rename).
    pub to: Option<String>,
}

impl PreflightRequest {
    /// Validates the request: an action, a server unless asking `healthy`, `to` for a rename.
    pub fn validate(self) -> Result<Question, ApiError> {
        let action = Action::parse(self.action.as_deref().ok_or_else(|| {
            ApiError::BadRequest(
                "missing \"action\": send {\"action\": \"restart\", \"server\": \"n2\"}"
                    .to_string(),
            )
        })?)?;
        let server = self.server.filter(|s| !s.trim().is_empty());
        if server.is_none() && action != Action::Healthy {
            return Err(ApiError::BadRequest(format!(
                "missing \"server\": the server_name to {}",
                action.as_str()
            )));
        }
        let to = self.to.filter(|s| !s.trim().is_empty());
        match (action, &to) {
            (Action::Rename, None) => Err(ApiError::BadRequest(
                "missing \"to\": the new server_name of the rename".to_string(),
            )),
            (Action::Rename, Some(_)) | (_, None) => Ok(Question { action, server, to }),
            (_, Some(_)) => Err(ApiError::BadRequest(format!(
                "\"to\" is for rename only, not {}",
                action.as_str()
            ))),
        }
    }
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Go ahead (for `healthy`: the group is whole).
    Safe,
    /// Not now: `reasons` say why, `wait_for` what would change it.
    Unsafe,
    /// The service cannot tell (no fresh view of the group, or the server is not a member).
    Unknown,
}

/// The PREFLIGHT response (`schemas/preflight_response.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreflightResponse {
    /// `io.nats.insights.v1.preflight_response`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Now (RFC 3339).
    pub timestamp: String,
    /// The action asked about.
    pub action: Action,
    /// The server asked about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The new name (rename).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The JetStream domain of the server's meta group, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// True only for [`Verdict::Safe`].
    pub safe: bool,
    /// Whether the server asked about leads its meta group now: before a restart or stop, step
    /// it down first (rolling-restart.sh reads this field, never the text of the steps).
    #[serde(default)]
    pub leader: bool,
    /// Safe, unsafe or unknown.
    pub verdict: Verdict,
    /// Why it is not safe (or what is unknown), one sentence each.
    pub reasons: Vec<String>,
    /// What would make it safe, one item each.
    pub wait_for: Vec<String>,
    /// How to carry the action out, in order, with the commands.
    pub steps: Vec<Remediation>,
}

struct Answer {
    reasons: Vec<String>,
    wait_for: Vec<String>,
    steps: Vec<Remediation>,
    unknown: bool,
}

impl Answer {
    fn new() -> Answer {
        Answer {
            reasons: Vec::new(),
            wait_for: Vec::new(),
            steps: Vec::new(),
            unknown: false,
        }
    }

    fn unknown(reason: String) -> Answer {
        Answer {
            reasons: vec![reason],
            unknown: true,
            ..Answer::new()
        }
    }

    fn refuse(&mut self, reason: String, wait_for: Option<String>) {
        self.reasons.push(reason);
        if let Some(w) = wait_for {
            if !self.wait_for.contains(&w) {
                self.wait_for.push(w);
            }
        }
    }
}

/// Answers a question from the engine's latest status.
pub fn preflight(question: &Question, status: &EngineStatus, now: SystemTime) -> PreflightResponse {
    let group = question.server.as_deref().and_then(|s| group_of(status, s));
    let answer = match fresh(status, now) {
        Err(reason) => Answer::unknown(reason),
        Ok(()) => match (question.action, &question.server, group) {
            (Action::Healthy, None, _) => {
                let mut answer = Answer::new();
                if status.meta_groups.is_empty() {
                    answer = Answer::unknown("the service sees no meta group".to_string());
                }
                for meta in &status.meta_groups {
                    whole(meta, None, status, &mut answer);
                }
                answer
            }
            (Action::Healthy, Some(server), None) => {
                let mut answer = Answer::new();
                answer.refuse(
                    format!("{server} is not a member of any meta group the service sees"),
                    Some(format!("{server} to join the meta group")),
                );
                answer
            }
            (_, Some(server), None) => Answer::unknown(format!(
                "{server} is not a member of any meta group the service sees (known members: {})",
                known_members(status)
            )),
            (_, Some(server), Some(meta)) if meta.unheard_since.is_some() => {
                Answer::unknown(unheard(meta, server, now))
            }
            (action, Some(server), Some(meta)) => match action {
                Action::Healthy => {
                    let mut answer = Answer::new();
                    whole(meta, Some(server), status, &mut answer);
                    answer
                }
                Action::Restart | Action::Stop => go_down(meta, server, action, status),
                Action::Remove => remove(meta, server, now),
                Action::Rename => rename(
                    meta,
                    server,
                    question.to.as_deref().unwrap_or_default(),
                    status,
                ),
            },
            (_, None, _) => Answer::unknown("no server named".to_string()),
        },
    };
    let verdict = match (answer.unknown, answer.reasons.is_empty()) {
        (true, _) => Verdict::Unknown,
        (false, true) => Verdict::Safe,
        (false, false) => Verdict::Unsafe,
    };
    PreflightResponse {
        kind: PREFLIGHT_TYPE.to_string(),
        timestamp: time_format::rfc3339(now),
        action: question.action,
        server: question.server.clone(),
        to: question.to.clone(),
        domain: group.and_then(|m| m.domain.clone()),
        safe: verdict == Verdict::Safe,
        leader: match (group, &question.server) {
            (Some(meta), Some(server))
                if meta.unheard_since.is_none() && fresh(status, now).is_ok() =>
            {
                meta.members.iter().any(|m| m.leader && &m.name == server)
            }
            _ => false,
        },
        verdict,
        reasons: answer.reasons,
        wait_for: answer.wait_for,
        // Steps are how to do it: only worth giving when it may be done now.
        steps: if answer.unknown {
            Vec::new()
        } else {
            answer.steps
        },
    }
}

/// Whether the status describes now: a poll within `STATUS_STALE_AFTER` and checks that ran.
fn fresh(status: &EngineStatus, now: SystemTime) -> Result<(), String> {
    let Some(last) = status.last_poll else {
        return Err("the service has not completed a poll yet".to_string());
    };
    let age = now.duration_since(last).unwrap_or_default();
    if age > STATUS_STALE_AFTER {
        return Err(format!(
            "the service's last poll is {} old: it cannot see the group now",
            humantime::format_duration(Duration::from_secs(age.as_secs()))
        ));
    }
    if let Some(skipped) = &status.skipped {
        return Err(format!("the service cannot judge the group now: {skipped}"));
    }
    Ok(())
}

/// Why nothing can be said about a member of a group no server of which answers (META_105).
fn unheard(meta: &MetaAssessment, server: &str, now: SystemTime) -> String {
    let since = meta.unheard_since.unwrap_or(now);
    format!(
        "{server} is a member of {}, which is unheard since {} ({} ago): none of its servers answers the service",
        meta.describe_group(),
        time_format::rfc3339(since),
        humantime::format_duration(Duration::from_secs(
            now.duration_since(since).unwrap_or_default().as_secs()
        ))
    )
}

fn group_of<'a>(status: &'a EngineStatus, server: &str) -> Option<&'a MetaAssessment> {
    status
        .meta_groups
        .iter()
        .find(|m| m.members.iter().any(|x| x.name == server))
}

fn known_members(status: &EngineStatus) -> String {
    let names: Vec<&str> = status
        .meta_groups
        .iter()
        .flat_map(|m| m.members.iter().map(|x| x.name.as_str()))
        .collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// Online and, in the leader's view, current (caught up and heard within 10 s).
fn ready(member: &Member) -> bool {
    member.online() && (member.leader || member.current == Some(true))
}

/// What keeps a member from being ready, in words.
fn not_ready(member: &Member) -> String {
    match &member.state {
        MemberState::Offline(_) if member.name_unknown => format!(
            "{} is a stale peer (no live server carries its name)",
            member.name
        ),
        MemberState::Offline(_) => format!("{} is offline", member.name),
        MemberState::Unknown => format!("{}'s state is unknown", member.name),
        MemberState::Online if member.current == Some(false) => format!(
            "{} is not current ({} operations behind): it is catching up",
            member.name, member.lag
        ),
        MemberState::Online => format!("{} is not confirmed current by a leader", member.name),
    }
}

fn critical_findings<'a>(
    meta: &MetaAssessment,
    status: &'a EngineStatus,
) -> impl Iterator<Item = &'a crate::findings::ActiveFinding> {
    let group = meta.group.clone();
    status.active.values().filter(move |a| {
        a.finding.check.severity() == Severity::Critical
            && GroupId::of(a.finding.domain.as_deref()) == group
    })
}

/// Warnings that make taking any member down unsafe, whichever member they are about: a member
/// catching up for long (META_110) needs every vote it can get behind it, routes missing between
/// members (CLUSTER_005) may leave the rest without a majority that hears each other once one
/// more goes, and a crash loop (SERVER_008) may take another member down during the restart.
const RESTART_HAZARDS: [CheckId; 3] =
    [CheckId::META_110, CheckId::CLUSTER_005, CheckId::SERVER_008];

fn restart_hazards<'a>(
    meta: &MetaAssessment,
    status: &'a EngineStatus,
) -> impl Iterator<Item = &'a crate::findings::ActiveFinding> {
    let group = meta.group.clone();
    status.active.values().filter(move |a| {
        RESTART_HAZARDS.contains(&a.finding.check)
            && GroupId::of(a.finding.domain.as_deref()) == group
    })
}

/// Restart or stop: without `server`, the members online and current must still make quorum,
/// nobody else may be offline or catching up, and the group must have a leader.
fn go_down(meta: &MetaAssessment, server: &str, action: Action, status: &EngineStatus) -> Answer {
    let mut answer = Answer::new();
    let target = meta.members.iter().find(|m| m.name == server);
    if meta.leader.is_none() {
        answer.refuse(
            format!("{} has no meta leader", meta.describe_group()),
            Some("a meta leader to be elected".to_string()),
        );
    }
    let others: Vec<&Member> = meta.members.iter().filter(|m| m.name != server).collect();
    let mut ready_others = 0;
    for member in &others {
        if ready(member) {
            ready_others += 1;
        } else {
            answer.refuse(
                not_ready(member),
                Some(format!("{} to be online and current", member.name)),
            );
        }
    }
    if ready_others < meta.quorum_needed {
        answer.refuse(
            format!(
                "without {server}, {ready_others} of the group's {} members are online and current; quorum needs {}",
                meta.cluster_size, meta.quorum_needed
            ),
            None,
        );
    }
    for active in critical_findings(meta, status) {
        // The target's own offline finding is what a restart of a down server fixes.
        if active.finding.server.as_deref() == Some(server) {
            continue;
        }
        answer.refuse(
            format!(
                "{} is active: {}",
                active.finding.key, active.finding.summary
            ),
            Some(format!("{} to resolve", active.finding.key)),
        );
    }
    for active in restart_hazards(meta, status) {
        answer.refuse(
            format!(
                "{} is active: {}",
                active.finding.key, active.finding.summary
            ),
            Some(format!("{} to resolve", active.finding.key)),
        );
    }
    if target.is_some_and(|t| t.leader) {
        answer.steps.push(Remediation::with_command(
            format!("{server} is the meta leader: step it down first, so the election happens while it still runs, then ask again."),
            "nats server cluster step-down",
        ));
    }
    let verb = match action {
        Action::Stop => "Stop",
        _ => "Restart",
    };
    answer.steps.push(Remediation::step(format!(
        "{verb} {server} with SIGTERM (or lame duck mode: nats-server --signal ldm=<pid>), keeping its server_name and store directory."
    )));
    if action == Action::Restart {
        answer.steps.push(Remediation::with_command(
            "Wait until the group is whole again before the next server.",
            format!("nats-insights wait healthy --server-name {server}"),
        ));
    }
    answer
}

/// Remove: only a member that is offline and not coming back, through a leader.
fn remove(meta: &MetaAssessment, server: &str, now: SystemTime) -> Answer {
    let mut answer = Answer::new();
    let Some(target) = meta.members.iter().find(|m| m.name == server) else {
        return Answer::unknown(format!("{server} is not a member"));
    };
    match &target.state {
        MemberState::Online => answer.refuse(
            format!("{server} is online: removing a running server turns its JetStream off, and a member that is restarting would come back removed"),
            Some(format!("{server} to be stopped for good")),
        ),
        MemberState::Unknown => {
            return Answer::unknown(format!("{server}'s state is unknown to the service"))
        }
        // A member no live server carries the name of is not coming back under it (the old
        // peer of a renamed server): its graceful stop is no sign of a restart.
        MemberState::Offline(_) if target.name_unknown => {}
        MemberState::Offline(reasons) => {
            for reason in reasons {
                if let OfflineReason::Departed { at, .. } = reason {
                    let ago = now.duration_since(*at).unwrap_or_default();
                    if ago < RESTART_GRACE {
                        answer.refuse(
                            format!("{server} stopped gracefully {} s ago, as a restart does: it may be coming back", ago.as_secs()),
                            Some(format!("{server} to stay down for {} s (or confirm it is gone for good)", RESTART_GRACE.as_secs())),
                        );
                    }
                }
            }
        }
    }
    if meta.leader.is_none() {
        answer.refuse(
            format!("{} has no meta leader to carry out the removal (see META_006's runbook for the recovery)", meta.describe_group()),
            Some("a meta leader to be elected".to_string()),
        );
    }
    // A membership change while others catch up or wait to join (the new name of a renamed
    // server) is one change too many: let them settle first.
    for member in meta
        .members
        .iter()
        .filter(|m| m.name != server && m.online() && !ready(m))
    {
        answer.refuse(
            not_ready(member),
            Some(format!("{} to be current", member.name)),
        );
    }
    for waiting in &meta.non_members {
        answer.refuse(
            format!("{waiting} runs but is not a member yet"),
            Some(format!("{waiting} to join the meta group")),
        );
    }
    // A member listed without a name is removed by its bare peer id.
    let target_id = match (&target.peer, target.name_unknown) {
        (Some(peer), true) => peer.clone(),
        _ => server.to_string(),
    };
    answer.steps.push(Remediation::step(format!(
        "Make sure {server} will not come back under this name (a renamed or retired server); a server that is only down must not be removed."
    )));
    answer.steps.push(Remediation::with_command(
        "Remove its peer through the meta leader.",
        format!("nats server cluster peer-remove {target_id}"),
    ));
    answer.steps.push(Remediation::with_command(
        "Check the group's new size and quorum.",
        "nats server report jetstream",
    ));
    answer
}

/// Rename: one server at a time; the previous rename must be complete (no stale peer, no live
/// server waiting to join) and the group healthy enough for the server to go down.
fn rename(meta: &MetaAssessment, server: &str, to: &str, status: &EngineStatus) -> Answer {
    let mut answer = go_down(meta, server, Action::Stop, status);
    answer.steps.clear();
    if meta.members.iter().any(|m| m.name == to) {
        answer.refuse(format!("{to} is already a member of the group"), None);
    }
    for stale in meta.members.iter().filter(|m| m.name_unknown) {
        let peer = stale.peer.as_deref().unwrap_or("<peer id>");
        answer.refuse(
            format!(
                "a previous rename is not complete: {} (peer id {peer}) is still a member; remove it before the next rename",
                stale.name
            ),
            Some(format!("the stale peer {} to be removed (nats server cluster peer-remove {peer})", stale.name)),
        );
    }
    for waiting in &meta.non_members {
        answer.refuse(
            format!(
                "{waiting} runs but is not a member yet: a previous rename or join is not complete"
            ),
            Some(format!("{waiting} to join the meta group")),
        );
    }
    let peer = meta
        .members
        .iter()
        .find(|m| m.name == server)
        .and_then(|m| m.peer.clone())
        .unwrap_or_else(|| "<peer id>".to_string());
    if meta.leader.as_deref() == Some(server) {
        answer.steps.push(Remediation::with_command(
            format!("{server} is the meta leader: step it down first, then ask again."),
            "nats server cluster step-down",
        ));
    }
    answer.steps.push(Remediation::step(format!(
        "Stop {server}, set server_name to {to} in its configuration (same store directory), and start it."
    )));
    answer.steps.push(Remediation::with_command(
        format!("Wait until {to} has joined and is current, and the old peer may be removed."),
        format!("nats-insights preflight remove {server} --wait 5m"),
    ));
    answer.steps.push(Remediation::with_command(
        format!("Remove the old peer of {server} (soon listed without a name) by its peer id."),
        format!("nats server cluster peer-remove {peer}"),
    ));
    answer.steps.push(Remediation::with_command(
        "Only once the group is whole again, rename the next server.",
        format!("nats-insights wait healthy --server-name {to}"),
    ));
    answer
}

/// Whole: a leader, every member answering and current, no stale peer, no active critical
/// finding; with a server named, that server among the current members.
fn whole(meta: &MetaAssessment, server: Option<&str>, status: &EngineStatus, answer: &mut Answer) {
    if meta.leader.is_none() {
        answer.refuse(
            format!("{} has no meta leader", meta.describe_group()),
            Some("a meta leader to be elected".to_string()),
        );
    }
    for member in meta.members.iter().filter(|m| !ready(m) || !m.answered) {
        answer.refuse(
            not_ready(member),
            Some(format!("{} to be online and current", member.name)),
        );
    }
    for waiting in &meta.non_members {
        answer.refuse(
            format!("{waiting} runs but is not a member of the meta group"),
            Some(format!("{waiting} to join the meta group")),
        );
    }
    if let Some(server) = server {
        if !meta.members.iter().any(|m| m.name == server) {
            answer.refuse(
                format!("{server} is not a member"),
                Some(format!("{server} to join the meta group")),
            );
        }
    }
    for active in critical_findings(meta, status) {
        answer.refuse(
            format!(
                "{} is active: {}",
                active.finding.key, active.finding.summary
            ),
            Some(format!("{} to resolve", active.finding.key)),
        );
    }
}
