//! The faults: the ingest and worker processes of the run, reaching RabbitMQ and Postgres only
//! through TCP proxies this run owns, and a schedule that SIGKILLs and restarts them, cuts the
//! broker and the database for stretches and takes the receiver down, one fault at a time, with
//! calm between, until the senders stop. The shared servers are never touched.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bench::process::{Service, free_addr};
use bench::stack::{Isolation, Stack};
use shared::testkit::{ProxyMode, TcpProxy};

use crate::receiver::Receiver;

/// The run's processes, each restarted on the address it started on.
pub struct Fleet {
    pub broker: TcpProxy,
    pub database: TcpProxy,
    pub ingest: Vec<Process>,
    pub workers: Vec<Process>,
    ingest_env: Vec<(&'static str, String)>,
    worker_env: Vec<(&'static str, String)>,
}

#[derive(Clone, Copy, Debug)]
enum Role {
    Ingest,
    Worker,
}

pub struct Process {
    pub addr: SocketAddr,
    service: Option<Service>,
}

/// How many of each fault the run made.
#[derive(Clone, Debug, Default)]
pub struct Made {
    /// When each worker was killed.
    pub worker_killed_at: Vec<Instant>,
    pub worker_kills: u32,
    pub ingest_kills: u32,
    pub broker_cuts: u32,
    pub database_cuts: u32,
    pub receiver_downs: u32,
}

/// The lengths of the faults.
#[derive(Clone, Copy, Debug)]
pub struct Severity {
    pub broker_cut: Duration,
    pub database_cut: Duration,
    pub receiver_down: Duration,
    pub calm: Duration,
}

impl Fleet {
    /// Starts the proxies, `workers` workers (the first creates the database) and `ingests`
    /// ingest processes, with the given extra environment.
    pub async fn start(
        stack: &Stack,
        isolation: &Isolation,
        counts: (usize, usize),
        ingest_env: Vec<(&'static str, String)>,
        mut worker_env: Vec<(&'static str, String)>,
    ) -> anyhow::Result<Self> {
        let broker = TcpProxy::start("127.0.0.1:5672").await;
        let database = TcpProxy::start("127.0.0.1:5432").await;
        let mut ingest_env = ingest_env;
        ingest_env.push((
            "AMQP_URL",
            shared::testkit::TestBroker::url_for(broker.addr),
        ));
        worker_env.push((
            "AMQP_URL",
            shared::testkit::TestBroker::url_for(broker.addr),
        ));
        let database_url = format!("postgres://postgres@{}/{}", database.addr, isolation.prefix);
        worker_env.push(("DATABASE_URL", database_url));
        let mut fleet = Fleet {
            broker,
            database,
            ingest: Vec::new(),
            workers: Vec::new(),
            ingest_env,
            worker_env,
        };
        let (ingests, workers) = counts;
        for _ in 0..workers {
            let addr = free_addr()?;
            let service = stack
                .start_worker_at(isolation, addr, &fleet.worker_env)
                .await?;
            fleet.workers.push(Process::running(addr, service));
        }
        for _ in 0..ingests {
            let addr = free_addr()?;
            let service = stack
                .start_ingest_at(isolation, addr, &fleet.ingest_env)
                .await?;
            fleet.ingest.push(Process::running(addr, service));
        }
        Ok(fleet)
    }

    /// SIGKILLs process `n` (modulo their number) of `role`, and starts it again on its address.
    async fn kill_and_restart(
        &mut self,
        stack: &Stack,
        isolation: &Isolation,
        role: Role,
        n: usize,
    ) -> anyhow::Result<()> {
        let (processes, env) = match role {
            Role::Ingest => (&mut self.ingest, &self.ingest_env),
            Role::Worker => (&mut self.workers, &self.worker_env),
        };
        let index = n % processes.len();
        let process = &mut processes[index];
        process.kill().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let service = match role {
            Role::Ingest => stack.start_ingest_at(isolation, process.addr, env).await?,
            Role::Worker => stack.start_worker_at(isolation, process.addr, env).await?,
        };
        process.service = Some(service);
        Ok(())
    }

    /// Kills every process.
    pub async fn kill_all(&mut self) {
        for process in self.ingest.iter_mut().chain(self.workers.iter_mut()) {
            process.kill().await;
        }
    }
}

impl Process {
    fn running(addr: SocketAddr, service: Service) -> Self {
        Process {
            addr,
            service: Some(service),
        }
    }

    async fn kill(&mut self) {
        if let Some(service) = self.service.take() {
            service.kill().await;
        }
    }
}

/// The run's context for the schedule.
pub struct Chaos<'a> {
    pub stack: &'a Stack,
    pub isolation: &'a Isolation,
    pub fleet: &'a mut Fleet,
    pub receiver: &'a mut Receiver,
}

/// One fault of the schedule.
#[derive(Clone, Copy, Debug)]
enum Fault {
    KillWorker,
    CutBroker,
    KillIngest,
    CutDatabase,
    /// Once a run; afterwards its turn kills a worker.
    ReceiverDown,
}

/// The order faults come in, over and over.
const CYCLE: [Fault; 5] = [
    Fault::KillWorker,
    Fault::CutBroker,
    Fault::KillIngest,
    Fault::CutDatabase,
    Fault::ReceiverDown,
];

/// Makes faults one after another, with calm between, until `until`; leaves everything up.
pub async fn run(mut chaos: Chaos<'_>, severity: Severity, until: Instant) -> anyhow::Result<Made> {
    let mut made = Made::default();
    for step in 0.. {
        if Instant::now() + severity.calm >= until {
            break;
        }
        tokio::time::sleep(severity.calm).await;
        let fault = match CYCLE[step % CYCLE.len()] {
            Fault::ReceiverDown if made.receiver_downs > 0 => Fault::KillWorker,
            fault => fault,
        };
        eprintln!("chaos: {} {fault:?}", chrono::Utc::now());
        make(&mut chaos, &mut made, fault, severity).await?;
    }
    Ok(made)
}

async fn make(
    chaos: &mut Chaos<'_>,
    made: &mut Made,
    fault: Fault,
    severity: Severity,
) -> anyhow::Result<()> {
    let Chaos {
        stack, isolation, ..
    } = *chaos;
    match fault {
        Fault::KillWorker => {
            made.worker_killed_at.push(Instant::now());
            let n = made.worker_kills as usize;
            chaos
                .fleet
                .kill_and_restart(stack, isolation, Role::Worker, n)
                .await?;
            made.worker_kills += 1;
        }
        Fault::KillIngest => {
            let n = made.ingest_kills as usize;
            chaos
                .fleet
                .kill_and_restart(stack, isolation, Role::Ingest, n)
                .await?;
            made.ingest_kills += 1;
        }
        Fault::CutBroker => {
            cut(&chaos.fleet.broker, severity.broker_cut).await;
            made.broker_cuts += 1;
        }
        Fault::CutDatabase => {
            cut(&chaos.fleet.database, severity.database_cut).await;
            made.database_cuts += 1;
        }
        Fault::ReceiverDown => {
            chaos.receiver.down().await;
            tokio::time::sleep(severity.receiver_down).await;
            chaos.receiver.up().await?;
            made.receiver_downs += 1;
        }
    }
    Ok(())
}

async fn cut(proxy: &TcpProxy, stretch: Duration) {
    proxy.set_mode(ProxyMode::Cut);
    tokio::time::sleep(stretch).await;
    proxy.set_mode(ProxyMode::Open);
}
