"""``opsgate gate`` and ``opsgate drill`` against an external staging target, as a team would run them.

The target is a stand-in (standin.py: the reference platform in its own process, its worker and its Redis
stopped and started through a command like ``kubectl scale``), reached only through a target file with
``provider: external``, its addresses and secrets from ``${VAR}`` variables. The drills are judged from
outside: the stand-in's replica count and Redis state, its history of control actions, its health endpoints
and Redis itself; the journal folder of each run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from drillrun import opsgate_env, paused_run
from helpers import alive, run_opsgate

STANDIN = Path(__file__).with_name("standin.py")
START_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 240.0
EXIT_REFUSED, EXIT_ERROR = 4, 3

# The shape of src/opsgate/targets/local.yaml for a deployment opsgate does not start. The worker and Redis
# are stopped and started through the stand-in's command-line client (datastores.redis.control); the drills
# keep worker-to-zero's expectations but the alert one (the stand-in runs no Prometheus), and redis-outage's
# in a single outage (local.yaml repeats it twice).
TARGET = """\
name: standin-staging
environment: @ENVIRONMENT@
provider: external
time_scale: 0.02
secrets: [API_TOKEN, SERVICE_PASSWORD, BILLING_WEBHOOK_SECRET, PROVIDER_WEBHOOK_SECRET, PROVIDER_API_KEY,
          DATABASE_URL, REDIS_URL]

services:
  api:
    url: "${API_URL}"
    health:
      - {path: /health, expect: {json: {status: ok}}}
      - {path: /healthz, expect: {json: {status: ok}}}
      - {path: /readyz, expect: {json: {ready: true, checks: {postgres: {ok: true}, redis: {ok: true}}}}}
      - {path: /metrics}
  worker:
    url: "${WORKER_URL}"
    health:
      - {path: /healthz}
      - {path: /readyz}
    control:
      kind: command
      read: "@CTL@ read"
      stop: "@STOP@"
      start: "@CTL@ start"
      timeout: 90s
  provider:
    url: "${PROVIDER_URL}"
    health:
      - {path: /healthz}
      - {path: /status, expect: {json: {status: ok}}}

datastores:
  postgres: {dsn: "${DATABASE_URL}", max_pool_ratio: 0.8}
  redis:
    url: "${REDIS_URL}"
    control:
      kind: command
      read: "@CTL@ redis-read"
      stop: "@REDIS_STOP@"
      start: "@CTL@ redis-start"
      timeout: 90s

queues:
  - {name: send-messages, layout: bullmq, max_waiting: 100}
  - {name: billing-webhooks, layout: bullmq, max_waiting: 50}

metrics:
  scrape: ["${API_URL}/metrics", "${WORKER_URL}/metrics"]

auth:
  tenant_id: "${TENANT_ID}"
  api_token: "${API_TOKEN}"
  service_user: "${SERVICE_USER}"
  service_password: "${SERVICE_PASSWORD}"

gates:
  - name: worker-heartbeat
    metric: {name: worker_heartbeat_age_seconds}
    scrape: ["${API_URL}/metrics"]
    op: "<"
    threshold: 30
    scale_threshold: true
    unit: s
  - name: db-pool
    metric:
      numerator: {name: db_connections_active}
      denominator: {name: db_connections_max}
    op: "<"
    threshold: 0.8
    unit: ratio
  - name: provider-quota
    http: {service: provider, path: /status, field: quota.usage_ratio}
    op: "<"
    threshold: 0.8
    unit: ratio

