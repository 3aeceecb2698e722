//! Client side of serve: the API responses as the CLI reads them (lenient, so a newer service still
//! renders) and their rendering as text for a person: tables, finding blocks, colour. Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::wire::FindingEvent;

/// The overall state STATUS reports, and the exit code `nats-insights status` ends with
/// (Nagios plugin convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// 0: no active finding.
    Ok,
    /// 1: only warnings.
    Warning,
    /// 2: at least one critical finding.
    Critical,
    /// 3: the service could not be asked, or has not seen the meta group yet.
    Unknown,
}

impl Health {
    /// From STATUS's `status` field.
    pub fn from_status(status: &str) -> Health {
        match status {
            "ok" => Health::Ok,
            "warning" => Health::Warning,
            "critical" => Health::Critical,
            _ => Health::Unknown,
        }
    }

    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Health::Ok => 0,
            Health::Warning => 1,
            Health::Critical => 2,
            Health::Unknown => 3,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Health::Ok => "OK",
            Health::Warning => "WARNING",
            Health::Critical => "CRITICAL",
            Health::Unknown => "UNKNOWN",
        }
    }

    fn colour(self) -> Colour {
        match self {
            Health::Ok => Colour::Green,
            Health::Warning => Colour::Yellow,
            Health::Critical => Colour::Red,
            Health::Unknown => Colour::Dim,
        }
    }
}

/// ANSI colours used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// Healthy, resolved.
    Green,
    /// Warnings, unknown.
    Yellow,
    /// Critical, offline.
    Red,
    /// Updates.
    Cyan,
    /// Headings.
    Bold,
    /// Secondary text.
    Dim,
}

/// Whether to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Emit ANSI colour codes.
    pub colour: bool,
}

impl Style {
    /// Colour only on a terminal and when `NO_COLOR` is unset or empty (no-color.org).
    pub fn decide(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> Style {
        Style {
            colour: is_terminal && no_color.is_none_or(|v| v.is_empty()),
        }
    }

    /// For standard output of this process.
    pub fn for_stdout() -> Style {
        Style::decide(
            std::io::IsTerminal::is_terminal(&std::io::stdout()),
            std::env::var_os("NO_COLOR").as_deref(),
        )
    }

    /// Plain text.
    pub const PLAIN: Style = Style { colour: false };

    /// `text` in `colour` when colouring.
    pub fn paint(self, text: &str, colour: Colour) -> String {
        if !self.colour {
            return text.to_string();
        }
        let code = match colour {
            Colour::Green => "32",
            Colour::Yellow => "33",
            Colour::Red => "31",
            Colour::Cyan => "36",
            Colour::Bold => "1",
            Colour::Dim => "2",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// STATUS as the CLI reads it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StatusView {
    /// `ok`, `warning`, `critical`, `unknown`.
    pub status: String,
    /// Instance id.
    pub instance: String,
    /// Service version.
    pub version: String,
    /// The service's now.
    pub timestamp: String,
    /// Uptime.
    pub uptime_ms: u64,
    /// The first meta group, if seen (deprecated in the response; read by older services).
    pub meta: Option<MetaView>,
    /// Every meta group, one per JetStream domain.
    pub meta_groups: Vec<MetaView>,
    /// Active findings.
    pub findings: Vec<FindingItem>,
    /// The service's own health.
    pub service: HealthView,
}

/// The meta group in STATUS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MetaView {
    /// The group as in finding keys: its domain, or `default`.
    pub group: String,
    /// Cluster of the view used (the leader's).
    pub cluster: String,
    /// The leader's own cluster.
    pub lead_cluster: Option<String>,
    /// Members per cluster.
    pub clusters: Vec<ClusterView>,
    /// Domain.
    pub domain: Option<String>,
    /// Leader.
    pub leader: Option<String>,
    /// Raft membership size.
    pub cluster_size: u64,
    /// Quorum.
    pub quorum_needed: u64,
    /// Servers answering.
    pub servers_answering: u64,
    /// Members.
    pub members: Vec<MemberView>,
    /// Live non-members.
    pub non_members: Vec<String>,
    /// Servers of the domain with JetStream outside the meta group.
    pub outside: Vec<String>,
    /// Leaderless since.
    pub leaderless_since: Option<String>,
    /// No server of the group answers since (META_105): its members are unknown.
    pub unheard_since: Option<String>,
}

/// Members of one cluster of a meta group.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ClusterView {
    /// Cluster name.
    pub cluster: String,
    /// Members in it.
    pub members: u64,
    /// Of those, online.
    pub online: u64,
}

impl MetaView {
    /// True when its members sit in several clusters.
    fn supercluster(&self) -> bool {
        self.clusters.len() > 1
    }

    /// True when `domain` names this group (`default` names the default domain).
    pub fn is_domain(&self, domain: &str) -> bool {
        match &self.domain {
            Some(d) => d == domain,
            None => domain == crate::observe::DEFAULT_GROUP_LABEL || domain.is_empty(),
        }
    }
}

impl StatusView {
    /// Every meta group (a service before meta groups sent only `meta`).
    pub fn groups(&self) -> Vec<&MetaView> {
        if self.meta_groups.is_empty() {
            self.meta.iter().collect()
        } else {
            self.meta_groups.iter().collect()
        }
    }

