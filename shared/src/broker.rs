//! RabbitMQ: connecting, and the exchanges and queues both processes declare at start.
//!
//! Accepted events go to the durable direct exchange `<prefix>.events` and from there to the
//! quorum queue `<prefix>.events`. Whether an event is poison is the worker's decision, from its
//! own count of processing failures in Postgres (`DELIVERY_LIMIT`), not the broker's delivery
//! count, which also counts restarts, kills and consumer timeouts (every RabbitMQ 3.x) and stops
//! counting requeueing nacks (4.3 and later). The worker rejects a poison message, and the queue
//! moves it, at least once, through the `<prefix>.dead` exchange to the quorum queue
//! `<prefix>.dead`, where the worker records it as a dead letter. The queue's own delivery limit
//! is declared far out of reach ([`BROKER_DELIVERY_LIMIT`]). Declaring is idempotent, so every
//! process declares everything it uses.

use lapin::options::{
    BasicPublishOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    DefaultConnectionBuilder, ExchangeKind,
};

use crate::config::BrokerSettings;

/// The routing key of accepted events on the events exchange.
pub const EVENTS_ROUTING_KEY: &str = "event";

/// The events queue's `x-delivery-limit`: a backstop no restart storm reaches, so the broker
/// does not dead-letter healthy events by itself. It is declared rather than left out because
/// RabbitMQ 4 gives a queue without one a limit of 20. A queue declared by an older release
/// keeps its smaller limit (a policy can only lower it); the worker puts back what such a queue
/// dead-letters before the worker's own count says it is poison.
pub const BROKER_DELIVERY_LIMIT: i32 = 1_000_000;

/// The names of everything we declare, derived from the prefix.
#[derive(Clone, Debug)]
pub struct Topology {
    pub events_exchange: String,
    pub events_queue: String,
    pub dead_exchange: String,
    pub dead_queue: String,
}

impl Topology {
    pub fn new(settings: &BrokerSettings) -> Self {
        let prefix = &settings.prefix;
        Topology {
            events_exchange: format!("{prefix}.events"),
            events_queue: format!("{prefix}.events"),
            dead_exchange: format!("{prefix}.dead"),
            dead_queue: format!("{prefix}.dead"),
        }
    }

    /// Declares the exchanges, queues and bindings on a new channel of `connection` and
    /// returns that channel; safe to call from every process. An events queue that exists with
    /// other arguments (an older release's `x-delivery-limit`, which RabbitMQ refuses to
    /// redeclare with PRECONDITION_FAILED) is used as it is, with a warning: the worker's own
    /// failure count keeps such a queue correct, and the README says how to replace it.
    pub async fn declare(&self, connection: &Connection) -> lapin::Result<Channel> {
        self.declare_with_delivery_limit(connection, BROKER_DELIVERY_LIMIT)
            .await
    }

    /// [`Self::declare`] with the events queue's `x-delivery-limit` given: releases before
    /// the worker counted failures itself declared `DELIVERY_LIMIT` there (tests rebuild such
    /// a queue).
    pub async fn declare_with_delivery_limit(
        &self,
        connection: &Connection,
        delivery_limit: i32,
    ) -> lapin::Result<Channel> {
        let channel = connection.create_channel().await?;
        match self.declare_on(&channel, Some(delivery_limit)).await {
            Err(error) if is_precondition_failed(&error) => {
                tracing::warn!(queue = %self.events_queue, %error, "the events queue exists with other arguments; using it as it is");
                let channel = connection.create_channel().await?;
                self.declare_on(&channel, None).await?;
                Ok(channel)
            }
            result => result.map(|()| channel),
        }
    }

