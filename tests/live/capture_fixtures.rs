//! Captures JSZ gathers and system events from real nats-server clusters as JSON fixtures
//! for the check unit tests. Ignored by default; run with
//! `FIXTURES_DIR=/path/to/tests/fixtures cargo test --test live capture_fixtures:: -- --ignored --nocapture`,
//! or only the multi-cluster captures with `... capture_topology_fixtures -- --ignored`
//! (`capture_leaf_same_domain_fixture` re-captures only the leaf servers in the hub's domain;
//! `capture_meta_catalog_fixtures` only the files of META_008 and META_101-104: an API flood, a
//! starved follower, four servers, a 2.14 server among 2.15 ones).
//! The tests write their rows into the one `README.md` and keep the others'.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use testbed::topology::LEAF;
use testbed::{jsz_leader, Cluster, ClusterOptions, Stop};

const EVENT_SUBJECTS: [&str; 5] = [
    "$SYS.SERVER.*.SHUTDOWN",
    "$SYS.SERVER.*.LAMEDUCK",
    "$JS.EVENT.ADVISORY.DOMAIN.LEADER_ELECTED",
    "$JS.EVENT.ADVISORY.DOMAIN.LEADER_ELECTED.>",
    "$JS.EVENT.ADVISORY.SERVER.REMOVED",
];

/// Both capture tests write fixtures and `README.md` into one directory: they take turns.
static CAPTURING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Heading of the README section the main capture writes its measurements under.
const MEASURED: &str = "## Measured while capturing";
/// Heading of the README section `capture_topology_fixtures` owns.
const MEASURED_TOPOLOGIES: &str = "## Measured while capturing topologies";
/// Heading of the README section `capture_meta_catalog_fixtures` owns.
const MEASURED_META_CATALOG: &str = "## Measured while capturing the meta catalog";

/// An event as received, with its arrival time.
type Logged = (Instant, Value);

/// Writes fixtures and remembers a note per file for the generated README.
struct Fixtures {
    dir: PathBuf,
    notes: Vec<(String, String)>,
    events: Arc<Mutex<BTreeMap<&'static str, Value>>>,
    /// Every recorded event (`{"subject", "payload"}`), in arrival order.
    log: Arc<Mutex<Vec<Logged>>>,
    facts: Vec<String>,
}

impl Fixtures {
    fn new() -> Self {
        let dir = PathBuf::from(
            std::env::var("FIXTURES_DIR").unwrap_or_else(|_| "tests/fixtures".to_owned()),
        );
        std::fs::create_dir_all(&dir).unwrap();
        Fixtures {
            dir,
            notes: Vec::new(),
            events: Arc::default(),
            log: Arc::default(),
            facts: Vec::new(),
        }
    }

    fn save(&mut self, file: &str, value: &Value, note: impl Into<String>) {
        let text = serde_json::to_string_pretty(value).unwrap() + "\n";
        std::fs::write(self.dir.join(file), text).unwrap();
        let note = note.into();
        println!("wrote {file}: {note}");
        self.notes.push((file.to_owned(), note));
    }

    fn fact(&mut self, fact: String) {
        println!("FACT: {fact}");
        self.facts.push(fact);
    }

    /// Subscribes (system account, through node `i`) to the event subjects; the first event
    /// of each kind is kept.
    async fn record_events(&self, cluster: &Cluster, i: usize) -> Recorder {
        let client = cluster.sys_client(i).await.unwrap();
        let mut subs = Vec::new();
        for subject in EVENT_SUBJECTS {
            subs.push(client.subscribe(subject).await.unwrap());
        }
        client.flush().await.unwrap();
        // Let the interest propagate over the routes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let events = self.events.clone();
        let log = self.log.clone();
        let task = tokio::spawn(async move {
            let mut all = futures::stream::select_all(subs);
            while let Some(msg) = all.next().await {
                let subject = msg.subject.to_string();
                let payload: Value = serde_json::from_slice(&msg.payload).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&msg.payload).into_owned())
                });
                let event = json!({"subject": subject, "payload": payload});
                log.lock().unwrap().push((Instant::now(), event.clone()));
                let kind = if subject.ends_with(".SHUTDOWN") {
                    "event_shutdown.json"
                } else if subject.ends_with(".LAMEDUCK") {
                    "event_lameduck.json"
                } else if subject.contains("LEADER_ELECTED") {
                    "event_leader_elected.json"
                } else if subject.ends_with("SERVER.REMOVED") {
                    "event_server_removed.json"
                } else {
                    continue;
                };
                println!("event {subject}");
                let mut events = events.lock().unwrap();
                events.entry(kind).or_insert(event);
            }
        });
        Recorder {
            _client: client,
            task,
        }
    }

    /// The first event recorded after `since` that `wanted` accepts, waiting up to `timeout`.
    async fn wait_event_after(
        &self,
        since: Instant,
        timeout: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|(at, event)| *at >= since && wanted(event))
                .map(|(_, event)| event.clone());
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn readme_path(&self) -> PathBuf {
        self.dir.join("README.md")
    }

    async fn wait_event(&self, kind: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.events.lock().unwrap().contains_key(kind) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

struct Recorder {
    _client: async_nats::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The table row of a fixture file in the README.
fn table_row(file: &str, note: &str) -> String {
    format!("| `{file}` | {} |", note.replace('|', "\\|"))
}

/// The README's table rows, as (file, line).
fn table_rows(readme: &str) -> Vec<(String, String)> {
    readme
        .lines()
        .filter_map(|line| {
            let file = line.strip_prefix("| `")?.split('`').next()?;
            Some((file.to_owned(), line.to_owned()))
        })
        .collect()
}

/// `readme` with every row in place of the row of the same file, or after the last row.
fn upsert_rows(readme: &str, rows: &[(String, String)]) -> String {
    let mut lines: Vec<String> = readme.lines().map(str::to_owned).collect();
    for (file, row) in rows {
        let prefix = format!("| `{file}` |");
        match lines.iter().position(|l| l.starts_with(&prefix)) {
            Some(at) => lines[at] = row.clone(),
            None => {
                let after = lines
                    .iter()
                    .rposition(|l| l.starts_with("| "))
                    .map_or(lines.len(), |at| at + 1);
                lines.insert(after, row.clone());
            }
        }
    }
    lines.join("\n") + "\n"
}

/// The README's `## ` sections, as (heading line, text from the heading to the next one).
fn sections(readme: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in readme.lines() {
        if line.starts_with("## ") {
            out.push((line.to_owned(), String::new()));
        }
        if let Some((_, text)) = out.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

/// `readme` with the section under `heading` replaced by `section` (appended if missing).
fn put_section(readme: &str, heading: &str, section: &str) -> String {
    let lines: Vec<&str> = readme.lines().collect();
    let section = section.trim_end();
    let Some(start) = lines.iter().position(|l| *l == heading) else {
        return format!("{}\n\n{section}\n", readme.trim_end());
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with("## "))
        .map_or(lines.len(), |at| start + 1 + at);
    let mut out: Vec<&str> = lines[..start].to_vec();
    out.push(section);
    if end < lines.len() {
        out.push("");
        out.extend(&lines[end..]);
    }
    out.join("\n") + "\n"
}

/// `Some("n1")` → `n1`, `None` → `none`, for notes.
fn show(name: Option<&str>) -> String {
    name.unwrap_or("none").to_owned()
}

fn sorted(mut gather: Vec<Value>) -> Value {
    gather.sort_by(|a, b| {
        a["server"]["name"]
            .as_str()
            .cmp(&b["server"]["name"].as_str())
    });
    Value::Array(gather)
}

fn meta(envelope: &Value) -> &Value {
    &envelope["data"]["meta_cluster"]
}

fn replica<'a>(envelope: &'a Value, name: &str) -> Option<&'a Value> {
    meta(envelope)["replicas"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == name)
}

fn by_server<'a>(gather: &'a [Value], name: &str) -> &'a Value {
    gather
        .iter()
        .find(|e| e["server"]["name"] == name)
        .unwrap_or_else(|| panic!("no reply from {name}"))
}

/// Makes n1 the meta leader (fixed roles keep re-captured fixtures comparable); returns 0.
async fn leader_index(cluster: &Cluster) -> usize {
    cluster.make_leader(0).await.unwrap();
    0
}

async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

async fn sleep_s(s: f64) {
    tokio::time::sleep(Duration::from_secs_f64(s)).await;
}

