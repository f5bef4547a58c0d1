//! Test support for the crates' integration tests: a database and a queue prefix of each test's
//! own, fixtures, a TCP proxy the test owns to cut or stall the path to the broker or
//! Postgres without touching the shared servers, and a TLS-terminating proxy with a CA made at
//! test time ([`TestCa`], [`TlsProxy`]) to test the processes' TLS settings against them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::Topology;
use crate::config::BrokerSettings;

/// The Postgres server the tests use (`TEST_DATABASE_URL`, default the local one).
pub fn postgres_server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// The Postgres server's `host:port`, for a proxy in front of it.
pub fn postgres_server_addr() -> String {
    let server = postgres_server_url();
    let (_, host_port) = server.rsplit_once('@').expect("postgres://user@host:port");
    host_port.to_owned()
}

/// The URL of `database` on the Postgres server, reached at `addr` (a proxy in front of it).
pub fn postgres_url_via(addr: std::net::SocketAddr, database: &str) -> String {
    let server = postgres_server_url();
    let (scheme_and_user, _) = server.rsplit_once('@').expect("postgres://user@host:port");
    format!("{scheme_and_user}@{addr}/{database}")
}

/// A name no other test, run or process uses: `<prefix>_<pid>_<n>_<nanos>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{n}_{nanos}", std::process::id())
}

/// The bytes of a file under `shared/testdata/fixtures/` (a copy of `../shared/fixtures`).
pub fn fixture(relative: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/fixtures")
        .join(relative);
    std::fs::read(&path).unwrap_or_else(|error| panic!("fixture {}: {error}", path.display()))
}

/// A database name reserved for one test; dropped (with its connections) when this is dropped.
/// The database itself is created by whoever connects first (the worker creates it if missing).
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub fn new() -> Self {
        let name = unique_name("test");
        let url = format!("{}/{name}", postgres_server_url());
        TestDatabase { name, url }
    }
}

impl Default for TestDatabase {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        run_blocking(async move {
            let admin = format!("{}/postgres", postgres_server_url());
            if let Ok(mut connection) = sqlx::PgConnection::connect(&admin).await {
                let _ = sqlx::query(&statement).execute(&mut connection).await;
            }
        });
    }
}

/// Broker settings with a prefix of this test's own; its exchanges and queues are deleted when
/// this is dropped.
pub struct TestBroker {
    pub settings: BrokerSettings,
}

impl TestBroker {
    pub fn new() -> Self {
        let settings = BrokerSettings {
            url: std::env::var("TEST_AMQP_URL")
                .unwrap_or_else(|_| BrokerSettings::DEFAULT_URL.into()),
            ca_file: None,
            prefix: unique_name("test"),
            confirm_timeout: std::time::Duration::from_secs(5),
            delivery_limit: 5,
        };
        TestBroker { settings }
    }

    pub fn topology(&self) -> Topology {
        Topology::new(&self.settings)
    }

    /// The same prefix, reached through another URL (a [`TcpProxy`] in front of the broker).
    pub fn settings_via(&self, url: String) -> BrokerSettings {
        BrokerSettings {
            url,
            ..self.settings.clone()
        }
    }

    /// A connection to the broker and a channel on it.
    async fn open_channel(&self) -> (lapin::Connection, lapin::Channel) {
        let connection = crate::broker::connect(&self.settings.url, "testkit")
            .await
            .expect("broker");
        let channel = connection.create_channel().await.expect("channel");
        (connection, channel)
    }

