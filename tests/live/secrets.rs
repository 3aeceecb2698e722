//! Live: credentials inside server URLs (`nats://user:password@host`, `nats://token@host`), as
//! the nats CLI takes them, for the system, state and pinned connections of the real binary, and
//! a secret never shown: not in the connection names every server lists on `/connz`, the log,
//! STATUS, `--help` or a start-up error.

use crate::support;

use std::time::{Duration, Instant};

use support::try_request_json;
use testbed::{product_bin, Cluster, ClusterOptions, Monitor, MonitorSpec, Stop};

/// The secret part of every password below: found nowhere shown, raw or percent-encoded.
const SECRET: &str = "S3cret";
/// A system-account password that needs percent-encoding in a URL (`@`, `:`, `/`, a space).
const SYS_PASSWORD: &str = "Sys-S3cret@x:y/z w";
const SYS_PASSWORD_ENCODED: &str = "Sys-S3cret%40x%3Ay%2Fz%20w";
const APP_PASSWORD: &str = "App-S3cret#1";
const APP_PASSWORD_ENCODED: &str = "App-S3cret%231";

/// The testbed's own users (`sys`, `app`) and one user per account that only the URLs carry.
fn accounts() -> String {
    format!(
        r#"accounts {{
  SYS {{ users: [{{user: sys, password: sys}}, {{user: "url-sys", password: "{SYS_PASSWORD}"}}] }}
  APP {{
    users: [{{user: app, password: app}}, {{user: "url-app", password: "{APP_PASSWORD}"}}]
    jetstream: enabled
  }}
}}
system_account: SYS
"#
    )
}

/// `nats://user:password@host:port` for node `i`.
fn url_with(cluster: &Cluster, i: usize, userinfo: &str) -> String {
    cluster
        .client_url(i)
        .replacen("nats://", &format!("nats://{userinfo}@"), 1)
}

fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET) && !text.contains("S3cr"),
        "{what} shows a secret:\n{text}"
    );
}

