//! Serve: the status page (`GET /` on `--metrics-listen`), the serve edge of observe → evaluate →
//! reconcile → persist → publish → serve: one HTML page per request, a pure function of the
//! STATUS response, the HISTORY response (its leader changes and finding events draw the
//! timeline), the checks' thresholds and `now` (it never reads the clock). It shows what the API
//! answers, as `nats-insights status` does in a terminal ([`super::text`]), and nothing the API
//! does not. Inline CSS and SVG and a few lines of script that re-fetch it (the CSS and the script
//! are kept in `assets/`, inlined at build time); nothing external (no fonts, images or scripts
//! from elsewhere), so it works air-gapped. Every state is a word and a shape, never a colour
//! alone, and every text that came from the network is escaped.
//!
//! Stable hooks for tests and scrapers: each meta group is an element with `data-group` (its
//! domain or `default`), each member one with `data-member`, `data-state`
//! (`online|offline|behind|unknown`) and `data-leader` (`true|false`), each active finding one
//! with `data-finding` (its key) and `data-check`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, SystemTime};

use super::text::short_duration;
use crate::api::{HistoryEntry, HistoryResponse};
use crate::checks::members::Member;
use crate::checks::{CheckId, MemberState, MetaAssessment, Severity, Thresholds};
use crate::findings::TransitionKind;
use crate::history::ChangeSource;
use crate::observe::GroupId;
use crate::status::{FindingView, LinkHealth, StatusResponse, StoreHealth};
use crate::time_format;

/// Seconds between the page's re-fetches of itself.
pub const REFRESH_SECS: u64 = 3;
/// How far back the timeline reaches.
pub const TIMELINE_SPAN: Duration = Duration::from_secs(3600);
/// Finding rows the timeline draws per group (the most recent ones).
const TIMELINE_ROWS: usize = 12;
/// Entries the event list under the timeline shows per group (newest first).
const EVENTS_LISTED: usize = 20;

/// A member as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// Judged online and, where the leader's view says, caught up.
    Online,
    /// Judged offline (META_001's judgement).
    Offline,
    /// Online, but the leader shows it behind ([`Member::behind`]).
    Behind,
    /// Not judged either way this round (no leader view).
    Unknown,
}

impl PageState {
    /// The member's state on the page.
    pub fn of(member: &Member, thresholds: &Thresholds) -> PageState {
        match member.state {
            MemberState::Offline(_) => PageState::Offline,
            MemberState::Unknown => PageState::Unknown,
            MemberState::Online if member.behind(thresholds.lag_max) => PageState::Behind,
            MemberState::Online => PageState::Online,
        }
    }

    /// The word shown and used in `data-state`.
    pub fn as_str(self) -> &'static str {
        match self {
            PageState::Online => "online",
            PageState::Offline => "offline",
            PageState::Behind => "behind",
            PageState::Unknown => "unknown",
        }
    }
}

/// Escapes text for HTML element content and quoted attribute values (SVG included).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters of `text`, with an ellipsis when cut (the full text goes in a
/// `<title>`); not yet escaped.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

fn ago(now: SystemTime, at: SystemTime) -> String {
    format!(
        "{} ago",
        short_duration(now.duration_since(at).unwrap_or_default())
    )
}

/// A time as the responses write it (RFC 3339).
fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

/// How long before `now` a response's timestamp lies; the text itself when unparsable.
fn ago_text(now: SystemTime, at: &str) -> String {
    parse_time(at)
        .map(|at| ago(now, at))
        .unwrap_or_else(|| at.to_string())
}

/// Whether a finding or leader change of `domain` belongs to `meta`.
fn of_group(domain: Option<&str>, meta: &MetaAssessment) -> bool {
    GroupId::of(domain) == meta.group
}

/// A leader change of HISTORY, its time read.
struct Change<'a> {
    at: SystemTime,
    from: Option<&'a str>,
    to: &'a str,
    source: ChangeSource,
    domain: Option<&'a str>,
}

/// A finding event of HISTORY (a raise, an update or a resolve), its times read.
struct Event<'a> {
    at: SystemTime,
    /// When its episode was raised: its own time when HISTORY does not say.
    raised_at: SystemTime,
    kind: TransitionKind,
    key: &'a str,
    check: CheckId,
    server: Option<&'a str>,
    domain: Option<&'a str>,
    summary: &'a str,
}

/// What HISTORY holds, oldest first (it lists newest first), split by kind.
struct Past<'a> {
    changes: Vec<Change<'a>>,
    events: Vec<Event<'a>>,
}

impl<'a> Past<'a> {
    fn of(history: &'a HistoryResponse) -> Past<'a> {
        let mut past = Past {
            changes: Vec::new(),
            events: Vec::new(),
        };
        for entry in history.entries.iter().rev() {
            match entry {
                HistoryEntry::Finding {
                    at,
                    event,
                    finding,
                    check,
                    server,
                    domain,
                    summary,
                    raised_at,
                    ..
                } => {
                    let Some(at) = parse_time(at) else { continue };
                    past.events.push(Event {
                        at,
                        raised_at: parse_time(raised_at).unwrap_or(at),
                        kind: *event,
                        key: finding,
                        check: *check,
                        server: server.as_deref(),
                        domain: domain.as_deref(),
                        summary,
                    });
                }
                HistoryEntry::LeaderChange {
                    at,
                    from,
                    to,
                    source,
                    domain,
                } => {
                    let Some(at) = parse_time(at) else { continue };
                    past.changes.push(Change {
                        at,
                        from: from.as_deref(),
                        to,
                        source: *source,
                        domain: domain.as_deref(),
                    });
                }
            }
        }
        past
    }
}

/// `HH:MM:SS` (UTC) of a time.
fn clock(t: SystemTime) -> String {
    let text = time_format::rfc3339(t);
    text.get(11..19).unwrap_or(&text).to_string()
}

/// The page's style sheet, inlined in its `<style>` (nothing is fetched from elsewhere).
const STYLE: &str = include_str!("assets/page.css");

/// Re-fetches the page and swaps the body in; on failure says so and keeps the last one.
/// `REFRESH_MS` in it is replaced by the period.
const SCRIPT: &str = include_str!("assets/page.js");

/// Patterns the members and the timeline fill with (one hidden SVG, referenced by id).
const DEFS: &str = r##"<svg width="0" height="0" style="position:absolute" aria-hidden="true" focusable="false"><defs>
<pattern id="hatch-behind" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="8" height="8" fill="#fff8c5"/><line x1="0" y1="0" x2="0" y2="8" stroke="#d4a72c" stroke-width="3"/></pattern>
<pattern id="hatch-active" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffebe9"/><line x1="0" y1="0" x2="0" y2="6" stroke="#cf222e" stroke-width="2"/></pattern>
</defs></svg>"##;

/// The status page as of `now`: `status` is what STATUS answers, `history` what HISTORY answers
/// (all of it: the timeline reaches back an hour), `thresholds` the checks' (a member is behind as
/// META_101 judges it, and the legend says when).
pub fn render(
    status: &StatusResponse,
    history: &HistoryResponse,
    now: SystemTime,
    thresholds: &Thresholds,
) -> String {
    let past = Past::of(history);
    let overall = status.status;
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"icon\" href=\"data:,\">\
         <title>nats-insights: {}</title>\
         <noscript><meta http-equiv=\"refresh\" content=\"{}\"></noscript>\
         <style>{STYLE}</style><script>{}</script></head>\n",
        overall.to_uppercase(),
        REFRESH_SECS * 2,
        SCRIPT.replace("REFRESH_MS", &(REFRESH_SECS * 1000).to_string()),
    );
    let _ = writeln!(
        out,
        "<body data-status=\"{overall}\" data-rendered=\"{}\">{DEFS}",
        escape(&status.timestamp)
    );
    header(&mut out, status, now);
    out.push_str("<main>\n");
    if status.meta_groups.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"warn\" data-waiting=\"true\">No meta group seen yet{}.</p>",
            status
                .service
                .skipped
                .as_deref()
                .map(|s| format!(": {}", escape(s)))
                .unwrap_or_default()
        );
    }
    for meta in &status.meta_groups {
        group(&mut out, status, &past, meta, now, thresholds);
    }
    let orphans: Vec<&FindingView> = status
        .findings
        .iter()
        .filter(|f| {
            !status
                .meta_groups
                .iter()
                .any(|m| of_group(f.domain.as_deref(), m))
        })
        .collect();
    if !orphans.is_empty() {
        out.push_str(
            "<section class=\"group\" data-group-missing=\"true\">\
             <h2>Findings of meta groups the last poll did not see</h2>\n",
        );
        findings_list(&mut out, &orphans, now);
        out.push_str("</section>\n");
    }
    out.push_str("</main>\n");
    footer(&mut out, thresholds);
    out.push_str("</body></html>\n");
    out
}

