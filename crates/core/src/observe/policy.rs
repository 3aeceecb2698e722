//! Observe, the policy: when to gather, when a poll is to be trusted, when to move the
//! connection off its server and when to try again: a sans-IO state machine beside the HA
//! coordinator. The engine feeds it [`Input`]s (a poll is due, links dropped, an event, a poll
//! done, a move done, a tick) with its `now`, executes the [`Action`]s it returns (gather,
//! move away, evaluate, skip) and wakes it at [`Observer::next_deadline`].
//!
//! The rules:
//! - the poll timer, an event that needs fresh views (a new leader, a removed peer) and dropped
//!   pinned links gather; an event that describes itself (a shutdown, a lame duck) and a group
//!   forgotten by an operator evaluate on the last views at once;
//! - the servers whose pinned links dropped are not waited for by the next gather (a dead
//!   server's silence is proved by its direct probe at once);
//! - a poll that heard nothing through the main connection while servers answered on their own
//!   links (its server is stopped or cut off) moves the connection and polls again, once; so
//!   does a poll during which the main connection reconnected (the replies in flight were lost);
//! - a round called for by dropped links that finds the main connection down (its server died
//!   with the links') is tried again every `link_retry` until the next poll;
//! - the server the connection is attached to announcing its departure is moved off before the
//!   next publication; a poll during a reconnect publishes nothing.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use super::plan::{KnownServer, Plan};
use super::{GroupId, MetaEvent, Snapshot};
use crate::timing::Now;

/// What started a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The poll timer: gather first.
    Poll,
    /// An event that needs fresh views (a new leader, a removed peer).
    Regather,
    /// Pinned links dropped (their servers may have died): gather now, without waiting for the
    /// servers they were attached to.
    LinkDown,
    /// An event fully described by itself (shutdown, lame duck), or a group forgotten: judge
    /// now with the last views.
    Reevaluate,
}

impl Trigger {
    /// Whether a round so started gathers first.
    pub fn gathers(self) -> bool {
        !matches!(self, Trigger::Reevaluate)
    }
}

/// How a gather went, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polled {
    /// The main connection was down: nothing was asked.
    Disconnected,
    /// The poll could not run (why).
    Failed(String),
    /// The poll ran.
    Done {
        /// Nothing came back through the main connection while servers answered on their own
        /// links.
        silent: bool,
        /// The main connection dropped or reconnected during the poll.
        reconnected: bool,
        /// Members of every meta group the snapshot shows, if any view showed one.
        group_size: Option<usize>,
    },
}

/// Something that happened, for the observer to take into account.
#[derive(Debug, Clone)]
pub enum Input<'a> {
    /// The poll timer fired.
    PollDue,
    /// Pinned links attached to these servers dropped.
    LinksDown(BTreeSet<String>),
    /// A meta event; `attached` is the server the main connection is on.
    Event {
        /// The event.
        event: &'a MetaEvent,
        /// The main connection's server.
        attached: &'a str,
    },
    /// An operator retired a meta group.
    Forget(GroupId),
    /// The gather asked for by [`Action::Gather`] is done; `connected`: the main connection is
    /// up now.
    Polled {
        /// How it went.
        polled: Polled,
        /// The main connection is up now.
        connected: bool,
    },
    /// The move asked for by [`Action::MoveAway`] is done: the connection is on another server.
    Moved(bool),
    /// Only time passed.
    Tick,
}

/// Something the engine must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Gather (poll every server, and the pinned links' own views), not waiting for `spared`;
    /// report with [`Input::Polled`]. The plan is [`Observer::plan`].
    Gather {
        /// Servers not waited for.
        spared: BTreeSet<String>,
    },
    /// Move the main connection to another server (why); report with [`Input::Moved`].
    MoveAway(&'static str),
    /// Judge every meta group: on this round's snapshot (`gathered`) or the last one, first
    /// forgetting `forget`.
    Evaluate {
        /// A fresh snapshot was taken.
        gathered: bool,
        /// Groups to forget first.
        forget: BTreeSet<GroupId>,
    },
    /// Nothing can be judged this round (why, for STATUS).
    Skip(String),
}

/// What the attached server's state means for publishing this round (read by the engine's
/// `Attached::publishable`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footing {
    /// The attached server that announced it is leaving: move off it before publishing, if
    /// still attached to it.
    pub leaving: Option<String>,
    /// The last poll got nothing through the main connection while servers answered on their
    /// own links, and moving did not help yet.
    pub silent: bool,
    /// The main connection reconnected during the last poll: nothing is published from it, and
    /// nothing is moved for it (the new server has done nothing wrong).
    pub settling: bool,
}

