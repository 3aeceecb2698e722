//! Entry: the command line. Parses flags (each with its environment variable), sets up logging,
//! and starts the requested command; every failure becomes one line and a non-zero exit code.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::checks::Thresholds;
use crate::connect::{verify_system_account, ConnectArgs, StateArgs};
use crate::engine::{self, EngineConfig};
use crate::service::Instance;
use crate::timing::GatherTiming;

/// Default of `--log`.
pub const DEFAULT_LOG: &str = "info,async_nats=off";

/// Watches a NATS JetStream cluster's meta group from the system account and publishes findings
/// (offline replicas, lost quorum) on `$INSIGHTS.FINDING.<CHECK>.<EVENT>`.
#[derive(Debug, Parser)]
#[command(name = "nats-insights", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing-subscriber syntax, e.g. `info`, `nats_insights=debug`).
    #[arg(
        long,
        global = true,
        env = "NATS_INSIGHTS_LOG",
        default_value = DEFAULT_LOG
    )]
    pub log: String,
    /// TOML file whose keys are long flag names (`poll-interval = "2s"`); flags and environment
    /// variables take precedence over it.
    #[arg(long, global = true, env = "NATS_INSIGHTS_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the monitor against a cluster (connect with a system-account user).
    Run(Box<RunArgs>),
    /// Print the runbook of a check: what it means, why it matters, how to confirm and fix it.
    Explain(ExplainArgs),
    /// Commands that ask a running nats-insights: status, findings, checks, watch.
    #[command(flatten)]
    Client(crate::client::ClientCommand),
}

/// Flags of `explain`.
#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// The check, e.g. META_006 (case-insensitive).
    pub check: String,
    /// Print the runbook as JSON (as `$INSIGHTS.API.EXPLAIN` returns it).
    #[arg(long)]
    pub json: bool,
}

