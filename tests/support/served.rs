//! A monitor in the test process with its HTTP listener (`/metrics`, `/healthz`, the status
//! page) on a free loopback port, as `run --metrics-listen 127.0.0.1:0` serves it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nats_insights::engine::{self, EngineConfig, EngineError};
use nats_insights::http::MetricsServer;
use nats_insights::service::Instance;
use testbed::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::sys_connect;

/// The running monitor and where it serves.
pub struct ServedMonitor {
    /// The HTTP listener's address.
    pub addr: SocketAddr,
    /// The server its main connection is attached to.
    pub attached: String,
    stop: Option<oneshot::Sender<()>>,
    engine: Option<JoinHandle<Result<(), EngineError>>>,
}

impl ServedMonitor {
    /// Connects to `cluster` as the system account and starts the engine and the listener.
    pub async fn start(cluster: &Cluster) -> ServedMonitor {
        let connections = sys_connect(cluster)
            .open("nats-insights-test")
            .await
            .expect("monitor connects");
        let attached = connections.main.server_info().server_name;
        let server = MetricsServer::bind("127.0.0.1:0").await.expect("bind");
        let addr = server.local_addr().expect("address");
        let instance = Instance {
            id: nuid::next().to_string(),
            started: SystemTime::now(),
        };
        let (status_tx, status_rx) = tokio::sync::watch::channel(Arc::default());
        let config = super::accepting_default_sync(EngineConfig::default());
        tokio::spawn(server.serve(
            status_rx,
            instance.clone(),
            config.thresholds,
            config.poll_interval,
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let engine = tokio::spawn(engine::run_with_status(
            connections,
            config,
            instance,
            async move {
                let _ = stopped.await;
            },
            status_tx,
        ));
        ServedMonitor {
            addr,
            attached,
            stop: Some(stop),
            engine: Some(engine),
        }
    }

    /// Stops the engine and waits for it (a stop may wait out a bucket leader election); the
    /// listener ends with it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(engine) = self.engine.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), engine).await;
        }
    }
}

/// A plain HTTP/1.1 GET: (status code, headers, body). `None` when nothing listens (yet).
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    // `Connection: close`: servers that keep connections alive (Prometheus) end the answer too.
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .ok()?
        .ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, head.to_string(), body.to_string()))
}
