//! `nats-insights check`: a monitoring-plugin result (Nagios/Icinga/Sensu) and its four renderings
//! (`nagios` with perfdata, `json`, `prometheus` for the node_exporter textfile collector,
//! `text`), plus the meta group's evaluation with `nats server check meta`'s flags. The output
//! follows natscli's where the meaning is the same (perfdata names, JSON keys, metric names
//! `<namespace>_<check>_<perfdata>`), so an existing setup reads it; see docs/check.md. Pure.

use std::fmt::Write as _;
use std::time::Duration;

use crate::render::text::Health;

/// Who answered the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The running service (STATUS / FINDINGS): partition-aware, with its findings.
    Service,
    /// No service answered: the meta leader's own JSZ view, read directly.
    DirectJsz,
}

impl Source {
    /// The phrase every format carries.
    pub fn phrase(self) -> &'static str {
        match self {
            Source::Service => "from nats-insights",
            Source::DirectJsz => "from a direct JSZ read",
        }
    }

    /// The short key of the JSON and Prometheus forms.
    pub fn key(self) -> &'static str {
        match self {
            Source::Service => "nats-insights",
            Source::DirectJsz => "jsz",
        }
    }
}

/// The output format (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line: `STATUS name messages | perfdata`.
    Nagios,
    /// The result as a JSON object.
    Json,
    /// Prometheus text exposition (node_exporter textfile collector).
    Prometheus,
    /// For a person.
    Text,
}

/// One perfdata value.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfItem {
    /// Label, e.g. `peers`.
    pub name: String,
    /// Value.
    pub value: f64,
    /// Warning threshold.
    pub warn: Option<f64>,
    /// Critical threshold.
    pub crit: Option<f64>,
    /// Unit of measure (`s`, `B`), empty for a count.
    pub unit: String,
    /// What it counts (Prometheus HELP, text table).
    pub help: String,
}

impl PerfItem {
    /// A count without thresholds.
    pub fn count(name: &str, value: usize, help: &str) -> PerfItem {
        PerfItem {
            name: name.to_string(),
            value: value as f64,
            warn: None,
            crit: None,
            unit: String::new(),
            help: help.to_string(),
        }
    }
}

/// A check's result: messages by state, and perfdata.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// Display name (`JetStream Meta Cluster`, the Prometheus `item` label).
    pub name: String,
    /// Check suite (`meta`, or a check id in lower case): the metric name's middle.
    pub check: String,
    /// Who answered, when anyone did.
    pub source: Option<Source>,
    /// Critical messages.
    pub criticals: Vec<String>,
    /// Warning messages.
    pub warnings: Vec<String>,
    /// Why the state could not be determined.
    pub unknowns: Vec<String>,
    /// OK messages.
    pub oks: Vec<String>,
    /// Perfdata.
    pub perfdata: Vec<PerfItem>,
}

impl CheckResult {
    /// An empty result.
    pub fn new(name: &str, check: &str) -> CheckResult {
        CheckResult {
            name: name.to_string(),
            check: check.to_string(),
            source: None,
            criticals: Vec::new(),
            warnings: Vec::new(),
            unknowns: Vec::new(),
            oks: Vec::new(),
            perfdata: Vec::new(),
        }
    }

    /// The state: critical, then unknown, then warning, else OK (a check that could not
    /// see everything is never OK).
    pub fn health(&self) -> Health {
        if !self.criticals.is_empty() {
            Health::Critical
        } else if !self.unknowns.is_empty() {
            Health::Unknown
        } else if !self.warnings.is_empty() {
            Health::Warning
        } else {
            Health::Ok
        }
    }

    /// The process exit code for a format: the Nagios code, except 0 for `prometheus` (as
    /// natscli: the state is in `status_code`, and a textfile cron job must not fail).
    pub fn exit_code(&self, format: Format) -> u8 {
        match format {
            Format::Prometheus => 0,
            _ => self.health().exit_code(),
        }
    }

    /// The result in a format.
    pub fn render(&self, format: Format, namespace: &str) -> String {
        match format {
            Format::Nagios => self.nagios(),
            Format::Json => self.json(),
            Format::Prometheus => self.prometheus(namespace),
            Format::Text => self.text(),
        }
    }

