//! Findings as alerts on a real Alertmanager (Debian's `prometheus-alertmanager`, which
//! `scripts/test` installs; `ALERTMANAGER_BIN` names it): a killed follower becomes an active
//! alert with the labels and annotations the README lists, an Alertmanager restarted during the
//! finding (it keeps alerts in memory only) gets it again, STATUS tells the failing sends in
//! between, and the restarted follower's alert ends.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nats_insights::alertmanager::{parse_target, AlertmanagerArgs, AlertmanagerSettings};
use nats_insights::engine::EngineConfig;
use nats_insights::findings::TransitionKind::{Raised, Resolved};
use serde_json::Value;
use support::{ready, Events, Monitor, EVENT_TIMEOUT};
use testbed::Stop;

fn alertmanager_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ALERTMANAGER_BIN") {
        return bin.into();
    }
    for name in ["prometheus-alertmanager", "alertmanager"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let path = Path::new(dir).join(name);
            if path.is_file() {
                return path;
            }
        }
    }
    panic!(
        "no Alertmanager: run scripts/test (ensure_alertmanager installs Debian's \
         prometheus-alertmanager) or set ALERTMANAGER_BIN"
    );
}

/// A real Alertmanager on a loopback port, with a route that delivers nowhere: the test reads
/// what it holds through its API.
struct Alertmanager {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// `--web.config.file` contents (TLS, basic auth), if any.
    web: Option<String>,
    /// How the test reads its API (with the CA, client certificate and password when `web`
    /// asks for them).
    reader: reqwest::Client,
    auth: Option<(String, String)>,
}

impl Alertmanager {
    fn start() -> Alertmanager {
        Alertmanager::start_with(None, reqwest::Client::new(), None)
    }

    fn start_with(
        web: Option<String>,
        reader: reqwest::Client,
        auth: Option<(String, String)>,
    ) -> Alertmanager {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("nats-insights-am-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join("alertmanager.yml"),
            "route:\n  receiver: nowhere\n  group_wait: 1s\nreceivers:\n  - name: nowhere\n",
        )
        .expect("config");
        let mut am = Alertmanager {
            port,
            dir,
            child: None,
            web,
            reader,
            auth,
        };
        am.spawn();
        am
    }

