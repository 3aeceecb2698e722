//! The deployment files parse and say what the README says: the Kubernetes manifests are valid
//! YAML with the HA Deployment, probes and non-root settings; the systemd unit passes
//! `systemd-analyze verify` where systemd is installed; the Dockerfile is multi-stage and non-root.
//! (No container engine runs here, so the image itself is not built by the tests.)

use std::path::{Path, PathBuf};

use nats_insights::timing::STOP_GRACE;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn manifests() -> Vec<(String, Yaml)> {
    let dir = root().join("deploy/kubernetes");
    let mut docs = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    names.sort();
    for path in names {
        let parsed = YamlLoader::load_from_str(&read(&path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for doc in parsed {
            docs.push((path.display().to_string(), doc));
        }
    }
    docs
}

fn of_kind<'a>(docs: &'a [(String, Yaml)], kind: &str) -> &'a Yaml {
    &docs
        .iter()
        .find(|(_, d)| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes"))
        .1
}

#[test]
fn kubernetes_manifests_parse_and_run_two_non_root_replicas_with_probes() {
    let docs = manifests();
    for (file, doc) in &docs {
        assert!(
            doc["kind"].as_str().is_some(),
            "{file}: a document without kind"
        );
        assert!(
            doc["apiVersion"].as_str().is_some(),
            "{file}: no apiVersion"
        );
    }
    let deployment = of_kind(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(2));
    let pod = &deployment["spec"]["template"]["spec"];
    // The grace the service's shutdown is sized for (it stores its last reports first).
    assert_eq!(
        pod["terminationGracePeriodSeconds"].as_i64(),
        Some(STOP_GRACE.as_secs() as i64)
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["path"].as_str(),
            Some("/healthz"),
            "{probe}"
        );
    }
    assert!(!container["resources"]["limits"]["memory"].is_badvalue());
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"].as_str(),
        Some("nats-insights")
    );
    let secret = of_kind(&docs, "Secret");
    for key in [
        "NATS_USER",
        "NATS_PASSWORD",
        "INSIGHTS_STATE_USER",
        "INSIGHTS_STATE_PASSWORD",
    ] {
        assert!(
            secret["stringData"][key].as_str().is_some(),
            "the Secret has {key}"
        );
    }
    // The least-privilege users of deploy/insights-accounts.conf.
    assert_eq!(secret["stringData"]["NATS_USER"].as_str(), Some("insights"));
    assert_eq!(
        secret["stringData"]["INSIGHTS_STATE_USER"].as_str(),
        Some("insights_state")
    );
    // The HTTP listener on the pod's IP, from the downward API.
    let args: Vec<&str> = container["args"]
        .as_vec()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let listen = args
        .iter()
        .position(|a| *a == "--metrics-listen")
        .and_then(|i| args.get(i + 1));
    assert_eq!(listen, Some(&"$(POD_IP):9464"), "{args:?}");
    let pod_ip = container["env"]
        .as_vec()
        .expect("env")
        .iter()
        .find(|e| e["name"].as_str() == Some("POD_IP"))
        .expect("POD_IP");
    assert_eq!(
        pod_ip["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("status.podIP")
    );

    // The ConfigMap's file is a config the binary accepts, in HA mode (a shared state bucket),
    // serving the port the probes use.
    let toml_text = of_kind(&docs, "ConfigMap")["data"]["nats-insights.toml"]
        .as_str()
        .expect("nats-insights.toml in the ConfigMap");
    let dir = std::env::temp_dir().join(format!("nats-insights-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("nats-insights.toml");
    std::fs::write(&path, toml_text).expect("write");
    let args = nats_insights::config::apply(
        <nats_insights::cli::Cli as clap::CommandFactory>::command(),
        ["nats-insights", "run", "--config"]
            .map(std::ffi::OsString::from)
            .into_iter()
            .chain([path.into_os_string()])
            .collect(),
    )
    .expect("the ConfigMap's config file is valid");
    let cli = <nats_insights::cli::Cli as clap::Parser>::try_parse_from(args).expect("parses");
    let nats_insights::cli::Command::Run(run) = cli.command else {
        panic!("not run");
    };
    assert!(
        run.state.connect_args().is_some(),
        "HA needs --state-server"
    );
    // The address comes from the Deployment's args, never every address.
    assert_eq!(run.metrics.metrics_listen, None);
    assert_eq!(run.connect.inbox_prefix.as_deref(), Some("_INBOX_insights"));
    assert_eq!(
        container["ports"][0]["containerPort"].as_i64(),
        Some(9464),
        "the probes' port"
    );
}

#[test]
fn dockerfile_is_multi_stage_and_non_root() {
    let text = read(&root().join("Dockerfile"));
    let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "multi-stage: {stages} FROM lines");
    assert!(text
        .lines()
        .any(|l| l.starts_with("USER ") && !l.contains("root")));
    assert!(text.contains(r#"ENTRYPOINT ["nats-insights"]"#));
    assert!(text.contains(r#"CMD ["run"]"#));
    // Everything the build compiles in is copied into the builder.
    for dir in ["src", "runbooks", "deploy"] {
        assert!(text.contains(&format!("COPY {dir} ")), "COPY {dir}");
    }
}

#[test]
fn systemd_unit_verifies() {
    let unit = read(&root().join("deploy/systemd/nats-insights.service"));
    for line in [
        "Restart=on-failure",
        "EnvironmentFile=/etc/nats-insights/env",
        "ExecStart=/usr/local/bin/nats-insights run --config /etc/nats-insights/nats-insights.toml",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        &format!("TimeoutStopSec={}s", STOP_GRACE.as_secs()),
    ] {
        assert!(unit.lines().any(|l| l == line), "{line}");
    }
    let Ok(output) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("systemd-analyze not installed: unit not verified (apt-get install systemd)");
        return;
    };
    assert!(output.status.success());
    // verify insists that ExecStart exists and the env file can be read: point them at this
    // build's binary and make the env file optional, keep everything else as shipped.
    let binary = env!("CARGO_BIN_EXE_nats-insights");
    let local = unit
        .replace("/usr/local/bin/nats-insights", binary)
        .replace("EnvironmentFile=/", "EnvironmentFile=-/");
    let dir = std::env::temp_dir().join(format!("nats-insights-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("nats-insights.service");
    std::fs::write(&path, local).expect("write");
    let output = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

#[test]
fn the_nats_prestop_example_waits_for_preflight_within_its_grace_period() {
    let path = root().join("deploy/kubernetes/nats-prestop/statefulset-patch.yaml");
    let docs = YamlLoader::load_from_str(&read(&path)).expect("YAML");
    let spec = &docs[0]["spec"]["template"]["spec"];
    let grace = spec["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds");
    let command = spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][2]
        .as_str()
        .expect("preStop command");
    assert!(
        command.contains("nats-insights preflight stop \"$POD_NAME\" --wait 150s"),
        "{command}"
    );
    // The wait and the lame duck sleep fit in the grace period: Kubernetes kills at its end.
    assert!(150 + 20 < grace, "{command} in {grace} s");
}

#[test]
fn the_rolling_restart_script_parses_and_explains_itself() {
    let script = root().join("deploy/rolling-restart.sh");
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .expect("bash");
    assert!(syntax.success());
    let help = std::process::Command::new("bash")
        .arg(&script)
        .arg("--help")
        .output()
        .expect("bash");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.status.success() && text.contains("preflight restart SERVER"),
        "{text}"
    );
    let missing = std::process::Command::new("bash")
        .arg(&script)
        .arg("n1")
        .output()
        .expect("bash");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--restart is required"));
}

/// Every shipped file under deploy/ (configs, manifests, the env example, the script).
fn shipped_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("deploy"), &mut files);
    files.sort();
    files
}

/// A TOML config file of deploy/ as the binary reads it for `command`.
fn parsed_config(name: &str, command: &str) -> nats_insights::cli::Cli {
    let path = root().join("deploy").join(name);
    let args = nats_insights::config::apply(
        <nats_insights::cli::Cli as clap::CommandFactory>::command(),
        ["nats-insights", command, "--config"]
            .map(std::ffi::OsString::from)
            .into_iter()
            .chain([path.into_os_string()])
            .chain(
                (command == "preflight")
                    .then(|| ["restart".into(), "n1".into()])
                    .into_iter()
                    .flatten(),
            )
            .collect(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    <nats_insights::cli::Cli as clap::Parser>::try_parse_from(args)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_shipped_config_runs_each_part_as_its_narrow_user_never_sys() {
    // No shipped file names the full system-account user of the test clusters.
    for path in shipped_files() {
        // The test clusters' and the demo's accounts (testbed's ACCOUNTS_CONF), not a
        // production config: its header says so.
        if path.ends_with("deploy/accounts.conf") {
            assert!(read(&path).contains("not for production"));
            continue;
        }
        let text = read(&path);
        for line in text.lines() {
            // Comments may say why sys is not used.
            let line = match line.trim_start().starts_with('#') {
                true => "",
                false => line.split(" #").next().unwrap_or_default(),
            };
            let words: Vec<&str> = line
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .collect();
            assert!(
                !words.contains(&"sys"),
                "{}: names the user sys: {line}",
                path.display()
            );
        }
    }
    // The service: insights with its inbox prefix, insights_state with its own, on 127.0.0.1.
    let nats_insights::cli::Command::Run(run) = parsed_config("nats-insights.toml", "run").command
    else {
        panic!("run");
    };
    assert_eq!(run.connect.user.as_deref(), Some("insights"));
    assert_eq!(run.connect.inbox_prefix.as_deref(), Some("_INBOX_insights"));
    let state = run.state.connect_args().expect("state");
    assert_eq!(state.user.as_deref(), Some("insights_state"));
    assert_eq!(state.inbox_prefix.as_deref(), Some("_INBOX_insights"));
    assert_eq!(
        run.metrics.metrics_listen.as_deref(),
        Some("127.0.0.1:9464")
    );
    // The client commands: the read-only user with its own inbox prefix.
    let nats_insights::cli::Command::Client(nats_insights::client::ClientCommand::Preflight(
        preflight,
    )) = parsed_config("nats-insights-client.toml", "preflight").command
    else {
        panic!("preflight");
    };
    assert_eq!(
        preflight.request.connect.user.as_deref(),
        Some("insights_client")
    );
    assert_eq!(
        preflight.request.connect.inbox_prefix.as_deref(),
        Some("_INBOX_insights_client")
    );
    // The systemd env example sets the passwords of those two users only.
    let env = read(&root().join("deploy/systemd/env.example"));
    let keys: Vec<&str> = env
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .filter_map(|l| l.split('=').next())
        .collect();
    assert_eq!(keys, ["NATS_PASSWORD", "INSIGHTS_STATE_PASSWORD"]);
    // The NATS pods' preStop hook asks as insights_client.
    let patch = YamlLoader::load_from_str(&read(
        &root().join("deploy/kubernetes/nats-prestop/statefulset-patch.yaml"),
    ))
    .expect("YAML");
    let env = &patch[0]["spec"]["template"]["spec"]["containers"][0]["env"];
    let value = |name: &str| {
        env.as_vec()
            .and_then(|e| e.iter().find(|v| v["name"].as_str() == Some(name)))
            .map(|v| v["value"].as_str().unwrap_or("(from a secret)").to_string())
    };
    assert_eq!(value("NATS_USER").as_deref(), Some("insights_client"));
    assert_eq!(
        value("NATS_INBOX_PREFIX").as_deref(),
        Some("_INBOX_insights_client")
    );
    assert_eq!(value("NATS_CREDS"), None);
}

#[test]
fn the_rolling_restart_script_decides_on_exit_codes_and_fields_never_text() {
    let script = read(&root().join("deploy/rolling-restart.sh"));
    let code: Vec<&str> = script
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert!(
        !code.iter().any(|l| l.contains("grep")),
        "no grep of preflight's text"
    );
    assert!(code.iter().any(|l| l.contains("--field leader")));
}
