//! Observe, events: the system-account events that change meta state (their subjects), decoded
//! into [`MetaEvent`]s so the engine can re-evaluate at once instead of waiting for the next
//! poll. Pure; the product's `observe::events` subscribes.

use std::time::SystemTime;

use serde::Deserialize;

use super::MetaEvent;

/// Subjects this service listens on for meta-state events.
pub const EVENT_SUBJECTS: [&str; 5] = [
    "$SYS.SERVER.*.SHUTDOWN",
    "$SYS.SERVER.*.LAMEDUCK",
    "$JS.EVENT.ADVISORY.DOMAIN.LEADER_ELECTED",
    "$JS.EVENT.ADVISORY.DOMAIN.LEADER_ELECTED.>",
    "$JS.EVENT.ADVISORY.SERVER.REMOVED",
];

/// Why an event payload was rejected.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The payload is not the JSON this subject carries.
    #[error("malformed {subject} event: {source}")]
    Malformed {
        /// Subject it arrived on.
        subject: String,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// A subject we did not subscribe to (cannot happen unless subscriptions change).
    #[error("unexpected event subject {0}")]
    UnexpectedSubject(String),
}

/// Server info as carried by shutdown and lame-duck events (either bare or in a `server` envelope).
#[derive(Deserialize)]
struct ServerBody {
    #[serde(default)]
    server: Option<ServerRef>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
struct ServerRef {
    name: String,
    id: String,
}

#[derive(Deserialize)]
struct LeaderElectedBody {
    leader: String,
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    /// The announcing server's clock; read leniently (a malformed one is no time, not a lost
    /// advisory).
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ServerRemovedBody {
    server: String,
    #[serde(default)]
    server_id: String,
    #[serde(default)]
    domain: Option<String>,
}

fn malformed(subject: &str, source: serde_json::Error) -> EventError {
    EventError::Malformed {
        subject: subject.to_string(),
        source,
    }
}

/// Decodes one event; pure, so it is tested on captured payloads.
pub fn decode_event(
    subject: &str,
    payload: &[u8],
    at: SystemTime,
) -> Result<MetaEvent, EventError> {
    let tokens: Vec<&str> = subject.split('.').collect();
    match tokens.as_slice() {
        ["$SYS", "SERVER", id, kind @ ("SHUTDOWN" | "LAMEDUCK")] => {
            let body: ServerBody =
                serde_json::from_slice(payload).map_err(|e| malformed(subject, e))?;
            let (name, server_id) = match body.server {
                Some(s) => (s.name, s.id),
                None => (
                    body.name.ok_or_else(|| {
                        malformed(subject, serde::de::Error::missing_field("name"))
                    })?,
                    body.id.unwrap_or_else(|| (*id).to_string()),
                ),
            };
            Ok(if *kind == "SHUTDOWN" {
                MetaEvent::Shutdown {
                    server: name,
                    server_id,
                    at,
                }
            } else {
                MetaEvent::LameDuck {
                    server: name,
                    server_id,
                    at,
                }
            })
        }
        ["$JS", "EVENT", "ADVISORY", "DOMAIN", "LEADER_ELECTED", ..] => {
            let body: LeaderElectedBody =
                serde_json::from_slice(payload).map_err(|e| malformed(subject, e))?;
            Ok(MetaEvent::LeaderElected {
                leader_peer: body.leader,
                cluster: body.cluster,
                domain: body.domain.filter(|d| !d.is_empty()),
                at,
                server_at: body
                    .timestamp
                    .as_ref()
                    .and_then(serde_json::Value::as_str)
                    .and_then(|t| humantime::parse_rfc3339_weak(t).ok()),
            })
        }
        ["$JS", "EVENT", "ADVISORY", "SERVER", "REMOVED"] => {
            let body: ServerRemovedBody =
                serde_json::from_slice(payload).map_err(|e| malformed(subject, e))?;
            Ok(MetaEvent::ServerRemoved {
                server: body.server,
                server_id: body.server_id,
                domain: body.domain.filter(|d| !d.is_empty()),
                at,
            })
        }
        _ => Err(EventError::UnexpectedSubject(subject.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_shutdown_in_either_shape() {
        let now = SystemTime::UNIX_EPOCH;
        let bare = decode_event(
            "$SYS.SERVER.NID.SHUTDOWN",
            br#"{"name":"n2","id":"NID"}"#,
            now,
        );
        let wrapped = decode_event(
            "$SYS.SERVER.NID.SHUTDOWN",
            br#"{"server":{"name":"n2","id":"NID"}}"#,
            now,
        );
        let expected = MetaEvent::Shutdown {
            server: "n2".into(),
            server_id: "NID".into(),
            at: now,
        };
        assert_eq!(bare.expect("bare"), expected);
        assert_eq!(wrapped.expect("wrapped"), expected);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let now = SystemTime::UNIX_EPOCH;
        for (subject, payload) in [
            ("$SYS.SERVER.X.LAMEDUCK", &b"\xff\x00"[..]),
            (
                "$JS.EVENT.ADVISORY.DOMAIN.LEADER_ELECTED",
                b"{\"leader\":5}",
            ),
            ("$JS.EVENT.ADVISORY.SERVER.REMOVED", b"[]"),
            ("$SYS.SERVER.X.SHUTDOWN", b"{}"),
            ("foo", b"{}"),
        ] {
            assert!(decode_event(subject, payload, now).is_err(), "{subject}");
        }
    }
}
