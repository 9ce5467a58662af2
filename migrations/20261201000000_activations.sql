-- The activation ledger: one row per activation the vendor accepted through the gateway.
-- Times are microseconds since the Unix epoch (UTC), so both databases sort them alike.
CREATE TABLE activations (
    audience_id BIGINT NOT NULL,
    flow_id TEXT NOT NULL,
    segment_id BIGINT NOT NULL,
    account_id BIGINT NOT NULL,
    account_name TEXT,
    segment_name TEXT NOT NULL,
    segment_description TEXT NOT NULL,
    start_date TEXT NOT NULL,
    end_date TEXT NOT NULL,
    activated_at BIGINT NOT NULL,
    caller_sub TEXT NOT NULL,
    caller_client_id TEXT,
    request_id TEXT NOT NULL,
    idempotency_key TEXT,
    PRIMARY KEY (audience_id, flow_id)
);

-- Newest first within an audience, ties broken by flow id: the keyset of the list's cursor.
CREATE INDEX activations_newest ON activations (audience_id, activated_at DESC, flow_id DESC);

-- Audiences deleted through the gateway; their activations are kept and shown as deleted.
CREATE TABLE deleted_audiences (
    audience_id BIGINT PRIMARY KEY,
    deleted_at BIGINT NOT NULL
);
