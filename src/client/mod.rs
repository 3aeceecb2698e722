//! Client edge: the CLI commands that ask a running nats-insights over NATS (`status`, `findings`,
//! `checks`, `preflight`, `wait healthy`) or follow its finding events (`watch`). Same connection flags as `run`; every
//! failure is one sentence a person can act on. An answer is taken only from a live instance of
//! the service (its `Nats-Service-Id` among those `$SRV.PING.nats-insights` returns).

pub use nats_insights_core::render::text as render;

pub mod check;

use std::process::ExitCode;
use std::time::Duration;

use async_nats::Client;
use clap::{Args, Subcommand};
use futures::StreamExt;

use crate::connect::{ConnectArgs, ConnectError};
use crate::publish::{FindingEvent, FINDING_PREFIX};
use crate::service::api::Endpoint;
use crate::service::preflight::{PreflightResponse, Verdict};
use crate::text::terminal_field;
use render::{Health, Style};

/// The commands that talk to a running service.
#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Show the meta group as the running service sees it, with its active findings. Exit code:
    /// 0 healthy, 1 warning, 2 critical, 3 unknown or service unreachable (a Nagios-style check).
    Status(Box<StatusArgs>),
    /// List findings with their remediation (active ones; --resolved adds recently resolved).
    Findings(Box<FindingsArgs>),
    /// List the checks the service runs and the thresholds it runs them with.
    Checks(Box<ChecksArgs>),
    /// Follow finding events ($INSIGHTS.FINDING.>) and print one line per event as it arrives.
    Watch(Box<WatchArgs>),
    /// Ask before a step of a rolling restart, rename or removal whether it costs meta quorum
    /// ($INSIGHTS.API.PREFLIGHT). Exit code: 0 safe (now, or within --wait), 1 not safe (the
    /// reasons are printed), 3 unknown (the service cannot tell, or does not answer).
    Preflight(Box<PreflightArgs>),
    /// Wait for a state of the meta group: `wait healthy` returns once it is whole again.
    Wait(Box<WaitArgs>),
    /// Forget a meta group retired on purpose ($INSIGHTS.API.GROUP.FORGET): every instance drops
    /// its memory of the group and resolves its findings (META_105 among them). If its servers
    /// answer again, it comes back as a new group.
    ForgetGroup(Box<ForgetGroupArgs>),
    /// A monitoring plugin with `nats server check`'s flags and formats: `check meta` (the meta
    /// group; answered by the service, or by a direct JSZ read when none answers) or `check
    /// <CHECK_ID>` (its active findings). Exit code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    Check(Box<check::CheckArgs>),
}

/// Flags of `forget-group`.
#[derive(Debug, Clone, Args)]
pub struct ForgetGroupArgs {
    /// Connection, timeout, output.
    #[command(flatten)]
    pub request: RequestArgs,
    /// The group's JetStream domain (`default` for servers without one).
    pub domain: String,
}

/// Flags every request command shares.
#[derive(Debug, Clone, Args)]
pub struct RequestArgs {
    /// Connection to the system account.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// How long to wait for the service's answer.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print the raw JSON response instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Connection, timeout, output.
    #[command(flatten)]
    pub request: RequestArgs,
    /// Only the meta group of this JetStream domain (`default` for servers without one): its
    /// members, its findings, and an exit code for it alone.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
}

/// Flags of `findings`.
#[derive(Debug, Clone, Args)]
pub struct FindingsArgs {
    /// Connection, timeout, output.
    #[command(flatten)]
    pub request: RequestArgs,
    /// Only this check, e.g. META_001.
    #[arg(long)]
    pub check: Option<String>,
    /// Only this severity: critical, warning or info.
    #[arg(long)]
    pub severity: Option<String>,
    /// Also list recently resolved findings.
    #[arg(long)]
    pub resolved: bool,
    /// At most this many (1 to 1000).
    #[arg(long)]
    pub limit: Option<u64>,
}

/// Flags of `checks`.
#[derive(Debug, Clone, Args)]
pub struct ChecksArgs {
    /// Connection, timeout, output.
    #[command(flatten)]
    pub request: RequestArgs,
}

