//! Edge: connections to NATS. Builds client options from the connection flags (or a nats CLI
//! context), turns startup failures into one clear sentence, proves the user is in the system
//! account, and names the subject whenever the server denies one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event, RequestErrorKind};
use clap::Args;

use crate::observe::gather::{PING_IDZ, PING_JSZ};

/// Connection flags shared by every command.
#[derive(Debug, Clone, Args, Default)]
pub struct ConnectArgs {
    /// NATS server URLs of the system account, comma-separated or repeated [default: the
    /// context's url, else nats://127.0.0.1:4222].
    #[arg(long = "server", short = 's', env = "NATS_URL", value_delimiter = ',')]
    pub servers: Vec<String>,
    /// User name (a system-account user).
    #[arg(long, env = "NATS_USER")]
    pub user: Option<String>,
    /// Password for --user.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Credentials file (JWT + nkey seed) for operator mode.
    #[arg(long, env = "NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// File holding an nkey seed (`SU...`).
    #[arg(long, env = "NATS_NKEY")]
    pub nkey: Option<PathBuf>,
    /// Authentication token.
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// TLS client certificate (PEM), presented when the server asks for one.
    #[arg(long = "tlscert", env = "NATS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tlscert.
    #[arg(long = "tlskey", env = "NATS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) that sign the servers' certificates; implies TLS.
    #[arg(long = "tlsca", env = "NATS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Prefix of reply subjects, so the user's subscribe permission can be narrow
    /// (e.g. `_INBOX_insights` with `_INBOX_insights.>` allowed) [default: the context's, else
    /// _INBOX].
    #[arg(long, env = "NATS_INBOX_PREFIX")]
    pub inbox_prefix: Option<String>,
    /// nats CLI context to read (`~/.config/nats/context/NAME.json`, or a path to a .json file):
    /// its url, credentials, TLS files and inbox prefix; flags and variables given here win.
    #[arg(long, env = "NATS_CONTEXT")]
    pub context: Option<String>,
}

/// Where finding state is kept: a JetStream-enabled account (JetStream is never enabled in the
/// system account), usually on the same cluster.
#[derive(Debug, Clone, Args, Default)]
pub struct StateArgs {
    /// NATS URLs of a JetStream-enabled account holding the state bucket, comma-separated.
    /// Without it (or --state-context) state lives in memory: a restart forgets active findings
    /// and the flap window.
    #[arg(
        id = "state_server",
        long = "state-server",
        env = "INSIGHTS_STATE_URL",
        value_delimiter = ','
    )]
    pub servers: Vec<String>,
    /// User of the state account.
    #[arg(id = "state_user", long = "state-user", env = "INSIGHTS_STATE_USER")]
    pub user: Option<String>,
    /// Password for --state-user.
    #[arg(
        id = "state_password",
        long = "state-password",
        env = "INSIGHTS_STATE_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Credentials file for the state account.
    #[arg(id = "state_creds", long = "state-creds", env = "INSIGHTS_STATE_CREDS")]
    pub creds: Option<PathBuf>,
    /// nkey seed file for the state account.
    #[arg(id = "state_nkey", long = "state-nkey", env = "INSIGHTS_STATE_NKEY")]
    pub nkey: Option<PathBuf>,
    /// Token for the state account.
    #[arg(
        id = "state_token",
        long = "state-token",
        env = "INSIGHTS_STATE_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// TLS client certificate for the state account.
    #[arg(
        id = "state_tlscert",
        long = "state-tlscert",
        env = "INSIGHTS_STATE_CERT"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --state-tlscert.
    #[arg(id = "state_tlskey", long = "state-tlskey", env = "INSIGHTS_STATE_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA certificate(s) of the state account's servers; implies TLS.
    #[arg(id = "state_tlsca", long = "state-tlsca", env = "INSIGHTS_STATE_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Reply-subject prefix of the state connection.
    #[arg(
        id = "state_inbox_prefix",
        long = "state-inbox-prefix",
        env = "INSIGHTS_STATE_INBOX_PREFIX"
    )]
    pub inbox_prefix: Option<String>,
    /// nats CLI context for the state account (same rules as --context).
    #[arg(
        id = "state_context",
        long = "state-context",
        env = "INSIGHTS_STATE_CONTEXT"
    )]
    pub context: Option<String>,
    /// KV bucket name (created if missing: file storage, 5 revisions per key).
    #[arg(long, env = "INSIGHTS_BUCKET", default_value = "insights")]
    pub bucket: String,
    /// Replicas of the bucket when it is created (capped at the cluster size).
    #[arg(long, env = "INSIGHTS_BUCKET_REPLICAS", default_value_t = 3)]
    pub bucket_replicas: usize,
    /// A state operation slower than this marks the store degraded (findings are published anyway).
    #[arg(long, env = "INSIGHTS_STATE_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub state_timeout: Duration,
}

