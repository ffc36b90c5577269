-- Calls (SQLite): a call, who may join it (members), and what happened in it (events).
CREATE TABLE calls (
    id BLOB PRIMARY KEY,
    opened_by BLOB NOT NULL,
    resident_id BLOB REFERENCES residents (id),
    matter_code TEXT,
    ticket_id BLOB,
    state TEXT NOT NULL CHECK (state IN ('open', 'ended')),
    created_at BIGINT NOT NULL,
    ended_at BIGINT,
    end_reason TEXT,
    ended_by BLOB
);
CREATE INDEX calls_resident ON calls (resident_id);

CREATE TABLE call_members (
    call_id BLOB NOT NULL REFERENCES calls (id),
    participant_id BLOB NOT NULL UNIQUE,
    subject BLOB NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('resident', 'device', 'agent', 'helper', 'observer')),
    display_name TEXT NOT NULL,
    added_at BIGINT NOT NULL,
    added_by BLOB,
    PRIMARY KEY (call_id, subject)
);

CREATE TABLE call_events (
    id BLOB PRIMARY KEY,
    call_id BLOB NOT NULL REFERENCES calls (id),
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    participant_id BLOB,
    detail TEXT NOT NULL
);
CREATE INDEX call_events_call ON call_events (call_id, id);