    /// Only what concerns one domain's group: its group and its findings. The overall status
    /// becomes the worst severity among those findings (`unknown` when the group is not seen).
    pub fn only_domain(&self, domain: &str) -> StatusView {
        let mut view = self.clone();
        let groups: Vec<MetaView> = self
            .groups()
            .into_iter()
            .filter(|m| m.is_domain(domain))
            .cloned()
            .collect();
        view.findings.retain(|f| match &f.domain {
            Some(d) => d == domain,
            None => domain == crate::observe::DEFAULT_GROUP_LABEL || domain.is_empty(),
        });
        let worst = view
            .findings
            .iter()
            .map(|f| match f.severity.as_str() {
                "critical" => 0,
                "warning" => 1,
                _ => 2,
            })
            .min();
        view.status = match (groups.is_empty(), worst) {
            (true, _) => "unknown",
            (_, Some(0)) => "critical",
            (_, Some(1)) => "warning",
            _ => "ok",
        }
        .to_string();
        view.meta = groups.first().cloned();
        view.meta_groups = groups;
        view
    }
}

/// One member row.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MemberView {
    /// Name.
    pub name: String,
    /// Peer id.
    pub peer: Option<String>,
    /// Its own cluster.
    pub cluster: Option<String>,
    /// Leads.
    pub leader: bool,
    /// Answered the last poll.
    pub answered: bool,
    /// Listed as "Server name unknown".
    pub name_unknown: bool,
    /// Caught up.
    pub current: Option<bool>,
    /// Milliseconds since the leader heard from it.
    pub active: Option<u64>,
    /// Raft lag.
    pub lag: u64,
    /// `online`, `offline`, `unknown`.
    pub state: String,
    /// Why offline.
    pub reasons: Vec<serde_json::Value>,
}

/// The service health in STATUS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HealthView {
    /// Last poll.
    pub last_poll: Option<String>,
    /// Its duration.
    pub last_poll_ms: u64,
    /// Servers answering it.
    pub servers_answering: u64,
    /// Why checks were skipped.
    pub skipped: Option<String>,
    /// Polls.
    pub polls: u64,
    /// Events by kind.
    pub events: BTreeMap<String, u64>,
    /// Malformed inputs.
    pub malformed: u64,
    /// Store state (opaque).
    pub store: serde_json::Value,
    /// Which meta members have a pinned link.
    pub links: Vec<LinkView>,
}

/// One meta member's pinned link in STATUS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LinkView {
    /// Member.
    pub server: String,
    /// Whether a pinned link reaches it.
    pub direct: bool,
    /// Without one: why.
    pub reason: Option<String>,
}

/// The line saying which members have a direct link, and which have partition detection
/// degraded for want of one (`None` before any member was seen).
fn links_line(links: &[LinkView], style: Style) -> Option<String> {
    if links.is_empty() {
        return None;
    }
    let direct: Vec<&str> = links
        .iter()
        .filter(|l| l.direct)
        .map(|l| l.server.as_str())
        .collect();
    let mut line = match direct.is_empty() {
        true => "Direct links: none".to_string(),
        false => format!("Direct links: {}", direct.join(" ")),
    };
    let without: Vec<&LinkView> = links.iter().filter(|l| !l.direct).collect();
    if without.is_empty() {
        return Some(style.paint(&line, Colour::Dim));
    }
    for link in without {
        let _ = write!(
            line,
            "; none to {} (partition detection degraded: {})",
            link.server,
            link.reason.as_deref().unwrap_or("unknown")
        );
    }
    Some(style.paint(&line, Colour::Yellow))
}

/// One finding in STATUS or FINDINGS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FindingItem {
    /// Key.
    pub finding: String,
    /// Check id.
    pub check: String,
    /// Check name.
    pub name: String,
    /// Severity.
    pub severity: String,
    /// `active` or `resolved`.
    pub state: String,
    /// Server.
    pub server: Option<String>,
    /// Cluster.
    pub cluster: Option<String>,
    /// Domain of its meta group, when set.
    pub domain: Option<String>,
    /// Summary.
    pub summary: String,
    /// Steps.
    pub remediation: Vec<RemediationView>,
    /// Revision.
    pub revision: u64,
    /// Raised at.
    pub raised_at: String,
    /// Resolved at.
    pub resolved_at: Option<String>,
}

/// One remediation step.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RemediationView {
    /// What to do.
    pub step: String,
    /// Command.
    pub command: Option<String>,
}

/// FINDINGS as the CLI reads it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FindingsView {
    /// The service's now.
    pub timestamp: String,
    /// Matching before the limit.
    pub total: u64,
    /// Findings.
    pub findings: Vec<FindingItem>,
}

/// CHECKS as the CLI reads it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ChecksView {
    /// Checks.
    pub checks: Vec<CheckView>,
}

/// One check.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CheckView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Severity.
    pub severity: String,
    /// Category.
    pub category: String,
    /// What a finding is about.
    pub applies_to: String,
    /// When it raises.
    pub threshold: String,
    /// Settings.
    pub settings: Vec<SettingView>,
    /// Active findings.
    pub active: u64,
}