fn header(out: &mut String, status: &StatusResponse, now: SystemTime) {
    let (findings, overall, service) = (&status.findings, status.status, &status.service);
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let summary = if findings.is_empty() {
        "no active findings".to_string()
    } else {
        format!(
            "{} active finding{}: {} critical, {} warning, {} info",
            findings.len(),
            if findings.len() == 1 { "" } else { "s" },
            count(Severity::Critical),
            count(Severity::Warning),
            count(Severity::Info)
        )
    };
    let _ = writeln!(
        out,
        "<header><h1>nats-insights status</h1>\
         <p><span class=\"overall s-{overall}\" data-overall=\"{overall}\">{}</span>{summary}</p>",
        overall.to_uppercase()
    );
    let poll = match &service.last_poll {
        Some(at) => format!(
            "last poll {} (took {} ms, {} server{} answering)",
            ago_text(now, at),
            service.last_poll_ms,
            service.servers_answering,
            if service.servers_answering == 1 {
                ""
            } else {
                "s"
            }
        ),
        None => "no poll completed yet".to_string(),
    };
    let _ = writeln!(
        out,
        "<p class=\"meta\">As of {} UTC · {poll} · {} polls · store: {} · instance {} v{} · up {}</p>",
        clock(now),
        service.polls,
        escape(&store_words(&service.store, now)),
        escape(&status.instance),
        escape(status.version),
        short_duration(Duration::from_millis(status.uptime_ms)),
    );
    if let (Some(skipped), false) = (&service.skipped, status.meta_groups.is_empty()) {
        let _ = writeln!(
            out,
            "<p class=\"warn\">Checks skipped in the last round: {}</p>",
            escape(skipped)
        );
    }
    out.push_str("<p id=\"stale\" role=\"status\" hidden></p></header>\n");
}

fn store_words(store: &StoreHealth, now: SystemTime) -> String {
    match store {
        StoreHealth::Memory => "memory only (a restart forgets active findings)".to_string(),
        StoreHealth::Healthy { bucket } => format!("KV bucket {bucket}"),
        StoreHealth::Degraded {
            bucket,
            since,
            error,
            backlog,
        } => format!(
            "KV bucket {bucket} DEGRADED since {}: {error} ({backlog} records waiting)",
            ago(now, *since)
        ),
    }
}

fn group(
    out: &mut String,
    status: &StatusResponse,
    past: &Past<'_>,
    meta: &MetaAssessment,
    now: SystemTime,
    thresholds: &Thresholds,
) {
    let label = meta.group.label();
    let online = meta.members.iter().filter(|m| m.online()).count();
    let quorum = online >= meta.quorum_needed;
    let _ = writeln!(
        out,
        "<section class=\"group\" data-group=\"{}\" data-quorum=\"{}\" data-leader=\"{}\" \
         data-members=\"{}\" data-online=\"{online}\">",
        escape(label),
        if quorum { "held" } else { "lost" },
        escape(meta.leader.as_deref().unwrap_or("")),
        meta.members.len(),
    );
    let name = match (meta.group.domain(), meta.is_supercluster()) {
        (Some(domain), _) => format!("domain {}", escape(domain)),
        (None, true) => "default domain (supercluster)".to_string(),
        (None, false) => format!("default domain, cluster {}", escape(&meta.cluster)),
    };
    let _ = writeln!(out, "<h2>Meta group {name}</h2>");
    let leader = match (&meta.leader, meta.leaderless_since) {
        (Some(leader), _) => match (&meta.lead_cluster, meta.is_supercluster()) {
            (Some(cluster), true) => {
                format!("leader {} (cluster {})", escape(leader), escape(cluster))
            }
            _ => format!("leader {}", escape(leader)),
        },
        (None, Some(since)) => format!("NO LEADER for {}", short_duration(duration(now, since))),
        (None, None) => "NO LEADER".to_string(),
    };
    let pending = meta
        .pending
        .map(|p| format!(" · {p} API requests pending on the leader"))
        .unwrap_or_default();
    match meta.unheard_since {
        // Nothing is known about a group none of whose servers answers (META_105).
        Some(since) => {
            let _ = writeln!(
                out,
                "<p class=\"verdict q-lost\" data-unheard-since=\"{}\">{} UNHEARD since {} ({} ago): no server of this group answers, its {} members are unknown</p>",
                time_format::rfc3339(since),
                verdict_icon(false),
                time_format::rfc3339(since),
                short_duration(duration(now, since)),
                meta.cluster_size.max(meta.members.len()),
            );
        }
        None => {
            let _ = writeln!(
                out,
                "<p class=\"verdict {}\">{} {}: {online} of {} members online, {} needed · {leader}{pending}</p>",
                if quorum { "q-held" } else { "q-lost" },
                verdict_icon(quorum),
                if quorum { "quorum held" } else { "QUORUM LOST" },
                meta.cluster_size.max(meta.members.len()),
                meta.quorum_needed,
            );
        }
    }
    out.push_str("<div class=\"clusters\">\n");
    for (cluster, members) in by_cluster(meta) {
        cluster_figure(out, meta, &cluster, &members, now, thresholds);
    }
    out.push_str("</div>\n");
    direct_links(out, &status.service.links, meta);
    for (what, list) in [
        ("Live servers that are not members", &meta.non_members),
        (
            "Servers of this domain running JetStream outside the meta group",
            &meta.outside,
        ),
    ] {
        if !list.is_empty() {
            let names: Vec<String> = list.iter().map(|s| escape(s)).collect();
            let _ = writeln!(out, "<p class=\"warn\">{what}: {}</p>", names.join(", "));
        }
    }
    let mine: Vec<&FindingView> = status
        .findings
        .iter()
        .filter(|f| of_group(f.domain.as_deref(), meta))
        .collect();
    let _ = writeln!(out, "<h3>Active findings ({})</h3>", mine.len());
    findings_list(out, &mine, now);
    let _ = writeln!(out, "<h3>Last hour</h3>");
    timeline(out, past, &status.findings, meta, now);
    out.push_str("</section>\n");
}

