//! Connections: a nats CLI context (`~/.config/nats/context/NAME.json`) read into the flags
//! where no flag or variable was given.

use std::path::PathBuf;

use super::{ConnectArgs, ConnectError, DEFAULT_SERVER};

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
    /// These flags with the context (if any) filled in where no flag or variable was given, and
    /// the default server when none is named. Credentials are taken as a whole: any of --user,
    /// --password, --creds, --nkey or --token replaces every credential of the context; the
    /// credentials of a URL (`nats://user:password@host`) win over all of them and leave the URL.
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
        out.take_url_credentials()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