/// Flags of `watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Connection to the system account.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print each event's JSON as received instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

/// What `preflight` asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PreflightAction {
    /// Stop the server and start it again under the same name.
    Restart,
    /// Stop the server.
    Stop,
    /// Remove its peer from the meta group (peer-remove).
    Remove,
    /// Restart it under a new server_name (--to).
    Rename,
}

impl PreflightAction {
    fn as_str(self) -> &'static str {
        match self {
            PreflightAction::Restart => "restart",
            PreflightAction::Stop => "stop",
            PreflightAction::Remove => "remove",
            PreflightAction::Rename => "rename",
        }
    }
}

/// Flags of `preflight`.
#[derive(Debug, Clone, Args)]
pub struct PreflightArgs {
    /// Connection, timeout of each request, output.
    #[command(flatten)]
    pub request: RequestArgs,
    /// What is about to happen.
    #[arg(value_enum)]
    pub action: PreflightAction,
    /// The server's server_name.
    pub server: String,
    /// The new server_name (rename only).
    #[arg(long, value_name = "NAME")]
    pub to: Option<String>,
    /// Keep asking, once a second, until it is safe or this long has passed (`0s`: ask once).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// Print only this field of the answer instead of the text: `true`/`false`, a word, or a
    /// list one item a line. For scripts, which then need no JSON parser (`--field leader`
    /// before a step-down); the exit code is still the verdict's.
    #[arg(long, value_name = "NAME", conflicts_with = "json", value_parser = PREFLIGHT_FIELDS)]
    pub field: Option<String>,
}

/// The fields of the PREFLIGHT answer `--field` prints.
const PREFLIGHT_FIELDS: [&str; 7] = [
    "verdict", "safe", "leader", "reasons", "wait_for", "server", "domain",
];

/// One field of a JSON answer as a line per value: strings as they are (control characters
/// escaped), lists one item a line, nothing for a missing field.
pub fn field_text(raw: &[u8], field: &str) -> String {
    let value: serde_json::Value = serde_json::from_slice(raw).unwrap_or_default();
    let line = |v: &serde_json::Value| -> String {
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut safe = String::with_capacity(text.len());
        for c in text.chars() {
            if c.is_control() {
                safe.extend(c.escape_default());
            } else {
                safe.push(c);
            }
        }
        safe + "\n"
    };
    match value.get(field) {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::Array(items)) => items.iter().map(line).collect(),
        Some(v) => line(v),
    }
}

/// Flags of `wait`.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// What to wait for.
    #[command(subcommand)]
    pub what: WaitFor,
}

/// What `wait` waits for.
#[derive(Debug, Clone, Subcommand)]
pub enum WaitFor {
    /// The meta group whole again: a leader, every member answering and current, no stale
    /// peer, no active critical finding. Exit code: 0 once it is, 1 at the timeout (printing
    /// what it still waits for).
    Healthy(Box<HealthyArgs>),
}

/// Flags of `wait healthy`.
#[derive(Debug, Clone, Args)]
pub struct HealthyArgs {
    /// Connection to the system account.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Only the group of this server, and this server among its current members (the one just
    /// restarted, or the new name of a renamed one). Without it: every group.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Give up after this long.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print the last PREFLIGHT response as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Why a client command failed, worded for the person running it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Nobody subscribes to the endpoint.
    #[error("no nats-insights service answered on {subject}: is it running, and are you in the system account?")]
    NoService {
        /// The endpoint's subject.
        subject: String,
    },
    /// Someone subscribes but did not answer in time.
    #[error("nats-insights did not answer on {subject} within {}: is it overloaded or cut off from this server?", humantime::format_duration(*timeout))]
    Timeout {
        /// The endpoint's subject.
        subject: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// An answer came, but not from a live instance of the service (or none could be checked).
    #[error("no verified answer on {subject}: {detail}")]
    Unverified {
        /// The endpoint's subject.
        subject: String,
        /// Why each answer was not taken.
        detail: String,
    },
    /// The service answered with a micro error.
    #[error("nats-insights refused the request on {subject} ({code}): {description}")]
    Refused {
        /// The endpoint's subject.
        subject: String,
        /// `Nats-Service-Error-Code`.
        code: String,
        /// `Nats-Service-Error`.
        description: String,
    },
    /// The request could not be sent.
    #[error("cannot send the request on {subject}: {detail}")]
    Send {
        /// The endpoint's subject.
        subject: String,
        /// Why.
        detail: String,
    },
    /// The answer is not what this version understands.
    #[error(
        "the answer on {subject} is not understood by this version of nats-insights: {detail}"
    )]
    Decode {
        /// The endpoint's subject.
        subject: String,
        /// Why.
        detail: String,
    },
    /// The event subscription could not be made or ended.
    #[error("{0}")]
    Watch(String),
}

