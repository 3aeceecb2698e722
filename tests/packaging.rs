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
    assert_eq!(run.metrics.metrics_listen.as_deref(), Some("0.0.0.0:9464"));
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
