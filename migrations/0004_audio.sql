-- Audio chunks as accepted, in the order ingest accepted them (received_at, event_id). A chunk is
-- folded into its uid's stream by whichever worker holds that stream's row lock.
CREATE TABLE audio_chunks (
    event_id     uuid PRIMARY KEY REFERENCES inbound_events (event_id),
    uid          text        NOT NULL,
    received_at  timestamptz NOT NULL,
    sample_rate  integer     NOT NULL,
    pcm          bytea       NOT NULL,
    folded_at    timestamptz
);
CREATE INDEX audio_chunks_pending ON audio_chunks (uid, received_at, event_id) WHERE folded_at IS NULL;

-- One row per uid: listening status and the level meter's running state between chunks.
CREATE TABLE audio_streams (
    uid                  text PRIMARY KEY,
    listening            boolean     NOT NULL DEFAULT false,
    session_id           uuid,
    sample_rate          integer,
    origin               timestamptz,
    window_samples       integer     NOT NULL DEFAULT 0,
    next_window_start    bigint      NOT NULL DEFAULT 0,
    partial_samples      integer     NOT NULL DEFAULT 0,
    partial_sum_squares  bigint      NOT NULL DEFAULT 0,
    partial_peak         integer     NOT NULL DEFAULT 0,
    last_chunk_at        timestamptz,
    levels_emitted_at    timestamptz,
    updated_at           timestamptz
);
CREATE INDEX audio_streams_listening ON audio_streams (last_chunk_at) WHERE listening;

CREATE TABLE audio_windows (
    uid         text        NOT NULL,
    session_id  uuid        NOT NULL,
    start_at    timestamptz NOT NULL,
    end_at      timestamptz NOT NULL,
    rms_dbfs    double precision,
    peak_dbfs   double precision,
    level       double precision NOT NULL,
    emitted     boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (uid, start_at)
);
CREATE INDEX audio_windows_unemitted ON audio_windows (uid, start_at) WHERE NOT emitted;
