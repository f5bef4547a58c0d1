//! What keeps too many or too slow requests from holding ingest, as middleware on the provider
//! routes (health, metrics and OpenAPI are not guarded, so they answer under any load):
//! - [`limit_requests`]: at most `MAX_CONCURRENT_REQUESTS` requests at once; beyond that 503
//!   with `Retry-After`, at once, before any body is read.
//! - [`guard_body`]: the body must arrive within `REQUEST_BODY_TIMEOUT_MS` of the request head,
//!   else 408; and its bytes are taken from the process's [`BodyBudget`]
//!   (`MAX_BODY_BYTES_IN_FLIGHT`) as they arrive and given back once the request is answered,
//!   so however many clients trickle bodies at once, the bodies held stay within the budget: a
//!   body that would go past it is answered 503 with `Retry-After` (at once, before it is read,
//!   when its `Content-Length` already does). The gauge `ingest_body_bytes_in_flight` shows
//!   what is taken.
//!
//! Credentials are checked by extractors before the body is read, so a request without them
//! never holds a body at all. Request heads are bounded by [`crate::head_timeout`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use tokio::sync::Semaphore;

use crate::error::IngestError;

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

/// Body bytes one process may hold at once: a semaphore with a permit per byte.
pub struct BodyBudget {
    bytes: Semaphore,
    in_flight: metrics::Gauge,
}

impl BodyBudget {
    pub fn new(max_bytes: usize) -> Self {
        BodyBudget {
            bytes: Semaphore::new(max_bytes.min(Semaphore::MAX_PERMITS)),
            in_flight: metrics::gauge!("ingest_body_bytes_in_flight"),
        }
    }
}

/// What [`guard_body`] needs: the body deadline, the budget, and the largest body a route
/// accepts (a longer `Content-Length` is the route's 413, not a 503).
#[derive(Clone)]
pub struct BodyGuard {
    pub timeout: Duration,
    pub budget: Arc<BodyBudget>,
    pub largest_body: usize,
}

/// Middleware: the request's body fails with [`BodyRefused::Late`] (a 408 from `read_body`) if
/// it has not all arrived `timeout` after the head, and with [`BodyRefused::OverBudget`] (a 503)
/// when its next bytes do not fit in the budget. What it took is given back once the answer is
/// ready (the body read is held until then) and the body is dropped.
pub async fn guard_body(State(guard): State<BodyGuard>, request: Request, next: Next) -> Response {
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    let fits = |length: usize| length <= guard.budget.bytes.available_permits();
    if announced.is_some_and(|length| length <= guard.largest_body && !fits(length)) {
        return IngestError::BodiesInFlight.into_response();
    }
    let taken = Arc::new(Taken {
        budget: guard.budget.clone(),
        bytes: AtomicUsize::new(0),
    });
    let request = request.map(|body| {
        Body::new(GuardedBody {
            inner: body,
            due: tokio::time::Instant::now() + guard.timeout,
            deadline: None,
            taken: taken.clone(),
        })
    });
    let response = next.run(request).await;
    drop(taken);
    response
}

/// Why a body was cut off; `read_body` finds it in the error chain ([`body_refusal`]).
#[derive(Debug, thiserror::Error)]
pub enum BodyRefused {
    #[error("the body did not arrive in time")]
    Late,
    #[error("too many request bodies are in flight")]
    OverBudget,
}

/// The [`BodyRefused`] in `error`'s chain, if any.
pub fn body_refusal<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyRefused> {
    std::iter::successors(Some(error), |error| error.source())
        .find_map(|error| error.downcast_ref::<BodyRefused>())
}

/// Bytes one request took from the budget; given back when dropped.
struct Taken {
    budget: Arc<BodyBudget>,
    bytes: AtomicUsize,
}

impl Taken {
    /// Takes `bytes` more, or refuses when the budget does not have them.
    fn take(&self, bytes: usize) -> Result<(), BodyRefused> {
        let permits = u32::try_from(bytes).map_err(|_| BodyRefused::OverBudget)?;
        let permit = self
            .budget
            .bytes
            .try_acquire_many(permits)
            .map_err(|_| BodyRefused::OverBudget)?;
        permit.forget();
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.budget.in_flight.increment(bytes as f64);
        Ok(())
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        let bytes = *self.bytes.get_mut();
        self.budget.bytes.add_permits(bytes);
        self.budget.in_flight.decrement(bytes as f64);
    }
}

/// A request body that fails once its deadline passes or its bytes do not fit the budget.
struct GuardedBody {
    inner: Body,
    /// When the body must have arrived.
    due: tokio::time::Instant,
    /// The timer for `due`, made the first time the body is waited for: most bodies arrive with
    /// their head and never need one.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    taken: Arc<Taken>,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = match Pin::new(&mut this.inner).poll_frame(context) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                let due = this.due;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                return match deadline.as_mut().poll(context) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyRefused::Late.into()))),
                    Poll::Pending => Poll::Pending,
                };
            }
        };
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
            && let Err(refused) = this.taken.take(data.len())
        {
            return Poll::Ready(Some(Err(refused.into())));
        }
        Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