    /// Declares everything on `channel`; the events queue with `delivery_limit`, or, when
    /// `None`, passively (it must exist, with whatever arguments it has).
    async fn declare_on(
        &self,
        channel: &Channel,
        delivery_limit: Option<i32>,
    ) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                self.events_exchange.as_str().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_exchange.as_str().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        self.declare_quorum_queue(channel, &self.dead_queue, FieldTable::default())
            .await?;
        self.bind(channel, &self.dead_queue, &self.dead_exchange, "")
            .await?;
        match delivery_limit {
            Some(limit) => {
                let arguments = self.events_queue_arguments(limit);
                self.declare_quorum_queue(channel, &self.events_queue, arguments)
                    .await?
            }
            None => {
                self.declare_existing_queue(channel, &self.events_queue)
                    .await?
            }
        }
        self.bind(
            channel,
            &self.events_queue,
            &self.events_exchange,
            EVENTS_ROUTING_KEY,
        )
        .await
    }

    /// Deletes the queues and exchanges, whatever of them exists (tests and benchmarks).
    pub async fn delete(&self, channel: &Channel) {
        for queue in [&self.events_queue, &self.dead_queue] {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [&self.events_exchange, &self.dead_exchange] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }

    fn events_queue_arguments(&self, delivery_limit: i32) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(delivery_limit),
        );
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_exchange.as_str().into()),
        );
        // At-least-once dead-lettering needs reject-publish overflow; it keeps a poison
        // message until the dead queue has confirmed it.
        arguments.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        arguments.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        arguments
    }

    async fn declare_quorum_queue(
        &self,
        channel: &Channel,
        name: &str,
        mut arguments: FieldTable,
    ) -> lapin::Result<()> {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(name.into(), options, arguments)
            .await
            .map(drop)
    }

    async fn declare_existing_queue(&self, channel: &Channel, name: &str) -> lapin::Result<()> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        channel
            .queue_declare(name.into(), passive, FieldTable::default())
            .await
            .map(drop)
    }

    async fn bind(
        &self,
        channel: &Channel,
        queue: &str,
        exchange: &str,
        routing_key: &str,
    ) -> lapin::Result<()> {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }
}

fn is_precondition_failed(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        lapin::ErrorKind::ProtocolError(amqp) if matches!(
            amqp.kind(),
            lapin::protocol::AMQPErrorKind::Soft(lapin::protocol::AMQPSoftError::PRECONDITIONFAILED)
        )
    )
}

/// Why a publish did not reach a queue.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker routed the message to no queue")]
    Unroutable,
    #[error("the broker refused the message")]
    Refused,
}

/// Publishes a persistent message as `mandatory` on a confirm-mode channel and waits for the
/// confirm: `Ok` only once a queue has it (an unroutable message is returned, not confirmed).
pub async fn publish_routed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    properties: BasicProperties,
) -> Result<(), PublishError> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            payload,
            properties.with_delivery_mode(2),
        )
        .await?
        .await?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable),
        Confirmation::Nack(_) | Confirmation::NotRequested => Err(PublishError::Refused),
    }
}

/// Opens a connection named after the process, so it is recognisable in the management UI.
/// An `amqps://` URL is checked against the built-in webpki roots only.
pub async fn connect(url: &str, process: &str) -> lapin::Result<Connection> {
    Connection::connect(url, connection_properties(process)).await
}

/// [`connect`] to `settings.url`, trusting `AMQP_CA_FILE`'s certificates too for `amqps://`.
pub async fn connect_to(settings: &BrokerSettings, process: &str) -> lapin::Result<Connection> {
    let Some(ca_file) = &settings.ca_file else {
        return connect(&settings.url, process).await;
    };
    let tls = OwnedTLSConfig {
        identity: None,
        cert_chain: Some(ca_file.pem().to_owned()),
    };
    DefaultConnectionBuilder::new()?
        .with_uri_str(settings.url.clone())
        .with_properties(connection_properties(process))
        .with_tls_config(tls)
        .connect()
        .await
}

fn connection_properties(process: &str) -> ConnectionProperties {
    ConnectionProperties::default().with_connection_name(process.into())
}
