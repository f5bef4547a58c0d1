//! `bench wrk [BODY_FILE]`: ingest against the ingest floor under two load generators, ours
//! ([`crate::load`]) and `wrk` (C, one thread, 64 connections), in the same run, so a ratio
//! that only one generator shows can be told from one that ingest earns. Not part of
//! `bench run` (so `make bench` does not need `wrk` installed).
//!
//! Each run measures the four cells (floor and ingest, each under each generator) in a rotated
//! order, each on a fresh server and queue. Both generators send the same transcript: the
//! 1.4 KB body of [`crate::requests`] (or `BODY_FILE`, e.g. a fixture) to the same route; wrk
//! sends it without an `Idempotency-Key`, as Omi does, so ingest hashes the body for its dedup
//! key. wrk is run once for the warm-up and once for the measuring window, so its latencies are
//! those of the window only.

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use tokio::process::Command;

use crate::Plan;
use crate::ingest::{CONNECTIONS, load_once};
use crate::process::Window;
use crate::report::{Figures, median_of, median_ratio, peak_mib, stolen_percent, stolen_sentence};
use crate::requests::Body;
use crate::stack::{Isolation, Server, Stack};

/// Which generator drives a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Generator {
    Ours,
    Wrk,
}

/// The cells of one run, in this order.
const CELLS: [(Generator, Server); 4] = [
    (Generator::Ours, Server::IngestFloor),
    (Generator::Ours, Server::Ingest),
    (Generator::Wrk, Server::IngestFloor),
    (Generator::Wrk, Server::Ingest),
];

type Run = [Figures; 4];

/// Measures `plan.runs` runs and returns the markdown table.
pub async fn compare(
    stack: &Stack,
    plan: &Plan,
    body_file: Option<&Path>,
) -> anyhow::Result<String> {
    which_wrk().await?;
    let script = stack.logs.join("wrk-transcript.lua");
    let body = write_script(&script, body_file)?;
    let mut runs = Vec::new();
    for run in 0..plan.runs {
        let mut figures: [Option<Figures>; 4] = Default::default();
        for turn in 0..CELLS.len() {
            let index = (run + turn) % CELLS.len();
            let (generator, server) = CELLS[index];
            let measured = cell(stack, plan, generator, server, &script).await?;
            eprintln!(
                "wrk run {}: {:?} / {}: {:.0} req/s, p99 {:.2} ms, {:.0} us CPU per request, {:.0}% stolen, not accepted {}",
                run + 1,
                generator,
                server.label(),
                measured.per_s,
                measured.p99_ms,
                measured.cpu_us_per_request.unwrap_or(f64::NAN),
                measured.stolen.unwrap_or(f64::NAN) * 100.0,
                measured.not_accepted,
            );
            figures[index] = Some(measured);
        }
        runs.push(figures.map(|measured| measured.expect("every cell measured")));
    }
    Ok(table(&body, &runs))
}

/// One load by `generator` on a fresh `server`, which is then stopped and its queues removed.
async fn cell(
    stack: &Stack,
    plan: &Plan,
    generator: Generator,
    server: Server,
    script: &Path,
) -> anyhow::Result<Figures> {
    let isolation = Isolation::new("wrk");
    let service = stack.start(server, &isolation).await?;
    let measured = match generator {
        Generator::Ours => {
            let load = tokio::spawn(load_once(
                service.addr,
                *plan,
                Body::Transcript,
                isolation.prefix.clone(),
            ));
            tokio::time::sleep(plan.warm_up).await;
            let window = Window::open(&service);
            tokio::time::sleep(plan.measure).await;
            let (cpu, stolen) = window.close(&service);
            let outcome = load.await?;
            Ok(Figures::new(&outcome, service.peak_rss(), cpu).with_stolen(stolen))
        }
        Generator::Wrk => {
            wrk(service.addr, script, plan.warm_up.as_secs().max(1)).await?;
            let window = Window::open(&service);
            let result = wrk(service.addr, script, plan.measure.as_secs().max(1)).await;
            let (cpu, stolen) = window.close(&service);
            result.map(|result| result.figures(service.peak_rss(), cpu).with_stolen(stolen))
        }
    };
    service.stop().await;
    stack.remove(&isolation).await?;
    measured
}

async fn which_wrk() -> anyhow::Result<()> {
    let found = Command::new("wrk").arg("--version").output().await;
    anyhow::ensure!(
        found.is_ok(),
        "wrk is not installed (Debian: apt-get install wrk)"
    );
    Ok(())
}

/// Writes the wrk script that POSTs the transcript (from `body_file`, else the generator's own
/// body) to the transcript route, and reports in one line; returns a label of the body.
fn write_script(script: &Path, body_file: Option<&Path>) -> anyhow::Result<String> {
    let request = (Body::Transcript.requests("wrk"))(0);
    let (body, label) = match body_file {
        Some(path) => (
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (request.body.to_vec(), "the bench's transcript".to_string()),
    };
    let label = format!("{label}, {} bytes", body.len());
    std::fs::create_dir_all(script.parent().unwrap_or(Path::new(".")))?;
    let body_path = script.with_extension("json");
    std::fs::write(&body_path, &body)?;
    let lua = format!(
        r#"wrk.method = "POST"
wrk.path = [==[{path}]==]
wrk.headers["Content-Type"] = "application/json"
local file = assert(io.open([==[{body}]==], "rb"))
wrk.body = file:read("*a")
file:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("result %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), e.status,
    e.connect + e.read + e.write + e.timeout))
end
"#,
        path = request.path_and_query,
        body = body_path.display(),
    );
    std::fs::write(script, lua)?;
    Ok(label)
}

