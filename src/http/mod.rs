//! Serve, over HTTP: the listener of `--metrics-listen`. [`metrics`] turns the status into
//! Prometheus metrics and the health verdict, the status page is rendered by the core from the
//! STATUS and HISTORY responses ([`nats_insights_core::render::page`]), [`web`] reads the web
//! config file (TLS, basic auth).
//!
//! A deliberately small HTTP/1.1 server for `/metrics`, `/healthz`, the status page (`/`, see
//! `page`) and `/api/status.json`: GET and HEAD only, one request per connection
//! (`Connection: close`), request heads capped at 8 KiB, at most 256 connections open (when full,
//! a new one takes the place of the oldest that has not sent its head yet), each given 5 s to
//! finish its TLS handshake and send its head, and 10 s to take its answer (which may be any
//! size). TLS and basic auth come from a web config file (`web`). That is all a Prometheus
//! scraper, a Kubernetes probe and a browser need, without a web framework's dependencies.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

pub mod metrics;
pub mod web;

use crate::checks::Thresholds;
use crate::service::api::{self, Endpoint};
use crate::service::status::status_response;
use crate::service::{EngineStatus, Instance};
use metrics::{encode, health, Recorder};
use nats_insights_core::render::page;
use web::WebConfig;

/// Largest request head read (a body is never read: GET and HEAD only).
const MAX_HEAD: usize = 8 * 1024;
/// Connections open at once. When all are taken, a new one takes the place of the oldest that
/// has not sent its head yet (a scraper sends its head at once; an idle socket never does), and is
/// closed at once only when every connection is past its head. Each holds a task and a socket for
/// at most `HEAD_TIMEOUT` + `ANSWER_TIMEOUT`: a flood costs bounded memory, never the engine.
pub const MAX_CONNECTIONS: usize = 256;
/// Time a client gets, from its connection, to finish the TLS handshake and send its request
/// head: a client that sends nothing, or dribbles its head, is dropped after it.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to check the credentials and hand over the answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Least time between two warnings that connections were dropped for room.
const REFUSED_WARN_EVERY: Duration = Duration::from_secs(60);
/// Content type of the text exposition format prometheus-client writes (OpenMetrics text).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the status page.
pub const HTML_CONTENT_TYPE: &str = "text/html; charset=utf-8";
/// Content type of `/api/status.json`.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// Path of the STATUS response over HTTP.
pub const STATUS_JSON_PATH: &str = "/api/status.json";

/// A bound metrics listener, not serving yet (binding first makes a busy port a startup error).
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    web: WebConfig,
}