/// `nats-insights <args>` run to completion with `env`; its stdout and stderr.
fn run_binary(args: &[&str], env: &[(&str, String)]) -> (Option<i32>, String) {
    let mut command = std::process::Command::new(product_bin().expect("product binary"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("NATS_") || name.starts_with("INSIGHTS_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let out = command.output().expect("binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_credentials_work_for_every_connection_and_no_secret_is_ever_shown() {
    let cluster = Cluster::start(ClusterOptions {
        size: 3,
        accounts_conf: Some(accounts()),
        ..ClusterOptions::default()
    })
    .await
    .expect("cluster starts");
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("meta leader");
    support::readiness::wait_for_jetstream(&cluster, Duration::from_secs(20))
        .await
        .expect("JetStream ready");

    let sys_info = format!("url-sys:{SYS_PASSWORD_ENCODED}");
    // Two of the three members given (each pinned), the third found by discovery; through the
    // environment, as a deployment would.
    let system_urls = format!(
        "{},{}",
        url_with(&cluster, 0, &sys_info),
        url_with(&cluster, 1, &sys_info)
    );
    let state_url = url_with(&cluster, 2, &format!("url-app:{APP_PASSWORD_ENCODED}"));
    let alertmanager_url = "http://am:Am-S3cret@127.0.0.1:9".to_string();
    let env = [
        ("NATS_URL", system_urls.clone()),
        ("INSIGHTS_STATE_URL", state_url.clone()),
        ("INSIGHTS_ALERTMANAGER_URL", alertmanager_url.clone()),
        ("NATS_PASSWORD", "Flag-S3cret".to_string()),
        ("INSIGHTS_STATE_PASSWORD", "Flag-S3cret".to_string()),
    ];

    // --help with every secret-bearing variable set shows their names, not their values.
    let (code, help) = run_binary(&["run", "--help"], &env);
    assert_eq!(code, Some(0), "{help}");
    assert!(help.contains("NATS_URL"), "{help}");
    assert_no_secret("run --help", &help);

    let bucket = "secrets";
    let mut spec = MonitorSpec::new(
        product_bin().expect("product binary"),
        ["run", "--bucket", bucket, "--bucket-replicas", "1"]
            .map(String::from)
            .to_vec(),
        cluster.dir().join("secrets-monitor.log"),
    );
    spec.env = env
        .iter()
        .filter(|(k, _)| !k.ends_with("PASSWORD"))
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    spec.env
        .push(("NATS_INSIGHTS_LOG".to_string(), "debug".to_string()));
    let mut monitor = Monitor::start(spec).expect("binary starts");

    // STATUS answers (so the system connection authenticated as url-sys and proved the system
    // account), every member is linked, the state store is in use and the Alertmanager is
    // named.
    let admin = cluster.sys_client(0).await.expect("admin client");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = try_request_json(&admin, "$INSIGHTS.API.STATUS", "").await;
        if let Some(status) = status {
            let links = status["service"]["links"].as_array().cloned();
            let linked =
                links.is_some_and(|l| l.len() == 3 && l.iter().all(|m| m["direct"] == true));
            let stored = status["service"]["store"]["state"] == "healthy";
            let am = status["service"]["alertmanager"][0]["url"].is_string();
            if linked && stored && am {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "never linked and stored: {status:#}\n{}",
                monitor.log_tail(60)
            );
        } else {
            assert!(
                monitor.is_running() && Instant::now() < deadline,
                "no STATUS:\n{}",
                monitor.log_tail(60)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let status_text = status.to_string();
    assert_no_secret("STATUS", &status_text);
    let links: Vec<String> = status["service"]["links"]
        .as_array()
        .expect("links")
        .iter()
        .filter_map(|l| l["url"].as_str().map(String::from))
        .collect();
    for i in 0..3 {
        assert!(
            links.contains(&cluster.client_url(i)),
            "{} not linked by its clean URL: {links:?}",
            cluster.client_url(i)
        );
    }
    assert_eq!(
        status["service"]["alertmanager"][0]["url"], "http://127.0.0.1:9/api/v2/alerts",
        "{status:#}"
    );

    // Every server: the monitor's connections authenticated with the URLs' users, named
    // without a credential.
    let mut names = Vec::new();
    for i in 0..3 {
        let connz = cluster
            .monitor_json(i, "/connz?auth=1")
            .await
            .expect("connz");
        assert_no_secret(&format!("/connz of node {i}"), &connz.to_string());
        for c in connz["connections"].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or_default();
            if name.starts_with("nats-insights") {
                let user = c["authorized_user"].as_str().unwrap_or_default();
                let expected = if name == "nats-insights-state" {
                    "url-app"
                } else {
                    "url-sys"
                };
                assert_eq!(user, expected, "{name} on node {i}");
                names.push(name.to_string());
            }
        }
    }
    assert!(names.iter().any(|n| n == "nats-insights"), "{names:?}");
    assert!(
        names.iter().any(|n| n == "nats-insights-state"),
        "{names:?}"
    );
    for i in 0..3 {
        let pinned = format!("nats-insights direct {}", cluster.client_url(i));
        assert!(names.contains(&pinned), "{pinned} missing from {names:?}");
    }

    let log = std::fs::read_to_string(monitor.log_path()).unwrap_or_default();
    assert!(log.contains("nats-insights running"), "{log}");
    assert_no_secret("the log", &log);
    monitor.stop(Stop::Term).await.expect("monitor stops");

    // Start-up errors print the server list: without the credentials.
    let wrong = url_with(&cluster, 0, "url-sys:Wrong-S3cret");
    let (code, text) = run_binary(&["status", "--server", &wrong], &[]);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("authorization"), "{text}");
    assert!(text.contains(&cluster.client_url(0)), "{text}");
    assert_no_secret("the start-up error", &text);
    let token = url_with(&cluster, 0, "Token-S3cret");
    let (code, text) = run_binary(&["run", "--server", &token], &[]);
    assert_ne!(code, Some(0), "{text}");
    assert_no_secret("the start-up error with a token", &text);
}

/// A nats-server process of the test's own, killed on drop.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A token in the URL of the state connection. nats-server takes a token only where no account
/// users exist, so never in the system account: the state lives here on a JetStream server of
/// its own that authorizes by token (its global account), as a state server may well be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_state_url_opens_the_bucket_and_is_never_shown() {
    const TOKEN: &str = "Tok-S3cret";
    let cluster = support::cluster(3).await;
    let dir = cluster.dir().join("token-server");
    std::fs::create_dir_all(&dir).expect("dir");
    let (port, http) = (free_port(), free_port());
    let config = dir.join("token.conf");
    std::fs::write(
        &config,
        format!(
            "server_name: tok\nhost: 127.0.0.1\nport: {port}\nhttp_port: {http}\n\
             authorization {{ token: \"{TOKEN}\" }}\n\
             jetstream {{ store_dir: \"{}\" }}\n",
            dir.join("js").display()
        ),
    )
    .expect("config");
    let _server = Server(
        std::process::Command::new(testbed::nats_server_bin().expect("nats-server"))
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("token server starts"),
    );
    // Why: the service gives up on a state server that refuses its first connection (no retry
    // on the initial connect), and on a loaded machine this one may not listen yet.
    let address: std::net::SocketAddr = format!("127.0.0.1:{http}").parse().expect("address");
    let listening = Instant::now() + Duration::from_secs(20);
    while !matches!(
        support::served::get(address, "/healthz").await,
        Some((200, _, _))
    ) {
        assert!(
            Instant::now() < listening,
            "the token server never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut spec = MonitorSpec::new(
        product_bin().expect("product binary"),
        ["run", "--bucket", "tok", "--bucket-replicas", "1"]
            .map(String::from)
            .to_vec(),
        cluster.dir().join("token-monitor.log"),
    );
    spec.env = vec![
        ("NATS_URL".to_string(), cluster.client_urls().join(",")),
        ("NATS_USER".to_string(), testbed::SYS_USER.to_string()),
        (
            "NATS_PASSWORD".to_string(),
            testbed::SYS_PASSWORD.to_string(),
        ),
        (
            "INSIGHTS_STATE_URL".to_string(),
            format!("nats://{TOKEN}@127.0.0.1:{port}"),
        ),
        ("NATS_INSIGHTS_LOG".to_string(), "debug".to_string()),
    ];
    let mut monitor = Monitor::start(spec).expect("binary starts");
    let admin = cluster.sys_client(0).await.expect("admin client");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = try_request_json(&admin, "$INSIGHTS.API.STATUS", "").await {
            if status["service"]["store"]["state"] == "healthy" {
                break status;
            }
        }
        assert!(
            monitor.is_running() && Instant::now() < deadline,
            "the store never opened with the token:\n{}",
            monitor.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_no_secret("STATUS", &status.to_string());
    let (code, _, connz) = support::served::get(address, "/connz?auth=1")
        .await
        .expect("the token server's /connz");
    assert_eq!(code, 200);
    assert!(connz.contains("nats-insights"), "{connz}");
    assert_no_secret("the token server's /connz", &connz);
    let log = std::fs::read_to_string(monitor.log_path()).unwrap_or_default();
    assert_no_secret("the log", &log);
    monitor.stop(Stop::Term).await.expect("monitor stops");
}
