//! The outbound receiver: an axum server on 127.0.0.1 that answers 200 to every webhook and
//! notes when it answered each `webhook-id`, and that can be taken down (its port closed, so
//! attempts are refused) and brought back on the same port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// When each `webhook-id` was answered 200.
type Seen = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

pub struct Receiver {
    pub addr: SocketAddr,
    seen: Seen,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut receiver = Receiver {
            addr: listener.local_addr()?,
            seen: Seen::default(),
            running: None,
        };
        receiver.serve(listener);
        Ok(receiver)
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Closes the port and the open connections (requests in flight finish).
    pub async fn down(&mut self) {
        if let Some((stop, server)) = self.running.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }

    /// Listens again on the same port.
    pub async fn up(&mut self) -> anyhow::Result<()> {
        if self.running.is_none() {
            let listener = tokio::net::TcpListener::bind(self.addr).await?;
            self.serve(listener);
        }
        Ok(())
    }

    /// When each `webhook-id` was answered 200.
    pub fn received(&self) -> HashMap<String, Vec<Instant>> {
        self.seen.lock().unwrap().clone()
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(self.seen.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        self.running = Some((stop, server));
    }
}

async fn answer(
    axum::extract::State(seen): axum::extract::State<Seen>,
    headers: HeaderMap,
) -> &'static str {
    if let Some(id) = headers.get("webhook-id").and_then(|id| id.to_str().ok()) {
        let mut seen = seen.lock().unwrap();
        seen.entry(id.to_owned()).or_default().push(Instant::now());
    }
    "ok"
}
