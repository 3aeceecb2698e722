//! Connections: why connecting failed, each worded for an operator, and the permission
//! violations the server reported on a connection.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nats_insights_core::observe::plan::PING_IDZ;

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

    pub(super) fn record(&self, denial: Denial) {
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
}
