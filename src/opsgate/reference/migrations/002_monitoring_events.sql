-- The monitoring outbox (seed 000 "Logging / Monitoring Health Checks"): every failure event is stored before
-- it is posted, so a failing webhook (410, down) delays it but never loses it. The relay re-posts pending events
-- oldest first (by id) with their event_id; next_attempt_at is the lease of whoever is posting the row now.
CREATE TABLE monitoring_events (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    event_type text NOT NULL,
    body jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent')),
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz
);

CREATE INDEX monitoring_events_pending_idx ON monitoring_events (id) WHERE status = 'pending';