impl StateArgs {
    /// The connection flags of the state account, if one is configured.
    pub fn connect_args(&self) -> Option<ConnectArgs> {
        if self.servers.iter().all(|s| s.trim().is_empty()) && self.context.is_none() {
            return None;
        }
        Some(ConnectArgs {
            servers: self.servers.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            creds: self.creds.clone(),
            nkey: self.nkey.clone(),
            token: self.token.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_ca: self.tls_ca.clone(),
            inbox_prefix: self.inbox_prefix.clone(),
            context: self.context.clone(),
        })
    }

    /// Bucket settings, validated.
    pub fn settings(&self) -> Result<crate::store::StoreSettings, ConnectError> {
        let valid = !self.bucket.is_empty()
            && self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(ConnectError::Config(format!(
                "--bucket {:?}: use letters, digits, '-' and '_' only",
                self.bucket
            )));
        }
        if self.bucket_replicas == 0 || self.bucket_replicas > 5 {
            return Err(ConnectError::Config(
                "--bucket-replicas must be between 1 and 5".to_string(),
            ));
        }
        Ok(crate::store::StoreSettings {
            bucket: self.bucket.clone(),
            replicas: self.bucket_replicas,
            timeout: self.state_timeout,
            // Set by the engine, which knows the instance.
            instance: String::new(),
        })
    }
}

/// Why connecting failed, each worded for an operator.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Flags that cannot work together or are incomplete.
    #[error("{0}")]
    Config(String),
    /// A credentials or nkey file could not be read.
    #[error("cannot read {what} file {path}: {source}")]
    File {
        /// Which kind of file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The server refused the credentials.
    #[error("authorization failed at {servers}: the server refused these credentials; check --user/--password, --creds, --nkey or --token")]
    Auth {
        /// URLs tried.
        servers: String,
    },
    /// No server could be reached.
    #[error("no NATS server reachable at {servers}: {detail}")]
    Unreachable {
        /// URLs tried.
        servers: String,
        /// Client's detail.
        detail: String,
    },
    /// Connected, but not to the system account.
    #[error("connected to {server}, but no server answers {PING_IDZ}: the user{account} is not in the system account. nats-insights needs a system-account user (see README, \"Accounts\")")]
    NotSystemAccount {
        /// Server connected to.
        server: String,
        /// `" (account X)"` when the server told us.
        account: String,
    },
    /// Connected, but the request got no answer.
    #[error("connected to {server}, but {PING_IDZ} got no reply within {timeout:?}: check that the user may publish to $SYS.REQ.SERVER.> and subscribe to its inbox")]
    NoReply {
        /// Server connected to.
        server: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The server refused a publish or subscription of the startup check.
    #[error("connected to {server}, but the server denied {action} {subject} to this user ({error}); allow it in the user's permissions (see deploy/insights-accounts.conf)")]
    Denied {
        /// Server connected to.
        server: String,
        /// `publish to` or `subscribe to`.
        action: &'static str,
        /// The subject denied.
        subject: String,
        /// The server's message.
        error: String,
    },
}

/// The latest permission violation the server reported on a connection, shared with the
/// connection's event callback (a denied request otherwise just times out).
#[derive(Debug, Clone, Default)]
pub struct Denials(Arc<Mutex<Option<Denial>>>);

/// One permission violation, parsed from the server's `-ERR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// `publish to` or `subscribe to`.
    pub action: &'static str,
    /// The subject (for a queue subscription, with the queue after a space).
    pub subject: String,
    /// The server's message as received.
    pub error: String,
}

