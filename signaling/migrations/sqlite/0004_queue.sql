-- Queue (SQLite): tickets with readable per-day numbers, every transition, agent presence.
CREATE TABLE ticket_counters (
    day TEXT NOT NULL,
    prefix TEXT NOT NULL,
    last BIGINT NOT NULL,
    PRIMARY KEY (day, prefix)
);

CREATE TABLE tickets (
    id BLOB PRIMARY KEY,
    ticket_no TEXT NOT NULL,
    day TEXT NOT NULL,
    matter_code TEXT NOT NULL,
    skill TEXT NOT NULL,
    resident_id BLOB NOT NULL REFERENCES residents (id),
    taken_by BLOB NOT NULL,
    taken_by_role TEXT NOT NULL,
    channel TEXT NOT NULL,
    priority TEXT NOT NULL,
    state TEXT NOT NULL,
    queued_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    appointment_at BIGINT,
    callback_phone TEXT,
    offer_id BLOB,
    offered_to BLOB,
    offer_expires_at BIGINT,
    excluded TEXT NOT NULL DEFAULT '[]',
    agent_id BLOB,
    call_id BLOB,
    answered_at BIGINT,
    wrap_up_at BIGINT,
    done_at BIGINT,
    dedupe_key TEXT UNIQUE,
    UNIQUE (day, ticket_no)
);
CREATE INDEX tickets_state ON tickets (state, skill, queued_at);
CREATE INDEX tickets_resident ON tickets (resident_id, state);
CREATE INDEX tickets_taken_by ON tickets (taken_by, state);
CREATE UNIQUE INDEX tickets_offer ON tickets (offer_id);
CREATE INDEX tickets_day ON tickets (day);

CREATE TABLE ticket_events (
    id BLOB PRIMARY KEY,
    ticket_id BLOB NOT NULL REFERENCES tickets (id),
    at BIGINT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    cause TEXT NOT NULL,
    actor BLOB,
    detail TEXT NOT NULL
);
CREATE INDEX ticket_events_ticket ON ticket_events (ticket_id, id);

CREATE TABLE agent_presence (
    agent_id BLOB PRIMARY KEY REFERENCES staff (id),
    status TEXT NOT NULL,
    reason TEXT,
    since BIGINT NOT NULL,
    idle_since BIGINT NOT NULL,
    node BLOB,
    last_seen BIGINT NOT NULL
);