/// Which members of `meta` a pinned link reaches (their own view is seen in a partition), and
/// each one without, with why: partition detection is degraded for it.
fn direct_links(out: &mut String, links: &[LinkHealth], meta: &MetaAssessment) {
    let links: Vec<&LinkHealth> = links
        .iter()
        .filter(|l| meta.members.iter().any(|m| m.name == l.server))
        .collect();
    if links.is_empty() {
        return;
    }
    let direct: Vec<String> = links
        .iter()
        .filter(|l| l.direct)
        .map(|l| escape(&l.server))
        .collect();
    let _ = writeln!(
        out,
        "<p class=\"links\" data-direct=\"{}\">Direct links: {}</p>",
        direct.join(" "),
        if direct.is_empty() {
            "none".to_string()
        } else {
            direct.join(", ")
        },
    );
    for link in links.iter().filter(|l| !l.direct) {
        let _ = writeln!(
            out,
            "<p class=\"warn\" data-no-direct-link=\"{}\">No direct link to {}: partition \
             detection degraded for it ({}).</p>",
            escape(&link.server),
            escape(&link.server),
            escape(link.reason.as_deref().unwrap_or("unknown")),
        );
    }
}

fn duration(now: SystemTime, since: SystemTime) -> Duration {
    now.duration_since(since).unwrap_or_default()
}

/// A check mark in a circle (held) or a crossed triangle (lost), inline with the verdict.
fn verdict_icon(quorum: bool) -> &'static str {
    if quorum {
        "<svg width=\"16\" height=\"16\" viewBox=\"0 0 16 16\" aria-hidden=\"true\"><circle cx=\"8\" cy=\"8\" r=\"7\" fill=\"none\" stroke=\"currentColor\" stroke-width=\"2\"/><path d=\"M4 8l3 3 5-6\" fill=\"none\" stroke=\"currentColor\" stroke-width=\"2\"/></svg>"
    } else {
        "<svg width=\"18\" height=\"16\" viewBox=\"0 0 18 16\" aria-hidden=\"true\"><path d=\"M9 1L17 15H1Z\" fill=\"none\" stroke=\"currentColor\" stroke-width=\"2\"/><path d=\"M9 5v5M9 12v1.5\" stroke=\"currentColor\" stroke-width=\"2\"/></svg>"
    }
}

/// The members by their own cluster, in the order the assessment tallies clusters; a member of
/// no known cluster goes to the only cluster when there is one.
fn by_cluster(meta: &MetaAssessment) -> Vec<(String, Vec<&Member>)> {
    let only = match meta.clusters.as_slice() {
        [one] => Some(one.cluster.clone()),
        _ => None,
    };
    let mut groups: BTreeMap<String, Vec<&Member>> = BTreeMap::new();
    for member in &meta.members {
        let cluster = member
            .cluster
            .clone()
            .or_else(|| only.clone())
            .unwrap_or_else(|| "(cluster unknown)".to_string());
        groups.entry(cluster).or_default().push(member);
    }
    let mut ordered = Vec::with_capacity(groups.len());
    for tally in &meta.clusters {
        if let Some(members) = groups.remove(&tally.cluster) {
            ordered.push((tally.cluster.clone(), members));
        }
    }
    ordered.extend(groups);
    ordered
}

const CARD_W: usize = 184;
const CARD_H: usize = 96;
const GAP: usize = 10;

