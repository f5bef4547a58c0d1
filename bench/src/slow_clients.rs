//! Benchmark: ingest's healthy throughput and peak RSS beside more slow clients than
//! `MAX_CONCURRENT_REQUESTS` (512), against the same load alone, in the same run.
//!
//! Each run starts a fresh release ingest three times (in a rotated order) and aims the
//! 64-connection transcript load of [`crate::ingest`] at it: alone; beside [`SLOW_CLIENTS`]
//! connections that trickle a request head (slowloris: a byte every 200 ms, never finishing);
//! and beside as many that send a head announcing a 2 MiB body, [`SENT_AT_ONCE`] of it, then
//! trickle the rest. A slow client that is answered or cut off connects again, as an attacker
//! would, so the pressure lasts the whole window. Peak RSS is the process's own (`VmHWM`), so
//! each figure is that one case's.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Plan;
use crate::ingest::load_once;
use crate::process::free_addr;
use crate::report::{Figures, median_of, median_ratio, peak_mib};
use crate::requests::Body;
use crate::stack::{Isolation, OMI_KEY, Stack};

/// Slow connections at once: above ingest's default `MAX_CONCURRENT_REQUESTS` (512).
pub const SLOW_CLIENTS: usize = 600;
/// What a slow body sends at once before trickling: 512 of them want 256 MiB, twice the
/// default `MAX_BODY_BYTES_IN_FLIGHT`.
pub const SENT_AT_ONCE: usize = 512 * 1024;
/// The body length a slow body announces: the default JSON limit.
const ANNOUNCED: usize = 2 * 1024 * 1024;
const TRICKLE_EVERY: Duration = Duration::from_millis(200);

/// What the healthy load runs beside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beside {
    Nothing,
    SlowHeads,
    SlowBodies,
}

impl Beside {
    pub const ALL: [Beside; 3] = [Beside::Nothing, Beside::SlowHeads, Beside::SlowBodies];

    fn label(self) -> String {
        match self {
            Beside::Nothing => "alone".into(),
            Beside::SlowHeads => format!("beside {SLOW_CLIENTS} trickled heads"),
            Beside::SlowBodies => format!(
                "beside {SLOW_CLIENTS} trickled 2 MiB bodies, {} KiB sent at once",
                SENT_AT_ONCE / 1024
            ),
        }
    }
}

/// How the slow clients' requests ended, over the whole case.
#[derive(Clone, Debug, Default)]
pub struct SlowEndings {
    pub answered_408: u64,
    pub answered_503: u64,
    pub answered_other: u64,
    /// Closed (or reset) without an answer that could be read.
    pub closed: u64,
    /// Still open, neither answered nor closed, when the case ended.
    pub held: u64,
}

/// One case of one run: the healthy load's figures and how the slow requests ended.
#[derive(Clone, Debug)]
pub struct Case {
    pub figures: Figures,
    pub slow: SlowEndings,
}

/// One run: a case per [`Beside::ALL`], in that order.
pub type Run = [Case; 3];

pub async fn measure(stack: &Stack, plan: &Plan) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for run in 0..plan.runs {
        let mut cases: [Option<Case>; 3] = Default::default();
        for turn in 0..Beside::ALL.len() {
            let index = (run + turn) % Beside::ALL.len();
            let case = measure_case(stack, plan, Beside::ALL[index]).await?;
            eprintln!(
                "slow clients run {}: {}: {:.0} req/s, not accepted {}, peak RSS {:?}, slow: {:?}",
                run + 1,
                Beside::ALL[index].label(),
                case.figures.per_s,
                case.figures.not_accepted,
                case.figures.peak_rss,
                case.slow,
            );
            cases[index] = Some(case);
        }
        runs.push(cases.map(|case| case.expect("every case measured")));
    }
    Ok(runs)
}

async fn measure_case(stack: &Stack, plan: &Plan, beside: Beside) -> anyhow::Result<Case> {
    let isolation = Isolation::new("slow");
    let grace = [("SHUTDOWN_GRACE_MS", "0".to_string())];
    let service = stack
        .start_ingest_at(&isolation, free_addr()?, &grace)
        .await?;
    let slow = SlowClients::start(service.addr, beside);
    // The slow clients take their places before the load begins.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outcome = load_once(
        service.addr,
        *plan,
        Body::Transcript,
        isolation.prefix.clone(),
    )
    .await;
    let figures = Figures::new(&outcome, service.peak_rss(), None);
    let slow = slow.stop().await;
    service.stop().await;
    stack.remove(&isolation).await?;
    Ok(Case { figures, slow })
}

