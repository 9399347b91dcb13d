"""Defect switches: realistic bugs planted in the reference platform by ``OPSGATE_DEFECTS``.

Each defect names the check or drill that must catch it. With no defect set the platform is
healthy. An unknown name is refused at start-up, so a typo cannot pass as a healthy run.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Defect:
    """One plantable bug: its name, what it breaks, and which check must catch it."""

    name: str
    breaks: str
    caught_by: str


CATALOGUE: dict[str, Defect] = {
    d.name: d
    for d in (
        Defect(
            "readiness-ignores-redis",
            "api /readyz does not check Redis: 200 ready=true even when Redis is down",
            "health[api:/readyz] (its body lacks checks.redis) and the Redis-outage drill",
        ),
        Defect(
            "readiness-always-ok",
            "api /readyz answers 200 ready=true without checking anything",
            "health[api:/readyz] (its body lacks the dependency checks) and the outage drills",
        ),
        Defect(
            "worker-acks-without-send",
            "the worker marks messages delivered without calling the provider",
            "flow[send-sms-delivered] ground truth: provider sandbox records no delivery; gate[delivered-within-5m]"
            " (0 of its sends in the provider's record)",
        ),
        Defect(
            "retries-drop-messages",
            "after the first provider failure a message is dropped: acked, never retried or dead-lettered",
            "provider-errors drill reconciliation",
        ),
        Defect(
            "kill-switch-ignored",
            "POST /tenants/{id}/pause is recorded but sends are not blocked",
            "kill-switch drill and test_platform kill switch",
        ),
        Defect(
            "dnc-skips-unnormalised",
            "the do-not-contact check compares the raw number, so '0412 345 678' slips past '+61412345678'",
            "DNC flow with differently formatted numbers",
        ),
        Defect(
            "budget-not-enforced",
            "the daily budget is not checked",
            "flow[budget-enforced]: the send over the day's budget must get 402",
        ),
        Defect(
            "quiet-hours-server-time",
            "quiet hours are evaluated in the server's UTC time instead of the contact's timezone",
            "flow[quiet-hours-contact-timezone]: a contact at 23:00 refused, one at 15:00 accepted, whatever UTC says",
        ),
        Defect(
            "quiet-hours-no-wrap",
            "a quiet-hours window that crosses midnight (21 -> 9) is read as empty: night sends go out",
            "flow[quiet-hours-enforced]: a send at 23:00 in the tenant's time zone must get 422",
        ),
        Defect(
            "dnc-check-skipped",
            "sends never consult the do-not-contact list: listed contacts keep receiving messages",
            "flow[dnc-contact-receives-nothing]: the send to a listed contact must get 422, the provider record none",
        ),
        Defect(
            "resume-ignored",
            "POST /tenants/{id}/resume answers 200 and is audited but the tenant stays paused",
            "flow[resume-restores-sends]: after the resume the tenant reads paused=false and its send is delivered",
        ),
        Defect(
            "suspension-ignored",
            "PATCH /tenants/{id}/suspend is recorded but a suspended tenant's sends are still accepted",
            "flow[suspend-blocks-sends]: a send after the suspension must get 403",
        ),
        Defect(
            "activation-not-saved",
            "PATCH /tenants/{id}/activate is audited and answered 200 but the tenant stays suspended",
            "flow[activate-restores-sends]: after the activation the tenant reads active and its send is delivered",
        ),
        Defect(
            "webhook-signature-unchecked",
            "billing webhooks and provider replies are accepted without checking the signature",
            "flow[billing-webhook-forged-refused] and flow[forged-provider-reply-refused]: a bad signature gets 401",
        ),
        Defect(
            "duplicate-webhook-processed",
            "a billing webhook with an already seen event id is stored and processed again",
            "webhook idempotency flow / worker-to-zero reconciliation",
        ),
        Defect(
            "rotation-keeps-old-secret",
            "after PUT /admin/secrets/billing-webhook switches to the next secret, webhooks signed with the old"
            " (configured) secret are still accepted",
            "webhook-secret-rotation drill (the old signature must get 401 after the switch)",
        ),
        Defect(
            "maintenance-allows-writes",
            "maintenance mode is reported but writes are accepted",
            "maintenance-mode drill",
        ),
        Defect(
            "slow-messages-route",
            "POST /v1/tenants/{id}/messages sleeps 3x its 500 ms SLO",
            "SLO send-message and p95 gates",
        ),
        Defect(
            "queue-gauge-missing",
            "bull_queue_jobs_* gauges are missing from /metrics",
            "metric gates on queue depth",
        ),
        Defect(
            "monitoring-webhook-silent",
            "dead-lettered messages do not post notification.failure to the monitoring webhook",
            "provider-errors drill (monitoring event expected)",
        ),
        Defect(
            "backup-omits-table",
            "scheduled backups leave out the audit_events table",
            "backup/restore drill row counts",
        ),
        Defect(
            "outbox-sweeper-off",
            "the outbox sweeper never runs: overdue work is not re-enqueued nor counted as retrying",
            "worker-to-zero drill (retrying metric and BillingWebhookRetrying)",
        ),
        Defect(
            "webhook-processing-slow",
            "the worker holds every billing webhook event 3x the 30 s lag limit (scaled, at least 3 s) before"
            " processing it",
            "gate[webhook-processing-lag] (p99 receipt-to-processed above its scaled 30 s bound)",
        ),
        Defect(
            "webhook-status-not-saved",
            "the worker applies a billing event but its status update matches no row: the event stays pending"
            " and the outbox sweeper re-applies it after every deadline",
            "gate[billing-events-not-stuck] (pending longer than the sweeper can explain)",
        ),
        Defect(
            "plan-change-keeps-old-modules",
            "a plan change adds the new plan's modules but leaves the old plan's plan-sourced modules behind",
            "plan_change_entitlements drill (Pro -> Core: the plan-sourced modules do not match Core's)",
        ),
        Defect(
            "cancellation-drops-overrides",
            "a subscription cancellation deletes the tenant's override modules and flags along with the plan's",
            "cancellation_entitlements drill (overrides intact after subscription.canceled)",
        ),
        Defect(
            "held-sends-set-aside",
            "a send held by the kill switch is acked and parked instead of delayed: after resume it stays"
            " queued for good, out of the outbox sweeper's reach",
            "gate[sends-not-stuck] (queued longer than the sweeper can explain, tenant sending)",
        ),
        Defect(
            "stop-not-added-to-dnc",
            "an inbound STOP is acknowledged (opted_out, audited, counted) but the number is not added to"
            " do-not-contact, so the next send goes out",
            "flow[stop-blocks-next-send] (the next send is accepted; the provider records a delivery)",
        ),
        Defect(
            "worker-health-route-missing",
            "the worker serves /healthz and /readyz but no longer /health: the runbook's `curl .../health` answers"
            " 404 although the worker runs, so on-call reads a healthy worker as down",
            "diagnosis[messages-not-sending/worker-running] (404; health[worker:/healthz] still passes)",
        ),
        Defect(
            "sigterm-abandons-jobs",
            "the worker exits at once on SIGTERM, abandoning the sends it holds",
            "graceful-stop and rolling-restart drills (the provider sees sends abandoned)",
        ),
        # Alerting (issue 9, runbook coverage). The last four are deployment bugs the local environment plants
        # in the alerting stack it configures (rules it loads into Prometheus, Alertmanager's routes).
        Defect(
            "readiness-flaps",
            "every 4th api /readyz probe reports PostgreSQL failed (503) although it is up: readiness flaps",
            "gate[readiness-availability] (fails more than once in 3 minutes; one probe alone rarely sees it)",
        ),
        Defect(
            "metrics-counts-db-failure",
            "each /metrics scrape of the api counts a database connection failure that never happened, so the"
            " critical DbConnectionFailures/DatabaseConnectionFailures alerts fire on a healthy database",
            "gate[no-active-incidents] and gate[no-paging-alert-30m] (a critical alert firing)",
        ),
        Defect(
            "metrics-endpoint-flaky",
            "every 3rd api /metrics request answers 500: Prometheus records the api down a third of the time",
            "gate[service-uptime] (service_uptime_percentage below 99.9%)",
        ),
        Defect(
            "worker-requests-unlabelled",
            "the worker's http_requests_total carries no status label: its 5xx cannot be aggregated per service",
            "metric_labels[http_requests_total] (the worker's samples without a status label)",
        ),
        Defect(
            "budget-spend-misdated",
            "the api's tenant_budget_spent_cents reads yesterday's spend, not today's: a tenant at 90% of its daily"
            " budget shows none spent, so Budget approaching 90% never fires",
            "alert_live[BudgetApproaching90] (not pending within its deadline)",
        ),
        Defect(
            "deployed-rules-missing-billing",
            "the environment deploys the rule file without its billing group: BillingWebhookRetrying/Failed"
            " never load into Prometheus, so retries and failures raise no notification",
            "rules_applied[billing] (not loaded in Prometheus)",
        ),
        Defect(
            "alert-annotations-dropped",
            "the environment deploys the rules without annotations: notifications reach on-call with no summary"
            " and no runbook_url",
            "alert_live[sev2-pages-with-diagnostics] (the notification lacks summary, runbook_url)",
        ),
        Defect(
            "alertmanager-info-unrouted",
            "the environment's Alertmanager has no route for severity info: info alerts fall through to chat",
            "alert_severities[levels] (severity=info routes to 'chat', documented 'info')",
        ),
    )
}


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
