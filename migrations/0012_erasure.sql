-- Erasing a user (DELETE /v1/users/{uid}): one job per request, worked through by one worker at a
-- time in bounded batches (worker/src/lifecycle/erasure.rs). A job is kept after it is done: it
-- is the record that the uid was erased, which the worker's batch store reads to drop an event
-- of that uid received before `requested_at` (still in the queue when the erasure started).
CREATE TABLE erasures (
    id            uuid PRIMARY KEY,
    uid           text        NOT NULL,
    status        text        NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'done')),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    -- Rows deleted so far, by table: {"transcript_segments": 120, ...}; written in the same
    -- transaction as each batch it counts, so it matches what is gone even across restarts.
    counts        jsonb       NOT NULL DEFAULT '{}',
    -- Deliveries of the uid that a worker may still be sending when they were cancelled (a claim
    -- sends from memory for a bounded time): the job is done only after this has passed.
    sends_end_by  timestamptz,
    -- The last failure of a batch (the job is retried), cleared by the next success.
    last_error    text
);
-- At most one unfinished job per uid: a second DELETE finds it (idempotent).
CREATE UNIQUE INDEX erasures_unfinished ON erasures (uid) WHERE status <> 'done';
-- The batch store's one lookup per batch (`uid = ANY`), and the latest job of a uid.
CREATE INDEX erasures_by_uid ON erasures (uid, requested_at DESC);

-- Finding a uid's rows in tables that had no index leading with uid. The outbox is written for
-- every emitted event; this is one more index entry per outbox row, and without it erasing one
-- user reads the whole outbox once per batch. (Inbound events are found through their dedup
-- constraint, (source, uid, dedup_key), one source at a time, so they need none; audio chunks,
-- memory events and day summaries through their inbound events.)
CREATE INDEX outbox_by_uid ON outbox (uid, id) WHERE uid IS NOT NULL;
CREATE INDEX dead_letters_by_uid ON dead_letters (uid) WHERE uid IS NOT NULL;

-- A processing failure names its event's uid, so erasing the uid removes it (and its error
-- text) even when the event was never stored or dead-lettered.
ALTER TABLE processing_failures ADD COLUMN uid text;
CREATE INDEX processing_failures_by_uid ON processing_failures (uid) WHERE uid IS NOT NULL;
