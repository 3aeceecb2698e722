//! The servers the monitor's connections are attached to: whether they answer, whether they are
//! cut off from the meta group, and moving the connections off them, at most once per
//! `move_every` each. What goes through a stopped or cut-off server reaches nobody, or only its
//! side of a cut, or arrives late.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::Client;

use crate::checks::{MemberState, MetaAssessment};
use crate::timing::Timing;
use nats_insights_core::observe::policy::Footing;

/// True when `server` answers but the meta group judges it offline while others are online: it
/// is cut off from the group, and what goes through it reaches only its side.
pub fn cut_off(meta: &MetaAssessment, server: &str) -> bool {
    meta.members
        .iter()
        .any(|m| m.name == server && m.answered && matches!(m.state, MemberState::Offline(_)))
        && meta.members.iter().any(|m| m.online())
}

/// The health of the main and state connections' servers, and when each was last moved.
#[derive(Debug)]
pub struct Attached {
    every: Duration,
    settle: Duration,
    answer: Duration,
    moved_at: Option<Instant>,
    state_moved_at: Option<Instant>,
}

impl Attached {
    /// With the timers of `timing`.
    pub fn new(timing: &Timing) -> Attached {
        Attached {
            every: timing.move_every,
            settle: timing.move_settle,
            answer: timing.attached_answer,
            moved_at: None,
            state_moved_at: None,
        }
    }

    /// True when the connection is up and its server answers a round trip (a flush only proves
    /// the bytes reached the socket: a stopped server still takes them).
    pub async fn answers(&self, client: &Client) -> bool {
        client.connection_state() == State::Connected
            && crate::connect::round_trip(client, self.answer).await
    }

    /// Moves the main connection to another server and waits (briefly) until it is attached
    /// there. At most once per `move_every`. True when it is now attached to another server.
    pub async fn move_away(&mut self, client: &Client, why: &str) -> bool {
        if self.moved_at.is_some_and(|at| at.elapsed() < self.every) {
            return false;
        }
        self.moved_at = Some(Instant::now());
        let server = client.server_info().server_name;
        tracing::warn!(%server, "the server this monitor is attached to {why}; moving to another");
        if let Err(error) = client.force_reconnect().await {
            tracing::warn!(%error, "cannot move to another server");
            return false;
        }
        let deadline = tokio::time::Instant::now() + self.settle;
        loop {
            let moved = client.connection_state() == State::Connected
                && client.server_info().server_name != server;
            if moved || tokio::time::Instant::now() >= deadline {
                return moved;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the main connection can publish this round, on the `footing` the observation
    /// policy judged ([`Footing`]): moves it first when its server is leaving (if still attached
    /// to it: the connection may already have moved, and moving again could push it off the
    /// only server left) or cut off from a meta group, and says no while it settles after a
    /// reconnect, stays on a silent or cut-off server, or does not answer a round trip (only
    /// asked when `asked`, i.e. something waits to be published).
    pub async fn publishable(
        &mut self,
        client: &Client,
        metas: &[&MetaAssessment],
        asked: bool,
        footing: Footing,
    ) -> bool {
        if let Some(server) = footing.leaving {
            if client.server_info().server_name == server {
                self.move_away(client, "is going away").await;
            }
        }
        if footing.settling {
            return false;
        }
        let mut stuck = footing.silent;
        let attached = client.server_info().server_name;
        if metas.iter().any(|meta| cut_off(meta, &attached)) {
            self.move_away(client, "is cut off from the meta group")
                .await;
            // Still there (a move was made moments ago, or failed): nothing goes through it.
            stuck |= client.server_info().server_name == attached;
        }
        if !asked {
            return !stuck;
        }
        let connects = client.statistics().connects.load(Ordering::Relaxed);
        let live = !stuck && self.answers(client).await;
        // A reconnect lost the round trip: the server the connection is on now is not to blame.
        let reconnected = client.statistics().connects.load(Ordering::Relaxed) != connects
            || client.connection_state() != State::Connected;
        if !live && !reconnected {
            self.move_away(client, "does not answer").await;
        }
        live
    }

    /// Moves the state connection off a server that answered nothing on any path (it is in
    /// `unanswered`, the servers silent in a poll that heard others) or is cut off
    /// from the meta group (at most once per `move_every`): writes through it would time out.
    pub async fn keep_state_fit(
        &mut self,
        state: Option<&Client>,
        unanswered: &std::collections::BTreeSet<String>,
        metas: &[&MetaAssessment],
    ) {
        let Some(client) = state.filter(|c| c.connection_state() == State::Connected) else {
            return;
        };
        let server = client.server_info().server_name;
        if !(unanswered.contains(&server) || metas.iter().any(|m| cut_off(m, &server)))
            || self
                .state_moved_at
                .is_some_and(|at| at.elapsed() < self.every)
        {
            return;
        }
        self.state_moved_at = Some(Instant::now());
        tracing::warn!(%server, "the state connection's server does not answer or is cut off; moving it to another");
        if let Err(error) = client.force_reconnect().await {
            tracing::warn!(%error, "cannot move the state connection to another server");
        }
    }
}