    fn source_phrase(&self) -> &'static str {
        self.source
            .map(Source::phrase)
            .unwrap_or("no source answered")
    }

    /// `STATUS name Crit:... Warn:... Unknown:... OK:... (source) | perfdata`, one line.
    pub fn nagios(&self) -> String {
        let mut parts = vec![one_line(&self.name)];
        for (tag, messages) in [
            ("Crit", &self.criticals),
            ("Unknown", &self.unknowns),
            ("Warn", &self.warnings),
            ("OK", &self.oks),
        ] {
            parts.extend(messages.iter().map(|m| format!("{tag}:{}", one_line(m))));
        }
        parts.push(format!("({})", self.source_phrase()));
        let mut line = format!("{} {}", word(self.health()), parts.join(" "));
        if !self.perfdata.is_empty() {
            let perf: Vec<String> = self.perfdata.iter().map(nagios_perf).collect();
            // `|` starts the perfdata: it must not appear in the text part.
            line = format!("{} | {}", line.replace('|', "/"), perf.join(" "));
        }
        line + "\n"
    }

    /// The JSON form: natscli's keys (`status`, `check_suite`, `check_name`, `critical`,
    /// `warning`, `ok`, `perf_data`) plus `unknown` and `source`.
    pub fn json(&self) -> String {
        let perf: Vec<serde_json::Value> = self
            .perfdata
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "value": p.value,
                    "warning": p.warn,
                    "critical": p.crit,
                    "unit": p.unit,
                })
            })
            .collect();
        let value = serde_json::json!({
            "status": word(self.health()),
            "check_suite": self.check,
            "check_name": self.name,
            "source": self.source.map(Source::key),
            "critical": self.criticals,
            "warning": self.warnings,
            "unknown": self.unknowns,
            "ok": self.oks,
            "perf_data": perf,
        });
        serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
    }

    /// Prometheus text exposition: one gauge per perfdata item
    /// (`<namespace>_<check>_<name>{item="<name>"}`) and `<namespace>_<check>_status_code
    /// {item, status}` with the Nagios code, as natscli; a comment line names the source.
    pub fn prometheus(&self, namespace: &str) -> String {
        let prefix = metric_name(&format!("{namespace}_{}", self.check));
        let item = label_value(&self.name);
        let mut out = format!(
            "# nats-insights check {}: {}\n",
            one_line(&self.check),
            self.source_phrase()
        );
        for p in &self.perfdata {
            let name = metric_name(&format!("{prefix}_{}", p.name));
            let help = if p.help.is_empty() {
                format!("Data of the nats-insights check {}", self.check)
            } else {
                p.help.clone()
            };
            let _ = writeln!(out, "# HELP {name} {}", help_text(&help));
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name}{{item=\"{item}\"}} {}", number(p.value));
        }
        let name = format!("{prefix}_status_code");
        let health = self.health();
        let _ = writeln!(
            out,
            "# HELP {name} Nagios compatible status code for {}",
            help_text(&self.check)
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(
            out,
            "{name}{{item=\"{item}\",status=\"{}\"}} {}",
            word(health),
            health.exit_code()
        );
        out
    }

    /// For a person: the state, each message, the metrics.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{}: {} ({})\n",
            one_line(&self.name),
            word(self.health()),
            self.source_phrase()
        );
        let rows: Vec<(&str, &String)> = [
            ("Critical", &self.criticals),
            ("Unknown", &self.unknowns),
            ("Warning", &self.warnings),
            ("OK", &self.oks),
        ]
        .into_iter()
        .flat_map(|(tag, messages)| messages.iter().map(move |m| (tag, m)))
        .collect();
        if !rows.is_empty() {
            out.push('\n');
            for (tag, message) in rows {
                let _ = writeln!(out, "  {tag:<9} {}", one_line(message));
            }
        }
        if !self.perfdata.is_empty() {
            let width = self
                .perfdata
                .iter()
                .map(|p| p.name.len())
                .max()
                .unwrap_or(0);
            out.push_str("\nMetrics\n\n");
            for p in &self.perfdata {
                let mut line = format!("  {:<width$} {:>6}{}", p.name, number(p.value), p.unit);
                if let Some(w) = p.warn {
                    let _ = write!(line, "  warn {}", number(w));
                }
                if let Some(c) = p.crit {
                    let _ = write!(line, "  crit {}", number(c));
                }
                if !p.help.is_empty() {
                    let _ = write!(line, "  {}", p.help);
                }
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
        out
    }
}

