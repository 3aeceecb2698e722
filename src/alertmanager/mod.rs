//! Publish, second sink: the findings as alerts on Prometheus Alertmanager's API v2
//! (`--alertmanager-url`). This file holds the flags and the targets they name; which alerts
//! the status stands for and when a target is due a send are pure ([`crate::alerts`]);
//! `sender` is the I/O edge that posts them.

pub mod sender;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::connect::redact_url;

/// Path of the alerts endpoint, appended to each `--alertmanager-url`.
pub const ALERTS_PATH: &str = "/api/v2/alerts";

/// Flags of `run` for sending findings to Alertmanager.
#[derive(Clone, Default, Args)]
pub struct AlertmanagerArgs {
    /// Send every finding as an alert to this Alertmanager (its base URL, e.g.
    /// `http://alertmanager:9093`; repeat the flag, or separate with commas, for each member of
    /// an Alertmanager cluster: each gets every alert). `user:password@` in the URL is basic auth.
    #[arg(
        long = "alertmanager-url",
        env = "INSIGHTS_ALERTMANAGER_URL",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub urls: Vec<String>,
    /// Basic auth user for every --alertmanager-url (a URL's own `user:password@` wins).
    #[arg(long, env = "INSIGHTS_ALERTMANAGER_USER", value_name = "USER")]
    pub alertmanager_user: Option<String>,
    /// Basic auth password (with --alertmanager-user).
    #[arg(
        long,
        env = "INSIGHTS_ALERTMANAGER_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub alertmanager_password: Option<String>,
    /// Basic auth password read from this file (trailing newline ignored), instead of
    /// --alertmanager-password.
    #[arg(
        long,
        env = "INSIGHTS_ALERTMANAGER_PASSWORD_FILE",
        value_name = "FILE",
        conflicts_with = "alertmanager_password"
    )]
    pub alertmanager_password_file: Option<PathBuf>,
    /// PEM file of the CA(s) that sign the Alertmanager's certificate (https URLs; the system's
    /// roots are trusted too).
    #[arg(long, env = "INSIGHTS_ALERTMANAGER_CA", value_name = "FILE")]
    pub alertmanager_ca: Option<PathBuf>,
    /// PEM client certificate, for an Alertmanager that asks for one (with --alertmanager-key).
    #[arg(
        long,
        env = "INSIGHTS_ALERTMANAGER_CERT",
        value_name = "FILE",
        requires = "alertmanager_key"
    )]
    pub alertmanager_cert: Option<PathBuf>,
    /// PEM private key of --alertmanager-cert.
    #[arg(
        long,
        env = "INSIGHTS_ALERTMANAGER_KEY",
        value_name = "FILE",
        requires = "alertmanager_cert"
    )]
    pub alertmanager_key: Option<PathBuf>,
    /// How often active alerts are sent again. Alertmanager resolves an alert it has not heard
    /// of for its `resolve_timeout` (5m by default): keep this well below that.
    #[arg(long, env = "INSIGHTS_ALERTMANAGER_RESEND", default_value = "1m", value_parser = humantime::parse_duration)]
    pub alertmanager_resend: Duration,
    /// How long one send may take before it counts as failed (and is retried with backoff).
    #[arg(long, env = "INSIGHTS_ALERTMANAGER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub alertmanager_timeout: Duration,
}

impl std::fmt::Debug for AlertmanagerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertmanagerArgs")
            .field(
                "urls",
                &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>(),
            )
            .field("alertmanager_user", &self.alertmanager_user)
            .field("alertmanager_ca", &self.alertmanager_ca)
            .field("alertmanager_cert", &self.alertmanager_cert)
            .field("alertmanager_resend", &self.alertmanager_resend)
            .finish_non_exhaustive()
    }
}

/// One Alertmanager to send to.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// The alerts endpoint (`.../api/v2/alerts`), without credentials.
    pub endpoint: String,
    /// Basic auth user and password.
    pub basic_auth: Option<(String, String)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("endpoint", &self.endpoint)
            .field("user", &self.basic_auth.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// What the sender needs: the targets and how they are reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertmanagerSettings {
    /// Every Alertmanager; each gets every alert.
    pub targets: Vec<Target>,
    /// CA certificates (PEM) trusted besides the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (PEM, concatenated), when the Alertmanager asks for one.
    pub identity_pem: Option<Vec<u8>>,
    /// Active alerts are sent again this often.
    pub resend: Duration,
    /// Longest one send may take.
    pub timeout: Duration,
}