impl MetricsServer {
    /// Binds `addr` (`host:port`).
    pub async fn bind(addr: &str) -> Result<MetricsServer, String> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on --metrics-listen {addr}: {e}"))?;
        Ok(MetricsServer {
            listener,
            web: WebConfig::default(),
        })
    }

    /// Serves with the TLS and basic auth of a web config file (`--web-config-file`).
    pub fn with_web_config(mut self, web: WebConfig) -> MetricsServer {
        self.web = web;
        self
    }

    /// What the web config file turned on, for the start-up log line.
    pub fn web_config_summary(&self) -> String {
        self.web.summary()
    }

    /// `https` when serving TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.web.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until the engine's status channel closes. `instance` is this process (leader
    /// changes before it started are not counted; `/api/status.json` names it as STATUS does);
    /// `thresholds` are the checks' (the page shows a member behind as META_101 judges it);
    /// `poll_interval` sets what `/healthz` calls recent.
    pub async fn serve(
        self,
        mut status: watch::Receiver<Arc<EngineStatus>>,
        instance: Instance,
        thresholds: Thresholds,
        poll_interval: Duration,
    ) {
        let mut recorder = Recorder::new(instance.started);
        let served = Arc::new(Served {
            instance,
            thresholds,
            poll_interval,
            auth: self.web.auth.clone(),
        });
        let tls = self.web.tls.clone().map(TlsAcceptor::from);
        let slots = Slots::new(MAX_CONNECTIONS);
        let (mut dropped, mut warned_at) = (0u64, None::<Instant>);
        let registry = recorder.registry();
        recorder.update(&status.borrow_and_update());
        loop {
            tokio::select! {
                changed = status.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let current = status.borrow_and_update().clone();
                    recorder.update(&current);
                }
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let (permit, took_over) = slots.take();
                        if took_over || permit.is_none() {
                            dropped += 1;
                            if warned_at.is_none_or(|t| t.elapsed() >= REFUSED_WARN_EVERY) {
                                tracing::warn!(
                                    dropped,
                                    %peer,
                                    "metrics listener has {MAX_CONNECTIONS} connections open: \
                                     dropping the oldest idle ones, or new ones when none is idle \
                                     (counted since start)"
                                );
                                warned_at = Some(Instant::now());
                            }
                        }
                        // Every connection is past its head: closing at once costs nothing.
                        let Some(permit) = permit else {
                            drop(stream);
                            continue;
                        };
                        let (waiter, evicted) = slots.wait(permit);
                        let registry = registry.clone();
                        let served = served.clone();
                        let status = status.clone();
                        let tls = tls.clone();
                        tokio::spawn(async move {
                            let deadline = Instant::now() + HEAD_TIMEOUT;
                            let connection = async {
                                match tls {
                                    Some(tls) => match tokio::time::timeout_at(deadline, tls.accept(stream)).await {
                                        Ok(Ok(stream)) => {
                                            exchange(stream, deadline, Some(waiter), &registry, &status, &served).await
                                        }
                                        Ok(Err(error)) => Err(error),
                                        Err(_) => Err(timed_out("TLS handshake")),
                                    },
                                    None => exchange(stream, deadline, Some(waiter), &registry, &status, &served).await,
                                }
                            };
                            let result = tokio::select! {
                                result = connection => result,
                                // Only a signal counts: the sender is also dropped when the
                                // head is in and the connection takes its slot back.
                                Ok(()) = evicted => Err(taken_over()),
                            };
                            if let Err(error) = result {
                                tracing::debug!(%error, %peer, "metrics request failed");
                            }
                        });
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(%error, "metrics listener cannot accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }
}

/// The listener's connection slots (permits). A connection holds one from accept to close; until
/// its head is in, the slot is parked here with a way to drop the connection, so that a newcomer
/// can take the oldest parked slot when none is free.
struct Slots {
    room: Arc<Semaphore>,
    /// Connections waiting for their head, by accept order: their slot and their drop signal.
    waiting: Mutex<BTreeMap<u64, (OwnedSemaphorePermit, oneshot::Sender<()>)>>,
    next: AtomicU64,
}

impl Slots {
    fn new(size: usize) -> Arc<Slots> {
        Arc::new(Slots {
            room: Arc::new(Semaphore::new(size)),
            waiting: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
        })
    }

    /// A slot for a new connection: a free one, else the oldest waiting connection's (which is
    /// told to close; `true`), else none (every connection is past its head).
    fn take(&self) -> (Option<OwnedSemaphorePermit>, bool) {
        if let Ok(permit) = self.room.clone().try_acquire_owned() {
            return (Some(permit), false);
        }
        let oldest = self.waiting.lock().ok().and_then(|mut w| w.pop_first());
        match oldest {
            Some((_, (permit, drop_it))) => {
                let _ = drop_it.send(());
                (Some(permit), true)
            }
            None => (None, false),
        }
    }

    /// Parks the slot of a connection that has not sent its head; the receiver fires when a
    /// newcomer takes it.
    fn wait(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> (Waiter, oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (drop_it, dropped) = oneshot::channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(id, (permit, drop_it));
        }
        (
            Waiter {
                slots: self.clone(),
                id,
            },
            dropped,
        )
    }
}

/// A connection's parked slot; dropping it frees the slot.
struct Waiter {
    slots: Arc<Slots>,
    id: u64,
}

impl Waiter {
    /// The slot back once the head is in; `None` when a newcomer took it meanwhile.
    fn done(self) -> Option<OwnedSemaphorePermit> {
        let mut waiting = self.slots.waiting.lock().ok()?;
        waiting.remove(&self.id).map(|(permit, _)| permit)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Ok(mut waiting) = self.slots.waiting.lock() {
            waiting.remove(&self.id);
        }
    }
}

fn taken_over() -> std::io::Error {
    std::io::Error::other("closed before its head came in: the listener was full")
}

/// What every answer may need besides the status, fixed at start.
#[derive(Debug)]
struct Served {
    instance: Instance,
    thresholds: Thresholds,
    poll_interval: Duration,
    /// Users of the web config file; `None` serves everyone.
    auth: Option<Arc<web::BasicAuth>>,
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    path: &'a str,
    /// The value of the `Authorization` header, if any.
    authorization: Option<&'a str>,
}

/// Parses a head that ends with an empty line; `None` when it is not HTTP.
fn parse_head(head: &[u8]) -> Option<Request<'_>> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.lines();
    let line = lines.next()?;
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    let authorization = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.trim());
    Some(Request {
        method,
        path,
        authorization,
    })
}

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} not done within {HEAD_TIMEOUT:?}"),
    )
}