/// `nats-insights explain`: the runbooks are compiled in, so no connection is needed.
fn explain(args: &ExplainArgs) -> Result<(), String> {
    let check = crate::checks::CheckId::parse(&args.check).ok_or_else(|| {
        format!(
            "unknown check {}; known: {}",
            args.check,
            crate::checks::CheckId::all()
                .into_iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    if args.json {
        let book = crate::runbook::runbook(check);
        println!(
            "{}",
            serde_json::to_string_pretty(&book).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", crate::runbook::markdown(check));
    }
    Ok(())
}

/// Flags of `run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Connection to the system account.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Where finding state is kept.
    #[command(flatten)]
    pub state: StateArgs,
    /// Time between JSZ polls of every server.
    #[arg(long, env = "INSIGHTS_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// A meta peer the leader has not heard from for this long counts as offline (the server's own
    /// offline flag takes minutes after a crash).
    #[arg(long, env = "INSIGHTS_OFFLINE_AFTER", default_value = "3s", value_parser = humantime::parse_duration)]
    pub offline_after: Duration,
    /// META_106 is raised when no server has reported a meta leader for longer than this although
    /// a quorum of members is online. The default outlasts raft's longest election timeout (9 s)
    /// and one poll.
    #[arg(long, env = "INSIGHTS_LEADERLESS_AFTER", default_value = "12s", value_parser = humantime::parse_duration)]
    pub leaderless_after: Duration,
    /// Servers may report different meta leaders this long before META_002 is raised (shorter
    /// disagreements happen in every election and are only counted).
    #[arg(long, env = "INSIGHTS_DISAGREEMENT_AFTER", default_value = "3s", value_parser = humantime::parse_duration)]
    pub disagreement_after: Duration,
    /// META_003 is raised when the meta leader changed more than this many times within
    /// --flap-window.
    #[arg(long, env = "INSIGHTS_FLAP_MAX", default_value_t = 1)]
    pub flap_max: usize,
    /// The window META_003 counts leader changes in.
    #[arg(long, env = "INSIGHTS_FLAP_WINDOW", default_value = "10m", value_parser = humantime::parse_duration)]
    pub flap_window: Duration,
    /// META_008 is raised when the meta leader has more JetStream API requests pending than
    /// this (its JSZ `meta_cluster.pending`) for longer than --pending-after.
    #[arg(long, env = "INSIGHTS_PENDING_MAX", default_value_t = 500)]
    pub pending_max: u64,
    /// How long the leader's pending requests must stay above --pending-max.
    #[arg(long, env = "INSIGHTS_PENDING_AFTER", default_value = "5s", value_parser = humantime::parse_duration)]
    pub pending_after: Duration,
    /// META_101 is raised for a member that answers but that the leader shows not current, or
    /// more than this many operations behind, for longer than --behind-after.
    #[arg(long, env = "INSIGHTS_LAG_MAX", default_value_t = 200)]
    pub lag_max: u64,
    /// How long a member may stay behind before META_101 is raised (a restarted member
    /// catching up takes a moment).
    #[arg(long, env = "INSIGHTS_BEHIND_AFTER", default_value = "10s", value_parser = humantime::parse_duration)]
    pub behind_after: Duration,
    /// How long META_102 stays raised after the meta group's size last changed (it resolves at
    /// once if the size goes back).
    #[arg(long, env = "INSIGHTS_SIZE_CHANGE_HOLD", default_value = "10m", value_parser = humantime::parse_duration)]
    pub size_change_hold: Duration,
    /// How long the meta group's size must be even before META_103 is raised.
    #[arg(long, env = "INSIGHTS_EVEN_AFTER", default_value = "30s", value_parser = humantime::parse_duration)]
    pub even_after: Duration,
    /// META_005 is raised when the stream and consumer replicas on the meta group's servers
    /// (the sum of their JSZ `streams` and `consumers`) exceed this.
    #[arg(long, env = "INSIGHTS_META_ASSETS_MAX", default_value_t = 5_000)]
    pub meta_assets_max: u64,
    /// META_107 is raised for a server whose JetStream flushes to disk less often than this
    /// (its `sync_interval`) and not on every write; the server's default is 2 minutes.
    #[arg(long, env = "INSIGHTS_SYNC_INTERVAL_MAX", default_value = "1m", value_parser = humantime::parse_duration)]
    pub sync_interval_max: Duration,
    /// How long a member's own ROUTEZ must lack a route to another member of its cluster before
    /// CLUSTER_005 is raised (a route reconnects within a second or two).
    #[arg(long, env = "INSIGHTS_ROUTES_MISSING_AFTER", default_value = "10s", value_parser = humantime::parse_duration)]
    pub routes_missing_after: Duration,
    /// How long a server's own GATEWAYZ must lack a gateway to another cluster of the group
    /// before CLUSTER_007 is raised.
    #[arg(long, env = "INSIGHTS_GATEWAY_LOST_AFTER", default_value = "10s", value_parser = humantime::parse_duration)]
    pub gateway_lost_after: Duration,
    /// How long a member's own HEALTHZ must fail before SERVER_014 is raised (an election leaves
    /// followers without a leader for up to about 10 s).
    #[arg(long, env = "INSIGHTS_HEALTH_FAILING_AFTER", default_value = "15s", value_parser = humantime::parse_duration)]
    pub health_failing_after: Duration,
    /// How long a member's own RAFTZ must show it catching up with the meta leader before
    /// META_110 is raised.
    #[arg(long, env = "INSIGHTS_CATCHING_UP_AFTER", default_value = "1m", value_parser = humantime::parse_duration)]
    pub catching_up_after: Duration,
    /// Time between heartbeats on $INSIGHTS.HEARTBEAT.
    #[arg(long, env = "INSIGHTS_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// Meta groups of up to this many members are polled in full: every server's whole JSZ view,
    /// whose size grows with the group, so a poll costs members² bytes. Larger groups are polled
    /// in linear cost: the leader's view, every server's identity, and the views of 8 followers
    /// that rotate from poll to poll.
    #[arg(long, env = "INSIGHTS_FULL_POLL_MAX", default_value_t = crate::observe::plan::FULL_POLL_MAX_MEMBERS)]
    pub full_poll_max: usize,
    /// Pin a connection to every meta member found through the servers (their advertised URLs,
    /// VARZ and ROUTEZ), besides the given URLs, so a partitioned server's own view is seen
    /// however the service was given its servers. `false` pins only the given URLs (a monitor
    /// that cannot or must not reach every server).
    #[arg(long, env = "INSIGHTS_DISCOVER_MEMBERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub discover_members: bool,
    /// The deployment this instance belongs to: only instances of the same deployment are HA
    /// peers (their events, beats and state). Defaults to the bucket's name (`--bucket`), so
    /// instances on one bucket are one deployment and two deployments on different buckets
    /// that share a system account never take each other for peers.
    #[arg(long, env = "INSIGHTS_DEPLOYMENT")]
    pub deployment: Option<String>,
    /// Prometheus metrics and health endpoint.
    #[command(flatten)]
    pub metrics: crate::http::metrics::MetricsArgs,
    /// Findings as Alertmanager alerts.
    #[command(flatten)]
    pub alertmanager: crate::alertmanager::AlertmanagerArgs,
}

impl RunArgs {
    /// The engine configuration these flags describe.
    pub fn engine_config(&self) -> Result<EngineConfig, String> {
        if self.poll_interval < Duration::from_millis(100) {
            return Err("--poll-interval must be at least 100ms".to_string());
        }
        if self.offline_after.is_zero()
            || self.leaderless_after.is_zero()
            || self.heartbeat_interval.is_zero()
            || self.flap_window.is_zero()
            || self.size_change_hold.is_zero()
        {
            return Err(
                "--offline-after, --leaderless-after, --flap-window, --size-change-hold \
                 and --heartbeat-interval must be positive"
                    .to_string(),
            );
        }
        if self.routes_missing_after.is_zero()
            || self.gateway_lost_after.is_zero()
            || self.health_failing_after.is_zero()
            || self.catching_up_after.is_zero()
        {
            // Zero would raise a condition seen once, on a single reply.
            return Err(
                "--routes-missing-after, --gateway-lost-after, --health-failing-after and \
                 --catching-up-after must be positive"
                    .to_string(),
            );
        }
        let timing = GatherTiming {
            max_wait: GatherTiming::default()
                .max_wait
                .min(self.poll_interval * 3 / 2),
            ..GatherTiming::default()
        };
        Ok(EngineConfig {
            thresholds: Thresholds {
                offline_after: self.offline_after,
                leaderless_after: self.leaderless_after,
                disagreement_after: self.disagreement_after,
                flap_max: self.flap_max,
                flap_window: self.flap_window,
                pending_max: self.pending_max,
                pending_after: self.pending_after,
                lag_max: self.lag_max,
                behind_after: self.behind_after,
                size_change_hold: self.size_change_hold,
                even_after: self.even_after,
                meta_assets_max: self.meta_assets_max,
                sync_interval_max: self.sync_interval_max,
                routes_missing_after: self.routes_missing_after,
                gateway_lost_after: self.gateway_lost_after,
                health_failing_after: self.health_failing_after,
                catching_up_after: self.catching_up_after,
            },
            poll_interval: self.poll_interval,
            heartbeat_interval: self.heartbeat_interval,
            timing,
            full_poll_max_members: self.full_poll_max,
            discover_members: self.discover_members,
            deployment: self
                .deployment
                .clone()
                .unwrap_or_else(|| self.state.bucket.clone()),
            store: match self.state.connect_args() {
                Some(_) => Some(self.state.settings().map_err(|e| e.to_string())?),
                None => None,
            },
            alertmanager: self.alertmanager.settings()?,
        })
    }
}

/// The command-line definition with the values of every environment variable hidden from
/// `--help`: several carry secrets (server URLs with `user:password@`, passwords, tokens), and
/// help text ends up on screens and in CI logs. The variables' names are still shown.
pub fn command() -> clap::Command {
    fn hide(command: clap::Command) -> clap::Command {
        command
            .mut_args(|arg| arg.hide_env_values(true))
            .mut_subcommands(hide)
    }
    hide(Cli::command())
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let args = match crate::config::apply(Cli::command(), std::env::args_os().collect()) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("nats-insights: {}", crate::text::terminal_field(&message));
            return ExitCode::FAILURE;
        }
    };
    let cli = match Cli::from_arg_matches(&command().get_matches_from(args)) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Command::Client(command) = cli.command {
        // One-shot commands print only warnings unless --log asks for more.
        let quiet = cli.log == DEFAULT_LOG;
        init_logging(if quiet {
            "warn,async_nats=off"
        } else {
            &cli.log
        });
        return crate::client::main(command);
    }
    init_logging(&cli.log);
    if let Command::Explain(args) = &cli.command {
        return match explain(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("nats-insights: {}", crate::text::terminal_field(&message));
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nats-insights: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(*args).await,
            Command::Explain(args) => explain(&args),
            Command::Client(_) => Ok(()), // answered above, in its own runtime
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("nats-insights: {}", crate::text::terminal_field(&message));
            ExitCode::FAILURE
        }
    }
}

/// Sets up logging to stderr: `filter` in tracing-subscriber syntax (`info` when it does not
/// parse). The tools crate's binaries log the same way.
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// `nats-insights run`.
pub async fn run(args: RunArgs) -> Result<(), String> {
    let config = args.engine_config()?;
    let web = args.metrics.web_config()?;
    let metrics = match &args.metrics.metrics_listen {
        Some(addr) => Some(
            crate::http::MetricsServer::bind(addr)
                .await?
                .with_web_config(web),
        ),
        None => None,
    };
    let connections = args
        .connect
        .open("nats-insights")
        .await
        .map_err(|e| e.to_string())?;
    let client = connections.main.clone();
    verify_system_account(&client, &connections.denied, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    let mut connections = connections;
    if let Some(state) = args.state.connect_args() {
        let state_client = state
            .connect("nats-insights-state")
            .await
            .map_err(|e| format!("state connection (--state-server): {e}"))?;
        connections.state = Some(state_client);
    }
    let instance = Instance {
        id: nuid::next().to_string(),
        started: SystemTime::now(),
    };
    tracing::info!(
        instance = %instance.id,
        server = %client.server_info().server_name,
        poll_interval = ?config.poll_interval,
        offline_after = ?config.thresholds.offline_after,
        store = %match &config.store {
            Some(s) => format!("KV bucket {} (--state-server)", s.bucket),
            None => "memory only: a restart forgets active findings (no --state-server)".to_string(),
        },
        alertmanager = %match &config.alertmanager {
            Some(a) => a.targets.iter().map(|t| t.endpoint.as_str()).collect::<Vec<_>>().join(", "),
            None => "none (no --alertmanager-url)".to_string(),
        },
        "nats-insights running"
    );
    let (status_tx, status_rx) = tokio::sync::watch::channel(Default::default());
    if let Some(server) = metrics {
        if let Some(addr) = server.local_addr() {
            let s = server.scheme();
            tracing::info!(
                web_config = %server.web_config_summary(),
                "status page on {s}://{addr}/, metrics on {s}://{addr}/metrics, health on {s}://{addr}/healthz"
            );
        }
        tokio::spawn(server.serve(
            status_rx,
            instance.clone(),
            config.thresholds,
            config.poll_interval,
        ));
    }
    engine::run_with_status(
        connections,
        config,
        instance,
        crate::shutdown::signal(),
        status_tx,
    )
    .await
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
        command().debug_assert();
    }

    #[test]
    fn help_shows_no_environment_value() {
        fn check(command: &clap::Command, path: &str) {
            for arg in command.get_arguments() {
                if arg.get_env().is_some() {
                    assert!(
                        arg.is_hide_env_values_set(),
                        "{path} --{:?} shows its env value",
                        arg.get_long()
                    );
                }
            }
            for sub in command.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        let mut command = command();
        command.build();
        check(&command, "nats-insights");
    }

    #[test]
    fn state_flags_do_not_collide_with_the_system_account_flags() {
        let cli = Cli::try_parse_from([
            "nats-insights",
            "run",
            "--server",
            "nats://a:4222,nats://b:4222",
            "--user",
            "sys",
            "--password",
            "p",
            "--state-server",
            "nats://c:4222",
            "--state-user",
            "app",
            "--state-password",
            "q",
        ])
        .expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        assert_eq!(args.connect.servers.len(), 2);
        assert_eq!(args.state.servers, ["nats://c:4222"]);
        assert_eq!(args.state.user.as_deref(), Some("app"));
        assert!(args.engine_config().expect("valid").store.is_some());
    }

    fn run_args(extra: &[&str]) -> Result<EngineConfig, String> {
        let mut argv = vec!["nats-insights", "run"];
        argv.extend(extra);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        args.engine_config()
    }

    #[test]
    fn default_flags_are_the_default_thresholds_and_leaderless_after_outlasts_an_election() {
        let config = run_args(&[]).expect("valid");
        assert_eq!(config.thresholds, Thresholds::default());
        assert_eq!(
            config.poll_interval,
            crate::thresholds::DEFAULT_POLL_INTERVAL
        );
        assert!(
            config.thresholds.leaderless_after
                > crate::thresholds::RAFT_ELECTION_TIMEOUT_MAX + config.poll_interval
        );
    }

    #[test]
    fn the_hold_times_of_the_extra_sources_are_flags_refusing_zero() {
        let config = run_args(&[
            "--routes-missing-after",
            "20s",
            "--gateway-lost-after",
            "30s",
            "--health-failing-after",
            "1m",
            "--catching-up-after",
            "2500ms",
        ])
        .expect("valid");
        let t = config.thresholds;
        assert_eq!(t.routes_missing_after, Duration::from_secs(20));
        assert_eq!(t.gateway_lost_after, Duration::from_secs(30));
        assert_eq!(t.health_failing_after, Duration::from_secs(60));
        assert_eq!(t.catching_up_after, Duration::from_millis(2500));
        for flag in [
            "--routes-missing-after",
            "--gateway-lost-after",
            "--health-failing-after",
            "--catching-up-after",
        ] {
            let refused = run_args(&[flag, "0s"]).expect_err("zero refused");
            assert!(refused.contains(flag), "{refused}");
            assert!(run_args(&[flag, "ten"]).is_err(), "{flag} parses durations");
        }
    }

    #[test]
    fn alertmanager_flags_name_every_target_and_refuse_what_cannot_work() {
        let config = run_args(&[
            "--alertmanager-url",
            "http://a:9093,https://u:p@b:9093/",
            "--alertmanager-url",
            "http://c:9093",
            "--alertmanager-user",
            "ops",
            "--alertmanager-password",
            "s",
        ])
        .expect("valid");
        let am = config.alertmanager.expect("alertmanager configured");
        let endpoints: Vec<&str> = am.targets.iter().map(|t| t.endpoint.as_str()).collect();
        assert_eq!(
            endpoints,
            [
                "http://a:9093/api/v2/alerts",
                "https://b:9093/api/v2/alerts",
                "http://c:9093/api/v2/alerts"
            ]
        );
        assert_eq!(am.targets[0].basic_auth, Some(("ops".into(), "s".into())));
        assert_eq!(am.targets[1].basic_auth, Some(("u".into(), "p".into())));
        assert_eq!(am.resend, Duration::from_secs(60));
        assert!(run_args(&[]).expect("valid").alertmanager.is_none());
        for (bad, says) in [
            (vec!["--alertmanager-url", "am:9093"], "http or https"),
            (vec!["--alertmanager-url", "http://a,http://a/"], "twice"),
            (
                vec![
                    "--alertmanager-url",
                    "http://a",
                    "--alertmanager-resend",
                    "0s",
                ],
                "at least 1s",
            ),
            (
                vec![
                    "--alertmanager-url",
                    "http://a",
                    "--alertmanager-ca",
                    "/nonexistent",
                ],
                "--alertmanager-ca",
            ),
            (
                vec![
                    "--alertmanager-url",
                    "http://a",
                    "--alertmanager-password",
                    "x",
                ],
                "--alertmanager-user",
            ),
        ] {
            let error = run_args(&bad).expect_err("refused");
            assert!(error.contains(says), "{bad:?}: {error}");
        }
    }
}
