-- Every dedup key and every provider id is scoped by source and uid: one user's request can never
-- stand in for, or overwrite, another user's event (INTERFACE.md section 3).
ALTER TABLE inbound_events
    DROP CONSTRAINT inbound_events_dedup,
    ADD CONSTRAINT inbound_events_dedup UNIQUE (source, uid, dedup_key);

-- A conversation, a sleep report or inference and a Reflector transcript are one per uid and
-- provider id: the same id under another uid is another user's row.
ALTER TABLE conversations DROP CONSTRAINT conversations_pkey, ADD PRIMARY KEY (uid, id);
ALTER TABLE sleep_inferences
    DROP CONSTRAINT sleep_inferences_pkey,
    ADD PRIMARY KEY (uid, session_id, seq_num);
ALTER TABLE sleep_reports DROP CONSTRAINT sleep_reports_pkey, ADD PRIMARY KEY (uid, session_id);
ALTER TABLE reflector_transcripts
    DROP CONSTRAINT reflector_transcripts_pkey,
    ADD PRIMARY KEY (uid, id);
