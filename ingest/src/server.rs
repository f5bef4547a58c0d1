//! The HTTP server, and what keeps slow or too many clients from holding it:
//! - [`serve`]: HTTP/1 connections with a header read timeout (`REQUEST_HEADER_TIMEOUT_MS`): a
//!   client that has not sent a whole request head by then is disconnected (hyper closes the
//!   connection; no answer can be framed before a request is), and graceful shutdown.
//! - [`limit_requests`]: at most `MAX_CONCURRENT_REQUESTS` requests at once on the provider
//!   routes; beyond that 503 with `Retry-After`, at once, before any body is read.
//! - [`time_body`]: the body must arrive within `REQUEST_BODY_TIMEOUT_MS` of the request head,
//!   else 408 (a trickled body holds at most its route's size limit, for at most that long).
//!
//! Credentials are checked by extractors before the body is read, so a request without them
//! never holds a body at all.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::error::IngestError;

/// How long to wait before accepting again after `accept` failed (e.g. out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `shutdown` resolves, then lets the open connections finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
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
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
    Ok(())
}

/// The requests that may be in progress at once on the routes it guards.
#[derive(Clone)]
pub struct RequestLimit(Arc<Semaphore>);

impl RequestLimit {
    pub fn new(max_concurrent: usize) -> Self {
        RequestLimit(Arc::new(Semaphore::new(max_concurrent.max(1))))
    }
}

/// Middleware: runs the request if fewer than the limit are in progress, else answers 503.
pub async fn limit_requests(
    State(limit): State<RequestLimit>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = limit.0.try_acquire() else {
        metrics::counter!("ingest_requests_shed_total").increment(1);
        return IngestError::Busy.into_response();
    };
    next.run(request).await
}

/// Middleware: the request's body fails with [`BodyTimeout`] (a 408 from `read_body`) if it has
/// not all arrived `timeout` after the head.
pub async fn time_body(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let request = request.map(|body| {
        Body::new(TimedBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        })
    });
    next.run(request).await
}

/// The error of a body that did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the body did not arrive in time")]
pub struct BodyTimeout;

/// A request body that fails with [`BodyTimeout`] once its deadline passes.
struct TimedBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(context) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        match this.deadline.as_mut().poll(context) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error`, or any error it wraps, is a [`BodyTimeout`].
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |error| error.source())
        .any(|error| error.is::<BodyTimeout>())
}
