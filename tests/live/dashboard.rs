//! The Grafana dashboard (`deploy/grafana/nats-insights.json`) on live data (issue 29): two
//! instances of the real binary watch a 3-node cluster, Debian's Prometheus scrapes them every
//! second while a follower is killed and restarted and the leadership moves; then every panel
//! query, variable query and annotation query of the dashboard, with Grafana's variables
//! substituted, is evaluated through Prometheus's HTTP API: each parses and returns series, the
//! fault shows where it should, and every metric name the dashboard uses is one Prometheus
//! stored.

use crate::ops::{free_port, start_binary, wait_healthy};
use crate::support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::cluster;
use testbed::Stop;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DASHBOARD: &str = include_str!("../../deploy/grafana/nats-insights.json");

/// What Grafana's built-in interval variables become (Prometheus scrapes every second).
const RATE_INTERVAL: &str = "10s";
const INTERVAL: &str = "2s";

/// Percent-encodes a query parameter.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A GET to Prometheus's API as HTTP/1.0 (so the body is never chunked): its JSON, or why not.
async fn api(addr: SocketAddr, path: &str) -> Result<Value, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<String, String>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "timed out".to_string())??;
    let (_, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {response}"))?;
    let json: Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
    if json["status"] != "success" {
        return Err(format!("{path}: {body}"));
    }
    Ok(json["data"].clone())
}

/// The series of an instant query.
async fn instant(addr: SocketAddr, expr: &str) -> Vec<Value> {
    api(addr, &format!("/api/v1/query?query={}", enc(expr)))
        .await
        .ok()
        .and_then(|d| d["result"].as_array().cloned())
        .unwrap_or_default()
}

/// Waits (60 s) until the instant query `expr` returns a series.
async fn until_series(addr: SocketAddr, expr: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while instant(addr, expr).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "Prometheus never answered {expr}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Every query of the dashboard, by where it is: (where, query).
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_default();
                assert!(
                    !expr.is_empty(),
                    "panel {title:?} has a target without expr"
                );
                out.push((format!("panel {title}"), expr.to_string()));
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            let query = variable["query"]["query"]
                .as_str()
                .or_else(|| variable["query"].as_str())
                .unwrap_or_default();
            out.push((format!("variable {}", variable["name"]), query.to_string()));
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = annotation["expr"].as_str() {
            out.push((
                format!("annotation {}", annotation["name"]),
                expr.to_string(),
            ));
        }
    }
    out
}

/// Grafana's variables replaced as Grafana would for a window of `range` seconds.
fn substitute(expr: &str, domain: &str, range: u64) -> String {
    let mut s = expr.to_string();
    for (name, value) in [
        ("__rate_interval", RATE_INTERVAL.to_string()),
        ("__interval_ms", "2000".to_string()),
        ("__interval", INTERVAL.to_string()),
        ("__range_s", range.to_string()),
        ("__range", format!("{range}s")),
        ("domain", domain.to_string()),
    ] {
        s = s.replace(&format!("${{{name}}}"), &value);
        s = s.replace(&format!("${name}"), &value);
    }
    assert!(
        !s.contains('$'),
        "a variable the test does not know: {expr}"
    );
    s
}

/// `label_values(metric, label)` (or `label_values(label)`) as (metric, label).
fn label_values(query: &str) -> Option<(Option<String>, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    match inner.rsplit_once(',') {
        Some((metric, label)) => Some((Some(metric.trim().to_string()), label.trim().to_string())),
        None => Some((None, inner.trim().to_string())),
    }
}

