//! Audio levels from PCM16 little-endian mono (INTERFACE.md section 6): RMS and peak in dBFS and
//! the 0-100 level, per fixed window, over a stream that arrives in chunks.
//!
//! [`Meter`] keeps the partial window between chunks, so windows span chunk boundaries. The
//! inner loop ([`accumulate`]) is the hot path: integer sums over lanes, no floating point and
//! no allocation per sample.

/// Full scale of a 16-bit sample.
const FULL_SCALE: f64 = 32768.0;

/// One finished window of a stream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    /// Index of the window's first sample since the stream began.
    pub start_sample: u64,
    pub samples: u32,
    /// `20*log10(rms/32768)`, `None` for digital silence.
    pub rms_dbfs: Option<f64>,
    /// `20*log10(max|s|/32768)`, `None` for digital silence.
    pub peak_dbfs: Option<f64>,
    /// `clamp((rms_dbfs + 60) / 60 * 100, 0, 100)`, 0 for silence.
    pub level: f64,
}

impl Window {
    fn from_sums(start_sample: u64, samples: u32, sum_squares: u64, peak: u32) -> Self {
        if sum_squares == 0 || samples == 0 {
            return Window {
                start_sample,
                samples,
                rms_dbfs: None,
                peak_dbfs: None,
                level: 0.0,
            };
        }
        let mean_square = sum_squares as f64 / samples as f64 / (FULL_SCALE * FULL_SCALE);
        let rms_dbfs = 10.0 * mean_square.log10();
        let peak_dbfs = 20.0 * (peak as f64 / FULL_SCALE).log10();
        Window {
            start_sample,
            samples,
            rms_dbfs: Some(rms_dbfs),
            peak_dbfs: Some(peak_dbfs),
            level: level_of(rms_dbfs),
        }
    }
}

/// The 0-100 level of an RMS in dBFS.
pub fn level_of(rms_dbfs: f64) -> f64 {
    ((rms_dbfs + 60.0) / 60.0 * 100.0).clamp(0.0, 100.0)
}

/// The running state of one stream: where the next window starts and the partial window so far.
/// Plain data, so the worker can persist it between chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meter {
    pub window_samples: u32,
    /// Samples of the stream already folded into finished windows.
    pub next_window_start: u64,
    pub partial_samples: u32,
    pub partial_sum_squares: u64,
    pub partial_peak: u32,
}

impl Meter {
    pub fn new(sample_rate: u32, window_ms: u32) -> Self {
        let window_samples = (sample_rate as u64 * window_ms as u64 / 1000).max(1) as u32;
        Meter {
            window_samples,
            ..Default::default()
        }
    }

    /// Folds a chunk of PCM16 LE (even length; a trailing odd byte is ignored) into the stream,
    /// appending every window it completes to `out`.
    pub fn feed(&mut self, pcm: &[u8], out: &mut Vec<Window>) {
        let mut rest = &pcm[..pcm.len() & !1];
        while !rest.is_empty() {
            let room = (self.window_samples - self.partial_samples) as usize;
            let take = room.min(rest.len() / 2);
            let (now, later) = rest.split_at(take * 2);
            let (sum, peak) = accumulate(now);
            self.partial_sum_squares += sum;
            self.partial_peak = self.partial_peak.max(peak);
            self.partial_samples += take as u32;
            rest = later;
            if self.partial_samples == self.window_samples {
                out.push(self.finish_partial());
            }
        }
    }

    /// Closes the partial window early (the stream stopped); `None` when it is empty.
    pub fn flush(&mut self) -> Option<Window> {
        (self.partial_samples > 0).then(|| self.finish_partial())
    }

    fn finish_partial(&mut self) -> Window {
        let window = Window::from_sums(
            self.next_window_start,
            self.partial_samples,
            self.partial_sum_squares,
            self.partial_peak,
        );
        self.next_window_start += self.partial_samples as u64;
        self.partial_samples = 0;
        self.partial_sum_squares = 0;
        self.partial_peak = 0;
        window
    }
}

