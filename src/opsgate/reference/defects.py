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
            "flow[send-sms-delivered] ground truth: provider sandbox records no delivery",
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
            "budget flow",
        ),
        Defect(
            "quiet-hours-server-time",
            "quiet hours are evaluated in the server's UTC time instead of the contact's timezone",
            "quiet-hours flow",
        ),
        Defect(
            "webhook-signature-unchecked",
            "billing webhooks are accepted without checking the signature",
            "signed-webhook flow (bad signature must get 401)",
        ),
        Defect(
            "duplicate-webhook-processed",
            "a billing webhook with an already seen event id is stored and processed again",
            "webhook idempotency flow / worker-to-zero reconciliation",
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
            "sigterm-abandons-jobs",
            "the worker exits at once on SIGTERM, abandoning the sends it holds",
            "graceful-stop and rolling-restart drills (the provider sees sends abandoned)",
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