fn cluster_figure(
    out: &mut String,
    meta: &MetaAssessment,
    cluster: &str,
    members: &[&Member],
    now: SystemTime,
    thresholds: &Thresholds,
) {
    let online = members.iter().filter(|m| m.online()).count();
    let cols = members.len().clamp(1, 3);
    let rows = members.len().div_ceil(cols).max(1);
    let (w, h) = (cols * (CARD_W + GAP) + GAP, rows * (CARD_H + GAP) + GAP);
    let states: Vec<String> = members
        .iter()
        .map(|m| {
            format!(
                "{} {}{}",
                m.name,
                PageState::of(m, thresholds).as_str(),
                if m.leader { " leader" } else { "" }
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "<figure class=\"cluster\" data-cluster=\"{c}\"><figcaption>cluster {c}: {online} of {} online</figcaption>\
         <svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"cluster {c}: {}\">",
        members.len(),
        escape(&states.join(", ")),
        c = escape(cluster),
    );
    for (i, member) in members.iter().enumerate() {
        let x = GAP + (i % cols) * (CARD_W + GAP);
        let y = GAP + (i / cols) * (CARD_H + GAP);
        member_card(out, meta, member, x, y, now, thresholds);
    }
    out.push_str("</svg></figure>\n");
}

fn member_card(
    out: &mut String,
    meta: &MetaAssessment,
    member: &Member,
    x: usize,
    y: usize,
    now: SystemTime,
    thresholds: &Thresholds,
) {
    let state = PageState::of(member, thresholds);
    let word = state.as_str();
    let mut tip = vec![format!("{}: {word}", meta.member_label(member))];
    if member.leader {
        tip.push("the meta leader".to_string());
    }
    if let MemberState::Offline(reasons) = &member.state {
        tip.extend(reasons.iter().map(|r| r.describe(now)));
    }
    if member.name_unknown {
        tip.push("no live server carries this name: a probable stale peer".to_string());
    }
    if let Some(version) = &member.version {
        tip.push(format!("nats-server {version}"));
    }
    if let Some(peer) = &member.peer {
        tip.push(format!("peer {peer}"));
    }
    let _ = write!(
        out,
        "<g class=\"member st-{word}{}\" data-member=\"{}\" data-state=\"{word}\" data-leader=\"{}\" \
         data-cluster=\"{}\" transform=\"translate({x},{y})\"><title>{}</title>\
         <rect class=\"card\" x=\"1\" y=\"1\" width=\"{}\" height=\"{}\" rx=\"8\"/>",
        if member.leader { " leader" } else { "" },
        escape(&member.name),
        member.leader,
        escape(member.cluster.as_deref().unwrap_or("")),
        escape(&tip.join("; ")),
        CARD_W - 2,
        CARD_H - 2,
    );
    out.push_str(match state {
        PageState::Online => "<circle cx=\"18\" cy=\"22\" r=\"7\" fill=\"currentColor\"/>",
        PageState::Offline => {
            "<path d=\"M12 16L24 28M24 16L12 28\" stroke=\"currentColor\" stroke-width=\"3\" fill=\"none\"/>"
        }
        PageState::Behind => {
            "<circle cx=\"18\" cy=\"22\" r=\"7\" fill=\"none\" stroke=\"currentColor\" stroke-width=\"2\"/>\
             <path d=\"M18 15A7 7 0 0 1 18 29Z\" fill=\"currentColor\"/>"
        }
        PageState::Unknown => {
            "<circle cx=\"18\" cy=\"22\" r=\"7\" fill=\"none\" stroke=\"currentColor\" stroke-width=\"2\" stroke-dasharray=\"2 3\"/>"
        }
    });
    if member.leader {
        // A five-pointed star, top right.
        out.push_str(
            "<polygon class=\"star\" points=\"166,9 168.6,15.4 175.5,15.9 170.2,20.3 171.9,27.1 166,23.4 160.1,27.1 161.8,20.3 156.5,15.9 163.4,15.4\" \
             fill=\"#bf8700\" stroke=\"#1f2328\" stroke-width=\"1\"/>",
        );
    }
    let status_line = if member.leader {
        format!("{word} · leader")
    } else {
        word.to_string()
    };
    let lag = match (state, member.current) {
        (PageState::Behind, Some(false)) => format!("lag {} ops · not current", member.lag),
        _ => format!("lag {} ops", member.lag),
    };
    let heard = match (member.active, member.leader) {
        (_, true) => "leads the group".to_string(),
        (Some(active), false) => format!("last heard {} ago", short_duration(active)),
        (None, false) => "last heard: unknown".to_string(),
    };
    let _ = writeln!(
        out,
        "<text class=\"name\" x=\"32\" y=\"27\">{}</text>\
         <text class=\"word\" x=\"12\" y=\"50\">{status_line}</text>\
         <text class=\"fact\" x=\"12\" y=\"68\">{}</text>\
         <text class=\"fact\" x=\"12\" y=\"85\">{}</text></g>",
        escape(&clip(&member.name, if member.leader { 15 } else { 18 })),
        escape(&lag),
        escape(&heard),
    );
}

fn findings_list(out: &mut String, findings: &[&FindingView], now: SystemTime) {
    if findings.is_empty() {
        out.push_str("<p data-findings=\"none\">No active findings.</p>\n");
        return;
    }
    out.push_str("<ul class=\"findings\">\n");
    for f in findings {
        let raised = format!("raised {}", ago_text(now, &f.raised_at));
        let severity = f.severity.as_str();
        let _ = write!(
            out,
            "<li class=\"finding sev-{severity}\" data-finding=\"{}\" data-check=\"{}\" data-severity=\"{severity}\"{}>\
             <p><span class=\"sev\">{}</span> <b>{}</b> {}{} · {raised}</p><p>{}</p>",
            escape(&f.finding),
            escape(&f.check),
            f.server
                .as_deref()
                .map(|s| format!(" data-server=\"{}\"", escape(s)))
                .unwrap_or_default(),
            severity.to_uppercase(),
            escape(&f.check),
            escape(&f.name),
            f.server
                .as_deref()
                .map(|s| format!(" · {}", escape(s)))
                .unwrap_or_default(),
            escape(&f.summary),
        );
        // The finding's own remediation, first step: what `nats-insights findings` prints first.
        if let Some(step) = f.remediation.first() {
            let _ = write!(
                out,
                "<p class=\"step\"><b>First step:</b> {}{}</p>",
                escape(&step.step),
                step.command
                    .as_deref()
                    .map(|c| format!(" <code>{}</code>", escape(c)))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(
            out,
            "<p class=\"meta\">All steps: <code>nats-insights findings</code>; the runbook: \
             <code>nats-insights explain {}</code></p></li>",
            escape(&f.check)
        );
    }
    out.push_str("</ul>\n");
}

/// One finding key's bars on the timeline.
struct Row<'a> {
    key: &'a str,
    label: String,
    /// (raised, resolved): an open bar is still active.
    spans: Vec<(SystemTime, Option<SystemTime>)>,
}

/// The timeline's finding rows: each key's episodes from HISTORY's finding events, plus active
/// findings raised before them; only what overlaps the last hour, the most recent rows last.
fn rows<'a>(
    past: &Past<'a>,
    active: &'a [FindingView],
    meta: &MetaAssessment,
    start: SystemTime,
) -> Vec<Row<'a>> {
    let mut rows: Vec<Row<'a>> = Vec::new();
    let mut row = |key: &'a str, label: String| -> usize {
        match rows.iter().position(|r| r.key == key) {
            Some(i) => i,
            None => {
                rows.push(Row {
                    key,
                    label,
                    spans: Vec::new(),
                });
                rows.len() - 1
            }
        }
    };
    let label = |check: &str, server: Option<&str>| match server {
        Some(server) => format!("{check} {server}"),
        None => check.to_string(),
    };
    let mut index: Vec<(usize, SystemTime, Option<SystemTime>)> = Vec::new();
    for t in &past.events {
        if !of_group(t.domain, meta) {
            continue;
        }
        let i = row(t.key, label(t.check.as_str(), t.server));
        let open = index.iter_mut().rev().find(|e| e.0 == i && e.2.is_none());
        match (t.kind, open) {
            (TransitionKind::Resolved, Some(open)) => open.2 = Some(t.at),
            (TransitionKind::Resolved, None) => index.push((i, t.raised_at, Some(t.at))),
            (_, Some(_)) => {}
            (_, None) => index.push((i, t.raised_at, None)),
        }
    }
    // By key, as the engine keeps them: rows first seen here are made in that order.
    let mut mine: Vec<&'a FindingView> = active
        .iter()
        .filter(|f| of_group(f.domain.as_deref(), meta))
        .collect();
    mine.sort_by(|a, b| a.finding.cmp(&b.finding));
    for f in mine {
        let Some(raised_at) = parse_time(&f.raised_at) else {
            continue;
        };
        let i = row(&f.finding, label(&f.check, f.server.as_deref()));
        if !index.iter().any(|(r, _, end)| *r == i && end.is_none()) {
            index.push((i, raised_at, None));
        }
    }
    for (i, raised, resolved) in index {
        let active = active.iter().any(|f| f.finding == rows[i].key);
        // An open bar of a key no longer active lost its resolve to the bounded memory: no bar.
        if resolved.is_none() && !active {
            continue;
        }
        if resolved.is_some_and(|r| r < start) {
            continue;
        }
        rows[i].spans.push((raised, resolved));
    }
    rows.retain(|r| !r.spans.is_empty());
    rows.sort_by_key(|r| r.spans.iter().map(|s| s.0).max());
    rows
}

