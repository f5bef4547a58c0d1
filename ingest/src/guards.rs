//! What keeps too many or too slow requests from holding ingest: [`guard`], middleware on the
//! provider routes (health, metrics and OpenAPI are not guarded, so they answer under any load).
//! - At most `MAX_CONCURRENT_REQUESTS` requests at once ([`RequestLimit`]); beyond that 503 with
//!   `Retry-After`, at once, before any body is read.
//! - The body must arrive within `REQUEST_BODY_TIMEOUT_MS` of the request head, else 408; and
//!   its bytes are taken from the process's [`BodyBudget`] (`MAX_BODY_BYTES_IN_FLIGHT`) as they
//!   arrive and given back once the request is answered, so however many clients trickle bodies
//!   at once, the bodies held stay within the budget: a body that would go past it is answered
//!   503 with `Retry-After` (at once, before it is read, when its `Content-Length` already
//!   does). The gauge `ingest_body_bytes_in_flight` shows what is taken.
//!
//! Both bounds are only ever tried, never waited for, so each is one atomic counter (a
//! compare-and-swap to take, an add to give back) rather than a semaphore, whose every release
//! locks its queue of waiters. Both are one middleware, so a request pays for one layer.
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

use crate::error::IngestError;

/// Units (requests, bytes) that may be held at once: taken only while enough are left.
struct Bound {
    /// Units not taken now.
    available: AtomicUsize,
}

impl Bound {
    fn new(units: usize) -> Self {
        Bound {
            available: AtomicUsize::new(units),
        }
    }

    /// Takes `units` if that many are left.
    fn try_take(&self, units: usize) -> bool {
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(units)
            })
            .is_ok()
    }

    fn give_back(&self, units: usize) {
        self.available.fetch_add(units, Ordering::AcqRel);
    }

    fn available(&self) -> usize {
        self.available.load(Ordering::Acquire)
    }
}

/// The requests that may be in progress at once on the routes it guards.
#[derive(Clone)]
pub struct RequestLimit(Arc<Bound>);

impl RequestLimit {
    pub fn new(max_concurrent: usize) -> Self {
        RequestLimit(Arc::new(Bound::new(max_concurrent.max(1))))
    }

    /// A place among the requests in progress, or `None` when all are taken.
    fn try_enter(&self) -> Option<InProgress<'_>> {
        self.0.try_take(1).then_some(InProgress(&self.0))
    }
}

/// One request's place in a [`RequestLimit`], given back when dropped.
struct InProgress<'a>(&'a Bound);

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.give_back(1);
    }
}

/// Body bytes one process may hold at once.
pub struct BodyBudget {
    bytes: Bound,
    in_flight: metrics::Gauge,
}

impl BodyBudget {
    pub fn new(max_bytes: usize) -> Self {
        BodyBudget {
            bytes: Bound::new(max_bytes),
            in_flight: metrics::gauge!("ingest_body_bytes_in_flight"),
        }
    }
}

/// What [`guard`] needs: the request limit, the body deadline, the budget, and the largest body
/// a route accepts (a longer `Content-Length` is the route's 413, not a 503).
#[derive(Clone)]
pub struct Guards {
    pub limit: RequestLimit,
    pub body_timeout: Duration,
    pub budget: Arc<BodyBudget>,
    pub largest_body: usize,
}

/// Middleware: answers 503 at once when the request limit is reached. Otherwise the request's
/// body fails with [`BodyRefused::Late`] (a 408 from `read_body`) if it has not all arrived
/// `body_timeout` after the head, and with [`BodyRefused::OverBudget`] (a 503) when its next
/// bytes do not fit in the budget. What it took is given back once the answer is ready (the
/// body read is held until then) and the body is dropped.
pub async fn guard(State(guards): State<Guards>, request: Request, next: Next) -> Response {
    let Some(_in_progress) = guards.limit.try_enter() else {
        metrics::counter!("ingest_requests_shed_total").increment(1);
        return IngestError::Busy.into_response();
    };
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    let fits = |length: usize| length <= guards.budget.bytes.available();
    if announced.is_some_and(|length| length <= guards.largest_body && !fits(length)) {
        return IngestError::BodiesInFlight.into_response();
    }
    let taken = Arc::new(Taken {
        budget: guards.budget.clone(),
        bytes: AtomicUsize::new(0),
    });
    let request = request.map(|body| {
        Body::new(GuardedBody {
            inner: body,
            due: tokio::time::Instant::now() + guards.body_timeout,
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
        if !self.budget.bytes.try_take(bytes) {
            return Err(BodyRefused::OverBudget);
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.budget.in_flight.increment(bytes as f64);
        Ok(())
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        let bytes = *self.bytes.get_mut();
        self.budget.bytes.give_back(bytes);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_takes_only_what_is_left_and_gets_it_back() {
        let bound = Bound::new(10);
        assert!(bound.try_take(7));
        assert!(!bound.try_take(4), "only 3 are left");
        assert!(bound.try_take(3));
        assert!(!bound.try_take(1));
        bound.give_back(7);
        assert_eq!(bound.available(), 7);
        assert!(bound.try_take(7));
    }

    #[test]
    fn a_request_gives_its_place_back_when_it_ends() {
        let limit = RequestLimit::new(2);
        let first = limit.try_enter().expect("a place");
        let _second = limit.try_enter().expect("a place");
        assert!(limit.try_enter().is_none(), "both places are taken");
        drop(first);
        assert!(limit.try_enter().is_some());
    }
}
