//! Publish (after coordinate, before persist): sends the finding events downstream automation relies on
//! (`$INSIGHTS.FINDING.<CHECK>.<EVENT>`, shaped in [`crate::wire`]) and the heartbeat. Core NATS
//! only: publishing never waits on JetStream.

use async_nats::Client;
use serde::Serialize;

use crate::findings::Transition;
pub use nats_insights_core::wire::*;

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Encoding (cannot really fail for these types, but never unwrap).
    #[error("cannot encode event: {0}")]
    Encode(#[from] serde_json::Error),
    /// Never confirmed by a server.
    #[error("{subject} was not confirmed by any server after {attempts} attempts")]
    Unconfirmed {
        /// Subject.
        subject: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The client refused (disconnected with a full buffer, or closed).
    #[error("cannot publish {subject}: {source}")]
    Send {
        /// Subject.
        subject: String,
        /// Client error.
        source: async_nats::PublishError,
    },
}

/// Publishes events on the system-account connection.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    instance: String,
    deployment: String,
    /// How long one attempt waits for the server's confirmation (`Timing::publish_confirm`).
    confirm: std::time::Duration,
    /// Attempts before a publish counts as failed (`Timing::delivery_attempts`).
    attempts: u32,
}

impl Publisher {
    /// A publisher for one instance of `deployment`, confirming and retrying as `timing` says.
    pub fn new(
        client: Client,
        instance: String,
        deployment: String,
        timing: &crate::timing::Timing,
    ) -> Self {
        Publisher {
            client,
            instance,
            deployment,
            confirm: timing.publish_confirm,
            attempts: timing.delivery_attempts.max(1),
        }
    }

    /// Publishes one transition; returns the event sent.
    pub async fn transition(&self, transition: &Transition) -> Result<FindingEvent, PublishError> {
        let mut event = FindingEvent::from_transition(transition, &self.instance);
        event.deployment = self.deployment.clone();
        // (0 before the first INFO: no limit known but ours.)
        let limit = match self.client.server_info().max_payload {
            0 => EVENT_MAX_BYTES,
            max => max.min(EVENT_MAX_BYTES),
        }
        .saturating_sub(HEADER_ROOM);
        if shorten(&mut event, limit) {
            tracing::warn!(finding = %event.finding, limit, "finding event shortened to fit");
        }
        self.send(event.subject(), &event.id, &event).await?;
        Ok(event)
    }

    /// Publishes a heartbeat: once, unconfirmed. A lost heartbeat is replaced by the next one, and
    /// waiting for a stopped server here would hold the pipeline (and the findings) behind a
    /// proof of life; moving off a server that does not answer is the round's job.
    pub async fn heartbeat(&self, heartbeat: &Heartbeat) -> Result<(), PublishError> {
        let payload: bytes::Bytes = serde_json::to_vec(heartbeat)?.into();
        match tokio::time::timeout(
            self.confirm,
            self.client.publish(HEARTBEAT_SUBJECT, payload),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(PublishError::Send {
                subject: HEARTBEAT_SUBJECT.to_string(),
                source,
            }),
            Err(_) => Err(PublishError::Unconfirmed {
                subject: HEARTBEAT_SUBJECT.to_string(),
                attempts: 1,
            }),
        }
    }

    /// Publishes and confirms the server has processed it: a request sent after it on the same
    /// connection is answered (a server handles one connection's messages in order). If not, for
    /// example because the server we are attached to is shutting down, stopped or cut off, it
    /// reconnects and sends the same payload again (same event `id`, so consumers can drop a
    /// duplicate).
    /// `id` also goes out as `Nats-Msg-Id`: a stream that captures the events keeps one copy.
    async fn send<T: Serialize>(
        &self,
        subject: String,
        id: &str,
        body: &T,
    ) -> Result<(), PublishError> {
        let payload: bytes::Bytes = serde_json::to_vec(body)?.into();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.client
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await
                .map_err(|source| PublishError::Send {
                    subject: subject.clone(),
                    source,
                })?;
            if crate::connect::round_trip(&self.client, self.confirm).await {
                return Ok(());
            }
            if attempt >= self.attempts {
                return Err(PublishError::Unconfirmed {
                    subject,
                    attempts: attempt,
                });
            }
            // The server did not answer a round trip: it may be stopped or cut off while the
            // connection still looks up, and would deliver this copy only when it wakes. Move
            // to another server and send again from there (the same event id, so the late copy
            // is recognisable as one).
            tracing::warn!(%subject, attempt, "publish not confirmed; reconnecting and sending again");
            if self.client.connection_state() == async_nats::connection::State::Connected {
                if let Err(error) = self.client.force_reconnect().await {
                    tracing::debug!(%error, "cannot reconnect");
                }
            }
            self.wait_connected(self.confirm).await;
        }
    }

    async fn wait_connected(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.client.connection_state() != async_nats::connection::State::Connected
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
