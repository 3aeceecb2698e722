//! Live test of the status page (`GET /` on `--metrics-listen`) in a real browser: a monitor with
//! a metrics listener on a real 3-server cluster, the page loaded by headless Chromium
//! (`--dump-dom`, so what is read is the DOM the browser built) healthy, with one follower killed,
//! and with two of three killed (quorum lost, the monitor on the survivor). Each state is polled
//! for until the DOM shows it (30 s), then screenshotted into `target/status-page/<state>.png`.
//!
//! Chromium is required: `scripts/test` installs it (`ensure_chromium`). Without it the test
//! fails, unless `NATS_INSIGHTS_SKIP_BROWSER=1` says to skip it.

use crate::support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::cluster;
use support::served::{get, ServedMonitor};
use testbed::Stop;

/// How long each state may take to appear on the page.
const STATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long quorum lost may take: a meta leader that lost its quorum steps down only 10-20 s
/// later (it checks every 10 s), and until then it still claims to lead.
const QUORUM_LOST_TIMEOUT: Duration = Duration::from_secs(45);
/// How long one Chromium run may take.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(30);
/// Set to `1` to skip this test where no browser can be installed.
const SKIP_ENV: &str = "NATS_INSIGHTS_SKIP_BROWSER";

/// `chromium` on `PATH`.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
}

/// Where the screenshots go.
fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-page")
}

