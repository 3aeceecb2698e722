//! A loopback TCP proxy that a test can cut and heal, to partition nats-server route links, or
//! throttle, to make a link slow.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards every connection accepted on a loopback port to `target`.
///
/// While cut, live connections are dropped and new ones are accepted and closed at once,
/// which looks to nats-server like a peer that went away. While throttled, each direction of
/// every connection carries at most the given bytes per second (a slow link: nothing is
/// dropped). Dropping the proxy stops its accept loop and closes every connection it forwards.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    target: SocketAddr,
    cut: watch::Sender<bool>,
    rate: watch::Sender<Option<u64>>,
    accept_task: JoinHandle<()>,
}

impl TcpProxy {
    /// Binds a loopback port this process never handed out before and starts forwarding to `target`.
    pub async fn start(target: SocketAddr) -> io::Result<TcpProxy> {
        // A port a killed node of another test left free must not become this proxy's: a
        // client that knew that node would reconnect through here into the wrong cluster.
        let mut held = Vec::new();
        let listener = loop {
            let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
            if super::claim_port(listener.local_addr()?.port()) || held.len() >= 100 {
                break listener;
            }
            held.push(listener);
        };
        drop(held);
        let addr = listener.local_addr()?;
        let (cut, cut_rx) = watch::channel(false);
        let (rate, rate_rx) = watch::channel(None);
        let accept_task = tokio::spawn(accept_loop(listener, target, cut_rx, rate_rx));
        Ok(TcpProxy {
            addr,
            target,
            cut,
            rate,
            accept_task,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address connections are forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Drops every live connection and refuses new ones (accepts and closes them) until
    /// [`TcpProxy::heal`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards new connections again after [`TcpProxy::cut`].
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }

    /// Whether the proxy is currently cut.
    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }

    /// Limits each direction of every connection, live and new, to `bytes_per_second` (at
    /// least 1); `None` lifts the limit.
    pub fn throttle(&self, bytes_per_second: Option<u64>) {
        self.rate.send_replace(bytes_per_second.map(|r| r.max(1)));
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // Connection tasks notice the dropped sender and exit on their own.
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    cut: watch::Receiver<bool>,
    rate: watch::Receiver<Option<u64>>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            // Accept errors (e.g. too many open files) are transient; back off briefly.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        if *cut.borrow() {
            drop(inbound);
            continue;
        }
        tokio::spawn(forward(inbound, target, cut.clone(), rate.clone()));
    }
}

async fn forward(
    inbound: TcpStream,
    target: SocketAddr,
    mut cut: watch::Receiver<bool>,
    rate: watch::Receiver<Option<u64>>,
) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::select! {
        // Either direction closing closes the connection.
        _ = pump(in_read, out_write, rate.clone()) => {}
        _ = pump(out_read, in_write, rate) => {}
        // Ends when the proxy is cut, or when the proxy is dropped (sender gone).
        _ = cut.wait_for(|cut| *cut) => {}
    }
}

/// Copies `from` to `to` until either closes, at most `rate` bytes per second while one is set:
/// reads of at most a twentieth of a second's worth, each followed by the time it is worth.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    rate: watch::Receiver<Option<u64>>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let limit = *rate.borrow();
        let want = limit.map_or(buf.len(), |r| buf.len().min((r / 20).max(1) as usize));
        let n = from.read(&mut buf[..want]).await?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        if let Some(r) = limit {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / r as f64)).await;
        }
    }
}
