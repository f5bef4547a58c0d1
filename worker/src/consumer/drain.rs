//! The consumer's graceful stop: on the stop signal it sends `basic.cancel`, so the broker sends
//! no more; lapin's consumer stream then yields what it had already received (the prefetch
//! beyond the batches in flight) and ends after the broker's cancel-ok. The consumer stores and
//! acknowledges those like any other batch, within `SHUTDOWN_TIMEOUT_MS`, instead of leaving
//! them all to be redelivered when its channel closes. What it acknowledged after the signal is
//! counted here and logged once it has stopped.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use lapin::options::BasicCancelOptions;
use lapin::types::ShortString;
use tokio::sync::watch;

use crate::WorkerContext;

/// Resolves once `stopping` turns true.
pub async fn stopped(mut stopping: watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Cancels the consumer `tag` on `channel` once `stopping` turns true, then never resolves: the
/// consumer's stream ends by itself after the cancel-ok, or when the channel is lost, and the
/// shutdown deadline bounds the wait for either.
pub async fn cancel_when_stopped(
    channel: &lapin::Channel,
    tag: ShortString,
    stopping: watch::Receiver<bool>,
) {
    stopped(stopping).await;
    match channel
        .basic_cancel(tag, BasicCancelOptions::default())
        .await
    {
        Ok(()) => tracing::debug!("consumer cancelled; storing what it had received"),
        Err(error) => tracing::warn!(%error, "cancelling the consumer failed"),
    }
    std::future::pending::<()>().await
}

/// The messages the consumer stored and acknowledged after the stop signal.
#[derive(Debug, Default)]
pub struct Drained {
    /// Of batches that were being stored when the signal came.
    in_flight: AtomicUsize,
    /// Of messages the consumer had received but not yet taken, taken after the signal.
    buffered: AtomicUsize,
}

impl Drained {
    /// Runs `batch` (which returns how many messages it acknowledged) and counts its
    /// acknowledgements when the stop signal came before it finished.
    pub async fn count(&self, context: &WorkerContext, batch: impl Future<Output = usize>) {
        let taken_after_stop = context.is_stopping();
        let acked = batch.await;
        if taken_after_stop {
            self.buffered.fetch_add(acked, Ordering::Relaxed);
        } else if context.is_stopping() {
            self.in_flight.fetch_add(acked, Ordering::Relaxed);
        }
    }

    /// Logs what was acknowledged after the stop signal (when the worker is stopping).
    pub fn report(&self, context: &WorkerContext) {
        if !context.is_stopping() {
            return;
        }
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let buffered = self.buffered.load(Ordering::Relaxed);
        tracing::info!(
            stored_in_flight = in_flight,
            stored_buffered = buffered,
            "consumer drained: events stored and acknowledged after the stop signal"
        );
    }
}
