//! `nats-insights check meta|<CHECK_ID>` as Nagios, Icinga, Sensu and the node_exporter textfile
//! collector run it: the real binary against a real 3-node cluster, answered by the running
//! service, then, with the service stopped, by a direct JSZ read; exit codes and output as
//! `nats server check meta`'s.

use crate::support;

use std::time::{Duration, Instant};

use support::{cluster, follower, others, ready, Monitor};
use testbed::Stop;

/// Runs `args` until the exit code is `code` and stdout holds every one of `needles` (a fault
/// takes a few polls to show); returns that stdout.
async fn until(args: &[String], code: i32, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (got, out, err) = support::run_cli(args).await;
        if got == Some(code) && needles.iter().all(|n| out.contains(n)) {
            eprintln!("check {}: exit {code}: {}", args[1], out.trim_end());
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "wanted exit {code} with {needles:?}, got {got:?}:\n{out}{err}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Checks a Prometheus textfile: with promtool when installed (`scripts/lib/ensure.sh
/// ensure_promtool`), and by hand in any case: every sample line is `name{labels} number` and
/// every series has a TYPE.
async fn assert_parseable_textfile(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).expect("the textfile exists");
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            text.contains(&format!("# TYPE {name} gauge")),
            "{name} has no TYPE:\n{text}"
        );
    }
    if let Ok(output) = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(path).expect("open"))
        .output()
        .await
    {
        assert!(
            output.status.success(),
            "promtool check metrics: {}{}\n{text}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    } else {
        eprintln!("promtool not installed: the textfile was checked by hand only");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_meta_answers_like_nats_server_check_meta_from_the_service_then_from_jsz() {
    let mut cluster = cluster(3).await;
    let f = follower(&cluster).await;
    let name = cluster.server_name(f);
    let monitor = Monitor::start(&cluster).await;
    ready(&monitor, 3).await;
    let urls = others(3, &[f])
        .iter()
        .map(|i| cluster.client_url(*i))
        .collect::<Vec<_>>()
        .join(",");
    let with = |what: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "check",
            what,
            "-s",
            &urls,
            "--user",
            "sys",
            "--password",
            "sys",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let natscli_flags = [
        "--expect",
        "3",
        "--lag-critical",
        "100",
        "--seen-critical",
        "10s",
    ];

    // Healthy, from the service: exit 0, one Nagios line with natscli's perfdata.
    let (code, out, err) = support::run_cli(&with("meta", &natscli_flags)).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let leader = cluster.meta_leader().await.expect("leader");
    assert!(
        out.starts_with(&format!(
            "OK JetStream Meta Cluster OK:3 peers led by {leader} (from nats-insights) | "
        )),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with(
            "| peers=3;3;3 peer_offline=0 peer_not_current=0 peer_inactive=0 peer_lagged=0"
        ),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");

    // The node_exporter textfile: written atomically, parseable, exit 0.
    let dir = cluster.dir().join("textfile");
    std::fs::create_dir_all(&dir).expect("textfile dir");
    let prom = dir.join("nats_meta.prom");
    let prom_arg = prom.to_string_lossy().into_owned();
    let mut args = with("meta", &natscli_flags);
    args.extend(["--format", "prometheus", "--outfile", &prom_arg].map(String::from));
    let (code, out, err) = support::run_cli(&args).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.is_empty(), "--outfile writes nothing to stdout: {out}");
    assert_parseable_textfile(&prom).await;
    let text = std::fs::read_to_string(&prom).expect("read");
    assert!(
        text.contains("nats_server_check_meta_peers{item=\"JetStream Meta Cluster\"} 3\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "nats_server_check_meta_status_code{item=\"JetStream Meta Cluster\",status=\"OK\"} 0\n"
        ),
        "{text}"
    );

    // A check id: OK while none of its findings is active.
    let (code, out, err) = support::run_cli(&with("META_001", &[])).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("OK META_001 "), "{out}");

    // A follower killed: CRITICAL naming it, from the service, and its META_001 finding.
    cluster.stop(f, Stop::Kill).await.expect("kill");
    let out = until(
        &with("meta", &natscli_flags),
        2,
        &[&format!("offline: {name}"), "(from nats-insights)"],
    )
    .await;
    assert!(
        out.starts_with("CRITICAL JetStream Meta Cluster Crit:1 offline: "),
        "{out}"
    );
    assert!(out.contains("peer_offline=1"), "{out}");
    let out = until(&with("META_001", &[]), 2, &[&name]).await;
    assert!(out.starts_with("CRITICAL META_001 "), "{out}");
    // `check meta` carries the service's own findings on the group as well.
    let out = until(&with("meta", &[]), 2, &[&format!("Crit:META_001 {name}")]).await;
    assert!(out.contains("(from nats-insights)"), "{out}");

    // The service stopped: the same check falls back to the leader's JSZ view and says so.
    // A SIGKILLed peer is not `offline` there for minutes, but the leader stops calling it
    // current and stops hearing from it at once.
    monitor.stop().await;
    let out = until(
        &with("meta", &natscli_flags),
        2,
        &["(from a direct JSZ read)", &format!("not current: {name}")],
    )
    .await;
    assert!(out.starts_with("CRITICAL JetStream Meta Cluster "), "{out}");
    assert!(out.contains("| peers=3;3;3 "), "{out}");
    let (code, out, _) = support::run_cli(&with("meta", &["--format", "json"])).await;
    assert_eq!(code, Some(2), "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["source"], "jsz", "{json:#}");
    assert_eq!(json["status"], "CRITICAL", "{json:#}");
    // A check id needs the service: UNKNOWN without it.
    let (code, out, err) = support::run_cli(&with("META_001", &[])).await;
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(out.starts_with("UNKNOWN META_001 "), "{out}");

    // Back: OK again from JSZ alone.
    cluster.restart(f).await.expect("restart");
    let out = until(
        &with("meta", &natscli_flags),
        0,
        &["(from a direct JSZ read)", "OK:3 peers led by "],
    )
    .await;
    assert!(out.contains("peer_not_current=0"), "{out}");
    let mut args = with("meta", &natscli_flags);
    args.extend(["--format", "prometheus", "--outfile", &prom_arg].map(String::from));
    let (code, out, err) = support::run_cli(&args).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_parseable_textfile(&prom).await;
    assert!(std::fs::read_to_string(&prom)
        .expect("read")
        .starts_with("# nats-insights check meta: from a direct JSZ read\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_service_a_leaderless_group_is_critical_naming_who_answers() {
    let mut cluster = cluster(3).await;
    let leader = cluster.meta_leader().await.expect("leader");
    let l = cluster.index_of(&leader).expect("leader index");
    let survivor = others(3, &[l])[0];
    let gone = others(3, &[l, survivor])[0];
    let args: Vec<String> = [
        "check".to_string(),
        "meta".into(),
        "-s".into(),
        cluster.client_url(survivor),
        "--user".into(),
        "sys".into(),
        "--password".into(),
        "sys".into(),
        "--expect".into(),
        "3".into(),
    ]
    .to_vec();
    let (code, out, err) = support::run_cli(&args).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("(from a direct JSZ read)"), "{out}");
    // The leader and a follower gone: no quorum, so no new leader. The leader-only JSZ
    // request gets no reply then; the survivor still answers the plain one.
    cluster.stop(l, Stop::Kill).await.expect("kill leader");
    cluster.stop(gone, Stop::Kill).await.expect("kill follower");
    let name = cluster.server_name(survivor);
    let out = until(
        &args,
        2,
        &[&format!("no meta leader; answering without one: {name}")],
    )
    .await;
    assert!(out.contains("(from a direct JSZ read)"), "{out}");
}
