//! Connections: the pinned links' drops, reported to the engine. A killed server's sockets are
//! closed by the kernel at once, so its pinned link drops within milliseconds of the crash: the
//! engine polls then instead of waiting for the next tick.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// Which pinned links dropped since the engine last looked. Each link is listed once however
/// often it dropped, so drops that arrive together are taken together (one poll for all).
#[derive(Debug, Clone, Default)]
pub struct LinkDrops {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    dropped: Mutex<BTreeSet<usize>>,
    notify: Notify,
}

impl LinkDrops {
    /// Reports that the pinned link `link` (its index in [`super::Connections::direct`]) dropped.
    pub fn report(&self, link: usize) {
        self.lock().insert(link);
        self.inner.notify.notify_one();
    }

    /// Waits until a link dropped, then takes every link reported since the last call.
    /// Cancel-safe: a drop reported while nobody waits is kept for the next call.
    pub async fn next(&self) -> BTreeSet<usize> {
        loop {
            let taken = std::mem::take(&mut *self.lock());
            if !taken.is_empty() {
                return taken;
            }
            self.inner.notify.notified().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<usize>> {
        // The set stays valid whatever a panicking holder did: at worst a drop is listed twice.
        self.inner
            .dropped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn drops_reported_together_are_taken_together_and_none_is_lost() {
        let drops = LinkDrops::default();
        drops.report(2);
        drops.report(0);
        drops.report(2);
        assert_eq!(drops.next().await, BTreeSet::from([0, 2]));
        // Nothing new: the next call waits.
        let waiting = tokio::time::timeout(Duration::from_millis(20), drops.next()).await;
        assert!(waiting.is_err(), "{waiting:?}");
        // A drop reported after a waiter gave up is still there.
        drops.report(1);
        assert_eq!(drops.next().await, BTreeSet::from([1]));
        // A drop reported from another task wakes a waiter.
        let reporter = drops.clone();
        let waiter = tokio::spawn(async move { drops.next().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        reporter.report(3);
        let woke = tokio::time::timeout(Duration::from_secs(1), waiter).await;
        assert!(
            matches!(woke, Ok(Ok(ref set)) if *set == BTreeSet::from([3])),
            "{woke:?}"
        );
    }
}
