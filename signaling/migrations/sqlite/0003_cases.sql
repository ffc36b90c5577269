-- Cases (SQLite): cases and their history, documents, idempotency records, ratings and
-- follow-ups. Ids are UUIDs as 16-byte blobs; times are Unix ms; JSON is text.
-- call_id and ticket_id are plain UUIDs: their tables belong to the calls and queue issues.
CREATE TABLE cases (
    id BLOB PRIMARY KEY,
    resident_id BLOB NOT NULL REFERENCES residents (id),
    matter_code TEXT NOT NULL REFERENCES matters (code),
    status TEXT NOT NULL CHECK (status IN ('draft', 'submitted', 'accepted', 'returned', 'resubmitted', 'approved', 'rejected', 'completed')),
    answers TEXT NOT NULL DEFAULT '{}',
    call_id BLOB,
    ticket_id BLOB,
    created_by BLOB NOT NULL,
    created_by_role TEXT NOT NULL,
    return_count BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    submitted_at BIGINT,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX cases_resident ON cases (resident_id, id);
CREATE INDEX cases_matter ON cases (matter_code);
CREATE INDEX cases_status ON cases (status, id);

CREATE TABLE case_events (
    id BLOB PRIMARY KEY,
    case_id BLOB NOT NULL REFERENCES cases (id),
    at BIGINT NOT NULL,
    actor_id BLOB,
    actor_role TEXT,
    action TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    reason TEXT,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX case_events_case ON case_events (case_id, id);

-- The history is append-only.
CREATE TRIGGER case_events_no_update BEFORE UPDATE ON case_events
BEGIN
    SELECT RAISE(ABORT, 'case_events is append-only');
END;
CREATE TRIGGER case_events_no_delete BEFORE DELETE ON case_events
BEGIN
    SELECT RAISE(ABORT, 'case_events is append-only');
END;

CREATE TABLE case_documents (
    id BLOB PRIMARY KEY,
    case_id BLOB NOT NULL REFERENCES cases (id),
    item_key TEXT,
    source TEXT NOT NULL CHECK (source IN ('upload', 'video_frame')),
    call_id BLOB,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL CHECK (size > 0),
    received BIGINT NOT NULL DEFAULT 0 CHECK (received >= 0 AND received <= size),
    sha256 TEXT,
    status TEXT NOT NULL CHECK (status IN ('uploading', 'ready', 'invalid')),
    invalid_reason TEXT,
    created_by BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX case_documents_case ON case_documents (case_id, id);
-- One copy of the same bytes per case: the duplicate check is this constraint.
CREATE UNIQUE INDEX case_documents_sha ON case_documents (case_id, sha256) WHERE sha256 IS NOT NULL;

-- Idempotency-Key records: the first result of a create or submit, replayed on retries.
CREATE TABLE idempotency_keys (
    subject BLOB NOT NULL,
    idem_key TEXT NOT NULL,
    route TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    resource_id BLOB NOT NULL,
    status_code BIGINT,
    response TEXT,
    created_at BIGINT NOT NULL,
    locked_at BIGINT NOT NULL,
    PRIMARY KEY (subject, idem_key)
);

CREATE TABLE ratings (
    id BLOB PRIMARY KEY,
    resident_id BLOB NOT NULL REFERENCES residents (id),
    case_id BLOB REFERENCES cases (id),
    call_id BLOB,
    matter_code TEXT,
    level BIGINT NOT NULL CHECK (level BETWEEN 1 AND 5),
    tags TEXT NOT NULL DEFAULT '[]',
    comment TEXT,
    created_at BIGINT NOT NULL,
    CHECK ((case_id IS NULL) <> (call_id IS NULL))
);
CREATE UNIQUE INDEX ratings_one_per_case ON ratings (resident_id, case_id) WHERE case_id IS NOT NULL;
CREATE UNIQUE INDEX ratings_one_per_call ON ratings (resident_id, call_id) WHERE call_id IS NOT NULL;

CREATE TABLE follow_ups (
    id BLOB PRIMARY KEY,
    rating_id BLOB NOT NULL UNIQUE REFERENCES ratings (id),
    opened_at BIGINT NOT NULL,
    due_on TEXT NOT NULL,
    due_at BIGINT NOT NULL,
    closed_at BIGINT,
    closed_by BLOB,
    note TEXT
);
CREATE INDEX follow_ups_open ON follow_ups (closed_at, due_at);