/// The round in progress.
#[derive(Debug, Clone)]
struct Round {
    trigger: Trigger,
    /// Servers its gathers do not wait for.
    spared: BTreeSet<String>,
    /// It polled again already (after a move or a reconnect).
    retried: bool,
    /// The last poll's silence and group size (kept while a move is under way).
    silent: bool,
    group_size: Option<usize>,
}

/// The observation policy of one instance.
#[derive(Debug)]
pub struct Observer {
    /// How often a dropped link's round is tried again while the main connection is down.
    link_retry: Duration,
    /// Groups up to this many members are polled in full.
    full_max: usize,
    suspects: BTreeSet<String>,
    forgotten: BTreeSet<GroupId>,
    footing: Footing,
    group_size: Option<usize>,
    /// Polls completed (rotates the follower sample).
    polls: u64,
    round: Option<Round>,
    retry_at: Option<Now>,
    actions: VecDeque<Action>,
}

impl Observer {
    /// An observer that retries a dropped link's round every `link_retry` and polls groups of
    /// up to `full_max` members in full.
    pub fn new(link_retry: Duration, full_max: usize) -> Observer {
        Observer {
            link_retry,
            full_max,
            suspects: BTreeSet::new(),
            forgotten: BTreeSet::new(),
            footing: Footing::default(),
            group_size: None,
            polls: 0,
            round: None,
            retry_at: None,
            actions: VecDeque::new(),
        }
    }

    /// Takes one input at local time `now`; the actions it leads to are in [`Self::actions`].
    pub fn handle(&mut self, input: Input<'_>, now: Now) {
        match input {
            Input::PollDue => self.start(Trigger::Poll),
            Input::LinksDown(servers) => {
                self.suspects.extend(servers);
                self.start(Trigger::LinkDown);
            }
            Input::Event { event, attached } => {
                if let MetaEvent::Shutdown { server, .. } | MetaEvent::LameDuck { server, .. } =
                    event
                {
                    if server == attached {
                        self.footing.leaving = Some(server.clone());
                    }
                }
                self.start(match event {
                    MetaEvent::Shutdown { .. } | MetaEvent::LameDuck { .. } => Trigger::Reevaluate,
                    MetaEvent::LeaderElected { .. } | MetaEvent::ServerRemoved { .. } => {
                        Trigger::Regather
                    }
                });
            }
            Input::Forget(group) => {
                self.forgotten.insert(group);
                self.start(Trigger::Reevaluate);
            }
            Input::Polled { polled, connected } => self.polled(polled, connected, now),
            Input::Moved(moved) => self.moved(moved),
            Input::Tick => {
                if self.retry_at.is_some_and(|at| now >= at) {
                    self.retry_at = None;
                    self.start(Trigger::LinkDown);
                }
            }
        }
    }