impl Denials {
    /// The latest violation, if any.
    pub fn latest(&self) -> Option<Denial> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn record(&self, denial: Denial) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(denial);
    }
}

impl Denial {
    /// Parses `Permissions Violation for Publish to "X"` (or `Subscription to "X"`), in any case
    /// and with or without the quotes; `None` for every other server error.
    pub fn parse(error: &str) -> Option<Denial> {
        let lower = error.to_ascii_lowercase();
        let at = lower.find("permissions violation for ")?;
        let rest_lower = &lower[at + "permissions violation for ".len()..];
        let action = if rest_lower.starts_with("publish") {
            "publish to"
        } else if rest_lower.starts_with("subscription") {
            "subscribe to"
        } else {
            return None;
        };
        let rest = &error[error.len() - rest_lower.len()..];
        let subject = rest
            .split_once(" to ")
            .map(|(_, s)| s)
            .unwrap_or_default()
            .trim()
            .trim_matches(|c| c == '"' || c == '\'')
            .to_string();
        Some(Denial {
            action,
            subject,
            error: error.trim().to_string(),
        })
    }
}

/// Where nats-insights connects when neither a flag nor a context names a server.
pub const DEFAULT_SERVER: &str = "nats://127.0.0.1:4222";

/// The fields of a nats CLI context file this service understands (others are ignored).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Context {
    url: String,
    user: String,
    password: String,
    creds: String,
    nkey: String,
    token: String,
    cert: String,
    key: String,
    ca: String,
    nsc: String,
    inbox_prefix: String,
    tls_first: bool,
}