/// Status line, content type and body for a request.
fn route(
    request: &Request<'_>,
    registry: &Registry,
    status: &EngineStatus,
    served: &Served,
    now: SystemTime,
) -> (&'static str, &'static str, Vec<u8>) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if request.method != "GET" && request.method != "HEAD" {
        return (
            "405 Method Not Allowed",
            TEXT,
            b"GET or HEAD only\n".to_vec(),
        );
    }
    match request.path {
        "/" => {
            // The page shows what STATUS and HISTORY answer; HISTORY at its largest limit holds
            // every entry kept, so the timeline misses none.
            let history = api::history_response(status, api::MAX_LIMIT, now);
            let response = status_response(status, &served.instance, now);
            let html = page::render(&response, &history, now, &served.thresholds);
            ("200 OK", HTML_CONTENT_TYPE, html.into_bytes())
        }
        STATUS_JSON_PATH => {
            // The very bytes `$INSIGHTS.API.STATUS` answers with.
            let ctx = api::Context {
                status,
                instance: &served.instance,
                thresholds: &served.thresholds,
                now,
            };
            match api::handle(Endpoint::Status, b"", ctx) {
                Ok(body) => ("200 OK", JSON_CONTENT_TYPE, body),
                Err(error) => (
                    "500 Internal Server Error",
                    TEXT,
                    format!("{error}\n").into_bytes(),
                ),
            }
        }
        "/metrics" => (
            "200 OK",
            METRICS_CONTENT_TYPE,
            encode(registry).into_bytes(),
        ),
        "/healthz" => match health(status, served.poll_interval, now) {
            Ok(reason) => ("200 OK", TEXT, format!("{reason}\n").into_bytes()),
            Err(reason) => (
                "503 Service Unavailable",
                TEXT,
                format!("{reason}\n").into_bytes(),
            ),
        },
        _ => (
            "404 Not Found",
            TEXT,
            format!("try / (the status page), {STATUS_JSON_PATH}, /metrics or /healthz\n")
                .into_bytes(),
        ),
    }
}

/// Reads a request head: `true` once it ends with an empty line, `false` when the client closes
/// first or sends more than `MAX_HEAD`.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    head: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(false);
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(true);
        }
        if head.len() > MAX_HEAD {
            return Ok(false);
        }
    }
}