/// The slow connections of one case, each reconnecting once its request ends.
struct SlowClients {
    stop: Arc<AtomicBool>,
    endings: Arc<[AtomicU64; 5]>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SlowClients {
    fn start(target: SocketAddr, beside: Beside) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let endings: Arc<[AtomicU64; 5]> = Arc::new(Default::default());
        let tasks = match beside {
            Beside::Nothing => Vec::new(),
            _ => (0..SLOW_CLIENTS)
                .map(|n| {
                    let (stop, endings) = (stop.clone(), endings.clone());
                    tokio::spawn(async move {
                        while !stop.load(Ordering::Relaxed) {
                            let ending = slow_request(target, beside, n, &stop).await;
                            endings[ending as usize].fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(TRICKLE_EVERY).await;
                        }
                    })
                })
                .collect(),
        };
        SlowClients {
            stop,
            endings,
            tasks,
        }
    }

    async fn stop(self) -> SlowEndings {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let count = |ending: Ending| self.endings[ending as usize].load(Ordering::Relaxed);
        SlowEndings {
            answered_408: count(Ending::Answered408),
            answered_503: count(Ending::Answered503),
            answered_other: count(Ending::AnsweredOther),
            closed: count(Ending::Closed),
            held: count(Ending::Held),
        }
    }
}

#[derive(Clone, Copy)]
enum Ending {
    Answered408,
    Answered503,
    AnsweredOther,
    Closed,
    Held,
}

/// One slow request: its head (all of it for a slow body, part of it for a slow head), then a
/// byte every [`TRICKLE_EVERY`] until the server answers or closes, or `stop` is set.
async fn slow_request(target: SocketAddr, beside: Beside, n: usize, stop: &AtomicBool) -> Ending {
    let Ok(stream) = TcpStream::connect(target).await else {
        return Ending::Closed;
    };
    let (mut reader, mut writer) = stream.into_split();
    let path = format!("/v1/omi/transcript?key={OMI_KEY}&uid=slow-{n}");
    let (opening, trickle) = match beside {
        Beside::SlowBodies => {
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n\
                 Content-Length: {ANNOUNCED}\r\n\r\n"
            );
            ([head.into_bytes(), vec![b' '; SENT_AT_ONCE]].concat(), b' ')
        }
        _ => (
            format!("POST {path} HTTP/1.1\r\nHost: ingest\r\nX-Pad: ").into_bytes(),
            b'a',
        ),
    };
    let writing = async {
        writer.write_all(&opening).await?;
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(TRICKLE_EVERY).await;
            writer.write_all(&[trickle]).await?;
        }
        std::io::Result::Ok(())
    };
    let mut answer = [0u8; 64];
    let read = tokio::select! {
        read = reader.read(&mut answer) => read,
        written = writing => {
            if written.is_ok() {
                return Ending::Held;
            }
            // The server stopped reading (a refusal): its answer may be there.
            match tokio::time::timeout(Duration::from_secs(1), reader.read(&mut answer)).await {
                Ok(read) => read,
                Err(_) => Ok(0),
            }
        }
    };
    match read {
        Ok(read @ 1..) if answer[..read].starts_with(b"HTTP/1.1 408") => Ending::Answered408,
        Ok(read @ 1..) if answer[..read].starts_with(b"HTTP/1.1 503") => Ending::Answered503,
        Ok(1..) => Ending::AnsweredOther,
        _ => Ending::Closed,
    }
}

/// The table: the healthy load in each case, its throughput as a share of the load alone
/// (within each run), ingest's peak RSS, and how the slow requests ended.
pub fn table(runs: &[Run]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| healthy load (64 connections, transcripts) | requests/s | share of alone | p99 | not 2xx | ingest peak RSS | slow requests: 408 / 503 / other / closed / still held at the end |\n\
         | --- | --- | --- | --- | --- | --- | --- |"
    );
    let alone = 0;
    for (index, beside) in Beside::ALL.iter().enumerate() {
        let endings =
            |pick: fn(&SlowEndings) -> u64| median_of(runs, |run| pick(&run[index].slow) as f64);
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:.2} ms | {:.0} | {} | {:.0} / {:.0} / {:.0} / {:.0} / {:.0} |",
            beside.label(),
            median_of(runs, |run| run[index].figures.per_s),
            median_ratio(
                runs,
                |run| run[index].figures.per_s,
                |run| run[alone].figures.per_s
            ),
            median_of(runs, |run| run[index].figures.p99_ms),
            median_of(runs, |run| run[index].figures.not_accepted as f64),
            peak_mib(runs, |run| run[index].figures.peak_rss),
            endings(|slow| slow.answered_408),
            endings(|slow| slow.answered_503),
            endings(|slow| slow.answered_other),
            endings(|slow| slow.closed),
            endings(|slow| slow.held),
        );
    }
    out.push('\n');
    out
}
