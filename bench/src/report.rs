//! Turning runs into the figures `BENCHMARKS.md` states: medians over runs, ratios taken within
//! a run (side by side) before their median, and memory in MiB.

use crate::load::Outcome;

/// What one load against one server measured.
#[derive(Clone, Debug)]
pub struct Figures {
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Answers other than 2xx plus requests that got no answer.
    pub not_accepted: u64,
    pub peak_rss: Option<u64>,
    /// CPU time the server used per accepted request over the measuring window.
    pub cpu_us_per_request: Option<f64>,
    /// The share of the machine's CPU time the hypervisor stole over the measuring window
    /// ([`crate::process::MachineCpu`]).
    pub stolen: Option<f64>,
}

impl Figures {
    pub fn new(outcome: &Outcome, peak_rss: Option<u64>, cpu_seconds: Option<f64>) -> Self {
        Figures {
            per_s: outcome.accepted_per_s(),
            p50_ms: outcome.latency_ms(0.5),
            p99_ms: outcome.latency_ms(0.99),
            p999_ms: outcome.latency_ms(0.999),
            not_accepted: outcome.refused_total() + outcome.failed,
            peak_rss,
            cpu_us_per_request: cpu_seconds.map(|cpu| cpu * 1e6 / outcome.accepted.max(1) as f64),
            stolen: None,
        }
    }

    pub fn with_stolen(self, stolen: Option<f64>) -> Self {
        Figures { stolen, ..self }
    }
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// The median over runs of `figure`.
pub fn median_of<T>(runs: &[T], figure: impl Fn(&T) -> f64) -> f64 {
    median(runs.iter().map(figure).collect())
}

/// The median over runs of the ratio `numerator / denominator`, each taken within one run.
pub fn median_ratio<T>(
    runs: &[T],
    numerator: impl Fn(&T) -> f64,
    denominator: impl Fn(&T) -> f64,
) -> f64 {
    median(
        runs.iter()
            .map(|run| numerator(run) / denominator(run))
            .collect(),
    )
}

/// The largest peak RSS over runs, in MiB, or "n/a" where it could not be read.
pub fn peak_mib<T>(runs: &[T], rss: impl Fn(&T) -> Option<u64>) -> String {
    runs.iter()
        .filter_map(rss)
        .max()
        .map(|bytes| format!("{:.1} MiB", bytes as f64 / 1_048_576.0))
        .unwrap_or_else(|| "n/a".into())
}

/// A stolen share as a table cell: the median over runs, in percent, or "n/a".
pub fn stolen_percent<T>(runs: &[T], stolen: impl Fn(&T) -> Option<f64>) -> String {
    let shares: Vec<f64> = runs.iter().filter_map(stolen).collect();
    match shares.is_empty() {
        true => "n/a".into(),
        false => format!("{:.0}%", median(shares) * 100.0),
    }
}

/// The lowest and highest of `shares` (a table's every cell), for the sentence under the table
/// ("the hypervisor stole 3-38% ..."), or `None` when none could be read.
pub fn stolen_range(shares: impl IntoIterator<Item = Option<f64>>) -> Option<(f64, f64)> {
    shares.into_iter().flatten().fold(None, |range, share| {
        let (low, high) = range.unwrap_or((share, share));
        Some((low.min(share), high.max(share)))
    })
}

/// The sentence that says how much CPU the hypervisor stole during the measuring windows.
pub fn stolen_sentence(shares: impl IntoIterator<Item = Option<f64>>) -> String {
    match stolen_range(shares) {
        Some((low, high)) => format!(
            "The hypervisor stole {:.0}-{:.0}% of the machine's CPU time in these measuring \
             windows (`/proc/stat` steal); a window it robbed more than its pair's moves that \
             run's ratio.",
            low * 100.0,
            high * 100.0
        ),
        None => "CPU steal could not be read.".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn ratios_are_taken_within_a_run() {
        // Run 1 is fast for both, run 2 slow for both: the within-run ratio is 0.5 each time.
        let runs = [(100.0, 200.0), (10.0, 20.0)];
        assert_eq!(median_ratio(&runs, |run| run.0, |run| run.1), 0.5);
    }

    #[test]
    fn stolen_shares_are_summed_up_as_a_median_and_a_range() {
        let runs = [Some(0.1), None, Some(0.3), Some(0.2)];
        assert_eq!(stolen_percent(&runs, |share| *share), "20%");
        assert_eq!(stolen_percent(&[None::<f64>], |share| *share), "n/a");
        assert_eq!(stolen_range(runs), Some((0.1, 0.3)));
        assert_eq!(stolen_range([None]), None);
    }

    #[test]
    fn peak_memory_is_the_largest_reading() {
        let runs = [Some(1_048_576), None, Some(3 * 1_048_576)];
        assert_eq!(peak_mib(&runs, |rss| *rss), "3.0 MiB");
        assert_eq!(peak_mib(&[None::<u64>], |rss| *rss), "n/a");
    }
}
