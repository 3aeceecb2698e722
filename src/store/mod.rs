//! Persist (after publish): keeps finding state and the observation history in a JetStream KV
//! bucket (in a JetStream-enabled account, never the system account). The bucket is restart
//! memory, not an arbiter: what was published (here or by a peer) is written after it, merged by
//! [`Mark`](crate::record::Mark) (a newer episode or revision stays), so an instance that starts
//! knows each key's episode. The store never blocks publishing: when it is unreachable the latest
//! state per key waits in a backlog, and STATUS reports the store as degraded.
//!
//! Split along the line the other stages keep between I/O and decisions:
//! - `kv`: the edge. Opens the bucket, reads and writes it by compare-and-set, and classifies
//!   every error async-nats returns, once, into a typed `KvError`.
//! - `persistence`: the policy. What a start loads and carries over, the backlog and when a
//!   degraded or unopened store is tried again (on the instance's timers), the flush at
//!   shutdown; [`Persistence`] is what the engine drives.
//!
//! The records and their keys are pure data in [`crate::record`].

mod kv;
mod persistence;

pub use crate::connect::StoreSettings;
pub use kv::StoreError;
pub use persistence::{KvStore, Loaded, Pending, Persistence};
