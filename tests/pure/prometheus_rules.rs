//! The Prometheus alert rules in deploy/prometheus/: `promtool check rules` accepts alerts.yml,
//! `promtool test rules` passes alerts_test.yml (each rule firing and not firing), and every
//! `nats_insights_*` metric the rules and their tests name is one the service really exports, as
//! the metrics recorder renders it after one poll of a captured healthy cluster (no server is
//! started); so is every metric the Grafana dashboard names. promtool comes from Debian's `prometheus` package (scripts/test installs it);
//! without it these tests fail, never skip.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::SystemTime;

use nats_insights::checks::{assess_members, Thresholds};
use nats_insights::history::History;
use nats_insights::http::metrics::{encode, Recorder};
use nats_insights::observe::{JszReply, Snapshot, Via};
use nats_insights::service::EngineStatus;

const RULES: &str = "deploy/prometheus/alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/alerts_test.yml";
const METRIC_PREFIX: &str = "nats_insights_";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `promtool <args>` in the repository root and panics with its output unless it succeeds.
fn promtool(args: &[&str]) -> String {
    let output = match Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool not found on PATH: install Debian's `prometheus` package \
             (apt-get install --no-install-recommends prometheus; scripts/test does this through \
             ensure_promtool in scripts/lib/ensure.sh)"
        ),
        Err(e) => panic!("cannot run promtool {}: {e}", args.join(" ")),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        output.status
    );
    text
}