    /// Takes the next message off the events queue (acknowledging it), as an envelope.
    pub async fn take_event(&self) -> Option<crate::Envelope> {
        let connection = crate::broker::connect(&self.settings.url, "testkit")
            .await
            .ok()?;
        let channel = connection.create_channel().await.ok()?;
        let queue = self.topology().events_queue;
        let message = channel
            .basic_get(
                queue.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get")?;
        let delivery = message.delivery;
        let _ = connection.close(200, "done".into()).await;
        Some(crate::Envelope::from_amqp(&delivery.properties, delivery.data).expect("an envelope"))
    }

    /// Publishes an envelope straight to the events exchange (as a broker redelivery would
    /// present it again), waiting for the confirm.
    pub async fn publish(&self, envelope: &crate::Envelope) {
        self.publish_all(std::slice::from_ref(envelope)).await
    }

    /// Publishes envelopes in the given order on one channel, waiting for every confirm.
    pub async fn publish_all(&self, envelopes: &[crate::Envelope]) {
        let connection = crate::broker::connect(&self.settings.url, "testkit")
            .await
            .expect("broker");
        let topology = self.topology();
        let channel = topology.declare(&connection).await.expect("declare");
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        for envelope in envelopes {
            channel
                .basic_publish(
                    topology.events_exchange.as_str().into(),
                    crate::broker::EVENTS_ROUTING_KEY.into(),
                    lapin::options::BasicPublishOptions::default(),
                    &envelope.payload,
                    envelope.amqp_properties(),
                )
                .await
                .expect("publish");
        }
        let returned = channel.wait_for_confirms().await.expect("confirms");
        assert!(returned.is_empty(), "every message was routed");
        let _ = connection.close(200, "done".into()).await;
    }

    /// Takes the next message off the events queue and hands it back unsettled, as a worker
    /// killed with the message in its prefetch does (its connection closes); false when the
    /// queue had none.
    pub async fn take_and_return(&self) -> bool {
        let (connection, channel) = self.open_channel().await;
        let queue = self.topology().events_queue;
        let message = channel
            .basic_get(
                queue.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: false },
            )
            .await
            .expect("basic.get");
        let _ = connection.close(200, "killed".into()).await;
        message.is_some()
    }

    /// Replaces the (empty) events queue with one as a release before the worker's own
    /// failure count declared it: its `x-delivery-limit` is `DELIVERY_LIMIT`.
    pub async fn recreate_events_queue_as_older_release(&self) {
        let (connection, channel) = self.open_channel().await;
        let queue = self.topology().events_queue;
        channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await
            .expect("delete the events queue");
        let limit = self.settings.delivery_limit as i32;
        self.topology()
            .declare_with_delivery_limit(&connection, limit)
            .await
            .expect("declare");
        let _ = connection.close(200, "done".into()).await;
    }

    /// Removes the binding from the events exchange to the events queue, so a publish there
    /// reaches no queue.
    pub async fn unbind_events_queue(&self) {
        let (connection, channel) = self.open_channel().await;
        let topology = self.topology();
        channel
            .queue_unbind(
                topology.events_queue.as_str().into(),
                topology.events_exchange.as_str().into(),
                crate::broker::EVENTS_ROUTING_KEY.into(),
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("unbind");
        let _ = connection.close(200, "done".into()).await;
    }

    /// Messages ready on the events queue (0 when it was never declared).
    pub async fn events_ready(&self) -> u32 {
        let (connection, channel) = self.open_channel().await;
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let queue = self.topology().events_queue;
        let count = channel
            .queue_declare(
                queue.as_str().into(),
                passive,
                lapin::types::FieldTable::default(),
            )
            .await
            .map(|queue| queue.message_count())
            .unwrap_or(0);
        let _ = connection.close(200, "done".into()).await;
        count
    }

    /// `amqp://guest:guest@<addr>/%2f`, for a proxy's address.
    pub fn url_for(addr: std::net::SocketAddr) -> String {
        format!("amqp://guest:guest@{addr}/%2f")
    }
}

impl Default for TestBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let topology = self.topology();
        let url = self.settings.url.clone();
        run_blocking(async move {
            let Ok(connection) = crate::broker::connect(&url, "testkit-cleanup").await else {
                return;
            };
            let Ok(channel) = connection.create_channel().await else {
                return;
            };
            topology.delete(&channel).await;
            let _ = connection.close(200, "cleanup".into()).await;
        });
    }
}

/// A service (ingest or worker) running in the test's runtime on a port of its own.
pub struct Spawned {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Spawned {
    /// Starts `run(listener, shutdown)` on 127.0.0.1 port 0.
    pub async fn start<F, Fut, E>(run: F) -> Self
    where
        F: FnOnce(
            TcpListener,
            std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
        ) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Debug,
    {
        Self::start_at("127.0.0.1:0".parse().unwrap(), run).await
    }

