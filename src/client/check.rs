//! `nats-insights check meta|<CHECK_ID>`: a monitoring plugin (Nagios, Icinga, Sensu, the
//! node_exporter textfile collector) with `nats server check meta`'s flags and formats. Answered
//! by the running service (STATUS: partition-aware, with its findings); `check meta` falls back
//! to the meta leader's own JSZ view when no service answers. Every output says which source
//! answered. The rendering is pure (`nats_insights_core::check_output`); docs/check.md maps the
//! flags from natscli's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use nats_insights_core::check_output::{
    evaluate_findings, evaluate_meta, CheckResult, Format, MetaObservation, MetaOptions, PeerState,
    Source, META_NAME,
};

use super::{decode, render, request, ClientError};
use crate::connect::ConnectArgs;
use crate::service::api::Endpoint;

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// One line with perfdata: `STATUS name messages | perfdata`.
    Nagios,
    /// A JSON object (natscli's keys, plus `source` and `unknown`).
    Json,
    /// Prometheus text for the node_exporter textfile collector (exit code 0; the state is in
    /// `<namespace>_<check>_status_code`).
    Prometheus,
    /// For a person.
    Text,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Nagios => Format::Nagios,
            FormatArg::Json => Format::Json,
            FormatArg::Prometheus => Format::Prometheus,
            FormatArg::Text => Format::Text,
        }
    }
}

/// Flags of `check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Connection to the system account.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// `meta` (the meta group, as `nats server check meta`), or a check id such as META_001
    /// (critical or warning per its active findings).
    pub what: String,
    /// Number of meta members expected (natscli `--expect`); unset: not checked.
    #[arg(long, value_name = "SERVERS")]
    pub expect: Option<usize>,
    /// A follower more operations behind the leader than this is critical; unset: not checked.
    #[arg(long, value_name = "OPS")]
    pub lag_critical: Option<u64>,
    /// A follower the leader last heard from longer ago than this is critical; unset: not
    /// checked.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub seen_critical: Option<Duration>,
    /// Only the meta group of this JetStream domain (`default` for servers without one);
    /// needed when there are several.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "nagios")]
    pub format: FormatArg,
    /// Write the output to this file (replaced atomically) instead of stdout: the textfile
    /// collector's directory with `--format prometheus`.
    #[arg(long, value_name = "FILE")]
    pub outfile: Option<PathBuf>,
    /// Prefix of the Prometheus metric names.
    #[arg(long, default_value = "nats_server_check")]
    pub namespace: String,
    /// How long to wait for the service, then for JSZ replies.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// How long direct JSZ replies are collected (a scatter has no end marker).
const JSZ_WINDOW: Duration = Duration::from_secs(1);

/// Runs the check, prints or writes the result, returns the exit code.
pub async fn check(args: &CheckArgs) -> u8 {
    let result = evaluate(args).await;
    let format = Format::from(args.format);
    let text = result.render(format, &args.namespace);
    match &args.outfile {
        Some(path) => {
            if let Err(e) = write_atomically(path, &text) {
                eprintln!("nats-insights: cannot write {}: {e}", path.display());
                return 3;
            }
        }
        None => print!("{text}"),
    }
    result.exit_code(format)
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.unwrap_or_else(|| "check".into()),
        std::process::id()
    ));
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

fn unknown(name: &str, check: &str, why: String) -> CheckResult {
    let mut result = CheckResult::new(name, check);
    result.unknowns.push(why);
    result
}

