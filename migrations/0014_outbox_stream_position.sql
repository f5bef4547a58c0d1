-- The live stream (`GET /v1/stream`, worker/src/stream/) reads the outbox in the order events
-- become visible, which neither the uuid v7 id nor a sequence gives: both are taken before the
-- commit, so a transaction that took a smaller id can commit after one that took a larger id,
-- and a reader that had moved past the larger one would skip it for good.
--
-- So each row records the id of the transaction that wrote it (`tx`, the top-level xid8, the
-- same for every row of one commit), and a reader takes only rows whose transaction is below
-- `pg_snapshot_xmin(pg_current_snapshot())`: every transaction below that has ended, so no row
-- can appear there later. The stream's position is `(tx, id)`: it only ever grows, and a reader
-- that resumes after one misses nothing and repeats nothing. The price is that the stream waits
-- for the oldest writing transaction still open in the Postgres cluster.
--
-- The default costs the writer nothing it does not already have (a writing transaction already
-- holds its xid); the index is one more B-tree entry per outbox row, appended at its right edge.
-- Rows written before this migration have no `tx` and are not in the stream; adding the column
-- without a default first keeps this migration from rewriting the table.
ALTER TABLE outbox ADD COLUMN tx xid8;
ALTER TABLE outbox ALTER COLUMN tx SET DEFAULT pg_current_xact_id();
CREATE INDEX outbox_stream ON outbox (tx, id) WHERE tx IS NOT NULL;
