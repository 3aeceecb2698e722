//! Operator (JWT) mode, end to end: servers that trust an operator and resolve accounts from
//! memory, the service started from its own `--creds`/`--state-creds` flags with `.creds` files
//! minted here (no nsc), a crashed follower raised and resolved, the finding in the KV bucket;
//! and the least-privilege permissions of `deploy/insights-accounts.conf` as user JWT claims,
//! which let the service work and refuse what it must not do.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use clap::Parser;
use nats_insights::cli::{Cli, Command};
use nats_insights::connect::{verify_system_account, ConnectArgs, Denials};
use nats_insights::findings::TransitionKind;
use nats_insights::record::{kv_key, Record, Stored};
use support::jwt::{Account, AccountSpec, Operator, Permissions, User};
use support::{request_json, Events, Monitor, EVENT_TIMEOUT};
use testbed::{Cluster, ClusterOptions, Stop};

const INBOX_PREFIX: &str = "_INBOX_insights";
const BUCKET: &str = "insights";
const FINDINGS: &str = "$INSIGHTS.FINDING.>";

/// A directory for one test's `.creds` files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "nats-insights-operator-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A 3-server cluster in operator mode: `accounts` preloaded in a memory resolver, the testbed's
/// own connections made with the `sys_admin` and `app_admin` creds.
async fn operator_cluster(
    operator: &Operator,
    accounts: &[&Account],
    sys_admin: PathBuf,
    app_admin: PathBuf,
) -> Cluster {
    let cluster = Cluster::start(ClusterOptions {
        accounts_conf: Some(operator.server_conf(accounts)),
        admin_creds: Some((sys_admin, app_admin)),
        ..ClusterOptions::default()
    })
    .await
    .expect("operator-mode cluster starts");
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("meta leader elected");
    support::readiness::wait_for_jetstream(&cluster, Duration::from_secs(20))
        .await
        .expect("JetStream ready for the state bucket");
    cluster
}

/// A connection with a `.creds` file, as any client of the cluster.
async fn creds_client(
    urls: Vec<String>,
    creds: &Path,
    name: &str,
) -> (async_nats::Client, Denials) {
    ConnectArgs {
        servers: urls,
        creds: Some(creds.to_path_buf()),
        ..ConnectArgs::default()
    }
    .connect_watched(name)
    .await
    .unwrap_or_else(|e| panic!("{name} connects with {}: {e}", creds.display()))
}

/// The service as `nats-insights run` starts it from these flags (after the cluster's URLs):
/// its connections, the system-account check, the state connection. Returns the monitor and
/// the permission violations of its two connections.
async fn start_service(
    urls: &[String],
    flags: &[&str],
) -> (Monitor, Denials, Denials, [String; 2]) {
    let urls = urls.join(",");
    let mut argv = vec![
        "nats-insights",
        "run",
        "--server",
        &urls,
        "--state-server",
        &urls,
    ];
    argv.extend_from_slice(flags);
    let cli = Cli::try_parse_from(&argv).expect("flags parse");
    let Command::Run(args) = cli.command else {
        panic!("not a run command");
    };
    let config = args.engine_config().expect("engine config");
    assert!(config.store.is_some(), "the KV store is configured");
    let mut connections = args
        .connect
        .open("nats-insights-operator")
        .await
        .expect("the service connects with --creds");
    verify_system_account(
        &connections.main,
        &connections.denied,
        Duration::from_secs(5),
    )
    .await
    .expect("the --creds user is in the system account");
    let (state, state_denied) = args
        .state
        .connect_args()
        .expect("--state-server given")
        .connect_watched("nats-insights-operator-state")
        .await
        .expect("the state connection connects with --state-creds");
    let attached = [
        connections.main.server_info().server_name,
        state.server_info().server_name,
    ];
    connections.state = Some(state);
    let denied = connections.denied.clone();
    (
        Monitor::start_connected(connections, config),
        denied,
        state_denied,
        attached,
    )
}