async fn evaluate(args: &CheckArgs) -> CheckResult {
    let meta = args.what.eq_ignore_ascii_case("meta") || args.what.eq_ignore_ascii_case("raft");
    let check_id = crate::checks::CheckId::parse(&args.what);
    if !meta && check_id.is_none() {
        return unknown(
            &args.what,
            "check",
            format!(
                "unknown check {}; use meta or one of {}",
                args.what,
                crate::checks::CheckId::all()
                    .into_iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    let (name, suite) = match check_id {
        Some(id) if !meta => (
            format!("{} {}", id.as_str(), id.name()),
            id.as_str().to_ascii_lowercase(),
        ),
        _ => (META_NAME.to_string(), "meta".to_string()),
    };
    let client = match args.connect.connect("nats-insights-check").await {
        Ok(client) => client,
        Err(e) => return unknown(&name, &suite, format!("cannot connect: {e}")),
    };
    let asked = request(
        &client,
        Endpoint::Status,
        &serde_json::json!({}),
        args.timeout,
    )
    .await;
    let view = match asked {
        Ok(body) => match decode::<render::StatusView>(Endpoint::Status, &body) {
            Ok(view) => Ok(view),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match (view, check_id.filter(|_| !meta)) {
        (Ok(view), None) => from_service_meta(&view, args),
        (Ok(view), Some(id)) => from_service_findings(&view, id, args.domain.as_deref()),
        (
            Err(
                e @ (ClientError::NoService { .. }
                | ClientError::Timeout { .. }
                | ClientError::Unverified { .. }),
            ),
            None,
        ) => {
            tracing::info!("{e}; reading JSZ directly");
            from_jsz(&client, args).await
        }
        (Err(e), _) => unknown(&name, &suite, e.to_string()),
    }
}

fn options(args: &CheckArgs) -> MetaOptions {
    MetaOptions {
        expect: args.expect,
        lag_critical: args.lag_critical,
        seen_critical: args.seen_critical,
    }
}

fn from_service_meta(view: &render::StatusView, args: &CheckArgs) -> CheckResult {
    let blind = |why: String| {
        let mut r = unknown(META_NAME, "meta", why);
        r.source = Some(Source::Service);
        r
    };
    let groups: Vec<&render::MetaView> = view
        .groups()
        .into_iter()
        .filter(|g| args.domain.as_deref().is_none_or(|d| g.is_domain(d)))
        .collect();
    let group = match (groups.as_slice(), &args.domain) {
        ([one], _) => *one,
        ([], Some(d)) => return blind(format!("the service sees no meta group of domain {d}")),
        ([], None) => return blind("the service has not seen a meta group yet".into()),
        (many, _) => {
            let names: Vec<&str> = many.iter().map(|g| g.group.as_str()).collect();
            return blind(format!(
                "{} meta groups ({}): pass --domain",
                names.len(),
                names.join(", ")
            ));
        }
    };
    let observed = MetaObservation {
        leader: group.leader.clone().filter(|l| !l.is_empty()),
        members: group.members.len(),
        peers: group
            .members
            .iter()
            .filter(|m| !m.leader)
            .map(|m| PeerState {
                name: m.name.clone(),
                offline: match m.state.as_str() {
                    "offline" => Some(true),
                    "online" => Some(false),
                    _ => None,
                },
                current: m.current,
                active: m.active.map(Duration::from_millis),
                lag: Some(m.lag),
            })
            .collect(),
    };
    let mut result = evaluate_meta(&observed, &options(args), Source::Service);
    if let Some(since) = &group.unheard_since {
        result
            .criticals
            .push(format!("no server of the group answers since {since}"));
    }
    // The service's own findings on this group: what a single JSZ view cannot see
    // (partitions, disagreeing leaders, a flapping leader).
    let group_domain = group.domain.clone();
    for f in view.findings.iter().filter(|f| f.domain == group_domain) {
        let line = match &f.server {
            Some(server) => format!("{} {server}", f.check),
            None => f.check.clone(),
        };
        match f.severity.as_str() {
            "critical" => result.criticals.push(line),
            "warning" => result.warnings.push(line),
            _ => {}
        }
    }
    if let Some(why) = &view.service.skipped {
        result
            .unknowns
            .push(format!("the service skipped its last checks: {why}"));
    }
    if !result.criticals.is_empty() || !result.unknowns.is_empty() || !result.warnings.is_empty() {
        result.oks.clear();
    }
    result
}

fn from_service_findings(
    view: &render::StatusView,
    id: crate::checks::CheckId,
    domain: Option<&str>,
) -> CheckResult {
    let view = match domain {
        Some(d) => view.only_domain(d),
        None => view.clone(),
    };
    let findings: Vec<(String, String)> = view
        .findings
        .iter()
        .filter(|f| f.check.eq_ignore_ascii_case(id.as_str()))
        .map(|f| {
            let about = f.server.clone().or_else(|| f.domain.clone());
            let line = match about {
                Some(about) => format!("{about}: {}", f.summary),
                None => f.summary.clone(),
            };
            (f.severity.clone(), line)
        })
        .collect();
    let cannot = if view.groups().is_empty() {
        Some("no meta group seen yet".to_string())
    } else {
        view.service.skipped.clone()
    };
    evaluate_findings(id.as_str(), id.name(), &findings, cannot.as_deref())
}

/// Replies to a `$SYS.REQ.SERVER.PING.JSZ` scatter, collected for `window`.
async fn scatter_jsz(
    client: &async_nats::Client,
    body: &'static str,
    window: Duration,
) -> Result<Vec<crate::observe::jsz::JszReply>, String> {
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| format!("cannot subscribe for JSZ replies: {e}"))?;
    client
        .publish_with_reply(crate::observe::plan::PING_JSZ, inbox, body.into())
        .await
        .map_err(|e| format!("cannot send the JSZ request: {e}"))?;
    let deadline = tokio::time::Instant::now() + window;
    let mut out = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
        if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            break;
        }
        match crate::observe::jsz::decode_reply(&message.payload) {
            Ok(reply) => out.push(reply),
            Err(e) => tracing::warn!("ignored an undecodable JSZ reply: {e}"),
        }
    }
    Ok(out)
}

fn wanted_domain(reply: &crate::observe::jsz::JszReply, domain: Option<&str>) -> bool {
    match domain {
        None => true,
        Some(d) => match &reply.server.domain {
            Some(own) => own == d,
            None => d == crate::observe::DEFAULT_GROUP_LABEL || d.is_empty(),
        },
    }
}

/// The fallback: the meta leader's JSZ view (`leader_only`, one reply per group); when no
/// leader answers, every server is asked once, to tell a leaderless group from silence.
async fn from_jsz(client: &async_nats::Client, args: &CheckArgs) -> CheckResult {
    let blind = |why: String| {
        let mut r = unknown(META_NAME, "meta", why);
        r.source = Some(Source::DirectJsz);
        r
    };
    let window = JSZ_WINDOW.min(args.timeout);
    let leaders: Vec<_> = match scatter_jsz(client, r#"{"leader_only":true}"#, window).await {
        Ok(replies) => replies,
        Err(e) => return blind(e),
    }
    .into_iter()
    .filter(|r| wanted_domain(r, args.domain.as_deref()))
    .filter_map(|r| {
        let meta = r.data.as_ref()?.meta_cluster.clone()?;
        (meta.leader_name() == Some(r.server.name.as_str())).then_some((r, meta))
    })
    .collect();
    let (leader, meta) = match leaders.as_slice() {
        [one] => one.clone(),
        [] => {
            let all = match scatter_jsz(client, "{}", window).await {
                Ok(replies) => replies,
                Err(e) => return blind(e),
            };
            let answering: Vec<String> = all
                .iter()
                .filter(|r| wanted_domain(r, args.domain.as_deref()))
                .filter(|r| {
                    r.data
                        .as_ref()
                        .and_then(|d| d.meta_cluster.as_ref())
                        .is_some()
                })
                .map(|r| r.server.name.clone())
                .collect();
            if answering.is_empty() {
                return blind(
                    "no nats-insights service and no JetStream server answered JSZ: \
                     are you in the system account?"
                        .into(),
                );
            }
            let mut result = evaluate_meta(
                &MetaObservation {
                    leader: None,
                    members: 0,
                    peers: Vec::new(),
                },
                &MetaOptions::default(),
                Source::DirectJsz,
            );
            result.perfdata.clear();
            result.criticals = vec![format!(
                "no meta leader; answering without one: {}",
                answering.join(", ")
            )];
            return result;
        }
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|(r, _)| {
                    format!(
                        "{} of domain {}",
                        r.server.name,
                        r.server.domain.as_deref().unwrap_or("default")
                    )
                })
                .collect();
            return blind(format!(
                "{} meta leaders answer ({}): pass --domain",
                names.len(),
                names.join(", ")
            ));
        }
    };
    let observed = MetaObservation {
        leader: Some(leader.server.name.clone()),
        members: meta.replicas.len() + 1,
        peers: meta
            .replicas
            .iter()
            .map(|p| PeerState {
                name: p.name.clone(),
                offline: Some(p.offline),
                current: Some(p.current),
                // 0 means never heard of, not "just now".
                active: (p.active > 0).then(|| Duration::from_nanos(p.active)),
                lag: Some(p.lag),
            })
            .collect(),
    };
    evaluate_meta(&observed, &options(args), Source::DirectJsz)
}
