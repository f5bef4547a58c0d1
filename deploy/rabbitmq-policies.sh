#!/usr/bin/env bash
# Applies the RabbitMQ policies of one deployment (queue prefix), or clears them. Policies change
# queue settings without redeclaring the queues, so they also reach queues declared long ago.
#   deploy/rabbitmq-policies.sh apply    set them (idempotent)
#   deploy/rabbitmq-policies.sh clear    remove them
# Settings (environment): QUEUE_PREFIX (webhooks), RABBITMQ_VHOST (/),
#   DEAD_MAX_LENGTH (100000): most messages <prefix>.dead holds; beyond, dead-lettering waits
#     (overflow reject-publish: the events queue keeps a poison message until there is room),
#   CONSUMER_TIMEOUT_MS (600000): how long a worker may hold a message unacknowledged before
#     the broker takes it back (RabbitMQ 3.12 and later; older ones take `consumer_timeout` in
#     rabbitmq.conf only, and this script says so),
#   RABBITMQCTL (rabbitmqctl): e.g. "docker compose exec -T rabbitmq rabbitmqctl".
set -euo pipefail

PREFIX=${QUEUE_PREFIX:-webhooks}
VHOST=${RABBITMQ_VHOST:-/}
DEAD_MAX_LENGTH=${DEAD_MAX_LENGTH:-100000}
CONSUMER_TIMEOUT_MS=${CONSUMER_TIMEOUT_MS:-600000}
read -r -a CTL <<<"${RABBITMQCTL:-rabbitmqctl}"

# The prefix as a regular expression: dots and other specials escaped.
PATTERN_PREFIX=$(printf '%s' "$PREFIX" | sed 's/[][\.*^$+?(){}|]/\\&/g')
DEAD_POLICY="$PREFIX-dead-limits"
EVENTS_POLICY="$PREFIX-events-consumer-timeout"

set_policy() {
  local name=$1 queue=$2 definition=$3
  "${CTL[@]}" set_policy -p "$VHOST" --apply-to queues --priority 10 \
    "$name" "^$PATTERN_PREFIX\\.$queue\$" "$definition"
}

case "${1:-apply}" in
  apply)
    set_policy "$DEAD_POLICY" dead \
      "{\"max-length\":$DEAD_MAX_LENGTH,\"overflow\":\"reject-publish\"}"
    if ! set_policy "$EVENTS_POLICY" events "{\"consumer-timeout\":$CONSUMER_TIMEOUT_MS}" 2>/dev/null; then
      echo "this RabbitMQ takes no consumer-timeout policy (3.12 and later do);" >&2
      echo "set 'consumer_timeout = $CONSUMER_TIMEOUT_MS' in rabbitmq.conf instead" >&2
    fi ;;
  clear)
    "${CTL[@]}" clear_policy -p "$VHOST" "$DEAD_POLICY" || true
    "${CTL[@]}" clear_policy -p "$VHOST" "$EVENTS_POLICY" 2>/dev/null || true ;;
  *)
    echo "usage: $0 apply|clear" >&2; exit 2 ;;
esac
