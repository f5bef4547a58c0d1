//! The HTTP server: accepting HTTP/1 connections, each with its request-head timeout
//! ([`crate::head_timeout`]: a late head is answered 408), and the drain when it is told to stop.
//!
//! [`serve`] accepts until `shutdown` resolves, then closes the listener (new connections are
//! refused), lets every open connection finish the request it is serving (its confirm
//! included) and closes it, idle ones at once, and returns once all are done or
//! `drain_timeout` has passed, whichever is first.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::head_timeout::{HeadClock, HeadTimedIo};

/// How long to wait before accepting again after `accept` failed (e.g. out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long a connection may take for its request heads, and how long the drain may take.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub header: Duration,
    pub drain: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains (see the module).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        spawn_connection(&connections, stream, app.clone(), timeouts.header);
    }
    drop(listener);
    if tokio::time::timeout(timeouts.drain, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in flight after SHUTDOWN_TIMEOUT_MS ({:?}); stopping anyway",
            timeouts.drain
        );
    }
    Ok(())
}

/// Serves one HTTP/1 connection with `app` in a task of its own, watched by `connections`; its
/// heads are timed by a [`HeadClock`] that the service stops when a head has arrived and
/// restarts when the answer is ready.
fn spawn_connection(
    connections: &GracefulShutdown,
    stream: TcpStream,
    app: Router,
    header_timeout: Duration,
) {
    let clock = HeadClock::start();
    let io = TokioIo::new(HeadTimedIo::new(stream, clock.clone(), header_timeout));
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        clock.head_received();
        let answer = app.clone().oneshot(request);
        let clock = clock.clone();
        async move {
            let response = answer.await;
            clock.answered();
            response
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .serve_connection(io, service);
    let connection = connections.watch(connection);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "connection ended with an error");
        }
    });
}