/// `OK`, `WARNING`, `CRITICAL`, `UNKNOWN`.
pub fn word(health: Health) -> &'static str {
    match health {
        Health::Ok => "OK",
        Health::Warning => "WARNING",
        Health::Critical => "CRITICAL",
        Health::Unknown => "UNKNOWN",
    }
}

/// Whole numbers without a fraction, others with up to 4 decimals.
fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_finite() {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        "NaN".to_string()
    }
}

/// `label=value[unit][;warn[;crit]]`, the label quoted when it has spaces or `=`/`'`.
fn nagios_perf(p: &PerfItem) -> String {
    let label = if p.name.contains([' ', '\t', '=', '\'']) {
        format!("'{}'", p.name.replace('\'', "''"))
    } else {
        p.name.clone()
    };
    let mut out = format!("{label}={}{}", number(p.value), p.unit);
    match (p.warn, p.crit) {
        (None, None) => {}
        (Some(w), None) => {
            let _ = write!(out, ";{}", number(w));
        }
        (w, Some(c)) => {
            let _ = write!(out, ";{};{}", w.map(number).unwrap_or_default(), number(c));
        }
    }
    out
}

/// Control characters and line breaks become spaces: a plugin's output is one line, and a
/// server name from the network cannot move the cursor of a terminal.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A valid Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn metric_name(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.chars().next().is_none_or(|c| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A label value escaped for the text format.
fn label_value(raw: &str) -> String {
    raw.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// HELP text escaped for the text format.
fn help_text(raw: &str) -> String {
    raw.replace('\\', "\\\\").replace('\n', "\\n")
}

/// `nats server check meta`'s thresholds (each optional here: unset, it is not checked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaOptions {
    /// `--expect`: the number of meta members expected.
    pub expect: Option<usize>,
    /// `--lag-critical`: a follower more operations behind than this is critical.
    pub lag_critical: Option<u64>,
    /// `--seen-critical`: a follower the leader last heard from longer ago than this is critical.
    pub seen_critical: Option<Duration>,
}

/// One follower as the source sees it; `None` is "not known".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerState {
    /// Server name.
    pub name: String,
    /// Offline (the service's partition-aware verdict, or the server's own flag).
    pub offline: Option<bool>,
    /// Current in the leader's view.
    pub current: Option<bool>,
    /// Since the leader last heard from it.
    pub active: Option<Duration>,
    /// Operations behind.
    pub lag: Option<u64>,
}

/// The meta group as one source sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaObservation {
    /// The meta leader, when there is one.
    pub leader: Option<String>,
    /// Members, the leader included.
    pub members: usize,
    /// The followers (every member but the leader).
    pub peers: Vec<PeerState>,
}

/// The display name of the meta check (as natscli's).
pub const META_NAME: &str = "JetStream Meta Cluster";

fn named(count_and_what: String, names: &[&str]) -> String {
    if names.is_empty() {
        count_and_what
    } else {
        format!("{count_and_what}: {}", names.join(", "))
    }
}