impl AlertmanagerArgs {
    /// The settings these flags describe; `None` without `--alertmanager-url`. Errors are one
    /// line naming the flag.
    pub fn settings(&self) -> Result<Option<AlertmanagerSettings>, String> {
        let urls: Vec<&str> = self
            .urls
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Ok(None);
        }
        if self.alertmanager_resend < Duration::from_secs(1) {
            return Err("--alertmanager-resend must be at least 1s".to_string());
        }
        if self.alertmanager_resend >= Duration::from_secs(5 * 60) {
            tracing::warn!(
                resend = %humantime::format_duration(self.alertmanager_resend),
                "--alertmanager-resend is not below Alertmanager's default resolve_timeout (5m): active alerts may resolve between sends"
            );
        }
        if self.alertmanager_timeout.is_zero() {
            return Err("--alertmanager-timeout must be positive".to_string());
        }
        let password = match (
            &self.alertmanager_password,
            &self.alertmanager_password_file,
        ) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        format!(
                            "cannot read --alertmanager-password-file {}: {e}",
                            path.display()
                        )
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            (None, None) => None,
        };
        if password.is_some() && self.alertmanager_user.is_none() {
            return Err("--alertmanager-password needs --alertmanager-user".to_string());
        }
        let shared = self
            .alertmanager_user
            .clone()
            .map(|user| (user, password.unwrap_or_default()));
        let targets = urls
            .iter()
            .map(|url| parse_target(url, shared.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, target) in targets.iter().enumerate() {
            if targets[..i].iter().any(|t| t.endpoint == target.endpoint) {
                return Err(format!(
                    "--alertmanager-url {} is given twice",
                    target.endpoint
                ));
            }
        }
        let read = |flag: &str, path: &Option<PathBuf>| -> Result<Option<Vec<u8>>, String> {
            path.as_ref()
                .map(|p| {
                    std::fs::read(p).map_err(|e| {
                        format!("cannot read --alertmanager-{flag} {}: {e}", p.display())
                    })
                })
                .transpose()
        };
        let ca_pem = read("ca", &self.alertmanager_ca)?;
        let identity_pem = match (
            read("cert", &self.alertmanager_cert)?,
            read("key", &self.alertmanager_key)?,
        ) {
            (Some(mut cert), Some(key)) => {
                cert.push(b'\n');
                cert.extend_from_slice(&key);
                Some(cert)
            }
            _ => None,
        };
        let settings = AlertmanagerSettings {
            targets,
            ca_pem,
            identity_pem,
            resend: self.alertmanager_resend,
            timeout: self.alertmanager_timeout,
        };
        // Certificates that do not parse are a start-up error, not a failure at the first send.
        sender::client(&settings)?;
        Ok(Some(settings))
    }
}

/// Parses one `--alertmanager-url`: http or https, credentials taken out of it, the alerts path
/// appended unless it is there already.
pub fn parse_target(url: &str, shared: Option<(String, String)>) -> Result<Target, String> {
    let mut parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("--alertmanager-url {}: {e}", redact_url(url)))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "--alertmanager-url {}: the scheme must be http or https",
            redact_url(url)
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("--alertmanager-url {}: no host", redact_url(url)));
    }
    let own = (!parsed.username().is_empty()).then(|| {
        (
            percent_decode(parsed.username()),
            percent_decode(parsed.password().unwrap_or_default()),
        )
    });
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_query(None);
    parsed.set_fragment(None);
    let base = parsed.as_str().trim_end_matches('/').to_string();
    let endpoint = if base.ends_with(ALERTS_PATH) {
        base
    } else {
        format!("{base}{ALERTS_PATH}")
    };
    Ok(Target {
        endpoint,
        basic_auth: own.or(shared),
    })
}

/// `%XX` sequences of a URL's user info, decoded.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_the_alerts_path_and_give_up_their_credentials() {
        let t = parse_target("http://am:9093", None).expect("valid");
        assert_eq!(t.endpoint, "http://am:9093/api/v2/alerts");
        assert_eq!(t.basic_auth, None);
        let t = parse_target("https://u%40x:p%3Aw@am.example/prefix/", None).expect("valid");
        assert_eq!(t.endpoint, "https://am.example/prefix/api/v2/alerts");
        assert_eq!(t.basic_auth, Some(("u@x".to_string(), "p:w".to_string())));
        let shared = Some(("ops".to_string(), "s".to_string()));
        let t = parse_target("http://am:9093/api/v2/alerts", shared.clone()).expect("valid");
        assert_eq!(t.endpoint, "http://am:9093/api/v2/alerts");
        assert_eq!(t.basic_auth, shared);
        assert!(parse_target("ftp://am", None).is_err());
        assert!(parse_target("am:9093", None).is_err());
        assert!(!redact_url("http://u:secret@am:9093").contains("secret"));
    }
}