/// Runs a client command (in its own runtime) and returns the process exit code.
pub fn main(command: ClientCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nats-insights: cannot start the async runtime: {e}");
            return ExitCode::from(Health::Unknown.exit_code());
        }
    };
    // `status` and `preflight` are checks: anything that prevents an answer is UNKNOWN (3).
    let unknown_on_error = matches!(
        command,
        ClientCommand::Status(_) | ClientCommand::Preflight(_) | ClientCommand::Check(_)
    );
    let result = runtime.block_on(async move {
        match command {
            ClientCommand::Status(args) => status(&args).await,
            ClientCommand::Findings(args) => findings(&args).await.map(|()| 0),
            ClientCommand::Checks(args) => checks(&args).await.map(|()| 0),
            ClientCommand::Watch(args) => watch(&args).await.map(|()| 0),
            ClientCommand::Preflight(args) => preflight(&args).await,
            ClientCommand::Wait(args) => match args.what {
                WaitFor::Healthy(args) => wait_healthy(&args).await,
            },
            ClientCommand::ForgetGroup(args) => forget_group(&args).await.map(|()| 0),
            ClientCommand::Check(args) => Ok(check::check(&args).await),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            // Errors may quote the network (a refusal's description, a server's name).
            eprintln!("nats-insights: {}", terminal_field(&error.to_string()));
            ExitCode::from(if unknown_on_error {
                Health::Unknown.exit_code()
            } else {
                1
            })
        }
    }
}

/// Sends one API request and returns the body of the first reply that comes from a live instance
/// of the nats-insights micro service: its `Nats-Service-Id` header is among the ids that answer
/// `$SRV.PING.nats-insights`, asked at the same time (with several instances, any live one will
/// do). A reply from anything else subscribed to the subject is ignored and named in a warning;
/// when no verified reply comes, the error says why, with the exit code of no answer.
pub async fn request(
    client: &Client,
    endpoint: Endpoint,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<bytes::Bytes, ClientError> {
    let subject = endpoint.subject();
    let payload = if body.as_object().is_some_and(|o| o.is_empty()) {
        bytes::Bytes::new()
    } else {
        serde_json::to_vec(body)
            .map_err(|e| ClientError::Send {
                subject: subject.clone(),
                detail: e.to_string(),
            })?
            .into()
    };
    let send_error = |e: &dyn std::fmt::Display| ClientError::Send {
        subject: subject.clone(),
        detail: e.to_string(),
    };
    let inbox = client.new_inbox();
    let ping_reply = format!("{inbox}.ping");
    let api_reply = format!("{inbox}.api");
    let mut replies = client
        .subscribe(format!("{inbox}.*"))
        .await
        .map_err(|e| send_error(&e))?;
    client
        .publish_with_reply(PING_SUBJECT, ping_reply.clone(), bytes::Bytes::new())
        .await
        .map_err(|e| send_error(&e))?;
    client
        .publish_with_reply(subject.clone(), api_reply, payload)
        .await
        .map_err(|e| send_error(&e))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut live = Vec::new();
    let mut ping_answered = false;
    let mut held: Vec<async_nats::Message> = Vec::new();
    loop {
        if let Some(at) = held
            .iter()
            .position(|m| service_id(m).is_some_and(|id| live.contains(&id)))
        {
            let message = held.swap_remove(at);
            // The API's queue group sends a request to one instance: any other answer is not
            // the service's.
            for other in &held {
                warn_forged(&subject, other, &live);
            }
            return answer(subject, message);
        }
        let message = match tokio::time::timeout_at(deadline, replies.next()).await {
            Ok(Some(message)) => message,
            Ok(None) | Err(_) => break,
        };
        let no_responders = message.status == Some(async_nats::StatusCode::NO_RESPONDERS);
        if message.subject.as_str() == ping_reply {
            if no_responders {
                continue;
            }
            ping_answered = true;
            match serde_json::from_slice::<async_nats::service::PingResponse>(&message.payload) {
                Ok(pong) if pong.name == crate::service::SERVICE_NAME => live.push(pong.id),
                _ => tracing::warn!("ignored an undecodable answer on {PING_SUBJECT}"),
            }
        } else if no_responders {
            return Err(ClientError::NoService { subject });
        } else {
            held.push(message);
        }
    }
    Err(match held.first() {
        None => ClientError::Timeout { subject, timeout },
        Some(_) if !ping_answered => ClientError::Unverified {
            subject,
            detail: format!(
                "no instance answered {PING_SUBJECT} within {}, so the answer cannot be told from a forgery; may this user publish to {PING_SUBJECT}?",
                humantime::format_duration(timeout)
            ),
        },
        Some(message) => ClientError::Unverified {
            detail: forged_reason(message, &live),
            subject,
        },
    })
}

/// Micro discovery of the running instances.
const PING_SUBJECT: &str = "$SRV.PING.nats-insights";

/// The micro service id a reply says it comes from.
fn service_id(message: &async_nats::Message) -> Option<String> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(crate::service::SERVICE_ID_HEADER))
        .map(|v| v.to_string())
}

