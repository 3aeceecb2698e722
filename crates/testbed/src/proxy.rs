//! A loopback TCP proxy that a test can cut and heal, to partition nats-server route links.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards every connection accepted on a loopback port to `target`.
///
/// While cut, live connections are dropped and new ones are accepted and closed at once,
/// which looks to nats-server like a peer that went away. Dropping the proxy stops its
/// accept loop and closes every connection it forwards.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    target: SocketAddr,
    cut: watch::Sender<bool>,
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
        let accept_task = tokio::spawn(accept_loop(listener, target, cut_rx));
        Ok(TcpProxy {
            addr,
            target,
            cut,
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
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // Connection tasks notice the dropped sender and exit on their own.
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, cut: watch::Receiver<bool>) {
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
        tokio::spawn(forward(inbound, target, cut.clone()));
    }
}

async fn forward(mut inbound: TcpStream, target: SocketAddr, mut cut: watch::Receiver<bool>) {
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        // Ends when the proxy is cut, or when the proxy is dropped (sender gone).
        _ = cut.wait_for(|cut| *cut) => {}
    }
}
