//! Observe, the plan of a poll: which subjects reach the servers and how much of a large group
//! one poll asks for. Pure data; the product's `gather` runs the poll.

use std::collections::BTreeMap;

use super::{ServerView, Snapshot};

/// Subject of the JSZ scatter-gather.
pub const PING_JSZ: &str = "$SYS.REQ.SERVER.PING.JSZ";

/// Subject that reaches one server's JSZ directly.
pub fn direct_jsz_subject(server_id: &str) -> String {
    format!("$SYS.REQ.SERVER.{server_id}.JSZ")
}

/// A server this service has seen before: the name it carries and the id of its current process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownServer {
    /// Server name.
    pub name: String,
    /// Last server id seen.
    pub id: String,
}

/// Meta groups up to this many members are polled in full: every server's whole JSZ view.
/// Beyond it every view lists every member, so a full poll would cost members² bytes.
pub const FULL_POLL_MAX_MEMBERS: usize = 64;

/// Followers asked for their whole view in each poll of a large group.
pub const FOLLOWER_SAMPLE: usize = 8;

/// Subject of the identity scatter-gather: a small reply from every server.
pub const PING_IDZ: &str = "$SYS.REQ.SERVER.PING.IDZ";

/// Subject that reaches one server's identity directly.
pub fn direct_idz_subject(server_id: &str) -> String {
    format!("$SYS.REQ.SERVER.{server_id}.IDZ")
}

/// How a poll asks the servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Every server's whole JSZ view (groups of up to `FULL_POLL_MAX_MEMBERS`).
    Full,
    /// Large groups, linear in the member count: the whole view of every server that believes it
    /// leads (the authority, and any rival), every server's identity (who answers), and the whole
    /// views of a rotating sample of followers (who they follow, whether they still hear it).
    Large {
        /// Followers asked for their view this time.
        sample: Vec<KnownServer>,
    },
}

impl Plan {
    /// The plan for a group of `members` (unknown before the first poll: then the cheap one, so
    /// the first poll of a huge group is not a full one): full up to `full_max` members.
    /// `round` rotates the follower sample through `known`.
    pub fn for_group(
        members: Option<usize>,
        full_max: usize,
        known: &[KnownServer],
        round: u64,
    ) -> Plan {
        match members {
            Some(m) if m <= full_max => Plan::Full,
            _ => {
                let take = FOLLOWER_SAMPLE.min(known.len());
                let start = if known.is_empty() {
                    0
                } else {
                    (round as usize).wrapping_mul(take) % known.len()
                };
                Plan::Large {
                    sample: known
                        .iter()
                        .cycle()
                        .skip(start)
                        .take(take)
                        .cloned()
                        .collect(),
                }
            }
        }
    }
}

/// Merges views from other connections into a snapshot: a server's direct answer counts as an answer.
/// A server that answered there and not through the main connection marks the snapshot's reach
/// impaired (unless nothing answered through the main connection: its server is simply silent).
pub fn merge_views(snapshot: &mut Snapshot, views: impl IntoIterator<Item = ServerView>) {
    let mut extra: BTreeMap<String, ServerView> = BTreeMap::new();
    for view in views {
        extra.insert(view.server.name.clone(), view);
    }
    snapshot.main_reach = snapshot.views.len();
    let main_answered = snapshot.main_reach > 0;
    for (name, view) in extra {
        snapshot.unanswered.remove(&name);
        snapshot.busy.remove(&name);
        if !snapshot.views.contains_key(&name) {
            snapshot.reach_impaired |= main_answered;
            snapshot.views.insert(name, view);
        }
    }
}
