//! A deliberately small HTTP/1.1 server for `/metrics`, `/healthz`, the status page (`/`, see
//! `page`) and `/api/status.json`: GET and HEAD only, one request per connection
//! (`Connection: close`), request heads capped at 8 KiB and 5 s (answers may be any size). That is
//! all a Prometheus scraper, a Kubernetes probe and a browser need, without a web framework's
//! dependencies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{encode, health, page, Recorder};
use crate::checks::Thresholds;
use crate::service::api::{self, Endpoint};
use crate::service::{EngineStatus, Instance};

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client gets to send its request and read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
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
}

impl MetricsServer {
    /// Binds `addr` (`host:port`).
    pub async fn bind(addr: &str) -> Result<MetricsServer, String> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on --metrics-listen {addr}: {e}"))?;
        Ok(MetricsServer { listener })
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
        });
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
                    Ok((stream, _)) => {
                        let registry = registry.clone();
                        let current = status.borrow().clone();
                        let served = served.clone();
                        tokio::spawn(async move {
                            let answer = tokio::time::timeout(
                                IO_TIMEOUT,
                                answer(stream, &registry, &current, &served),
                            );
                            if let Ok(Err(error)) = answer.await {
                                tracing::debug!(%error, "metrics request failed");
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

/// What every answer may need besides the status, fixed at start.
#[derive(Debug)]
struct Served {
    instance: Instance,
    thresholds: Thresholds,
    poll_interval: Duration,
}

/// A parsed request line.
#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    path: &'a str,
}

/// Parses the request line of a head that ends with an empty line; `None` when it is not HTTP.
fn parse_head(head: &[u8]) -> Option<Request<'_>> {
    let text = std::str::from_utf8(head).ok()?;
    let line = text.lines().next()?;
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    Some(Request { method, path })
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
        "/" => (
            "200 OK",
            HTML_CONTENT_TYPE,
            page::render(status, now, &served.instance, &served.thresholds).into_bytes(),
        ),
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

async fn answer(
    mut stream: TcpStream,
    registry: &Registry,
    status: &EngineStatus,
    served: &Served,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break false;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break true;
        }
        if head.len() > MAX_HEAD {
            break false;
        }
    };
    let request = if complete { parse_head(&head) } else { None };
    let (status_line, content_type, body, head_only) = match request {
        Some(request) => {
            let (line, kind, body) = route(&request, registry, status, served, SystemTime::now());
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
        "HTTP/1.1 {status_line}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut response = head.into_bytes();
    if !head_only {
        response.extend_from_slice(&body);
    }
    stream.write_all(&response).await?;
    stream.shutdown().await
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
                path: "/metrics"
            })
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
        };
        assert_eq!(route(&post).0, "405 Method Not Allowed");
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
