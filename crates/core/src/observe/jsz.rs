//! Observe: the wire shape of a JSZ reply, decoded leniently so that one odd field never blinds us.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

/// One server's reply to `$SYS.REQ.SERVER.PING.JSZ` or `$SYS.REQ.SERVER.<id>.JSZ`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct JszReply {
    /// Who answered.
    pub server: ServerIdentity,
    /// The JetStream view, absent when the server reports an error.
    #[serde(default)]
    pub data: Option<JszData>,
    /// Set when the server could not produce JSZ (for example JetStream disabled).
    #[serde(default)]
    pub error: Option<ReplyError>,
}

/// The `server` envelope every system-account reply and event carries.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct ServerIdentity {
    /// Server name: stable across restarts.
    pub name: String,
    /// Server id: new on every restart.
    pub id: String,
    /// Cluster name, when clustered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// JetStream domain, when one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// nats-server version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ver: Option<String>,
}

/// Error object of a system-account reply.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ReplyError {
    /// Numeric error code.
    #[serde(default)]
    pub code: i64,
    /// Human description.
    #[serde(default)]
    pub description: String,
}

/// The part of JSZ data this service reads. The fields beyond `meta_cluster` are read
/// leniently: one of an unexpected shape is absent (unknown), never the reason a reply is lost.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct JszData {
    /// The meta group as this server sees it; absent without clustered JetStream.
    #[serde(default)]
    pub meta_cluster: Option<MetaCluster>,
    /// The server's JetStream configuration (`config`).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub config: Option<JsConfig>,
    /// Streams on this server: each replica counts on the server that holds it.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub streams: Option<u64>,
    /// Consumers on this server, counted the same way.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub consumers: Option<u64>,
    /// Raft groups this server takes part in (the meta group, replicated streams and
    /// consumers): `ha_assets`.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub ha_assets: Option<u64>,
    /// The server's clock when it answered (`now`, RFC 3339).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub now: Option<String>,
}

/// JSZ `config`: the parts this service judges.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct JsConfig {
    /// How often stream data is flushed to disk, nanoseconds (`sync_interval`; since nats-server
    /// 2.10.0, filled with the 2-minute default when not configured; absent when 0).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub sync_interval: Option<u64>,
    /// Every write is flushed before it is acknowledged (`sync_interval: always`; absent when
    /// false).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub sync_always: Option<bool>,
}

/// JSZ `meta_cluster.snapshot`: the reporting server's own meta snapshots (nats-server 2.11.11,
/// 2.12.2, 2.14.0 and later).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct MetaSnapshotStats {
    /// Meta log entries not yet compacted into a snapshot.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub pending_entries: Option<u64>,
    /// Their size in bytes.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub pending_size: Option<u64>,
    /// When the last snapshot started (RFC 3339; the zero time `0001-01-01T00:00:00Z` when this
    /// process has taken none).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_time: Option<String>,
    /// How long it took, nanoseconds (absent when none was taken).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_duration: Option<u64>,
}

impl MetaSnapshotStats {
    /// When the last snapshot was taken, `None` when this process has taken none (the zero
    /// time, or no duration).
    pub fn last_taken(&self) -> Option<&str> {
        self.last_time
            .as_deref()
            .filter(|t| !t.is_empty() && !t.starts_with("0001-"))
            .filter(|_| self.last_duration.is_some_and(|d| d > 0))
    }
}

/// A field decoded on its own: of an unexpected shape, it is `None`.
fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

/// `meta_cluster` of a JSZ reply.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct MetaCluster {
    /// The meta group's cluster name.
    #[serde(default)]
    pub name: Option<String>,
    /// Name of the meta leader this server knows of.
    #[serde(default)]
    pub leader: Option<String>,
    /// Peer hash of that leader.
    #[serde(default)]
    pub peer: Option<String>,
    /// Every peer but the reporting leader (or including the reporter when there is no leader).
    #[serde(default)]
    pub replicas: Vec<PeerInfo>,
    /// Membership as the raft layer knows it.
    #[serde(default)]
    pub cluster_size: usize,
    /// Members needed for quorum (nats-server 2.15+).
    #[serde(default)]
    pub quorum_needed: Option<usize>,
    /// Pending raft entries.
    #[serde(default)]
    pub pending: u64,
    /// The reporting server's meta snapshot figures (recent servers only).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub snapshot: Option<MetaSnapshotStats>,
}

impl MetaCluster {
    /// The leader's name, treating an empty string as no leader.
    pub fn leader_name(&self) -> Option<&str> {
        self.leader.as_deref().filter(|l| !l.is_empty())
    }
}

/// One member entry of `meta_cluster.replicas`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct PeerInfo {
    /// Server name, or `Server name unknown at this time (peerID: ...)`.
    pub name: String,
    /// 8-character peer hash.
    #[serde(default)]
    pub peer: String,
    /// Caught up and heard from recently (meaningful in the leader's view only).
    #[serde(default)]
    pub current: bool,
    /// Server-side offline flag (slow after crashes, see NATS_FACTS).
    #[serde(default)]
    pub offline: bool,
    /// Nanoseconds since last contact; 0 means unknown.
    #[serde(default)]
    pub active: u64,
    /// Raft entries behind.
    #[serde(default)]
    pub lag: u64,
}