/// The context file `name` refers to: a path when it looks like one, else
/// `$XDG_CONFIG_HOME/nats/context/<name>.json` (default `~/.config`), as the nats CLI keeps them.
pub fn context_path(name: &str) -> PathBuf {
    if name.contains('/') || name.ends_with(".json") {
        return expand_home(name);
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from(".config"));
    config
        .join("nats")
        .join("context")
        .join(format!("{name}.json"))
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

fn non_empty(value: &str) -> Option<String> {
    Some(value.trim().to_string()).filter(|v| !v.is_empty())
}

fn load_context(name: &str) -> Result<Context, ConnectError> {
    let path = context_path(name);
    let text = std::fs::read_to_string(&path).map_err(|source| ConnectError::File {
        what: "nats context",
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| {
        ConnectError::Config(format!(
            "nats context {name} ({}) is not valid JSON: {e}",
            path.display()
        ))
    })
}

impl ConnectArgs {
    /// The server list as one string for messages.
    pub fn servers_display(&self) -> String {
        self.servers.join(",")
    }

    /// These flags with the context (if any) filled in where no flag or variable was given, and
    /// the default server when none is named. Credentials are taken as a whole: any of --user,
    /// --password, --creds, --nkey or --token replaces every credential of the context.
    pub fn resolved(&self) -> Result<ConnectArgs, ConnectError> {
        let mut out = self.clone();
        out.context = None;
        if let Some(name) = self.context.as_deref().filter(|n| !n.trim().is_empty()) {
            let ctx = load_context(name.trim())?;
            if out.servers.iter().all(|s| s.trim().is_empty()) {
                out.servers = ctx.url.split(',').filter_map(non_empty).collect::<Vec<_>>();
            }
            let explicit = self.user.is_some()
                || self.password.is_some()
                || self.creds.is_some()
                || self.nkey.is_some()
                || self.token.is_some();
            if !explicit {
                if non_empty(&ctx.nsc).is_some() {
                    return Err(ConnectError::Config(format!(
                        "nats context {name} uses nsc ({}), which nats-insights does not read: \
                         put the path of the user's .creds file in the context's creds instead",
                        ctx.nsc
                    )));
                }
                out.user = non_empty(&ctx.user);
                out.password = non_empty(&ctx.password);
                out.creds = non_empty(&ctx.creds).map(|p| expand_home(&p));
                out.nkey = non_empty(&ctx.nkey).map(|p| expand_home(&p));
                out.token = non_empty(&ctx.token);
            }
            let file = |flag: &Option<PathBuf>, ctx: &str| {
                flag.clone()
                    .or_else(|| non_empty(ctx).map(|p| expand_home(&p)))
            };
            out.tls_cert = file(&self.tls_cert, &ctx.cert);
            out.tls_key = file(&self.tls_key, &ctx.key);
            out.tls_ca = file(&self.tls_ca, &ctx.ca);
            out.inbox_prefix = self
                .inbox_prefix
                .clone()
                .or_else(|| non_empty(&ctx.inbox_prefix));
            if ctx.tls_first {
                return Err(ConnectError::Config(format!(
                    "nats context {name} asks for tls_first, which nats-insights does not support"
                )));
            }
        }
        out.servers = out
            .servers
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if out.servers.is_empty() {
            out.servers = vec![DEFAULT_SERVER.to_string()];
        }
        Ok(out)
    }

    /// Client options for these (resolved) flags.
    async fn options(&self) -> Result<ConnectOptions, ConnectError> {
        let methods = [
            self.user.is_some(),
            self.creds.is_some(),
            self.nkey.is_some(),
            self.token.is_some(),
        ]
        .iter()
        .filter(|m| **m)
        .count();
        if methods > 1 {
            return Err(ConnectError::Config(
                "use only one of --user, --creds, --nkey and --token".to_string(),
            ));
        }
        let mut options = ConnectOptions::new();
        if let Some(user) = &self.user {
            let password = self.password.clone().ok_or_else(|| {
                ConnectError::Config(format!("--user {user} needs --password (or NATS_PASSWORD)"))
            })?;
            options = options.user_and_password(user.clone(), password);
        } else if self.password.is_some() {
            return Err(ConnectError::Config(
                "--password needs --user (or NATS_USER)".to_string(),
            ));
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(path) = &self.nkey {
            options = options.nkey(read_nkey_seed(path)?);
        }
        if let Some(path) = &self.creds {
            options =
                options
                    .credentials_file(path)
                    .await
                    .map_err(|source| ConnectError::File {
                        what: "credentials",
                        path: path.clone(),
                        source,
                    })?;
        }
        options = self.tls_options(options)?;
        if let Some(prefix) = &self.inbox_prefix {
            let valid = !prefix.is_empty()
                && !prefix.ends_with('.')
                && !prefix.contains(['*', '>', ' ', '\t']);
            if !valid {
                return Err(ConnectError::Config(format!(
                    "--inbox-prefix {prefix:?}: use a subject without wildcards, spaces or a \
                     trailing dot (e.g. _INBOX_insights)"
                )));
            }
            options = options.custom_inbox_prefix(prefix);
        }
        Ok(options)
    }

    fn tls_options(&self, mut options: ConnectOptions) -> Result<ConnectOptions, ConnectError> {
        let readable = |what: &'static str, path: &PathBuf| {
            std::fs::File::open(path)
                .map(|_| ())
                .map_err(|source| ConnectError::File {
                    what,
                    path: path.clone(),
                    source,
                })
        };
        if let Some(ca) = &self.tls_ca {
            readable("TLS CA", ca)?;
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                readable("TLS certificate", cert)?;
                readable("TLS key", key)?;
                options = options
                    .add_client_certificate(cert.clone(), key.clone())
                    .require_tls(true);
            }
            (None, None) => {}
            _ => {
                return Err(ConnectError::Config(
                    "--tlscert and --tlskey go together (NATS_CERT and NATS_KEY)".to_string(),
                ))
            }
        }
        Ok(options)
    }

    /// Connects with a clear error on failure; once connected, reconnects forever and logs it.
    pub async fn connect(&self, connection_name: &str) -> Result<Client, ConnectError> {
        self.connect_watched(connection_name)
            .await
            .map(|(client, _)| client)
    }

    /// Like [`ConnectArgs::connect`], also returning where the connection records the
    /// permission violations the server reports (for [`verify_system_account`]).
    pub async fn connect_watched(
        &self,
        connection_name: &str,
    ) -> Result<(Client, Denials), ConnectError> {
        let args = self.resolved()?;
        let servers = args.servers_display();
        let label = connection_name.to_string();
        let denials = Denials::default();
        let recorder = denials.clone();
        let options = args
            .options()
            .await?
            .name(connection_name)
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .reconnect_to_server_callback(
                |servers, last| async move { another_server(&servers, &last) },
            )
            .event_callback(move |event| {
                let label = label.clone();
                let recorder = recorder.clone();
                async move { log_event(&label, &recorder, event) }
            });
        let urls: Vec<&str> = args.servers.iter().map(String::as_str).collect();
        let client = options.connect(urls).await.map_err(|e| {
            let detail = e.to_string();
            match e.kind() {
                ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                    ConnectError::Auth { servers }
                }
                ConnectErrorKind::ServerParse => {
                    ConnectError::Config(format!("invalid --server {servers}: {detail}"))
                }
                ConnectErrorKind::Tls => ConnectError::Unreachable {
                    servers,
                    detail: format!(
                        "{detail} (check --tlsca, --tlscert and --tlskey against the server's \
                         tls block)"
                    ),
                },
                _ => ConnectError::Unreachable { servers, detail },
            }
        })?;
        Ok((client, denials))
    }
}

