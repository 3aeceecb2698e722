//! Captures JSZ gathers and system events from real nats-server clusters as JSON fixtures
//! for the check unit tests. Ignored by default; run with
//! `FIXTURES_DIR=/path/to/tests/fixtures cargo test --test capture_fixtures -- --ignored --nocapture`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use nats_insights::testbed::{jsz_leader, Cluster, ClusterOptions, Stop};
use serde_json::{json, Value};

const EVENT_SUBJECTS: [&str; 5] = [
    "$SYS.SERVER.*.SHUTDOWN",
    "$SYS.SERVER.*.LAMEDUCK",
    "$JS.EVENT.ADVISORY.DOMAIN.LEADER_ELECTED",
    "$JS.EVENT.ADVISORY.DOMAIN.LEADER_ELECTED.>",
    "$JS.EVENT.ADVISORY.SERVER.REMOVED",
];

/// Writes fixtures and remembers a note per file for the generated README.
struct Fixtures {
    dir: PathBuf,
    notes: Vec<(String, String)>,
    events: Arc<Mutex<BTreeMap<&'static str, Value>>>,
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
        let task = tokio::spawn(async move {
            let mut all = futures::stream::select_all(subs);
            while let Some(msg) = all.next().await {
                let subject = msg.subject.to_string();
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
                let payload: Value = serde_json::from_slice(&msg.payload).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&msg.payload).into_owned())
                });
                println!("event {subject}");
                let mut events = events.lock().unwrap();
                events
                    .entry(kind)
                    .or_insert_with(|| json!({"subject": subject, "payload": payload}));
            }
        });
        Recorder {
            _client: client,
            task,
        }
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

    let version = std::process::Command::new(nats_insights::testbed::nats_server_bin().unwrap())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut readme = format!(
        "# JSZ and event fixtures\n\n\
         Captured from real clusters ({version}, loopback) by the ignored test \
         `tests/capture_fixtures.rs` of the testbed crate (`FIXTURES_DIR=<this dir> cargo test \
         --test capture_fixtures -- --ignored`, about 2 minutes). Do not edit by hand; re-run \
         the capture instead. Roles are fixed where the scenario allows (n1 leads before each \
         fault; the victim follower is n3); who wins an election is not.\n\n\
         JSZ files are JSON arrays of raw `$SYS.REQ.SERVER.PING.JSZ` reply envelopes \
         (`{{server, data}}`), sorted by server name; `*_isolated.json` holds the single \
         direct reply (`$SYS.REQ.SERVER.<id>.JSZ`) of a partitioned node, also as an array. \
         Event files are `{{\"subject\", \"payload\"}}`.\n\n| file | scenario |\n|---|---|\n"
    );
    for (file, note) in &fx.notes {
        let _ = writeln!(readme, "| `{file}` | {} |", note.replace('|', "\\|"));
    }
    readme.push_str(
        "\nNotes: peer hashes follow from server names (n1 was `fjFyEjc1` in every capture), so they \
         repeat across files; server ids change with every start. `data.config.store_dir` \
         points into the capture's temporary directory.\n",
    );
    readme.push_str("\n## Measured while capturing\n\n");
    for fact in &fx.facts {
        let _ = writeln!(readme, "- {fact}");
    }
    std::fs::write(fx.dir.join("README.md"), readme).unwrap();
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
