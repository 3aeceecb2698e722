//! Connections: the proof, at start, that the user is in the system account.

use std::time::Duration;

use async_nats::{Client, RequestErrorKind};

use super::{ConnectError, Denial, Denials};
use nats_insights_core::observe::plan::{PING_IDZ, PING_JSZ};

/// Proves the connection is in the system account by asking every server's identity (IDZ: a
/// small reply each, affordable with thousands of servers); names the account when it is not, and
/// the subject when the server denies the request, its reply subscription or the JSZ request the
/// polls send (`denied` is [`super::Connections::denied`] of this connection).
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
