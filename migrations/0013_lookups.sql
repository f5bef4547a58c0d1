-- Lookups of the management API (issue 15): what became of an inbound event
-- (GET /v1/events/{event_id}).

-- The inbound event an outbound event was emitted for, when one was (transcript segments,
-- memories, day summaries, sleep, Reflector, sessions a conversation completed); NULL for events
-- no single request causes (audio levels, listening changes, sessions completed by idle time,
-- endpoint changes, tests). No index: the lookup reads an event's outbound events through
-- `outbox_by_uid` (uid, id) within minutes of when the event was stored (outbox ids are
-- time-ordered), so the outbox, written for every emitted event, gets no index more. A column
-- without a default is added without rewriting the table.
ALTER TABLE outbox ADD COLUMN inbound_event_id uuid;

-- An inbound event whose dedup key was already stored is acknowledged and not stored (a sender's
-- retry, a replay); this row says which stored event it duplicates, so its own event_id (the one
-- its 202 answered) can still be looked up. The claim writes one only for a duplicate, so a
-- batch without duplicates writes nothing here. It goes with its original: retention and
-- erasure delete inbound events, and the cascade (served by the index) deletes these with them.
CREATE TABLE inbound_duplicates (
    event_id     uuid PRIMARY KEY,
    original_id  uuid        NOT NULL REFERENCES inbound_events (event_id) ON DELETE CASCADE,
    received_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbound_duplicates_by_original ON inbound_duplicates (original_id);
