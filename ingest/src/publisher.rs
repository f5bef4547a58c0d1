//! Publishing accepted events to RabbitMQ with publisher confirms.
//!
//! One connection and one confirm-mode channel serve every request: `basic_publish` only needs
//! `&Channel`, so concurrent requests pipeline their publishes on the channel and each awaits
//! its own confirm. A supervisor task owns the connection: it connects (with backoff), declares
//! the topology, hands the channel out, and starts over when the connection is lost. While it is
//! down, [`Publisher::publish`] fails at once and the route answers 503.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation, Connection, Event};
use shared::Envelope;
use shared::broker::{self, EVENTS_ROUTING_KEY, Topology};
use shared::config::BrokerSettings;
use tokio::sync::Notify;

/// Why an event was not confirmed; every variant means "not accepted, try again".
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker")]
    NotConnected,
    #[error("the broker did not confirm within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("the broker refused the message (nack)")]
    Refused,
    #[error("the broker returned the message as unroutable")]
    Returned,
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
}

/// A cheap-to-clone handle on the shared publishing channel.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    settings: BrokerSettings,
    topology: Topology,
    /// The live confirm-mode channel, or `None` while (re)connecting.
    channel: RwLock<Option<Channel>>,
    /// Woken by a publish that saw the channel fail, so the supervisor reconnects at once.
    channel_failed: Notify,
    /// `ingest_publish_confirm_seconds` and `ingest_publish_total{outcome="ack"}`, found once
    /// (see [`crate::request_metrics`]); the other outcomes are rare and looked up as they come.
    confirm_seconds: metrics::Histogram,
    acked: metrics::Counter,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Publisher {
    /// Starts the supervisor; the first connection is made in the background.
    pub fn start(settings: BrokerSettings) -> Self {
        let inner = Arc::new(Inner {
            topology: Topology::new(&settings),
            settings,
            channel: RwLock::new(None),
            channel_failed: Notify::new(),
            confirm_seconds: metrics::histogram!("ingest_publish_confirm_seconds"),
            acked: metrics::counter!("ingest_publish_total", "outcome" => "ack"),
        });
        metrics::gauge!("ingest_broker_connected").set(0.0);
        tokio::spawn(supervise(Arc::downgrade(&inner)));
        Publisher { inner }
    }

    /// True when a connected channel is available.
    pub fn is_ready(&self) -> bool {
        self.current_channel()
            .is_some_and(|channel| channel.status().connected())
    }

    /// Waits until connected, up to `limit`; for start-up and tests.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.is_ready() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.is_ready()
    }

    /// Publishes one envelope as a persistent, mandatory message and waits for its confirm.
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), PublishError> {
        let Some(channel) = self.current_channel() else {
            count_failure(&PublishError::NotConnected);
            return Err(PublishError::NotConnected);
        };
        let timeout = self.inner.settings.confirm_timeout;
        let started = Instant::now();
        let outcome = tokio::time::timeout(timeout, self.publish_on(&channel, envelope)).await;
        self.inner.confirm_seconds.record(started.elapsed());
        let result = outcome.unwrap_or(Err(PublishError::ConfirmTimeout(timeout)));
        match &result {
            Ok(()) => self.inner.acked.increment(1),
            Err(error) => count_failure(error),
        }
        if matches!(result, Err(PublishError::Broker(_))) || !channel.status().connected() {
            self.inner.channel_failed.notify_one();
        }
        result
    }

    async fn publish_on(&self, channel: &Channel, envelope: &Envelope) -> Result<(), PublishError> {
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirm = channel
            .basic_publish(
                self.inner.topology.events_exchange.as_str().into(),
                EVENTS_ROUTING_KEY.into(),
                options,
                &envelope.payload,
                envelope.amqp_properties(),
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(PublishError::Returned),
            Confirmation::Nack(_) | Confirmation::NotRequested => Err(PublishError::Refused),
        }
    }

    fn current_channel(&self) -> Option<Channel> {
        self.inner.channel.read().expect("channel lock").clone()
    }
}

