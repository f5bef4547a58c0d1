//! The level meter's throughput in bytes of PCM per second (one core): the hot loop of audio.
//! Baseline in the same run: a plain byte sum over the same buffer (memory bandwidth bound), so
//! the report can state the meter as a ratio of it.

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use worker::audio::levels::{Meter, accumulate};

fn pcm(bytes: usize) -> Vec<u8> {
    (0..bytes / 2)
        .flat_map(|i| ((((i as f64) * 0.1727).sin() * 16384.0) as i16).to_le_bytes())
        .collect()
}

fn levels(c: &mut Criterion) {
    let buffer = pcm(8 * 1024 * 1024);
    let mut group = c.benchmark_group("audio");
    group.throughput(Throughput::Bytes(buffer.len() as u64));
    group.bench_function("baseline_byte_sum", |b| {
        b.iter(|| {
            black_box(&buffer)
                .iter()
                .map(|&byte| byte as u64)
                .sum::<u64>()
        })
    });
    group.bench_function("accumulate", |b| b.iter(|| accumulate(black_box(&buffer))));
    group.bench_function("meter_16k_100ms_windows", |b| {
        let mut windows = Vec::with_capacity(4096);
        b.iter(|| {
            windows.clear();
            let mut meter = Meter::new(16_000, 100);
            for chunk in black_box(&buffer).chunks(32_000) {
                meter.feed(chunk, &mut windows);
            }
            windows.len()
        })
    });
    group.finish();
}

criterion_group!(benches, levels);
criterion_main!(benches);