fn forged_reason(message: &async_nats::Message, live: &[String]) -> String {
    let from = match service_id(message) {
        Some(id) => format!("from service id {:?}", id),
        None => format!("without a {} header", crate::service::SERVICE_ID_HEADER),
    };
    format!(
        "an answer came {from}, which is not a live instance of nats-insights (live: {}): something else answers on this subject; only the service's user should subscribe to $INSIGHTS.API.>",
        if live.is_empty() { "none".to_string() } else { live.join(", ") }
    )
}

fn warn_forged(subject: &str, message: &async_nats::Message, live: &[String]) {
    tracing::warn!(
        "ignored an answer on {subject}: {}",
        forged_reason(message, live)
    );
}

/// A verified reply: its body, or the micro error it carries.
fn answer(subject: String, message: async_nats::Message) -> Result<bytes::Bytes, ClientError> {
    if let Some(headers) = &message.headers {
        if let Some(code) = headers.get(async_nats::service::NATS_SERVICE_ERROR_CODE) {
            return Err(ClientError::Refused {
                subject,
                code: code.to_string(),
                description: headers
                    .get(async_nats::service::NATS_SERVICE_ERROR)
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            });
        }
    }
    Ok(message.payload)
}

/// A reply decoded for the text renderers, every string escaped for the terminal
/// (`--json` prints the raw reply instead).
fn decode<T: serde::de::DeserializeOwned>(
    endpoint: Endpoint,
    body: &[u8],
) -> Result<T, ClientError> {
    crate::text::decode_for_terminal(body).map_err(|e| ClientError::Decode {
        subject: endpoint.subject(),
        detail: e.to_string(),
    })
}

async fn ask(
    args: &RequestArgs,
    endpoint: Endpoint,
    body: serde_json::Value,
) -> Result<bytes::Bytes, ClientError> {
    let client = args.connect.connect("nats-insights-cli").await?;
    request(&client, endpoint, &body, args.timeout).await
}

fn print_json(body: &[u8]) {
    println!("{}", String::from_utf8_lossy(body).trim_end());
}

