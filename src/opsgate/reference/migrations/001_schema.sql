-- Reference platform schema: tenants, messages, do-not-contact, budgets, billing webhooks, audit.
CREATE TABLE tenants (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    paused boolean NOT NULL DEFAULT false,
    plan text NOT NULL DEFAULT 'core',
    region text NOT NULL DEFAULT 'AU',
    timezone text NOT NULL DEFAULT 'UTC',
    quiet_hours_start smallint CHECK (quiet_hours_start BETWEEN 0 AND 23),
    quiet_hours_end smallint CHECK (quiet_hours_end BETWEEN 0 AND 23),
    daily_budget_cents integer NOT NULL DEFAULT 100000 CHECK (daily_budget_cents >= 0),
    sms_cost_cents integer NOT NULL DEFAULT 5,
    email_cost_cents integer NOT NULL DEFAULT 1,
    api_token_sha256 text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sending_numbers (
    phone_e164 text PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE
);

CREATE TABLE do_not_contact (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    phone_e164 text NOT NULL,
    source text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, phone_e164)
);

CREATE TABLE budgets (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day date NOT NULL,
    daily_spent_cents integer NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
);

CREATE TABLE messages (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel text NOT NULL CHECK (channel IN ('sms', 'email')),
    recipient text NOT NULL,
    body text NOT NULL,
    cost_cents integer NOT NULL,
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'sending', 'delivered', 'failed', 'dead')),
    attempts integer NOT NULL DEFAULT 0,
    failure_reason text,
    provider_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
CREATE INDEX messages_pending ON messages (next_attempt_at) WHERE status IN ('queued', 'sending', 'failed');

CREATE TABLE billing_webhook_events (
    id uuid PRIMARY KEY,
    event_id text NOT NULL UNIQUE,
    event_type text NOT NULL,
    payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'processed', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    received_at timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz
);
CREATE INDEX billing_webhook_events_pending
    ON billing_webhook_events (next_attempt_at) WHERE status IN ('pending', 'processing');

CREATE TABLE audit_events (
    id bigserial PRIMARY KEY,
    tenant_id uuid,
    module text NOT NULL,
    action text NOT NULL,
    entity_type text NOT NULL,
    entity_id text NOT NULL,
    actor text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_entity ON audit_events (module, entity_id);

CREATE TABLE settings (
    key text PRIMARY KEY,
    value jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    token_sha256 text PRIMARY KEY,
    username text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
