//! A deliberately small HTTP/1.1 server for `/metrics` and `/healthz`: GET and HEAD only, one
//! request per connection (`Connection: close`), request heads capped at 8 KiB and 5 s. That is
//! all a Prometheus scraper and a Kubernetes probe need, without a web framework's dependencies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{encode, health, Recorder};
use crate::service::EngineStatus;

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client gets to send its request and read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Content type of the text exposition format prometheus-client writes (OpenMetrics text).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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

    /// Serves until the engine's status channel closes. `since` is when this process started
    /// (leader changes before it are not counted); `poll_interval` sets what `/healthz` calls
    /// recent.
    pub async fn serve(
        self,
        mut status: watch::Receiver<Arc<EngineStatus>>,
        poll_interval: Duration,
        since: SystemTime,
    ) {
        let mut recorder = Recorder::new(since);
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
                        tokio::spawn(async move {
                            let answer = tokio::time::timeout(
                                IO_TIMEOUT,
                                answer(stream, &registry, &current, poll_interval),
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
    poll_interval: Duration,
) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if request.method != "GET" && request.method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "GET or HEAD only\n".into());
    }
    match request.path {
        "/metrics" => ("200 OK", METRICS_CONTENT_TYPE, encode(registry)),
        "/healthz" => match health(status, poll_interval, SystemTime::now()) {
            Ok(reason) => ("200 OK", TEXT, format!("{reason}\n")),
            Err(reason) => ("503 Service Unavailable", TEXT, format!("{reason}\n")),
        },
        _ => ("404 Not Found", TEXT, "try /metrics or /healthz\n".into()),
    }
}

async fn answer(
    mut stream: TcpStream,
    registry: &Registry,
    status: &EngineStatus,
    poll_interval: Duration,
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
            let (line, kind, body) = route(&request, registry, status, poll_interval);
            (line, kind, body, request.method == "HEAD")
        }
        None => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "bad request\n".to_string(),
            false,
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status_line}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
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

    #[test]
    fn routes() {
        let registry = Recorder::new(SystemTime::now()).registry();
        let status = EngineStatus::default();
        let get = |path| Request {
            method: "GET",
            path,
        };
        let interval = Duration::from_secs(1);
        assert_eq!(
            route(&get("/metrics"), &registry, &status, interval).0,
            "200 OK"
        );
        assert_eq!(
            route(&get("/healthz"), &registry, &status, interval).0,
            "503 Service Unavailable"
        );
        assert_eq!(
            route(&get("/"), &registry, &status, interval).0,
            "404 Not Found"
        );
        let post = Request {
            method: "POST",
            path: "/metrics",
        };
        assert_eq!(
            route(&post, &registry, &status, interval).0,
            "405 Method Not Allowed"
        );
    }
}
