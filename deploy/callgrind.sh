#!/usr/bin/env bash
# Instructions per request of one server under wrk, counted by valgrind's callgrind, so the
# figure holds whatever else the machine is doing (a wall-clock or CPU-time figure does not):
#
#   deploy/callgrind.sh ingest|floor [SECONDS] [KEYED]
#
# Starts ingest (or the ingest floor, `bench floor publish`) from target/release under callgrind
# with instrumentation off, warms it up with wrk, counts instructions over SECONDS (default 60)
# of `wrk -t1 -c64` posting the bench's 1.4 KB transcript (KEYED=1 sends an
# `Idempotency-Key` as our generator does; wrk's default sends none, as Omi), and prints the
# instructions per request answered (requests in flight when wrk stops, at most 64, are counted
# in the instructions but not in the requests). The profile is left in target/callgrind/ for `callgrind_annotate`.
# It counts user-space instructions only: the kernel's share (syscalls, loopback TCP) is not in
# it. Needs valgrind, wrk and a release build (`cargo build --release -p ingest -p bench`).
set -euo pipefail
cd "$(dirname "$0")/.."

server=${1:?usage: deploy/callgrind.sh ingest|floor [SECONDS] [KEYED]}
seconds=${2:-60}
keyed=${3:-0}
bin=${BIN_DIR:-target/release}
out=$PWD/target/callgrind
mkdir -p "$out"
port=$(( 20000 + RANDOM % 20000 ))
prefix="callgrind_${server}_$(date +%s)_$$"
export AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f} QUEUE_PREFIX="$prefix"

case "$server" in
  ingest)
    export INGEST_ADDR="127.0.0.1:$port" OMI_KEYS=bench-omi-key SHUTDOWN_GRACE_MS=0
    command=("$bin/ingest"); ready=/readyz ;;
  floor)
    command=("$bin/bench" floor publish "127.0.0.1:$port"); ready=/healthz ;;
  *) echo "unknown server $server" >&2; exit 2 ;;
esac

# The bench's transcript of request 0 (bench/src/requests.rs): six segments, 1.4 KB.
sentence="so the plan for tomorrow is to walk the new route before the meeting and then write up what we saw on the way, including the bridge and the market"
body="{\"session_id\":\"user-0\",\"segments\":["
for index in 0 1 2 3 4 5; do
  speaker=$(( index % 2 )); start=$(( index * 25 )); end=$(( start + 24 ))
  is_user=$([ "$speaker" = 0 ] && echo true || echo false)
  [ "$index" -gt 0 ] && body+=","
  body+="{\"id\":\"wrk-0-$index\",\"text\":\"$sentence\",\"speaker\":\"SPEAKER_0$speaker\",\"speaker_id\":$speaker,\"is_user\":$is_user,\"person_id\":null,\"start\":$(( start / 10 )).$(( start % 10 )),\"end\":$(( end / 10 )).$(( end % 10 ))}"
done
body+="]}"
printf '%s' "$body" > "$out/transcript.json"

script() {
  cat <<LUA
wrk.method = "POST"
wrk.path = "/v1/omi/transcript?key=bench-omi-key&uid=user-0"
wrk.headers["Content-Type"] = "application/json"
local file = assert(io.open("$out/transcript.json", "rb"))
wrk.body = file:read("*a")
file:close()
local counter = 0
request = function()
  counter = counter + 1
  if $keyed == 1 then wrk.headers["Idempotency-Key"] = "k-" .. counter .. "-" .. math.random(1e9) end
  return wrk.format()
end
done = function(summary)
  io.write(string.format("result %d %d\n", summary.requests, summary.errors.status))
end
LUA
}
script > "$out/wrk.lua"

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/$server.%p.out" \
  "${command[@]}" > "$out/$server.log" 2>&1 &
pid=$!
cleanup() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for queue in "$prefix.events" "$prefix.dead"; do
    rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT
for _ in $(seq 1 300); do
  curl -sf -o /dev/null "http://127.0.0.1:$port$ready" && break
  sleep 0.2
done
curl -sf -o /dev/null "http://127.0.0.1:$port$ready" || { echo "$server not ready; see $out/$server.log" >&2; exit 1; }

wrk -t1 -c64 -d5s -s "$out/wrk.lua" "http://127.0.0.1:$port" > /dev/null
rm -f "$out/$server.$pid.out"*
callgrind_control -z "$pid" > /dev/null
callgrind_control -i on "$pid" > /dev/null
result=$(wrk -t1 -c64 -d"${seconds}s" --timeout 10s -s "$out/wrk.lua" "http://127.0.0.1:$port" | awk '/^result/ { print $2, $3 }')
callgrind_control -i off "$pid" > /dev/null
callgrind_control -d "$pid" > /dev/null
read -r answered not_2xx <<< "$result"
profile=$(ls -t "$out/$server.$pid.out"* | head -1)
instructions=$(awk '/^totals:/ { total = $2 } END { print total }' "$profile")
cp "$profile" "$out/$server.last.out"
awk -v i="$instructions" -v n="$answered" -v bad="$not_2xx" -v s="$server" -v k="$keyed" 'BEGIN {
  printf "%s (keyed=%s): %d requests (%d not 2xx), %.0f instructions per request\n", s, k, n, bad, i / n }'
echo "profile: $out/$server.last.out (callgrind_annotate --inclusive=yes $out/$server.last.out)"
