-- Finished responses of requests sent with an Idempotency-Key, replayed to a retry with the
-- same key until they expire: kept with the history, so a replay survives a restart of the
-- gateway or of Redis and is answered by any replica. Times are microseconds since the epoch.
CREATE TABLE idempotency_records (
    record_key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    response TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX idempotency_records_expiry ON idempotency_records (expires_at);
