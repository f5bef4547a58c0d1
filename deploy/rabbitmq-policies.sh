#!/usr/bin/env bash
# Applies the RabbitMQ policies of one deployment (queue prefix), or clears them. Policies change
# queue settings without redeclaring the queues, so they also reach queues declared long ago, and
# no process declares these settings: ingest and worker declare every queue with the same fixed
# arguments (quorum, the dead-letter exchange, at-least-once dead-lettering, reject-publish, a
# broker delivery limit out of reach), whatever their own settings say, so processes started
# with different values can never make a declare or a publish fail. DELIVERY_LIMIT is not a
# broker setting at all: the worker counts failures in Postgres.
#   deploy/rabbitmq-policies.sh apply    set them (idempotent)
#   deploy/rabbitmq-policies.sh clear    remove them
# Settings (environment): QUEUE_PREFIX (webhooks), RABBITMQ_VHOST (/),
#   DEAD_MAX_LENGTH (100000): most messages <prefix>.dead holds; beyond, dead-lettering waits
#     (overflow reject-publish: the events queue keeps a poison message until there is room),
#   EVENTS_MAX_LENGTH (none: unbounded): most messages <prefix>.events holds; beyond, the
#     broker refuses publishes (reject-publish) and ingest answers 503 until workers catch up,
#   CONSUMER_TIMEOUT_MS (600000): how long a worker may hold a message unacknowledged before
#     the broker takes it back (RabbitMQ 3.12 and later; older ones take `consumer_timeout` in
#     rabbitmq.conf only, and this script says so and applies the rest),
#   RABBITMQCTL (rabbitmqctl): e.g. "docker compose exec -T rabbitmq rabbitmqctl".
set -euo pipefail

PREFIX=${QUEUE_PREFIX:-webhooks}
VHOST=${RABBITMQ_VHOST:-/}
DEAD_MAX_LENGTH=${DEAD_MAX_LENGTH:-100000}
EVENTS_MAX_LENGTH=${EVENTS_MAX_LENGTH:-}
CONSUMER_TIMEOUT_MS=${CONSUMER_TIMEOUT_MS:-600000}
read -r -a CTL <<<"${RABBITMQCTL:-rabbitmqctl}"

# The prefix as a regular expression: dots and other specials escaped.
PATTERN_PREFIX=$(printf '%s' "$PREFIX" | sed 's/[][\.*^$+?(){}|]/\\&/g')
DEAD_POLICY="$PREFIX-dead-limits"
EVENTS_POLICY="$PREFIX-events-limits"
# Earlier releases' name for the events policy; two policies of one priority on one queue
# leave RabbitMQ to pick either, so it is removed.
OLD_EVENTS_POLICY="$PREFIX-events-consumer-timeout"

set_policy() {
  local name=$1 queue=$2 definition=$3
  "${CTL[@]}" set_policy -p "$VHOST" --apply-to queues --priority 10 \
    "$name" "^$PATTERN_PREFIX\\.$queue\$" "$definition" >/dev/null
}

clear_policy() {
  "${CTL[@]}" clear_policy -p "$VHOST" "$1" >/dev/null 2>&1 || true
}

# The events policy's definition; with the consumer timeout when $1 is "with-timeout".
events_definition() {
  local parts=()
  if [[ $1 == with-timeout ]]; then parts+=("\"consumer-timeout\":$CONSUMER_TIMEOUT_MS"); fi
  if [[ -n $EVENTS_MAX_LENGTH ]]; then parts+=("\"max-length\":$EVENTS_MAX_LENGTH"); fi
  local IFS=,
  printf '{%s}' "${parts[*]}"
}

case "${1:-apply}" in
  apply)
    set_policy "$DEAD_POLICY" dead \
      "{\"max-length\":$DEAD_MAX_LENGTH,\"overflow\":\"reject-publish\"}"
    clear_policy "$OLD_EVENTS_POLICY"
    if ! set_policy "$EVENTS_POLICY" events "$(events_definition with-timeout)" 2>/dev/null; then
      echo "this RabbitMQ takes no consumer-timeout policy (3.12 and later do);" >&2
      echo "set 'consumer_timeout = $CONSUMER_TIMEOUT_MS' in rabbitmq.conf instead" >&2
      if [[ -n $EVENTS_MAX_LENGTH ]]; then
        set_policy "$EVENTS_POLICY" events "$(events_definition without-timeout)"
      else
        clear_policy "$EVENTS_POLICY"
      fi
    fi ;;
  clear)
    clear_policy "$DEAD_POLICY"
    clear_policy "$EVENTS_POLICY"
    clear_policy "$OLD_EVENTS_POLICY" ;;
  *)
    echo "usage: $0 apply|clear" >&2; exit 2 ;;
esac
