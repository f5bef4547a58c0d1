#!/usr/bin/env bash
# Writes the .env that compose.yaml reads, with random credentials, on first run; an existing
# .env is kept as it is (delete it to start over: the Postgres and RabbitMQ volumes keep the
# passwords they were created with, so remove them too: `docker compose down -v`).
#   deploy/make-env.sh [PATH]    (default: .env beside compose.yaml)
# Every value is URL-safe (they go into AMQP_URL and DATABASE_URL) except SECRETS_KEY, which
# is base64 of 32 random bytes as the worker requires.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV_FILE=${1:-.env}

if [ -e "$ENV_FILE" ]; then
  echo "$ENV_FILE exists; keeping it" >&2
  exit 0
fi

# N random bytes as lowercase hex.
random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

umask 077
cat >"$ENV_FILE" <<ENV
# Written by deploy/make-env.sh on $(date -u +%Y-%m-%d). Local credentials: never commit.
POSTGRES_PASSWORD=$(random_hex 24)
RABBITMQ_USER=webhooks
RABBITMQ_PASSWORD=$(random_hex 24)
SECRETS_KEY=$(head -c 32 /dev/urandom | base64)
ADMIN_TOKEN=$(random_hex 32)
OMI_KEYS=$(random_hex 24)
ASLEEP_API_KEYS=$(random_hex 24)
REFLECTOR_SECRETS=$(random_hex 32)
GRAFANA_ADMIN_PASSWORD=$(random_hex 16)
ENV
echo "wrote $ENV_FILE (mode 600); the senders' keys are in it: OMI_KEYS, ASLEEP_API_KEYS, REFLECTOR_SECRETS"
