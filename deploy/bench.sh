#!/usr/bin/env bash
# `make bench`: release-build benchmarks, printed and written to BENCHMARKS.md with the date and
# machine. Each figure is stated beside a baseline measured in the same run:
# - `bench run` (bench/): ingest against the HTTP and publish-only floors, end to end through one
#   worker, outbound deliveries, and ingest's and the worker's rates with retention deleting
#   against without it (about 2 minutes of the total, with bytes on disk per transcript event
#   and per hour of audio), each the median of BENCH_RUNS runs (default 3);
# - the audio level meter (criterion) against a plain byte sum over the same buffer.
# About 18 minutes on 2 cores. BENCH_RUNS, BENCH_SECONDS and BENCH_E2E_SECONDS shorten a trial run.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bins
services=$(mktemp)
./target/release/bench run | tee "$services"

out=$(mktemp)
cargo bench -p worker --bench audio_levels -- --warm-up-time 2 --measurement-time 5 | tee "$out"

# criterion prints "thrpt:  [low mid high]"; take the middle estimate of each benchmark.
throughput() {
  awk -v name="audio/$1" '
    index($0, name) == 1 { found = 1 }
    found && /thrpt:/ { gsub(/\[|\]/, ""); print $4, $5; exit }' "$out"
}
baseline=$(throughput baseline_byte_sum)
accumulate=$(throughput accumulate)
meter=$(throughput meter_16k_100ms_windows)
to_gib() { awk '{ v = $1; if ($2 == "MiB/s") v /= 1024; if ($2 == "KiB/s") v /= 1048576; printf "%.3f", v }'; }
ratio() { awk -v a="$(echo "$1" | to_gib)" -v b="$(echo "$2" | to_gib)" 'BEGIN { printf "%.2f", a / b }'; }

{
cat <<MD
# Benchmarks

Written by \`make bench\` on $(date -u +%Y-%m-%d) on $(uname -m), $(nproc) cores,
$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), with
$(rabbitmq-diagnostics -q server_version 2>/dev/null | sed 's/^/RabbitMQ /' || echo "RabbitMQ") and
$(psql -h 127.0.0.1 -U postgres -Atc 'show server_version' 2>/dev/null | sed 's/^/PostgreSQL /' || echo PostgreSQL) on the same
machine, over loopback. Release builds. The load generator, the servers, RabbitMQ and PostgreSQL
share the two cores, so absolute figures move from run to run; the ratios, taken within a run,
move much less. How to read them, and what bounds each figure: README, "Performance".

MD
cat "$services"
cat <<MD
## Audio levels (PCM16 LE, 8 MiB buffer, criterion, one core)

| benchmark | throughput | ratio to the byte-sum baseline |
| --- | --- | --- |
| baseline: sum of the buffer's bytes | $baseline | 1.00 |
| \`accumulate\` (sum of squares and peak) | $accumulate | $(ratio "$accumulate" "$baseline") |
| \`Meter::feed\`, 16 kHz, 100 ms windows, 1 s chunks | $meter | $(ratio "$meter" "$baseline") |

Target: at least 1 GB/s per core for the meter.
MD
} > BENCHMARKS.md
rm -f "$out" "$services"
cat BENCHMARKS.md
