//! kfix serve's HTTP listener: a cap on open connections, a deadline for a request's
//! headers and one for the whole request, and a shutdown that waits a bounded time —
//! so half-sent requests cannot pile up or hold the server open.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How much the listener lets clients take.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once; one more is closed at once.
    pub max_connections: usize,
    /// A client must have sent its request's headers within this.
    pub header_timeout: Duration,
    /// And be answered within this (headers, body and handler: a connection carries
    /// one request).
    pub request_timeout: Duration,
    /// At shutdown, requests in flight get this long; then their connections close.
    pub shutdown_grace: Duration,
}

/// Serve `router` on `listener` until `shutdown` resolves; `refused(why)` is told of
/// each connection closed for being over the cap.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
    refused: impl Fn(String),
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                // Out of descriptors, a connection reset before accept: try again soon.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            refused(format!(
                "connection from {peer} closed: {} connections are open (the cap)",
                limits.max_connections
            ));
            continue;
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .keep_alive(false);
        let conn = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let conn = graceful.watch(conn);
        let deadline = limits.request_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(deadline, conn).await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await;
}