const TL_W: f64 = 1000.0;
const TL_LEFT: f64 = 190.0;
const TL_RIGHT: f64 = 24.0;
const TL_ROW: usize = 24;

fn timeline(
    out: &mut String,
    past: &Past<'_>,
    active: &[FindingView],
    meta: &MetaAssessment,
    now: SystemTime,
) {
    let start = now
        .checked_sub(TIMELINE_SPAN)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let span = TIMELINE_SPAN.as_secs_f64();
    let plot = TL_W - TL_LEFT - TL_RIGHT;
    let x = |t: SystemTime| -> f64 {
        let offset = t
            .duration_since(start)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        TL_LEFT + plot * (offset / span).clamp(0.0, 1.0)
    };
    let changes: Vec<&Change<'_>> = past
        .changes
        .iter()
        .filter(|c| of_group(c.domain, meta) && c.at >= start && c.at <= now)
        .collect();
    let mut rows = rows(past, active, meta, start);
    let hidden = rows.len().saturating_sub(TIMELINE_ROWS);
    rows.drain(..hidden);
    let lane = 34;
    let top = 28;
    let height = top + lane + rows.len().max(1) * TL_ROW + 10;
    let _ = writeln!(
        out,
        "<svg class=\"timeline\" width=\"{TL_W}\" height=\"{height}\" viewBox=\"0 0 {TL_W} {height}\" role=\"img\" \
         aria-label=\"the last hour: {} leader changes, {} findings\">",
        changes.len(),
        rows.len()
    );
    // The axis: a tick every ten minutes, labelled by minutes before now.
    for m in 0..=6u64 {
        let tx = TL_LEFT + plot * (m as f64 / 6.0);
        let text = if m == 6 {
            format!("now {}", clock(now))
        } else {
            format!("−{} min", 60 - m * 10)
        };
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{tx:.1}\" y1=\"{top}\" x2=\"{tx:.1}\" y2=\"{}\"/>\
             <text x=\"{tx:.1}\" y=\"14\" text-anchor=\"{}\">{text}</text>",
            height - 6,
            if m == 6 { "end" } else { "middle" },
        );
    }
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{TL_LEFT}\" y1=\"{top}\" x2=\"{:.1}\" y2=\"{top}\"/>\
         <text x=\"8\" y=\"{}\" font-weight=\"700\">leader changes</text>",
        TL_LEFT + plot,
        top + 20
    );
    for (i, c) in changes.iter().enumerate() {
        let cx = x(c.at);
        let ly = top + if i % 2 == 0 { 14 } else { 28 };
        let _ = writeln!(
            out,
            "<g data-event=\"leader\" data-to=\"{to}\"><title>{} UTC: leader {} → {to} ({})</title>\
             <line class=\"lc\" x1=\"{cx:.1}\" y1=\"{top}\" x2=\"{cx:.1}\" y2=\"{}\"/>\
             <path class=\"lc\" d=\"M{cx:.1} {}l5 5-5 5-5-5z\"/>\
             <text x=\"{:.1}\" y=\"{ly}\">→ {}</text></g>",
            clock(c.at),
            escape(c.from.unwrap_or("none")),
            source_word(c.source),
            top + lane,
            top + 2,
            cx + 7.0,
            escape(&clip(c.to, 14)),
            to = escape(c.to),
        );
    }
    if changes.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\">none in the last hour</text>",
            TL_LEFT + 8.0,
            top + 20
        );
    }
    let base = top + lane;
    for (r, row) in rows.iter().enumerate() {
        let y = base + r * TL_ROW;
        let _ = write!(
            out,
            "<g data-row=\"{}\"><text x=\"8\" y=\"{}\">{}</text>",
            escape(row.key),
            y + 16,
            escape(&clip(&row.label, 28))
        );
        for (raised, resolved) in &row.spans {
            let x1 = x(*raised);
            let x2 = x(resolved.unwrap_or(now)).max(x1 + 3.0);
            let (class, words) = match resolved {
                Some(at) => (
                    "bar-resolved",
                    format!("raised {}, resolved {} UTC", clock(*raised), clock(*at)),
                ),
                None => (
                    "bar-active",
                    format!("raised {} UTC, still active", clock(*raised)),
                ),
            };
            let _ = write!(
                out,
                "<rect class=\"bar {class}\" x=\"{x1:.1}\" y=\"{}\" width=\"{:.1}\" height=\"12\"><title>{} {}</title></rect>",
                y + 6,
                x2 - x1,
                escape(&row.label),
                words
            );
            if *raised >= start {
                // Raised: a downward triangle at the start.
                let _ = write!(
                    out,
                    "<path d=\"M{:.1} {}h10l-5 7z\" fill=\"#1f2328\"/>",
                    x1 - 5.0,
                    y + 1
                );
            }
            if resolved.is_some() {
                // Resolved: a square at the end.
                let _ = write!(
                    out,
                    "<rect x=\"{:.1}\" y=\"{}\" width=\"8\" height=\"8\" fill=\"#fff\" stroke=\"#1f2328\" stroke-width=\"1.5\"/>",
                    x2 - 4.0,
                    y + 8
                );
            }
            let text = match resolved {
                Some(_) => "resolved".to_string(),
                None => "active".to_string(),
            };
            let (tx, anchor) = if x2 + 70.0 < TL_W {
                (x2 + 7.0, "start")
            } else {
                (x1 - 8.0, "end")
            };
            let _ = write!(
                out,
                "<text x=\"{tx:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{text}</text>",
                y + 16
            );
        }
        out.push_str("</g>\n");
    }
    if rows.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"8\" y=\"{}\" font-weight=\"700\">findings</text><text x=\"{}\" y=\"{}\">none raised or resolved in the last hour</text>",
            base + 16,
            TL_LEFT + 8.0,
            base + 16
        );
    }
    out.push_str("</svg>\n");
    if hidden > 0 {
        let _ = writeln!(
            out,
            "<p class=\"meta\">{hidden} older finding rows not drawn.</p>"
        );
    }
    events_list(out, past, meta, start, now);
}