/// A follower that neither of `attached` (the service's servers) is connected to, so its crash
/// costs the service no connection: moves the meta leader away from it if needed.
async fn victim(cluster: &Cluster, attached: &[String; 2]) -> usize {
    let v = (0..cluster.size())
        .find(|i| !attached.contains(&cluster.server_name(*i)))
        .expect("three servers, two attachments");
    let leader = cluster
        .wait_for_leader(Duration::from_secs(15))
        .await
        .expect("leader");
    if leader == cluster.server_name(v) {
        let other = (0..cluster.size()).find(|i| *i != v).expect("another node");
        cluster.make_leader(other).await.expect("leader moved");
    }
    v
}

/// The URLs of every node but `v`: where a subscriber stays connected while `v` is down.
fn urls_except(cluster: &Cluster, v: usize) -> Vec<String> {
    (0..cluster.size())
        .filter(|i| *i != v)
        .map(|i| cluster.client_url(i))
        .collect()
}

/// Waits until the bucket's record of `finding` is active (`true`) or resolved (`false`).
async fn wait_for_record(kv: &jetstream::kv::Store, finding: &str, active: bool) {
    let key = kv_key(finding);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(Some(value)) = kv.get(&key).await {
            let stored: Stored = serde_json::from_slice(&value).expect("a stored record");
            assert_eq!(stored.record.key(), finding);
            if matches!(stored.record, Record::Active(_)) == active {
                return;
            }
            last = Some(stored);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{key} never {}: last {last:?}",
        if active { "active" } else { "resolved" }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_jwts_are_signed_by_their_issuers_and_creds_files_parse() {
    let operator = Operator::new("insights-test", "SYS", &AccountSpec::default());
    let app = operator.account(
        "APP",
        &AccountSpec {
            jetstream: true,
            ..AccountSpec::default()
        },
    );
    let user = app.user("app", None);

    let op = support::jwt::decode(&operator.jwt);
    assert_eq!(op["nats"]["type"], "operator");
    assert_eq!(op["iss"], op["sub"], "an operator signs itself");
    assert_eq!(op["nats"]["system_account"], operator.system.public_key());
    let account = support::jwt::decode(&app.jwt);
    assert_eq!(account["nats"]["type"], "account");
    assert_eq!(account["iss"], op["sub"]);
    assert_eq!(account["nats"]["limits"]["disk_storage"], -1, "JetStream");
    let claims = support::jwt::decode(&user.jwt);
    assert_eq!(claims["nats"]["type"], "user");
    assert_eq!(claims["iss"], app.public_key());
    assert!(user.seed.starts_with("SU"));

    let dir = TempDir::new("parse");
    let path = user.write_creds(&dir.0);
    async_nats::ConnectOptions::with_credentials_file(&path)
        .await
        .expect("async-nats reads the creds file");
    let conf = operator.server_conf(&[&app]);
    assert!(conf.contains(&format!("{}: {}", app.public_key(), app.jwt)));
    assert!(conf.contains(&format!("system_account: {}", operator.system.public_key())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_mode_with_creds_raises_and_resolves_meta_001_and_keeps_state() {
    let dir = TempDir::new("creds");
    let operator = Operator::new("insights-test", "SYS", &AccountSpec::default());
    let app = operator.account(
        "APP",
        &AccountSpec {
            jetstream: true,
            ..AccountSpec::default()
        },
    );
    let write = |user: User| user.write_creds(&dir.0);
    let sys_admin = write(operator.system.user("admin", None));
    let app_admin = write(app.user("app-admin", None));
    let insights = write(operator.system.user("insights", None));
    let state = write(app.user("insights-state", None));
    let mut cluster = operator_cluster(&operator, &[&app], sys_admin.clone(), app_admin).await;
    let urls = cluster.client_urls();

    let (monitor, denied, state_denied, attached) = start_service(
        &urls,
        &[
            "--creds",
            &insights.display().to_string(),
            "--state-creds",
            &state.display().to_string(),
            "--bucket",
            BUCKET,
        ],
    )
    .await;
    support::ready(&monitor, 3).await;
    let v = victim(&cluster, &attached).await;
    let name = cluster.server_name(v);
    let (watcher, _) = creds_client(urls_except(&cluster, v), &sys_admin, "operator-watch").await;
    let mut events = Events::subscribe_client(watcher).await;
    let kv = jetstream::new(
        cluster
            .app_client(attached_index(&cluster, v))
            .await
            .expect("app"),
    )
    .get_key_value(BUCKET)
    .await
    .expect("the service created its bucket");

    cluster.stop(v, Stop::Kill).await.expect("kill");
    let raised = events
        .expect(
            TransitionKind::Raised,
            "META_001",
            Some(&name),
            EVENT_TIMEOUT,
        )
        .await;
    wait_for_record(&kv, &raised.finding, true).await;
    cluster.restart(v).await.expect("restart");
    let resolved = events
        .expect(
            TransitionKind::Resolved,
            "META_001",
            Some(&name),
            EVENT_TIMEOUT,
        )
        .await;
    assert_eq!(resolved.finding, raised.finding);
    wait_for_record(&kv, &raised.finding, false).await;
    assert_eq!(denied.latest(), None, "system-account permission denied");
    assert_eq!(state_denied.latest(), None, "state permission denied");
    monitor.stop().await;
}

/// A node other than `v` (to read the bucket through while `v` is down).
fn attached_index(cluster: &Cluster, v: usize) -> usize {
    (0..cluster.size()).find(|i| *i != v).expect("another node")
}

/// The text between the bracket that opens after `key` in `text` and the one that closes it.
fn block<'a>(text: &'a str, key: &str) -> &'a str {
    let at = text
        .find(key)
        .unwrap_or_else(|| panic!("{key} not in {text}"));
    let rest = &text[at + key.len()..];
    let open = rest.find(['{', '[']).expect("an opening bracket");
    let mut depth = 0;
    for (i, c) in rest[open..].char_indices() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return &rest[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("{key}: unbalanced brackets");
}

/// The quoted strings of a config fragment.
fn quoted(text: &str) -> Vec<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// A permissions variable of a nats-server config (`NAME = { publish: { allow: [...] }
/// subscribe: { allow: [...] } allow_responses: true }`) as user JWT permissions.
fn conf_permissions(conf: &str, name: &str) -> Permissions {
    let uncommented: String = conf
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let variable = block(&uncommented, &format!("{name} ="));
    let permissions = Permissions {
        publish: quoted(block(block(variable, "publish:"), "allow:")),
        subscribe: quoted(block(block(variable, "subscribe:"), "allow:")),
        responses: variable.contains("allow_responses: true"),
    };
    // Nothing else in the variable: every subject it names is in one of the lists.
    assert_eq!(
        quoted(variable).len(),
        permissions.publish.len() + permissions.subscribe.len(),
        "{name} has only publish and subscribe allow lists: {variable}"
    );
    permissions
}

fn shipped_accounts() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/insights-accounts.conf");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_shipped_permissions_read_as_jwt_claims() {
    let conf = shipped_accounts();
    let sys = conf_permissions(&conf, "INSIGHTS_SYS_PERMISSIONS");
    assert!(sys
        .publish
        .contains(&"$SYS.REQ.SERVER.PING.JSZ".to_string()));
    assert!(sys.subscribe.contains(&"_INBOX_insights.>".to_string()));
    assert!(sys.responses);
    let state = conf_permissions(&conf, "INSIGHTS_STATE_PERMISSIONS");
    assert!(state.publish.contains(&"$KV.insights.>".to_string()));
    assert_eq!(state.subscribe, ["_INBOX_insights.>"]);
    assert!(!state.responses);
    // The read-only client asks and hears, never answers, beats, publishes findings or forgets.
    let client = conf_permissions(&conf, "INSIGHTS_CLIENT_PERMISSIONS");
    assert_eq!(
        client.subscribe,
        ["$INSIGHTS.FINDING.>", "_INBOX_insights_client.>"]
    );
    assert!(client
        .publish
        .contains(&"$INSIGHTS.API.PREFLIGHT".to_string()));
    assert!(client
        .publish
        .contains(&"$SRV.PING.nats-insights".to_string()));
    assert!(!client.responses);
    for subject in &client.publish {
        assert!(
            (subject.starts_with("$INSIGHTS.API.") && !subject.contains("GROUP"))
                || subject == "$SRV.PING.nats-insights",
            "{subject}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_user_jwts_run_the_service_and_refuse_the_rest() {
    let dir = TempDir::new("least-privilege");
    let conf = shipped_accounts();
    let sys_permissions = conf_permissions(&conf, "INSIGHTS_SYS_PERMISSIONS");
    let state_permissions = conf_permissions(&conf, "INSIGHTS_STATE_PERMISSIONS");
    // The accounts of deploy/insights-accounts.conf: the findings exported by the system
    // account and imported by INSIGHTS, where the state and the durable stream live.
    let operator = Operator::new(
        "insights-test",
        "SYS",
        &AccountSpec {
            stream_exports: vec![FINDINGS.to_string()],
            ..AccountSpec::default()
        },
    );
    let app = operator.account(
        "INSIGHTS",
        &AccountSpec {
            jetstream: true,
            stream_imports: vec![(operator.system.public_key(), FINDINGS.to_string())],
            ..AccountSpec::default()
        },
    );
    let write = |user: User| user.write_creds(&dir.0);
    let admin = write(operator.system.user("admin", None));
    let insights_admin = write(app.user("insights_admin", None));
    let insights = write(operator.system.user("insights", Some(&sys_permissions)));
    let state = write(app.user("insights_state", Some(&state_permissions)));
    let mut cluster =
        operator_cluster(&operator, &[&app], admin.clone(), insights_admin.clone()).await;
    let urls = cluster.client_urls();

    let (mut monitor, denied, state_denied, attached) = start_service(
        &urls,
        &[
            "--creds",
            &insights.display().to_string(),
            "--inbox-prefix",
            INBOX_PREFIX,
            "--state-creds",
            &state.display().to_string(),
            "--state-inbox-prefix",
            INBOX_PREFIX,
        ],
    )
    .await;
    // The insights user may not call the API: STATUS (and `ready`) is asked as admin, whose
    // replies come back through the insights user's `resp` permission.
    let (admin_client, _) = creds_client(urls.clone(), &admin, "operator-admin").await;
    monitor.client = admin_client.clone();
    support::ready(&monitor, 3).await;
    let v = victim(&cluster, &attached).await;
    // Automation in INSIGHTS hears the findings through the account import.
    let (imported, _) =
        creds_client(urls_except(&cluster, v), &insights_admin, "operator-import").await;
    let mut events = Events::subscribe_client(imported).await;

    // A graceful stop: the SHUTDOWN event the insights user subscribes to.
    let raised = events
        .stop_raised_restart_resolved(&mut cluster, v, Stop::Term)
        .await;
    let kv = jetstream::new(
        cluster
            .app_client(attached_index(&cluster, v))
            .await
            .expect("app client"),
    )
    .get_key_value(BUCKET)
    .await
    .expect("the state user created its bucket");
    wait_for_record(&kv, &raised.finding, false).await;

    let (_, status) = request_json(&admin_client, "$INSIGHTS.API.STATUS", "").await;
    assert!(status.is_object(), "STATUS: {status}");
    assert_eq!(denied.latest(), None, "system-account permission denied");
    assert_eq!(state_denied.latest(), None, "state permission denied");

    // What the users may not do is refused, and the refusal names the subject.
    let (service_user, service_denied) =
        creds_client(urls.clone(), &insights, "operator-forbidden").await;
    expect_denied(
        &service_user,
        &service_denied,
        "$JS.API.META.LEADER.STEPDOWN",
    )
    .await;
    let (state_user, state_user_denied) =
        creds_client(urls.clone(), &state, "operator-forbidden-state").await;
    expect_denied(
        &state_user,
        &state_user_denied,
        "$JS.API.STREAM.DELETE.KV_insights",
    )
    .await;
    let refused = state_user.subscribe("$KV.insights.>").await;
    assert!(
        refused.is_ok(),
        "a client-side subscribe only fails at the server"
    );
    wait_for_denial(&state_user_denied, "subscribe to", "$KV.insights.>").await;
    monitor.stop().await;
}

/// Publishes to `subject` and waits for the server's permission violation naming it.
async fn expect_denied(client: &async_nats::Client, denials: &Denials, subject: &str) {
    client
        .publish(subject.to_string(), "{}".into())
        .await
        .expect("publish leaves the client");
    client.flush().await.expect("flush");
    wait_for_denial(denials, "publish to", subject).await;
}

async fn wait_for_denial(denials: &Denials, action: &str, subject: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(denial) = denials.latest() {
            if denial.action == action && denial.subject == subject {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no refusal to {action} {subject}; latest {:?}",
            denials.latest()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