drills:
  - name: worker-to-zero
    objective: With the worker scaled to zero webhooks queue up; scaled back, the backlog drains exactly once.
    fault: {stop: worker}
    traffic:
      - count: 20
        rate_per_s: 20
        step:
          method: POST
          path: /billing/webhooks/sandbox
          json: {id: "evt_drill_{uuid}", type: invoice.paid, data: {tenantId: "${TENANT_ID}"}}
          sign: {header: x-sandbox-signature, secret: "${BILLING_WEBHOOK_SECRET}"}
          expect: {status: 202}
          save: {event: event_id}
    watch: [billing-webhooks]
    expect_during:
      - traffic: {status: [202]}
      - {name: backlog grows, queue: billing-webhooks, op: ">=", value: accepted, within: 1m}
      - {metric: {name: billing_webhook_total, labels: {status: retrying}}, increase: true, op: ">", value: 5,
         within: 15m}
      - {gate: worker-heartbeat, verdict: fail}
    expect_after:
      - {name: backlog drained, queue: billing-webhooks, op: "==", value: 0, within: 5m}
      - name: one audit row per accepted webhook
        sql: >-
          select count(*) from audit_events
          where entity_type = 'billing_webhook_event' and entity_id = any(%(event)s)
        op: "=="
        value: accepted
        within: 1m
      - {gate: worker-heartbeat, verdict: pass}
  - name: redis-outage
    objective: >-
      Redis stops: /readyz answers 503 naming redis, /healthz stays 200, sends answer within 2 s;
      Redis restarts (AOF kept): readiness recovers and every accepted message is delivered.
    fault: {stop: redis}
    traffic:
      - phase: before
        count: 20
        rate_per_s: 100
        step:
          method: POST
          path: "/v1/tenants/${TENANT_ID}/messages"
          headers: {Authorization: "Bearer ${API_TOKEN}"}
          json: {channel: email, to: "drill-{uuid}@example.test", body: "before the redis outage"}
          expect: {status: 202}
          save: {id: id}
      - count: 5
        rate_per_s: 5
        step:
          method: POST
          path: "/v1/tenants/${TENANT_ID}/messages"
          headers: {Authorization: "Bearer ${API_TOKEN}"}
          json: {channel: email, to: "drill-{uuid}@example.test", body: "during the redis outage"}
          save: {id: id}
    expect_during:
      - name: readiness 503 naming redis
        health: {service: api, path: /readyz, expect: {status: 503, json: {ready: false, failing: [redis]}}}
        within: 30s
      - health: {service: api, path: /healthz, expect: {status: 200}}
      - traffic: {max_latency_ms: 2000}
    expect_after:
      - name: readiness recovered
        health: {service: api, path: /readyz, expect: {status: 200, json: {ready: true}}}
        within: 1m
      - name: every accepted message delivered
        sql: >-
          select count(*) from messages where id::text = any(%(id)s) and status = 'delivered'
        op: "=="
        value: accepted
        within: 5m