    fn spawn(&mut self) {
        let data = self.dir.join("data");
        // A restarted Alertmanager starts empty, as one whose pod was replaced.
        let _ = std::fs::remove_dir_all(&data);
        let log = std::fs::File::create(self.dir.join("alertmanager.log")).expect("log file");
        let mut command = Command::new(alertmanager_bin());
        if let Some(web) = &self.web {
            let path = self.dir.join("web.yml");
            std::fs::write(&path, web).expect("web config");
            command.arg(format!("--web.config.file={}", path.display()));
        }
        let child = command
            .arg(format!(
                "--config.file={}",
                self.dir.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            // No gossip: a single Alertmanager.
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("Alertmanager starts");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        let scheme = if self.web.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The alerts it holds as active (`GET /api/v2/alerts?active=true`); empty while it does not
    /// answer.
    async fn active(&self) -> Vec<Value> {
        let url = format!(
            "{}/api/v2/alerts?active=true&silenced=false&inhibited=false",
            self.url()
        );
        let mut request = self.reader.get(&url);
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        match request.send().await {
            Ok(response) => response.json::<Vec<Value>>().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Waits until an active alert matches `pred`, or panics with the log.
    async fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let alerts = self.active().await;
            if pred(&alerts) {
                return;
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.join("alertmanager.log")).unwrap_or_default();
                panic!("{what} within {timeout:?}; Alertmanager holds {alerts:#?}\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn alert_of<'a>(alerts: &'a [Value], check: &str, server: &str) -> Option<&'a Value> {
    alerts
        .iter()
        .find(|a| a["labels"]["check"] == check && a["labels"]["server"] == server)
}

async fn wait_for_state(monitor: &Monitor, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let status = monitor.status().await;
        let am = status["service"]["alertmanager"][0].clone();
        if am["state"] == state {
            return am;
        }
        assert!(
            Instant::now() < deadline,
            "STATUS never said the Alertmanager is {state}: {am:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_an_alert_on_alertmanager_again_after_it_restarts_and_ends_with_the_fault() {
    let mut am = Alertmanager::start();
    let mut cluster = support::cluster(3).await;
    let config = EngineConfig {
        alertmanager: Some(AlertmanagerSettings {
            targets: vec![parse_target(&am.url(), None).expect("URL")],
            ca_pem: None,
            identity_pem: None,
            // Short, so that the restarted Alertmanager hears of the alert within the test.
            resend: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
        }),
        ..EngineConfig::default()
    };
    let monitor = Monitor::start_with(&cluster, config).await;
    ready(&monitor, 3).await;
    let attached = monitor.client.server_info().server_name;
    let a = cluster.index_of(&attached).expect("attached to a node");
    let leader = cluster.meta_leader().await.expect("leader");
    let f = (0..3)
        .find(|i| cluster.server_name(*i) != attached && cluster.server_name(*i) != leader)
        .expect("a follower the monitor is not attached to");
    let name = cluster.server_name(f);
    let mut events = Events::subscribe_via(&cluster, &[a]).await;
    // Nothing to say while healthy: no alert, nothing sent yet.
    assert!(am.active().await.is_empty());

    cluster.stop(f, Stop::Kill).await.expect("kill");
    let raised = events
        .expect(Raised, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    am.wait_for("the crash as an active alert", EVENT_TIMEOUT, |alerts| {
        alert_of(alerts, "META_001", &name).is_some()
    })
    .await;
    let alerts = am.active().await;
    let alert = alert_of(&alerts, "META_001", &name).expect("the alert");
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], raised.name, "{alert:#}");
    assert_eq!(labels["severity"], "critical", "{alert:#}");
    assert_eq!(
        labels["cluster"].as_str(),
        raised.cluster.as_deref(),
        "{alert:#}"
    );
    assert!(labels.get("domain").is_none(), "no domain here: {alert:#}");
    let notes = &alert["annotations"];
    assert!(
        notes["summary"].as_str().is_some_and(|s| s.contains(&name)),
        "{alert:#}"
    );
    assert_eq!(
        notes["remediation"]
            .as_str()
            .map(|r| r.starts_with(&raised.remediation[0].step)),
        Some(true),
        "{alert:#}"
    );
    assert!(
        notes["runbook"]
            .as_str()
            .is_some_and(|r| r.contains("META_001")),
        "{alert:#}"
    );
    assert_eq!(
        alert["startsAt"].as_str().map(|s| &s[..19]),
        Some(&raised.raised_at[..19]),
        "startsAt is the raise: {alert:#}"
    );
    assert_eq!(wait_for_state(&monitor, "ok").await["alerts"], 1);

    // Alertmanager goes away: the sends fail, STATUS says so, the finding stays published.
    am.stop();
    let failing = wait_for_state(&monitor, "failing").await;
    assert!(failing["last_error"].is_string(), "{failing:#}");
    // Back, empty: the next retry (backoff at most a few seconds by now) delivers it again.
    am.spawn();
    am.wait_for(
        "the alert again on the restarted Alertmanager",
        Duration::from_secs(40),
        |alerts| alert_of(alerts, "META_001", &name).is_some(),
    )
    .await;
    let ok = wait_for_state(&monitor, "ok").await;
    assert!(ok["failures"].as_u64().is_some_and(|n| n >= 1), "{ok:#}");

    // The follower is back: the alert ends.
    cluster.restart(f).await.expect("restart");
    events
        .expect(Resolved, "META_001", Some(&name), EVENT_TIMEOUT)
        .await;
    am.wait_for("the alert no longer active", EVENT_TIMEOUT, |alerts| {
        alert_of(alerts, "META_001", &name).is_none()
    })
    .await;
    monitor.stop().await;
}

/// bcrypt (cost 10) of `alert-pass`, the password Alertmanager's web config asks for below.
const PASSWORD_HASH: &str = "$2b$10$uZo7JWWkfVyVvyGK6BlnGuVCFBiC1TH6d68jzq7YucCIfu34B8PiW";

/// An Alertmanager behind TLS that asks for a client certificate and a password, configured
/// through the `run` flags as an operator would: the alert arrives; a wrong password is a
/// failing target in STATUS with Alertmanager's answer, and does not hold up the good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificates_and_basic_auth_as_prometheus_offers_them() {
    let certs = std::env::temp_dir().join(format!("nats-insights-am-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&certs);
    std::fs::create_dir_all(&certs).expect("dir");
    support::certs::make_certificates(&certs);
    let c = certs.display();
    let web = format!(
        "tls_server_config:\n  cert_file: {c}/server.pem\n  key_file: {c}/server-key.pem\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {c}/ca.pem\n\
         basic_auth_users:\n  insights: {PASSWORD_HASH}\n"
    );
    let read = |name: &str| std::fs::read(certs.join(name)).expect("certificate file");
    let mut identity = read("client.pem");
    identity.extend(read("client-key.pem"));
    let reader = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&read("ca.pem")).expect("CA"))
        .identity(reqwest::Identity::from_pem(&identity).expect("identity"))
        .build()
        .expect("client");
    let auth = Some(("insights".to_string(), "alert-pass".to_string()));
    let am = Alertmanager::start_with(Some(web), reader, auth);
    let password_file = certs.join("password");
    std::fs::write(&password_file, "alert-pass\n").expect("password file");
    // Another name of the same Alertmanager (its certificate is for both).
    let wrong = am
        .url()
        .replace("https://127.0.0.1", "https://insights:wrong@localhost");
    let args = AlertmanagerArgs {
        urls: vec![am.url(), wrong],
        alertmanager_user: Some("insights".to_string()),
        alertmanager_password: None,
        alertmanager_password_file: Some(password_file),
        alertmanager_ca: Some(certs.join("ca.pem")),
        alertmanager_cert: Some(certs.join("client.pem")),
        alertmanager_key: Some(certs.join("client-key.pem")),
        alertmanager_resend: Duration::from_secs(2),
        alertmanager_timeout: Duration::from_secs(2),
    };
    let config = EngineConfig {
        alertmanager: args.settings().expect("valid flags"),
        ..EngineConfig::default()
    };

    let mut cluster = support::cluster(3).await;
    let monitor = Monitor::start_with(&cluster, config).await;
    ready(&monitor, 3).await;
    let attached = monitor.client.server_info().server_name;
    let leader = cluster.meta_leader().await.expect("leader");
    let f = (0..3)
        .find(|i| cluster.server_name(*i) != attached && cluster.server_name(*i) != leader)
        .expect("a follower the monitor is not attached to");
    let name = cluster.server_name(f);
    cluster.stop(f, Stop::Kill).await.expect("kill");
    am.wait_for("the crash as an alert over TLS", EVENT_TIMEOUT, |alerts| {
        alert_of(alerts, "META_001", &name).is_some()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let targets = loop {
        let targets = monitor.status().await["service"]["alertmanager"].clone();
        if targets[0]["state"] == "ok" && targets[1]["state"] == "failing" {
            break targets;
        }
        assert!(Instant::now() < deadline, "{targets:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        targets[1]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("401")),
        "{targets:#}"
    );
    assert!(
        !targets.to_string().contains("wrong") && !targets.to_string().contains("alert-pass"),
        "no credentials in STATUS: {targets:#}"
    );
    monitor.stop().await;
    let _ = std::fs::remove_dir_all(&certs);
}
