-- Seed 002 "Billing Plan Entitlement Drills": the Core/Pro/Enterprise plans and each tenant's entitlements.
-- A plan's entitlements are one JSON document (the runbook checks `SELECT name, entitlements FROM plans`);
-- plan_modules and plan_feature_flags are views of it. A tenant's module or flag comes from its plan
-- (source 'plan', replaced on a plan change, removed on cancellation) or from an admin (source 'override',
-- kept through both). Depends only on 001 (tenants).
CREATE TABLE plans (
    id uuid PRIMARY KEY,
    code text NOT NULL UNIQUE,
    name text NOT NULL,
    entitlements jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The Pro plan's id is the one seed 002's manual drill posts; created_at orders Core < Pro < Enterprise.
INSERT INTO plans (id, code, name, entitlements, created_at) VALUES
    ('9c0e3f56-1d2a-4b7e-8f00-00000000c0e1', 'core', 'Core',
     '{"modules": ["messaging", "do-not-contact"],
       "feature_flags": ["messaging.sms", "messaging.email"]}', now() - interval '3 seconds'),
    ('1ef168c5-66e9-4d11-8f51-32301dbce0d4', 'pro', 'Pro',
     '{"modules": ["messaging", "do-not-contact", "quiet-hours", "analytics"],
       "feature_flags": ["messaging.sms", "messaging.email", "analytics.export", "billing.invoices"]}',
     now() - interval '2 seconds'),
    ('9c0e3f56-1d2a-4b7e-8f00-0000000e0e1e', 'enterprise', 'Enterprise',
     '{"modules": ["messaging", "do-not-contact", "quiet-hours", "analytics", "sso", "audit-export"],
       "feature_flags": ["messaging.sms", "messaging.email", "analytics.export", "billing.invoices",
                         "support.priority"]}', now() - interval '1 second');

CREATE VIEW plan_modules AS
    SELECT p.id AS plan_id, p.code AS plan_code, m.module
    FROM plans p, jsonb_array_elements_text(p.entitlements -> 'modules') AS m(module);

CREATE VIEW plan_feature_flags AS
    SELECT p.id AS plan_id, p.code AS plan_code, f.flag
    FROM plans p, jsonb_array_elements_text(p.entitlements -> 'feature_flags') AS f(flag);

CREATE TABLE tenant_modules (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    module text NOT NULL,
    source text NOT NULL CHECK (source IN ('plan', 'override')),
    enabled boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, module, source)
);

CREATE TABLE tenant_feature_flags (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    flag text NOT NULL,
    source text NOT NULL CHECK (source IN ('plan', 'override')),
    enabled boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, flag, source)
);