/// What the script's `done` reports.
#[derive(Debug, PartialEq)]
struct WrkResult {
    requests: u64,
    duration_us: u64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    /// Answers other than 2xx and 3xx.
    status_errors: u64,
    /// Connect, read, write and timeout errors.
    socket_errors: u64,
}

impl WrkResult {
    fn parse(output: &str) -> Option<Self> {
        let line = output
            .lines()
            .find_map(|line| line.strip_prefix("result "))?;
        let numbers: Vec<u64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let [
            requests,
            duration_us,
            p50_us,
            p99_us,
            p999_us,
            status_errors,
            socket_errors,
        ] = numbers[..]
        else {
            return None;
        };
        Some(WrkResult {
            requests,
            duration_us,
            p50_us,
            p99_us,
            p999_us,
            status_errors,
            socket_errors,
        })
    }

    fn figures(&self, peak_rss: Option<u64>, cpu_seconds: Option<f64>) -> Figures {
        let accepted = self.requests.saturating_sub(self.status_errors);
        Figures {
            per_s: accepted as f64 / (self.duration_us.max(1) as f64 / 1e6),
            p50_ms: self.p50_us as f64 / 1000.0,
            p99_ms: self.p99_us as f64 / 1000.0,
            p999_ms: self.p999_us as f64 / 1000.0,
            not_accepted: self.status_errors + self.socket_errors,
            peak_rss,
            cpu_us_per_request: cpu_seconds.map(|cpu| cpu * 1e6 / accepted.max(1) as f64),
            stolen: None,
        }
    }
}

/// Runs `wrk -t1 -c64` with `script` at `addr` for `seconds`.
async fn wrk(addr: SocketAddr, script: &Path, seconds: u64) -> anyhow::Result<WrkResult> {
    let output = Command::new("wrk")
        .args(["-t1", &format!("-c{CONNECTIONS}"), &format!("-d{seconds}s")])
        .arg("-s")
        .arg(script)
        .arg(format!("http://{addr}"))
        .output()
        .await
        .context("running wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    WrkResult::parse(&stdout).with_context(|| {
        format!(
            "wrk printed no result: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn table(body: &str, runs: &[Run]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Ingest against its floor under two load generators ({CONNECTIONS} connections)\n\n\
         Body: {body}.\n\n\
         | generator | server | requests/s | p50 | p99 | p99.9 | not 2xx | CPU per request | CPU stolen | peak RSS |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for (index, (generator, server)) in CELLS.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {generator:?} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} | {:.0} us | {} | {} |",
            server.label(),
            median_of(runs, |run| run[index].per_s),
            median_of(runs, |run| run[index].p50_ms),
            median_of(runs, |run| run[index].p99_ms),
            median_of(runs, |run| run[index].p999_ms),
            median_of(runs, |run| run[index].not_accepted as f64),
            median_of(runs, |run| run[index]
                .cpu_us_per_request
                .unwrap_or(f64::NAN)),
            stolen_percent(runs, |run| run[index].stolen),
            peak_mib(runs, |run| run[index].peak_rss),
        );
    }
    for (name, floor, ingest) in [("ours", 0, 1), ("wrk", 2, 3)] {
        let _ = writeln!(
            out,
            "\nUnder {name}: ingest at **{:.2}** of the floor's throughput with **{:.2}x** its \
             p99 (medians of within-run ratios; targets at least 0.90 and at most 1.5x).",
            median_ratio(runs, |run| run[ingest].per_s, |run| run[floor].per_s),
            median_ratio(runs, |run| run[ingest].p99_ms, |run| run[floor].p99_ms),
        );
    }
    let _ = writeln!(
        out,
        "\n{}",
        stolen_sentence(runs.iter().flatten().map(|figures| figures.stolen))
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_result_line_is_read_and_refused_when_short() {
        let output =
            "Running 5s test @ http://127.0.0.1:1\nresult 1000 5000000 3000 7000 9000 10 2\n";
        let result = WrkResult::parse(output).unwrap();
        assert_eq!(result.requests, 1000);
        assert_eq!(result.p999_us, 9000);
        let figures = result.figures(None, Some(0.099));
        assert_eq!(figures.per_s, 198.0);
        assert_eq!(figures.p99_ms, 7.0);
        assert_eq!(figures.not_accepted, 12);
        assert!((figures.cpu_us_per_request.unwrap() - 100.0).abs() < 1e-9);
        assert_eq!(WrkResult::parse("result 1 2 3\n"), None);
        assert_eq!(WrkResult::parse("no result\n"), None);
    }
}
