-- Audit recordings (sqlite): one row per recording (its files and signed manifest live in the
-- recordings store), legal holds, and the head of the recordings hash chain (kept outside the
-- chain so a truncated chain is detected).
CREATE TABLE recordings (
    id BLOB PRIMARY KEY,
    call_id BLOB NOT NULL,
    matter_code TEXT,
    status TEXT NOT NULL CHECK (status IN ('recording', 'complete', 'interrupted', 'deleted')),
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    segments BIGINT NOT NULL DEFAULT 0,
    manifest_sha256 TEXT,
    retention_days BIGINT NOT NULL,
    legal_hold BOOLEAN NOT NULL DEFAULT FALSE,
    hold_reason TEXT,
    hold_by BLOB,
    hold_at BIGINT,
    deleted_at BIGINT
);
CREATE INDEX recordings_call ON recordings (call_id);
CREATE INDEX recordings_status ON recordings (status, ended_at);

CREATE TABLE recording_chain_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