"""


@dataclass
class StandIn:
    """The running stand-in: its state folder (env.json), control API and the variables of its target file."""

    state: Path
    info: dict[str, object]
    proc: subprocess.Popen[bytes]

    @property
    def environ(self) -> dict[str, str]:
        variables = self.info["environ"]
        assert isinstance(variables, dict)
        return {str(k): str(v) for k, v in variables.items()}

    @property
    def ctl_command(self) -> str:
        return " ".join(shlex.quote(part) for part in (sys.executable, str(STANDIN), "ctl", str(self.state)))

    def ctl(self, action: str) -> str:
        result = subprocess.run([sys.executable, str(STANDIN), "ctl", str(self.state), action], capture_output=True,
                                text=True, timeout=120, check=False)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def expect_replicas(self, count: str) -> None:
        assert self.ctl("read") == count

    def history(self) -> list[str]:
        text = httpx.get(f"{self.info['control_url']}/history", timeout=10).text
        return text.split()[::2]  # "stop <pid>" / "redis-start <pid>" ... lines → the actions

    def status(self, service: str, path: str) -> int:
        return httpx.get(f"{self.info[service + '_url']}{path}", timeout=10).status_code

    def assert_steady(self) -> None:
        """One worker replica, ready; Redis running; the api ready (its dependencies too); the provider healthy."""
        assert self.ctl("read") == "1"
        assert self.ctl("redis-read") == "running"
        assert self.status("worker", "/readyz") == 200
        ready = httpx.get(f"{self.info['api_url']}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["ready"] is True, ready.text
        assert self.status("provider", "/healthz") == 200
        assert httpx.get(f"{self.info['provider_url']}/status", timeout=10).json()["status"] == "ok"

    @contextlib.contextmanager
    def redis_client(self) -> Iterator[redis.Redis]:
        """A client of Redis at the address the target file was given (the same port, the same password)."""
        client = redis.Redis.from_url(self.environ["REDIS_URL"], socket_connect_timeout=5, socket_timeout=5)
        try:
            yield client
        finally:
            client.close()

    def assert_redis_answers(self) -> None:
        with self.redis_client() as client:
            assert client.ping() is True

    def write_target(
        self, path: Path, *, environment: str = "staging", stop: str | None = None, redis_stop: str | None = None
    ) -> Path:
        text = TARGET.replace("@ENVIRONMENT@", environment).replace("@CTL@", self.ctl_command)
        text = text.replace("@STOP@", stop or f"{self.ctl_command} stop")
        path.write_text(text.replace("@REDIS_STOP@", redis_stop or f"{self.ctl_command} redis-stop"))
        return path


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    """The stand-in, started once for this module in its own process; SIGTERM stops it and all it started."""
    state = tmp_path_factory.mktemp("standin")
    with (state / "standin.out").open("wb") as log:
        proc = subprocess.Popen([sys.executable, str(STANDIN), "serve", "--state", str(state)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    listing = state / "logs" / "processes.json"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (state / "env.json").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the stand-in did not start (exit {proc.poll()}):\n{(state / 'standin.out').read_text()}")
            time.sleep(0.1)
        assert (state / "env.json").stat().st_mode & 0o777 == 0o600  # it holds the target's secrets
        yield StandIn(state, json.loads((state / "env.json").read_text()), proc)
    finally:
        pids = [row["pid"] for row in json.loads(listing.read_text() or "{}").values()] if listing.exists() else []
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=60) == 0, (state / "standin.out").read_text()[-3000:]
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            for pid in pids:  # what it started, by PID: it could not stop them itself
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        # whatever the stand-in had running was stopped with it (the worker's pid may be a later one)
        assert [pid for pid in pids if alive(pid)] == []


@pytest.fixture
def steady(standin: StandIn) -> Iterator[StandIn]:
    """The stand-in in its steady state before a test, and put back in it after (so one failure stays one)."""
    standin.assert_steady()
    yield standin
    if standin.ctl("read") != "1":
        standin.ctl("start")
    if standin.ctl("redis-read") != "running":
        standin.ctl("redis-start")


def drill_args(target: Path, tmp_path: Path, *more: str, drill: str = "worker-to-zero") -> list[str]:
    # A --chaos folder that does not exist: only the target file's declared drills run.
    return ["drill", "--target", str(target), "--match", drill, "--chaos", str(tmp_path / "no-chaos"),
            "--drill-logs", str(tmp_path / "drill-logs"), *more]  # fmt: skip


def run(args: list[str], standin: StandIn, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    result: subprocess.CompletedProcess[str] = run_opsgate(
        args, timeout_s=RUN_TIMEOUT_S, env=opsgate_env(tmp_path, standin.environ)
    )
    what = args[0] + (f" {args[args.index('--match') + 1]}" if "--match" in args else "")
    print(f"wall time: opsgate {what}: {time.monotonic() - started:.1f} s (exit {result.returncode})")  # with -s
    return result


def test_gate_passes_on_the_external_stand_in(steady: StandIn, tmp_path: Path) -> None:
    before = steady.history()
    target = steady.write_target(tmp_path / "staging.yaml")
    result = run(["gate", "--target", str(target)], steady, tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = json.loads(((tmp_path / "reports" / "latest") / "summary.json").read_text())
    ids = {check["id"] for check in summary["checks"]}
    assert {"gate[worker-heartbeat]", "health[worker:/readyz]", "queue[billing-webhooks]"} <= ids, ids
    assert summary["verdict"] == "pass"
    assert steady.history() == before  # a gate never touches the worker
    assert steady.environ["API_TOKEN"] not in (tmp_path / "reports" / "latest" / "junit.xml").read_text()


def test_drill_on_staging_without_allow_destructive_is_refused(steady: StandIn, tmp_path: Path) -> None:
    before = steady.history()
    result = run(drill_args(steady.write_target(tmp_path / "staging.yaml"), tmp_path), steady, tmp_path)
    assert result.returncode == EXIT_REFUSED, result.stdout[-4000:] + result.stderr[-2000:]
    assert "refused on a staging target without --allow-destructive" in result.stdout
    assert steady.history() == before and steady.ctl("read") == "1"  # the worker was never stopped
    assert list((tmp_path / "state").glob("*.jsonl")) == []


def test_drill_on_production_is_refused_even_with_allow_destructive(steady: StandIn, tmp_path: Path) -> None:
    before = steady.history()
    target = steady.write_target(tmp_path / "production.yaml", environment="production")
    result = run(drill_args(target, tmp_path, "--allow-destructive"), steady, tmp_path)
    assert result.returncode == EXIT_REFUSED, result.stdout[-4000:] + result.stderr[-2000:]
    assert "refused on a production target" in result.stdout
    assert steady.history() == before and steady.ctl("read") == "1"


def test_drill_with_allow_destructive_passes_and_restores_the_steady_state(steady: StandIn, tmp_path: Path) -> None:
    before = steady.history()
    result = run(drill_args(steady.write_target(tmp_path / "staging.yaml"), tmp_path, "--allow-destructive"), steady,
                 tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "verdict PASS" in result.stdout
    assert steady.history()[len(before) :] == ["stop", "start"]  # scaled to zero once, restored once
    steady.assert_steady()
    assert list((tmp_path / "state").glob("*.jsonl")) == []
    log = drill_log(tmp_path)
    assert "outcome: pass" in log and "rollback applied" in log and steady.environ["BILLING_WEBHOOK_SECRET"] not in log


def test_a_stop_that_does_nothing_makes_the_drill_inconclusive(steady: StandIn, tmp_path: Path) -> None:
    before = steady.history()
    target = steady.write_target(tmp_path / "staging.yaml", stop="true")
    result = run(drill_args(target, tmp_path, "--allow-destructive"), steady, tmp_path)
    assert result.returncode == EXIT_ERROR, result.stdout[-4000:] + result.stderr[-2000:]
    assert "inconclusive" in result.stdout.lower(), result.stdout[-4000:]
    assert "still '1' after `true`" in result.stdout
    steady.assert_steady()
    assert "stop" not in steady.history()[len(before) :]
    assert list((tmp_path / "state").glob("*.jsonl")) == []


# (barrier, signals sent while paused there): each must roll the worker back and end the run non-zero. The twice-in-
# rollback case runs locally in make test (tests/drills/test_interrupts_local.py); here in make test-matrix.
INTERRUPTS = [
    pytest.param("fault-applied", [signal.SIGINT], id="sigint-fault-applied"),
    pytest.param("fault-applied", [signal.SIGTERM], id="sigterm-fault-applied"),
    pytest.param(
        "in-rollback", [signal.SIGTERM, signal.SIGTERM], id="sigterm-twice-in-rollback", marks=pytest.mark.matrix
    ),
    pytest.param("before-fault", [signal.SIGTERM], id="sigterm-before-fault"),
]


@pytest.mark.parametrize(("point", "signals"), INTERRUPTS)
def test_an_interrupted_drill_restores_the_worker(
    steady: StandIn, tmp_path: Path, point: str, signals: list[signal.Signals]
) -> None:
    before = steady.history()
    args = drill_args(steady.write_target(tmp_path / "staging.yaml"), tmp_path, "--allow-destructive")
    with paused_run(args, tmp_path, point, steady.environ) as drill:
        drill.wait_reached(point)
        assert len(drill.journals()) == 1 and len(drill.journal_entries("undo")) == 1  # the undo is on disk first
        assert steady.ctl("read") == ("1" if point == "before-fault" else "0")
        drill.interrupt(point, signals, held=lambda: steady.expect_replicas("0"))  # paused before the undo
        code = drill.wait_exit()
        output = drill.text()
    assert code != 0, output[-4000:]
    steady.assert_steady()
    actions = steady.history()[len(before) :]
    if point == "before-fault":
        assert "stop" not in actions, (actions, output[-4000:])  # the worker was never stopped
    else:
        assert actions == ["stop", "start"], (actions, output[-4000:])
    assert drill.journals() == [], output[-4000:]
    log = drill_log(tmp_path)
    assert "outcome: error" in log and "interrupted" in log, log


def drill_log(tmp_path: Path, drill: str = "worker-to-zero") -> str:
    return next((tmp_path / "drill-logs" / "staging").glob(f"*{drill}*.md")).read_text()


def test_recover_after_a_sigkilled_drill_restores_the_worker(steady: StandIn, tmp_path: Path) -> None:
    args = drill_args(steady.write_target(tmp_path / "staging.yaml"), tmp_path, "--allow-destructive")
    with paused_run(args, tmp_path, "fault-applied", steady.environ) as drill:
        drill.wait_reached("fault-applied")
        drill.send(signal.SIGKILL)  # no handler, no rollback: the worker stays scaled to zero
        assert drill.wait_exit(10) == -signal.SIGKILL
        assert steady.ctl("read") == "0" and len(drill.journals()) == 1
        recovered = run(["recover"], steady, tmp_path)
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        assert "ok   stop worker" in recovered.stdout and "FAIL" not in recovered.stdout, recovered.stdout
        steady.assert_steady()
        assert drill.journals() == []
        again = run(["recover"], steady, tmp_path)
        assert again.returncode == 0 and "nothing to recover" in again.stdout


def test_a_drill_interrupted_by_sigint_is_not_logged_as_passed(steady: StandIn, tmp_path: Path) -> None:
    args = drill_args(steady.write_target(tmp_path / "staging.yaml"), tmp_path, "--allow-destructive")
    with paused_run(args, tmp_path, "fault-applied", steady.environ) as drill:
        drill.wait_reached("fault-applied")
        drill.interrupt("fault-applied", [signal.SIGINT])
        assert drill.wait_exit() != 0
    steady.assert_steady()
    log = drill_log(tmp_path)
    assert "outcome: error" in log and "interrupted" in log, log


def test_declared_drills_run_with_an_empty_chaos_folder(steady: StandIn, tmp_path: Path) -> None:
    """`opsgate drill --help`: "folder of Python drills (the target file's own drills always run)"."""
    (tmp_path / "empty").mkdir()
    target = steady.write_target(tmp_path / "staging.yaml")
    result = run(["drill", "--target", str(target), "--match", "worker-to-zero", "--chaos", str(tmp_path / "empty")],
                 steady, tmp_path)  # fmt: skip
    assert result.returncode == EXIT_REFUSED, result.stdout[-2000:] + result.stderr[-2000:]


def test_redis_outage_drill_stops_redis_through_its_control_and_restores_it(steady: StandIn, tmp_path: Path) -> None:
    before = steady.history()
    marker = f"opsgate-test:{tmp_path.name}"
    with steady.redis_client() as client:
        client.set(marker, "kept", ex=600)
    target = steady.write_target(tmp_path / "staging.yaml")
    result = run(drill_args(target, tmp_path, "--allow-destructive", drill="redis-outage"), steady, tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "verdict PASS" in result.stdout
    assert steady.history()[len(before) :] == ["redis-stop", "redis-start"]  # stopped once, restarted once
    steady.assert_steady()
    with steady.redis_client() as client:  # back at the address the target file names, its data kept (AOF)
        assert client.ping() is True and client.get(marker) == b"kept"
        client.delete(marker)
    assert list((tmp_path / "state").glob("*.jsonl")) == []
    summary = json.loads(((tmp_path / "reports" / "latest") / "summary.json").read_text())
    assert [check["verdict"] for check in summary["checks"] if check["kind"] == "drill"] == ["pass"], summary
    log = drill_log(tmp_path, "redis-outage")
    assert "outcome: pass" in log and "rollback applied" in log, log
    assert "readiness 503 naming redis" in log and "every accepted message delivered" in log, log
    assert steady.environ["API_TOKEN"] not in log and steady.environ["REDIS_URL"] not in log


def test_a_redis_stop_that_does_nothing_makes_the_drill_inconclusive(steady: StandIn, tmp_path: Path) -> None:
    before = steady.history()
    target = steady.write_target(tmp_path / "staging.yaml", redis_stop="true")
    result = run(drill_args(target, tmp_path, "--allow-destructive", drill="redis-outage"), steady, tmp_path)
    assert result.returncode == EXIT_ERROR, result.stdout[-4000:] + result.stderr[-2000:]
    assert "inconclusive" in result.stdout.lower(), result.stdout[-4000:]
    assert "still 'running' after `true`" in result.stdout, result.stdout[-4000:]
    steady.assert_steady()
    steady.assert_redis_answers()
    assert steady.history()[len(before) :] == []  # Redis never stopped; the rollback's start found it running
    assert list((tmp_path / "state").glob("*.jsonl")) == []
    assert "outcome: inconclusive" in drill_log(tmp_path, "redis-outage")
