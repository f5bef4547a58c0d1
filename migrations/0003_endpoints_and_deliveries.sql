-- Outbound webhooks: where events go (endpoints), one delivery per (event, endpoint) with its
-- retry schedule, and every attempt made. The schedule lives here, so it survives restarts.

-- A time-ordered UUID (version 7), so ids sort by creation and serve as list cursors.
CREATE FUNCTION uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
        PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
            FROM 3)
        FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;

CREATE TABLE endpoints (
    id                          uuid PRIMARY KEY,
    url                         text        NOT NULL,
    -- Event types delivered; '*' delivers every type.
    event_types                 text[]      NOT NULL,
    secret                      text        NOT NULL,
    -- During a rotation the old secret keeps signing until it expires.
    previous_secret             text,
    previous_secret_expires_at  timestamptz,
    headers                     jsonb       NOT NULL DEFAULT '{}',
    timeout_ms                  integer     NOT NULL DEFAULT 15000,
    rate_limit_per_s            integer,
    enabled                     boolean     NOT NULL DEFAULT true,
    disabled_reason             text,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);

-- One delivery of one outbox event to one endpoint. Its id is the `webhook-id` header, the same
-- on every retry. A pending delivery is due at next_attempt_at; a worker claims it by pushing
-- next_attempt_at past the request timeout (a lease), so a killed worker's claim expires.
CREATE TABLE deliveries (
    id                uuid PRIMARY KEY,
    event_id          uuid        NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    endpoint_id       uuid        NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    status            text        NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'succeeded', 'failed')),
    -- Attempts made in all; `X-Webhook-Retry` of the next one.
    attempts          integer     NOT NULL DEFAULT 0,
    -- Attempts since the current retry window opened (a manual retry opens a new one).
    window_attempts   integer     NOT NULL DEFAULT 0,
    -- Start of the current retry window: no attempt starts later than DELIVERY_WINDOW_MS after.
    first_attempt_at  timestamptz,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deliveries_once UNIQUE (event_id, endpoint_id)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, id DESC);
CREATE INDEX deliveries_failed ON deliveries (endpoint_id, created_at) WHERE status = 'failed';

CREATE TABLE delivery_attempts (
    id                bigserial PRIMARY KEY,
    delivery_id       uuid        NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempted_at      timestamptz NOT NULL,
    status_code       integer,
    latency_ms        integer     NOT NULL,
    -- The start of the receiver's answer, at most about 1 KB.
    response_excerpt  text,
    error             text
);
CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id, attempted_at);

-- Wakes the delivery loops (LISTEN outbound) as soon as an event is committed.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbound', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
