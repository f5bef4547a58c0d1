#!/usr/bin/env bash
# `make run`: builds, migrates, and runs worker and ingest against local PostgreSQL and RabbitMQ,
# with development credentials unless the environment sets its own. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! bash deploy/local-services.sh ensure; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo "using docker compose instead"; exec docker compose up --build
  fi
  exit 1
fi

export OMI_KEYS=${OMI_KEYS:-dev-omi-key}
export ASLEEP_API_KEYS=${ASLEEP_API_KEYS:-dev-asleep-key}
export REFLECTOR_SECRETS=${REFLECTOR_SECRETS:-dev-reflector-secret}
export ADMIN_TOKEN=${ADMIN_TOKEN:-dev-admin-token}
# Development key that seals endpoint secrets at rest; set your own: head -c 32 /dev/urandom | base64
export SECRETS_KEY=${SECRETS_KEY:-BQB38bH3ZRBPePGPyhvqgP8TRJly/vv+i9l/OKKiAaE=}
export INGEST_ADDR=${INGEST_ADDR:-127.0.0.1:8080}
export WORKER_ADDR=${WORKER_ADDR:-127.0.0.1:8081}
export LOG_FORMAT=${LOG_FORMAT:-pretty}

cargo build --release --bins
mkdir -p .run
./target/release/worker migrate
./target/release/worker > .run/worker.log 2>&1 & worker=$!
./target/release/ingest > .run/ingest.log 2>&1 & ingest=$!
trap 'kill $ingest $worker 2>/dev/null; wait' INT TERM EXIT

cat <<MSG

ingest:  http://$INGEST_ADDR   (health: /healthz, readiness: /readyz, metrics: /metrics)
worker:  http://$WORKER_ADDR   (management API with: Authorization: Bearer $ADMIN_TOKEN)
logs:    .run/ingest.log  .run/worker.log

Post a sample transcript:
  curl -i -X POST 'http://$INGEST_ADDR/v1/omi/transcript?key=$OMI_KEYS&uid=demo-user' \\
       -H 'content-type: application/json' \\
       -d '{"session_id":"demo-user","segments":[{"text":"Hello from Omi","speaker":"SPEAKER_00","speaker_id":0,"is_user":true,"start":0.0,"end":1.5}]}'

Ctrl-C stops both.
MSG
tail -n +1 -f .run/ingest.log .run/worker.log
