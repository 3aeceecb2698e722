//! Shutdown: the signal that ends `run` and the client commands that follow the service
//! (SIGINT, and SIGTERM on Unix), a leaf every command may wait on.

/// Completes on Ctrl-C or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// Completes once the sender of `receiver` is gone (the engine that publishes it stopped): what
/// the loops answering requests from the engine's latest state end on, with
/// `StreamExt::take_until`.
pub async fn sender_dropped<T>(mut receiver: tokio::sync::watch::Receiver<T>) {
    while receiver.changed().await.is_ok() {}
}
