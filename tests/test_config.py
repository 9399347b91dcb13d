"""Tests of opsgate.config: the shipped target files, one-line errors, durations, interpolation."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsgate import config
from opsgate.config import (
    LOCAL_TARGET,
    CommandControl,
    ProcessControl,
    TargetError,
    load_target,
    parse_duration,
    parse_target,
)

ROOT = Path(__file__).resolve().parents[1]

ENVIRON = {
    "API_URL": "http://127.0.0.1:8001",
    "WORKER_URL": "http://127.0.0.1:8002",
    "PROVIDER_URL": "http://127.0.0.1:8003",
    "DATABASE_URL": "postgresql://opsgate:pg-secret-1@127.0.0.1:5432/opsgate",
    "REDIS_URL": "redis://:redis-secret-2@127.0.0.1:6379/0",
    "API_TOKEN": "token-abc",
    "TENANT_ID": "00000000-0000-0000-0000-000000000001",
    "SERVICE_USER": "ops-bot",
    "SERVICE_PASSWORD": "service-pw",
    "BILLING_WEBHOOK_SECRET": "billing-whsec",
    "BILLING_WEBHOOK_SECRET_NEXT": "billing-whsec-next",
    "PROVIDER_WEBHOOK_SECRET": "provider-whsec",
    "PROVIDER_API_KEY": "provider-key",
}

MINIMAL = "name: t\nenvironment: staging\n"


def test_local_target_loads() -> None:
    target = load_target(ROOT / "targets" / "local.yaml", environ=ENVIRON)

    assert (target.name, target.environment, target.provider) == ("reference-local", "local", "local")
    assert target.time_scale == 0.02
    assert target.scaled(300) == pytest.approx(6.0)
    assert target.platform is not None and target.platform.workers == 1
    api = target.services["api"]
    assert api.url == "http://127.0.0.1:8001"
    assert [check.path for check in api.health] == [
        "/health",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/health/db",
        "/api/health/redis",
    ]
    liveness = api.health[1]
    assert liveness.expect.json == {"status": "ok"}
    assert liveness.expect.max_latency_ms == 200
    assert liveness.claim == "seed-004.health.api-liveness"
    assert api.health[2].expect.json == {"ready": True, "checks": {"postgres": {"ok": True}, "redis": {"ok": True}}}
    assert [g.name for g in target.gates] == [
        "api-p95",
        "send-message-p95",
        "delivered-within-5m",
        "webhook-processing-lag",
        "api-error-ratio",
        "db-pool",
        "no-paging-alert-firing",
        "worker-heartbeat",
        "provider-quota",
        "monitoring-backlog",
        "billing-audit-trail",
        "worker-processing-rate",
        "billing-events-not-stuck",
        "sends-not-stuck",
        "migrations-applied",
        "migrations-backed-up-first",
        "no-paging-alert-30m",
        "no-active-incidents",
        "readiness-availability",
        "service-uptime",
    ]
    assert target.gates[0].judged_on_delta and not target.gates[5].judged_on_delta
    delivery = target.gates[2].delivery
    assert delivery is not None and (delivery.count, delivery.rate_per_s, delivery.within) == (60, 20, 300.0)
    assert target.gates[3].judged_on_delta and target.gates[3].scale_threshold
    gates = {g.name: g for g in target.gates}
    assert gates["billing-events-not-stuck"].sql_durations == {"stuck_after_s": 600.0}
    assert [f.name for f in target.flows] == [
        "send-sms-delivered",
        "force-backup-newer",
        "billing-webhook-processed",
        "outbox-retry-refuses-processed",
        "stop-blocks-next-send",
        "dnc-blocks-any-format",
        "billing-webhook-forged-refused",
        "forged-provider-reply-refused",
        "budget-enforced",
        "quiet-hours-enforced",
        "quiet-hours-contact-timezone",
        "suspend-blocks-sends",
        "suspend-notifies",
        "activate-restores-sends",
        "resume-restores-sends",
        "dnc-contact-receives-nothing",
        "post-deploy-verification",
        "synthetic-checks",
        "smoke",
    ]
    diagnosed = {f.name for f in target.flows if f.diagnose == "messages-not-sending"}
    assert diagnosed == {
        "send-sms-delivered",
        "stop-blocks-next-send",
        "activate-restores-sends",
        "resume-restores-sends",
    }
    assert {f.diagnose for f in target.flows} == {"messages-not-sending", None}
    diagnosis = target.diagnoses["messages-not-sending"]
    assert [(s.id, s.claim) for s in diagnosis] == [
        ("worker-running", "seed-001.diagnosis.worker-running"),
        ("redis-ping", "seed-001.diagnosis.redis-ping"),
        ("send-queue", "seed-001.diagnosis.send-queue"),
    ]
    worker = diagnosis[0].http
    assert worker is not None and (worker.service, worker.path) == ("worker", "/health")
    assert worker.expect.json == {"status": "ok"}
    assert (diagnosis[1].ping, diagnosis[2].queue, diagnosis[2].timeout) == ("redis", "send-messages", 6.0)
    assert target.freshness[0].max_age == 86400 and target.browser[0].name == "admin-kill-switch-state"
    assert [d.name for d in target.drills] == [
        "worker-to-zero",
        "redis-outage",
        "postgres-outage",
        "provider-errors",
        "email-failures-reported",
        "sms-failures-reported",
        "kill-switch",
        "maintenance-mode",
        "postgres-latency",
        "webhook-secret-rotation",
        "health-baseline",
    ]
    assert target.drills[1].fault.repeat == 2 and target.drills[1].traffic[0].phase == "before"
    assert [(s.name, s.p95_ms, s.load.rate_per_s) for s in target.slos] == [
        ("send-message", 500, 100),
        ("readiness", 1500, 100),
        ("core-api-tenant", 300, 100),
    ]
    assert target.slos[0].request is not None and target.slos[0].request.expect.status == 202
    assert target.slos[1].window == 300
    assert isinstance(target.services["worker"].control, ProcessControl)
    assert [(q.name, q.max_waiting) for q in target.queues] == [("send-messages", 100), ("billing-webhooks", 50)]
    assert target.metrics.scrape == ["http://127.0.0.1:8001/metrics", "http://127.0.0.1:8002/metrics"]
    assert target.auth is not None and target.auth.service_user == "ops-bot"
    assert target.source == ROOT / "targets" / "local.yaml"
    assert {"token-abc", "service-pw", "pg-secret-1", "redis-secret-2", "provider-key"} <= target.secret_values
    assert "billing-whsec-next" in target.secret_values
    assert ENVIRON["DATABASE_URL"] in target.secret_values
    assert "ops-bot" not in target.secret_values


def test_targets_symlink_is_the_bundled_file() -> None:
    assert (ROOT / "targets" / "local.yaml").resolve() == LOCAL_TARGET.resolve()


def test_staging_example_loads() -> None:
    target = load_target(ROOT / "targets" / "staging.example.yaml", environ=ENVIRON)

    assert (target.environment, target.provider, target.time_scale) == ("staging", "external", 1.0)
    control = target.services["worker"].control
    assert isinstance(control, CommandControl)
    assert control.read == "kubectl get deploy/worker -o jsonpath={.spec.replicas}"
    assert control.start == "kubectl scale deploy/worker --replicas=2"
    assert control.timeout == 60.0
    assert target.metrics.prometheus is None
    assert {"token-abc", "service-pw", "pg-secret-1", "redis-secret-2", "billing-whsec"} <= target.secret_values

    scaled_up = load_target(
        ROOT / "targets" / "staging.example.yaml",
        environ={**ENVIRON, "WORKER_REPLICAS": "5", "PROMETHEUS_URL": "http://prom:9090"},
    )
    assert isinstance(scaled_up.services["worker"].control, CommandControl)
    assert scaled_up.services["worker"].control.start.endswith("--replicas=5")
    assert scaled_up.metrics.prometheus == "http://prom:9090"


def test_staging_example_stops_redis_by_command() -> None:
    target = load_target(ROOT / "targets" / "staging.example.yaml", environ=ENVIRON)

    assert target.datastores.redis is not None and target.datastores.postgres is not None
    control = target.datastores.redis.control
    assert isinstance(control, CommandControl)
    assert control.read == "kubectl get statefulset/redis -o jsonpath={.spec.replicas}"
    assert control.stop == "kubectl scale statefulset/redis --replicas=0"
    assert control.start.startswith("kubectl scale statefulset/redis --replicas={prior} && ")
    assert control.timeout == 120.0
    assert target.datastores.postgres.control is None


def test_datastore_command_control_parses() -> None:
    text = (
        MINIMAL
        + "provider: external\n"
        + "datastores:\n"
        + "  redis:\n"
        + "    url: redis://r:6379/0\n"
        + "    control: {kind: command, read: ./read.sh, stop: ./stop.sh, start: './start.sh {prior}', timeout: 2m}\n"
        + "  postgres:\n"
        + "    dsn: postgresql://app@db/app\n"
        + "    control: {kind: command, stop: '${PG_STOP}', start: ./pg-start.sh}\n"
    )
    target = parse_target(text, environ={"PG_STOP": "systemctl stop postgresql"})

    assert target.datastores.redis is not None and target.datastores.postgres is not None
    redis = target.datastores.redis.control
    assert isinstance(redis, CommandControl)
    assert (redis.read, redis.stop, redis.start, redis.timeout) == ("./read.sh", "./stop.sh", "./start.sh {prior}", 120)
    postgres = target.datastores.postgres.control  # the default timeout; `${VAR}` interpolated like any field
    assert isinstance(postgres, CommandControl)
    assert (postgres.read, postgres.stop, postgres.start, postgres.timeout) == (
        None,
        "systemctl stop postgresql",
        "./pg-start.sh",
        60.0,
    )


API = MINIMAL + "services:\n  api:\n    url: http://api\n"
DIAGNOSIS_REDIS = "datastores: {redis: {url: 'redis://r'}}\nqueues:\n  - {name: q, layout: bullmq}\n"
CHECK = API + "    health:\n      - path: /healthz\n"

MALFORMED = {
    "bad-yaml": (
        "name: t\n  environment: staging\n",
        "line 2, column 14: invalid YAML: mapping values are not allowed here",
    ),
    "duplicate-key": (
        MINIMAL + "name: u\n",
        "line 3, column 1: invalid YAML: duplicate key 'name'",
    ),
    "top-level-list": ("- name: t\n", "expected a mapping at the top level, got a list"),
    "empty": ("", "expected a mapping at the top level, got nothing (the file is empty)"),
    "comments-only": ("# nothing yet\n", "expected a mapping at the top level, got nothing (the file is empty)"),
    "missing-environment": (
        "name: t\n",
        "environment: missing required field (expected 'local', 'staging' or 'production')",
    ),
    "environment-prod": (
        "name: t\nenvironment: prod\n",
        "environment: expected 'local', 'staging' or 'production', got 'prod'",
    ),
    "time-scale-zero": (MINIMAL + "time_scale: 0\n", "time_scale: expected a number > 0 and <= 1, got 0"),
    "time-scale-two": (MINIMAL + "time_scale: 2\n", "time_scale: expected a number > 0 and <= 1, got 2"),
    "time-scale-text": (MINIMAL + "time_scale: fast\n", "time_scale: expected a number, got 'fast'"),
    "unknown-field": (
        MINIMAL + "services:\n  api:\n    url: http://api\n    helth: []\n",
        "services.api.helth: unknown field (did you mean 'health'?)",
    ),
    "unknown-field-far": (
        MINIMAL + "colour: blue\n",
        "colour: unknown field (expected one of: name, environment, provider, time_scale, secrets, platform, "
        "containers, services, datastores, queues, metrics, auth, gates, flows, diagnoses, freshness, browser, alerts, "
        "drills, slos, claims)",
    ),
    "path-without-slash": (
        API + "    health:\n      - path: healthz\n",
        "services.api.health[0].path: expected a path starting with '/', got 'healthz'",
    ),
    "status-abc": (
        CHECK + "        expect: {status: abc}\n",
        "services.api.health[0].expect.status: expected an integer, got 'abc'",
    ),
    "status-out-of-range": (
        CHECK + "        expect: {status: 700}\n",
        "services.api.health[0].expect.status: expected an integer >= 100 and <= 599, got 700",
    ),
    "duration-words": (
        CHECK + "        timeout: 5 minutes\n",
        "services.api.health[0].timeout: expected a duration like '5m', got '5 minutes'",
    ),
    "duration-bare-number": (
        CHECK + "        timeout: 5\n",
        "services.api.health[0].timeout: expected a duration like '5m', got 5",
    ),
    "missing-variable": (
        MINIMAL + "services:\n  api:\n    url: ${API_URL}\n",
        "services.api.url: environment variable API_URL is not set (export it or remove the reference)",
    ),
    "malformed-reference": (
        MINIMAL + "services:\n  api:\n    url: http://${API HOST}\n",
        "services.api.url: expected '${NAME}' or '${NAME:-default}' (write '$${' for a literal '${'), "
        "got 'http://${API HOST}'",
    ),
    "command-control-missing-stop": (
        "name: t\nenvironment: staging\nservices:\n  worker:\n    url: http://worker\n"
        "    control: {kind: command, start: ./start.sh}\n",
        "services.worker.control.stop: missing required field",
    ),
    "datastore-control-missing-stop": (
        MINIMAL + "datastores:\n  redis:\n    url: redis://r\n    control: {kind: command, start: ./start.sh}\n",
        "datastores.redis.control.stop: missing required field",
    ),
    "datastore-control-duration-words": (
        MINIMAL + "datastores:\n  postgres:\n    dsn: postgresql://app@db/app\n"
        "    control: {kind: command, stop: ./stop.sh, start: ./start.sh, timeout: 2 minutes}\n",
        "datastores.postgres.control.timeout: expected a duration like '5m', got '2 minutes'",
    ),
    "control-prior-without-read": (
        MINIMAL + "datastores:\n  redis:\n    url: redis://r\n"
        "    control: {kind: command, stop: ./stop.sh, start: './start.sh --replicas={prior}'}\n",
        "datastores.redis.control.read: expected a `read` command to fill in {prior} of start, got None",
    ),
    "containers-image-empty": (
        MINIMAL + "provider: containers\ncontainers: {postgres_image: ''}\n",
        "containers.postgres_image: expected a non-empty string, got ''",
    ),
    "control-kind-unknown": (
        API + "    control: {kind: ssh}\n",
        "services.api.control.kind: expected 'process' or 'command', got 'ssh'",
    ),
    "process-control-on-external": (
        API + "    control: {kind: process}\n",
        "services.api.control.kind: expected 'command' with provider 'external' "
        "(no process of ours to control), got 'process'",
    ),
    "queue-layout-unknown": (
        MINIMAL + "datastores: {redis: {url: 'redis://r'}}\nqueues:\n  - {name: q, layout: sidekiq}\n",
        "queues[0].layout: expected 'bullmq', 'bull', 'celery' or 'rq', got 'sidekiq'",
    ),
    "duplicate-queue-names": (
        MINIMAL + "datastores: {redis: {url: 'redis://r'}}\nqueues:\n"
        "  - {name: q, layout: bullmq}\n  - {name: p, layout: bullmq}\n  - {name: q, layout: rq}\n",
        "queues[2].name: expected a queue name not used before (queues[0] has it), got 'q'",
    ),
    "queue-without-redis": (
        MINIMAL + "queues:\n  - {name: q, layout: bullmq}\n",
        "queues[0].redis: expected a configured datastore (datastores.redis is not set), got 'redis'",
    ),
    "bad-dsn-scheme": (
        MINIMAL + "datastores:\n  postgres: {dsn: 'mysql://app:hunter22@db/app'}\n",
        "datastores.postgres.dsn: expected a URL starting with postgresql:// or postgres://, "
        "got 'mysql://app:***@db/app'",
    ),
    "secret-name": (
        MINIMAL + "secrets: [API_TOKEN, not a var]\n",
        "secrets[1]: expected an environment variable name like 'API_TOKEN', got 'not a var'",
    ),
    "slo-no-request": (
        MINIMAL + "slos:\n  - {name: s, p95_ms: 500, load: {rate_per_s: 10, duration: 1m}}\n",
        "slos[0]: expected exactly one of request, locustfile, got 'none'",
    ),
    "slo-no-limit": (
        MINIMAL + "slos:\n  - {name: s, request: {path: /x}, load: {rate_per_s: 10, duration: 1m}}\n",
        "slos[0]: expected at least one limit of p50_ms, p95_ms, p99_ms, error_rate, got 'none'",
    ),
    "slo-open-without-rate": (
        MINIMAL + "slos:\n  - {name: s, request: {path: /x}, p95_ms: 5, load: {duration: 1m}}\n",
        "slos[0].load.rate_per_s: expected a rate_per_s > 0 for the open model, got 0.0",
    ),
    "slo-bare-duration": (
        MINIMAL + "slos:\n  - {name: s, request: {path: /x}, p95_ms: 5, load: {rate_per_s: 5, duration: 60}}\n",
        "slos[0].load.duration: expected a duration like '5m', got 60",
    ),
    "slo-error-rate-percent": (
        MINIMAL + "slos:\n  - {name: s, request: {path: /x}, error_rate: 5, load: {rate_per_s: 5, duration: 1m}}\n",
        "slos[0].error_rate: expected a number >= 0 and <= 1, got 5",
    ),
    "slo-duplicate-names": (
        MINIMAL + "slos:\n  - {name: s, request: {path: /x}, p95_ms: 5, load: {rate_per_s: 5, duration: 1m}}\n"
        "  - {name: s, request: {path: /y}, p95_ms: 5, load: {rate_per_s: 5, duration: 1m}}\n",
        "slos[1].name: expected an SLO name not used before (slos[0] has it), got 's'",
    ),
    "sql-durations-unnamed": (
        MINIMAL + "gates:\n  - {name: g, sql: 'select count(*) from t where age > %(max_age_s)s',"
        " sql_durations: {max_age: 10m}, op: '==', threshold: 0}\n",
        "gates[0].sql_durations: expected one duration per %(name)s placeholder of sql (max_age_s), got ['max_age']",
    ),
    "sql-durations-bare-number": (
        MINIMAL + "gates:\n  - {name: g, sql: 'select %(a)s', sql_durations: {a: 600}, op: '==', threshold: 0}\n",
        "gates[0].sql_durations.a: expected a duration like '5m', got 600",
    ),
    "delivery-without-limit": (
        MINIMAL + "gates:\n  - {name: g, delivery: {send: {path: /m}, count: 5, rate_per_s: 5},"
        " op: '>=', threshold: 1}\n",
        "gates[0].delivery.within: missing required field",
    ),
    "delivery-limit-bare-number": (
        MINIMAL + "gates:\n  - {name: g, delivery: {send: {path: /m}, count: 5, rate_per_s: 5, within: 300},"
        " op: '>=', threshold: 1}\n",
        "gates[0].delivery.within: expected a duration like '5m', got 300",
    ),
    "delivery-count-zero": (
        MINIMAL + "gates:\n  - {name: g, delivery: {send: {path: /m}, count: 0, rate_per_s: 5, within: 5m},"
        " op: '>=', threshold: 1}\n",
        "gates[0].delivery.count: expected an integer >= 1 and <= 10000, got 0",
    ),
    "delivery-record-path": (
        MINIMAL + "gates:\n  - {name: g, delivery: {send: {path: /m}, count: 5, rate_per_s: 5, within: 5m,"
        " record: {path: deliveries}}, op: '>=', threshold: 1}\n",
        "gates[0].delivery.record.path: expected a path starting with '/', got 'deliveries'",
    ),
    "delivery-with-window": (
        MINIMAL + "gates:\n  - {name: g, delivery: {send: {path: /m}, count: 5, rate_per_s: 5, within: 5m},"
        " window: 1m, op: '>=', threshold: 1}\n",
        "gates[0].window: expected no window for a delivery gate (its sends are its window), got 'a window'",
    ),
    "count-window-without-size": (
        MINIMAL + "alerts:\n  thresholds:\n  - {alert: A, source: {runbook: r, section: s, quote: q}, threshold: 3%,"
        " severity: warning, input: {kind: count_window, metric: hits, denominator: {name: held}}}\n",
        "alerts.thresholds[0].input: expected a size and a denominator for a count_window input, got 'no size'",
    ),
    "diagnosis-step-no-probe": (
        MINIMAL + "diagnoses:\n  d:\n    - {id: a}\n",
        "diagnoses.d[0]: expected exactly one of http, ping, queue, got 'none'",
    ),
    "diagnosis-step-two-probes": (
        MINIMAL + DIAGNOSIS_REDIS + "diagnoses:\n  d:\n    - {id: a, ping: redis, queue: q}\n",
        "diagnoses.d[0]: expected exactly one of http, ping, queue, got 'ping and queue'",
    ),
    "diagnosis-ping-unknown": (
        MINIMAL + "diagnoses:\n  d:\n    - {id: a, ping: mysql}\n",
        "diagnoses.d[0].ping: expected 'postgres' or 'redis', got 'mysql'",
    ),
    "diagnosis-ping-not-configured": (
        MINIMAL + DIAGNOSIS_REDIS + "diagnoses:\n  d:\n    - {id: a, ping: postgres}\n",
        "diagnoses.d[0].ping: expected a configured datastore (datastores.postgres is not set), got 'postgres'",
    ),
    "diagnosis-queue-unknown": (
        MINIMAL + DIAGNOSIS_REDIS + "diagnoses:\n  d:\n    - {id: a, queue: sends}\n",
        "diagnoses.d[0].queue: expected a queue of queues (q), got 'sends'",
    ),
    "diagnosis-service-unknown": (
        API + "diagnoses:\n  d:\n    - {id: a, http: {service: worker, path: /health}}\n",
        "diagnoses.d[0].http.service: expected a service of services (api), got 'worker'",
    ),
    "diagnosis-max-depth-without-queue": (
        MINIMAL + DIAGNOSIS_REDIS + "diagnoses:\n  d:\n    - {id: a, ping: redis, max_depth: 5}\n",
        "diagnoses.d[0].max_depth: expected max_depth only on a queue step, got 5",
    ),
    "diagnosis-max-depth-negative": (
        MINIMAL + DIAGNOSIS_REDIS + "diagnoses:\n  d:\n    - {id: a, queue: q, max_depth: -1}\n",
        "diagnoses.d[0].max_depth: expected an integer >= 0, got -1",
    ),
    "diagnosis-duplicate-step-ids": (
        MINIMAL + DIAGNOSIS_REDIS + "diagnoses:\n  d:\n    - {id: a, ping: redis}\n    - {id: a, queue: q}\n",
        "diagnoses.d[1].id: expected a step id not used before (diagnoses.d[0] has it), got 'a'",
    ),
    "diagnosis-no-steps": (
        MINIMAL + "diagnoses:\n  d: []\n",
        "diagnoses.d: expected at least one step, got []",
    ),
    "diagnosis-step-typo": (
        MINIMAL + "diagnoses:\n  d:\n    - {id: a, pnig: redis}\n",
        "diagnoses.d[0].pnig: unknown field (did you mean 'ping'?)",
    ),
    "diagnosis-timeout-words": (
        MINIMAL + DIAGNOSIS_REDIS + "diagnoses:\n  d:\n    - {id: a, ping: redis, timeout: 6 seconds}\n",
        "diagnoses.d[0].timeout: expected a duration like '5m', got '6 seconds'",
    ),
    "flow-diagnose-unknown": (
        MINIMAL + DIAGNOSIS_REDIS + "diagnoses:\n  d:\n    - {id: a, ping: redis}\n"
        "flows:\n  - {name: f, steps: [{path: /x}], diagnose: e}\n",
        "flows[0].diagnose: expected a diagnosis of diagnoses (d), got 'e'",
    ),
    "flow-diagnose-without-diagnoses": (
        MINIMAL + "flows:\n  - {name: f, steps: [{path: /x}], diagnose: messages-not-sending}\n",
        "flows[0].diagnose: expected a diagnosis of diagnoses (none), got 'messages-not-sending'",
    ),
    "browser-step-see-and-click": (
        MINIMAL + "browser:\n  - {name: b, steps: [{see: h1, click: a}]}\n",
        "browser[0].steps[0]: expected exactly one of goto, fill, click, see, got {'click': 'a', 'see': 'h1'}",
    ),
    "expect-contains-not-text": (
        MINIMAL + "flows:\n  - {name: f, steps: [{path: /x, expect: {contains: [a]}}]}\n",
        "flows[0].steps[0].expect.contains: expected a string, got ['a']",
    ),
    "several-errors": (
        "name: t\nenvironment: prod\ntime_scale: 0\nprovider: cloud\n",
        "environment: expected 'local', 'staging' or 'production', got 'prod' (+2 more)",
    ),
}


@pytest.mark.parametrize("text, problem", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_target_is_one_line(text: str, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "bad.yaml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    with pytest.raises(TargetError) as raised:
        load_target("targets/bad.yaml", environ={})

    assert raised.value.message == f"targets/bad.yaml: {problem}"
    assert str(raised.value) == raised.value.message
    assert "\n" not in raised.value.message


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TargetError) as raised:
        load_target("targets/x.yaml", environ={})
    assert raised.value.message == "targets/x.yaml: file not found"


def test_secret_from_listed_variable_is_redacted_in_errors() -> None:
    text = MINIMAL + "secrets: [DATABASE_URL]\ndatastores:\n  postgres: {dsn: '${DATABASE_URL}'}\n"
    with pytest.raises(TargetError) as raised:
        parse_target(text, source="t.yaml", environ={"DATABASE_URL": "mysql-dsn-s3cret"})
    assert raised.value.message == (
        "t.yaml: datastores.postgres.dsn: expected a URL starting with postgresql:// or postgres://, got '***'"
    )


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [5, 5.0, "5", "5 minutes", "-5m", "5M", "m", "", "1m30s", None, True])
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError) as raised:
        parse_duration(value)
    assert str(raised.value) == f"expected a duration like '5m', got {value!r}"


def test_interpolation_defaults_and_escape() -> None:
    text = (
        MINIMAL
        + "services:\n"
        + "  api:\n"
        + "    url: '${SCHEME:-http}://${HOST}:${PORT:-8000}'\n"
        + "    health:\n"
        + "      - path: /q\n"
        + "        expect: {json: {template: '$${NOT_A_VAR} and $$ stays', empty: '${EMPTY:-fallback}'}}\n"
        + "        timeout: '${TIMEOUT:-2s}'\n"
    )
    target = parse_target(text, environ={"HOST": "api.internal", "PORT": "9000", "EMPTY": ""})

    api = target.services["api"]
    assert api.url == "http://api.internal:9000"
    assert api.health[0].expect.json == {"template": "${NOT_A_VAR} and $$ stays", "empty": "fallback"}
    assert api.health[0].timeout == 2.0
    assert target.source is None


def test_interpolated_numbers_are_accepted() -> None:
    text = MINIMAL + "time_scale: '${SCALE:-0.5}'\nplatform: {workers: '${WORKERS}'}\n"
    target = parse_target(text, environ={"WORKERS": "3"})
    assert target.time_scale == 0.5
    assert target.platform is not None and target.platform.workers == 3


def test_secret_values_are_non_empty_strings_only() -> None:
    text = MINIMAL + "secrets: [API_TOKEN, UNSET, EMPTY]\nauth: {api_token: '${API_TOKEN}', service_password: ''}\n"
    target = parse_target(text, environ={"API_TOKEN": "t0k", "EMPTY": ""})
    assert target.secret_values == frozenset({"t0k"})
    assert target.auth is not None and target.auth.service_password is None


def test_error_carries_file_and_field() -> None:
    with pytest.raises(TargetError) as raised:
        parse_target(MINIMAL + "time_scale: 0\n", source="targets/x.yaml")
    assert (raised.value.file, raised.value.field) == ("targets/x.yaml", "time_scale")


def test_public_names() -> None:
    assert sorted(config.__all__) == sorted(
        [
            "LOCAL_TARGET",
            "AlertInput",
            "AlertLive",
            "AlertThreshold",
            "Alerts",
            "Auth",
            "BrowserCheck",
            "BrowserExpect",
            "BrowserStep",
            "DrillExpect",
            "DrillFault",
            "DrillLogs",
            "DrillSpec",
            "DrillTraffic",
            "Flow",
            "FlowStep",
            "FreshnessSpec",
            "GateSpec",
            "HttpSource",
            "MetricSelector",
            "MetricSource",
            "Poll",
            "Signing",
            "SloHonesty",
            "SloLoad",
            "SloSpec",
            "CommandControl",
            "Control",
            "Datastores",
            "DeliveryRecord",
            "DeliverySource",
            "Diagnosis",
            "DiagnosisStep",
            "Duration",
            "Expect",
            "HealthCheck",
            "HealthProbe",
            "Metrics",
            "PlatformSpec",
            "Postgres",
            "ProcessControl",
            "QueueSpec",
            "RedisStore",
            "RunbookSource",
            "Service",
            "Target",
            "TargetError",
            "Toggle",
            "Traffic",
            "TrafficExpect",
            "load_target",
            "parse_duration",
            "parse_target",
        ]
    )
