-- Every event the worker has stored, once per (source, dedup_key): the unique constraint is what
-- makes redeliveries and sender retries idempotent, also across concurrent workers.
CREATE TABLE inbound_events (
    event_id     uuid PRIMARY KEY,
    source       text        NOT NULL,
    kind         text        NOT NULL,
    uid          text        NOT NULL,
    dedup_key    text        NOT NULL,
    received_at  timestamptz NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT inbound_events_dedup UNIQUE (source, dedup_key)
);

-- A transcript session: the sender's session id for one uid, open until it completes.
CREATE TABLE transcript_sessions (
    id               uuid PRIMARY KEY,
    uid              text        NOT NULL,
    external_id      text        NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    last_segment_at  timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz
);
-- At most one open session per (uid, sender session id); get-or-create upserts against it.
CREATE UNIQUE INDEX transcript_sessions_open ON transcript_sessions (uid, external_id)
    WHERE completed_at IS NULL;
CREATE INDEX transcript_sessions_by_uid ON transcript_sessions (uid, started_at DESC);

-- Speakers of one session, by diarization label (SPEAKER_00 ...).
CREATE TABLE transcript_speakers (
    id             bigserial PRIMARY KEY,
    session_id     uuid   NOT NULL REFERENCES transcript_sessions (id) ON DELETE CASCADE,
    label          text   NOT NULL,
    speaker_index  bigint,
    is_user        boolean NOT NULL DEFAULT false,
    person_id      text,
    name           text,
    CONSTRAINT transcript_speakers_label UNIQUE (session_id, label)
);

CREATE TABLE transcript_segments (
    id              bigserial PRIMARY KEY,
    session_id      uuid   NOT NULL REFERENCES transcript_sessions (id) ON DELETE CASCADE,
    speaker_id      bigint NOT NULL REFERENCES transcript_speakers (id),
    event_id        uuid   NOT NULL REFERENCES inbound_events (event_id),
    position        integer NOT NULL,
    omi_segment_id  text,
    text            text   NOT NULL,
    start_s         double precision NOT NULL,
    end_s           double precision NOT NULL,
    log_timestamp   timestamptz,
    -- Fields the sender added that we do not model (translations, stt_provider, ...).
    extra           jsonb  NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT transcript_segments_position UNIQUE (event_id, position)
);
CREATE UNIQUE INDEX transcript_segments_omi_id ON transcript_segments (session_id, omi_segment_id)
    WHERE omi_segment_id IS NOT NULL;
CREATE INDEX transcript_segments_by_session ON transcript_segments (session_id, start_s);