/// One configured value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SettingView {
    /// Flag.
    pub flag: String,
    /// Value in force.
    pub value: String,
    /// Default.
    pub default: String,
}

fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

/// A short duration: `850ms`, `4.2s`, `3m12s`, `2h05m`, `3d04h`.
pub fn short_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if secs < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else if secs < 86_400 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600)
    }
}

/// How long before `now` a timestamp lies, e.g. `12.0s ago`; the text itself when unparsable.
fn ago(at: &str, now: &str) -> String {
    match (parse_time(at), parse_time(now)) {
        (Some(at), Some(now)) => format!(
            "{} ago",
            short_duration(now.duration_since(at).unwrap_or_default())
        ),
        _ => at.to_string(),
    }
}

fn severity_colour(severity: &str) -> Colour {
    match severity {
        "critical" => Colour::Red,
        "warning" => Colour::Yellow,
        _ => Colour::Cyan,
    }
}

/// A table cell: its text and colour.
type Cell = (String, Option<Colour>);

/// Left-aligned columns two spaces apart; the header in bold; colour applied after padding so
/// escape codes never shift the columns.
fn table(header: &[&str], rows: &[Vec<Cell>], style: Style) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, (text, _)) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(text.chars().count());
            }
        }
    }
    let line = |cells: Vec<(String, Option<Colour>)>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (text, colour)) in cells.into_iter().enumerate() {
            let padded = if i == last {
                text
            } else {
                let pad = widths[i].saturating_sub(text.chars().count());
                format!("{text}{}  ", " ".repeat(pad))
            };
            match colour {
                Some(c) => out.push_str(&style.paint(&padded, c)),
                None => out.push_str(&padded),
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(
        header
            .iter()
            .map(|h| (h.to_string(), Some(Colour::Bold)))
            .collect(),
    );
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn tick(value: Option<bool>) -> Cell {
    match value {
        Some(true) => ("✓".to_string(), Some(Colour::Green)),
        Some(false) => ("✗".to_string(), Some(Colour::Red)),
        None => ("-".to_string(), None),
    }
}

/// Why a member is offline, in a few words.
fn reason_words(reason: &serde_json::Value) -> String {
    let field = |k: &str| reason[k].as_str().unwrap_or("?").to_string();
    match reason["reason"].as_str().unwrap_or("") {
        "departed" => match reason["kind"].as_str() {
            Some("lame_duck") => "entered lame duck".to_string(),
            _ => "shut down".to_string(),
        },
        "offline_flag" => format!("flagged offline by {}", field("reported_by")),
        "silent" => format!(
            "silent {} (leader {})",
            short_duration(Duration::from_millis(
                reason["active"].as_u64().unwrap_or(0)
            )),
            field("reported_by")
        ),
        "cut_off" => format!(
            "cut off from {}",
            reason["unheard_by"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ),
        "not_answering" => "not answering".to_string(),
        other => other.replace('_', " "),
    }
}

fn member_note(m: &MemberView) -> String {
    let mut notes: Vec<String> = m.reasons.iter().map(reason_words).collect();
    if m.name_unknown {
        notes.push("probable stale peer (name unknown to the cluster)".to_string());
    }
    if m.state == "unknown" {
        notes.push("no leader view to judge by".to_string());
    }
    notes.join("; ")
}

/// The meta members as a table like `nats server report jetstream`: the leader marked `*`.
pub fn member_table(meta: &MetaView, style: Style) -> String {
    let rows: Vec<Vec<Cell>> = meta
        .members
        .iter()
        .map(|m| {
            let online = match m.state.as_str() {
                "online" => tick(Some(true)),
                "offline" => tick(Some(false)),
                _ => ("?".to_string(), Some(Colour::Yellow)),
            };
            let mut row = vec![
                (
                    format!("{}{}", m.name, if m.leader { "*" } else { "" }),
                    None,
                ),
                (m.peer.clone().unwrap_or_else(|| "-".to_string()), None),
                (if m.leader { "yes" } else { "no" }.to_string(), None),
                tick(m.current),
                online,
                (
                    m.active
                        .map(|ms| short_duration(Duration::from_millis(ms)))
                        .unwrap_or_else(|| "-".to_string()),
                    None,
                ),
                (m.lag.to_string(), None),
                (member_note(m), Some(Colour::Dim)),
            ];
            if meta.supercluster() {
                row.insert(1, (m.cluster.clone().unwrap_or_else(|| "-".into()), None));
            }
            row
        })
        .collect();
    let mut header = vec![
        "MEMBER", "PEER ID", "LEADER", "CURRENT", "ONLINE", "ACTIVE", "LAG", "NOTE",
    ];
    if meta.supercluster() {
        header.insert(1, "CLUSTER");
    }
    table(&header, &rows, style)
}

/// The line above a group's member table: which group, its size, quorum and leader.
fn group_heading(meta: &MetaView, status: &StatusView, style: Style) -> String {
    let online = meta.members.iter().filter(|m| m.state == "online").count();
    let leader = match (&meta.leader, &meta.leaderless_since) {
        (Some(l), _) => match (
            &meta.lead_cluster,
            meta.supercluster() || meta.domain.is_some(),
        ) {
            (Some(c), true) => format!("leader {l} (cluster {c})"),
            _ => format!("leader {l}"),
        },
        (None, Some(since)) => format!(
            "{} (since {})",
            style.paint("no leader", Colour::Red),
            ago(since, &status.timestamp)
        ),
        (None, None) => style.paint("no leader", Colour::Red),
    };
    let name = match (&meta.domain, meta.supercluster()) {
        (Some(d), false) => format!("of domain {d} (cluster {})", meta.cluster),
        (Some(d), true) => format!("of domain {d}",),
        (None, false) => meta.cluster.clone(),
        (None, true) => "(supercluster)".to_string(),
    };
    if let Some(since) = &meta.unheard_since {
        return format!(
            "Meta group {name}: {} members, {} since {since} ({}): no server of it answers, members unknown",
            meta.cluster_size,
            style.paint("unheard", Colour::Red),
            ago(since, &status.timestamp)
        );
    }
    let mut line = format!(
        "Meta group {name}: {} members, quorum {}, {leader}, {online} online",
        meta.cluster_size, meta.quorum_needed,
    );
    if meta.supercluster() {
        let per: Vec<String> = meta
            .clusters
            .iter()
            .map(|c| format!("{} {}/{}", c.cluster, c.online, c.members))
            .collect();
        line.push_str(&format!("; clusters (online/members): {}", per.join(", ")));
    }
    line
}

fn store_words(store: &serde_json::Value) -> String {
    match store {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

/// `nats-insights status`: the overall state, the member table, the active findings, and the
/// service's own health.
pub fn status_text(status: &StatusView, style: Style) -> String {
    let health = Health::from_status(&status.status);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}",
        style.paint("nats-insights:", Colour::Bold),
        style.paint(health.word(), health.colour())
    );
    let groups = status.groups();
    for (i, meta) in groups.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "{}\n", group_heading(meta, status, style));
        out.push_str(&member_table(meta, style));
        if !meta.non_members.is_empty() {
            let _ = writeln!(
                out,
                "Live servers that are not members: {}",
                meta.non_members.join(", ")
            );
        }
        if !meta.outside.is_empty() {
            let _ = writeln!(
                out,
                "Servers of this domain running JetStream outside the meta group: {}",
                meta.outside.join(", ")
            );
        }
    }
    match groups.is_empty() {
        false => {}
        true => {
            let _ = writeln!(
                out,
                "The meta group has not been seen yet{}.",
                status
                    .service
                    .skipped
                    .as_deref()
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default()
            );
        }
    }
    out.push('\n');
    if status.findings.is_empty() {
        let _ = writeln!(out, "No active findings.");
    } else {
        let _ = writeln!(
            out,
            "{}",
            style.paint(
                &format!("Active findings ({}):", status.findings.len()),
                Colour::Bold
            )
        );
        let rows: Vec<Vec<Cell>> = status
            .findings
            .iter()
            .map(|f| {
                vec![
                    (
                        f.severity.to_uppercase(),
                        Some(severity_colour(&f.severity)),
                    ),
                    (f.check.clone(), None),
                    (f.server.clone().unwrap_or_else(|| "-".to_string()), None),
                    (ago(&f.raised_at, &status.timestamp), None),
                    (f.summary.clone(), None),
                ]
            })
            .collect();
        out.push_str(&table(
            &["SEVERITY", "CHECK", "SERVER", "RAISED", "SUMMARY"],
            &rows,
            style,
        ));
        let _ = writeln!(
            out,
            "{}",
            style.paint(
                "What to do: nats-insights findings; the runbook: nats-insights explain <CHECK>",
                Colour::Dim
            )
        );
    }
    let s = &status.service;
    let last_poll = s
        .last_poll
        .as_deref()
        .map(|t| {
            format!(
                "last poll {} (took {} ms)",
                ago(t, &status.timestamp),
                s.last_poll_ms
            )
        })
        .unwrap_or_else(|| "no poll completed yet".to_string());
    let events: u64 = s.events.values().sum();
    let _ = writeln!(
        out,
        "\n{}",
        style.paint(
            &format!(
                "Service {} v{}, up {}: {last_poll}, {} servers answering, {} polls, {events} events, {} malformed inputs, store {}",
                status.instance,
                status.version,
                short_duration(Duration::from_millis(status.uptime_ms)),
                s.servers_answering,
                s.polls,
                s.malformed,
                store_words(&s.store),
            ),
            Colour::Dim
        )
    );
    if let Some(line) = links_line(&s.links, style) {
        let _ = writeln!(out, "{line}");
    }
    if let (Some(skipped), false) = (&s.skipped, status.groups().is_empty()) {
        let _ = writeln!(
            out,
            "{}",
            style.paint(
                &format!("Checks skipped in the last round: {skipped}"),
                Colour::Yellow
            )
        );
    }
    out
}

/// `nats-insights findings`: one block per finding with its remediation.
pub fn findings_text(findings: &FindingsView, style: Style) -> String {
    let mut out = String::new();
    if findings.findings.is_empty() {
        out.push_str("No findings match.\n");
        return out;
    }
    for f in &findings.findings {
        let when = match (&f.state[..], &f.resolved_at) {
            ("resolved", Some(at)) => format!(
                "raised {}, resolved {}",
                ago(&f.raised_at, &findings.timestamp),
                ago(at, &findings.timestamp)
            ),
            _ => format!("raised {}", ago(&f.raised_at, &findings.timestamp)),
        };
        let (label, colour) = if f.state == "resolved" {
            ("RESOLVED".to_string(), Colour::Green)
        } else {
            (f.severity.to_uppercase(), severity_colour(&f.severity))
        };
        let _ = writeln!(
            out,
            "{} {} {}{}{} · {when} · revision {}",
            style.paint(&label, colour),
            style.paint(&f.check, Colour::Bold),
            f.name,
            f.domain
                .as_deref()
                .map(|d| format!(" · domain {d}"))
                .unwrap_or_default(),
            f.server
                .as_deref()
                .map(|s| format!(" · {s}"))
                .unwrap_or_default(),
            f.revision
        );
        let _ = writeln!(out, "  {}", f.summary);
        for step in &f.remediation {
            let _ = writeln!(out, "  → {}", step.step);
            if let Some(command) = &step.command {
                let _ = writeln!(
                    out,
                    "      {}",
                    style.paint(&format!("$ {command}"), Colour::Cyan)
                );
            }
        }
        out.push('\n');
    }
    if findings.total > findings.findings.len() as u64 {
        let _ = writeln!(
            out,
            "({} of {} shown; raise --limit for more)",
            findings.findings.len(),
            findings.total
        );
    }
    out
}

/// `nats-insights preflight` and `wait healthy`: the verdict, then why, what it waits for and
/// the steps with their commands.
pub fn preflight_text(answer: &crate::api::preflight::PreflightResponse, style: Style) -> String {
    use crate::api::preflight::{Action, Verdict};
    let target = match (&answer.server, &answer.to) {
        (Some(server), Some(to)) => format!(" {server} to {to}"),
        (Some(server), None) => format!(" {server}"),
        (None, _) => String::new(),
    };
    let group = match &answer.server {
        Some(server) => format!("the meta group of {server}"),
        None => "every meta group".to_string(),
    };
    let head = match (answer.action, &answer.verdict) {
        (Action::Healthy, Verdict::Safe) => {
            style.paint(&format!("HEALTHY: {group} is whole"), Colour::Green)
        }
        (Action::Healthy, Verdict::Unsafe) => style.paint(
            &format!("NOT HEALTHY: {group} is not whole yet"),
            Colour::Yellow,
        ),
        (_, Verdict::Safe) => style.paint(
            &format!("SAFE to {}{target}", action_word(answer.action)),
            Colour::Green,
        ),
        (_, Verdict::Unsafe) => style.paint(
            &format!("NOT SAFE to {}{target}", action_word(answer.action)),
            Colour::Red,
        ),
        (_, Verdict::Unknown) => style.paint(
            &format!(
                "UNKNOWN whether it is safe to {}{target}",
                action_word(answer.action)
            ),
            Colour::Dim,
        ),
    };
    let mut out = format!("{head}\n");
    for reason in &answer.reasons {
        out.push_str(&format!("  - {reason}\n"));
    }
    if !answer.wait_for.is_empty() {
        out.push_str(&format!("{}\n", style.paint("waiting for:", Colour::Bold)));
        for item in &answer.wait_for {
            out.push_str(&format!("  - {item}\n"));
        }
    }
    if answer.safe && !answer.steps.is_empty() {
        out.push_str(&format!("{}\n", style.paint("steps:", Colour::Bold)));
        for (i, step) in answer.steps.iter().enumerate() {
            out.push_str(&format!("  {}. {}\n", i + 1, step.step));
            if let Some(command) = &step.command {
                out.push_str(&format!("     {}\n", style.paint(command, Colour::Dim)));
            }
        }
    }
    out
}

fn action_word(action: crate::api::preflight::Action) -> &'static str {
    use crate::api::preflight::Action;
    match action {
        Action::Restart => "restart",
        Action::Stop => "stop",
        Action::Remove => "remove",
        Action::Rename => "rename",
        Action::Healthy => "wait for",
    }
}

