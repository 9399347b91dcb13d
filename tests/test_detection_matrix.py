"""bench/detection_matrix.py on three defects, each with only its pre-declared check: caught by that check, the
healthy run passes, and the last line is the matrix's verdict.

The three take each path of the matrix: a flow of the gate (budget-not-enforced), an alert-rule defect that drifts
the rules the shared Prometheus runs (reloaded on the restart), and a declared drill on a platform of its own
(rotation-keeps-old-secret).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from opsgate.reference.defects import CATALOGUE

ROOT = Path(__file__).resolve().parents[1]
DEFECTS = ["budget-not-enforced", "alert-threshold-drifted", "rotation-keeps-old-secret"]
TIMEOUT_S = 600


def test_three_defects_each_caught_by_its_check_and_the_healthy_run_passes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "detection_matrix.py"), "--defects", ",".join(DEFECTS),
         "--healthy-runs", "1", "--only-expected", "--out", str(tmp_path / "matrix")],
        capture_output=True, text=True, timeout=TIMEOUT_S, env={**os.environ}, cwd=ROOT, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert result.stdout.splitlines()[-1] == "detected 3/3, false alarms 0 over 1 healthy runs", output[-4000:]
    record = json.loads((tmp_path / "matrix" / "matrix.json").read_text())
    assert record["finished"] and record["false_alarms"] == []
    rows = {row["defect"]: row for row in record["rows"]}
    assert list(rows) == DEFECTS
    for name in DEFECTS:
        assert rows[name]["check"] == CATALOGUE[name].check
        assert (rows[name]["result"], rows[name]["expected_verdict"]) == ("caught", "fail"), rows[name]
    assert "Prometheus runs threshold 1.5, the file says 0.75" in rows["alert-threshold-drifted"]["message"]
    assert "old signature refused after the switch" in rows["rotation-keeps-old-secret"]["message"]


def test_an_unknown_defect_is_one_line_naming_the_option() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "detection_matrix.py"), "--defects", "no-such-defect"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--defects: unknown defect 'no-such-defect'; known: " in result.stderr.splitlines()[-1]
