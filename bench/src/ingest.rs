//! Benchmark 1: ingest against its two floors, at 64 connections, for transcript and audio
//! bodies. Each run measures the three servers one after another (in a rotated order, so none
//! always goes first), each fresh, on its own queue.

use std::fmt::Write;
use std::net::SocketAddr;

use crate::Plan;
use crate::load::{self, Load, Outcome, Pace};
use crate::process::Window;
use crate::report::{Figures, median_of, median_ratio, peak_mib, stolen_percent, stolen_sentence};
use crate::requests::Body;
use crate::stack::{Isolation, Server, Stack};

pub const CONNECTIONS: usize = 64;

/// One run: the figures of each server in [`Server::ALL`] order.
type Run = [Figures; 3];

pub async fn measure(stack: &Stack, plan: &Plan, body: Body) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for run in 0..plan.runs {
        let mut figures: [Option<Figures>; 3] = Default::default();
        for turn in 0..Server::ALL.len() {
            let index = (run + turn) % Server::ALL.len();
            let server = Server::ALL[index];
            let isolation = Isolation::new("ingest");
            let service = stack.start(server, &isolation).await?;
            let load = tokio::spawn(load_once(
                service.addr,
                *plan,
                body,
                isolation.prefix.clone(),
            ));
            tokio::time::sleep(plan.warm_up).await;
            let window = Window::open(&service);
            tokio::time::sleep(plan.measure).await;
            let (cpu, stolen) = window.close(&service);
            let outcome = load.await?;
            let measured = Figures::new(&outcome, service.peak_rss(), cpu).with_stolen(stolen);
            service.stop().await;
            stack.remove(&isolation).await?;
            eprintln!(
                "ingest run {}: {} / {}: {:.0} req/s, p99 {:.2} ms, {:.0} us CPU per request, {:.0}% stolen, not accepted {} {:?}",
                run + 1,
                body.label(),
                server.label(),
                measured.per_s,
                measured.p99_ms,
                measured.cpu_us_per_request.unwrap_or(f64::NAN),
                measured.stolen.unwrap_or(f64::NAN) * 100.0,
                measured.not_accepted,
                outcome.refused,
            );
            figures[index] = Some(measured);
        }
        runs.push(figures.map(|measured| measured.expect("every server measured")));
    }
    Ok(runs)
}

/// One closed-loop load of `body` requests at `target`, keyed by `run`.
pub async fn load_once(target: SocketAddr, plan: Plan, body: Body, run: String) -> Outcome {
    let load = Load {
        connections: CONNECTIONS,
        warm_up: plan.warm_up,
        measure: plan.measure,
        pace: Pace::Closed,
    };
    load::run(target, load, body.requests(&run), None).await
}

/// The table of one body kind: each server's medians and ingest's ratios to each floor.
pub fn table(body: Body, runs: &[Run]) -> String {
    let [http, floor, ingest] = [0, 1, 2];
    let mut out = String::new();
    let _ = writeln!(out, "### {}\n", body.label());
    let _ = writeln!(
        out,
        "| server | requests/s | p50 | p99 | p99.9 | not 2xx | CPU per request | CPU stolen | peak RSS |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for (index, server) in Server::ALL.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} | {:.0} us | {} | {} |",
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
    let per_s = |server: usize| move |run: &Run| run[server].per_s;
    let p99 = |server: usize| move |run: &Run| run[server].p99_ms;
    let _ = writeln!(
        out,
        "\nIngest, as the median of within-run ratios: **{:.2}** of the ingest floor's \
         throughput (target at least 0.90) with **{:.2}x** its p99 (target at most 1.5x); \
         {:.2} of the HTTP floor's throughput. {}\n",
        median_ratio(runs, per_s(ingest), per_s(floor)),
        median_ratio(runs, p99(ingest), p99(floor)),
        median_ratio(runs, per_s(ingest), per_s(http)),
        stolen_sentence(runs.iter().flatten().map(|figures| figures.stolen)),
    );
    out
}
