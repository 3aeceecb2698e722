//! Connections: credentials inside server URLs (`nats://user:password@host`, `nats://token@host`),
//! taken out of the URL as the nats CLI takes them, and the one redaction every shown URL
//! goes through.
//!
//! async-nats ignores a URL's user info (it authenticates only with its options), so the
//! credentials are moved into the connection flags before connecting, and the URLs handed to the
//! client, logged, used as connection names or shown in STATUS carry none.

use super::{ConnectArgs, ConnectError};

/// The credentials a URL carried, percent-decoded.
#[derive(Clone, PartialEq, Eq)]
pub enum UrlCredentials {
    /// `user:password@` (the password may be empty: `user:@`).
    User {
        /// The user name.
        user: String,
        /// Its password.
        password: String,
    },
    /// `token@`: user info without a `:` is a token, as in nats.go.
    Token(String),
}

impl std::fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlCredentials::User { user, .. } => write!(f, "User({user:?}, ***)"),
            UrlCredentials::Token(_) => write!(f, "Token(***)"),
        }
    }
}

/// Splits a URL (with or without a scheme) into `(prefix, user info, rest)`: the prefix is the
/// scheme with `://` (or empty), the user info everything up to the last `@` (none without one),
/// the rest the host, port and anything after. The last `@` counts, so a password holding an
/// unencoded `@` or `/` is still taken as a whole and never shown.
fn parts(url: &str) -> (&str, Option<&str>, &str) {
    let (prefix, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    match rest.rsplit_once('@') {
        Some((info, host)) => (prefix, Some(info), host),
        None => (prefix, None, rest),
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The URL without its user info, and the credentials it held (`None` without user info, or
/// with an empty one: `nats://@host`).
pub fn split_credentials(url: &str) -> (String, Option<UrlCredentials>) {
    let (prefix, info, rest) = parts(url);
    let clean = format!("{prefix}{rest}");
    let credentials = info
        .filter(|i| !i.is_empty())
        .map(|info| match info.split_once(':') {
            Some((user, password)) => UrlCredentials::User {
                user: decode(user),
                password: decode(password),
            },
            None => UrlCredentials::Token(decode(info)),
        });
    (clean, credentials)
}

/// A URL as it may be shown (logs, errors, connection names, STATUS, the page, metrics): a
/// password replaced by `***` (`nats://sys:***@host:4222`), a token too (`nats://***@host`).
/// Works on any text, parsable or not; several comma-separated URLs are redacted each.
pub fn redact_url(url: &str) -> String {
    if url.contains(',') {
        return url.split(',').map(redact_url).collect::<Vec<_>>().join(",");
    }
    match parts(url) {
        (prefix, Some(info), rest) if !info.is_empty() => match info.split_once(':') {
            Some((user, _)) => format!("{prefix}{user}:***@{rest}"),
            None => format!("{prefix}***@{rest}"),
        },
        (prefix, _, rest) => format!("{prefix}{rest}"),
    }
}

impl ConnectArgs {
    /// Takes the credentials out of the server URLs into the flags, leaving URLs without user
    /// info. As in nats.go and the nats CLI, a URL's credentials win over --user/--password and
    /// --token (and a context's); they cannot be combined with --creds or --nkey. async-nats
    /// authenticates every server alike, so the URLs that carry credentials must carry the same
    /// ones, and the others use them too (nats.go gives the servers it discovers the user info
    /// of the URL it connected to).
    pub(super) fn take_url_credentials(&mut self) -> Result<(), ConnectError> {
        let mut found: Option<UrlCredentials> = None;
        let mut clean = Vec::with_capacity(self.servers.len());
        for url in &self.servers {
            let (url, credentials) = split_credentials(url);
            clean.push(url);
            match (&found, credentials) {
                (_, None) => {}
                (None, Some(c)) => found = Some(c),
                (Some(a), Some(b)) if *a == b => {}
                (Some(_), Some(_)) => {
                    return Err(ConnectError::Config(
                        "the server URLs carry different credentials: nats-insights uses one \
                         user for every server of a connection (put it in each URL, or in \
                         --user/--password or --token)"
                            .to_string(),
                    ))
                }
            }
        }
        self.servers = clean;
        let Some(credentials) = found else {
            return Ok(());
        };
        if self.creds.is_some() || self.nkey.is_some() {
            return Err(ConnectError::Config(
                "credentials in a server URL cannot be combined with --creds or --nkey: use one"
                    .to_string(),
            ));
        }
        if self.user.is_some() || self.password.is_some() || self.token.is_some() {
            tracing::warn!(
                "the server URL carries credentials: they win over --user/--password/--token \
                 (as in the nats CLI)"
            );
        }
        (self.user, self.password, self.token) = match credentials {
            UrlCredentials::User { user, password } => (Some(user), Some(password), None),
            UrlCredentials::Token(token) => (None, None, Some(token)),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(user: &str, password: &str) -> Option<UrlCredentials> {
        Some(UrlCredentials::User {
            user: user.to_string(),
            password: password.to_string(),
        })
    }

    #[test]
    fn user_info_is_taken_out_as_the_nats_cli_takes_it() {
        assert_eq!(
            split_credentials("nats://sys:s3cret@n1:4222"),
            ("nats://n1:4222".to_string(), user("sys", "s3cret"))
        );
        assert_eq!(
            split_credentials("tls://tok3n@n1:4222"),
            (
                "tls://n1:4222".to_string(),
                Some(UrlCredentials::Token("tok3n".to_string()))
            )
        );
        // Percent-encoded characters are decoded; an unencoded `@` in the password still belongs
        // to it (the last `@` ends the user info).
        assert_eq!(
            split_credentials("nats://us%40r:p%3A%2F%20w@n1:4222").1,
            user("us@r", "p:/ w")
        );
        assert_eq!(
            split_credentials("nats://u:p@ss@n1:4222"),
            ("nats://n1:4222".to_string(), user("u", "p@ss"))
        );
        // Only the first `:` separates the user from the password.
        assert_eq!(split_credentials("nats://u:a:b@h").1, user("u", "a:b"));
        assert_eq!(split_credentials("nats://u:@h").1, user("u", ""));
        // No scheme, as async-nats accepts it.
        assert_eq!(
            split_credentials("u:p@127.0.0.1:4222"),
            ("127.0.0.1:4222".to_string(), user("u", "p"))
        );
        // IPv6 hosts keep their brackets.
        assert_eq!(
            split_credentials("nats://u:p@[::1]:4222"),
            ("nats://[::1]:4222".to_string(), user("u", "p"))
        );
        assert_eq!(
            split_credentials("nats://[fd00::1]:4222"),
            ("nats://[fd00::1]:4222".to_string(), None)
        );
        assert_eq!(
            split_credentials("nats://n1:4222"),
            ("nats://n1:4222".to_string(), None)
        );
        assert_eq!(split_credentials("nats://@n1").1, None);
    }

    #[test]
    fn a_shown_url_never_carries_a_secret() {
        assert_eq!(
            redact_url("nats://sys:s3cret@n1:4222"),
            "nats://sys:***@n1:4222"
        );
        assert_eq!(redact_url("nats://tok3n@n1:4222"), "nats://***@n1:4222");
        assert_eq!(redact_url("u:p%40ss@[::1]:4222"), "u:***@[::1]:4222");
        assert_eq!(redact_url("nats://u:p@ss/x@h"), "nats://u:***@h");
        assert_eq!(
            redact_url("nats://a:1@h1:4222,nats://h2:4222,t@h3"),
            "nats://a:***@h1:4222,nats://h2:4222,***@h3"
        );
        assert_eq!(redact_url("nats://n1:4222"), "nats://n1:4222");
        assert_eq!(
            redact_url("http://am:p@alertmanager:9093/x"),
            "http://am:***@alertmanager:9093/x"
        );
        for url in ["nats://sys:s3cret@h", "s3cret@h", "x://u:s3cret@@h"] {
            assert!(!redact_url(url).contains("s3cret"), "{url}");
        }
        let debug = format!("{:?}", split_credentials("nats://u:s3cret@h").1);
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    fn resolve(servers: &[&str], f: impl FnOnce(&mut ConnectArgs)) -> Result<ConnectArgs, String> {
        let mut args = ConnectArgs {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            ..ConnectArgs::default()
        };
        f(&mut args);
        args.resolved().map_err(|e| e.to_string())
    }

    #[test]
    fn url_credentials_become_the_connection_credentials_and_win_over_flags() {
        let args = resolve(&["nats://sys:p%40ss@n1:4222", "nats://n2:4222"], |_| {}).unwrap();
        assert_eq!(args.servers, ["nats://n1:4222", "nats://n2:4222"]);
        assert_eq!(
            (args.user.as_deref(), args.password.as_deref()),
            (Some("sys"), Some("p@ss"))
        );
        let args = resolve(&["tok3n@n1:4222"], |a| {
            a.user = Some("flag".to_string());
            a.password = Some("flag".to_string());
        })
        .unwrap();
        assert_eq!(args.servers, ["n1:4222"]);
        assert_eq!(args.token.as_deref(), Some("tok3n"));
        assert_eq!((args.user, args.password), (None, None));
        // The same credentials in every URL are one set; different ones cannot be honoured.
        let same = resolve(&["nats://u:p@n1", "nats://u:p@n2"], |_| {}).unwrap();
        assert_eq!(same.user.as_deref(), Some("u"));
        let different = resolve(&["nats://u:p@n1", "nats://u:q@n2"], |_| {}).unwrap_err();
        assert!(different.contains("different credentials"), "{different}");
        assert!(
            !different.contains("p@n1") && !different.contains(":q"),
            "{different}"
        );
        let with_creds = resolve(&["nats://u:p@n1"], |a| {
            a.creds = Some("/x.creds".into());
        })
        .unwrap_err();
        assert!(with_creds.contains("--creds"), "{with_creds}");
        // Without user info nothing changes.
        let plain = resolve(&["nats://n1:4222"], |a| a.token = Some("t".to_string())).unwrap();
        assert_eq!(plain.token.as_deref(), Some("t"));
    }

    #[test]
    fn a_context_url_gives_its_credentials_too() {
        let dir = std::env::temp_dir().join(format!("nats-insights-url-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("ctx.json");
        std::fs::write(
            &path,
            r#"{"url":"nats://a:b%2Fc@n1:4222","user":"other","password":"x"}"#,
        )
        .expect("write");
        let args = resolve(&[], |a| a.context = Some(path.display().to_string())).unwrap();
        assert_eq!(args.servers, ["nats://n1:4222"]);
        assert_eq!(
            (args.user.as_deref(), args.password.as_deref()),
            (Some("a"), Some("b/c"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