/// The connections the engine observes through.
#[derive(Clone)]
pub struct Connections {
    /// System-account connection with failover: gather, events, publishing, the service.
    pub main: Client,
    /// One connection pinned to each configured server, for partition-aware observation (none
    /// when a single URL is configured: the main connection already asks that server).
    pub direct: Vec<Client>,
    /// Connection to the JetStream-enabled account that holds the state bucket, if configured.
    pub state: Option<Client>,
    /// Permission violations reported on the main connection.
    pub denied: Denials,
}

impl ConnectArgs {
    /// Opens the main connection (failing clearly) and, with several URLs, the pinned ones.
    pub async fn open(&self, connection_name: &str) -> Result<Connections, ConnectError> {
        let args = self.resolved()?;
        let (main, denied) = args.connect_watched(connection_name).await?;
        let direct = if args.servers.len() > 1 {
            args.connect_each(connection_name).await?
        } else {
            Vec::new()
        };
        Ok(Connections {
            main,
            direct,
            state: None,
            denied,
        })
    }

    /// One connection pinned to each `--server` URL (no discovered servers, no failover), for
    /// asking every reachable server for its own view: in a partition the system-account gather
    /// reaches only one side. Servers down at start are retried in the background.
    pub async fn connect_each(&self, connection_name: &str) -> Result<Vec<Client>, ConnectError> {
        let args = self.resolved()?;
        let mut clients = Vec::with_capacity(args.servers.len());
        for url in &args.servers {
            let label = format!("{connection_name} direct {url}");
            let options = args
                .options()
                .await?
                .name(&label)
                .connection_timeout(Duration::from_secs(5))
                .max_reconnects(None)
                .ignore_discovered_servers()
                .retry_on_initial_connect()
                .event_callback(move |event| {
                    let label = label.clone();
                    async move { log_direct_event(&label, event) }
                });
            let client = options
                .connect(url.as_str())
                .await
                .map_err(|e| ConnectError::Config(format!("invalid --server {url}: {e}")))?;
            clients.push(client);
        }
        Ok(clients)
    }
}