/// Runs headless Chromium with `args` and the URL; its stdout. Each run gets its own profile
/// directory, so runs never wait on each other's profile lock.
async fn browser(bin: &Path, args: &[String], url: &str) -> Result<String, String> {
    let profile = std::env::temp_dir().join(format!(
        "nats-insights-chromium-{}-{}",
        std::process::id(),
        nuid::next()
    ));
    let mut command = tokio::process::Command::new(bin);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let run = tokio::time::timeout(BROWSER_TIMEOUT, command.output()).await;
    let _ = std::fs::remove_dir_all(&profile);
    let output = run
        .map_err(|_| format!("chromium took more than {BROWSER_TIMEOUT:?}"))?
        .map_err(|e| format!("chromium did not start: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "chromium exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The attributes of every element of `dom` that has attribute `attr` (as Chromium serializes
/// them: double-quoted, `&`, `"`, `<` and `>` escaped).
fn elements(dom: &str, attr: &str) -> Vec<BTreeMap<String, String>> {
    let needle = format!(" {attr}=\"");
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = dom[from..].find(&needle).map(|i| from + i) {
        from = at + needle.len();
        let (Some(open), Some(close)) = (dom[..at].rfind('<'), dom[at..].find('>')) else {
            continue;
        };
        let tag = &dom[open + 1..at + close];
        let mut attrs = BTreeMap::new();
        let mut rest = tag.split_once(' ').map_or("", |(_, r)| r);
        while let Some((name, after)) = rest.split_once("=\"") {
            let Some((value, tail)) = after.split_once('"') else {
                break;
            };
            attrs.insert(
                name.trim().to_string(),
                value
                    .replace("&quot;", "\"")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&"),
            );
            rest = tail;
        }
        found.push(attrs);
    }
    found
}

/// What the page shows, as read from the DOM.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    /// Overall status (`data-status` of the body).
    status: String,
    /// Quorum of the default group (`held`/`lost`).
    quorum: String,
    /// Member name → (state, leader).
    members: BTreeMap<String, (String, bool)>,
    /// (check, key) of every active finding.
    findings: Vec<(String, String)>,
}

impl Seen {
    fn of(dom: &str) -> Seen {
        let first = |attr: &str, name: &str| {
            elements(dom, attr)
                .first()
                .and_then(|a| a.get(name).cloned())
                .unwrap_or_default()
        };
        Seen {
            status: first("data-status", "data-status"),
            quorum: first("data-group", "data-quorum"),
            members: elements(dom, "data-member")
                .into_iter()
                .filter_map(|a| {
                    Some((
                        a.get("data-member")?.clone(),
                        (
                            a.get("data-state")?.clone(),
                            a.get("data-leader")? == "true",
                        ),
                    ))
                })
                .collect(),
            findings: elements(dom, "data-check")
                .into_iter()
                .filter_map(|a| {
                    Some((a.get("data-check")?.clone(), a.get("data-finding")?.clone()))
                })
                .collect(),
        }
    }

    fn state(&self, name: &str) -> &str {
        self.members.get(name).map_or("absent", |(s, _)| s.as_str())
    }

    fn leaders(&self) -> Vec<&str> {
        self.members
            .iter()
            .filter(|(_, (_, leader))| *leader)
            .map(|(name, _)| name.as_str())
            .collect()
    }

    fn checks(&self) -> Vec<&str> {
        self.findings.iter().map(|(c, _)| c.as_str()).collect()
    }
}

/// Dumps the page's DOM until `expected` holds of it (panics after `timeout` with what it saw
/// last), then screenshots it as `<state>.png`. Returns what the DOM showed.
async fn expect_state(
    bin: &Path,
    addr: SocketAddr,
    state: &str,
    timeout: Duration,
    expected: impl Fn(&Seen) -> bool,
) -> Seen {
    let url = format!("http://{addr}/");
    let started = Instant::now();
    let mut last = (Seen::default(), String::new());
    let seen = loop {
        match browser(bin, &["--dump-dom".to_string()], &url).await {
            Ok(dom) => {
                let seen = Seen::of(&dom);
                if expected(&seen) {
                    break seen;
                }
                if seen != last.0 {
                    eprintln!(
                        "status_page: waiting for {state} ({:.1?}), the page shows {seen:?}",
                        started.elapsed()
                    );
                }
                last = (seen, dom);
            }
            Err(e) => last.1 = e,
        }
        assert!(
            started.elapsed() < timeout,
            "status page never showed {state} within {timeout:?}; last seen: {:#?}\n{}",
            last.0,
            last.1
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "status_page: {state} shown after {:.1?}: {seen:?}",
        started.elapsed()
    );
    let dir = screenshots();
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    let file = dir.join(format!("{state}.png"));
    let _ = std::fs::remove_file(&file);
    let args = [
        "--hide-scrollbars".to_string(),
        "--window-size=1200,900".to_string(),
        format!("--screenshot={}", file.display()),
    ];
    browser(bin, &args, &url).await.expect("screenshot");
    let png = std::fs::read(&file).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "{} is a PNG", file.display());
    eprintln!("status_page: {} ({} bytes)", file.display(), png.len());
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_a_browser_follows_a_crash_and_a_lost_quorum() {
    let Some(bin) = chromium() else {
        if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
            eprintln!("status_page: SKIPPED, no chromium on PATH and {SKIP_ENV}=1");
            return;
        }
        panic!(
            "chromium not found on PATH: this test loads the status page in headless Chromium. \
             Install it (scripts/test does, with ensure_chromium in scripts/lib/ensure.sh: \
             apt-get install --no-install-recommends chromium), or set {SKIP_ENV}=1 to skip it"
        );
    };
    let started = Instant::now();
    let lap = |what: &str| eprintln!("status_page: {what} at {:.1?}", started.elapsed());
    let mut cluster = cluster(3).await;
    let served = ServedMonitor::start(&cluster).await;
    let addr = served.addr;
    let attached = cluster
        .index_of(&served.attached)
        .expect("attached to a node");
    lap("cluster and monitor started");

    // Healthy: three members online, one of them the leader, no finding.
    let names: Vec<String> = (0..3).map(|i| cluster.server_name(i)).collect();
    let healthy = expect_state(&bin, addr, "healthy", STATE_TIMEOUT, |s| {
        s.status == "ok"
            && s.quorum == "held"
            && names.iter().all(|n| s.state(n) == "online")
            && s.leaders().len() == 1
            && s.findings.is_empty()
    })
    .await;
    let leader = cluster.meta_leader().await.expect("leader");
    assert_eq!(healthy.leaders(), [leader.as_str()], "{healthy:?}");
    lap("healthy shown");

    // The STATUS response over HTTP says the same.
    let (_, head, body) = get(addr, "/api/status.json").await.expect("status.json");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        json["type"],
        nats_insights::service::STATUS_TYPE,
        "{json:#}"
    );
    assert_eq!(
        json["meta_groups"][0]["members"].as_array().map(Vec::len),
        Some(3)
    );

    // One follower killed (not the monitor's own server): offline on the page, the leader
    // unchanged, META_001 named with it.
    let f = (0..3)
        .find(|i| *i != attached && names[*i] != leader)
        .expect("a follower the monitor is not attached to");
    let victim = names[f].clone();
    cluster.stop(f, Stop::Kill).await.expect("kill");
    lap(&format!("{victim} killed"));
    let key = format!("META_001/default/{victim}");
    let crashed = expect_state(&bin, addr, "one-follower-killed", STATE_TIMEOUT, |s| {
        s.state(&victim) == "offline"
            && names
                .iter()
                .filter(|n| **n != victim)
                .all(|n| s.state(n) == "online")
            && s.findings.contains(&("META_001".to_string(), key.clone()))
    })
    .await;
    assert_eq!(crashed.leaders(), [leader.as_str()], "{crashed:?}");
    assert_eq!(crashed.status, "critical");
    assert_eq!(crashed.quorum, "held");
    lap("one follower killed shown");

    // Two of three killed, the monitor's server survives: quorum lost, no leader, META_006.
    let second = (0..3)
        .find(|i| *i != attached && *i != f)
        .expect("the other server");
    cluster.stop(second, Stop::Kill).await.expect("kill");
    let survivor = names[attached].clone();
    lap(&format!(
        "{} killed too; {survivor} survives",
        names[second]
    ));
    let lost = expect_state(&bin, addr, "quorum-lost", QUORUM_LOST_TIMEOUT, |s| {
        s.quorum == "lost"
            && s.leaders().is_empty()
            && s.state(&survivor) == "online"
            && names
                .iter()
                .filter(|n| **n != survivor)
                .all(|n| s.state(n) == "offline")
            && s.checks().contains(&"META_006")
    })
    .await;
    assert_eq!(lost.status, "critical");
    lap("quorum lost shown");

    served.stop().await;
    drop(cluster);
    lap("done");
}
