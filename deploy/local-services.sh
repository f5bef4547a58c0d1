#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ answer on their local ports, starting locally installed
# servers when they are down. Used by `make run`, `make test` and CI.
#   deploy/local-services.sh ensure    start what is missing and wait until both answer
#   deploy/local-services.sh check     exit 0 only if both answer now
set -euo pipefail

PG_PORT=${PG_PORT:-5432}
AMQP_PORT=${AMQP_PORT:-5672}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_postgres() {
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    docker compose up -d postgres
  else
    echo "PostgreSQL is not running on 127.0.0.1:$PG_PORT and is not installed." >&2
    echo "Install it (Debian/Ubuntu: apt-get install postgresql) with trust auth for 127.0.0.1," >&2
    echo "or install Docker and run: docker compose up -d postgres" >&2
    return 1
  fi
}

start_rabbitmq() {
  if command -v rabbitmq-server >/dev/null 2>&1; then
    echo "starting RabbitMQ"
    rabbitmq-server -detached || true
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    docker compose up -d rabbitmq
  else
    echo "RabbitMQ is not running on 127.0.0.1:$AMQP_PORT and is not installed." >&2
    echo "Install it (Debian/Ubuntu: apt-get install rabbitmq-server, 3.8 or newer for quorum queues)," >&2
    echo "or install Docker and run: docker compose up -d rabbitmq" >&2
    return 1
  fi
}

wait_for() {
  local name=$1 port=$2
  for _ in $(seq 1 120); do
    answers "$port" && return 0
    sleep 0.5
  done
  echo "$name did not come up on 127.0.0.1:$port within 60 s" >&2
  return 1
}

case "${1:-ensure}" in
  check)
    answers "$PG_PORT" && answers "$AMQP_PORT" ;;
  ensure)
    answers "$PG_PORT" || start_postgres
    answers "$AMQP_PORT" || start_rabbitmq
    wait_for PostgreSQL "$PG_PORT"
    wait_for RabbitMQ "$AMQP_PORT"
    # RabbitMQ accepts TCP before it accepts AMQP logins; give it until the app is up.
    if command -v rabbitmqctl >/dev/null 2>&1; then
      timeout 60 rabbitmqctl await_startup >/dev/null 2>&1 || true
    fi
    echo "PostgreSQL and RabbitMQ are up" ;;
  *)
    echo "usage: $0 ensure|check" >&2; exit 2 ;;
esac
