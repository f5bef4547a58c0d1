-- Due deliveries are found per endpoint: the delivery loop walks the (small) endpoints table,
-- skips the endpoints it may not send to (disabled, circuit open, at their concurrency or rate
-- limit) before touching any delivery, and reads each remaining endpoint's earliest pending rows
-- from this index. A backlog behind one endpoint is then never read for another's sake, where
-- the old time-ordered index (`deliveries_due`) made every pass walk it (issue 19).
CREATE INDEX deliveries_pending_by_endpoint ON deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
-- No query walks pending deliveries across endpoints any more; one index less to write.
DROP INDEX deliveries_due;