/// Sum of squares and largest magnitude of PCM16 LE samples (even-length input).
///
/// Eight independent lanes let the compiler vectorise; a window holds at most 19,200 samples
/// (100 ms at 192 kHz), and each square is at most 2^30, so u64 sums cannot overflow.
pub fn accumulate(pcm: &[u8]) -> (u64, u32) {
    const LANES: usize = 8;
    let mut sums = [0u64; LANES];
    let mut peaks = [0u32; LANES];
    let mut blocks = pcm.chunks_exact(2 * LANES);
    for block in &mut blocks {
        for lane in 0..LANES {
            let sample = i16::from_le_bytes([block[2 * lane], block[2 * lane + 1]]) as i32;
            sums[lane] += (sample * sample) as u64;
            peaks[lane] = peaks[lane].max(sample.unsigned_abs());
        }
    }
    let mut sum: u64 = sums.iter().sum();
    let mut peak = peaks.into_iter().max().unwrap_or(0);
    for pair in blocks.remainder().chunks_exact(2) {
        let sample = i16::from_le_bytes([pair[0], pair[1]]) as i32;
        sum += (sample * sample) as u64;
        peak = peak.max(sample.unsigned_abs());
    }
    (sum, peak)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::testkit::fixture;

    fn windows_of(pcm: &[u8], sample_rate: u32, chunk: usize) -> Vec<Window> {
        let mut meter = Meter::new(sample_rate, 100);
        let mut out = Vec::new();
        for piece in pcm.chunks(chunk) {
            meter.feed(piece, &mut out);
        }
        out
    }

    fn pcm(samples: impl IntoIterator<Item = i16>) -> Vec<u8> {
        samples.into_iter().flat_map(i16::to_le_bytes).collect()
    }

    #[test]
    fn a_half_scale_sine_is_minus_9_03_dbfs_in_every_window() {
        let windows = windows_of(&fixture("omi/audio_sine440_half_16k.pcm"), 16_000, 32_000);
        assert_eq!(windows.len(), 10);
        for window in windows {
            let rms = window.rms_dbfs.unwrap();
            assert!((rms - -9.03).abs() < 0.01, "{rms}");
            assert!((window.peak_dbfs.unwrap() - -6.02).abs() < 0.05);
            assert!((window.level - level_of(rms)).abs() < 1e-12);
        }
    }

    #[test]
    fn silence_is_null_with_level_zero() {
        let windows = windows_of(&fixture("omi/audio_silence_8k.pcm"), 8_000, 16_000);
        assert_eq!(windows.len(), 10);
        assert!(
            windows
                .iter()
                .all(|w| w.rms_dbfs.is_none() && w.peak_dbfs.is_none() && w.level == 0.0)
        );
    }

    #[test]
    fn full_scale_square_is_0_dbfs_and_level_100() {
        let square = pcm((0..1600).map(|i| if i % 2 == 0 { i16::MAX } else { i16::MIN }));
        let window = windows_of(&square, 16_000, 3200)[0];
        assert!(window.rms_dbfs.unwrap().abs() < 0.001);
        assert_eq!(window.peak_dbfs, Some(0.0));
        assert!(window.level > 99.99, "{}", window.level);
    }

    #[test]
    fn windows_span_chunk_boundaries_whatever_the_chunk_size() {
        let sine = fixture("omi/audio_sine440_half_16k.pcm");
        let whole = windows_of(&sine, 16_000, sine.len());
        for chunk in [2, 6, 998, 3202, 10_000] {
            assert_eq!(
                windows_of(&sine, 16_000, chunk),
                whole,
                "chunks of {chunk} bytes"
            );
        }
    }

    #[test]
    fn the_partial_window_is_kept_until_flushed() {
        let mut meter = Meter::new(8_000, 100);
        let mut out = Vec::new();
        meter.feed(&pcm([1000i16; 1200]), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(meter.partial_samples, 400);
        let last = meter.flush().unwrap();
        assert_eq!((last.start_sample, last.samples), (800, 400));
        assert!(meter.flush().is_none());
    }

    #[test]
    fn the_level_formula_clamps_to_0_and_100() {
        assert_eq!(level_of(-90.0), 0.0);
        assert_eq!(level_of(-30.0), 50.0);
        assert_eq!(level_of(3.0), 100.0);
    }
}