/// Prefix nats-server uses for members no live server carries.
pub const UNKNOWN_NAME_PREFIX: &str = "Server name unknown at this time";

impl PeerInfo {
    /// True when the server could not name this member (a stale or renamed peer).
    pub fn name_unknown(&self) -> bool {
        self.name.starts_with(UNKNOWN_NAME_PREFIX)
    }
}

/// Decodes one reply; the error says what was wrong for the malformed-input log.
pub fn decode_reply(payload: &[u8]) -> Result<JszReply, serde_json::Error> {
    serde_json::from_slice(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_minimal_reply_and_ignores_unknown_fields() {
        let raw = br#"{"server":{"name":"n1","id":"NID","extra":1},"data":{"meta_cluster":{"leader":"n1","cluster_size":3,"replicas":[{"name":"n2","peer":"abc","current":true,"active":1000}]}}}"#;
        let reply = decode_reply(raw).expect("valid");
        let meta = reply.data.and_then(|d| d.meta_cluster).expect("meta");
        assert_eq!(meta.leader_name(), Some("n1"));
        assert_eq!(meta.replicas[0].active, 1000);
        assert!(!meta.replicas[0].offline);
    }

    #[test]
    fn reads_config_counts_and_snapshot_and_shrugs_off_odd_shapes() {
        let raw = br#"{"server":{"name":"n1","id":"N"},"data":{"config":{"sync_interval":120000000000},"streams":3,"consumers":2,"ha_assets":4,"meta_cluster":{"cluster_size":3,"snapshot":{"pending_entries":5,"pending_size":100,"last_time":"2026-11-24T08:26:02Z","last_duration":6000000000}}}}"#;
        let data = decode_reply(raw).expect("valid").data.expect("data");
        let config = data.config.expect("config");
        assert_eq!(config.sync_interval, Some(120_000_000_000));
        assert_eq!(config.sync_always, None);
        assert_eq!(
            (data.streams, data.consumers, data.ha_assets),
            (Some(3), Some(2), Some(4))
        );
        let snap = data.meta_cluster.expect("meta").snapshot.expect("snapshot");
        assert_eq!(snap.last_duration, Some(6_000_000_000));
        assert_eq!(snap.last_taken(), Some("2026-11-24T08:26:02Z"));

        // Odd shapes are unknown, and the reply still decodes.
        let raw = br#"{"server":{"name":"n1","id":"N"},"data":{"config":"x","streams":-1,"ha_assets":"many","meta_cluster":{"cluster_size":3,"snapshot":{"last_duration":"6s","last_time":"0001-01-01T00:00:00Z"}}}}"#;
        let data = decode_reply(raw).expect("valid").data.expect("data");
        assert_eq!(data.config, None);
        assert_eq!((data.streams, data.ha_assets), (None, None));
        let snap = data.meta_cluster.expect("meta").snapshot.expect("snapshot");
        assert_eq!((snap.last_duration, snap.last_taken()), (None, None));
    }

    #[test]
    fn the_servers_clock_is_the_latest_now_of_the_views() {
        use crate::observe::{ServerView, Snapshot, Via};
        let reply = |name: &str, now: &str| {
            let raw =
                format!(r#"{{"server":{{"name":"{name}","id":"{name}"}},"data":{{"now":{now}}}}}"#);
            ServerView::from_reply(decode_reply(raw.as_bytes()).expect("valid"), Via::Gather)
        };
        let mut snapshot = Snapshot::default();
        for (name, now) in [
            ("n1", r#""2026-11-24T08:26:02.5Z""#),
            ("n2", r#""2026-11-24T08:26:03.123456789Z""#),
            ("n3", "17"),
        ] {
            snapshot.views.insert(name.to_string(), reply(name, now));
        }
        let expected = humantime::parse_rfc3339("2026-11-24T08:26:03.123456789Z").expect("time");
        assert_eq!(snapshot.server_now(), Some(expected));
        // A reply without a readable `now` carries no time.
        assert_eq!(
            snapshot.views["n3"].facts.as_ref().and_then(|f| f.now),
            None
        );
        assert_eq!(Snapshot::default().server_now(), None);
        // A server clock further off this instance's than the tolerance is not used.
        use crate::observe::{plausible_server_time, SERVER_CLOCK_TOLERANCE};
        let off = |secs| expected + std::time::Duration::from_secs(secs);
        assert_eq!(
            plausible_server_time(Some(off(59)), expected),
            Some(off(59))
        );
        assert_eq!(
            plausible_server_time(Some(expected), off(59)),
            Some(expected)
        );
        assert!(SERVER_CLOCK_TOLERANCE < std::time::Duration::from_secs(61));
        assert_eq!(plausible_server_time(Some(off(61)), expected), None);
        assert_eq!(plausible_server_time(Some(expected), off(61)), None);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(decode_reply(b"{not json").is_err());
        assert!(decode_reply(br#"{"server":{"name":1}}"#).is_err());
        assert!(decode_reply(b"").is_err());
    }

    #[test]
    fn empty_leader_is_no_leader() {
        let meta = MetaCluster {
            leader: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(meta.leader_name(), None);
    }
}