/// `nats-insights checks`: the catalog as a table, then each threshold in words.
pub fn checks_text(checks: &ChecksView, style: Style) -> String {
    let rows: Vec<Vec<Cell>> = checks
        .checks
        .iter()
        .map(|c| {
            vec![
                (c.id.clone(), None),
                (c.name.clone(), None),
                (c.severity.clone(), Some(severity_colour(&c.severity))),
                (c.category.clone(), None),
                (c.active.to_string(), None),
                (c.applies_to.clone(), None),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "CHECK",
            "NAME",
            "SEVERITY",
            "CATEGORY",
            "ACTIVE",
            "APPLIES TO",
        ],
        &rows,
        style,
    );
    for c in &checks.checks {
        let settings: Vec<String> = c
            .settings
            .iter()
            .map(|s| {
                if s.value == s.default {
                    format!("{} {}", s.flag, s.value)
                } else {
                    format!("{} {} (default {})", s.flag, s.value, s.default)
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "\n{} raised when {}.{}",
            style.paint(&c.id, Colour::Bold),
            c.threshold,
            if settings.is_empty() {
                String::new()
            } else {
                format!(" [{}]", settings.join(", "))
            }
        );
    }
    out
}

/// One `watch` line, coloured by what happened: raised in its severity's colour, resolved green.
pub fn watch_line(event: &FindingEvent, style: Style) -> String {
    let line = super::watch::format_line(event);
    let colour = match event.event {
        crate::findings::TransitionKind::Resolved => Colour::Green,
        crate::findings::TransitionKind::Updated => Colour::Cyan,
        crate::findings::TransitionKind::Raised => severity_colour(event.severity.as_str()),
    };
    style.paint(&line, colour)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(json: serde_json::Value) -> StatusView {
        serde_json::from_value(json).expect("status view")
    }

    fn sample() -> StatusView {
        status(serde_json::json!({
            "type": "io.nats.insights.v1.status_response",
            "status": "critical",
            "instance": "I1",
            "version": "0.1.0",
            "timestamp": "2026-11-24T08:00:10.000Z",
            "uptime_ms": 65_000,
            "meta": {
                "cluster": "prod", "cluster_size": 3, "quorum_needed": 2, "leader": "n1",
                "servers_answering": 2, "non_members": [], "leaders_reported": [],
                "members": [
                    {"name": "n1", "peer": "AAAA", "leader": true, "answered": true, "name_unknown": false,
                     "current": true, "lag": 0, "state": "online"},
                    {"name": "n2", "peer": "BBBB", "leader": false, "answered": false, "name_unknown": false,
                     "current": false, "active": 4200, "lag": 3, "state": "offline",
                     "reasons": [{"reason": "silent", "active": 4200, "reported_by": "n1"},
                                 {"reason": "not_answering", "last_answered": "2026-11-24T08:00:05.000Z"}]},
                    {"name": "n3-long-name", "peer": "CCCC", "leader": false, "answered": true, "name_unknown": false,
                     "current": true, "active": 300, "lag": 0, "state": "online"}
                ]
            },
            "findings": [{"finding": "META_001/prod/n2", "check": "META_001", "name": "Offline meta replica",
                          "severity": "critical", "state": "active", "server": "n2", "cluster": "prod",
                          "summary": "meta replica n2 is offline", "evidence": {}, "remediation": [],
                          "revision": 1, "raised_at": "2026-11-24T08:00:06.000Z"}],
            "service": {"last_poll": "2026-11-24T08:00:09.500Z", "last_poll_ms": 12, "servers_answering": 2,
                        "polls": 60, "events": {"shutdown": 1}, "malformed": 0, "store": "memory"}
        }))
    }

    /// A member row of `status` JSON.
    fn member(name: &str, cluster: &str, leader: bool, state: &str) -> serde_json::Value {
        serde_json::json!({"name": name, "cluster": cluster, "leader": leader, "answered": state == "online",
                           "name_unknown": false, "current": state == "online", "lag": 0, "state": state})
    }

    #[test]
    fn several_groups_print_one_table_each_and_domain_selects_one() {
        let mut view = sample();
        view.meta = None;
        view.meta_groups = vec![
            serde_json::from_value(serde_json::json!({
                "group": "default", "cluster": "c3", "lead_cluster": "c3", "cluster_size": 4,
                "quorum_needed": 3,
                "clusters": [{"cluster": "c1", "members": 2, "online": 1}, {"cluster": "c3", "members": 2, "online": 2}],
                "members": [member("n1", "c1", false, "online"), member("n2", "c1", false, "offline"),
                            member("n5", "c3", true, "online"), member("n6", "c3", false, "online")],
                "leader": "n5"
            }))
            .expect("group"),
            serde_json::from_value(serde_json::json!({
                "group": "edge", "domain": "edge", "cluster": "edge", "lead_cluster": "edge",
                "cluster_size": 3, "quorum_needed": 2,
                "clusters": [{"cluster": "edge", "members": 3, "online": 3}],
                "members": [member("e1", "edge", true, "online"), member("e2", "edge", false, "online"),
                            member("e3", "edge", false, "online")],
                "leader": "e1"
            }))
            .expect("group"),
        ];
        view.findings[0].finding = "META_001/default/n2".into();
        let text = status_text(&view, Style::PLAIN);
        assert!(text.contains("Meta group (supercluster): 4 members, quorum 3, leader n5 (cluster c3), 3 online; clusters (online/members): c1 1/2, c3 2/2"), "{text}");
        assert!(text.contains("Meta group of domain edge (cluster edge): 3 members, quorum 2, leader e1 (cluster edge), 3 online"), "{text}");
        assert!(
            text.lines().any(|l| l.starts_with("MEMBER  CLUSTER")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("n5*") && l.contains("c3")),
            "{text}"
        );

        let edge = view.only_domain("edge");
        assert_eq!(edge.status, "ok", "the finding is the default group's");
        assert!(edge.findings.is_empty());
        let text = status_text(&edge, Style::PLAIN);
        assert!(!text.contains("supercluster"), "{text}");
        let default = view.only_domain("default");
        assert_eq!(default.status, "critical");
        assert_eq!(default.groups().len(), 1);
        assert_eq!(view.only_domain("nowhere").status, "unknown");
    }

    #[test]
    fn status_table_marks_the_leader_aligns_columns_and_names_the_offline_member() {
        let text = status_text(&sample(), Style::PLAIN);
        assert!(text.starts_with("nats-insights: CRITICAL\n"), "{text}");
        assert!(text.contains("Meta group prod: 3 members, quorum 2, leader n1, 2 online"));
        let lines: Vec<&str> = text.lines().collect();
        let header = lines
            .iter()
            .position(|l| l.starts_with("MEMBER"))
            .expect("header");
        let n1 = lines[header + 1];
        let n2 = lines[header + 2];
        assert!(n1.starts_with("n1*"), "{n1}");
        assert!(n2.starts_with("n2 "), "{n2}");
        // Columns line up: ONLINE sits at the same offset in every row.
        let col = lines[header].find("ONLINE").expect("ONLINE");
        assert_eq!(n1.chars().nth(col), Some('✓'), "{text}");
        assert_eq!(n2.chars().nth(col), Some('✗'), "{text}");
        assert!(
            n2.contains("silent 4.2s (leader n1); not answering"),
            "{n2}"
        );
        assert!(
            text.contains("CRITICAL  META_001  n2      4.0s ago  meta replica n2 is offline"),
            "{text}"
        );
        assert!(text.contains("up 1m05s: last poll 500ms ago (took 12 ms), 2 servers answering"));
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn members_without_a_direct_link_are_named_with_why() {
        let mut view = sample();
        let plain = Style { colour: false };
        assert!(!status_text(&view, plain).contains("Direct links"));
        view.service.links = serde_json::from_value(serde_json::json!([
            {"server": "n1", "direct": true, "connected": true, "source": "given", "url": "nats://n1:4222"},
            {"server": "n2", "direct": false, "reason": "cannot connect: nats://10.0.0.2:4222: timed out"},
            {"server": "n3-long-name", "direct": true, "source": "varz"}
        ]))
        .expect("links");
        let text = status_text(&view, plain);
        assert!(
            text.contains(
                "Direct links: n1 n3-long-name; none to n2 (partition detection degraded: \
                 cannot connect: nats://10.0.0.2:4222: timed out)"
            ),
            "{text}"
        );
        view.service.links.retain(|l| l.direct);
        let text = status_text(&view, plain);
        assert!(text.contains("Direct links: n1 n3-long-name\n"), "{text}");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(Style::decide(true, None).colour);
        assert!(Style::decide(true, Some(OsStr::new(""))).colour);
        assert!(!Style::decide(true, Some(OsStr::new("1"))).colour);
        assert!(!Style::decide(false, None).colour);
        let coloured = status_text(&sample(), Style { colour: true });
        assert!(coloured.contains("\x1b[31mCRITICAL\x1b[0m"));
    }

    #[test]
    fn health_maps_to_nagios_exit_codes() {
        assert_eq!(Health::from_status("ok").exit_code(), 0);
        assert_eq!(Health::from_status("warning").exit_code(), 1);
        assert_eq!(Health::from_status("critical").exit_code(), 2);
        assert_eq!(Health::from_status("unknown").exit_code(), 3);
        assert_eq!(Health::from_status("something new").exit_code(), 3);
    }

    #[test]
    fn unseen_meta_group_and_unknown_fields_still_render() {
        let view = status(serde_json::json!({
            "status": "unknown", "meta": null, "findings": [], "future_field": 1,
            "service": {"last_poll": null, "skipped": "no server answered the JSZ poll",
                        "store": {"kind": "kv", "bucket": "insights"}}
        }));
        let text = status_text(&view, Style::PLAIN);
        assert!(text.contains("has not been seen yet: no server answered the JSZ poll"));
        assert!(
            text.contains("store {\"bucket\":\"insights\",\"kind\":\"kv\"}"),
            "{text}"
        );
    }

    #[test]
    fn an_unheard_group_says_since_when_and_never_its_last_leader() {
        let view = status(serde_json::json!({
            "status": "critical", "timestamp": "2026-11-24T08:07:10.000Z", "findings": [],
            "meta_groups": [{
                "group": "edge", "domain": "edge", "cluster": "edge", "cluster_size": 3,
                "quorum_needed": 2, "unheard_since": "2026-11-24T08:07:04.000Z",
                "members": [{"name": "e1", "state": "unknown"}, {"name": "e2", "state": "unknown"}]
            }],
            "service": {"last_poll": "2026-11-24T08:07:10.000Z"}
        }));
        let text = status_text(&view, Style::PLAIN);
        assert!(
            text.contains("unheard since 2026-11-24T08:07:04.000Z (6.0s ago)"),
            "{text}"
        );
        assert!(!text.contains("leader e1"), "{text}");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(short_duration(Duration::from_millis(4200)), "4.2s");
        assert_eq!(short_duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(short_duration(Duration::from_secs(7500)), "2h05m");
        assert_eq!(
            short_duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3d04h"
        );
    }

    #[test]
    fn findings_show_remediation_and_resolved_state() {
        let view: FindingsView = serde_json::from_value(serde_json::json!({
            "timestamp": "2026-11-24T08:01:00.000Z", "total": 3,
            "findings": [
                {"check": "META_001", "name": "Offline meta replica", "severity": "critical", "state": "active",
                 "server": "n2", "summary": "n2 is offline", "revision": 1, "raised_at": "2026-11-24T08:00:00.000Z",
                 "remediation": [{"step": "Check n2", "command": "nats server report jetstream"}]},
                {"check": "META_001", "name": "Offline meta replica", "severity": "critical", "state": "resolved",
                 "server": "n3", "summary": "n3 was offline", "revision": 2, "raised_at": "2026-11-24T07:59:00.000Z",
                 "resolved_at": "2026-11-24T08:00:30.000Z", "remediation": []}
            ]
        }))
        .expect("findings view");
        let text = findings_text(&view, Style::PLAIN);
        assert!(text.contains("CRITICAL META_001 Offline meta replica · n2 · raised 1m00s ago"));
        assert!(text.contains("  → Check n2\n      $ nats server report jetstream\n"));
        assert!(text.contains("RESOLVED META_001"));
        assert!(text.contains("resolved 30.0s ago"));
        assert!(text.contains("(2 of 3 shown"));
    }

    /// Asserts `text` holds no character a terminal acts on but the renderer's own newlines.
    fn terminal_safe(what: &str, text: &str) {
        let bad: Vec<char> = text
            .chars()
            .filter(|c| *c != '\n' && crate::text::unsafe_for_terminal(*c))
            .collect();
        assert!(bad.is_empty(), "{what} prints raw {bad:?}:\n{text}");
    }

    #[test]
    fn hostile_network_text_is_escaped_in_every_text_rendering() {
        for h in crate::text::HOSTILE_NAMES {
            let member = |leader: bool, state: &str| {
                serde_json::json!({"name": h, "cluster": h, "peer": h, "leader": leader,
                    "answered": state == "online", "name_unknown": false, "current": false,
                    "lag": 5, "state": state, "version": h,
                    "reasons": [{"reason": "silent", "active": 4200, "reported_by": h}]})
            };
            let finding = serde_json::json!({"finding": h, "check": "META_001", "name": h,
                "severity": "critical", "state": "active", "server": h, "cluster": h, "domain": h,
                "summary": h, "evidence": {"x": h}, "revision": 1,
                "raised_at": "2026-11-24T08:00:06.000Z",
                "remediation": [{"step": h, "command": crate::checks::peer_remove_command(h)}]});
            let group = serde_json::json!({"cluster": h, "domain": h, "cluster_size": 3,
                "quorum_needed": 2, "leader": h, "servers_answering": 2, "non_members": [h],
                "leaders_reported": [h], "members": [member(true, "online"), member(false, "offline")]});
            let status = serde_json::json!({
                "type": "io.nats.insights.v1.status_response", "status": "critical",
                "instance": h, "version": h, "timestamp": "2026-11-24T08:00:10.000Z",
                "uptime_ms": 65_000, "meta": group, "meta_groups": [group],
                "findings": [finding],
                "service": {"last_poll": "2026-11-24T08:00:09.500Z", "last_poll_ms": 12,
                    "servers_answering": 2, "polls": 60, "events": {h.to_string(): 1},
                    "malformed": 0, "store": {"state": "degraded", "error": h},
                    "links": [{"server": h, "direct": false, "reason": h},
                              {"server": "n1", "direct": true, "url": h}]}
            });
            let bytes = |v: &serde_json::Value| serde_json::to_vec(v).expect("json");
            let view: StatusView =
                crate::text::decode_for_terminal(&bytes(&status)).expect("status view");
            terminal_safe("status", &status_text(&view, Style::PLAIN));
            let findings = serde_json::json!({"timestamp": "2026-11-24T08:01:00.000Z",
                "total": 1, "findings": [finding]});
            let view: FindingsView =
                crate::text::decode_for_terminal(&bytes(&findings)).expect("findings view");
            terminal_safe("findings", &findings_text(&view, Style::PLAIN));
            let preflight = serde_json::json!({"type": "io.nats.insights.v1.preflight_response",
                "timestamp": "2026-11-24T08:01:00.000Z", "action": "restart", "server": h,
                "domain": h, "safe": false, "verdict": "unsafe", "reasons": [h], "wait_for": [h],
                "steps": [{"step": h, "command": crate::checks::peer_remove_command(h)}]});
            let answer: crate::api::preflight::PreflightResponse =
                crate::text::decode_for_terminal(&bytes(&preflight)).expect("preflight");
            terminal_safe("preflight", &preflight_text(&answer, Style::PLAIN));
            // watch decodes events as they are: its line escapes the network's fields itself.
            let mut event = finding.clone();
            let object = event.as_object_mut().expect("object");
            for (k, v) in [
                ("type", "io.nats.insights.v1.finding_event"),
                ("id", h),
                ("event", "raised"),
                ("category", h),
                ("timestamp", h),
                ("instance", h),
            ] {
                object.insert(k.into(), v.into());
            }
            let event: crate::wire::FindingEvent =
                serde_json::from_value(event).expect("finding event");
            let line = watch_line(&event, Style::PLAIN);
            terminal_safe("watch", &line);
            assert!(!line.contains('\n'), "one line: {line}");
        }
    }
}
