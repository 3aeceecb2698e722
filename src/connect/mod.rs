//! Edge: connections to NATS. Builds client options from the connection flags (or a nats CLI
//! context), turns startup failures into one clear sentence, proves the user is in the system
//! account, and names the subject whenever the server denies one.
//!
//! - `context`: a nats CLI context read into the flags.
//! - `options`: authentication and TLS options built from the flags.
//! - `error`: the failures, worded for an operator, and the permission violations a connection
//!   reported.
//! - `events`: what each connection logs, and where it reconnects.
//! - `links`: the pinned links' drops, reported to the engine.
//! - `discovery`: a pinned link to every meta member, found when not given.
//! - `system`: the proof that the user is in the system account.
//! - `url`: credentials in server URLs, and the redaction of every URL shown.

pub mod attached;
mod context;
pub mod discovery;
mod error;
mod events;
mod links;
mod options;
mod system;
mod url;

use std::path::PathBuf;
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind};
use clap::Args;

pub use context::context_path;
pub use discovery::Links;
pub use error::{ConnectError, Denial, Denials};
pub use links::LinkDrops;
pub use nats_insights_core::status::LinkHealth;
pub use options::read_nkey_seed;
pub use system::verify_system_account;
pub use url::{redact_url, split_credentials, UrlCredentials};

use events::{log_direct_event, log_event, ReconnectChoice};

/// One connection attempt's limit (see the timer's doc).
const CONNECT_TIMEOUT: Duration = crate::timing::CONNECT;

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
    pub fn settings(&self) -> Result<StoreSettings, ConnectError> {
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
        Ok(StoreSettings {
            bucket: self.bucket.clone(),
            replicas: self.bucket_replicas,
            timeout: self.state_timeout,
            // Set by the engine, which knows the instance.
            instance: String::new(),
        })
    }
}

/// Where the bucket lives and how it is made.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Bucket name.
    pub bucket: String,
    /// Replicas when creating it (capped at the cluster size).
    pub replicas: usize,
    /// Longest a KV operation may take before the store counts as unavailable.
    pub timeout: Duration,
    /// This instance's id, written with every record.
    pub instance: String,
}

/// True when the server the client is attached to answers a request within `wait`, proving it
/// processed everything the client sent before. `Client::flush` is no such proof: it returns once
/// the bytes are in the socket, which a stopped (SIGSTOP) or cut-off server still accepts, and
/// delivers them whenever it wakes. The request is the `$SRV.PING` of the service's own micro
/// service (a subject the service may publish anyway); "no responders" is an answer too.
pub async fn round_trip(client: &Client, wait: std::time::Duration) -> bool {
    let subject = format!("$SRV.PING.{}", crate::wire::SERVICE_NAME);
    match tokio::time::timeout(wait, client.request(subject, "".into())).await {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => error.kind() == async_nats::RequestErrorKind::NoResponders,
        Err(_) => false,
    }
}

/// Where nats-insights connects when neither a flag nor a context names a server.
pub const DEFAULT_SERVER: &str = "nats://127.0.0.1:4222";

impl ConnectArgs {
    /// The server list as one string for messages.
    pub fn servers_display(&self) -> String {
        self.servers.join(",")
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
        let choice = std::sync::Arc::new(std::sync::Mutex::new(ReconnectChoice::default()));
        let options = args
            .options()
            .await?
            .name(connection_name)
            .connection_timeout(CONNECT_TIMEOUT)
            .max_reconnects(None)
            .reconnect_to_server_callback(move |servers, last| {
                let choice = choice.clone();
                async move {
                    match choice.lock() {
                        Ok(mut choice) => choice.pick(&servers, &last),
                        Err(_) => None,
                    }
                }
            })
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
    /// when a single URL is configured: discovery then links every member, see `opener`).
    pub direct: Vec<Client>,
    /// Where the pinned connections report that they dropped (by index in `direct`).
    pub drops: LinkDrops,
    /// The URLs of `direct`, in order.
    pub direct_urls: Vec<String>,
    /// Opens pinned links to the meta members that `direct` does not reach (see `discovery`).
    pub opener: discovery::Opener,
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
        let drops = LinkDrops::default();
        let direct = if args.servers.len() > 1 {
            args.connect_pinned(connection_name, &drops).await?
        } else {
            Vec::new()
        };
        let direct_urls = match direct.is_empty() {
            true => Vec::new(),
            false => args.servers.clone(),
        };
        let opener = discovery::Opener::new(&args, connection_name, &drops, direct.len());
        Ok(Connections {
            main,
            direct,
            drops,
            direct_urls,
            opener,
            state: None,
            denied,
        })
    }

    /// One connection pinned to each `--server` URL (no discovered servers, no failover), for
    /// asking every reachable server for its own view: in a partition the system-account gather
    /// reaches only one side. Servers down at start are retried in the background.
    pub async fn connect_each(&self, connection_name: &str) -> Result<Vec<Client>, ConnectError> {
        self.connect_pinned(connection_name, &LinkDrops::default())
            .await
    }

    /// [`ConnectArgs::connect_each`], each connection reporting its drops to `drops`.
    async fn connect_pinned(
        &self,
        connection_name: &str,
        drops: &LinkDrops,
    ) -> Result<Vec<Client>, ConnectError> {
        let args = self.resolved()?;
        let mut clients = Vec::with_capacity(args.servers.len());
        for (link, url) in args.servers.iter().enumerate() {
            let label = format!("{connection_name} direct {url}");
            let drops = drops.clone();
            let options = args
                .options()
                .await?
                .name(&label)
                .connection_timeout(CONNECT_TIMEOUT)
                .max_reconnects(None)
                .ignore_discovered_servers()
                .retry_on_initial_connect()
                .event_callback(move |event| {
                    let label = label.clone();
                    let drops = drops.clone();
                    async move { log_direct_event(&label, link, &drops, event) }
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