/// On reconnect, prefer a server other than the one just left (it died, entered lame duck, or was
/// found cut off from the meta group), the least failing first; `None` keeps the client's default.
fn another_server(
    servers: &[async_nats::Server],
    last: &async_nats::ServerInfo,
) -> Option<async_nats::ReconnectToServer> {
    // Never connected yet (the first connect): the client's own selection tries every URL.
    if last.port == 0 {
        return None;
    }
    let unspecified = matches!(last.host.as_str(), "" | "0.0.0.0" | "::" | "[::]");
    let is_last = |s: &async_nats::Server| {
        s.addr.port() == last.port && (unspecified || s.addr.host() == last.host)
    };
    let pick = servers
        .iter()
        .filter(|s| !is_last(s))
        .min_by_key(|s| s.failed_attempts)?;
    let backoff = Duration::from_millis(250 * pick.failed_attempts.min(8) as u64);
    Some(async_nats::ReconnectToServer {
        addr: pick.addr.clone(),
        delay: Some(backoff),
    })
}

/// Logs a server error; a permission violation as an error naming the denied subject.
fn log_server_error(connection: &str, error: &str) -> Option<Denial> {
    match Denial::parse(error) {
        Some(denial) => {
            tracing::error!(
                connection,
                subject = %denial.subject,
                "permission denied: the server does not let this user {} {}; allow it in the \
                 user's permissions (see deploy/insights-accounts.conf)",
                denial.action,
                denial.subject
            );
            Some(denial)
        }
        None => {
            tracing::warn!(connection, %error, "NATS server error");
            None
        }
    }
}

/// Direct links fail over to nothing, so their disconnects are expected during faults: debug only.
fn log_direct_event(connection: &str, event: Event) {
    match event {
        Event::ServerError(error) => {
            log_server_error(connection, &error.to_string());
        }
        other => tracing::debug!(connection, event = %other, "direct connection event"),
    }
}

fn log_event(connection: &str, denials: &Denials, event: Event) {
    match event {
        Event::Connected => tracing::info!(connection, "connected to NATS"),
        Event::Disconnected => {
            tracing::warn!(
                connection,
                "disconnected from NATS; reconnecting until a server answers"
            )
        }
        Event::ServerError(error) => {
            let text = error.to_string();
            if text
                .to_ascii_lowercase()
                .contains("authorization violation")
            {
                tracing::error!(connection, %error, "the server refused these credentials (revoked or changed?); still retrying, fix --user/--password, --creds, --nkey or --token");
            } else if let Some(denial) = log_server_error(connection, &text) {
                denials.record(denial);
            }
        }
        Event::LameDuckMode => tracing::warn!(
            connection,
            "server entered lame-duck mode; will move to another"
        ),
        other => tracing::debug!(connection, event = %other, "connection event"),
    }
}

/// Reads an nkey seed file as written by `nk -gen user`: the first line starting with `SU`.
pub fn read_nkey_seed(path: &Path) -> Result<String, ConnectError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConnectError::File {
        what: "nkey seed",
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("SU"))
        .map(str::to_string)
        .ok_or_else(|| {
            ConnectError::Config(format!(
                "{} holds no user nkey seed (a line starting with SU)",
                path.display()
            ))
        })
}

/// Proves the connection is in the system account by asking every server's identity (IDZ: a
/// small reply each, affordable with thousands of servers); names the account when it is not, and
/// the subject when the server denies the request, its reply subscription or the JSZ request the
/// polls send (`denied` is [`Connections::denied`] of this connection).
pub async fn verify_system_account(
    client: &Client,
    denied: &Denials,
    timeout: Duration,
) -> Result<(), ConnectError> {
    let server = client.server_info().server_name;
    let before = denied.latest();
    let new_denial = || denied.latest().filter(|d| Some(d) != before.as_ref());
    let as_error = |d: Denial, server: String| ConnectError::Denied {
        server,
        action: d.action,
        subject: d.subject,
        error: d.error,
    };
    // The poll's own request, to learn whether it is allowed: only servers that lead answer it,
    // to an inbox nobody listens on.
    let probe = client
        .publish_with_reply(
            PING_JSZ,
            client.new_inbox(),
            r#"{"leader_only":true}"#.into(),
        )
        .await;
    if let Err(error) = probe {
        tracing::debug!(%error, "cannot send the JSZ probe");
    }
    let request = client.request(PING_IDZ, "".into());
    tokio::pin!(request);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            reply = &mut request => match reply {
                Ok(_) => {
                    // A denial of the JSZ probe was sent before this reply; give its
                    // notification a moment to arrive.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return match new_denial() {
                        Some(denial) => Err(as_error(denial, server)),
                        None => Ok(()),
                    };
                }
                Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                    return Err(ConnectError::NotSystemAccount {
                        account: account_name(client)
                            .await
                            .map(|a| format!(" (account {a})"))
                            .unwrap_or_default(),
                        server,
                    });
                }
                Err(_) => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                if let Some(denial) = new_denial() {
                    return Err(as_error(denial, server));
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
        }
    }
    match new_denial() {
        Some(denial) => Err(as_error(denial, server)),
        None => Err(ConnectError::NoReply { server, timeout }),
    }
}

