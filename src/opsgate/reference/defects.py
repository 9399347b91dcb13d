"""Defect switches: realistic bugs planted in the reference platform by ``OPSGATE_DEFECTS``.

Each defect names the check or drill that must catch it. With no defect set the platform is
healthy. An unknown name is refused at start-up, so a typo cannot pass as a healthy run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Defect:
    """One plantable bug: its name, what it breaks, and which check must catch it.

    ``check`` is the id, as it appears in summary.json (``flow[budget-enforced]``, ``drill[kill-switch]``, a Python
    drill's ``backup_restore``), of the one check pre-declared to catch it: bench/detection_matrix.py counts the
    defect as detected only when that check fails.
    """

    name: str
    breaks: str
    caught_by: str
    check: str = ""


CATALOGUE: dict[str, Defect] = {
    d.name: d
    for d in (
        Defect(
            "readiness-ignores-redis",
            "api /readyz does not check Redis: 200 ready=true even when Redis is down",
            "health[api:/readyz] (its body lacks checks.redis) and the Redis-outage drill",
            check="health[api:/readyz]",
        ),
        Defect(
            "readiness-always-ok",
            "api /readyz answers 200 ready=true without checking anything",
            "health[api:/readyz] (its body lacks the dependency checks) and the outage drills",
            check="health[api:/readyz]",
        ),
        Defect(
            "worker-acks-without-send",
            "the worker marks messages delivered without calling the provider",
            "flow[send-sms-delivered] ground truth: provider sandbox records no delivery; gate[delivered-within-5m]"
            " (0 of its sends in the provider's record)",
            check="flow[send-sms-delivered]",
        ),
        Defect(
            "retries-drop-messages",
            "after the first provider failure a message is dropped: acked, never retried or dead-lettered",
            "provider-errors drill reconciliation",
            check="drill[provider-errors]",
        ),
        Defect(
            "kill-switch-ignored",
            "POST /tenants/{id}/pause is recorded but sends are not blocked",
            "kill-switch drill, test_platform kill switch and the maintenance_window drill (new sends refused)",
            check="drill[kill-switch]",
        ),
        Defect(
            "global-kill-switch-skips-queued",
            "the worker ignores the global kill switch (PUT /admin/kill-switch): the api refuses new sends, but"
            " jobs queued before it was pulled are sent anyway",
            "breach_kill_switch_all_tenants drill (queued sends of both tenants held, none sent: provider record)",
            check="breach_kill_switch_all_tenants",
        ),
        Defect(
            "dnc-skips-unnormalised",
            "the do-not-contact check compares the raw number, so '0412 345 678' slips past '+61412345678'",
            "DNC flow with differently formatted numbers",
            check="flow[dnc-blocks-any-format]",
        ),
        Defect(
            "budget-not-enforced",
            "the daily budget is not checked",
            "flow[budget-enforced]: the send over the day's budget must get 402",
            check="flow[budget-enforced]",
        ),
        Defect(
            "quiet-hours-server-time",
            "quiet hours are evaluated in the server's UTC time instead of the contact's timezone",
            "flow[quiet-hours-contact-timezone]: a contact at 23:00 refused, one at 15:00 accepted, whatever UTC says",
            check="flow[quiet-hours-contact-timezone]",
        ),
        Defect(
            "quiet-hours-no-wrap",
            "a quiet-hours window that crosses midnight (21 -> 9) is read as empty: night sends go out",
            "flow[quiet-hours-enforced]: a send at 23:00 in the tenant's time zone must get 422",
            check="flow[quiet-hours-enforced]",
        ),
        Defect(
            "dnc-check-skipped",
            "sends never consult the do-not-contact list: listed contacts keep receiving messages",
            "flow[dnc-contact-receives-nothing]: the send to a listed contact must get 422, the provider record none",
            check="flow[dnc-contact-receives-nothing]",
        ),
        Defect(
            "resume-ignored",
            "POST /tenants/{id}/resume answers 200 and is audited but the tenant stays paused",
            "flow[resume-restores-sends]: after the resume the tenant reads paused=false and its send is delivered",
            check="flow[resume-restores-sends]",
        ),
        Defect(
            "suspension-ignored",
            "PATCH /tenants/{id}/suspend is recorded but a suspended tenant's sends are still accepted",
            "flow[suspend-blocks-sends]: a send after the suspension must get 403",
            check="flow[suspend-blocks-sends]",
        ),
        Defect(
            "activation-not-saved",
            "PATCH /tenants/{id}/activate is audited and answered 200 but the tenant stays suspended",
            "flow[activate-restores-sends]: after the activation the tenant reads active and its send is delivered",
            check="flow[activate-restores-sends]",
        ),
        Defect(
            "webhook-signature-unchecked",
            "billing webhooks and provider replies are accepted without checking the signature",
            "flow[billing-webhook-forged-refused] and flow[forged-provider-reply-refused]: a bad signature gets 401",
            check="flow[billing-webhook-forged-refused]",
        ),
        Defect(
            "duplicate-webhook-processed",
            "a billing webhook with an already seen event id is stored and processed again",
            "webhook idempotency flow / worker-to-zero reconciliation",
            check="worker_to_zero_redelivered_webhooks",
        ),
        Defect(
            "rotation-keeps-old-secret",
            "after PUT /admin/secrets/billing-webhook switches to the next secret, webhooks signed with the old"
            " (configured) secret are still accepted",
            "webhook-secret-rotation drill (the old signature must get 401 after the switch)",
            check="drill[webhook-secret-rotation]",
        ),
        Defect(
            "maintenance-allows-writes",
            "maintenance mode is reported but writes are accepted",
            "maintenance-mode drill, the maintenance_window drill (writes rejected with 503 MAINTENANCE) and the"
            " release_deploy_window, scheduled_maintenance_execute and database_rollback drills (a write refused)",
            check="drill[maintenance-mode]",
        ),
        Defect(
            "maintenance-flag-sticks",
            "the api caches maintenance mode once it has seen it on: after maintenance off writes stay 503 MAINTENANCE",
            "maintenance_window drill (maintenance lifted, kill switch still on) and the maintenance-mode drill",
            check="maintenance_window",
        ),
        Defect(
            "slow-messages-route",
            "POST /v1/tenants/{id}/messages sleeps 3x its 500 ms SLO",
            "SLO send-message and p95 gates",
            check="slo[send-message]",
        ),
        Defect(
            "queue-gauge-missing",
            "bull_queue_jobs_* gauges are missing from /metrics",
            "metric gates on queue depth; flow[post-deploy-verification] (/metrics lacks bull_queue_jobs_waiting)",
            check="alert_lint[QueueBacklogHigh]",
        ),
        Defect(
            "monitoring-webhook-silent",
            "dead-lettered messages do not post notification.failure to the monitoring webhook",
            "provider-errors drill (monitoring event expected)",
            check="provider_errors",
        ),
        Defect(
            "resend-redelivers",
            "PATCH /api/notifications/{id}/resend also requeues a message already delivered: the provider sends it"
            " again",
            "resend_dead_letters drill (a second resend must be refused and deliver nothing: provider record)",
            check="resend_dead_letters",
        ),
        Defect(
            "monitoring-events-dropped",
            "a monitoring event is not stored in the outbox: posted once, and lost when the webhook fails (410, down)",
            "monitoring_sink_failure drill (failure events held in the outbox; each dead letter reported once)",
            check="monitoring_sink_failure",
        ),
        Defect(
            "monitoring-failure-blocks-sends",
            "while the monitoring webhook fails (events pending), the worker fails every send instead of sending it",
            "monitoring_sink_failure drill (sends delivered while the sink is failing: provider record)",
            check="monitoring_sink_failure",
        ),
        Defect(
            "monitoring-relay-off",
            "the monitoring relay never runs: events whose first post failed stay pending after the webhook recovers",
            "gate[monitoring-backlog] and the monitoring_sink_failure drill (backlog exported after the rollback)",
            check="monitoring_sink_failure",
        ),
        Defect(
            "backup-omits-table",
            "scheduled backups leave out the audit_events table",
            "backup/restore drill row counts",
            check="backup_restore",
        ),
        Defect(
            "backup-retention-unbounded",
            "old backups are never pruned: the backup folder grows past the 7 kept (seed 001: 7-day retention)",
            "backup_schedule drill (more than 7 backups kept after 8 forced)",
            check="backup_schedule",
        ),
        Defect(
            "backup-truncated",
            "every backup file stops half-way (a copy cut short): /backups/latest names a dump that cannot restore",
            "latest_backup_restorable and daily_routine drills (pg_restore of the latest backup fails)",
            check="latest_backup_restorable",
        ),
        Defect(
            "backup-plain-format",
            "backups are plain SQL scripts (pg_dump -Fp), not the custom-format dump (-Fc) the runbook restores",
            "nightly_dump_custom_format drill (no PGDMP header; pg_restore --list refuses it)",
            check="nightly_dump_custom_format",
        ),
        Defect(
            "backup-excludes-outbox",
            "backups leave out the rows of billing_webhook_events (as if transient): a restore has no outbox to replay",
            "restore_drill_replays_outbox drill (billing events restored 0, live had some)",
            check="restore_drill_replays_outbox",
        ),
        Defect(
            "force-backup-noop",
            "POST /admin/backups answers 201 with the existing newest backup and dumps nothing",
            "flow[force-backup-newer] (no backup newer than the one before the force)",
            check="flow[force-backup-newer]",
        ),
        Defect(
            "redis-snapshots-off",
            'the local environment starts redis-server with RDB snapshots disabled (save "")',
            "redis_rdb_snapshots drill (CONFIG GET save is empty)",
            check="redis_rdb_snapshots",
        ),
        Defect(
            "migration-without-backup",
            "the migration runner applies pending migrations without taking a backup first",
            "gate[migrations-backed-up-first] (migrations with no backup recorded before them)",
            check="gate[migrations-backed-up-first]",
        ),
        Defect(
            "migration-skipped",
            "the migration runner skips the newest shipped migration file: it is never applied nor recorded",
            "gate[migrations-applied] (a shipped migration not in schema_migrations)",
            check="gate[migrations-applied]",
        ),
        Defect(
            "outbox-sweeper-off",
            "the outbox sweeper never runs: overdue work is not re-enqueued nor counted as retrying",
            "worker-to-zero drill (retrying metric and BillingWebhookRetrying)",
            check="drill[worker-to-zero]",
        ),
        Defect(
            "webhook-processing-slow",
            "the worker holds every billing webhook event 3x the 30 s lag limit (scaled, at least 3 s) before"
            " processing it",
            "gate[webhook-processing-lag] (p99 receipt-to-processed above its scaled 30 s bound)",
            check="gate[webhook-processing-lag]",
        ),
        Defect(
            "webhook-status-not-saved",
            "the worker applies a billing event but its status update matches no row: the event stays pending"
            " and the outbox sweeper re-applies it after every deadline",
            "gate[billing-events-not-stuck] (pending longer than the sweeper can explain)",
            check="gate[billing-events-not-stuck]",
        ),
        Defect(
            "plan-change-keeps-old-modules",
            "a plan change adds the new plan's modules but leaves the old plan's plan-sourced modules behind",
            "plan_change_entitlements drill (Pro -> Core: the plan-sourced modules do not match Core's)",
            check="plan_change_entitlements",
        ),
        Defect(
            "cancellation-drops-overrides",
            "a subscription cancellation deletes the tenant's override modules and flags along with the plan's",
            "cancellation_entitlements drill (overrides intact after subscription.canceled)",
            check="cancellation_entitlements",
        ),
        Defect(
            "billing-audit-misfiled",
            "a processed billing event's audit entry is filed under module 'webhooks' with the bare event type:"
            " the runbook's `WHERE module='billing'` finds nothing",
            "gate[billing-audit-trail]",
            check="gate[billing-audit-trail]",
        ),
        Defect(
            "replay-reapplies-processed",
            "POST /ops/outbox/{id}/retry also replays a processed billing event: the worker applies it again"
            " (a second audit row, the plan change re-run)",
            "flow[outbox-retry-refuses-processed] (409 expected) and the replay_failed_billing_event drill"
            " (one audit row per event)",
            check="flow[outbox-retry-refuses-processed]",
        ),
        Defect(
            "held-sends-set-aside",
            "a send held by the kill switch is acked and parked instead of delayed: after resume it stays"
            " queued for good, out of the outbox sweeper's reach",
            "the kill-switch admin-page drill (the queued jobs are not held in the delayed set, and stay undelivered"
            " after Resume); on a system with such sends older than 10 min, gate[sends-not-stuck] (queued, tenant"
            " sending: tests/test_stuck_work_gates.py). The matrix's gate runs make none, so the drill is declared",
            check="kill_switch_admin_page",
        ),
        Defect(
            "stop-not-added-to-dnc",
            "an inbound STOP is acknowledged (opted_out, audited, counted) but the number is not added to"
            " do-not-contact, so the next send goes out",
            "flow[stop-blocks-next-send] (the next send is accepted; the provider records a delivery)",
            check="flow[stop-blocks-next-send]",
        ),
        Defect(
            "worker-health-route-missing",
            "the worker serves /healthz and /readyz but no longer /health: the runbook's `curl .../health` answers"
            " 404 although the worker runs, so on-call reads a healthy worker as down",
            "diagnosis[messages-not-sending/worker-running] (404; health[worker:/healthz] still passes)",
            check="diagnosis[messages-not-sending/worker-running]",
        ),
        Defect(
            "health-db-always-connected",
            'api /api/health/db answers 200 {"postgres": "connected"} without asking PostgreSQL',
            "postgres-outage drill (expect_during: /api/health/db 503 disconnected); health[api:/api/health/db]"
            " itself fails in a real outage",
            check="drill[postgres-outage]",
        ),
        Defect(
            "health-redis-always-connected",
            'api /api/health/redis answers 200 {"redis": "connected"} without a PING',
            "redis-outage drill (expect_during: /api/health/redis 503 disconnected); health[api:/api/health/redis]"
            " itself fails in a real outage",
            check="drill[redis-outage]",
        ),
        Defect(
            "message-list-unauthenticated",
            "GET /v1/tenants/{id}/messages and /tenants/{id}/messages answer without any token: a tenant's"
            " messages readable by anyone",
            "flow[synthetic-checks] (the list read without the service-account token must get 401)",
            check="flow[synthetic-checks]",
        ),
        Defect(
            "email-sends-fail",
            "the worker has no provider route for email: every email send fails, is retried and dead-lettered",
            "flow[smoke] (the email it sends is never delivered by the provider's record)",
            check="flow[smoke]",
        ),
        Defect(
            "worker-throttled",
            "the worker takes one send at a time and holds each 0.5 s: at most 2 sends/s whatever arrives",
            "gate[worker-processing-rate] (processed/accepted under 20 sends/s) and the health-baseline drill"
            " (the send queue not back to its baseline in time)",
            check="gate[worker-processing-rate]",
        ),
        Defect(
            "admin-login-form-broken",
            "the admin login form posts to /admin/signin, a route that no longer exists (404): nobody can log in",
            "browser[admin-smoke-e2e] (and browser[admin-kill-switch-state]): the login never reaches the admin page",
            check="browser[admin-smoke-e2e]",
        ),
        Defect(
            "sigterm-abandons-jobs",
            "the worker exits at once on SIGTERM, abandoning the sends it holds",
            "graceful-stop, rolling-restart and zero_downtime_worker_swap drills (the provider sees sends abandoned)",
            check="worker_graceful_stop_finishes_in_flight",
        ),
        # Alerting (issue 9, runbook coverage). The last four are deployment bugs the local environment plants
        # in the alerting stack it configures (rules it loads into Prometheus, Alertmanager's routes).
        Defect(
            "readiness-flaps",
            "every 4th api /readyz probe reports PostgreSQL failed (503) although it is up: readiness flaps",
            "gate[readiness-availability] (fails more than once in 3 minutes; one probe alone rarely sees it)",
            check="gate[readiness-availability]",
        ),
        Defect(
            "metrics-counts-db-failure",
            "each /metrics scrape of the api counts a database connection failure that never happened, so the"
            " critical DbConnectionFailures/DatabaseConnectionFailures alerts fire on a healthy database",
            "gate[no-active-incidents] and gate[no-paging-alert-30m] (a critical alert firing)",
            check="gate[no-active-incidents]",
        ),
        Defect(
            "metrics-endpoint-flaky",
            "every 3rd api /metrics request answers 500: Prometheus records the api down a third of the time",
            "gate[service-uptime] (service_uptime_percentage below 99.9%)",
            check="gate[service-uptime]",
        ),
        Defect(
            "worker-requests-unlabelled",
            "the worker's http_requests_total carries no status label: its 5xx cannot be aggregated per service",
            "metric_labels[http_requests_total] (the worker's samples without a status label)",
            check="metric_labels[http_requests_total]",
        ),
        Defect(
            "budget-spend-misdated",
            "the api's tenant_budget_spent_cents reads yesterday's spend, not today's: a tenant at 90% of its daily"
            " budget shows none spent, so Budget approaching 90% never fires",
            "alert_live[BudgetApproaching90] (not pending within its deadline)",
            check="alert_live[BudgetApproaching90]",
        ),
        Defect(
            "deployed-rules-missing-billing",
            "the environment deploys the rule file without its billing group: BillingWebhookRetrying/Failed"
            " never load into Prometheus, so retries and failures raise no notification",
            "rules_applied[billing] (not loaded in Prometheus)",
            check="rules_applied[billing]",
        ),
        Defect(
            "alert-annotations-dropped",
            "the environment deploys the rules without annotations: notifications reach on-call with no summary"
            " and no runbook_url",
            "alert_live[sev2-pages-with-diagnostics] (the notification lacks summary, runbook_url)",
            check="alert_live[sev2-pages-with-diagnostics]",
        ),
        Defect(
            "alertmanager-info-unrouted",
            "the environment's Alertmanager has no route for severity info: info alerts fall through to chat",
            "alert_severities[levels] (severity=info routes to 'chat', documented 'info')",
            check="alert_severities[levels]",
        ),
        Defect(
            "alert-threshold-drifted",
            "Prometheus runs a drifted copy of platform.yml: ApiLatencyP95High fires above 1.5 s, not the documented"
            " 750 ms (the file in the repository is right; the deployed rule is not)",
            "alert_rule[ApiLatencyP95High] (the rule loaded in Prometheus runs threshold 1.5, the table says 0.75)",
            check="alert_rule[ApiLatencyP95High]",
        ),
        Defect(
            "alert-for-drifted",
            "Prometheus runs a drifted copy of platform.yml: ApiLatencyP99Critical waits for: 10m, not the"
            " documented 2m",
            "alert_rule[ApiLatencyP99Critical] (the rule loaded in Prometheus runs for 10m x time_scale)",
            check="alert_rule[ApiLatencyP99Critical]",
        ),
    )
}


# Alert-rule defects: (alert, rule field, drifted value) applied to the rules the local environment deploys.
RULE_DRIFTS: dict[str, tuple[str, str, str]] = {
    "alert-threshold-drifted": ("ApiLatencyP95High", "expr", " > 1.5"),
    "alert-for-drifted": ("ApiLatencyP99Critical", "for", "10m"),
}


def drift_rules(document: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """A copy of a rules document with the drift of every alert-rule defect in ``names`` applied.

    A threshold drift replaces the comparison at the end of the rule's ``expr`` (``expr`` drifts give the new
    `` > value`` tail); a ``for`` drift replaces the duration. An alert missing from the document is left alone.
    """
    drifted = copy.deepcopy(document)
    for name in sorted(names & RULE_DRIFTS.keys()):
        alert, key, value = RULE_DRIFTS[name]
        for group in drifted.get("groups", []):
            for rule in group.get("rules", []):
                if rule.get("alert") != alert:
                    continue
                if key == "expr":
                    expr = str(rule["expr"])
                    rule["expr"] = expr[: expr.rindex(" > ")] + value
                else:
                    rule[key] = value
    return drifted


@dataclass(frozen=True)
class Defects:
    """The set of active defects."""

    names: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, raw: str) -> Defects:
        """Parse ``name,name``; raises ValueError naming an unknown defect and the known ones."""
        names = frozenset(n.strip() for n in raw.split(",") if n.strip())
        unknown = sorted(names - CATALOGUE.keys())
        if unknown:
            known = ", ".join(sorted(CATALOGUE))
            raise ValueError(f"OPSGATE_DEFECTS: unknown defect {unknown[0]!r}; known: {known}")
        return cls(names)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and name not in CATALOGUE:
            raise KeyError(f"no such defect: {name}")
        return name in self.names

    def __bool__(self) -> bool:
        return bool(self.names)
