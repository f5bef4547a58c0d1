//! What our processes are measured against, each the least a server of its kind can do:
//!
//! - the HTTP floor: a bare axum handler that reads the body of any POST and answers 202;
//! - the ingest floor: an axum handler that publishes the body, persistent, on one shared
//!   confirm-mode channel to the same quorum-queue topology ingest uses, and answers 202 after
//!   the broker's ack: what ingest does, without authentication, validation, the envelope,
//!   metrics or logs;
//! - receivers for outbound deliveries: one that answers 200 at once, and one that takes the
//!   connection and never answers.
//!
//! The floors run as processes of their own (`bench floor http|publish ADDR`), like ingest.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use shared::broker::{self, EVENTS_ROUTING_KEY, Topology};
use shared::config::BrokerSettings;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// Serves the HTTP floor on `addr` until the process is stopped.
pub async fn serve_http_floor(addr: SocketAddr) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { StatusCode::OK }))
        .fallback(post(|_body: Bytes| async { StatusCode::ACCEPTED }));
    axum::serve(TcpListener::bind(addr).await?, app).await?;
    Ok(())
}

/// Serves the ingest floor on `addr`, publishing to the topology named by `broker`.
pub async fn serve_publish_floor(addr: SocketAddr, broker: BrokerSettings) -> anyhow::Result<()> {
    let topology = Topology::new(&broker);
    let connection = broker::connect(&broker.url, "bench-floor").await?;
    let channel = topology.declare(&connection).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let floor = Arc::new(PublishFloor { channel, topology });
    let app = Router::new()
        .route("/healthz", get(|| async { StatusCode::OK }))
        .fallback(post(publish))
        .with_state(floor);
    axum::serve(TcpListener::bind(addr).await?, app).await?;
    Ok(())
}

struct PublishFloor {
    channel: Channel,
    topology: Topology,
}

async fn publish(State(floor): State<Arc<PublishFloor>>, body: Bytes) -> StatusCode {
    let confirm = floor
        .channel
        .basic_publish(
            floor.topology.events_exchange.as_str().into(),
            EVENTS_ROUTING_KEY.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await;
    match confirm {
        Ok(pending) => match pending.await {
            Ok(Confirmation::Ack(None)) => StatusCode::ACCEPTED,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        },
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A local receiver for outbound deliveries.
pub struct Receiver {
    pub addr: SocketAddr,
}

impl Receiver {
    /// Answers 200 at once.
    pub async fn answering() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let app = Router::new().fallback(post(|| async { StatusCode::OK }));
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Receiver { addr })
    }

    /// Accepts connections and reads what is sent, but never answers: every attempt times out.
    pub async fn silent() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut sink = vec![0u8; 16 * 1024];
                    while matches!(stream.read(&mut sink).await, Ok(read) if read > 0) {}
                });
            }
        });
        Ok(Receiver { addr })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }
}
