-- Case links (PostgreSQL): the calls a case was handled in (several per case), and the
-- Idempotency-Key of the request that made a history entry (so a retry after a crash finds
-- the transition its first attempt committed).
CREATE TABLE case_calls (
    case_id UUID NOT NULL REFERENCES cases (id),
    call_id UUID NOT NULL REFERENCES calls (id),
    attached_at BIGINT NOT NULL,
    attached_by UUID NOT NULL,
    PRIMARY KEY (case_id, call_id)
);
CREATE INDEX case_calls_call ON case_calls (call_id);

-- Cases opened in a call before this migration keep that call.
INSERT INTO case_calls (case_id, call_id, attached_at, attached_by)
    SELECT id, call_id, created_at, created_by FROM cases
    WHERE call_id IS NOT NULL AND call_id IN (SELECT id FROM calls);

ALTER TABLE case_events ADD COLUMN idem_key TEXT;
-- One history entry per (case, caller, key): a retry can never apply a second transition.
CREATE UNIQUE INDEX case_events_idem ON case_events (case_id, actor_id, idem_key) WHERE idem_key IS NOT NULL;
