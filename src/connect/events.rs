//! Connections: what each connection logs (a permission violation names the subject it denied),
//! which server a reconnect prefers, and the pinned links' drops reported to the engine.

use std::time::Duration;

use async_nats::Event;

use super::{Denial, Denials, LinkDrops};

/// Which server a reconnect tries next: the choice of [`ReconnectChoice::pick`], with what it
/// remembers between the tries of one reconnect.
///
/// The client's per-server failure counts grow for the connection's whole life (a server's
/// count is reset only when a connection to it succeeds), so a server that was down an hour
/// ago still looks worse than one that just stalled. A reconnect counts only the failures since
/// it began: the counts are taken as a baseline at its first try.
#[derive(Debug, Default)]
pub(super) struct ReconnectChoice {
    baseline: Option<Baseline>,
}

/// Each server's failure count when the reconnect of one connection began.
#[derive(Debug)]
struct Baseline {
    /// The connection being replaced: its server's id and the client id it gave us.
    connection: (String, u64),
    counts: Vec<(async_nats::ServerAddr, usize)>,
}

impl ReconnectChoice {
    /// Prefers a server other than the one just left (it died, entered lame duck, stalled, or
    /// was found cut off from the meta group), the one with the fewest failures in this
    /// reconnect first; the one just left again once the others have failed a few times more
    /// than it (it may be the only one alive: a move off a healthy server, just as the others
    /// went down, must not keep the client away from it). `None` keeps the client's default.
    pub(super) fn pick(
        &mut self,
        servers: &[async_nats::Server],
        last: &async_nats::ServerInfo,
    ) -> Option<async_nats::ReconnectToServer> {
        // Never connected yet (the first connect): the client's own selection tries every URL.
        if last.port == 0 {
            return None;
        }
        let connection = (last.server_id.clone(), last.client_id);
        if self.baseline.as_ref().map(|b| &b.connection) != Some(&connection) {
            let counts = servers
                .iter()
                .map(|s| (s.addr.clone(), s.failed_attempts))
                .collect();
            self.baseline = Some(Baseline { connection, counts });
        }
        let before = |s: &async_nats::Server| {
            self.baseline
                .as_ref()
                .and_then(|b| b.counts.iter().find(|(a, _)| *a == s.addr))
                .map(|(_, n)| *n)
                .unwrap_or(0)
        };
        let failures = |s: &async_nats::Server| s.failed_attempts.saturating_sub(before(s));
        let unspecified = matches!(last.host.as_str(), "" | "0.0.0.0" | "::" | "[::]");
        let is_last = |s: &async_nats::Server| {
            s.addr.port() == last.port && (unspecified || s.addr.host() == last.host)
        };
        // The one just left counts as having failed `LAST_PENALTY` more times than it did: others
        // are tried first, and a few failures of theirs bring it back.
        const LAST_PENALTY: usize = 3;
        let pick = servers.iter().min_by_key(|s| {
            let last = is_last(s);
            (failures(s) + if last { LAST_PENALTY } else { 0 }, last)
        })?;
        let backoff = Duration::from_millis(250 * failures(pick).min(8) as u64);
        Some(async_nats::ReconnectToServer {
            addr: pick.addr.clone(),
            delay: Some(backoff),
        })
    }
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
    use super::ReconnectChoice;

    fn server(port: u16, failed_attempts: usize) -> async_nats::Server {
        async_nats::Server {
            addr: format!("nats://127.0.0.1:{port}").parse().expect("addr"),
            failed_attempts,
            did_connect: true,
            is_discovered: false,
            last_error: None,
        }
    }

    fn last(port: u16, client_id: u64) -> async_nats::ServerInfo {
        async_nats::ServerInfo {
            host: "127.0.0.1".to_string(),
            port,
            server_id: format!("S{port}"),
            client_id,
            ..Default::default()
        }
    }

    fn pick(choice: &mut ReconnectChoice, servers: &[async_nats::Server], left: u16) -> u16 {
        choice
            .pick(servers, &last(left, 7))
            .expect("a pick")
            .addr
            .port()
    }

    #[test]
    fn another_server_is_preferred_until_it_fails_more_than_the_one_just_left() {
        // Just left 4223: another one first.
        let mut choice = ReconnectChoice::default();
        assert_eq!(
            pick(
                &mut choice,
                &[server(4222, 0), server(4223, 0), server(4224, 0)],
                4223
            ),
            4222
        );
        // 4222 failed once in this reconnect: 4224.
        assert_eq!(
            pick(
                &mut choice,
                &[server(4222, 1), server(4223, 0), server(4224, 0)],
                4223
            ),
            4224
        );
        // The others are down and keep failing: back to the one just left, which may be the
        // only one alive (moved off it as the others went down).
        assert_eq!(
            pick(
                &mut choice,
                &[server(4222, 5), server(4223, 0), server(4224, 4)],
                4223
            ),
            4223
        );
        let mut choice = ReconnectChoice::default();
        assert_eq!(
            pick(&mut choice, &[server(4222, 0), server(4223, 0)], 4223),
            4222
        );
    }

    #[test]
    fn failures_before_this_reconnect_do_not_send_it_back_to_a_stalled_server() {
        // 4222 and 4224 failed many times while they were down long ago; the server just left
        // (4223) stalled. The others are tried first, with no backoff for old failures.
        let mut choice = ReconnectChoice::default();
        let servers = [server(4222, 9), server(4223, 0), server(4224, 6)];
        let first = choice.pick(&servers, &last(4223, 7)).expect("a pick");
        assert_eq!(first.addr.port(), 4222);
        assert_eq!(first.delay, Some(std::time::Duration::ZERO));
        // 4222 refused: 4224 next.
        let servers = [server(4222, 10), server(4223, 0), server(4224, 6)];
        assert_eq!(pick(&mut choice, &servers, 4223), 4224);
        // A new connection (another client id) begins a new baseline.
        let servers = [server(4222, 10), server(4223, 0), server(4224, 0)];
        let next = choice.pick(&servers, &last(4224, 8)).expect("a pick");
        assert_eq!(next.addr.port(), 4222);
    }
}