/// The metric names a PromQL expression selects: identifiers outside strings, label matchers
/// (`{...}`), ranges (`[...]`) and grouping clauses, that are neither functions nor keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 24] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
    ];
    // Drop strings, matchers and ranges.
    let mut plain = String::new();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut quote: Option<char> = None;
    for c in expr.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '{') => depth_brace += 1,
            (None, '}') => depth_brace -= 1,
            (None, '[') => depth_bracket += 1,
            (None, ']') => depth_bracket -= 1,
            (None, c) if depth_brace == 0 && depth_bracket == 0 => plain.push(c),
            _ => plain.push(' '),
        }
    }
    let mut names = BTreeSet::new();
    let chars: Vec<char> = plain.chars().collect();
    let mut i = 0;
    let mut after_grouping = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            let lower = word.to_ascii_lowercase();
            if KEYWORDS.contains(&lower.as_str()) {
                after_grouping = matches!(
                    lower.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                );
                continue;
            }
            if next == Some(&'(') {
                continue; // a function
            }
            if !after_grouping {
                names.insert(word);
            }
            continue;
        }
        if c == ')' {
            after_grouping = false;
        } else if c == '(' && after_grouping {
            // Label names of a grouping clause up to its ')'.
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            after_grouping = false;
            continue;
        } else if !c.is_whitespace() {
            // Numbers and operators.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            after_grouping = false;
            if i < chars.len() && !chars[i].is_ascii_alphanumeric() {
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    names
}

#[test]
fn metric_names_are_found_outside_matchers_functions_and_groupings() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{x="y{z}"}[1m]))) / on (job) b + time() - max(c) > 0"#,
    );
    assert_eq!(
        names,
        ["a_bucket", "b", "c"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}

/// Starts Prometheus scraping `targets` every second; its API address and the process.
fn start_prometheus(
    dir: &std::path::Path,
    targets: &[SocketAddr],
) -> (SocketAddr, tokio::process::Child) {
    let prometheus = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
    std::fs::create_dir_all(dir).expect("dir");
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: nats-insights\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .expect("prometheus config");
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
    let server = tokio::process::Command::new(&prometheus)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={api}"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{prometheus} does not start ({e}): install Debian's prometheus package (scripts/lib/ensure.sh ensure_prometheus)")
        });
    (api, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_series_for_a_killed_and_restarted_follower() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let variables: Vec<&Value> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .collect();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    assert_eq!(variable("domain")["type"], "query");
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 39));

    let mut cluster = cluster(3).await;
    // An Alertmanager nobody listens on: its health series show the failing sends.
    let extra = format!("alertmanager-url = \"http://127.0.0.1:{}\"\n", free_port());
    let (mut first, a) = start_binary(&cluster, &extra, "http").await;
    let (mut second, b) = start_binary(&cluster, &extra, "http").await;
    wait_healthy(a).await;
    wait_healthy(b).await;
    let (prometheus, mut server) = start_prometheus(&cluster.dir().join("prometheus"), &[a, b]);
    until_series(
        prometheus,
        r#"min(nats_insights_meta_members{state="online"}) == 3 and count(nats_insights_meta_members{state="online"}) == 2"#,
    )
    .await;
    until_series(prometheus, "min(nats_insights_ha_peers) == 1").await;
    let start = unix_now() - 5.0;

    // Kill a follower until both instances raise META_001, then restart it.
    let leader = cluster.meta_leader().await.expect("leader");
    let f = (0..3)
        .find(|i| cluster.server_name(*i) != leader)
        .expect("follower");
    cluster.stop(f, Stop::Kill).await.expect("kill");
    until_series(
        prometheus,
        r#"min(nats_insights_findings_active{check="META_001",domain="default"}) == 1"#,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.restart(f).await.expect("restart");
    until_series(
        prometheus,
        r#"max(nats_insights_findings_active{check="META_001",domain="default"}) == 0 and min(nats_insights_meta_members{state="online"}) == 3"#,
    )
    .await;
    // Move the leadership to the restarted follower: the leader panel shows two leaders.
    cluster.make_leader(f).await.expect("leader moved");
    until_series(
        prometheus,
        &format!(
            r#"max(nats_insights_meta_member_leader{{server="{}"}}) == 1 and on() count(nats_insights_meta_last_leader_change_timestamp_seconds) > 0"#,
            cluster.server_name(f)
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = unix_now();
    let range = (end - start).ceil() as u64;

    // The names Prometheus knows.
    let known: BTreeSet<String> = api(prometheus, "/api/v1/label/__name__/values")
        .await
        .expect("metric names")
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|n| n.as_str().map(String::from))
        .collect();

    // The domain variable first: its values are what `$domain` becomes.
    let all = queries(&dashboard);
    let domain_query = all
        .iter()
        .find(|(at, _)| at == "variable \"domain\"")
        .map(|(_, q)| q.clone())
        .expect("the domain variable has a query");
    let mut failures = Vec::new();
    let mut evaluated = 0;
    let mut domains = Vec::new();
    for (at, query) in &all {
        let query = substitute(query, "default", range);
        if let Some((metric, label)) = label_values(&query) {
            let mut path = format!("/api/v1/label/{label}/values?start={start}&end={end}");
            if let Some(metric) = &metric {
                if !known.contains(metric.split('{').next().unwrap_or_default()) {
                    failures.push(format!("{at}: metric {metric} unknown to Prometheus"));
                }
                path.push_str(&format!("&match[]={}", enc(metric)));
            }
            match api(prometheus, &path).await {
                Ok(values) => {
                    let values: Vec<String> = values
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect();
                    if values.is_empty() {
                        failures.push(format!("{at}: {query} has no values"));
                    }
                    if query == substitute(&domain_query, "default", range) {
                        domains = values;
                    }
                }
                Err(e) => failures.push(format!("{at}: {query}: {e}")),
            }
            evaluated += 1;
            continue;
        }
        for name in metric_names(&query) {
            if !known.contains(&name) {
                failures.push(format!(
                    "{at}: metric {name} unknown to Prometheus ({query})"
                ));
            }
        }
        let path = format!(
            "/api/v1/query_range?query={}&start={start}&end={end}&step=1",
            enc(&query)
        );
        evaluated += 1;
        let result = match api(prometheus, &path).await {
            Ok(data) => data["result"].as_array().cloned().unwrap_or_default(),
            Err(e) => {
                failures.push(format!("{at}: {query}: {e}"));
                continue;
            }
        };
        if result.is_empty() {
            failures.push(format!("{at}: {query} returned no series"));
            continue;
        }
        // Where the fault must show.
        let series_with = |label: &str, value: &str| {
            result
                .iter()
                .filter(|s| s["metric"][label] == value)
                .collect::<Vec<_>>()
        };
        let peak = |s: &Value| {
            s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v[1].as_str().and_then(|v| v.parse::<f64>().ok()))
                .fold(f64::NEG_INFINITY, f64::max)
        };
        let shown = match at.as_str() {
            "panel Active findings by check and severity" | "annotation \"Findings\"" => {
                !series_with("check", "META_001").is_empty()
            }
            "panel Members by state" if query.contains("nats_insights_meta_members") => {
                series_with("state", "offline")
                    .iter()
                    .any(|s| peak(s) >= 1.0)
            }
            "panel Leader over time" => result.iter().filter(|s| peak(s) >= 1.0).count() >= 2,
            "panel Lag per member" => result.len() >= 2,
            "panel HA peers" => result.len() == 2 && result.iter().all(|s| peak(s) >= 1.0),
            _ => true,
        };
        if !shown {
            failures.push(format!(
                "{at}: {query} does not show the fault: {}",
                serde_json::to_string(&result).unwrap_or_default()
            ));
        }
    }
    if domains != ["default"] {
        failures.push(format!(
            "the domain variable's values are {domains:?}, not the cluster's one group \"default\""
        ));
    }
    assert!(evaluated >= 15, "only {evaluated} queries in the dashboard");
    let _ = server.start_kill();
    let _ = server.wait().await;
    let _ = first.start_kill();
    let _ = second.start_kill();
    let _ = first.wait().await;
    let _ = second.wait().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
