//! Connections: authentication (user and password, token, nkey, credentials) and TLS options
//! built from the flags.

use std::path::{Path, PathBuf};

use async_nats::ConnectOptions;

use super::{ConnectArgs, ConnectError};

impl ConnectArgs {
    /// Client options for these (resolved) flags.
    pub(super) async fn options(&self) -> Result<ConnectOptions, ConnectError> {
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
