//! Observe: the wire shape of a JSZ reply, decoded leniently so that one odd field never blinds us.

use serde::{Deserialize, Serialize};

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

/// The part of JSZ data this service reads.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct JszData {
    /// The meta group as this server sees it; absent without clustered JetStream.
    #[serde(default)]
    pub meta_cluster: Option<MetaCluster>,
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
