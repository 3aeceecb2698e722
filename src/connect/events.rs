//! Connections: what each connection logs (a permission violation names the subject it denied),
//! which server a reconnect prefers, and the pinned links' drops reported to the engine.

use std::time::Duration;

use async_nats::Event;

use super::{Denial, Denials, LinkDrops};

/// On reconnect, prefer a server other than the one just left (it died, entered lame duck, or was
/// found cut off from the meta group), the least failing first; the one left again once every
/// other failed more often than it (they are down too: it may be the only one up, e.g. after a
/// move off a server that was fine). `None` keeps the client's default.
pub(super) fn another_server(
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
    if servers.iter().all(is_last) {
        return None;
    }
    let pick = servers
        .iter()
        .min_by_key(|s| (s.failed_attempts, is_last(s)))?;
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
/// A disconnect of pinned link `link` is reported to `drops`: the engine polls at once.
pub(super) fn log_direct_event(connection: &str, link: usize, drops: &LinkDrops, event: Event) {
    match event {
        Event::ServerError(error) => {
            log_server_error(connection, &error.to_string());
        }
        Event::Disconnected => {
            drops.report(link);
            tracing::debug!(connection, "direct connection dropped; polling now");
        }
        other => tracing::debug!(connection, event = %other, "direct connection event"),
    }
}

pub(super) fn log_event(connection: &str, denials: &Denials, event: Event) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn server(port: u16, failed_attempts: usize) -> async_nats::Server {
        async_nats::Server {
            addr: async_nats::ServerAddr::from_str(&format!("nats://127.0.0.1:{port}"))
                .expect("address"),
            failed_attempts,
            did_connect: true,
            is_discovered: false,
            last_error: None,
        }
    }

    fn left(port: u16) -> async_nats::ServerInfo {
        async_nats::ServerInfo {
            host: "127.0.0.1".to_string(),
            port,
            ..Default::default()
        }
    }

    fn picked(servers: &[async_nats::Server], last: u16) -> Option<u16> {
        another_server(servers, &left(last)).map(|r| r.addr.port())
    }

    #[test]
    fn a_reconnect_leaves_the_last_server_until_every_other_failed_more_often() {
        // Just left 1: another, the least failing.
        assert_eq!(
            picked(&[server(1, 0), server(2, 1), server(3, 0)], 1),
            Some(3)
        );
        // 2 and 3 are down too: back to 1, which may be the only one up.
        assert_eq!(
            picked(&[server(1, 0), server(2, 1), server(3, 1)], 1),
            Some(1)
        );
        // As often failed as the others: another first.
        assert_eq!(
            picked(&[server(1, 2), server(2, 2), server(3, 3)], 1),
            Some(2)
        );
        // Only the one left: the client's own choice; never connected: the client's own too.
        assert_eq!(picked(&[server(1, 0)], 1), None);
        assert_eq!(picked(&[server(1, 0), server(2, 0)], 0), None);
    }
}
