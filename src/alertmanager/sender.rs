//! Publish, second sink's I/O edge: one task per Alertmanager, fed by the engine's status
//! channel (the one the micro service and the metrics read), so a slow or unreachable
//! Alertmanager never holds up a round or a publication on NATS. What to send and when is
//! decided by the pure [`crate::alerts::alerts`] and [`crate::alerts::Outbox`].

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{AlertmanagerSettings, Target};
use crate::alerts::{alerts, Alert, Outbox};
use crate::status::{AlertmanagerHealth, EngineStatus};
use crate::time_format;
use crate::timing::Backoff;
use crate::timing::Timing;

/// Longest part of an error reply kept for logs and STATUS.
const ERROR_BODY_MAX: usize = 200;

/// The running senders: their tasks and the health they report.
#[derive(Debug)]
pub struct Senders {
    tasks: Vec<JoinHandle<()>>,
    /// Every target's health, in the order of the flags.
    pub health: watch::Receiver<Vec<AlertmanagerHealth>>,
}

impl Drop for Senders {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The HTTP client the settings describe (TLS roots, client certificate, timeout).
pub fn client(settings: &AlertmanagerSettings) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .user_agent(format!("nats-insights/{}", crate::VERSION));
    if let Some(pem) = &settings.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("--alertmanager-ca: not PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err("--alertmanager-ca: no certificate in the file".to_string());
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(pem) = &settings.identity_pem {
        let identity = reqwest::Identity::from_pem(pem).map_err(|e| {
            format!("--alertmanager-cert/--alertmanager-key: not a PEM certificate and key: {e}")
        })?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up the Alertmanager client: {e}"))
}

/// Starts one sender per target. They run until the status channel closes or [`Senders`] is
/// dropped. Each wakes when its outbox says a send is due ([`Outbox::next_look`]), on the
/// engine's monotonic `origin` like every other deadline of the process; it runs in a task of
/// its own so that HTTP never waits in a round.
pub fn spawn(
    settings: &AlertmanagerSettings,
    timing: &Timing,
    origin: Instant,
    status: watch::Receiver<Arc<EngineStatus>>,
) -> Result<Senders, String> {
    let client = client(settings)?;
    let (health_tx, health) = watch::channel(
        settings
            .targets
            .iter()
            .map(|target| AlertmanagerHealth::pending(&target.endpoint))
            .collect::<Vec<_>>(),
    );
    let health_tx = Arc::new(health_tx);
    let tasks = settings
        .targets
        .iter()
        .enumerate()
        .map(|(index, target)| {
            let sender = Sender {
                index,
                target: target.clone(),
                client: client.clone(),
                resend: settings.resend,
                backoff: timing.alert_backoff,
                resolved_kept: timing.alert_resolved_kept,
                health: health_tx.clone(),
            };
            let span = tracing::info_span!("alertmanager", url = %target.endpoint);
            tokio::spawn(sender.run(origin, status.clone()).instrument(span))
        })
        .collect();
    Ok(Senders { tasks, health })
}

struct Sender {
    index: usize,
    target: Target,
    client: reqwest::Client,
    resend: std::time::Duration,
    backoff: Backoff,
    resolved_kept: std::time::Duration,
    health: Arc<watch::Sender<Vec<AlertmanagerHealth>>>,
}

impl Sender {
    async fn run(self, origin: Instant, mut status: watch::Receiver<Arc<EngineStatus>>) {
        let mut outbox = Outbox::default();
        loop {
            let current = {
                let status = status.borrow_and_update();
                alerts(
                    &status.active,
                    status.recent.resolved.iter(),
                    SystemTime::now(),
                    self.resolved_kept,
                )
            };
            if outbox.due(&current, origin.elapsed(), self.resend) {
                let result = self.post(&current).await;
                let failing_before = outbox.failures() > 0;
                outbox.record(&current, result.is_ok(), origin.elapsed(), self.backoff);
                self.report(&current, &result, failing_before, outbox.failures());
            }
            let now = origin.elapsed();
            let wait = outbox.next_look(now, self.resend).saturating_sub(now);
            tokio::select! {
                changed = status.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn post(&self, alerts: &[Alert]) -> Result<(), String> {
        let mut request = self.client.post(&self.target.endpoint).json(alerts);
        if let Some((user, password)) = &self.target.basic_auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.map_err(|e| describe(&e))?;
        let code = response.status();
        if code.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        let body: String = body.trim().chars().take(ERROR_BODY_MAX).collect();
        Err(format!("HTTP {code}: {body}"))
    }

    fn report(
        &self,
        alerts: &[Alert],
        result: &Result<(), String>,
        failing_before: bool,
        consecutive: u32,
    ) {
        match result {
            Ok(()) => {
                if failing_before {
                    tracing::info!(
                        alerts = alerts.len(),
                        "Alertmanager reachable again: alerts sent"
                    );
                } else {
                    tracing::debug!(alerts = alerts.len(), "alerts sent");
                }
            }
            Err(error) if !failing_before => tracing::warn!(
                %error,
                "cannot send alerts to Alertmanager; retrying with backoff (findings are still published on NATS)"
            ),
            Err(error) => tracing::debug!(%error, consecutive, "Alertmanager still failing"),
        }
        self.health.send_modify(|all| {
            if let Some(h) = all.get_mut(self.index) {
                match result {
                    Ok(()) => {
                        h.state = "ok";
                        h.alerts = alerts.len();
                        h.sends += 1;
                        h.last_success = Some(time_format::rfc3339(SystemTime::now()));
                        h.last_error = None;
                    }
                    Err(error) => {
                        h.state = "failing";
                        h.failures += 1;
                        h.last_error = Some(error.clone());
                    }
                }
                h.consecutive_failures = consecutive;
            }
        });
    }
}

/// A transport error with its causes (reqwest's own message says little: "error sending
/// request").
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