/// `nats-insights status`: returns the exit code for the state reported.
pub async fn status(args: &StatusArgs) -> Result<u8, ClientError> {
    let body = ask(&args.request, Endpoint::Status, serde_json::json!({})).await?;
    let mut view: render::StatusView = decode(Endpoint::Status, &body)?;
    if let Some(domain) = &args.domain {
        view = view.only_domain(domain);
    }
    if args.request.json && args.domain.is_none() {
        print_json(&body);
    } else if args.request.json {
        // The one group asked for, in the response's own shape.
        let mut body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if let Some(object) = body.as_object_mut() {
            let domain = args.domain.as_deref().unwrap_or_default();
            let wanted = |m: &serde_json::Value| match m.get("domain").and_then(|d| d.as_str()) {
                Some(d) => d == domain,
                None => domain == crate::observe::DEFAULT_GROUP_LABEL || domain.is_empty(),
            };
            let groups: Vec<serde_json::Value> = object
                .get("meta_groups")
                .and_then(|g| g.as_array())
                .map(|g| g.iter().filter(|m| wanted(m)).cloned().collect())
                .unwrap_or_default();
            let findings: Vec<serde_json::Value> = object
                .get("findings")
                .and_then(|f| f.as_array())
                .map(|f| f.iter().filter(|m| wanted(m)).cloned().collect())
                .unwrap_or_default();
            object.insert("meta".into(), groups.first().cloned().unwrap_or_default());
            object.insert("meta_groups".into(), groups.into());
            object.insert("findings".into(), findings.into());
            object.insert("status".into(), view.status.clone().into());
        }
        println!("{body}");
    } else {
        print!("{}", render::status_text(&view, Style::for_stdout()));
    }
    Ok(Health::from_status(&view.status).exit_code())
}

/// The FINDINGS request body for these flags.
pub fn findings_body(args: &FindingsArgs) -> serde_json::Value {
    let mut body = serde_json::Map::new();
    if let Some(check) = &args.check {
        body.insert("check".into(), check.clone().into());
    }
    if let Some(severity) = &args.severity {
        body.insert("severity".into(), severity.clone().into());
    }
    if args.resolved {
        body.insert("include_resolved".into(), true.into());
    }
    if let Some(limit) = args.limit {
        body.insert("limit".into(), limit.into());
    }
    body.into()
}

/// `nats-insights findings`.
pub async fn findings(args: &FindingsArgs) -> Result<(), ClientError> {
    let body = ask(&args.request, Endpoint::Findings, findings_body(args)).await?;
    if args.request.json {
        print_json(&body);
        return Ok(());
    }
    let view: render::FindingsView = decode(Endpoint::Findings, &body)?;
    print!("{}", render::findings_text(&view, Style::for_stdout()));
    Ok(())
}

/// `nats-insights forget-group`.
pub async fn forget_group(args: &ForgetGroupArgs) -> Result<(), ClientError> {
    let body = serde_json::json!({ "domain": args.domain });
    let body = ask(&args.request, Endpoint::GroupForget, body).await?;
    if args.request.json {
        print_json(&body);
        return Ok(());
    }
    let view: crate::service::api::ForgetResponse = decode(Endpoint::GroupForget, &body)?;
    let mut text = format!(
        "Forgot meta group {} (members {})",
        view.group,
        if view.members.is_empty() {
            "none".to_string()
        } else {
            view.members.join(", ")
        }
    );
    if let Some(since) = &view.unheard_since {
        text.push_str(&format!(", unheard since {since}"));
    }
    text.push_str(".\n");
    if view.findings.is_empty() {
        text.push_str("It had no active findings.\n");
    } else {
        text.push_str(&format!("Resolving: {}\n", view.findings.join(", ")));
    }
    print!("{text}");
    Ok(())
}

/// `nats-insights checks`.
pub async fn checks(args: &ChecksArgs) -> Result<(), ClientError> {
    let body = ask(&args.request, Endpoint::Checks, serde_json::json!({})).await?;
    if args.request.json {
        print_json(&body);
        return Ok(());
    }
    let view: render::ChecksView = decode(Endpoint::Checks, &body)?;
    print!("{}", render::checks_text(&view, Style::for_stdout()));
    Ok(())
}

/// The PREFLIGHT request body for an action.
pub fn preflight_body(action: &str, server: Option<&str>, to: Option<&str>) -> serde_json::Value {
    let mut body = serde_json::Map::new();
    body.insert("action".into(), action.into());
    if let Some(server) = server {
        body.insert("server".into(), server.into());
    }
    if let Some(to) = to {
        body.insert("to".into(), to.into());
    }
    body.into()
}

