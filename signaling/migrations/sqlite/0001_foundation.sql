-- Foundation schema (SQLite). Ids are UUIDs stored as 16-byte blobs; times are Unix ms.
CREATE TABLE grids (
    id BLOB PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL
);

CREATE TABLE staff (
    id BLOB PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('agent', 'helper', 'supervisor', 'auditor', 'admin')),
    skills TEXT NOT NULL DEFAULT '[]',
    grid_id BLOB REFERENCES grids (id),
    password_hash TEXT NOT NULL,
    failed_logins BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT,
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);

CREATE TABLE residents (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    phone TEXT NOT NULL UNIQUE,
    id_number TEXT UNIQUE,
    birth_date TEXT,
    elderly BOOLEAN NOT NULL DEFAULT FALSE,
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    grid_id BLOB REFERENCES grids (id),
    created_at BIGINT NOT NULL
);

CREATE TABLE devices (
    id BLOB PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('kiosk', 'tv_box')),
    label TEXT NOT NULL,
    grid_id BLOB REFERENCES grids (id),
    token_hash TEXT UNIQUE,
    revoked BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT
);

CREATE TABLE device_pairings (
    id BLOB PRIMARY KEY,
    code TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('kiosk', 'tv_box')),
    label TEXT NOT NULL,
    poll_secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    confirmed_by BLOB,
    confirmed_at BIGINT,
    device_id BLOB REFERENCES devices (id)
);
CREATE UNIQUE INDEX device_pairings_pending_code ON device_pairings (code) WHERE confirmed_at IS NULL;

CREATE TABLE otp_challenges (
    phone TEXT PRIMARY KEY,
    code_hash TEXT NOT NULL,
    sent_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE sessions (
    id BLOB PRIMARY KEY,
    subject BLOB NOT NULL,
    role TEXT NOT NULL,
    refresh_hash TEXT NOT NULL UNIQUE,
    previous_hash TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_previous_hash ON sessions (previous_hash);

CREATE TABLE matter_classes (
    code TEXT PRIMARY KEY,
    name_zh TEXT NOT NULL,
    name_en TEXT NOT NULL
);

CREATE TABLE matters (
    code TEXT PRIMARY KEY,
    class_code TEXT NOT NULL REFERENCES matter_classes (code),
    spec TEXT NOT NULL,
    version BIGINT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    updated_at BIGINT NOT NULL
);

CREATE TABLE audit_log (
    id BLOB PRIMARY KEY,
    at BIGINT NOT NULL,
    actor_id BLOB,
    actor_role TEXT,
    action TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id TEXT NOT NULL,
    detail TEXT NOT NULL
);

-- The audit log is append-only.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
