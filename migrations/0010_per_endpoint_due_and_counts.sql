-- Due deliveries are found per endpoint: the delivery loop walks the (small) endpoints table,
-- skips the endpoints it may not send to (disabled, circuit open, at their concurrency or rate
-- limit) before touching any delivery, and reads each remaining endpoint's earliest pending rows
-- from this index. A backlog behind one endpoint is then never read for another's sake, where
-- the old time-ordered index (`deliveries_due`) made every pass walk it (issue 19).
CREATE INDEX deliveries_pending_by_endpoint ON deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
-- No query walks pending deliveries across endpoints any more; one index less to write.
DROP INDEX deliveries_due;

-- How many deliveries each endpoint has in each status, kept without counting them: every
-- change of a delivery's status appends its difference to `delivery_count_changes` (triggers
-- below, so no writer can forget), the sweeper folds those into `delivery_counts`, and a reader
-- adds the two. Reading a count costs O(endpoints + changes since the last fold), never
-- O(deliveries), and appending never waits on another transaction (no shared counter row is
-- updated on the hot path).
CREATE TABLE delivery_counts (
    endpoint_id  uuid    NOT NULL,
    status       text    NOT NULL,
    count        bigint  NOT NULL,
    PRIMARY KEY (endpoint_id, status)
);

-- Unfolded differences; no index, as the fold takes every row and readers sum them all.
CREATE TABLE delivery_count_changes (
    endpoint_id  uuid    NOT NULL,
    status       text    NOT NULL,
    delta        bigint  NOT NULL
);

INSERT INTO delivery_counts (endpoint_id, status, count)
SELECT endpoint_id, status, count(*) FROM deliveries GROUP BY endpoint_id, status;

-- Inserted rows count +1 each, deleted ones -1 (the trigger's argument), per endpoint and status.
CREATE FUNCTION deliveries_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO delivery_count_changes (endpoint_id, status, delta)
    SELECT endpoint_id, status, count(*) * TG_ARGV[0]::int FROM changed_rows
    GROUP BY endpoint_id, status;
    RETURN NULL;
END;
$$;

-- A row trigger, so the claim's and a retry's updates (status unchanged) cost nothing: it fires
-- only on statements that set `status`, and only for rows whose status changed.
CREATE FUNCTION deliveries_counted_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO delivery_count_changes (endpoint_id, status, delta)
    VALUES (OLD.endpoint_id, OLD.status, -1), (NEW.endpoint_id, NEW.status, 1);
    RETURN NULL;
END;
$$;

CREATE TRIGGER deliveries_counted_in AFTER INSERT ON deliveries
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_counted('1');
CREATE TRIGGER deliveries_counted_out AFTER DELETE ON deliveries
    REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_counted('-1');
CREATE TRIGGER deliveries_counted_moved AFTER UPDATE OF status ON deliveries
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION deliveries_counted_moved();
