-- Endpoint features of the management API (issue 15): a uid filter, automatic disabling after
-- sustained failure, and per-endpoint attempt statistics over time windows.

-- The uids whose events an endpoint receives; empty: every user's. Events without a uid
-- (`endpoint.disabled`) go only to endpoints without a filter. A constant default is added
-- without rewriting the table.
ALTER TABLE endpoints ADD COLUMN uids text[] NOT NULL DEFAULT '{}';

-- When the endpoint's current run of failed attempts began (no success since); NULL while its
-- last attempt succeeded. Written by the fold of `endpoint_attempt_changes` (the sweeper), only
-- when it changes, never by the delivery path; an endpoint whose run is older than
-- ENDPOINT_DISABLE_AFTER is disabled. Re-enabling clears it.
ALTER TABLE endpoints ADD COLUMN failing_since timestamptz;

-- Element-wise sum of two counter arrays (the shorter one padded with zeros), and its
-- aggregate: what the statistics add up.
CREATE FUNCTION counters_add(bigint[], bigint[]) RETURNS bigint[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(coalesce(a, 0) + coalesce(b, 0) ORDER BY i), '{}')
    FROM unnest($1, $2) WITH ORDINALITY AS u (a, b, i)
$$;
CREATE AGGREGATE counters_sum(bigint[]) (
    SFUNC = counters_add, STYPE = bigint[], INITCOND = '{}'
);

-- What one recorded batch of attempts adds to its endpoint's statistics, appended by the
-- statement that records the batch (one row per batch, no index, no shared row updated, so
-- recording never waits on another transaction), and folded by the sweeper, like
-- `delivery_count_changes`. `classes`: attempts answered 2xx, 3xx, 4xx, 5xx, and without an
-- answer (timeout, connection error); `latency`: attempts per latency bucket (bounds in
-- worker/src/outbound/attempt_stats.rs); `succeeded_at`: the batch's last success;
-- `failed_at`: its first failure after that success (after its start when none succeeded).
CREATE TABLE endpoint_attempt_changes (
    endpoint_id   uuid        NOT NULL,
    attempted_at  timestamptz NOT NULL,
    classes       bigint[]    NOT NULL,
    latency       bigint[]    NOT NULL,
    succeeded_at  timestamptz,
    failed_at     timestamptz
);

-- The folded statistics: one row per endpoint and minute with attempts. A window of
-- `GET /v1/endpoints/{id}/stats` reads at most one row a minute of one endpoint (the primary
-- key), never the attempts table. Rows older than the longest window are pruned by the fold
-- (through the index on minute).
CREATE TABLE endpoint_attempt_stats (
    endpoint_id  uuid        NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    minute       timestamptz NOT NULL,
    classes      bigint[]    NOT NULL,
    latency      bigint[]    NOT NULL,
    PRIMARY KEY (endpoint_id, minute)
);
CREATE INDEX endpoint_attempt_stats_by_minute ON endpoint_attempt_stats (minute);
