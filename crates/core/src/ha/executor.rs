//! How the coordinator's actions are executed: the order and the feedback the coordinator
//! relies on, written once, so the engine and the seeded simulation (tests/ha_sim) follow the
//! same rules and differ only in what publishing, persisting, asking and beating do.
//!
//! The rules: actions run in the order the coordinator gave them; a publish that failed is
//! reported at once, before any other input ([`Input::PublishFailed`]); once every action of a
//! batch ran, a batch that published anything is followed by a [`Input::Tick`] at once, which
//! persists what went out (a process killed just after publishing must find the episode in the
//! bucket when it restarts); whatever that decides runs the same way, until nothing is left.

use std::collections::VecDeque;

use super::coordinator::{Action, Coordinator, Input, Now};

/// Hands out the coordinator's actions one at a time, feeding back what their execution
/// reports. Drive it with [`Executor::next`] until `None`, reporting each publish with
/// [`Executor::published`].
#[derive(Debug, Default)]
pub struct Executor {
    batch: VecDeque<Action>,
    /// A publish of the current batch went out.
    published: bool,
}

impl Executor {
    /// An executor with nothing pending.
    pub fn new() -> Executor {
        Executor::default()
    }

    /// The next action to execute at local time `now`, or `None` when the coordinator has
    /// nothing more to do.
    pub fn next(&mut self, coordinator: &mut Coordinator, now: Now) -> Option<Action> {
        loop {
            if let Some(action) = self.batch.pop_front() {
                return Some(action);
            }
            if std::mem::take(&mut self.published) {
                coordinator.handle(Input::Tick, now);
            }
            self.batch.extend(coordinator.actions());
            if self.batch.is_empty() {
                return None;
            }
        }
    }

    /// Reports how the publish of `action` (an [`Action::Publish`]) went.
    pub fn published(
        &mut self,
        coordinator: &mut Coordinator,
        action: Action,
        sent: bool,
        now: Now,
    ) {
        let Action::Publish(transition) = action else {
            return;
        };
        if sent {
            self.published = true;
        } else {
            coordinator.handle(Input::PublishFailed(transition), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::Ledger;
    use crate::timing::Timing;
    use std::time::{Duration, SystemTime};

    fn raise(key: &str) -> crate::findings::Transition {
        crate::findings::Transition {
            kind: crate::findings::TransitionKind::Raised,
            finding: crate::ha::test_finding(key),
            episode: 1,
            epoch: String::new(),
            revision: 1,
            raised_at: SystemTime::UNIX_EPOCH,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    /// Runs every action, publishing as `sends` says; returns the actions in order.
    fn run(c: &mut Coordinator, now: Now, sends: bool) -> Vec<Action> {
        let mut exec = Executor::new();
        let mut done = Vec::new();
        while let Some(action) = exec.next(c, now) {
            done.push(action.clone());
            if matches!(action, Action::Publish(_)) {
                exec.published(c, action, sends, now);
            }
        }
        done
    }

    /// An instance alone, past its start-up wait, that wants a raise of `k` published.
    fn alone_wanting_a_raise() -> (Coordinator, Now) {
        let timing = Timing::default().ha;
        let mut c = Coordinator::new("a", timing, Ledger::default(), Duration::ZERO);
        let now = timing.sync_wait;
        c.handle(Input::Tick, now);
        let _ = run(&mut c, now, true);
        c.handle(
            Input::Evaluated {
                next: Default::default(),
                transitions: vec![raise("k")],
                link: true,
            },
            now,
        );
        (c, now)
    }

    #[test]
    fn a_publish_that_went_out_is_persisted_in_the_same_execution() {
        let (mut c, now) = alone_wanting_a_raise();
        let done = run(&mut c, now, true);
        assert!(matches!(done.first(), Some(Action::Publish(_))), "{done:?}");
        assert!(
            matches!(done.last(), Some(Action::Persist(_))),
            "persisted at once: {done:?}"
        );
    }

    #[test]
    fn a_failed_publish_is_neither_persisted_nor_sent_again_at_once() {
        let (mut c, now) = alone_wanting_a_raise();
        let done = run(&mut c, now, false);
        assert_eq!(
            done.len(),
            1,
            "one publish, no persist, no retry yet: {done:?}"
        );
        assert!(c.is_holding(), "it waits to be sent again");
    }
}