    /// The actions to execute, in order (drained).
    pub fn actions(&mut self) -> impl Iterator<Item = Action> + '_ {
        self.actions.drain(..)
    }

    /// When to call [`Self::handle`] with [`Input::Tick`], if ever.
    pub fn next_deadline(&self) -> Option<Now> {
        self.retry_at
    }

    /// What publishing this round stands on; the departure announced is handed over once.
    pub fn take_footing(&mut self) -> Footing {
        Footing {
            leaving: self.footing.leaving.take(),
            ..self.footing.clone()
        }
    }

    /// How to poll next: in full for small groups; for large ones every leader's view, every
    /// server's identity and a sample of followers that rotates with each poll (a leader is not
    /// sampled: it answers anyway).
    pub fn plan(&self, known: &[KnownServer], last: &Snapshot) -> Plan {
        let leaders: BTreeSet<&str> = last
            .meta_views()
            .filter(|(v, m)| m.leader_name() == Some(v.server.name.as_str()))
            .map(|(v, _)| v.server.name.as_str())
            .collect();
        let followers: Vec<KnownServer> = known
            .iter()
            .filter(|k| !leaders.contains(k.name.as_str()))
            .cloned()
            .collect();
        Plan::for_group(self.group_size, self.full_max, &followers, self.polls)
    }

    fn start(&mut self, trigger: Trigger) {
        if !trigger.gathers() {
            self.actions.push_back(Action::Evaluate {
                gathered: false,
                forget: std::mem::take(&mut self.forgotten),
            });
            return;
        }
        self.retry_at = None;
        // A round that finds the main connection down keeps the suspects for its retry.
        let spared = self.suspects.clone();
        self.actions.push_back(Action::Gather {
            spared: spared.clone(),
        });
        self.round = Some(Round {
            trigger,
            spared,
            retried: false,
            silent: false,
            group_size: None,
        });
    }

    /// The round's last poll stands: it is judged.
    fn accept(&mut self, silent: bool, reconnected: bool, group_size: Option<usize>) {
        // Dropped again: this snapshot decides nothing that gets published, and its silence is
        // the reconnect's, not that of the server the connection is on now.
        self.footing.silent = silent && !reconnected;
        self.footing.settling = reconnected;
        if group_size.is_some() {
            self.group_size = group_size;
        }
        self.polls += 1;
        self.actions.push_back(Action::Evaluate {
            gathered: true,
            forget: std::mem::take(&mut self.forgotten),
        });
    }

    fn polled(&mut self, polled: Polled, connected: bool, now: Now) {
        let Some(mut round) = self.round.take() else {
            return;
        };
        match polled {
            Polled::Disconnected | Polled::Failed(_) => {
                // A dropped link's round while the main connection is down: its server died
                // with the link's, and the connection is moving to another, which takes
                // milliseconds. Other rounds wait for the next tick.
                if round.trigger == Trigger::LinkDown && !connected {
                    self.retry_at = Some(now + self.link_retry);
                } else {
                    self.suspects.clear();
                }
                if let Polled::Failed(why) = &polled {
                    // The suspects were asked about (spared) already.
                    self.suspects.clear();
                    self.actions.push_back(Action::Skip(why.clone()));
                } else {
                    self.actions.push_back(Action::Skip(
                        "disconnected from NATS; reconnecting".to_string(),
                    ));
                }
            }
            Polled::Done {
                silent,
                reconnected,
                group_size,
            } => {
                self.suspects.clear();
                if !round.retried && (reconnected || silent) {
                    round.retried = true;
                    round.silent = silent;
                    round.group_size = group_size;
                    if silent && !reconnected {
                        self.actions.push_back(Action::MoveAway("does not answer"));
                    } else {
                        // The replies in flight were lost with the connection: the servers
                        // not heard yet were not silent.
                        self.actions.push_back(Action::Gather {
                            spared: round.spared.clone(),
                        });
                    }
                    self.round = Some(round);
                    return;
                }
                self.accept(silent, reconnected, group_size);
            }
        }
    }

    fn moved(&mut self, moved: bool) {
        let Some(round) = &self.round else {
            return;
        };
        if moved {
            self.actions.push_back(Action::Gather {
                spared: round.spared.clone(),
            });
        } else if let Some(round) = self.round.take() {
            // Nowhere to go (or moved moments ago): the silent poll stands.
            self.accept(round.silent, false, round.group_size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn ms(n: u64) -> Now {
        Duration::from_millis(n)
    }

    fn observer() -> Observer {
        Observer::new(ms(20), 64)
    }

    fn done(silent: bool, reconnected: bool) -> Input<'static> {
        Input::Polled {
            polled: Polled::Done {
                silent,
                reconnected,
                group_size: Some(3),
            },
            connected: true,
        }
    }

    fn take(o: &mut Observer) -> Vec<Action> {
        o.actions().collect()
    }

    fn gather(spared: &[&str]) -> Action {
        Action::Gather {
            spared: spared.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn evaluate(gathered: bool) -> Action {
        Action::Evaluate {
            gathered,
            forget: BTreeSet::new(),
        }
    }

    #[test]
    fn a_poll_that_answers_is_judged_at_once() {
        let mut o = observer();
        o.handle(Input::PollDue, ms(0));
        assert_eq!(take(&mut o), [gather(&[])]);
        o.handle(done(false, false), ms(10));
        assert_eq!(take(&mut o), [evaluate(true)]);
        assert_eq!(o.take_footing(), Footing::default());
    }

    #[test]
    fn a_silent_main_connection_moves_and_polls_again_once() {
        let mut o = observer();
        o.handle(Input::PollDue, ms(0));
        let _ = take(&mut o);
        o.handle(done(true, false), ms(10));
        assert_eq!(take(&mut o), [Action::MoveAway("does not answer")]);
        o.handle(Input::Moved(true), ms(20));
        assert_eq!(take(&mut o), [gather(&[])]);
        o.handle(done(true, false), ms(30));
        assert_eq!(take(&mut o), [evaluate(true)], "once only");
        assert!(
            o.take_footing().silent,
            "still silent: nothing is published through it"
        );
    }

    #[test]
    fn a_silent_poll_stands_when_there_is_nowhere_to_move() {
        let mut o = observer();
        o.handle(Input::PollDue, ms(0));
        let _ = take(&mut o);
        o.handle(done(true, false), ms(10));
        let _ = take(&mut o);
        o.handle(Input::Moved(false), ms(20));
        assert_eq!(take(&mut o), [evaluate(true)]);
        assert!(o.take_footing().silent);
    }

    #[test]
    fn a_reconnect_during_the_poll_polls_again_and_then_publishes_nothing_from_it() {
        let mut o = observer();
        o.handle(Input::LinksDown(BTreeSet::from(["n2".to_string()])), ms(0));
        assert_eq!(take(&mut o), [gather(&["n2"])]);
        o.handle(done(false, true), ms(10));
        assert_eq!(take(&mut o), [gather(&["n2"])], "the same servers spared");
        o.handle(done(false, true), ms(20));
        assert_eq!(take(&mut o), [evaluate(true)]);
        let footing = o.take_footing();
        assert!(footing.settling && !footing.silent, "{footing:?}");
        o.handle(Input::PollDue, ms(1000));
        assert_eq!(take(&mut o), [gather(&[])], "suspects are spared once");
    }

    #[test]
    fn only_a_dropped_links_round_waits_for_the_main_connection_to_come_back() {
        let mut o = observer();
        o.handle(Input::LinksDown(BTreeSet::from(["n1".to_string()])), ms(0));
        let _ = take(&mut o);
        o.handle(
            Input::Polled {
                polled: Polled::Disconnected,
                connected: false,
            },
            ms(1),
        );
        assert_eq!(
            take(&mut o),
            [Action::Skip("disconnected from NATS; reconnecting".into())]
        );
        assert_eq!(o.next_deadline(), Some(ms(21)));
        o.handle(Input::Tick, ms(10));
        assert!(take(&mut o).is_empty(), "not due yet");
        o.handle(Input::Tick, ms(21));
        assert_eq!(
            take(&mut o),
            [gather(&["n1"])],
            "the suspects kept for the retry"
        );
        assert_eq!(o.next_deadline(), None);

        // The timer's and the events' rounds wait for the next tick.
        o.handle(
            Input::Polled {
                polled: Polled::Disconnected,
                connected: false,
            },
            ms(22),
        );
        let _ = take(&mut o);
        o.handle(Input::PollDue, ms(1000));
        let _ = take(&mut o);
        o.handle(
            Input::Polled {
                polled: Polled::Disconnected,
                connected: false,
            },
            ms(1001),
        );
        let _ = take(&mut o);
        assert_eq!(o.next_deadline(), None);
        // Connected and still failed: the poll itself failed; trying again at once would too.
        o.handle(Input::LinksDown(BTreeSet::new()), ms(1100));
        let _ = take(&mut o);
        o.handle(
            Input::Polled {
                polled: Polled::Failed("denied".into()),
                connected: true,
            },
            ms(1101),
        );
        assert_eq!(take(&mut o), [Action::Skip("denied".into())]);
        assert_eq!(o.next_deadline(), None);
    }

    #[test]
    fn events_that_describe_themselves_are_judged_on_the_last_views() {
        let mut o = observer();
        let at = SystemTime::UNIX_EPOCH;
        let shutdown = MetaEvent::Shutdown {
            server: "n1".into(),
            server_id: "N1".into(),
            at,
        };
        o.handle(
            Input::Event {
                event: &shutdown,
                attached: "n1",
            },
            ms(0),
        );
        assert_eq!(take(&mut o), [evaluate(false)]);
        assert_eq!(o.take_footing().leaving.as_deref(), Some("n1"));
        assert_eq!(o.take_footing().leaving, None, "handed over once");
        let elected = MetaEvent::LeaderElected {
            leader_peer: "p".into(),
            cluster: None,
            domain: None,
            at,
            server_at: None,
        };
        o.handle(
            Input::Event {
                event: &elected,
                attached: "n1",
            },
            ms(1),
        );
        assert_eq!(take(&mut o), [gather(&[])]);
        o.handle(Input::Forget(GroupId::of(Some("edge"))), ms(2));
        assert_eq!(
            take(&mut o),
            [Action::Evaluate {
                gathered: false,
                forget: BTreeSet::from([GroupId::of(Some("edge"))]),
            }]
        );
    }
}