#[test]
fn promtool_checks_the_rules() {
    let out = promtool(&["check", "rules", RULES]);
    println!("{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_unit_tests_pass() {
    let out = promtool(&["test", "rules", RULE_TESTS]);
    println!("{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The matches of `nats_insights_[a-z_]+` in `text`, each with the byte offset after it.
fn metric_names(text: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(METRIC_PREFIX) {
        let start = from + at;
        let rest = &text[start + METRIC_PREFIX.len()..];
        let len = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(rest.len());
        let end = start + METRIC_PREFIX.len() + len;
        if len > 0 {
            found.push((text[start..end].to_string(), end));
        }
        from = end;
    }
    found
}

/// The equality matchers (`label="value"`) of a selector `{...}` starting at `text[at..]`.
fn equality_matchers(text: &str, at: usize) -> Vec<(String, String)> {
    let Some(body) = text[at..].strip_prefix('{') else {
        return Vec::new();
    };
    let Some(end) = body.find('}') else {
        return Vec::new();
    };
    body[..end]
        .split(',')
        .filter_map(|m| {
            let (label, value) = m.split_once('=')?;
            let label = label.trim();
            // `!=`, `=~` and `!~` are not equality matchers.
            if label.ends_with('!') || value.starts_with('~') {
                return None;
            }
            let value = value.trim().strip_prefix('"')?.strip_suffix('"')?;
            Some((label.to_string(), value.to_string()))
        })
        .collect()
}

/// The sample names the rendered metrics can have, from their `# TYPE` lines (OpenMetrics:
/// counters are `_total`, histograms `_bucket`, `_sum`, `_count`, infos `_info`).
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count", "_created"],
            "summary" => &["", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

/// The metrics text of a recorder that saw one poll of a healthy three-server cluster (the
/// per-group series only appear once a group was seen).
fn rendered_metrics() -> String {
    let fixture = "tests/fixtures/healthy_3.json";
    let replies: Vec<JszReply> =
        serde_json::from_str(&read(fixture)).unwrap_or_else(|e| panic!("{fixture}: {e}"));
    let now = SystemTime::now();
    let thresholds = Thresholds::default();
    let mut history = History::default();
    let snapshot = Snapshot::from_replies(
        now,
        replies.into_iter().map(|r| (r, Via::Gather)),
        &history.known_servers(),
    );
    history.record_snapshot(&snapshot, &thresholds, now);
    let meta = assess_members(&snapshot, &history, &thresholds, now)
        .unwrap_or_else(|| panic!("{fixture}: no meta group to assess"));
    let mut recorder = Recorder::new(now);
    // A leader change seen (the group's last-change series exists once one is known).
    let leader = meta.leader.clone().unwrap_or_default();
    let recent = nats_insights::service::recent::Recent {
        leader_changes: vec![nats_insights::history::LeaderChange {
            at: now,
            from: None,
            to: leader,
            source: nats_insights::history::ChangeSource::Poll,
            server_at: None,
            domain: None,
        }],
        ..Default::default()
    };
    recorder.update(&EngineStatus {
        meta_groups: vec![meta],
        recent,
        servers_answering: 3,
        last_poll: Some(now),
        polls: 1,
        // A service with an --alertmanager-url (its series exist once one is configured).
        alertmanager: vec![nats_insights::status::AlertmanagerHealth::pending(
            &nats_insights::alertmanager::parse_target("http://am:9093", None)
                .expect("URL")
                .endpoint,
        )],
        ..EngineStatus::default()
    });
    encode(&recorder.registry())
}

#[test]
fn the_rules_use_only_metrics_the_service_exports() {
    let rendered = rendered_metrics();
    let exported = exported_names(&rendered);
    assert!(
        exported.iter().any(|n| n.starts_with(METRIC_PREFIX)),
        "no nats_insights_ metric rendered:\n{rendered}"
    );

    let rules = read(RULES);
    let in_rules: BTreeSet<String> = metric_names(&rules).into_iter().map(|(n, _)| n).collect();
    assert!(
        !in_rules.is_empty(),
        "{RULES} names no {METRIC_PREFIX}* metric"
    );
    let mut unknown = BTreeSet::new();
    for (file, text) in [(RULES, rules.clone()), (RULE_TESTS, read(RULE_TESTS))] {
        for (name, _) in metric_names(&text) {
            if !exported.contains(&name) {
                unknown.insert(format!("{file}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics the service does not export:\n  {}\nexported: {exported:?}",
        unknown.into_iter().collect::<Vec<_>>().join("\n  ")
    );

    // A label the rules select on (`severity="critical"`) is one the service writes with that
    // value; `job` and `instance` are Prometheus' target labels. Findings are rendered for every
    // check, 0 when none is active, so their label values show.
    for (name, end) in metric_names(&rules) {
        for (label, value) in equality_matchers(&rules, end) {
            if label == "job" || label == "instance" {
                continue;
            }
            let wanted = format!("{label}=\"{value}\"");
            assert!(
                rendered
                    .lines()
                    .any(|l| l.starts_with(&format!("{name}{{")) && l.contains(&wanted)),
                "{RULES} selects {name}{{{wanted}}}, which the service does not render:\n{rendered}"
            );
        }
    }
    println!("metrics used by {RULES}: {in_rules:?}");
}

/// The Grafana dashboard names only metrics the service exports (tests/live/dashboard.rs runs
/// its queries on Prometheus; this catches a renamed metric without a cluster).
#[test]
fn the_dashboard_uses_only_metrics_the_service_exports() {
    const DASHBOARD: &str = "deploy/grafana/nats-insights.json";
    let exported = exported_names(&rendered_metrics());
    let dashboard = read(DASHBOARD);
    let used: BTreeSet<String> = metric_names(&dashboard)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(used.len() >= 10, "{DASHBOARD} names only {used:?}");
    let unknown: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "{DASHBOARD} uses metrics the service does not export: {unknown:?}\nexported: {exported:?}"
    );
}

#[test]
fn the_metric_name_scan_finds_names_and_matchers() {
    let text = r#"max by (domain) (nats_insights_meta_quorum) == 0 and nats_insights_findings_active{severity="critical", check!="X", domain=~"a"} > 0"#;
    let found = metric_names(text);
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["nats_insights_meta_quorum", "nats_insights_findings_active"]
    );
    assert!(equality_matchers(text, found[0].1).is_empty());
    assert_eq!(
        equality_matchers(text, found[1].1),
        [("severity".to_string(), "critical".to_string())]
    );
}
