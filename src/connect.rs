//! Edge: connections to NATS. Builds client options from the connection flags, turns startup
//! failures into one clear sentence, and proves the user is in the system account.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event, RequestErrorKind};
use clap::Args;

use crate::observe::gather::PING_JSZ;

/// Connection flags shared by every command.
#[derive(Debug, Clone, Args, Default)]
pub struct ConnectArgs {
    /// NATS server URLs of the system account, comma-separated or repeated.
    #[arg(
        long = "server",
        short = 's',
        env = "NATS_URL",
        value_delimiter = ',',
        default_value = "nats://127.0.0.1:4222"
    )]
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
}

/// Where finding state is kept: a JetStream-enabled account (JetStream is never enabled in the
/// system account), usually on the same cluster.
#[derive(Debug, Clone, Args, Default)]
pub struct StateArgs {
    /// NATS URLs of a JetStream-enabled account holding the state bucket, comma-separated.
    /// Without it state lives in memory: a restart forgets active findings and the flap window.
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
        if self.servers.iter().all(|s| s.trim().is_empty()) {
            return None;
        }
        Some(ConnectArgs {
            servers: self.servers.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            creds: self.creds.clone(),
            nkey: self.nkey.clone(),
            token: self.token.clone(),
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
    #[error("connected to {server}, but no server answers {PING_JSZ}: the user{account} is not in the system account. nats-insights needs a system-account user (see README, \"Accounts\")")]
    NotSystemAccount {
        /// Server connected to.
        server: String,
        /// `" (account X)"` when the server told us.
        account: String,
    },
    /// Connected, but the request got no answer.
    #[error("connected to {server}, but {PING_JSZ} got no reply within {timeout:?}: check that the user may publish to $SYS.REQ.SERVER.> and subscribe to its inbox")]
    NoReply {
        /// Server connected to.
        server: String,
        /// How long we waited.
        timeout: Duration,
    },
}

impl ConnectArgs {
    /// The server list as one string for messages.
    pub fn servers_display(&self) -> String {
        self.servers.join(",")
    }

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
        Ok(options)
    }

    /// Connects with a clear error on failure; once connected, reconnects forever and logs it.
    pub async fn connect(&self, connection_name: &str) -> Result<Client, ConnectError> {
        let servers = self.servers_display();
        if self.servers.iter().all(|s| s.trim().is_empty()) {
            return Err(ConnectError::Config("--server is empty".to_string()));
        }
        let label = connection_name.to_string();
        let options = self
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
                async move { log_event(&label, event) }
            });
        let urls: Vec<&str> = self
            .servers
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        options.connect(urls).await.map_err(|e| {
            let detail = e.to_string();
            match e.kind() {
                ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                    ConnectError::Auth { servers }
                }
                ConnectErrorKind::ServerParse => {
                    ConnectError::Config(format!("invalid --server {servers}: {detail}"))
                }
                _ => ConnectError::Unreachable { servers, detail },
            }
        })
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
}

impl ConnectArgs {
    /// Opens the main connection (failing clearly) and, with several URLs, the pinned ones.
    pub async fn open(&self, connection_name: &str) -> Result<Connections, ConnectError> {
        let main = self.connect(connection_name).await?;
        let direct = if self.servers.len() > 1 {
            self.connect_each(connection_name).await?
        } else {
            Vec::new()
        };
        Ok(Connections {
            main,
            direct,
            state: None,
        })
    }

    /// One connection pinned to each `--server` URL (no discovered servers, no failover), for
    /// asking every reachable server for its own view: in a partition the system-account gather
    /// reaches only one side. Servers down at start are retried in the background.
    pub async fn connect_each(&self, connection_name: &str) -> Result<Vec<Client>, ConnectError> {
        let urls: Vec<String> = self
            .servers
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let mut clients = Vec::with_capacity(urls.len());
        for url in urls {
            let label = format!("{connection_name} direct {url}");
            let options = self
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

/// Direct links fail over to nothing, so their disconnects are expected during faults: debug only.
fn log_direct_event(connection: &str, event: Event) {
    match event {
        Event::ServerError(error) => tracing::warn!(connection, %error, "NATS server error"),
        other => tracing::debug!(connection, event = %other, "direct connection event"),
    }
}

fn log_event(connection: &str, event: Event) {
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
            if text.to_ascii_lowercase().contains("authorization") {
                tracing::error!(connection, %error, "the server refused these credentials (revoked or changed?); still retrying, fix --user/--password, --creds, --nkey or --token");
            } else {
                tracing::warn!(connection, %error, "NATS server error");
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

/// Proves the connection is in the system account by asking JSZ; names the account when it is not.
pub async fn verify_system_account(client: &Client, timeout: Duration) -> Result<(), ConnectError> {
    let server = client.server_info().server_name;
    let request = client.request(PING_JSZ, "{}".into());
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => {
            Err(ConnectError::NotSystemAccount {
                account: account_name(client)
                    .await
                    .map(|a| format!(" (account {a})"))
                    .unwrap_or_default(),
                server,
            })
        }
        _ => Err(ConnectError::NoReply { server, timeout }),
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
