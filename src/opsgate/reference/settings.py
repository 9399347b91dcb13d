"""Settings of the reference platform's processes, read from environment variables.

Every timer of the platform is scaled by ``OPSGATE_TIME_SCALE`` (the target's ``time_scale``) so a
compressed drill keeps the same logic; each has a floor so the platform stays workable at 0.02.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from opsgate.reference.defects import Defects


class SettingsError(Exception):
    """A missing or malformed environment variable; the message is one line."""


class PlatformSettings(BaseModel):
    """What every platform process needs to know; built by :func:`from_environ`."""

    model_config = ConfigDict(frozen=True)

    database_url: str
    redis_url: str
    provider_url: str
    provider_api_key: str
    billing_webhook_secret: str
    billing_webhook_secret_next: str | None = None
    """The secret ``PUT /admin/secrets/billing-webhook`` rotates to (none: rotation refused)."""
    provider_webhook_secret: str
    service_user: str = "ops-bot"
    service_password: str
    monitoring_webhook_url: str | None = None
    tenant_tokens: dict[str, str] = Field(default_factory=dict)
    time_scale: float = Field(default=1.0, gt=0, le=1)
    defects: Defects = Field(default_factory=Defects)
    backup_dir: Path | None = None
    backup_interval_s: float | None = None
    worker_id: str = "worker-1"
    max_attempts: int = Field(default=5, ge=1)

    def scaled(self, seconds: float, floor_s: float) -> float:
        """``seconds`` compressed by the time scale, never below ``floor_s``."""
        return max(floor_s, seconds * self.time_scale)

    @property
    def heartbeat_interval_s(self) -> float:
        """How often a worker writes its heartbeat (real: 5 s)."""
        return self.scaled(5.0, 0.2)

    @property
    def heartbeat_stale_s(self) -> float:
        """Heartbeat age beyond which a worker counts as dead (real: 30 s)."""
        return self.scaled(30.0, 1.0)

    @property
    def outbox_deadline_s(self) -> float:
        """Pending work older than this is re-enqueued by the outbox sweeper (real: 5 min)."""
        return self.scaled(300.0, 2.0)

    @property
    def sweep_interval_s(self) -> float:
        """How often the outbox sweeper looks for overdue work."""
        return self.outbox_deadline_s / 4

    @property
    def backoff_base_s(self) -> float:
        """First retry delay after a provider failure; doubles each attempt (real: 2 s)."""
        return self.scaled(2.0, 0.05)

    @property
    def tenant_cache_ttl_s(self) -> float:
        """How long a worker trusts its cached tenant state: the kill switch's propagation (real: 30 s)."""
        return self.scaled(30.0, 0.2)

    @property
    def provider_timeout_s(self) -> float:
        """Timeout of one provider call (real: 10 s)."""
        return self.scaled(10.0, 1.0)

    @property
    def lock_duration_ms(self) -> int:
        """BullMQ job lock; a killed worker's jobs are recovered as stalled after it (real: 30 s)."""
        return int(self.scaled(30.0, 2.0) * 1000)

    @property
    def monitoring_relay_interval_s(self) -> float:
        """How often the monitoring relay re-posts pending events while the webhook is healthy (real: 10 s)."""
        return self.scaled(10.0, 0.5)

    @property
    def monitoring_max_backoff_s(self) -> float:
        """Longest pause between relay passes while the webhook keeps failing (real: 60 s)."""
        return self.scaled(60.0, 2.0)

    @property
    def effective_backup_interval_s(self) -> float:
        """Scheduled backup interval (real: 4 h, seed 002 'snapshots every 4h'); explicit value wins."""
        if self.backup_interval_s is not None:
            return self.backup_interval_s
        return self.scaled(4 * 3600.0, 5.0)


_REQUIRED = {
    "DATABASE_URL": "database_url",
    "REDIS_URL": "redis_url",
    "PROVIDER_URL": "provider_url",
    "PROVIDER_API_KEY": "provider_api_key",
    "BILLING_WEBHOOK_SECRET": "billing_webhook_secret",
    "PROVIDER_WEBHOOK_SECRET": "provider_webhook_secret",
    "SERVICE_PASSWORD": "service_password",
}
_OPTIONAL = {
    "SERVICE_USER": "service_user",
    "MONITORING_WEBHOOK_URL": "monitoring_webhook_url",
    "BILLING_WEBHOOK_SECRET_NEXT": "billing_webhook_secret_next",
    "OPSGATE_TIME_SCALE": "time_scale",
    "BACKUP_DIR": "backup_dir",
    "BACKUP_INTERVAL_S": "backup_interval_s",
    "WORKER_ID": "worker_id",
    "MAX_ATTEMPTS": "max_attempts",
}


def parse_tenant_tokens(raw: str) -> dict[str, str]:
    """Parse ``TENANT_TOKENS`` (``tenant-uuid=token,tenant-uuid=token``) into a mapping."""
    tokens: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        tenant_id, sep, token = item.partition("=")
        if not sep or not tenant_id or not token:
            raise SettingsError("TENANT_TOKENS: expected 'tenant-id=token,...', got an item without '='")
        tokens[tenant_id.strip()] = token.strip()
    return tokens


def from_environ(environ: Mapping[str, str] | None = None) -> PlatformSettings:
    """Build settings from the environment; raises :class:`SettingsError` with a one-line message."""
    env = os.environ if environ is None else environ
    missing = [name for name in _REQUIRED if not env.get(name)]
    if missing:
        raise SettingsError(f"missing environment variable(s): {', '.join(missing)}")
    values: dict[str, object] = {field: env[name] for name, field in _REQUIRED.items()}
    values.update({field: env[name] for name, field in _OPTIONAL.items() if env.get(name)})
    values["tenant_tokens"] = parse_tenant_tokens(env.get("TENANT_TOKENS", ""))
    try:
        values["defects"] = Defects.parse(env.get("OPSGATE_DEFECTS", ""))
        return PlatformSettings.model_validate(values)
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            err = exc.errors()[0]
            env_name = {v: k for k, v in {**_REQUIRED, **_OPTIONAL}.items()}.get(str(err["loc"][0]), "?")
            raise SettingsError(f"{env_name}: {err['msg']}, got {err['input']!r}") from None
        raise SettingsError(str(exc)) from None


def process_start(prog: str, argv: list[str] | None = None) -> tuple[PlatformSettings, str, int]:
    """Parse ``--host``/``--port``, set up logging and read the settings; a bad setting exits 2."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = from_environ()
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return settings, args.host, args.port