#[tokio::test]
#[ignore = "starts many real clusters (about 4 minutes); writes fixtures"]
async fn capture_fixtures() {
    let _turn = CAPTURING.lock().await;
    let mut fx = Fixtures::new();
    healthy_step_down_lame_duck(&mut fx).await;
    healthy_5_and_two_killed(&mut fx).await;
    follower_killed(&mut fx).await;
    follower_stopped_and_removed(&mut fx).await;
    running_follower_removed(&mut fx).await;
    leader_killed(&mut fx).await;
    two_killed_3(&mut fx).await;
    two_followers_killed_3(&mut fx).await;
    partition_leader(&mut fx).await;
    stale_peers(&mut fx).await;

    let events = fx.events.lock().unwrap().clone();
    for (kind, how) in [
        ("event_shutdown.json", "SIGTERM of a follower"),
        ("event_lameduck.json", "SIGUSR2 (lame duck) of a follower"),
        (
            "event_leader_elected.json",
            "meta step-down; `leader` is the new leader's peer hash",
        ),
        (
            "event_server_removed.json",
            "peer removal of a RUNNING follower (published by the removed server itself; \
             removing a stopped server publishes nothing)",
        ),
    ] {
        let event = events
            .get(kind)
            .unwrap_or_else(|| panic!("no {kind} captured"));
        let subject = event["subject"].as_str().unwrap_or_default();
        fx.save(kind, event, format!("`{subject}` after {how}"));
    }

    let version = std::process::Command::new(testbed::nats_server_bin().unwrap())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut readme = format!(
        "# JSZ and event fixtures\n\n\
         Captured from real clusters ({version}, loopback) by the ignored tests \
         `capture_fixtures` and `capture_topology_fixtures` in `tests/live/capture_fixtures.rs` of \
         the root package (`FIXTURES_DIR=<this dir> cargo test --test live capture_fixtures:: \
         -- --ignored` runs both, about 2 minutes plus 1 for the topologies; name \
         `capture_topology_fixtures` before `--` to re-capture only the multi-cluster files). \
         Do not edit by hand; re-run the capture instead. Roles are fixed where the scenario \
         allows (n1 leads before each fault; the victim follower is n3; multi-cluster roles under \
         \"Measured while capturing topologies\"); who wins an election is not.\n\n\
         JSZ files are JSON arrays of raw `$SYS.REQ.SERVER.PING.JSZ` reply envelopes \
         (`{{server, data}}`), sorted by server name; `*_isolated.json` holds the single \
         direct reply (`$SYS.REQ.SERVER.<id>.JSZ`) of a partitioned node, also as an array. \
         Event files are `{{\"subject\", \"payload\"}}`.\n\n| file | scenario |\n|---|---|\n"
    );
    for (file, note) in &fx.notes {
        let _ = writeln!(readme, "{}", table_row(file, note));
    }
    readme.push_str(
        "\nNotes: peer hashes follow from server names (n1 was `fjFyEjc1` in every capture), so they \
         repeat across files; server ids change with every start. `data.config.store_dir` \
         points into the capture's temporary directory.\n",
    );
    let _ = write!(readme, "\n{MEASURED}\n\n");
    for fact in &fx.facts {
        let _ = writeln!(readme, "- {fact}");
    }
    // Keep what this test does not capture: the other test's rows, any other section.
    let old = std::fs::read_to_string(fx.readme_path()).unwrap_or_default();
    let mine: Vec<&str> = fx.notes.iter().map(|(file, _)| file.as_str()).collect();
    let kept: Vec<(String, String)> = table_rows(&old)
        .into_iter()
        .filter(|(file, _)| !mine.contains(&file.as_str()))
        .collect();
    readme = upsert_rows(&readme, &kept);
    for (heading, text) in sections(&old) {
        if heading != MEASURED {
            readme = put_section(&readme, &heading, &text);
        }
    }
    std::fs::write(fx.readme_path(), readme).unwrap();
}

/// healthy_3, step-down (LEADER_ELECTED), lame duck of a follower (LAMEDUCK).
async fn healthy_step_down_lame_duck(fx: &mut Fixtures) {
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let li = leader_index(&cluster).await;
    let _rec = fx.record_events(&cluster, li).await;
    settle().await;
    let gather = cluster.jsz_all().await.unwrap();
    assert_eq!(gather.len(), 3);
    let leader = cluster.server_name(li);
    fx.save(
        "healthy_3.json",
        &sorted(gather),
        format!("3 nodes n1-n3, all up; leader {leader}"),
    );

    let asked = Instant::now();
    cluster.step_down_to("n2").await.unwrap();
    let new = loop {
        let l = cluster
            .wait_for_leader(Duration::from_secs(10))
            .await
            .unwrap();
        if l != leader {
            break l;
        }
    };
    fx.fact(format!(
        "step-down: {leader} -> {new}, all nodes agreed after {:.1} s",
        asked.elapsed().as_secs_f64()
    ));
    assert!(
        fx.wait_event("event_leader_elected.json", Duration::from_secs(5))
            .await
    );

    // Lame duck of a follower that holds a few clients, so that it stays up for a while.
    let ni = cluster.index_of(&new).unwrap();
    let fi = (0..3).find(|&i| i != ni && i != li).unwrap();
    let follower = cluster.server_name(fi);
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(cluster.app_client(fi).await.unwrap());
    }
    let sent = Instant::now();
    cluster.stop(fi, Stop::LameDuck).await.unwrap();
    assert!(
        fx.wait_event("event_lameduck.json", Duration::from_secs(5))
            .await
    );
    sleep_s(1.0 - sent.elapsed().as_secs_f64().min(1.0)).await;
    let gather = cluster.jsz_all().await.unwrap();
    let view = by_server(&gather, &new);
    let offline = replica(view, &follower).is_some_and(|r| r["offline"] == true);
    fx.save(
        "follower_lameduck_3.json",
        &sorted(gather.clone()),
        format!(
            "~1 s after SIGUSR2 (lame duck) of follower {follower} holding 5 clients; \
             leader {new}; {} replies; leader shows it offline: {offline}; the lame-duck server itself no longer answers",
            gather.len()
        ),
    );
    while cluster.is_running(fi) && sent.elapsed() < Duration::from_secs(40) {
        sleep_s(0.1).await;
    }
    fx.fact(format!(
        "lame duck with 5 clients (grace 1 s, duration 30 s): process exited after {:.1} s",
        sent.elapsed().as_secs_f64()
    ));
    drop(clients);
}

async fn healthy_5_and_two_killed(fx: &mut Fixtures) {
    let mut cluster = Cluster::start(ClusterOptions {
        size: 5,
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let li = leader_index(&cluster).await;
    settle().await;
    let gather = cluster.jsz_all().await.unwrap();
    assert_eq!(gather.len(), 5);
    let leader = cluster.server_name(li);
    fx.save(
        "healthy_5.json",
        &sorted(gather),
        format!("5 nodes n1-n5, all up; leader {leader}"),
    );

    let victims: Vec<usize> = vec![3, 4];
    for &v in &victims {
        cluster.stop(v, Stop::Kill).await.unwrap();
    }
    sleep_s(4.0).await;
    let gather = cluster.jsz_all().await.unwrap();
    assert_eq!(gather.len(), 3);
    let names: Vec<String> = victims.iter().map(|&v| cluster.server_name(v)).collect();
    let view = by_server(&gather, &leader);
    assert_eq!(jsz_leader(view), Some(leader.as_str()));
    fx.save(
        "two_killed_5.json",
        &sorted(gather),
        format!(
            "5 nodes, followers {} SIGKILLed, gathered ~4 s later; leader {leader} keeps \
             quorum (3 of 5)",
            names.join(" and ")
        ),
    );
}

async fn follower_killed(fx: &mut Fixtures) {
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let li = leader_index(&cluster).await;
    let leader = cluster.server_name(li);
    let fi = (li + 2) % 3;
    let follower = cluster.server_name(fi);
    settle().await;
    cluster.stop(fi, Stop::Kill).await.unwrap();
    sleep_s(4.0).await;
    let gather = cluster.jsz_all().await.unwrap();
    assert_eq!(gather.len(), 2);
    let r = replica(by_server(&gather, &leader), &follower)
        .unwrap()
        .clone();
    assert_ne!(r["offline"], true);
    fx.save(
        "follower_killed_3.json",
        &sorted(gather),
        format!(
            "3 nodes, follower {follower} SIGKILLed, gathered ~4 s later; leader {leader} \
             shows it with active {:.1} s, current {}, offline {} (absent)",
            r["active"].as_f64().unwrap_or(0.0) / 1e9,
            r["current"],
            r["offline"]
        ),
    );
}

async fn follower_stopped_and_removed(fx: &mut Fixtures) {
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let li = leader_index(&cluster).await;
    let leader = cluster.server_name(li);
    let _rec = fx.record_events(&cluster, li).await;
    let fi = (li + 2) % 3;
    let follower = cluster.server_name(fi);
    settle().await;
    cluster.stop(fi, Stop::Term).await.unwrap();
    sleep_s(1.0).await;
    let gather = cluster.jsz_all().await.unwrap();
    assert_eq!(gather.len(), 2);
    let r = replica(by_server(&gather, &leader), &follower)
        .unwrap()
        .clone();
    assert_eq!(r["offline"], true, "{r}");
    fx.save(
        "follower_stopped_3.json",
        &sorted(gather),
        format!(
            "3 nodes, follower {follower} stopped with SIGTERM, gathered ~1 s later; leader \
             {leader} shows it offline"
        ),
    );
    assert!(
        fx.wait_event("event_shutdown.json", Duration::from_secs(5))
            .await
    );

    // Peer-remove the stopped server.
    let client = cluster.sys_client(li).await.unwrap();
    let body = json!({ "peer": follower }).to_string();
    let reply = client
        .request("$JS.API.SERVER.REMOVE", body.into())
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["success"], true, "{reply}");
    fx.save(
        "api_server_remove_reply.json",
        &reply,
        format!("reply of the meta leader {leader} to $JS.API.SERVER.REMOVE {{\"peer\":\"{follower}\"}}"),
    );
    // The advisory is published by the removed server itself, so none comes for a stopped one.
    let got = fx
        .wait_event("event_server_removed.json", Duration::from_secs(3))
        .await;
    fx.fact(format!(
        "peer removal of a STOPPED server: $JS.EVENT.ADVISORY.SERVER.REMOVED received: {got}"
    ));
    sleep_s(1.0).await;
    let gather = cluster.jsz_all().await.unwrap();
    let size = meta(by_server(&gather, &leader))["cluster_size"].clone();
    fx.save(
        "follower_removed_3.json",
        &sorted(gather),
        format!(
            "follower_stopped_3, then {follower} peer-removed ($JS.API.SERVER.REMOVE), ~1 s \
             later; leader's cluster_size {size}"
        ),
    );
}

/// Peer removal of a running follower: it publishes SERVER.REMOVED and disables JetStream.
async fn running_follower_removed(fx: &mut Fixtures) {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let li = leader_index(&cluster).await;
    let leader = cluster.server_name(li);
    let _rec = fx.record_events(&cluster, li).await;
    let fi = (li + 2) % 3;
    let follower = cluster.server_name(fi);
    settle().await;
    let client = cluster.sys_client(li).await.unwrap();
    let body = json!({ "peer": follower }).to_string();
    let reply = client
        .request("$JS.API.SERVER.REMOVE", body.into())
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["success"], true, "{reply}");
    assert!(
        fx.wait_event("event_server_removed.json", Duration::from_secs(5))
            .await
    );
    sleep_s(1.0).await;
    let gather = cluster.jsz_all().await.unwrap();
    let summary: Vec<String> = gather
        .iter()
        .map(|e| {
            format!(
                "{}: leader {}, cluster_size {}",
                e["server"]["name"].as_str().unwrap_or("?"),
                show(jsz_leader(e)),
                meta(e)["cluster_size"]
            )
        })
        .collect();
    fx.save(
        "follower_removed_running_3.json",
        &sorted(gather),
        format!(
            "3 nodes, RUNNING follower {follower} peer-removed via leader {leader}, ~1 s \
             later: {}",
            summary.join("; ")
        ),
    );
}