/// What became of one publish: the `outcome` label of `ingest_publish_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    Ack,
    Nack,
    /// Unroutable: no queue took it.
    Returned,
    /// No confirm within `AMQP_CONFIRM_TIMEOUT_MS`.
    Timeout,
    NotConnected,
    /// The channel failed under the publish.
    Error,
}

impl PublishOutcome {
    pub const ALL: [PublishOutcome; 6] = [
        PublishOutcome::Ack,
        PublishOutcome::Nack,
        PublishOutcome::Returned,
        PublishOutcome::Timeout,
        PublishOutcome::NotConnected,
        PublishOutcome::Error,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PublishOutcome::Ack => "ack",
            PublishOutcome::Nack => "nack",
            PublishOutcome::Returned => "returned",
            PublishOutcome::Timeout => "timeout",
            PublishOutcome::NotConnected => "not_connected",
            PublishOutcome::Error => "error",
        }
    }
}

impl PublishError {
    /// The outcome this failure counts as (and the `reason` of the 503 it causes).
    pub fn outcome(&self) -> PublishOutcome {
        match self {
            PublishError::NotConnected => PublishOutcome::NotConnected,
            PublishError::ConfirmTimeout(_) => PublishOutcome::Timeout,
            PublishError::Refused => PublishOutcome::Nack,
            PublishError::Returned => PublishOutcome::Returned,
            PublishError::Broker(_) => PublishOutcome::Error,
        }
    }
}

/// `ingest_publish_total{outcome}` of a publish that failed (acks count through a kept handle).
fn count_failure(error: &PublishError) {
    metrics::counter!("ingest_publish_total", "outcome" => error.outcome().name()).increment(1);
}

/// Help text of the publisher's metrics.
pub fn describe_metrics() {
    metrics::describe_histogram!(
        "ingest_publish_confirm_seconds",
        metrics::Unit::Seconds,
        "Seconds from publishing an event to the broker's confirm (or to the confirm timeout)"
    );
    metrics::describe_counter!(
        "ingest_publish_total",
        "Publishes by outcome: ack, nack, returned (unroutable), timeout (no confirm within \
         AMQP_CONFIRM_TIMEOUT_MS), not_connected, error"
    );
    metrics::describe_gauge!(
        "ingest_broker_connected",
        "1 while ingest holds a connected confirm-mode channel to the broker, else 0"
    );
}

/// Keeps a channel available until every [`Publisher`] handle is dropped.
async fn supervise(inner: std::sync::Weak<Inner>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, open(&strong)).await {
            Ok(Ok((connection, channel))) => {
                tracing::info!(prefix = %strong.settings.prefix, "connected to the broker");
                backoff = Duration::from_millis(100);
                *strong.channel.write().expect("channel lock") = Some(channel);
                metrics::gauge!("ingest_broker_connected").set(1.0);
                wait_until_lost(&connection, &strong).await;
                *strong.channel.write().expect("channel lock") = None;
                metrics::gauge!("ingest_broker_connected").set(0.0);
                tracing::warn!("lost the broker connection; reconnecting");
                tokio::spawn(async move { connection.close(320, "reconnecting".into()).await });
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot connect to the broker"),
            Err(_) => tracing::warn!("connecting to the broker timed out"),
        }
        drop(strong);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn open(inner: &Inner) -> lapin::Result<(Connection, Channel)> {
    let connection = broker::connect_to(&inner.settings, "ingest").await?;
    let channel = inner.topology.declare(&connection).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}

/// Returns when the connection reports an error, a publish saw it fail, or its status says so.
async fn wait_until_lost(connection: &Connection, inner: &Inner) {
    let mut events = connection.events_listener();
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Event::Error(error)) => {
                    tracing::warn!(%error, "broker connection error");
                    return;
                }
                None => return,
                Some(_) => {}
            },
            _ = inner.channel_failed.notified() => {
                if !connection.status().connected() {
                    return;
                }
            }
            _ = poll.tick() => {
                if !connection.status().connected() {
                    return;
                }
            }
        }
    }
}