/// The account of this connection, from `$SYS.REQ.USER.INFO` (answered in every account).
async fn account_name(client: &Client) -> Option<String> {
    let reply = tokio::time::timeout(
        Duration::from_secs(2),
        client.request("$SYS.REQ.USER.INFO", "".into()),
    )
    .await
    .ok()?
    .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
    value["data"]["account"].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_permission_violation_names_the_action_and_subject() {
        let d = Denial::parse(
            "nats: Permissions Violation for Publish to \"$SYS.REQ.SERVER.PING.JSZ\"",
        )
        .expect("parsed");
        assert_eq!(d.action, "publish to");
        assert_eq!(d.subject, "$SYS.REQ.SERVER.PING.JSZ");
        let d = Denial::parse("permissions violation for subscription to \"_INBOX.abc.*\"")
            .expect("parsed");
        assert_eq!(d.action, "subscribe to");
        assert_eq!(d.subject, "_INBOX.abc.*");
        assert_eq!(Denial::parse("nats: maximum payload exceeded"), None);
    }

    #[test]
    fn a_context_fills_what_no_flag_gives_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("nats-insights-ctx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("prod.json");
        std::fs::write(
            &path,
            r#"{"description":"x","url":"nats://a:4222,nats://b:4222","user":"insights",
               "password":"p","ca":"/etc/ca.pem","cert":"/etc/c.pem","key":"/etc/k.pem",
               "inbox_prefix":"_INBOX_insights","jetstream_domain":""}"#,
        )
        .expect("write");
        let from_context = ConnectArgs {
            context: Some(path.display().to_string()),
            ..ConnectArgs::default()
        }
        .resolved()
        .expect("resolves");
        assert_eq!(from_context.servers, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(from_context.user.as_deref(), Some("insights"));
        assert_eq!(from_context.tls_ca, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            from_context.inbox_prefix.as_deref(),
            Some("_INBOX_insights")
        );

        // Any explicit credential replaces the context's credentials as a whole.
        let overridden = ConnectArgs {
            servers: vec!["nats://c:4222".to_string()],
            token: Some("t".to_string()),
            tls_ca: Some(PathBuf::from("/other/ca.pem")),
            context: Some(path.display().to_string()),
            ..ConnectArgs::default()
        }
        .resolved()
        .expect("resolves");
        assert_eq!(overridden.servers, ["nats://c:4222"]);
        assert_eq!(overridden.user, None);
        assert_eq!(overridden.password, None);
        assert_eq!(overridden.token.as_deref(), Some("t"));
        assert_eq!(overridden.tls_ca, Some(PathBuf::from("/other/ca.pem")));
        assert_eq!(overridden.tls_cert, Some(PathBuf::from("/etc/c.pem")));

        let missing = ConnectArgs {
            context: Some(dir.join("nope.json").display().to_string()),
            ..ConnectArgs::default()
        }
        .resolved();
        assert!(matches!(missing, Err(ConnectError::File { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_server_anywhere_means_localhost() {
        let args = ConnectArgs::default().resolved().expect("resolves");
        assert_eq!(args.servers, [DEFAULT_SERVER]);
    }

    #[test]
    fn context_names_live_where_the_nats_cli_keeps_them() {
        assert!(context_path("prod").ends_with("nats/context/prod.json"));
        assert_eq!(context_path("/x/y.json"), PathBuf::from("/x/y.json"));
    }
}