async fn leader_killed(fx: &mut Fixtures) {
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let li = leader_index(&cluster).await;
    let leader = cluster.server_name(li);
    let _rec = fx.record_events(&cluster, (li + 1) % 3).await;
    settle().await;
    cluster.stop(li, Stop::Kill).await.unwrap();
    let killed = Instant::now();
    sleep_s(1.0).await;
    let gather = cluster.jsz_all().await.unwrap();
    assert_eq!(gather.len(), 2);
    let named: Vec<String> = gather.iter().map(|e| show(jsz_leader(e))).collect();
    fx.save(
        "leader_killed_3.json",
        &sorted(gather),
        format!(
            "3 nodes, leader {leader} SIGKILLed, gathered ~1 s later (before a new \
             election); the followers name leader {}",
            named.join(", ")
        ),
    );
    let new = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    fx.fact(format!(
        "leader {leader} SIGKILLed -> both survivors agree on {new} after {:.1} s",
        killed.elapsed().as_secs_f64()
    ));
    let gather = cluster.jsz_all().await.unwrap();
    fx.save(
        "leader_killed_3_reelected.json",
        &sorted(gather),
        format!(
            "leader_killed_3 after re-election: new leader {new} ({:.1} s after the kill); \
             {leader} still down",
            killed.elapsed().as_secs_f64()
        ),
    );
}

async fn two_killed_3(fx: &mut Fixtures) {
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let li = leader_index(&cluster).await;
    let leader = cluster.server_name(li);
    let fi = (li + 1) % 3;
    let si = (li + 2) % 3;
    let (follower, survivor) = (cluster.server_name(fi), cluster.server_name(si));
    settle().await;
    cluster.stop(li, Stop::Kill).await.unwrap();
    cluster.stop(fi, Stop::Kill).await.unwrap();
    let killed = Instant::now();
    sleep_s(3.0).await;
    let gather = cluster.jsz_all().await.unwrap();
    assert_eq!(gather.len(), 1);
    let early_leader = show(jsz_leader(&gather[0]));
    fx.save(
        "two_killed_3_early.json",
        &sorted(gather),
        format!(
            "3 nodes, leader {leader} and follower {follower} SIGKILLed, gathered ~3 s \
             later: survivor {survivor} still names leader {early_leader}"
        ),
    );
    let gather = loop {
        let gather = cluster.jsz_all().await.unwrap();
        if jsz_leader(&gather[0]).is_none() {
            break gather;
        }
        assert!(killed.elapsed() < Duration::from_secs(30));
        sleep_s(0.25).await;
    };
    let after = killed.elapsed().as_secs_f64();
    fx.fact(format!(
        "leader + follower SIGKILLed (3 nodes): the survivor dropped the dead leader after {after:.1} s \
         (its election timeout); until then it still names it"
    ));
    fx.save(
        "two_killed_3.json",
        &sorted(gather),
        format!(
            "3 nodes, leader {leader} and follower {follower} SIGKILLed; first gather in \
             which survivor {survivor} reports no leader ({after:.1} s after the kills); \
             1 reply, replicas include itself"
        ),
    );
}

async fn two_followers_killed_3(fx: &mut Fixtures) {
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let li = leader_index(&cluster).await;
    let leader = cluster.server_name(li);
    settle().await;
    for k in 1..=2 {
        cluster.stop((li + k) % 3, Stop::Kill).await.unwrap();
    }
    let killed = Instant::now();
    sleep_s(12.0).await;
    let gather = cluster.jsz_all().await.unwrap();
    assert_eq!(gather.len(), 1);
    let still = show(jsz_leader(&gather[0]));
    fx.save(
        "two_followers_killed_3.json",
        &sorted(gather),
        format!(
            "3 nodes, both followers SIGKILLed, gathered ~12 s later: the lone leader \
             {leader} (no quorum) still reports leader {still}, peers current:false"
        ),
    );
    loop {
        let view = cluster.jsz_direct(li).await.unwrap();
        if jsz_leader(&view).is_none() {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(60));
        sleep_s(0.25).await;
    }
    fx.fact(format!(
        "both followers SIGKILLed (3 nodes): the leader stepped down {:.1} s later",
        killed.elapsed().as_secs_f64()
    ));
}