/// `check meta`: critical without a leader, with other than `expect` members, or with any
/// follower offline, not current, unheard for longer than `seen_critical` or more than
/// `lag_critical` operations behind (each named); perfdata `peers`, `peer_offline`,
/// `peer_not_current`, `peer_inactive`, `peer_lagged` as natscli's. A follower whose state
/// the source does not know makes the result UNKNOWN unless something is critical.
pub fn evaluate_meta(
    observed: &MetaObservation,
    options: &MetaOptions,
    source: Source,
) -> CheckResult {
    let mut result = CheckResult::new(META_NAME, "meta");
    result.source = Some(source);
    let expect = options.expect.map(|e| e as f64);
    result.perfdata.push(PerfItem {
        warn: expect,
        crit: expect,
        ..PerfItem::count("peers", observed.members, "Configured RAFT peers")
    });
    if let Some(expect) = options.expect {
        if observed.members != expect {
            result
                .criticals
                .push(format!("{} peers of expected {expect}", observed.members));
        }
    }
    let Some(leader) = &observed.leader else {
        result.criticals.push("no meta leader".to_string());
        return result;
    };
    let pick = |f: &dyn Fn(&PeerState) -> bool| -> Vec<&str> {
        observed
            .peers
            .iter()
            .filter(|p| f(p))
            .map(|p| p.name.as_str())
            .collect()
    };
    let offline = pick(&|p| p.offline == Some(true));
    let not_current = pick(&|p| p.current == Some(false));
    let inactive = match options.seen_critical {
        Some(limit) => pick(&|p| p.active.is_some_and(|a| a > limit)),
        None => Vec::new(),
    };
    let lagged = match options.lag_critical {
        Some(limit) => pick(&|p| p.lag.is_some_and(|l| l > limit)),
        None => Vec::new(),
    };
    let unknown = pick(&|p| {
        p.offline != Some(true)
            && (p.offline.is_none()
                || p.current.is_none()
                || (options.seen_critical.is_some() && p.active.is_none())
                || (options.lag_critical.is_some() && p.lag.is_none()))
    });
    result.perfdata.extend([
        PerfItem::count("peer_offline", offline.len(), "Offline RAFT peers"),
        PerfItem::count(
            "peer_not_current",
            not_current.len(),
            "RAFT peers that are not current",
        ),
        PerfItem::count("peer_inactive", inactive.len(), "Inactive RAFT peers"),
        PerfItem::count(
            "peer_lagged",
            lagged.len(),
            "RAFT peers lagging more than the threshold",
        ),
    ]);
    if !offline.is_empty() {
        result
            .criticals
            .push(named(format!("{} offline", offline.len()), &offline));
    }
    if !not_current.is_empty() {
        result.criticals.push(named(
            format!("{} not current", not_current.len()),
            &not_current,
        ));
    }
    if let (false, Some(limit)) = (inactive.is_empty(), options.seen_critical) {
        result.criticals.push(named(
            format!(
                "{} inactive more than {}",
                inactive.len(),
                humantime::format_duration(limit)
            ),
            &inactive,
        ));
    }
    if let (false, Some(limit)) = (lagged.is_empty(), options.lag_critical) {
        result.criticals.push(named(
            format!("{} lagged more than {limit} ops", lagged.len()),
            &lagged,
        ));
    }
    if !unknown.is_empty() {
        result.unknowns.push(named(
            format!("{} of unknown state", unknown.len()),
            &unknown,
        ));
    }
    if result.criticals.is_empty() && result.unknowns.is_empty() {
        result
            .oks
            .push(format!("{} peers led by {leader}", observed.members));
    }
    result
}

