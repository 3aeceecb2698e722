//! A simulated meta group of N servers: JSZ replies built on a reply captured from a real
//! nats-server 2.15 (`tests/fixtures/healthy_5.json`), with the member lists real servers send (a
//! leader lists every other member with its `active`; a follower lists every other member too,
//! only the leader as current), a leader and some crashed members.

use serde_json::{json, Value};

const CAPTURED: &str = include_str!("../../tests/fixtures/healthy_5.json");

/// One simulated meta group. Server 0 leads; every 50th member (from the 25th) has crashed: it
/// answers nothing and the leader has not heard from it for 30 s.
pub struct Group {
    /// Server names, `s0001`...
    pub names: Vec<String>,
    /// Server ids, 56 characters like real ones.
    pub ids: Vec<String>,
    /// 8-character peer hashes.
    pub peers: Vec<String>,
    /// Crashed members.
    pub offline: Vec<bool>,
    template: Value,
}

impl Group {
    /// A group of `n` members.
    pub fn new(n: usize) -> Group {
        let captured: Vec<Value> = serde_json::from_str(CAPTURED).expect("captured fixture");
        let template = captured
            .into_iter()
            .find(|r| r["data"]["meta_cluster"]["leader"] == r["server"]["name"])
            .expect("the capture holds the leader's reply");
        Group {
            names: (0..n).map(|i| format!("s{:04}", i + 1)).collect(),
            ids: (0..n).map(|i| format!("NSIM{i:052}")).collect(),
            peers: (0..n).map(|i| format!("p{i:07}")).collect(),
            offline: (0..n).map(|i| i % 50 == 25).collect(),
            template,
        }
    }

    /// Members.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Members that answer.
    pub fn online(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).filter(|i| !self.offline[*i])
    }

    /// Members that crashed.
    pub fn crashed(&self) -> usize {
        self.offline.iter().filter(|o| **o).count()
    }

    /// Member `i`'s JSZ reply, as bytes on the wire.
    pub fn reply(&self, i: usize) -> Vec<u8> {
        let n = self.len();
        let replicas: Vec<Value> = (0..n)
            .filter(|j| *j != i)
            .map(|j| {
                let (current, active) = if i == 0 {
                    if self.offline[j] {
                        (false, 30_000_000_000u64 + j as u64)
                    } else {
                        (true, 150_000_000 + 997 * j as u64)
                    }
                } else if j == 0 {
                    (true, 180_000_000 + 991 * i as u64)
                } else {
                    (false, 0)
                };
                json!({"name": self.names[j], "current": current, "active": active, "peer": self.peers[j]})
            })
            .collect();
        let mut reply = self.template.clone();
        reply["server"]["name"] = json!(self.names[i]);
        reply["server"]["id"] = json!(self.ids[i]);
        reply["server"]["cluster"] = json!("sim");
        reply["data"]["server_id"] = json!(self.ids[i]);
        let meta = &mut reply["data"]["meta_cluster"];
        meta["name"] = json!("sim");
        meta["leader"] = json!(self.names[0]);
        meta["peer"] = json!(self.peers[0]);
        meta["cluster_size"] = json!(n);
        meta["quorum_needed"] = json!(n / 2 + 1);
        meta["replicas"] = Value::Array(replicas);
        serde_json::to_vec(&reply).expect("encode a simulated reply")
    }

    /// Member `i`'s IDZ reply.
    pub fn identity(&self, i: usize) -> Vec<u8> {
        serde_json::to_vec(&json!({"name": self.names[i], "host": "127.0.0.1", "id": self.ids[i]}))
            .expect("encode a simulated identity")
    }
}
