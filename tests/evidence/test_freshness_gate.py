"""Freshness gates through ``opsgate gate`` on an external target: old, fresh, failing-but-fresh, missing."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from helpers import run_opsgate
from opsgate.environments.local import LocalEnvironment

DAY_S = 86400.0


def drill_log(folder: Path, name: str, outcome: str, age_s: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    finished = datetime.fromtimestamp(time.time() - age_s, UTC).isoformat()
    (folder / f"{name}.md").write_text(
        f"---\ndrill: worker-to-zero\noutcome: {outcome}\nfinished_at: {finished}\n---\n# Drill\n"
    )


def test_freshness_verdicts_on_an_external_target(platform: LocalEnvironment, tmp_path: Path) -> None:
    logs = tmp_path / "drills"
    drill_log(logs / "old" / "staging", "20250101-000000-worker-to-zero", "pass", 8 * DAY_S)
    drill_log(logs / "fresh" / "staging", "20250101-000000-worker-to-zero", "pass", 1 * DAY_S)
    drill_log(logs / "failing" / "staging", "20250101-000000-worker-to-zero", "pass", 9 * DAY_S)
    drill_log(logs / "failing" / "staging", "20250108-000000-worker-to-zero", "fail", 1 * DAY_S)
    entries = "".join(
        f"  - {{name: {case}, drill_logs: {{dir: '{logs / case}', environment: staging}}, max_age: 7d}}\n"
        for case in ("old", "fresh", "failing", "missing")
    )
    target = tmp_path / "staging.yaml"
    target.write_text(
        "name: staging-standin\nenvironment: staging\nprovider: external\n"
        f"services:\n  api:\n    url: {platform.api_url}\n    health: [{{path: /healthz}}]\n"
        f"freshness:\n{entries}"
    )
    run = run_opsgate(["gate", "--target", str(target)], timeout_s=120,
                      env={"OPSGATE_REPORTS_DIR": str(tmp_path / "reports")})  # fmt: skip
    summary = json.loads(((tmp_path / "reports" / "latest").resolve() / "summary.json").read_text())
    checks = {c["id"]: c for c in summary["checks"]}
    assert checks["health[api:/healthz]"]["verdict"] == "pass"  # external: nothing started, the stand-in answers
    assert checks["freshness[fresh]"]["verdict"] == "pass"
    assert checks["freshness[old]"]["verdict"] == "fail"  # 8 days > 7 days
    assert checks["freshness[failing]"]["verdict"] == "fail"  # the fresh log failed; the newest pass is 9 days old
    assert checks["freshness[missing]"]["verdict"] == "fail"
    assert "no passing drill log" in checks["freshness[missing]"]["message"]
    assert run.returncode == 1 and summary["verdict"] == "fail"