    /// Starts `run(listener, shutdown)` listening on `addr`: a service started again where a
    /// stopped one was, so that its clients (a browser) find it at the same address.
    pub async fn start_at<F, Fut, E>(addr: std::net::SocketAddr, run: F) -> Self
    where
        F: FnOnce(
            TcpListener,
            std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
        ) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Debug,
    {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        let service = run(listener, shutdown);
        let task = tokio::spawn(async move {
            service.await.expect("service failed");
        });
        Spawned {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// This service's `/metrics` exposition; panics when it does not answer.
    pub async fn scrape(&self) -> String {
        scrape(&self.url("/metrics")).await
    }

    /// Asks the service to stop gracefully and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `seconds`.
pub async fn eventually<T, Fut>(seconds: u64, what: &str, mut check: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until the count `sql` selects on `pool` is `expected`, or panics after 15 s.
pub async fn wait_for_count(pool: &sqlx::PgPool, sql: &str, expected: i64) {
    eventually(15, sql, || async {
        let count: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.ok()?;
        (count == expected).then_some(())
    })
    .await
}

/// Runs cleanup on a thread of its own, so it works from `Drop` inside or outside a runtime.
fn run_blocking(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let thread = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cleanup runtime")
            .block_on(work)
    });
    let _ = thread.join();
}

/// What a [`TcpProxy`] does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forwards both ways.
    Open,
    /// Holds every byte without forwarding: the peer looks alive but never answers.
    Stalled,
    /// Closes every connection and every new one at once: the peer is down.
    Cut,
}

/// A TCP proxy on 127.0.0.1 that a test owns, between a service and the broker or database.
pub struct TcpProxy {
    pub addr: std::net::SocketAddr,
    mode: watch::Sender<ProxyMode>,
    held_bytes: Arc<AtomicUsize>,
    _accept_loop: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding to `target` (`host:port`).
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().unwrap();
        let (mode, mode_changes) = watch::channel(ProxyMode::Open);
        let held_bytes = Arc::new(AtomicUsize::new(0));
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            target.to_owned(),
            mode_changes,
            held_bytes.clone(),
        ));
        TcpProxy {
            addr,
            mode,
            held_bytes,
            _accept_loop: accept_loop,
        }
    }

    pub fn set_mode(&self, mode: ProxyMode) {
        if mode == ProxyMode::Stalled {
            self.held_bytes.store(0, Ordering::SeqCst);
        }
        self.mode.send_replace(mode);
    }

    /// Bytes that arrived while stalled and were held back.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes.load(Ordering::SeqCst)
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: String,
    mode: watch::Receiver<ProxyMode>,
    held_bytes: Arc<AtomicUsize>,
) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *mode.borrow() == ProxyMode::Cut {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect(&target).await else {
            continue;
        };
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        connections.spawn(pipe(
            client_read,
            server_write,
            mode.clone(),
            held_bytes.clone(),
        ));
        connections.spawn(pipe(
            server_read,
            client_write,
            mode.clone(),
            held_bytes.clone(),
        ));
    }
}

/// Copies one direction, obeying the mode; returning drops (closes) both halves.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<ProxyMode>,
    held_bytes: Arc<AtomicUsize>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = wait_for(&mut mode, ProxyMode::Cut) => return,
        };
        let Ok(n @ 1..) = read else { return };
        loop {
            let current = *mode.borrow_and_update();
            match current {
                ProxyMode::Open => break,
                ProxyMode::Cut => return,
                ProxyMode::Stalled => {
                    held_bytes.fetch_add(n, Ordering::SeqCst);
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

async fn wait_for(mode: &mut watch::Receiver<ProxyMode>, wanted: ProxyMode) {
    let _ = mode.wait_for(|current| *current == wanted).await;
}

/// A private certificate authority made at test time: its certificate as a PEM file (removed
/// when this is dropped), to hand to a process as `AMQP_CA_FILE`, `DATABASE_CA_FILE` or
/// `OUTBOUND_CA_FILE`, and server certificates it signs for `localhost` and `127.0.0.1`.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub pem_path: PathBuf,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, unique_name("test-ca"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let certificate = params.self_signed(&key).expect("CA certificate");
        let pem_path = std::env::temp_dir().join(format!("{}.pem", unique_name("test-ca")));
        std::fs::write(&pem_path, certificate.pem()).expect("write the CA file");
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            pem_path,
        }
    }

    /// The CA's certificate as the processes read it.
    pub fn ca_file(&self) -> crate::config::CaFile {
        crate::config::CaFile::read(&self.pem_path).expect("the CA file")
    }

    /// A TLS server configuration with a certificate for `localhost` and `127.0.0.1` that
    /// this CA signed.
    pub fn server_config(&self) -> Arc<tokio_rustls::rustls::ServerConfig> {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let params = rcgen::CertificateParams::new(names).expect("server params");
        let key = rcgen::KeyPair::generate().expect("server key");
        let certificate = params.signed_by(&key, &self.issuer).expect("sign");
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let config = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![certificate.der().clone()], key)
            .expect("server config");
        Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pem_path);
    }
}

