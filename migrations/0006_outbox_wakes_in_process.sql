-- A transaction that sends NOTIFY takes, at commit, a lock that every notifying commit shares,
-- so the trigger on `outbox` serialized the commits of all events that emit (measured by
-- `make bench`: dropping it raised one worker's committed events per second by half). A worker
-- now wakes its own delivery loop after it commits; writers outside a worker (the management
-- API's retries, tests) send NOTIFY outbound themselves, and DELIVERY_POLL_MS bounds the rest.
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
