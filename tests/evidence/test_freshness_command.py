"""``opsgate freshness --env ENV --max-age AGE``: old, fresh, failing-but-fresh and missing drill logs."""

from __future__ import annotations

import time
from pathlib import Path

from helpers import run_opsgate
from opsgate.evidence.drill_logs import drill_log_path, render_drill_log
from opsgate.evidence.records import CheckRecord, TimelineEvent

DAY_S = 86400.0


def write_log(folder: Path, environment: str, outcome: str, age_s: float, drill: str = "worker-to-zero") -> Path:
    """A drill log as ``opsgate drill`` writes it (same renderer and file name), finished ``age_s`` ago."""
    finished = time.time() - age_s
    steps = [TimelineEvent(finished - 30, "steady state"), TimelineEvent(finished, "restored")]
    record = CheckRecord(id=f"drill[{drill}]", kind="drill", verdict=outcome, message="steady state restored",
                         started_at=finished - 30, finished_at=finished, timeline=steps)  # fmt: skip
    path = drill_log_path(folder, environment, record.id, finished - 30)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_drill_log(record, target="staging-standin", environment=environment, objective="drill",
                                     snapshots={}, seeds={}))  # fmt: skip
    return path


def freshness(folder: Path, *args: str) -> tuple[int, str, str]:
    result = run_opsgate(["freshness", "--drill-logs", str(folder), *args], timeout_s=60)
    return result.returncode, result.stdout.strip(), result.stderr.strip()


def test_fresh_passes_naming_the_log_and_its_age(tmp_path: Path) -> None:
    log = write_log(tmp_path, "staging", "pass", 1 * DAY_S)
    write_log(tmp_path, "production", "pass", 30 * DAY_S)  # another environment's log is not looked at
    code, out, err = freshness(tmp_path, "--env", "staging", "--max-age", "7d")
    assert code == 0, out + err
    assert out == f"opsgate: freshness: fresh: newest passing drill log for staging is 1.0d old (max 7.0d): {log}"


def test_old_fails_with_its_age_and_passes_under_a_longer_max_age(tmp_path: Path) -> None:
    write_log(tmp_path, "staging", "pass", 12 * DAY_S)
    log = write_log(tmp_path, "staging", "pass", 9 * DAY_S)
    code, out, _ = freshness(tmp_path, "--env", "staging", "--max-age", "7d")
    assert code == 1
    assert out == f"opsgate: freshness: stale: newest passing drill log for staging is 9.0d old (max 7.0d): {log}"
    code, out, _ = freshness(tmp_path, "--env", "staging", "--max-age", "10d")
    assert code == 0 and "9.0d old (max 10.0d)" in out


def test_failing_but_fresh_does_not_count(tmp_path: Path) -> None:
    passing = write_log(tmp_path, "staging", "pass", 9 * DAY_S)
    failing = write_log(tmp_path, "staging", "fail", 1 * DAY_S)
    code, out, _ = freshness(tmp_path, "--env", "staging", "--max-age", "7d")
    assert code == 1
    assert out.startswith(f"opsgate: freshness: stale: newest passing drill log for staging is 9.0d old "
                          f"(max 7.0d): {passing}")  # fmt: skip
    assert f"a newer log did not pass: {failing} (outcome fail, 1.0d old)" in out


def test_only_failing_logs_mean_no_passing_log(tmp_path: Path) -> None:
    write_log(tmp_path, "staging", "fail", 3 * DAY_S)
    newest = write_log(tmp_path, "staging", "aborted", 1 * DAY_S)
    code, out, _ = freshness(tmp_path, "--env", "staging")
    assert code == 1
    assert out.startswith("opsgate: freshness: missing: no passing drill log for staging (2 readable log(s) in ")
    assert f"newest log: {newest} (drill drill[worker-to-zero], outcome aborted, 1.0d old)" in out


def test_missing_folder_is_no_passing_log(tmp_path: Path) -> None:
    code, out, err = freshness(tmp_path / "nowhere", "--env", "staging", "--max-age", "7d")
    assert code == 1, err
    folder = tmp_path / "nowhere" / "staging"
    assert out == f"opsgate: freshness: missing: no passing drill log for staging ({folder} does not exist)"


def test_unreadable_front_matter_is_skipped_with_a_warning(tmp_path: Path) -> None:
    good = write_log(tmp_path, "staging", "pass", 2 * DAY_S)
    broken = tmp_path / "staging" / "20990101-000000-broken.md"
    broken.write_text("---\noutcome: pass\nfinished_at: [not a time\n---\n# Drill\n")
    plain = tmp_path / "staging" / "20990101-000001-notes.md"
    plain.write_text("# just notes, no front matter\n")
    code, out, err = freshness(tmp_path, "--env", "staging")
    assert code == 0 and str(good) in out
    warnings = err.splitlines()
    assert len(warnings) == 2 and all(w.startswith("opsgate: warning: ") for w in warnings), err
    assert str(broken) in warnings[0] and "skipped" in warnings[0] and str(plain) in warnings[1]


def test_bad_max_age_or_env_is_one_line_and_exit_2(tmp_path: Path) -> None:
    code, _, err = freshness(tmp_path, "--env", "staging", "--max-age", "7 days")
    assert code == 2 and err == "opsgate: --max-age: expected a duration like '7d' or '30m', got '7 days'"
    code, _, err = freshness(tmp_path, "--env", "../staging")
    assert code == 2 and err == "opsgate: --env: expected an environment name like 'staging', got '../staging'"