/// What a [`TlsProxy`]'s client sends before its TLS handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsPreamble {
    /// Nothing: TLS from the first byte (`amqps://`, `https://`).
    None,
    /// Postgres' `SSLRequest`, answered `S` (`sslmode=require` and stricter).
    PostgresSslRequest,
}

/// Postgres' `SSLRequest`: length 8, code 80877103.
const POSTGRES_SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A TLS-terminating proxy on 127.0.0.1 that a test owns: it presents a certificate of a
/// [`TestCa`] and forwards the plaintext to `target` (the broker, Postgres, an HTTP receiver),
/// so a client's TLS settings are tested without reconfiguring the shared servers.
pub struct TlsProxy {
    pub addr: std::net::SocketAddr,
    failed_handshakes: Arc<AtomicUsize>,
    first_messages: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    pub async fn start(target: &str, ca: &TestCa, preamble: TlsPreamble) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().unwrap();
        let session = TlsSession {
            acceptor: tokio_rustls::TlsAcceptor::from(ca.server_config()),
            target: target.to_owned(),
            preamble,
            failed_handshakes: Arc::default(),
            first_messages: Arc::default(),
        };
        let (failed_handshakes, first_messages) = (
            session.failed_handshakes.clone(),
            session.first_messages.clone(),
        );
        let accept_loop = tokio::spawn(async move {
            let mut sessions = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                sessions.spawn(session.clone().serve(client));
            }
        });
        TlsProxy {
            addr,
            failed_handshakes,
            first_messages,
            accept_loop,
        }
    }

    /// Handshakes that failed: the client refused our certificate, or spoke no TLS.
    pub fn failed_handshakes(&self) -> usize {
        self.failed_handshakes.load(Ordering::SeqCst)
    }

    /// The first plaintext each client sent after its handshake, in order of arrival (for
    /// Postgres, the startup message naming user and database).
    pub fn first_messages(&self) -> Vec<Vec<u8>> {
        self.first_messages.lock().expect("lock").clone()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// One client's way through a [`TlsProxy`].
#[derive(Clone)]
struct TlsSession {
    acceptor: tokio_rustls::TlsAcceptor,
    target: String,
    preamble: TlsPreamble,
    failed_handshakes: Arc<AtomicUsize>,
    first_messages: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl TlsSession {
    async fn serve(self, mut client: TcpStream) {
        if self.preamble == TlsPreamble::PostgresSslRequest {
            let mut request = [0u8; 8];
            let asked = client.read_exact(&mut request).await.is_ok();
            if !asked || request != POSTGRES_SSL_REQUEST || client.write_all(b"S").await.is_err() {
                self.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        let Ok(mut client) = self.acceptor.accept(client).await else {
            self.failed_handshakes.fetch_add(1, Ordering::SeqCst);
            return;
        };
        let mut first = vec![0u8; 16 * 1024];
        let Ok(n @ 1..) = client.read(&mut first).await else {
            return;
        };
        first.truncate(n);
        let Ok(mut server) = TcpStream::connect(&self.target).await else {
            return;
        };
        if server.write_all(&first).await.is_err() {
            return;
        }
        self.first_messages.lock().expect("lock").push(first);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}

/// The Prometheus exposition at `url`; panics when it does not answer 200.
pub async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.expect("scrape /metrics");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.text().await.expect("the exposition's text")
}

/// The value of `series` (a name with its labels, as exported) in a Prometheus exposition.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}
