-- Omi conversations ("memories"), kept whole, one row per Omi id.
CREATE TABLE conversations (
    id           text PRIMARY KEY,
    uid          text        NOT NULL,
    title        text,
    started_at   timestamptz,
    finished_at  timestamptz,
    data         jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_by_uid ON conversations (uid, created_at DESC);

-- Lifecycle events of the Omi webhook-server envelope (memory_created, ..._status_changed, ...).
CREATE TABLE memory_events (
    event_id    uuid PRIMARY KEY REFERENCES inbound_events (event_id),
    uid         text        NOT NULL,
    memory_id   text        NOT NULL,
    type        text        NOT NULL,
    status      text,
    data        jsonb       NOT NULL,
    received_at timestamptz NOT NULL
);
CREATE INDEX memory_events_by_memory ON memory_events (memory_id, received_at);

CREATE TABLE day_summaries (
    event_id      uuid PRIMARY KEY REFERENCES inbound_events (event_id),
    uid           text        NOT NULL,
    -- Omi's `summary` is a Python repr string: kept as sent, never parsed.
    summary       text,
    summary_json  jsonb       NOT NULL,
    created_at    timestamptz,
    received_at   timestamptz NOT NULL
);
CREATE INDEX day_summaries_by_uid ON day_summaries (uid, received_at DESC);

-- Asleep INFERENCE_COMPLETE increments, one per (session, seq_num).
CREATE TABLE sleep_inferences (
    session_id         text   NOT NULL,
    seq_num            bigint NOT NULL,
    uid                text   NOT NULL,
    inference_seq_num  bigint,
    sleep_stages       jsonb,
    data               jsonb  NOT NULL,
    received_at        timestamptz NOT NULL,
    PRIMARY KEY (session_id, seq_num)
);

-- Asleep SESSION_COMPLETE reports, one per session: a duplicate never counts twice.
CREATE TABLE sleep_reports (
    session_id        text PRIMARY KEY,
    uid               text        NOT NULL,
    start_time        timestamptz,
    end_time          timestamptz,
    time_in_sleep_s   bigint,
    sleep_efficiency  double precision,
    session           jsonb,
    stat              jsonb,
    data              jsonb       NOT NULL,
    received_at       timestamptz NOT NULL
);
CREATE INDEX sleep_reports_by_uid ON sleep_reports (uid, start_time DESC NULLS LAST);

CREATE TABLE reflector_transcripts (
    id           text PRIMARY KEY,
    uid          text        NOT NULL,
    title        text,
    duration_s   double precision,
    data         jsonb       NOT NULL,
    received_at  timestamptz NOT NULL
);

-- Why events failed processing, kept beside the dead letters they may become.
CREATE TABLE processing_failures (
    event_id    uuid PRIMARY KEY,
    attempts    integer     NOT NULL DEFAULT 1,
    last_error  text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Messages RabbitMQ dead-lettered after DELIVERY_LIMIT deliveries, until redriven.
CREATE TABLE dead_letters (
    id           uuid PRIMARY KEY,
    event_id     uuid,
    kind         text,
    uid          text,
    properties   jsonb       NOT NULL,
    payload      bytea       NOT NULL,
    reason       text,
    dead_at      timestamptz NOT NULL DEFAULT now(),
    redriven_at  timestamptz
);
CREATE UNIQUE INDEX dead_letters_event ON dead_letters (event_id) WHERE redriven_at IS NULL;

ALTER TABLE transcript_sessions ADD COLUMN title text;
CREATE INDEX transcript_sessions_idle ON transcript_sessions (last_segment_at) WHERE completed_at IS NULL;
