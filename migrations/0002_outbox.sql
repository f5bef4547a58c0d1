-- Events for outbound webhooks, written in the same transaction as the state they describe, so
-- a rolled-back change never emits and a committed one is never lost. The delivery side fans
-- each row out to the endpoints subscribed to its type and marks it dispatched.
CREATE TABLE outbox (
    id             uuid PRIMARY KEY,
    event_type     text        NOT NULL,
    uid            text,
    data           jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    dispatched_at  timestamptz
);
CREATE INDEX outbox_pending ON outbox (created_at) WHERE dispatched_at IS NULL;
