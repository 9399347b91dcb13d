"""Opt-outs (seed 001): STOP blocks the next send, DNC holds in any number format, and the rolling-100 opt-out rate.

The flows of targets/local.yaml run through ``opsgate gate`` on the session's platform, healthy and with the
defect each must catch; the opt-out window gauges are read from the api's /metrics after real STOP replies
relayed by the provider sandbox.
"""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import (
    NewTenant,
    defects_planted,
    local_target_as_external,
    metric_value,
    poll,
    run_opsgate,
)
from opsgate.environments.local import LocalEnvironment
from opsgate.reference.db import OPTOUT_WINDOW

pytestmark = pytest.mark.platform
FLOWS = "stop-blocks or dnc-blocks"


@pytest.fixture(scope="module")
def external_target(platform: LocalEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """targets/local.yaml, pointed at the session's already-running platform (nothing started)."""
    return local_target_as_external(tmp_path_factory.mktemp("target") / "standin.yaml")


def flows(platform: LocalEnvironment, target: Path, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Run the STOP and DNC flows with ``opsgate gate``; returns their summary records by id."""
    reports = tmp_path / "reports"
    result = run_opsgate(
        ["gate", "--target", str(target), "--match", FLOWS], timeout_s=120,
        env={**platform.environ(), "OPSGATE_REPORTS_DIR": str(reports)},
    )  # fmt: skip
    summary = json.loads(((reports / "latest").resolve() / "summary.json").read_text())
    assert result.returncode == (0 if summary["verdict"] == "pass" else 1), result.stdout[-2000:]
    checks = {c["id"]: c for c in summary["checks"]}
    assert set(checks) == {"flow[stop-blocks-next-send]", "flow[dnc-blocks-any-format]"}, checks.keys()
    return checks


def test_stop_blocks_the_next_send_and_dnc_holds_in_any_format(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path
) -> None:
    checks = flows(platform, external_target, tmp_path)
    assert {c["verdict"] for c in checks.values()} == {"pass"}, checks


@pytest.mark.parametrize(
    ("defect", "failing", "broken"),
    [
        # STOP acknowledged but never written to do-not-contact: the next send is accepted.
        ("stop-not-added-to-dnc", {"flow[stop-blocks-next-send]"}, "expected status 422, got 202"),
        # DNC compared on the raw number: the national-format send slips past the E.164 entry, in both flows.
        ("dnc-skips-unnormalised", {"flow[stop-blocks-next-send]", "flow[dnc-blocks-any-format]"},
         "expected status 422, got 202"),
        # The platform says delivered but never called the provider: its own record shows no delivery.
        ("worker-acks-without-send", {"flow[stop-blocks-next-send]"}, "count: expected 1, got 0"),
    ],
)  # fmt: skip
def test_each_defect_fails_the_flow_that_guards_it(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path, defect: str, failing: set[str], broken: str
) -> None:
    with defects_planted(platform, defect):
        checks = flows(platform, external_target, tmp_path)
    assert {name for name, c in checks.items() if c["verdict"] == "fail"} == failing, checks
    assert all(broken in checks[name]["message"] for name in failing), [checks[n]["message"] for n in failing]


def window(metrics_text: str, tenant_id: str) -> tuple[float, float]:
    """(messages, opt-outs) of a tenant's rolling window, from an exposition text."""
    labels = {"tenant": tenant_id}
    return metric_value(metrics_text, "sms_window_messages", labels), metric_value(
        metrics_text, "sms_window_optouts", labels
    )


def rule_fires(messages: float, optouts: float) -> bool:
    """platform.yml's OptOutRateHigh on one tenant's values: a full window and more than 3% opted out."""
    return messages >= OPTOUT_WINDOW and optouts / messages > 0.03


async def test_the_opt_out_window_rolls_with_messages_not_time(
    platform: LocalEnvironment, api: httpx.AsyncClient, sandbox: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    """100 delivered SMS, then real STOP replies from the 4 oldest recipients: 3 of 100 is not over 3%, 4 of 100
    is; one more SMS rolls the oldest out (4 of 99 + 1 new = 3 of 100) and the rate is back under."""
    tenant = await new_tenant(sending_number=f"+614000{secrets.randbelow(10**5):05d}")
    prefix = f"+6141{secrets.randbelow(10):d}{secrets.randbelow(10**3):03d}"  # one number range per run
    numbers = [f"{prefix}{n:03d}" for n in range(OPTOUT_WINDOW + 1)]
    for number in numbers[:OPTOUT_WINDOW]:
        body = {"channel": "sms", "to": number, "body": f"window {uuid.uuid4().hex}"}
        response = await api.post(f"/v1/tenants/{tenant['id']}/messages", headers=tenant["headers"], json=body)
        assert response.status_code == 202, response.text

    async def scraped() -> tuple[float, float]:
        return window((await api.get("/metrics")).text, tenant["id"])

    await poll(scraped, lambda w: w[0] == OPTOUT_WINDOW, what="100 SMS delivered into the window", timeout_s=60)
    assert not rule_fires(*await scraped())

    async def stop(number: str) -> None:
        relayed = await sandbox.post("/control/inbound", json={"from": number, "to": tenant["sending_number"],
                                                               "body": "STOP"})  # fmt: skip
        assert relayed.status_code == 200 and relayed.json()["response"]["action"] == "opted_out", relayed.text

    for number in numbers[:3]:
        await stop(number)
    assert await scraped() == (100, 3) and not rule_fires(100, 3)  # exactly 3%: not "> 3%"
    await stop(numbers[3])
    assert await scraped() == (100, 4) and rule_fires(100, 4)

    response = await api.post(f"/v1/tenants/{tenant['id']}/messages", headers=tenant["headers"],
                              json={"channel": "sms", "to": numbers[-1], "body": "one more"})  # fmt: skip
    assert response.status_code == 202
    rolled = await poll(scraped, lambda w: w[1] == 3, what="the oldest opted-out recipient rolled out", timeout_s=30)
    assert rolled == (100, 3) and not rule_fires(*rolled)