fn source_word(source: ChangeSource) -> &'static str {
    match source {
        ChangeSource::Advisory => "advisory",
        ChangeSource::Poll => "poll",
    }
}

/// The timeline's events as text, newest first: leader changes, raises and resolves.
fn events_list(
    out: &mut String,
    past: &Past<'_>,
    meta: &MetaAssessment,
    start: SystemTime,
    now: SystemTime,
) {
    let mut events: Vec<(SystemTime, String)> = Vec::new();
    for c in &past.changes {
        if of_group(c.domain, meta) && c.at >= start {
            events.push((
                c.at,
                format!(
                    "<li data-event=\"leader\">{} UTC ({}): leader {} → {} ({})</li>",
                    clock(c.at),
                    ago(now, c.at),
                    escape(c.from.unwrap_or("none")),
                    escape(c.to),
                    source_word(c.source)
                ),
            ));
        }
    }
    for t in &past.events {
        if !of_group(t.domain, meta) || t.at < start {
            continue;
        }
        let word = match t.kind {
            TransitionKind::Raised => "raised",
            TransitionKind::Resolved => "resolved",
            TransitionKind::Updated => continue,
        };
        events.push((
            t.at,
            format!(
                "<li data-event=\"{word}\" data-key=\"{}\">{} UTC ({}): <b>{word}</b> {}{}: {}</li>",
                escape(t.key),
                clock(t.at),
                ago(now, t.at),
                t.check,
                t.server
                    .map(|s| format!(" {}", escape(s)))
                    .unwrap_or_default(),
                escape(t.summary)
            ),
        ));
    }
    if events.is_empty() {
        return;
    }
    // Stable: events at the same instant keep their recorded order before the reversal.
    events.sort_by_key(|(at, _)| *at);
    out.push_str("<ol class=\"events\" reversed>\n");
    for (_, line) in events.iter().rev().take(EVENTS_LISTED) {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("</ol>\n");
}

fn footer(out: &mut String, thresholds: &Thresholds) {
    out.push_str("<footer><p>Legend: every state is a word and a shape.</p>");
    let legend = [
        (PageState::Online, "solid: answering, caught up"),
        (PageState::Offline, "dashed, a cross: down"),
        (PageState::Behind, "hatched, dotted: lagging"),
        (PageState::Unknown, "sparse dots: no leader view"),
    ];
    out.push_str(
        "<svg width=\"980\" height=\"40\" viewBox=\"0 0 980 40\" role=\"img\" aria-label=\"legend\">",
    );
    for (i, (state, words)) in legend.iter().enumerate() {
        let word = state.as_str();
        let _ = write!(
            out,
            "<g class=\"member st-{word}\" transform=\"translate({},4)\"><rect class=\"card\" x=\"1\" y=\"1\" width=\"30\" height=\"30\" rx=\"5\"/>\
             <text class=\"word\" x=\"38\" y=\"14\">{word}</text><text class=\"fact\" x=\"38\" y=\"28\">{words}</text></g>",
            i * 245
        );
    }
    out.push_str("</svg>");
    let _ = writeln!(
        out,
        "<p>A member is offline when it stopped, stopped answering, or the leader has not heard \
         from it for {}; behind when the leader shows it not current or more than {} operations behind (META_101 raises it after \
         {}). The star marks the leader. Also here: <a href=\"/api/status.json\">/api/status.json</a> \
         (the STATUS response), <a href=\"/metrics\">/metrics</a>, <a href=\"/healthz\">/healthz</a>. \
         This page re-fetches itself every {REFRESH_SECS} s.</p></footer>",
        short_duration(thresholds.offline_after),
        thresholds.lag_max,
        short_duration(thresholds.behind_after),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{history_response, MAX_LIMIT};
    use crate::checks::members::{ClusterTally, LeaderGroup};
    use crate::checks::{Finding, OfflineReason, Remediation};
    use crate::findings::{ActiveFinding, Transition};
    use crate::history::{LeaderChange, LEADER_CHANGES_KEPT};
    use crate::status::recent::TRANSITIONS_KEPT;
    use crate::status::{status_response, EngineStatus, Instance};

    // The HTTP edge renders HISTORY at its largest limit: that holds every transition and leader
    // change kept, so the timeline misses none.
    const _: () = assert!(TRANSITIONS_KEPT + LEADER_CHANGES_KEPT <= MAX_LIMIT);

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    /// `now` of every test: an hour and a bit after `t(0)`.
    fn now() -> SystemTime {
        t(4000)
    }

    fn member(name: &str, cluster: &str, leader: bool, state: MemberState) -> Member {
        let online = state == MemberState::Online;
        Member {
            name: name.to_string(),
            peer: Some(format!("p{name}")),
            cluster: Some(cluster.to_string()),
            leader,
            answered: online,
            name_unknown: false,
            current: (!leader).then_some(online),
            active: (!leader).then(|| Duration::from_millis(if online { 300 } else { 9000 })),
            lag: 0,
            version: Some("2.15.1".into()),
            facts: None,
            state,
        }
    }

    fn offline(by: &str) -> MemberState {
        MemberState::Offline(vec![OfflineReason::Silent {
            active: Duration::from_secs(9),
            reported_by: by.to_string(),
        }])
    }

    fn meta(domain: Option<&str>, members: Vec<Member>) -> MetaAssessment {
        let mut clusters: Vec<ClusterTally> = Vec::new();
        for m in &members {
            let c = m.cluster.clone().unwrap_or_default();
            match clusters.iter_mut().find(|t| t.cluster == c) {
                Some(t) => {
                    t.members += 1;
                    t.online += usize::from(m.online());
                }
                None => clusters.push(ClusterTally {
                    cluster: c,
                    members: 1,
                    online: usize::from(m.online()),
                }),
            }
        }
        let leader = members.iter().find(|m| m.leader).map(|m| m.name.clone());
        let size = members.len();
        MetaAssessment {
            group: GroupId::of(domain),
            cluster: clusters[0].cluster.clone(),
            lead_cluster: members
                .iter()
                .find(|m| m.leader)
                .and_then(|m| m.cluster.clone()),
            clusters,
            domain: domain.map(str::to_string),
            leaderless_since: leader.is_none().then(|| t(3990)),
            unheard_since: None,
            leaders_reported: vec![LeaderGroup {
                leader: leader.clone(),
                servers: members.iter().map(|m| m.name.clone()).collect(),
            }],
            leader,
            cluster_size: size,
            quorum_needed: size / 2 + 1,
            pending: Some(0),
            servers_answering: members.iter().filter(|m| m.answered).count(),
            members,
            non_members: vec![],
            outside: vec![],
        }
    }

    fn finding(check: CheckId, server: Option<&str>, summary: &str) -> Finding {
        Finding {
            check,
            key: format!("{check}/default/{}", server.unwrap_or("")),
            cluster: None,
            domain: None,
            server: server.map(str::to_string),
            summary: summary.to_string(),
            evidence: serde_json::json!({}),
            remediation: vec![
                Remediation::with_command("Start the server again", "nats server report jetstream"),
                Remediation::step("A second step the page does not show"),
            ],
            fingerprint: String::new(),
        }
    }

    fn raise(status: &mut EngineStatus, f: Finding, at: u64) {
        let changes = status.recent.leader_changes.clone();
        status.recent.record(
            &[Transition {
                kind: TransitionKind::Raised,
                finding: f.clone(),
                episode: 1,
                epoch: String::new(),
                revision: 1,
                raised_at: t(at),
                at: t(at),
            }],
            &changes,
        );
        status.active.insert(
            f.key.clone(),
            ActiveFinding {
                finding: f,
                episode: 1,
                epoch: String::new(),
                revision: 1,
                raised_at: t(at),
                changed_at: t(at),
            },
        );
    }

    /// The page of `status` as the HTTP edge renders it: from the STATUS response and all of
    /// HISTORY.
    fn page(status: &EngineStatus) -> String {
        let instance = Instance {
            id: "inst-1".into(),
            started: t(0),
        };
        render(
            &status_response(status, &instance, now()),
            &history_response(status, MAX_LIMIT, now()),
            now(),
            &Thresholds::default(),
        )
    }

    fn healthy() -> EngineStatus {
        EngineStatus {
            meta_groups: vec![meta(
                None,
                vec![
                    member("n1", "c1", true, MemberState::Online),
                    member("n2", "c1", false, MemberState::Online),
                    member("n3", "c1", false, MemberState::Online),
                ],
            )],
            servers_answering: 3,
            last_poll: Some(t(3999)),
            polls: 100,
            ..EngineStatus::default()
        }
    }

    /// The opening tag of the element whose attribute `attr` is `value`.
    fn tag<'a>(html: &'a str, attr: &str, value: &str) -> &'a str {
        let needle = format!("{attr}=\"{value}\"");
        let at = html
            .find(&needle)
            .unwrap_or_else(|| panic!("no {needle} in\n{html}"));
        let open = html[..at].rfind('<').expect("tag start");
        let close = at + html[at..].find('>').expect("tag end");
        &html[open..=close]
    }

    #[test]
    fn a_healthy_group_of_three_shows_three_online_members_and_its_leader() {
        let html = page(&healthy());
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("<body data-status=\"ok\""), "{html}");
        let group = tag(&html, "data-group", "default");
        assert!(group.contains("data-quorum=\"held\""), "{group}");
        for name in ["n1", "n2", "n3"] {
            let m = tag(&html, "data-member", name);
            assert!(m.contains("data-state=\"online\""), "{m}");
            assert_eq!(m.contains("data-leader=\"true\""), name == "n1", "{m}");
        }
        assert_eq!(html.matches("data-leader=\"true\"").count(), 1);
        assert!(html.contains("online · leader"));
        assert!(html.contains("last heard 300ms ago"), "{html}");
        assert!(html.contains("quorum held: 3 of 3 members online, 2 needed"));
        assert!(html.contains("data-findings=\"none\""));
        assert!(html.contains("none in the last hour"));
        // Nothing external: no URL of another host, one script (the refresh).
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert_eq!(html.matches("<script>").count(), 1);
        // Pure: the same input renders the same page.
        assert_eq!(html, page(&healthy()));
    }

    #[test]
    fn members_with_a_direct_link_are_listed_and_one_without_is_said_degraded() {
        let mut status = healthy();
        assert!(
            !page(&status).contains("Direct links"),
            "none before discovery"
        );
        let link = |server: &str, direct: bool| LinkHealth {
            server: server.to_string(),
            direct,
            connected: direct.then_some(true),
            source: direct.then_some(crate::status::LinkSource::Varz),
            url: direct.then(|| format!("nats://{server}:4222")),
            reason: (!direct).then(|| "cannot connect: <timed out>".to_string()),
        };
        status.links = vec![link("n1", true), link("n2", true), link("n3", false)];
        let html = page(&status);
        assert!(
            html.contains("data-direct=\"n1 n2\">Direct links: n1, n2</p>"),
            "{html}"
        );
        let degraded = tag(&html, "data-no-direct-link", "n3");
        assert!(degraded.contains("class=\"warn\""), "{degraded}");
        assert!(
            html.contains(
                "partition detection degraded for it (cannot connect: &lt;timed out&gt;)"
            ),
            "{html}"
        );
    }

    #[test]
    fn an_offline_follower_is_dashed_named_and_its_finding_shows_the_first_step() {
        let mut status = healthy();
        status.meta_groups[0].members[2] = member("n3", "c1", false, offline("n1"));
        status.recent.record(
            &[],
            &[LeaderChange {
                at: t(3700),
                from: Some("n3".into()),
                to: "n1".into(),
                source: ChangeSource::Advisory,
                server_at: None,
                domain: None,
            }],
        );
        raise(
            &mut status,
            finding(CheckId::META_001, Some("n3"), "meta replica n3 is offline"),
            3800,
        );
        let html = page(&status);
        let m = tag(&html, "data-member", "n3");
        assert!(m.contains("data-state=\"offline\""), "{m}");
        assert!(m.contains("st-offline"), "{m}");
        assert!(html.contains(">offline</text>"), "the word itself");
        assert!(html.contains("leader n1 has not heard from it for 9.0 s"));
        assert!(html.contains("last heard 9.0s ago"));
        let f = tag(&html, "data-finding", "META_001/default/n3");
        assert!(f.contains("data-check=\"META_001\""), "{f}");
        assert!(html.contains(
            "<b>First step:</b> Start the server again <code>nats server report jetstream</code>"
        ));
        assert!(!html.contains("A second step"));
        assert!(html.contains("nats-insights explain META_001"));
        assert!(html.contains("<body data-status=\"critical\""));
        // The timeline: the leader change and the raise, drawn and listed.
        assert!(html.contains("data-event=\"leader\" data-to=\"n1\""));
        assert!(html.contains("data-row=\"META_001/default/n3\""));
        assert!(html.contains("class=\"bar bar-active\""));
        assert!(html.contains("leader n3 → n1 (advisory)"));
        assert!(html.contains("<b>raised</b> META_001 n3"));
    }

    #[test]
    fn quorum_lost_says_so_without_a_leader() {
        let mut status = healthy();
        let g = &mut status.meta_groups[0];
        g.members = vec![
            member("n1", "c1", false, MemberState::Online),
            member("n2", "c1", false, offline("n1")),
            member("n3", "c1", false, offline("n1")),
        ];
        g.leader = None;
        g.lead_cluster = None;
        g.leaderless_since = Some(t(3988));
        raise(
            &mut status,
            finding(CheckId::META_006, None, "meta quorum lost"),
            3990,
        );
        let html = page(&status);
        let group = tag(&html, "data-group", "default");
        assert!(group.contains("data-quorum=\"lost\""), "{group}");
        assert!(html.contains("QUORUM LOST: 1 of 3 members online, 2 needed · NO LEADER for 12.0s"));
        assert!(!html.contains("data-leader=\"true\""));
        assert_eq!(html.matches("data-state=\"offline\"").count(), 2);
        assert!(tag(&html, "data-finding", "META_006/default/").contains("data-check=\"META_006\""));
    }

    #[test]
    fn an_unheard_group_says_since_when_with_its_members_unknown() {
        let mut status = healthy();
        let g = &mut status.meta_groups[0];
        g.members = vec![
            member("n1", "c1", false, MemberState::Unknown),
            member("n2", "c1", false, MemberState::Unknown),
            member("n3", "c1", false, MemberState::Unknown),
        ];
        g.leader = None;
        g.lead_cluster = None;
        g.leaderless_since = None;
        g.unheard_since = Some(t(3990));
        let html = page(&status);
        assert!(
            html.contains("UNHEARD since 2027-01-15T09:06:30.000Z (10.0s ago)"),
            "{html}"
        );
        assert!(!html.contains("quorum held"));
        assert_eq!(html.matches("data-state=\"unknown\"").count(), 3);
    }

    #[test]
    fn a_supercluster_draws_one_figure_per_cluster() {
        let mut status = healthy();
        status.meta_groups = vec![meta(
            Some("hub"),
            vec![
                member("a1", "east", true, MemberState::Online),
                member("a2", "east", false, MemberState::Online),
                member("b1", "west", false, offline("a1")),
                member("b2", "west", false, MemberState::Online),
            ],
        )];
        let html = page(&status);
        assert!(html.contains("data-group=\"hub\""));
        assert!(html.contains("Meta group domain hub"));
        let east = html.find("data-cluster=\"east\"").expect("east");
        let west = html
            .find("<figure class=\"cluster\" data-cluster=\"west\"")
            .expect("west");
        assert!(html.contains("cluster east: 2 of 2 online"));
        assert!(html.contains("cluster west: 1 of 2 online"));
        for (name, in_west) in [("a1", false), ("a2", false), ("b1", true), ("b2", true)] {
            let at = html.find(&format!("data-member=\"{name}\"")).expect(name);
            assert!(at > east);
            assert_eq!(at > west, in_west, "{name}");
        }
        assert!(html.contains("leader a1 (cluster east)"));
        // A lagging member is behind: its own word and shape.
        status.meta_groups[0].members[3].current = Some(false);
        status.meta_groups[0].members[3].lag = 900;
        let html = page(&status);
        let m = tag(&html, "data-member", "b2");
        assert!(m.contains("data-state=\"behind\""), "{m}");
        assert!(html.contains("lag 900 ops · not current"));
    }

    #[test]
    fn text_from_the_network_is_escaped() {
        let hostile = "<script>alert(\"x\")</script>&'";
        let mut status = healthy();
        status.meta_groups[0].members[1] = member(hostile, "c<1>", false, offline("n1"));
        let mut f = finding(
            CheckId::META_001,
            Some(hostile),
            &format!("{hostile} is offline"),
        );
        f.remediation = vec![Remediation::with_command(hostile, hostile)];
        raise(&mut status, f, 3900);
        let html = page(&status);
        assert_eq!(
            html.matches("<script>").count(),
            1,
            "only the refresh script"
        );
        assert!(!html.contains("alert(\"x\")"));
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"));
        assert!(html.contains("data-cluster=\"c&lt;1&gt;\""));

        // Names that break shells and terminals: the command shows quoted, as one HTML text.
        for h in crate::text::HOSTILE_NAMES {
            let mut status = healthy();
            let command = crate::checks::peer_remove_command(h);
            let mut f = finding(CheckId::META_001, Some(h), h);
            f.remediation = vec![Remediation::with_command(*h, command.clone())];
            raise(&mut status, f, 3900);
            let html = page(&status);
            assert!(html.contains(&escape(&command)), "{command}");
            assert!(!html.contains("<script>alert"), "{h}");
        }
    }

    #[test]
    fn the_timeline_keeps_the_last_hour_only() {
        let mut status = healthy();
        let old = finding(CheckId::META_003, None, "flapped long ago");
        status.recent.record(
            &[
                Transition {
                    kind: TransitionKind::Raised,
                    finding: old.clone(),
                    episode: 1,
                    epoch: String::new(),
                    revision: 1,
                    raised_at: t(10),
                    at: t(10),
                },
                Transition {
                    kind: TransitionKind::Resolved,
                    finding: old.clone(),
                    episode: 1,
                    epoch: String::new(),
                    revision: 2,
                    raised_at: t(10),
                    at: t(20),
                },
            ],
            &[LeaderChange {
                at: t(5),
                from: None,
                to: "n1".into(),
                source: ChangeSource::Poll,
                server_at: None,
                domain: None,
            }],
        );
        let html = page(&status);
        assert!(!html.contains("data-row="), "{html}");
        assert!(!html.contains("data-event="));
        // Resolved inside the hour: a closed bar, and both events listed.
        let recent = finding(CheckId::META_001, Some("n2"), "n2 was offline");
        raise(&mut status, recent.clone(), 3500);
        status.active.clear();
        status.recent.record(
            &[Transition {
                kind: TransitionKind::Resolved,
                finding: recent,
                episode: 1,
                epoch: String::new(),
                revision: 2,
                raised_at: t(3500),
                at: t(3600),
            }],
            &[],
        );
        let html = page(&status);
        assert!(html.contains("class=\"bar bar-resolved\""));
        assert!(!html.contains("class=\"bar bar-active\""));
        // HISTORY's words for a resolve: how long the finding lasted.
        assert!(
            html.contains("<b>resolved</b> META_001 n2: Resolved after 100.0 s: n2 was offline"),
            "{html}"
        );
        assert!(html.contains("data-findings=\"none\""));
    }

    #[test]
    fn the_assets_cannot_end_their_element_and_the_script_takes_the_period() {
        // Inlined as they are: a `</` would end the <style> or <script> element early.
        assert!(!STYLE.contains("</") && !SCRIPT.contains("</"));
        assert_eq!(SCRIPT.matches("REFRESH_MS").count(), 1);
        let html = page(&healthy());
        assert!(html.contains("var every = 3000;"), "{html}");
    }

    #[test]
    fn before_the_first_poll_it_says_it_is_waiting() {
        let html = page(&EngineStatus::default());
        assert!(html.contains("data-waiting=\"true\""));
        assert!(html.contains("<body data-status=\"unknown\""));
        assert!(html.contains("no poll completed yet"));
    }
}
