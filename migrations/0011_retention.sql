-- Retention (README "Retention"): an inbound event record is the dedup horizon and nothing
-- more. It is deleted after RETAIN_INBOUND_EVENTS while what the event stored (segments, audio
-- chunks, memory events, day summaries) is kept for its own retention, so those rows no longer
-- reference it: their event_id stays as the id of the request they came from. Nothing goes
-- with an inbound event when it is deleted. (The `make bench` that dropped the segments' keys
-- measured no change in the worker's rate either way.)
ALTER TABLE transcript_segments DROP CONSTRAINT transcript_segments_event_id_fkey;
ALTER TABLE audio_chunks DROP CONSTRAINT audio_chunks_event_id_fkey;
ALTER TABLE memory_events DROP CONSTRAINT memory_events_event_id_fkey;
ALTER TABLE day_summaries DROP CONSTRAINT day_summaries_event_id_fkey;

-- A completed session is deleted with its speakers and segments (ON DELETE CASCADE). The key
-- from a segment to its speaker had no index, so deleting one speaker scanned every segment to
-- check it; a speaker only ever goes with its session's segments, in the same statement, so
-- the key checked nothing the cascade does not already ensure. Dropped rather than indexed:
-- an index would be one more B-tree written with every segment.
ALTER TABLE transcript_segments DROP CONSTRAINT transcript_segments_speaker_id_fkey;
