#!/usr/bin/env bash
# `make bench`: release-build benchmarks, printed and written to BENCHMARKS.md with the date and
# machine. Each figure is stated beside a baseline measured in the same run.
# So far: the audio level meter (criterion) against a plain byte sum over the same buffer.
set -euo pipefail
cd "$(dirname "$0")/.."

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

cat > BENCHMARKS.md <<MD
# Benchmarks

Written by \`make bench\` on $(date -u +%Y-%m-%d) on $(uname -m), $(nproc) cores,
$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo). Release build; figures are
criterion's middle estimates, one core.

## Audio levels (PCM16 LE, 8 MiB buffer)

| benchmark | throughput | ratio to the byte-sum baseline |
| --- | --- | --- |
| baseline: sum of the buffer's bytes | $baseline | 1.00 |
| \`accumulate\` (sum of squares and peak) | $accumulate | $(ratio "$accumulate" "$baseline") |
| \`Meter::feed\`, 16 kHz, 100 ms windows, 1 s chunks | $meter | $(ratio "$meter" "$baseline") |

Target: at least 1 GB/s per core for the meter.

## Not measured yet

Ingest throughput and latency against the HTTP and ingest floors, end to end, deliveries, and
peak RSS (issue 6) are still to be written.
MD
rm -f "$out"
cat BENCHMARKS.md