async fn partition_leader(fx: &mut Fixtures) {
    let cluster = Cluster::start(ClusterOptions {
        proxied_routes: true,
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let li = leader_index(&cluster).await;
    let leader = cluster.server_name(li);
    let others: Vec<usize> = (0..3).filter(|&i| i != li).collect();
    settle().await;
    cluster.partition(li).unwrap();
    let cut = Instant::now();
    sleep_s(8.0).await;
    // Make sure the majority has elected (election timeout is random 4-9 s).
    let majority = loop {
        let gather = cluster.jsz_all_from(others[0]).await.unwrap();
        let leaders: Vec<Option<&str>> = gather.iter().map(jsz_leader).collect();
        if gather.len() == 2
            && leaders[0].is_some()
            && leaders[0] == leaders[1]
            && leaders[0] != Some(leader.as_str())
        {
            break gather;
        }
        assert!(cut.elapsed() < Duration::from_secs(30), "{leaders:?}");
        sleep_s(0.5).await;
    };
    let gathered_at = cut.elapsed().as_secs_f64();
    let isolated = cluster.jsz_direct(li).await.unwrap();
    let new = jsz_leader(&majority[0]).unwrap_or_default().to_owned();
    let claims = show(jsz_leader(&isolated));
    fx.save(
        "partition_leader_3_majority.json",
        &sorted(majority),
        format!(
            "3 nodes, leader {leader}'s routes cut (proxies), gathered {gathered_at:.1} s \
             later through the majority: new leader {new}"
        ),
    );
    fx.save(
        "partition_leader_3_isolated.json",
        &json!([isolated]),
        format!("same moment, direct view of the isolated {leader}: leader {claims}"),
    );
    loop {
        let view = cluster.jsz_direct(li).await.unwrap();
        if jsz_leader(&view) != Some(leader.as_str()) {
            fx.fact(format!(
                "partitioned leader {leader} kept claiming leadership for {:.1} s after the \
                 cut (the majority had elected {new} by {gathered_at:.1} s)",
                cut.elapsed().as_secs_f64()
            ));
            break;
        }
        if cut.elapsed() > Duration::from_secs(60) {
            fx.fact(format!(
                "partitioned leader {leader} still claimed leadership 60 s after the cut"
            ));
            break;
        }
        sleep_s(0.25).await;
    }
    cluster.heal(li).unwrap();
    let healed = Instant::now();
    let one = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    fx.fact(format!(
        "after heal all 3 agreed on {one} within {:.1} s",
        healed.elapsed().as_secs_f64()
    ));
}

async fn stale_peers(fx: &mut Fixtures) {
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    // The outcome depends on who leads: with n3 (renamed last) leading, m2 still gets added
    // (5 members, quorum 3) and the last rename leaves m1 + m2 short of quorum for good. With
    // the leader renamed earlier the group gets stuck at 4 members one step sooner.
    cluster.make_leader(2).await.unwrap();
    settle().await;
    for i in 0..3 {
        let old = cluster.server_name(i);
        let new = format!("m{}", i + 1);
        cluster.stop(i, Stop::Term).await.unwrap();
        cluster.rename(i, &new).await.unwrap();
        sleep_s(5.0).await;
        let gather = cluster.jsz_all().await.unwrap();
        let summary: Vec<String> = gather
            .iter()
            .map(|e| {
                format!(
                    "{}: leader {}, cluster_size {}, {} replicas",
                    e["server"]["name"].as_str().unwrap_or("?"),
                    show(jsz_leader(e)),
                    meta(e)["cluster_size"],
                    meta(e)["replicas"].as_array().map_or(0, Vec::len)
                )
            })
            .collect();
        let file = if i == 2 {
            "stale_peers_3.json".to_owned()
        } else {
            format!("stale_peers_3_step{}.json", i + 1)
        };
        fx.save(
            &file,
            &sorted(gather),
            format!(
                "rolling rename on the same store dirs, step {} of 3 ({old} -> {new}), ~5 s \
                 after the renamed node started: {}",
                i + 1,
                summary.join("; ")
            ),
        );
    }
}

// ---- multi-cluster topologies ----

#[tokio::test]
#[ignore = "starts two 3x3 superclusters and a hub with a leaf cluster (about 1 minute); writes fixtures"]
async fn capture_topology_fixtures() {
    let _turn = CAPTURING.lock().await;
    let mut fx = Fixtures::new();
    let started = Instant::now();
    supercluster(&mut fx).await;
    supercluster_cluster_lost(&mut fx).await;
    domains(&mut fx).await;
    leaf_same_domain(&mut fx).await;
    fx.fact(format!(
        "{TOPOLOGY_TOOK} {:.0} s",
        started.elapsed().as_secs_f64()
    ));

    let old = std::fs::read_to_string(fx.readme_path()).unwrap_or_default();
    let rows: Vec<(String, String)> = fx
        .notes
        .iter()
        .map(|(file, note)| (file.clone(), table_row(file, note)))
        .collect();
    let readme = upsert_rows(&old, &rows);
    let readme = put_section(&readme, MEASURED_TOPOLOGIES, &topology_section(&fx.facts));
    std::fs::write(fx.readme_path(), readme).unwrap();
}

#[tokio::test]
#[ignore = "starts a hub with two leaf servers in its domain (about 30 s); writes one fixture"]
async fn capture_leaf_same_domain_fixture() {
    let _turn = CAPTURING.lock().await;
    let mut fx = Fixtures::new();
    leaf_same_domain(&mut fx).await;
    let old = std::fs::read_to_string(fx.readme_path()).unwrap_or_default();
    let rows: Vec<(String, String)> = fx
        .notes
        .iter()
        .map(|(file, note)| (file.clone(), table_row(file, note)))
        .collect();
    let kept = sections(&old)
        .into_iter()
        .find(|(heading, _)| heading == MEASURED_TOPOLOGIES)
        .map(|(_, text)| facts_of(&text))
        .unwrap_or_default();
    let facts = merge_leaf_facts(&kept, &fx.facts);
    let readme = upsert_rows(&old, &rows);
    let readme = put_section(&readme, MEASURED_TOPOLOGIES, &topology_section(&facts));
    std::fs::write(fx.readme_path(), readme).unwrap();
}

/// Start of the last fact of a whole topology capture.
const TOPOLOGY_TOOK: &str = "the whole topology capture took";
/// Start of every fact `leaf_same_domain` records, so that capturing it alone replaces only
/// those.
const LEAF_FACT: &str = "leaf servers in the hub's domain:";

/// The README section `capture_topology_fixtures` owns, with `facts`.
fn topology_section(facts: &[String]) -> String {
    let mut section = format!(
        "{MEASURED_TOPOLOGIES}\n\n\
         Written by `capture_topology_fixtures`. Supercluster files (`supercluster_*_9.json`): \
         clusters c1 (n1-n3), c2 (n4-n6), c3 (n7-n9) joined by gateways, no JetStream domain, \
         one meta group of 9; n1 leads before each fault, the killed follower is n4 (in c2). \
         Domain files (`domains_*.json`): cluster `hub` (h1-h3, domain hub, leaf-node \
         listeners) and cluster `edge` (e1-e3, domain edge, routes of its own, two leaf \
         remotes to every hub server: one bound to SYS, one to APP); every gather is one \
         `$SYS.REQ.SERVER.PING.JSZ` from h1; h1 and e1 lead before each fault, the killed \
         followers are e3 and h3 (e2 too for quorum loss). Leaf files (`leaf_same_domain_*.json`, \
         also `capture_leaf_same_domain_fixture` alone): cluster `hub` as above and standalone \
         leaf servers l1, l2 in domain hub (no routes, `extension_hint: will_extend`, the same \
         two leaf remotes); h1 leads.\n\n"
    );
    for fact in facts {
        let _ = writeln!(section, "- {fact}");
    }
    section
}

/// The `- ` items of a README section.
fn facts_of(section: &str) -> Vec<String> {
    section
        .lines()
        .filter_map(|l| l.strip_prefix("- "))
        .map(str::to_owned)
        .collect()
}

/// `kept` with its leaf facts replaced by `leaf`, in the place a whole capture puts them
/// (before the capture's duration).
fn merge_leaf_facts(kept: &[String], leaf: &[String]) -> Vec<String> {
    let mut facts: Vec<String> = kept
        .iter()
        .filter(|f| !f.starts_with(LEAF_FACT))
        .cloned()
        .collect();
    let at = facts
        .iter()
        .position(|f| f.starts_with(TOPOLOGY_TOOK))
        .unwrap_or(facts.len());
    facts.splice(at..at, leaf.iter().cloned());
    facts
}

/// The leader's replica entry for `name`, summarised for a note.
fn seen_by(gather: &[Value], leader: &str, name: &str) -> String {
    match replica(by_server(gather, leader), name) {
        Some(r) => format!(
            "{leader} shows {name} with active {:.1} s, current {}, offline {}",
            r["active"].as_f64().unwrap_or(0.0) / 1e9,
            r["current"],
            r["offline"]
                .as_bool()
                .map_or_else(|| "absent".to_owned(), |o| o.to_string())
        ),
        None => format!("{leader} does not list {name}"),
    }
}

/// `server: leader/cluster_size` for every reply, for notes.
fn leaders_and_sizes(gather: &[Value]) -> String {
    let mut rows: Vec<String> = gather
        .iter()
        .map(|e| {
            format!(
                "{}: {}/{}",
                e["server"]["name"].as_str().unwrap_or("?"),
                show(jsz_leader(e)),
                meta(e)["cluster_size"]
            )
        })
        .collect();
    rows.sort();
    rows.join(", ")
}

/// Waits until `leader`'s own view lists `name` as current (after a restart).
async fn wait_current(cluster: &Cluster, leader: usize, name: &str) {
    let since = Instant::now();
    loop {
        let view = cluster.jsz_direct(leader).await.unwrap();
        if replica(&view, name).is_some_and(|r| r["current"] == true && r["offline"] != true) {
            return;
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "{name} not current again: {view:#}"
        );
        sleep_s(0.25).await;
    }
}

fn is_leader_elected(event: &Value) -> bool {
    event["subject"]
        .as_str()
        .is_some_and(|s| s.contains("LEADER_ELECTED"))
}

/// Healthy, a follower in c2 killed, then the leader moved to c3 (LEADER_ELECTED).
async fn supercluster(fx: &mut Fixtures) {
    let booting = Instant::now();
    let mut cluster = Cluster::start(ClusterOptions::supercluster(3, 3))
        .await
        .unwrap();
    fx.fact(format!(
        "a 3x3 supercluster booted (every server up, one leader, cluster_size 9 everywhere) in \
         {:.1} s",
        booting.elapsed().as_secs_f64()
    ));
    let li = leader_index(&cluster).await;
    let leader = cluster.server_name(li);
    let _rec = fx.record_events(&cluster, li).await;
    settle().await;
    let gather = cluster.jsz_all().await.unwrap();
    assert_eq!(gather.len(), 9);
    let names: BTreeMap<String, Vec<String>> =
        gather.iter().fold(BTreeMap::new(), |mut by_name, e| {
            let group_name = meta(e)["name"].as_str().unwrap_or("?").to_owned();
            let server = e["server"]["name"].as_str().unwrap_or("?").to_owned();
            by_name.entry(group_name).or_default().push(server);
            by_name
        });
    let names: Vec<String> = names
        .into_iter()
        .map(|(name, mut servers)| {
            servers.sort();
            format!("{} report {name}", servers.join(" "))
        })
        .collect();
    fx.fact(format!(
        "supercluster, one meta group: `meta_cluster.name` is the reporting server's own \
         cluster ({}), `leader` the same everywhere ({leader})",
        names.join("; ")
    ));
    let domains: Vec<&Value> = gather
        .iter()
        .filter_map(|e| e["server"].get("domain"))
        .collect();
    fx.fact(format!(
        "supercluster without a domain: {} of 9 reply envelopes carry `server.domain`",
        domains.len()
    ));
    fx.save(
        "supercluster_healthy_9.json",
        &sorted(gather.clone()),
        format!(
            "3x3 supercluster c1 (n1-n3), c2 (n4-n6), c3 (n7-n9), all up; leader {leader}; \
             {}",
            leaders_and_sizes(&gather)
        ),
    );

    let fi = 3;
    let follower = cluster.server_name(fi);
    cluster.stop(fi, Stop::Kill).await.unwrap();
    sleep_s(4.0).await;
    let gather = cluster.jsz_all().await.unwrap();
    assert_eq!(gather.len(), 8);
    assert_eq!(
        jsz_leader(by_server(&gather, &leader)),
        Some(leader.as_str())
    );
    let old_view = seen_by(&gather, &leader, &follower);
    fx.save(
        "supercluster_follower_killed_9.json",
        &sorted(gather.clone()),
        format!(
            "supercluster_healthy_9, follower {follower} (c2) SIGKILLed, gathered ~4 s later; \
             8 replies; {old_view}"
        ),
    );

    let asked = Instant::now();
    let moved = cluster.step_down_to_cluster("c3").await.unwrap();
    let took = asked.elapsed().as_secs_f64();
    fx.fact(format!(
        "placement step-down {{\"placement\":{{\"cluster\":\"c3\"}}}} with n4 down: {leader} -> \
         {moved}, all 8 running servers agreed after {took:.1} s"
    ));
    let event = fx
        .wait_event_after(asked, Duration::from_secs(5), |e| {
            is_leader_elected(e) && e["payload"]["cluster"] == "c3"
        })
        .await
        .expect("a LEADER_ELECTED advisory after the placement step-down");
    let subject = event["subject"].as_str().unwrap_or_default().to_owned();
    let payload = &event["payload"];
    let listed = payload["replicas"].as_array().map_or(0, Vec::len);
    let lists_itself = payload["replicas"]
        .as_array()
        .is_some_and(|rs| rs.iter().any(|r| r["peer"] == payload["leader"]));
    fx.fact(format!(
        "the supercluster's LEADER_ELECTED after the placement step-down: `cluster` {} (the new \
         leader's), `domain` {}; `replicas` lists {listed} members, the new leader itself \
         included: {lists_itself}",
        payload["cluster"],
        payload["domain"]
            .as_str()
            .map_or_else(|| "absent".to_owned(), str::to_owned)
    ));
    fx.save(
        "event_leader_elected_supercluster.json",
        &event,
        format!(
            "`{subject}` after the placement step-down to c3 (received through {leader} in c1): \
             `cluster` {}, `domain` {}",
            payload["cluster"],
            payload["domain"]
                .as_str()
                .map_or_else(|| "absent".to_owned(), str::to_owned)
        ),
    );
    settle().await;
    let gather = cluster.jsz_all().await.unwrap();
    assert_eq!(gather.len(), 8);
    fx.fact(format!(
        "a leader elected after a peer crashed never heard from it: {}, while before the \
         move {old_view}",
        seen_by(&gather, &moved, &follower)
    ));
    fx.save(
        "supercluster_leader_moved_9.json",
        &sorted(gather.clone()),
        format!(
            "supercluster_follower_killed_9, then the leader moved to c3 by placement step-down \
             (`{{\"placement\":{{\"cluster\":\"c3\"}}}}`), gathered ~2 s after all agreed; \
             {follower} still down; leader {moved}; {}",
            seen_by(&gather, &moved, &follower)
        ),
    );
}

/// A fresh supercluster that loses all of c2 at once.
async fn supercluster_cluster_lost(fx: &mut Fixtures) {
    let mut cluster = Cluster::start(ClusterOptions::supercluster(3, 3))
        .await
        .unwrap();
    let li = leader_index(&cluster).await;
    let leader = cluster.server_name(li);
    settle().await;
    let killed = cluster.stop_cluster("c2", Stop::Kill).await.unwrap();
    let names: Vec<String> = killed.iter().map(|&i| cluster.server_name(i)).collect();
    sleep_s(4.0).await;
    let gather = cluster.jsz_all().await.unwrap();
    assert_eq!(gather.len(), 6);
    assert_eq!(
        jsz_leader(by_server(&gather, &leader)),
        Some(leader.as_str())
    );
    let seen: Vec<String> = names.iter().map(|n| seen_by(&gather, &leader, n)).collect();
    fx.save(
        "supercluster_cluster_lost_9.json",
        &sorted(gather.clone()),
        format!(
            "3x3 supercluster, all of c2 ({}) SIGKILLed at once, gathered ~4 s later; 6 replies; \
             leader {leader} (c1) keeps quorum (6 of 9); {}",
            names.join(" "),
            seen.join("; ")
        ),
    );
}

/// Hub + edge: healthy, the edge's LEADER_ELECTED seen from the hub, a follower killed in each
/// domain, then the edge losing quorum.
async fn domains(fx: &mut Fixtures) {
    let booting = Instant::now();
    let mut cluster = Cluster::start(ClusterOptions::hub_and_leaf(3))
        .await
        .unwrap();
    fx.fact(format!(
        "hub + edge (3 + 3 servers) booted with a leader in each domain in {:.1} s",
        booting.elapsed().as_secs_f64()
    ));
    let (h1, h3, e1, e2, e3) = (0, 2, 3, 4, 5);
    cluster.make_leader(h1).await.unwrap();
    cluster.make_leader(e1).await.unwrap();
    let _rec = fx.record_events(&cluster, h1).await;
    settle().await;
    let gather = cluster.jsz_all_from(h1).await.unwrap();
    assert_eq!(gather.len(), 6);
    fx.save(
        "domains_healthy.json",
        &sorted(gather.clone()),
        format!(
            "hub h1-h3 (domain hub) + edge e1-e3 (domain edge, leaf remotes to the hub for SYS \
             and APP), all up; one gather from h1: 6 replies; {}",
            leaders_and_sizes(&gather)
        ),
    );

    // The edge's advisory, as a hub subscriber sees it.
    let asked = Instant::now();
    cluster.step_down_in(Some(LEAF)).await.unwrap();
    let edge_event = fx
        .wait_event_after(asked, Duration::from_secs(10), |e| {
            is_leader_elected(e) && e["payload"]["domain"] == LEAF
        })
        .await;
    match edge_event {
        Some(event) => {
            let subject = event["subject"].as_str().unwrap_or_default().to_owned();
            let payload = &event["payload"];
            fx.fact(format!(
                "the edge's LEADER_ELECTED reaches a system-account subscriber on hub server h1 \
                 on `{subject}` (no domain in the subject; `domain` {} in the payload), {:.1} s \
                 after `$JS.edge.API.META.LEADER.STEPDOWN` was sent through h1",
                payload["domain"],
                asked.elapsed().as_secs_f64()
            ));
            fx.save(
                "event_leader_elected_edge.json",
                &event,
                format!(
                    "`{subject}` received on hub server h1 after `$JS.edge.API.META.LEADER.STEPDOWN` \
                     sent through h1: `cluster` {}, `domain` {}",
                    payload["cluster"], payload["domain"]
                ),
            );
        }
        None => fx.fact(
            "the edge's LEADER_ELECTED did NOT reach a system-account subscriber on hub server \
             h1 within 10 s"
                .to_owned(),
        ),
    }
    let hub_events = fx
        .wait_event_after(asked, Duration::ZERO, |e| {
            is_leader_elected(e) && e["payload"]["domain"] == "hub"
        })
        .await;
    assert!(
        hub_events.is_none(),
        "the hub must not re-elect: {hub_events:?}"
    );
    cluster.make_leader(e1).await.unwrap();

    // Which group the plain (domain-less) meta API subject reaches from a hub server.
    let client = cluster.sys_client(h1).await.unwrap();
    let reply = client
        .request("$JS.API.META.LEADER.STEPDOWN", "{}".into())
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["success"], true, "{reply}");
    sleep_s(1.0).await;
    let after = cluster
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .unwrap();
    fx.fact(format!(
        "`$JS.API.META.LEADER.STEPDOWN` (no domain) sent through hub server h1 moves \
         the hub's leader only: hub h1 -> {}, edge e1 -> {}",
        after[&Some("hub".to_owned())],
        after[&Some(LEAF.to_owned())]
    ));
    cluster.make_leader(h1).await.unwrap();
    settle().await;

    cluster.stop(e3, Stop::Kill).await.unwrap();
    sleep_s(4.0).await;
    let gather = cluster.jsz_all_from(h1).await.unwrap();
    assert_eq!(gather.len(), 5);
    fx.save(
        "domains_edge_follower_killed.json",
        &sorted(gather.clone()),
        format!(
            "domains_healthy, edge follower e3 SIGKILLed, gathered from h1 ~4 s later; 5 \
             replies; {}; {}",
            seen_by(&gather, "e1", "e3"),
            leaders_and_sizes(&gather)
        ),
    );
    cluster.restart(e3).await.unwrap();
    wait_current(&cluster, e1, "e3").await;
    settle().await;

    cluster.stop(h3, Stop::Kill).await.unwrap();
    sleep_s(4.0).await;
    let gather = cluster.jsz_all_from(h1).await.unwrap();
    assert_eq!(gather.len(), 5);
    fx.save(
        "domains_hub_follower_killed.json",
        &sorted(gather.clone()),
        format!(
            "domains_healthy (e3 restarted and current again), hub follower h3 SIGKILLed, \
             gathered from h1 ~4 s later; 5 replies; {}; {}",
            seen_by(&gather, "h1", "h3"),
            leaders_and_sizes(&gather)
        ),
    );
    cluster.restart(h3).await.unwrap();
    wait_current(&cluster, h1, "h3").await;
    settle().await;

    cluster.stop(e2, Stop::Kill).await.unwrap();
    cluster.stop(e3, Stop::Kill).await.unwrap();
    let killed = Instant::now();
    sleep_s(12.0).await;
    let gather = cluster.jsz_all_from(h1).await.unwrap();
    assert_eq!(gather.len(), 4);
    assert_eq!(jsz_leader(by_server(&gather, "h1")), Some("h1"));
    fx.save(
        "domains_edge_quorum_lost.json",
        &sorted(gather.clone()),
        format!(
            "domains_healthy (h3 restarted and current again), edge followers e2 and e3 \
             SIGKILLed, gathered from h1 ~12 s later; 4 replies; hub untouched; {}",
            leaders_and_sizes(&gather)
        ),
    );
    loop {
        let view = cluster.jsz_direct(e1).await.unwrap();
        if jsz_leader(&view).is_none() {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(60));
        sleep_s(0.25).await;
    }
    let hub_leader = cluster.meta_leader_of_domain(Some("hub")).await;
    fx.fact(format!(
        "edge followers e2 + e3 SIGKILLed: the lone edge leader e1 stepped down {:.1} s later; \
         the hub's leader then: {}",
        killed.elapsed().as_secs_f64(),
        show(hub_leader.as_deref())
    ));
}

/// Hub h1-h3 with standalone leaf servers l1, l2 in its domain: healthy, a step-down towards a
/// leaf, a leaf killed and restarted.
async fn leaf_same_domain(fx: &mut Fixtures) {
    let booting = Instant::now();
    let mut cluster = Cluster::start(ClusterOptions::hub_with_leaves(3, 2))
        .await
        .unwrap();
    fx.fact(format!(
        "{LEAF_FACT} hub h1-h3 + leaf servers l1, l2 booted (one leader, cluster_size 5 \
         everywhere) in {:.1} s",
        booting.elapsed().as_secs_f64()
    ));
    let (h1, l1) = (0, 3);
    cluster.make_leader(h1).await.unwrap();
    let _rec = fx.record_events(&cluster, h1).await;
    settle().await;
    let gather = cluster.jsz_all_from(h1).await.unwrap();
    assert_eq!(gather.len(), 5);
    let mut seen: Vec<String> = gather
        .iter()
        .map(|e| {
            format!(
                "{} {}/{}/{}",
                e["server"]["name"].as_str().unwrap_or("?"),
                e["server"]["cluster"].as_str().unwrap_or("-"),
                meta(e)["name"].as_str().unwrap_or("-"),
                e["server"]["domain"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    seen.sort();
    let quorum: Vec<&Value> = gather.iter().map(|e| &meta(e)["quorum_needed"]).collect();
    fx.fact(format!(
        "{LEAF_FACT} one meta group, `server.cluster`/`meta_cluster.name`/`server.domain` per \
         server: {}; `quorum_needed` {} on every server: {}",
        seen.join(", "),
        quorum[0],
        quorum.iter().all(|q| *q == quorum[0])
    ));
    fx.save(
        "leaf_same_domain_healthy.json",
        &sorted(gather.clone()),
        format!(
            "hub h1-h3 (domain hub) + standalone leaf servers l1, l2 (domain hub, \
             `extension_hint: will_extend`, leaf remotes to the hub for SYS and APP), all up; \
             one gather from h1: 5 replies; {}",
            leaders_and_sizes(&gather)
        ),
    );

    // A leaf never leads (observer mode): what a step-down towards one does.
    let asked = Instant::now();
    cluster.step_down_to("l1").await.unwrap();
    let elected = fx
        .wait_event_after(asked, Duration::from_secs(20), is_leader_elected)
        .await;
    let after = cluster
        .wait_for_leader(Duration::from_secs(20))
        .await
        .unwrap();
    fx.fact(format!(
        "{LEAF_FACT} `{{\"placement\":{{\"preferred\":\"l1\"}}}}` step-down answered success; \
         LEADER_ELECTED {} {:.1} s later; leader then {after}",
        elected.as_ref().map_or_else(
            || "not received".to_owned(),
            |e| format!("with `cluster` {}", e["payload"]["cluster"])
        ),
        asked.elapsed().as_secs_f64()
    ));
    cluster.make_leader(h1).await.unwrap();
    settle().await;

    cluster.stop(l1, Stop::Kill).await.unwrap();
    sleep_s(4.0).await;
    let gather = cluster.jsz_all_from(h1).await.unwrap();
    assert_eq!(gather.len(), 4);
    fx.fact(format!(
        "{LEAF_FACT} l1 SIGKILLed, gathered from h1 ~4 s later: 4 replies; {}; {}",
        seen_by(&gather, "h1", "l1"),
        leaders_and_sizes(&gather)
    ));
    let restarted = Instant::now();
    cluster.restart(l1).await.unwrap();
    // `current` alone proves nothing yet: it stays true for 10 s after the last contact.
    loop {
        let view = cluster.jsz_direct(h1).await.unwrap();
        let heard = replica(&view, "l1").is_some_and(|r| {
            r["current"] == true && r["active"].as_u64().is_some_and(|a| a < 1_000_000_000)
        });
        if heard {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "l1 not heard again: {view:#}"
        );
        sleep_s(0.1).await;
    }
    fx.fact(format!(
        "{LEAF_FACT} l1 restarted: h1 heard from it again (active under 1 s) {:.1} s after \
         the process was started",
        restarted.elapsed().as_secs_f64()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts four real clusters (about 1 minute); writes the meta-catalog fixtures"]
async fn capture_meta_catalog_fixtures() {
    let _turn = CAPTURING.lock().await;
    let mut fx = Fixtures::new();
    let started = Instant::now();
    pending_high(&mut fx).await;
    member_behind(&mut fx).await;
    healthy_4(&mut fx).await;
    mixed_versions(&mut fx).await;
    fx.fact(format!(
        "the whole meta-catalog capture took {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    let old = std::fs::read_to_string(fx.readme_path()).unwrap_or_default();
    let rows: Vec<(String, String)> = fx
        .notes
        .iter()
        .map(|(file, note)| (file.clone(), table_row(file, note)))
        .collect();
    let mut section = format!(
        "{MEASURED_META_CATALOG}\n\n\
         Written by `capture_meta_catalog_fixtures` (`FIXTURES_DIR=<this dir> cargo test --test \
         live capture_meta_catalog_fixtures -- --ignored`, about a minute; it \
         writes only `pending_high_3.json`, `member_behind_3.json`, `healthy_4.json` and \
         `mixed_versions_3.json`). n1 leads before each condition; the flood goes through n1 \
         (`Cluster::flood_js_api`: `$JS.API.STREAM.NAMES` with a subject filter the leader \
         matches against the subjects of 20 streams of 500, 2,000 requests kept unanswered), \
         the starved follower is n3 (`Cluster::starve`, 50 ms running / 250 ms paused) while \
         two workers on n2 update streams on n1/n2 (`Cluster::churn_meta`), the 2.14 server is \
         n3 (`ClusterOptions::node_bins`).\n\n"
    );
    for fact in &fx.facts {
        let _ = writeln!(section, "- {fact}");
    }
    let readme = upsert_rows(&old, &rows);
    let readme = put_section(&readme, MEASURED_META_CATALOG, &section);
    std::fs::write(fx.readme_path(), readme).unwrap();
}

/// `meta_cluster.pending` of every reply, as `name pending`.
fn pendings(gather: &[Value]) -> String {
    let mut seen: Vec<String> = gather
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["server"]["name"].as_str().unwrap_or("?"),
                meta(e)["pending"]
            )
        })
        .collect();
    seen.sort();
    seen.join(", ")
}

/// META_008: the leader's JetStream API queue backed up by a flood through it.
async fn pending_high(fx: &mut Fixtures) {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let li = leader_index(&cluster).await;
    settle().await;
    let calm = cluster.jsz_all().await.unwrap();
    let setup = Instant::now();
    let flood = cluster
        .flood_js_api(li, &testbed::FloodOptions::default())
        .await
        .unwrap();
    let flooding = Instant::now();
    let setup_s = (flooding - setup).as_secs_f64();
    // Samples of the leader's pending every 250 ms for 5 s, then the gather.
    let mut samples = Vec::new();
    while flooding.elapsed() < Duration::from_secs(5) {
        let view = cluster.jsz_direct(li).await.unwrap();
        samples.push(meta(&view)["pending"].as_u64().unwrap_or(0));
        sleep_s(0.25).await;
    }
    let asked = Instant::now();
    let gather = cluster.jsz_all().await.unwrap();
    let gather_s = asked.elapsed().as_secs_f64();
    assert_eq!(gather.len(), 3, "every server answers during the flood");
    let leader_pending = meta(by_server(&gather, &cluster.server_name(li)))["pending"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        leader_pending > 500,
        "the leader's queue is backed up: {leader_pending}"
    );
    let stats = flood.stop().await.unwrap();
    let stopped = Instant::now();
    loop {
        let view = cluster.jsz_direct(li).await.unwrap();
        if meta(&view)["pending"].as_u64() == Some(0) {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "queue never drained"
        );
        sleep_s(0.1).await;
    }
    let drained_s = stopped.elapsed().as_secs_f64();
    let steady = &samples[2..];
    fx.fact(format!(
        "API flood through leader {leader}: pending before it {}; set-up (20 streams of 500 \
         subjects) {setup_s:.1} s; leader's pending every 250 ms from 0.5 s to 5 s: min {}, max \
         {}; the gather during it took {gather_s:.1} s with every reply ({}); {} requests \
         answered in {:.1} s; queue empty {drained_s:.1} s after the flood stopped",
        pendings(&calm),
        steady.iter().min().unwrap_or(&0),
        steady.iter().max().unwrap_or(&0),
        pendings(&gather),
        stats.answered,
        (stopped - flooding).as_secs_f64(),
        leader = cluster.server_name(li),
    ));
    fx.save(
        "pending_high_3.json",
        &sorted(gather.clone()),
        format!(
            "3 nodes, leader {} flooded with `$JS.API.STREAM.NAMES` requests through it \
             (2,000 unanswered), gathered 5 s into the flood; pending: {}",
            cluster.server_name(li),
            pendings(&gather)
        ),
    );
}

/// The leader's view of `name` in one line.
fn behind_of(view: &Value, name: &str) -> String {
    replica(view, name).map_or_else(
        || format!("{name} not listed"),
        |r| {
            format!(
                "{name} current {}, lag {}, active {:.2} s, offline {}",
                r["current"],
                r["lag"].as_u64().unwrap_or(0),
                r["active"].as_u64().unwrap_or(0) as f64 / 1e9,
                r["offline"].as_bool().unwrap_or(false)
            )
        },
    )
}

/// META_101: a follower that answers but lags the leader: after a restart, then starved.
async fn member_behind(fx: &mut Fixtures) {
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let li = leader_index(&cluster).await;
    let (other, slow) = (1, 2);
    let name = cluster.server_name(slow);
    let leader = cluster.server_name(li);
    settle().await;
    let churn = cluster.churn_meta(other, 2, &[slow]).await.unwrap();

    // Restarted after missing 3 s of churn: how long the leader shows it behind once it answers.
    cluster.stop(slow, Stop::Term).await.unwrap();
    sleep_s(3.0).await;
    let down = cluster.jsz_direct(li).await.unwrap();
    let restarted = Instant::now();
    cluster.restart(slow).await.unwrap();
    let mut heard_at = None;
    let caught_up_at = loop {
        let view = cluster.jsz_direct(li).await.unwrap();
        let r = replica(&view, &name).cloned().unwrap_or_default();
        let heard = r["active"].as_u64().is_some_and(|a| a < 1_000_000_000);
        if heard && heard_at.is_none() {
            heard_at = Some(restarted.elapsed().as_secs_f64());
        }
        if heard && r["current"] == true {
            break restarted.elapsed().as_secs_f64();
        }
        assert!(restarted.elapsed() < Duration::from_secs(30), "{view:#}");
        sleep_s(0.1).await;
    };
    fx.fact(format!(
        "follower {name} stopped (SIGTERM) for 3 s of churn, then restarted: leader {leader} \
         showed {} before the restart; it answered at once, {leader} heard from it {:.1} s and \
         showed it current {caught_up_at:.1} s after the restart (too short to test against)",
        behind_of(&down, &name),
        heard_at.unwrap_or(caught_up_at),
    ));

    // Starved under the churn: it answers, is heard, and stays behind.
    let starved = cluster
        .starve(slow, Duration::from_millis(50), Duration::from_millis(250))
        .unwrap();
    sleep_s(2.0).await;
    let mut lags = Vec::new();
    let mut current = 0;
    let mut other_behind = 0;
    for _ in 0..20 {
        let view = cluster.jsz_direct(li).await.unwrap();
        let r = replica(&view, &name).cloned().unwrap_or_default();
        lags.push(r["lag"].as_u64().unwrap_or(0));
        current += usize::from(r["current"] == true);
        let o = replica(&view, &cluster.server_name(other))
            .cloned()
            .unwrap_or_default();
        other_behind += usize::from(o["current"] != true);
        sleep_s(0.25).await;
    }
    // A gather in which the leader shows it clearly behind (the churn's lag varies).
    let asked = Instant::now();
    let (gather, gather_s) = loop {
        let at = Instant::now();
        let gather = cluster.jsz_all().await.unwrap();
        let gather_s = at.elapsed().as_secs_f64();
        assert_eq!(gather.len(), 3, "the starved follower answers the gather");
        let behind = replica(by_server(&gather, &leader), &name).is_some_and(|r| {
            r["current"] == false && r["lag"].as_u64().is_some_and(|lag| lag > 20)
        });
        if behind {
            break (gather, gather_s);
        }
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "never clearly behind"
        );
    };
    let view = by_server(&gather, &leader);
    fx.save(
        "member_behind_3.json",
        &sorted(gather.clone()),
        format!(
            "3 nodes, follower {name} starved of CPU (50 ms running, 250 ms paused) while \
             stream updates through {} keep the meta group committing; 3 replies; leader \
             {leader} shows {}",
            cluster.server_name(other),
            behind_of(view, &name)
        ),
    );
    drop(starved);
    let stats = churn.stop().await.unwrap();
    let stopped = Instant::now();
    // Caught up for good: current in five samples in a row (a single one proves nothing, see
    // the saw-tooth above).
    let (mut in_a_row, mut since) = (0, 0.0);
    while in_a_row < 5 {
        let view = cluster.jsz_direct(li).await.unwrap();
        if replica(&view, &name).is_some_and(|r| r["current"] == true) {
            if in_a_row == 0 {
                since = stopped.elapsed().as_secs_f64();
            }
            in_a_row += 1;
        } else {
            in_a_row = 0;
        }
        assert!(stopped.elapsed() < Duration::from_secs(30), "{view:#}");
        sleep_s(0.1).await;
    }
    fx.fact(format!(
        "follower {name} starved (50 ms running, 250 ms paused) under the churn: leader \
         {leader}'s view every 250 ms for 5 s: lag {}-{}, current in {current} of 20, the \
         healthy follower behind in {other_behind} of 20; the gather took {gather_s:.1} s with \
         every reply; current in every sample (100 ms apart) from {since:.1} s after the churn \
         and the starving stopped; the churn made {} updates ({} failed)",
        lags.iter().min().unwrap_or(&0),
        lags.iter().max().unwrap_or(&0),
        stats.answered,
        stats.failed,
    ));
}

/// Sizes and quorums as the leader reports them.
fn size_and_quorum(view: &Value) -> String {
    format!(
        "cluster_size {}, quorum_needed {}",
        meta(view)["cluster_size"],
        meta(view)["quorum_needed"]
    )
}

/// META_103: four servers, an even group.
async fn healthy_4(fx: &mut Fixtures) {
    let cluster = Cluster::start(ClusterOptions {
        size: 4,
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let li = leader_index(&cluster).await;
    settle().await;
    let gather = cluster.jsz_all().await.unwrap();
    assert_eq!(gather.len(), 4);
    let leader = cluster.server_name(li);
    fx.save(
        "healthy_4.json",
        &sorted(gather.clone()),
        format!(
            "4 nodes n1-n4, all up; leader {leader}; {}",
            size_and_quorum(by_server(&gather, &leader))
        ),
    );
}

/// `server.ver` of every reply, as `name ver`.
fn versions(gather: &[Value]) -> String {
    let mut seen: Vec<String> = gather
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["server"]["name"].as_str().unwrap_or("?"),
                e["server"]["ver"].as_str().unwrap_or("?")
            )
        })
        .collect();
    seen.sort();
    seen.join(", ")
}

/// META_104: one server on 2.14, then upgraded in place.
async fn mixed_versions(fx: &mut Fixtures) {
    let old = testbed::nats_server_bin_old("2.14").unwrap();
    let mut cluster = Cluster::start(ClusterOptions {
        node_bins: std::collections::BTreeMap::from([(2, old)]),
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let li = leader_index(&cluster).await;
    settle().await;
    let gather = cluster.jsz_all().await.unwrap();
    assert_eq!(gather.len(), 3);
    let leader = cluster.server_name(li);
    let old_name = cluster.server_name(2);
    let old_meta = meta(by_server(&gather, &old_name));
    fx.save(
        "mixed_versions_3.json",
        &sorted(gather.clone()),
        format!(
            "3 nodes, {old_name} on nats-server 2.14, the others on the suite's release; \
             leader {leader}; versions: {}",
            versions(&gather)
        ),
    );
    fx.fact(format!(
        "a 2.14 server in a 2.15 group: it joins as a member ({}); its own reply has \
         `quorum_needed` {} (the field is new in 2.15)",
        size_and_quorum(by_server(&gather, &leader)),
        old_meta["quorum_needed"]
    ));
    cluster.stop(2, Stop::Term).await.unwrap();
    cluster
        .set_binary(2, testbed::nats_server_bin().unwrap())
        .unwrap();
    let restarted = Instant::now();
    cluster.restart(2).await.unwrap();
    let versions_now = loop {
        let gather = cluster.jsz_all().await.unwrap();
        let view = by_server(&gather, &leader);
        let heard = replica(view, &old_name).is_some_and(|r| {
            r["current"] == true && r["active"].as_u64().is_some_and(|a| a < 1_000_000_000)
        });
        if gather.len() == 3 && heard {
            break versions(&gather);
        }
        assert!(restarted.elapsed() < Duration::from_secs(30));
        sleep_s(0.25).await;
    };
    fx.fact(format!(
        "{old_name} restarted on the suite's release on the same store dir: current in leader \
         {leader}'s view again {:.1} s after the restart; versions: {versions_now}",
        restarted.elapsed().as_secs_f64()
    ));
}

#[test]
fn readme_merge_keeps_the_other_tests_rows_and_sections() {
    let old = "# T\n\nintro\n\n| file | scenario |\n|---|---|\n| `a.json` | old a |\n\
               | `t.json` | topo |\n\nNotes.\n\n## Measured while capturing\n\n- old fact\n\n\
               ## Measured while capturing topologies\n\n- topo fact\n\n## By hand\n\n- kept\n";
    // The main capture rewrites its part and keeps the rest.
    let fresh = "# T\n\nintro 2\n\n| file | scenario |\n|---|---|\n| `a.json` | new a |\n\n\
                 Notes.\n\n## Measured while capturing\n\n- new fact\n";
    let kept: Vec<(String, String)> = table_rows(old)
        .into_iter()
        .filter(|(file, _)| file != "a.json")
        .collect();
    let mut main = upsert_rows(fresh, &kept);
    for (heading, text) in sections(old) {
        if heading != MEASURED {
            main = put_section(&main, &heading, &text);
        }
    }
    assert_eq!(
        main,
        "# T\n\nintro 2\n\n| file | scenario |\n|---|---|\n| `a.json` | new a |\n\
         | `t.json` | topo |\n\nNotes.\n\n## Measured while capturing\n\n- new fact\n\n\
         ## Measured while capturing topologies\n\n- topo fact\n\n## By hand\n\n- kept\n"
    );
    // The topology capture replaces its rows and section in place.
    let rows = vec![
        ("t.json".to_owned(), table_row("t.json", "topo 2")),
        ("u.json".to_owned(), table_row("u.json", "new | row")),
    ];
    let topo = put_section(
        &upsert_rows(old, &rows),
        MEASURED_TOPOLOGIES,
        &format!("{MEASURED_TOPOLOGIES}\n\n- topo fact 2\n"),
    );
    assert_eq!(
        topo,
        "# T\n\nintro\n\n| file | scenario |\n|---|---|\n| `a.json` | old a |\n\
         | `t.json` | topo 2 |\n| `u.json` | new \\| row |\n\nNotes.\n\n\
         ## Measured while capturing\n\n- old fact\n\n\
         ## Measured while capturing topologies\n\n- topo fact 2\n\n## By hand\n\n- kept\n"
    );
}

#[test]
fn capturing_the_leaves_alone_replaces_only_their_facts() {
    let kept = facts_of(&topology_section(&[
        "supercluster fact".to_owned(),
        format!("{LEAF_FACT} old"),
        format!("{TOPOLOGY_TOOK} 64 s"),
    ]));
    assert_eq!(
        merge_leaf_facts(&kept, &[format!("{LEAF_FACT} new")]),
        [
            "supercluster fact".to_owned(),
            format!("{LEAF_FACT} new"),
            format!("{TOPOLOGY_TOOK} 64 s"),
        ]
    );
    // Never captured together before: the leaf facts go last.
    assert_eq!(
        merge_leaf_facts(&["a".to_owned()], &[format!("{LEAF_FACT} new")]),
        ["a".to_owned(), format!("{LEAF_FACT} new")]
    );
}

#[tokio::test]
#[ignore = "starts one 3-node cluster with proxied routes (about 40 s); writes one fixture"]
async fn capture_leaderless_fixture() {
    let _turn = CAPTURING.lock().await;
    let mut fx = Fixtures::new();
    let cluster = Cluster::start(ClusterOptions {
        proxied_routes: true,
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    let cut = Instant::now();
    for i in 0..3 {
        cluster.partition(i).unwrap();
    }
    // Every route cut: each server answers on its own connection; the old leader gives up
    // 10-20 s after losing its quorum, then none names a leader.
    let sorted = |mut views: Vec<Value>| {
        views.sort_by(|a, b| {
            a["server"]["name"]
                .as_str()
                .cmp(&b["server"]["name"].as_str())
        });
        Value::Array(views)
    };
    let mut claims_saved = false;
    let views = loop {
        let mut views = Vec::new();
        for i in 0..3 {
            views.push(cluster.jsz_direct(i).await.unwrap());
        }
        if views.iter().all(|v| jsz_leader(v).is_none()) {
            break views;
        }
        // The old leader still claims leadership; the others already name none.
        let claiming = views
            .iter()
            .filter(|v| jsz_leader(v).is_some() && jsz_leader(v) == v["server"]["name"].as_str())
            .count();
        let none = views.iter().filter(|v| jsz_leader(v).is_none()).count();
        if !claims_saved && claiming == 1 && none == 2 {
            let note = format!(
                "3 nodes, every route cut (proxies), direct views of all three {:.1} s after the cut: the old leader still claims leadership, the others name none; {}",
                cut.elapsed().as_secs_f64(),
                leaders_and_sizes(&views)
            );
            fx.save("routes_cut_3_old_leader.json", &sorted(views), note);
            claims_saved = true;
            continue;
        }
        assert!(cut.elapsed() < Duration::from_secs(60), "a leader stays");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(claims_saved, "never saw the old leader claim alone");
    let note = format!(
        "3 nodes, every route cut (proxies), direct views of all three {:.1} s after the cut, the first in which none names a leader; {}",
        cut.elapsed().as_secs_f64(),
        leaders_and_sizes(&views)
    );
    fx.save("leaderless_3.json", &sorted(views), note);
    let old = std::fs::read_to_string(fx.readme_path()).unwrap_or_default();
    let rows: Vec<(String, String)> = fx
        .notes
        .iter()
        .map(|(file, note)| (file.clone(), table_row(file, note)))
        .collect();
    std::fs::write(fx.readme_path(), upsert_rows(&old, &rows)).unwrap();
}
