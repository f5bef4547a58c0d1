//! RabbitMQ: connecting, and the exchanges and queues both processes declare at start.
//!
//! Accepted events go to the durable direct exchange `<prefix>.events` and from there to the
//! quorum queue `<prefix>.events`. The queue redelivers a message at most
//! `DELIVERY_LIMIT` times; after that the broker moves it, at least once, through the
//! `<prefix>.dead` exchange to the quorum queue `<prefix>.dead`, where the worker records it as
//! a dead letter. Declaring is idempotent, so every process declares everything it uses.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::config::BrokerSettings;

/// The routing key of accepted events on the events exchange.
pub const EVENTS_ROUTING_KEY: &str = "event";

/// The names of everything we declare, derived from the prefix.
#[derive(Clone, Debug)]
pub struct Topology {
    pub events_exchange: String,
    pub events_queue: String,
    pub dead_exchange: String,
    pub dead_queue: String,
    pub delivery_limit: u32,
}

impl Topology {
    pub fn new(settings: &BrokerSettings) -> Self {
        let prefix = &settings.prefix;
        Topology {
            events_exchange: format!("{prefix}.events"),
            events_queue: format!("{prefix}.events"),
            dead_exchange: format!("{prefix}.dead"),
            dead_queue: format!("{prefix}.dead"),
            delivery_limit: settings.delivery_limit,
        }
    }

    /// Declares the exchanges, queues and bindings; safe to call from every process.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
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
        self.declare_quorum_queue(channel, &self.events_queue, self.events_queue_arguments())
            .await?;
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

    fn events_queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(self.delivery_limit as i32),
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

/// Opens a connection named after the process, so it is recognisable in the management UI.
pub async fn connect(url: &str, process: &str) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(process.into());
    Connection::connect(url, properties).await
}