/// `check <CHECK_ID>`: CRITICAL or WARNING per the active findings of that check (one
/// message each, `server: summary`), OK when none; UNKNOWN when the service could not run its
/// checks (`cannot_observe` says why) and no finding is active. `findings` are
/// (severity, line) pairs; `info` findings are listed as OK lines.
pub fn evaluate_findings(
    check: &str,
    name: &str,
    findings: &[(String, String)],
    cannot_observe: Option<&str>,
) -> CheckResult {
    let mut result = CheckResult::new(&format!("{check} {name}"), &check.to_ascii_lowercase());
    result.source = Some(Source::Service);
    let mut critical = 0;
    let mut warning = 0;
    for (severity, line) in findings {
        match severity.as_str() {
            "critical" => {
                critical += 1;
                result.criticals.push(line.clone());
            }
            "warning" => {
                warning += 1;
                result.warnings.push(line.clone());
            }
            _ => result.oks.push(format!("info: {line}")),
        }
    }
    result.perfdata.extend([
        PerfItem::count("findings", findings.len(), "Active findings of the check"),
        PerfItem::count("findings_critical", critical, "Active critical findings"),
        PerfItem::count("findings_warning", warning, "Active warning findings"),
    ]);
    if findings.is_empty() {
        match cannot_observe {
            Some(why) => result
                .unknowns
                .push(format!("the service cannot observe: {why}")),
            None => result.oks.push("no active finding".to_string()),
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, current: bool, active_s: u64, lag: u64) -> PeerState {
        PeerState {
            name: name.to_string(),
            offline: Some(false),
            current: Some(current),
            active: Some(Duration::from_secs(active_s)),
            lag: Some(lag),
        }
    }

    fn healthy() -> MetaObservation {
        MetaObservation {
            leader: Some("n1".into()),
            members: 3,
            peers: vec![peer("n2", true, 0, 0), peer("n3", true, 0, 0)],
        }
    }

    fn options() -> MetaOptions {
        MetaOptions {
            expect: Some(3),
            lag_critical: Some(100),
            seen_critical: Some(Duration::from_secs(10)),
        }
    }

    #[test]
    fn a_healthy_group_is_one_nagios_line_with_natscli_perfdata() {
        let result = evaluate_meta(&healthy(), &options(), Source::Service);
        assert_eq!(result.health(), Health::Ok);
        assert_eq!(result.exit_code(Format::Nagios), 0);
        assert_eq!(
            result.nagios(),
            "OK JetStream Meta Cluster OK:3 peers led by n1 (from nats-insights) | \
             peers=3;3;3 peer_offline=0 peer_not_current=0 peer_inactive=0 peer_lagged=0\n"
        );
    }

    #[test]
    fn each_fault_is_critical_and_names_the_servers() {
        let mut observed = healthy();
        observed.peers[1].offline = Some(true);
        observed.peers[1].current = Some(false);
        observed.peers[1].active = Some(Duration::from_secs(30));
        observed.peers[0].lag = Some(500);
        let result = evaluate_meta(&observed, &options(), Source::DirectJsz);
        assert_eq!(result.health(), Health::Critical);
        assert_eq!(result.exit_code(Format::Nagios), 2);
        assert_eq!(
            result.criticals,
            [
                "1 offline: n3",
                "1 not current: n3",
                "1 inactive more than 10s: n3",
                "1 lagged more than 100 ops: n2"
            ]
        );
        let line = result.nagios();
        assert!(
            line.starts_with("CRITICAL JetStream Meta Cluster Crit:1 offline: n3 "),
            "{line}"
        );
        assert!(line.contains("(from a direct JSZ read) | peers=3;3;3 peer_offline=1 peer_not_current=1 peer_inactive=1 peer_lagged=1"), "{line}");
        assert!(!line.contains("OK:"), "{line}");
    }

    #[test]
    fn no_leader_and_a_wrong_size_are_critical() {
        let mut observed = healthy();
        observed.leader = None;
        observed.members = 2;
        let result = evaluate_meta(&observed, &options(), Source::Service);
        assert_eq!(
            result.criticals,
            ["2 peers of expected 3", "no meta leader"]
        );
        assert_eq!(result.perfdata.len(), 1);
    }

    #[test]
    fn a_follower_of_unknown_state_is_never_ok() {
        let mut observed = healthy();
        observed.peers[0].offline = None;
        let result = evaluate_meta(&observed, &options(), Source::Service);
        assert_eq!(result.health(), Health::Unknown);
        assert_eq!(result.exit_code(Format::Nagios), 3);
        assert_eq!(result.unknowns, ["1 of unknown state: n2"]);
        // Unset thresholds are not checked, and need no data.
        let mut observed = healthy();
        observed.peers[0].active = None;
        observed.peers[0].lag = None;
        let result = evaluate_meta(&observed, &MetaOptions::default(), Source::Service);
        assert_eq!(result.health(), Health::Ok, "{result:?}");
        assert_eq!(result.perfdata[0].warn, None);
        assert!(result.nagios().contains("| peers=3 peer_offline=0"));
    }

    #[test]
    fn json_uses_natscli_keys_and_says_the_source() {
        let result = evaluate_meta(&healthy(), &options(), Source::DirectJsz);
        let value: serde_json::Value = serde_json::from_str(&result.json()).expect("json");
        assert_eq!(value["status"], "OK");
        assert_eq!(value["check_suite"], "meta");
        assert_eq!(value["check_name"], META_NAME);
        assert_eq!(value["source"], "jsz");
        assert_eq!(value["ok"][0], "3 peers led by n1");
        assert_eq!(value["perf_data"][0]["name"], "peers");
        assert_eq!(value["perf_data"][0]["critical"], 3.0);
        assert_eq!(value["perf_data"][4]["name"], "peer_lagged");
    }

    #[test]
    fn prometheus_is_a_textfile_with_natscli_metric_names_and_exits_zero() {
        let mut observed = healthy();
        observed.peers[0].current = Some(false);
        let result = evaluate_meta(&observed, &options(), Source::Service);
        let text = result.prometheus("nats_server_check");
        assert_eq!(result.exit_code(Format::Prometheus), 0);
        assert!(
            text.starts_with("# nats-insights check meta: from nats-insights\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE nats_server_check_meta_peers gauge\nnats_server_check_meta_peers{item=\"JetStream Meta Cluster\"} 3\n"), "{text}");
        assert!(
            text.contains(
                "nats_server_check_meta_peer_not_current{item=\"JetStream Meta Cluster\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("nats_server_check_meta_status_code{item=\"JetStream Meta Cluster\",status=\"CRITICAL\"} 2\n"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("series value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(series.starts_with("nats_server_check_meta_"), "{line}");
        }
    }

    #[test]
    fn names_and_labels_are_escaped() {
        let mut result = CheckResult::new("a \"b\"\nc|d", "META-1 x");
        result.oks.push("line\nbreak | pipe".into());
        result.perfdata.push(PerfItem::count("odd name", 2, ""));
        let text = result.prometheus("9ns");
        assert!(
            text.contains("_9ns_meta_1_x_odd_name{item=\"a \\\"b\\\"\\nc|d\"} 2"),
            "{text}"
        );
        let line = result.nagios();
        assert_eq!(line.matches('|').count(), 1, "{line}");
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.ends_with("| 'odd name'=2\n"), "{line}");
        result.criticals.push("n\u{1b}[2J3 offline".into());
        assert!(!result.text().contains('\u{1b}'));
        assert!(!result.nagios().contains('\u{1b}'));
    }

    #[test]
    fn text_lists_states_and_metrics() {
        let result = evaluate_meta(&healthy(), &options(), Source::Service);
        let text = result.text();
        assert!(text.starts_with("JetStream Meta Cluster: OK (from nats-insights)\n\n  OK        3 peers led by n1\n"), "{text}");
        assert!(
            text.contains("  peers                 3  warn 3  crit 3  Configured RAFT peers\n"),
            "{text}"
        );
    }

    #[test]
    fn a_check_id_is_as_severe_as_its_worst_active_finding() {
        let none = evaluate_findings("META_001", "Offline replica", &[], None);
        assert_eq!(none.health(), Health::Ok);
        assert_eq!(none.oks, ["no active finding"]);
        let blind = evaluate_findings(
            "META_001",
            "Offline replica",
            &[],
            Some("no meta group seen"),
        );
        assert_eq!(blind.health(), Health::Unknown);
        let found = evaluate_findings(
            "META_103",
            "Even size",
            &[
                ("warning".into(), "n1: even".into()),
                ("critical".into(), "n2: down".into()),
            ],
            Some("ignored when findings are active"),
        );
        assert_eq!(found.health(), Health::Critical);
        assert!(found.nagios().starts_with("CRITICAL META_103 Even size Crit:n2: down Warn:n1: even (from nats-insights) | findings=2 findings_critical=1 findings_warning=1"));
        let warn = evaluate_findings(
            "META_103",
            "Even size",
            &[("warning".into(), "x".into())],
            None,
        );
        assert_eq!(warn.exit_code(Format::Json), 1);
    }
}