/// Asks PREFLIGHT until `done` holds for the answer or `wait` has passed, printing each new
/// reason set on stderr while it waits; returns the last answer (or the last error, when the
/// service never answered).
async fn ask_until(
    client: &Client,
    body: &serde_json::Value,
    request_timeout: Duration,
    wait: Duration,
    done: impl Fn(&PreflightResponse) -> bool,
) -> Result<(PreflightResponse, bytes::Bytes), ClientError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut shown: Vec<String> = Vec::new();
    loop {
        let asked = match request(client, Endpoint::Preflight, body, request_timeout).await {
            Ok(raw) => decode::<PreflightResponse>(Endpoint::Preflight, &raw).map(|r| (r, raw)),
            Err(e) => Err(e),
        };
        let now = tokio::time::Instant::now();
        match asked {
            Ok((answer, raw)) if done(&answer) || now >= deadline => return Ok((answer, raw)),
            Ok((answer, _)) => {
                if answer.wait_for != shown {
                    eprintln!("waiting for: {}", answer.wait_for.join("; "));
                    shown = answer.wait_for;
                }
            }
            Err(e) if now >= deadline => return Err(e),
            // The service may be restarting with the cluster: keep asking until the deadline.
            Err(e) => eprintln!(
                "nats-insights: {} (asking again)",
                terminal_field(&e.to_string())
            ),
        }
        tokio::time::sleep(Duration::from_secs(1).min(deadline.saturating_duration_since(now)))
            .await;
    }
}

/// `nats-insights preflight`: 0 safe, 1 not safe, 3 unknown.
pub async fn preflight(args: &PreflightArgs) -> Result<u8, ClientError> {
    let client = args.request.connect.connect("nats-insights-cli").await?;
    let body = preflight_body(args.action.as_str(), Some(&args.server), args.to.as_deref());
    let (answer, raw) = ask_until(&client, &body, args.request.timeout, args.wait, |a| {
        a.verdict == Verdict::Safe
    })
    .await?;
    if let Some(field) = &args.field {
        print!("{}", field_text(&raw, field));
    } else if args.request.json {
        print_json(&raw);
    } else {
        print!("{}", render::preflight_text(&answer, Style::for_stdout()));
    }
    Ok(match answer.verdict {
        Verdict::Safe => 0,
        Verdict::Unsafe => 1,
        Verdict::Unknown => Health::Unknown.exit_code(),
    })
}

/// `nats-insights wait healthy`: 0 once the group is whole, 1 at the timeout.
pub async fn wait_healthy(args: &HealthyArgs) -> Result<u8, ClientError> {
    let client = args.connect.connect("nats-insights-cli").await?;
    let body = preflight_body("healthy", args.server_name.as_deref(), None);
    let (answer, raw) = ask_until(
        &client,
        &body,
        Duration::from_secs(5).min(args.timeout.max(Duration::from_millis(500))),
        args.timeout,
        |a| a.verdict == Verdict::Safe,
    )
    .await?;
    if args.json {
        print_json(&raw);
    } else {
        print!("{}", render::preflight_text(&answer, Style::for_stdout()));
    }
    Ok(u8::from(answer.verdict != Verdict::Safe))
}