/// One request and its answer on an accepted (and, with TLS, handshaken) connection: the head
/// must be in by `deadline`, the answer out within `ANSWER_TIMEOUT`. `waiter` is the connection's
/// parked slot, taken back once the head is in.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    deadline: Instant,
    waiter: Option<Waiter>,
    registry: &Registry,
    status: &watch::Receiver<Arc<EngineStatus>>,
    served: &Served,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let complete = tokio::time::timeout_at(deadline, read_head(&mut stream, &mut head))
        .await
        .map_err(|_| timed_out("request head"))??;
    let _slot = match waiter {
        Some(waiter) => Some(waiter.done().ok_or_else(taken_over)?),
        None => None,
    };
    let request = if complete { parse_head(&head) } else { None };
    tokio::time::timeout(ANSWER_TIMEOUT, async {
        let allowed = match (&request, &served.auth) {
            (Some(request), Some(auth)) => auth.allows(request.authorization).await,
            _ => true,
        };
        let mut extra = "";
        let (status_line, content_type, body, head_only) = match request {
            Some(request) if !allowed => {
                extra = "WWW-Authenticate: Basic realm=\"nats-insights\", charset=\"UTF-8\"\r\n";
                (
                    "401 Unauthorized",
                    "text/plain; charset=utf-8",
                    b"unauthorized\n".to_vec(),
                    request.method == "HEAD",
                )
            }
            Some(request) => {
                // The status as it is now, after the client's head came in.
                let current = status.borrow().clone();
                let (line, kind, body) =
                    route(&request, registry, &current, served, SystemTime::now());
                (line, kind, body, request.method == "HEAD")
            }
            None => (
                "400 Bad Request",
                "text/plain; charset=utf-8",
                b"bad request\n".to_vec(),
                false,
            ),
        };
        let head = format!(
            "HTTP/1.1 {status_line}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let mut response = head.into_bytes();
        if !head_only {
            response.extend_from_slice(&body);
        }
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "answer not taken in time"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_and_garbage_does_not() {
        assert_eq!(
            parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(Request {
                method: "GET",
                path: "/metrics",
                authorization: None,
            })
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nauthorization:  Basic dTpw \r\n\r\nAuthorization: x")
                .and_then(|r| r.authorization),
            Some("Basic dTpw")
        );
        assert_eq!(parse_head(b"\x16\x03\x01 binary"), None);
        assert_eq!(parse_head(b"GET /metrics\r\n\r\n"), None);
    }

    fn served() -> Served {
        Served {
            instance: Instance {
                id: "test-instance".into(),
                started: SystemTime::UNIX_EPOCH,
            },
            thresholds: Thresholds::default(),
            poll_interval: Duration::from_secs(1),
            auth: None,
        }
    }

    #[test]
    fn routes() {
        let registry = Recorder::new(SystemTime::now()).registry();
        let status = EngineStatus::default();
        let served = served();
        let now = SystemTime::now();
        let get = |path| Request {
            method: "GET",
            path,
            authorization: None,
        };
        let route = |request: &Request<'_>| route(request, &registry, &status, &served, now);
        assert_eq!(route(&get("/metrics")).0, "200 OK");
        assert_eq!(route(&get("/healthz")).0, "503 Service Unavailable");
        let (line, kind, body) = route(&get("/"));
        assert_eq!((line, kind), ("200 OK", HTML_CONTENT_TYPE));
        assert!(body.starts_with(b"<!doctype html>"));
        assert_eq!(route(&get(STATUS_JSON_PATH)).1, JSON_CONTENT_TYPE);
        let (line, _, body) = route(&get("/index.php"));
        assert_eq!(line, "404 Not Found");
        let hint = String::from_utf8_lossy(&body).to_string();
        assert!(hint.contains("/ (the status page)"), "{hint}");
        let post = Request {
            method: "POST",
            path: "/metrics",
            authorization: None,
        };
        assert_eq!(route(&post).0, "405 Method Not Allowed");
    }

    #[test]
    fn a_full_listener_gives_the_oldest_idle_slot_to_a_newcomer() {
        let slots = Slots::new(2);
        let (first, took_over) = slots.take();
        assert!(!took_over);
        let (first, mut first_dropped) = slots.wait(first.expect("free slot"));
        let (second, _) = slots.take();
        let (second, mut second_dropped) = slots.wait(second.expect("free slot"));
        // Full: the newcomer takes the oldest waiting connection's slot, which is told to close.
        let (third, took_over) = slots.take();
        assert!(took_over && third.is_some());
        assert!(first_dropped.try_recv().is_ok());
        assert!(first.done().is_none(), "its slot is gone");
        // A connection past its head keeps its slot; with none waiting, a newcomer is refused.
        let _answering = second.done().expect("still its slot");
        assert!(second_dropped.try_recv().is_err());
        let (third, _) = slots.wait(third.expect("slot"));
        let _answering_too = third.done().expect("its slot");
        assert!(matches!(slots.take(), (None, false)));
        drop(_answering);
        assert!(
            slots.take().0.is_some(),
            "a slot frees when its connection ends"
        );
    }

    /// One exchange over an in-memory stream: the answer's status line and head.
    async fn exchange_with(served: &Served, request: &str) -> String {
        let registry = Recorder::new(SystemTime::now()).registry();
        let (_tx, status) = watch::channel(Arc::new(EngineStatus::default()));
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(request.as_bytes()).await.expect("write");
        let deadline = Instant::now() + HEAD_TIMEOUT;
        exchange(server, deadline, None, &registry, &status, served)
            .await
            .expect("exchange");
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.expect("read");
        answer
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_string()
    }

    #[tokio::test]
    async fn basic_auth_guards_every_path_with_401_and_a_challenge() {
        let hash = bcrypt::hash("pw", 4).expect("hash");
        let web = WebConfig::parse(
            &format!("basic_auth_users:\n  scraper: '{hash}'\n"),
            std::path::Path::new("."),
        )
        .expect("web config");
        let guarded = Served {
            auth: web.auth,
            ..served()
        };
        for path in ["/metrics", "/healthz", "/", STATUS_JSON_PATH, "/nothing"] {
            let head = exchange_with(&guarded, &format!("GET {path} HTTP/1.1\r\n\r\n")).await;
            assert!(
                head.starts_with("HTTP/1.1 401 Unauthorized"),
                "{path}: {head}"
            );
            assert!(
                head.contains("\r\nWWW-Authenticate: Basic realm="),
                "{head}"
            );
        }
        // dXNlcjpwdw== is user:pw (a user that does not exist); c2NyYXBlcjpwdw== is scraper:pw.
        let wrong = "GET /metrics HTTP/1.1\r\nAuthorization: Basic dXNlcjpwdw==\r\n\r\n";
        assert!(exchange_with(&guarded, wrong).await.contains(" 401 "));
        let right = "GET /metrics HTTP/1.1\r\nAuthorization: Basic c2NyYXBlcjpwdw==\r\n\r\n";
        let head = exchange_with(&guarded, right).await;
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(!head.contains("WWW-Authenticate"), "{head}");
        // Without users everyone is served; garbage is still a 400.
        let open = served();
        assert!(exchange_with(&open, "GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200 OK"));
        assert!(exchange_with(&open, "\x16\x03\x01 hello\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 400 Bad Request"));
    }

    #[test]
    fn status_json_is_what_the_status_endpoint_answers() {
        let registry = Recorder::new(SystemTime::now()).registry();
        let status = EngineStatus::default();
        let served = served();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let request = Request {
            method: "GET",
            path: STATUS_JSON_PATH,
            authorization: None,
        };
        let (line, _, body) = route(&request, &registry, &status, &served, now);
        assert_eq!(line, "200 OK");
        let ctx = api::Context {
            status: &status,
            instance: &served.instance,
            thresholds: &served.thresholds,
            now,
        };
        assert_eq!(
            body,
            api::handle(Endpoint::Status, b"", ctx).expect("STATUS answers")
        );
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(json["type"], crate::service::STATUS_TYPE);
        assert_eq!(json["instance"], "test-instance");
    }
}