/// `nats-insights watch`: runs until Ctrl-C or SIGTERM (exit 0) or the connection closes.
pub async fn watch(args: &WatchArgs) -> Result<(), ClientError> {
    let client = args.connect.connect("nats-insights-watch").await?;
    let subject = format!("{FINDING_PREFIX}.>");
    let mut events = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| ClientError::Watch(format!("cannot subscribe to {subject}: {e}")))?;
    // Warn (and keep watching) when no service answers: a user outside the system account would
    // otherwise wait forever on a silent subscription.
    match request(
        &client,
        Endpoint::Status,
        &serde_json::json!({}),
        Duration::from_secs(2),
    )
    .await
    {
        Ok(_) => eprintln!(
            "watching {subject} on {} (Ctrl-C to stop)",
            terminal_field(&client.server_info().server_name)
        ),
        Err(e) => eprintln!(
            "nats-insights: warning: {} Watching {subject} anyway.",
            terminal_field(&e.to_string())
        ),
    }
    let style = Style::for_stdout();
    let shutdown = crate::shutdown::signal();
    tokio::pin!(shutdown);
    // Delivery is at least once with stable ids: a copy (two instances that could not hear
    // each other both sent it) is shown once.
    let mut seen = crate::watch::SeenIds::default();
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            message = events.next() => {
                let Some(message) = message else {
                    return Err(ClientError::Watch(format!("the subscription to {subject} ended: the connection was closed")));
                };
                let event = serde_json::from_slice::<FindingEvent>(&message.payload);
                if event.as_ref().is_ok_and(|e| !seen.first(&e.id)) {
                    continue;
                }
                if args.json {
                    print_json(&message.payload);
                    continue;
                }
                match event {
                    Ok(event) => println!("{}", render::watch_line(&event, style)),
                    Err(e) => eprintln!("nats-insights: undecodable event on {}: {e}", terminal_field(&message.subject)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(subcommand)]
        command: ClientCommand,
    }

    #[test]
    fn findings_flags_become_the_request_body() {
        let parsed = Harness::try_parse_from([
            "x",
            "findings",
            "--check",
            "META_001",
            "--severity",
            "critical",
            "--resolved",
            "--limit",
            "5",
        ])
        .expect("parses");
        let ClientCommand::Findings(args) = parsed.command else {
            panic!("findings");
        };
        assert_eq!(
            findings_body(&args),
            serde_json::json!({"check": "META_001", "severity": "critical", "include_resolved": true, "limit": 5})
        );
        let plain = Harness::try_parse_from(["x", "findings"]).expect("parses");
        let ClientCommand::Findings(args) = plain.command else {
            panic!("findings");
        };
        assert_eq!(findings_body(&args), serde_json::json!({}));
    }

    #[test]
    fn a_field_prints_as_a_script_reads_it() {
        let raw = br#"{"leader": true, "verdict": "unsafe", "reasons": ["n2 is \u001b[2Joffline", "b"], "domain": null}"#;
        assert_eq!(field_text(raw, "leader"), "true\n");
        assert_eq!(field_text(raw, "verdict"), "unsafe\n");
        assert_eq!(field_text(raw, "reasons"), "n2 is \\u{1b}[2Joffline\nb\n");
        assert_eq!(field_text(raw, "domain"), "");
        assert_eq!(field_text(raw, "wait_for"), "");
        let parsed =
            Harness::try_parse_from(["x", "preflight", "restart", "n1", "--field", "leader"])
                .expect("parses");
        let ClientCommand::Preflight(args) = parsed.command else {
            panic!("preflight");
        };
        assert_eq!(args.field.as_deref(), Some("leader"));
        assert!(
            Harness::try_parse_from(["x", "preflight", "restart", "n1", "--field", "steps"])
                .is_err()
        );
        assert!(Harness::try_parse_from([
            "x",
            "preflight",
            "restart",
            "n1",
            "--field",
            "leader",
            "--json"
        ])
        .is_err());
    }

    #[test]
    fn check_takes_natscli_meta_flags() {
        let parsed = Harness::try_parse_from([
            "x",
            "check",
            "meta",
            "--expect",
            "3",
            "--lag-critical",
            "100",
            "--seen-critical",
            "10s",
            "--format",
            "prometheus",
            "--outfile",
            "/tmp/x.prom",
        ])
        .expect("parses");
        let ClientCommand::Check(args) = parsed.command else {
            panic!("check");
        };
        assert_eq!(args.what, "meta");
        assert_eq!(args.expect, Some(3));
        assert_eq!(args.lag_critical, Some(100));
        assert_eq!(args.seen_critical, Some(Duration::from_secs(10)));
        assert_eq!(args.format, check::FormatArg::Prometheus);
        assert_eq!(args.namespace, "nats_server_check");
        assert!(Harness::try_parse_from(["x", "check", "meta", "--format", "csv"]).is_err());
    }

    #[test]
    fn the_no_service_message_says_what_to_check() {
        let e = ClientError::NoService {
            subject: Endpoint::Status.subject(),
        };
        assert_eq!(
            e.to_string(),
            "no nats-insights service answered on $INSIGHTS.API.STATUS: is it running, and are you in the system account?"
        );
    }
}
