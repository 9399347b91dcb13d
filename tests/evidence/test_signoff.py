"""``opsgate signoff``: bundles of real gate, drill and load runs; missing, stale and failing evidence; tampering
of every kind detected by ``--verify``; regressions against the previous sign-off; the HMAC key never shown."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from helpers import local_target_as_external, run_opsgate
from opsgate.environments.local import LocalEnvironment
from opsgate.evidence.manifest import Figure, bundle_digest, digest_path, scan
from opsgate.evidence.signoff import ERROR_RATE_FLOOR, find_regressions

DAY_S = 86400.0
KEY = "signoff-key-canary-7f3a9c"
DIGEST = re.compile(r"^opsgate: bundle digest (sha256:[0-9a-f]{64})$", re.MULTILINE)


@pytest.fixture(scope="module")
def standin(platform: LocalEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """targets/local.yaml pointed at the session's running platform (nothing started)."""
    return local_target_as_external(tmp_path_factory.mktemp("target") / "standin.yaml")


@pytest.fixture(scope="module")
def real_runs(platform: LocalEnvironment, standin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reports folder holding one real run of each kind: ``gate --only smoke``, the maintenance-mode drill,
    and the readiness SLO row's short stage, all against the running platform."""
    base = tmp_path_factory.mktemp("signoff-runs")
    env = {**platform.environ(), "OPSGATE_REPORTS_DIR": str(base / "reports"), "OPSGATE_STATE_DIR": str(base / "s")}
    target = ["--target", str(standin)]
    commands = [
        ["gate", *target, "--only", "smoke"],
        ["drill", *target, "--match", "maintenance-mode", "--chaos", str(base / "no-chaos"),
         "--drill-logs", str(base / "drills")],
        ["load", *target, "--short", "--match", "readiness"],
    ]  # fmt: skip
    for args in commands:
        result = run_opsgate(args, timeout_s=240, env=env)
        assert result.returncode == 0, f"opsgate {' '.join(args)}:\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
    return base / "reports"


def reports_copy(real_runs: Path, tmp_path: Path) -> Path:
    """This test's own copy of the real runs (without the ``latest`` link), free to change."""
    reports = tmp_path / "reports"
    shutil.copytree(real_runs, reports, ignore=lambda folder, names: ["latest"] if folder == str(real_runs) else [])
    return reports


def run_of(reports: Path, kind: str) -> Path:
    """The run folder of ``kind`` (gate, drill, load) in a reports folder."""
    found = [p.parent for p in reports.glob("*/summary.json") if json.loads(p.read_text())["info"]["run kind"] == kind]
    assert len(found) == 1, found
    return found[0]


def edit_summary(run: Path, edit: Any) -> None:
    path = run / "summary.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def signoff(platform: LocalEnvironment, standin: Path, reports: Path, *args: str,
            key: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    env = {**platform.environ(), "OPSGATE_REPORTS_DIR": str(reports)}
    if key is not None:
        env["OPSGATE_SIGNOFF_KEY"] = key
    result: subprocess.CompletedProcess[str] = run_opsgate(["signoff", "--target", str(standin), *args], timeout_s=120,
                                                           env=env)  # fmt: skip
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def verify(bundle: Path, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"OPSGATE_SIGNOFF_KEY": key or ""}
    result: subprocess.CompletedProcess[str] = run_opsgate(["signoff", "--verify", str(bundle), *args], timeout_s=60,
                                                           env=env)  # fmt: skip
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def printed_digest(result: subprocess.CompletedProcess[str]) -> str:
    match = DIGEST.search(result.stdout)
    assert match, result.stdout
    return match.group(1)


def manifest_of(bundle: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((bundle / "manifest.json").read_text())
    return data


@pytest.fixture(scope="module")
def pristine(platform: LocalEnvironment, standin: Path, real_runs: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:  # fmt: skip
    """One signed bundle (key: :data:`KEY`) of the real runs, and the digest it printed; tests copy it."""
    reports = reports_copy(real_runs, tmp_path_factory.mktemp("pristine"))
    result = signoff(platform, standin, reports, "--release", "v1.0", key=KEY)
    assert result.returncode == 0, result.stdout + result.stderr
    return reports / "signoff" / "v1.0", printed_digest(result)


@pytest.fixture
def bundle(pristine: tuple[Path, str], tmp_path: Path) -> Path:
    """This test's copy of the pristine bundle and its digest file (a copy verifies: paths are relative)."""
    source, _ = pristine
    shutil.copytree(source, tmp_path / "signoff" / source.name)
    shutil.copy2(digest_path(source), tmp_path / "signoff")
    return tmp_path / "signoff" / source.name


def test_a_bundle_of_fresh_passing_runs_is_signed_off_and_verifies(
    platform: LocalEnvironment, standin: Path, real_runs: Path, tmp_path: Path
) -> None:
    reports = reports_copy(real_runs, tmp_path)
    result = signoff(platform, standin, reports, "--release", "2024.06-rc1")
    assert result.returncode == 0, result.stdout + result.stderr
    bundle = reports / "signoff" / "2024.06-rc1"
    manifest = manifest_of(bundle)
    assert manifest["signed_off"] is True and manifest["problems"] == [] and manifest["missing"] == []
    assert [(r["kind"], r["verdict"], r["stale"]) for r in manifest["runs"]] == [
        ("gate", "pass", False), ("drill", "pass", False), ("load", "pass", False)]  # fmt: skip
    for entry in manifest["runs"]:
        source = run_of(reports, entry["kind"])
        assert entry["run_id"] == source.name and 0 < entry["age_s"] < 3600
        folder = bundle / entry["path"]
        copied = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
        assert copied == sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())  # the whole run
    assert (bundle / "runs/drill/drills").is_dir() and any((bundle / "runs/load/slo/readiness").glob("locust*"))
    assert manifest["tool_versions"]["run kind"] == "gate" and manifest["tool_versions"]["opsgate version"]
    # Every file but the manifest is listed with its real sha256 and size.
    listed = {f["path"]: (f["sha256"], f["size"]) for f in manifest["files"]}
    on_disk = {p.relative_to(bundle).as_posix(): p for p in bundle.rglob("*") if p.is_file()}
    assert set(listed) == set(on_disk) - {"manifest.json"} and "SUMMARY.md" in listed
    for path, (sha, size) in listed.items():
        assert (hashlib.sha256(on_disk[path].read_bytes()).hexdigest(), on_disk[path].stat().st_size) == (sha, size)
    # The digest is printed and kept beside the bundle, not in it.
    digest = printed_digest(result)
    assert digest_path(bundle).read_text().split() == [digest] and digest not in (bundle / "manifest.json").read_text()
    slo = {f["check"]: f for f in manifest["figures"]}["slo[readiness]"]
    assert slo["run"] == "load" and slo["stage"] == "short" and slo["p95_ms"] > 0 and slo["error_rate"] == 0
    summary = (bundle / "SUMMARY.md").read_text()
    assert summary.startswith("# Sign-off `2024.06-rc1` — SIGNED OFF")
    assert "| load | `slo[readiness]` | short | PASS |" in summary and "No previous sign-off" in summary
    # Untouched, it verifies against the digest file and against the printed digest.
    assert verify(bundle).returncode == 0
    checked = verify(bundle, "--expect-digest", digest)
    assert checked.returncode == 0 and f"digest {digest} matches --expect-digest" in checked.stdout
    assert verify(bundle, "--expect-digest", "sha256:" + "0" * 64).returncode == 1


def test_a_missing_kind_is_listed_and_fails_the_signoff(
    platform: LocalEnvironment, standin: Path, real_runs: Path, tmp_path: Path
) -> None:
    reports = reports_copy(real_runs, tmp_path)
    shutil.rmtree(run_of(reports, "load"))
    result = signoff(platform, standin, reports, "--release", "r1")
    assert result.returncode == 1
    assert result.stderr.strip() == "opsgate: sign-off r1: NOT signed off — missing load"
    bundle = reports / "signoff" / "r1"
    manifest = manifest_of(bundle)
    assert manifest["signed_off"] is False and manifest["missing"] == ["load"]
    assert [r["kind"] for r in manifest["runs"]] == ["gate", "drill"] and not (bundle / "runs/load").exists()
    summary = (bundle / "SUMMARY.md").read_text()
    assert "NOT SIGNED OFF" in summary and "| load | — | **MISSING** |" in summary
    assert "- missing: no load run of target 'reference-local'" in summary
    assert verify(bundle).returncode == 0  # written in full all the same: an intact (refused) bundle


def test_a_stale_run_fails_the_signoff_unless_max_age_allows_it(
    platform: LocalEnvironment, standin: Path, real_runs: Path, tmp_path: Path
) -> None:
    reports = reports_copy(real_runs, tmp_path)
    old = datetime.fromtimestamp(time.time() - 8 * DAY_S, UTC).isoformat()
    edit_summary(run_of(reports, "gate"), lambda data: data.update(started_at=old, finished_at=old))
    result = signoff(platform, standin, reports, "--release", "r1", "--max-age", "7d")
    assert result.returncode == 1 and "stale gate (8.0d old)" in result.stderr
    gate = manifest_of(reports / "signoff" / "r1")["runs"][0]
    assert gate["kind"] == "gate" and gate["stale"] is True and 8 * DAY_S <= gate["age_s"] < 8 * DAY_S + 3600
    assert "**STALE**" in (reports / "signoff" / "r1" / "SUMMARY.md").read_text()
    assert signoff(platform, standin, reports, "--release", "r2", "--max-age", "9d").returncode == 0


def test_a_failing_run_fails_the_signoff_and_its_checks_are_listed(
    platform: LocalEnvironment, standin: Path, real_runs: Path, tmp_path: Path
) -> None:
    reports = reports_copy(real_runs, tmp_path)

    def fail_the_drill(data: dict[str, Any]) -> None:
        data["verdict"], data["counts"] = "fail", {"fail": 1}
        data["checks"][0].update(verdict="fail", message="writes were accepted during maintenance")

    edit_summary(run_of(reports, "drill"), fail_the_drill)
    result = signoff(platform, standin, reports, "--release", "r1")
    assert result.returncode == 1 and result.stderr.strip().endswith("NOT signed off — drill fail")
    summary = (reports / "signoff" / "r1" / "SUMMARY.md").read_text()
    assert "- drill `drill[maintenance-mode]` FAIL: writes were accepted during maintenance" in summary


def tamper_changed(bundle: Path) -> str:
    path = bundle / "runs/gate/summary.json"
    text = path.read_text()
    path.write_text(text.replace('"verdict": "pass"', '"verdict": "fail"', 1))
    assert path.read_text() != text
    return "changed: runs/gate/summary.json"


def tamper_added(bundle: Path) -> str:
    (bundle / "runs/gate/extra.log").write_text("planted\n")
    return "added: runs/gate/extra.log"


def tamper_removed(bundle: Path) -> str:
    (log,) = (bundle / "runs/drill/drills").glob("*.md")
    log.unlink()
    return f"removed: runs/drill/drills/{log.name}"


def rewrite_consistently(bundle: Path) -> None:
    """Change a file and rewrite the manifest to match it, as someone covering their tracks would."""
    junit = bundle / "runs/load/junit.xml"
    junit.write_text(junit.read_text().replace('failures="0"', 'failures="0" edited="1"'))
    manifest = manifest_of(bundle)
    for entry in manifest["files"]:
        if entry["path"] == "runs/load/junit.xml":
            entry.update(sha256=hashlib.sha256(junit.read_bytes()).hexdigest(), size=junit.stat().st_size)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def tamper_manifest_rewritten(bundle: Path) -> str:
    rewrite_consistently(bundle)
    return "digest mismatch: the bundle's digest is sha256:"


def tamper_manifest_only(bundle: Path) -> str:
    manifest = manifest_of(bundle)
    manifest["runs"][1]["verdict"] = "pass (re-run by hand)"  # the files untouched, only what the manifest says
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return "digest mismatch: the bundle's digest is sha256:"


@pytest.mark.parametrize("tamper", [tamper_changed, tamper_added, tamper_removed, tamper_manifest_rewritten,
                                    tamper_manifest_only],
                         ids=["changed", "added", "removed", "manifest-rewritten", "manifest-only"])  # fmt: skip
def test_tampering_is_detected(bundle: Path, tamper: Any) -> None:
    assert verify(bundle).returncode == 0
    expected = tamper(bundle)
    result = verify(bundle)
    assert result.returncode == 1, result.stdout
    problems = result.stdout.strip().splitlines()
    assert any(line.startswith(f"opsgate: verify: {expected}") for line in problems), result.stdout
    assert result.stderr.strip().startswith(f"opsgate: verify: {bundle}: NOT intact")
    # Whatever was done, the bundle digest moved away from the one printed at sign-off.
    assert "digest mismatch" in result.stdout


def test_a_rewritten_digest_file_is_caught_by_the_printed_digest_and_the_hmac(
    bundle: Path, pristine: tuple[Path, str]
) -> None:
    _, printed = pristine
    rewrite_consistently(bundle)
    files, _ = scan(bundle, exclude_manifest=False)
    recorded = digest_path(bundle).read_text().split()
    digest_path(bundle).write_text(f"{bundle_digest(files)}\n{recorded[1]}\n")  # the attacker cannot redo the HMAC
    assert verify(bundle).returncode == 0  # the digest file alone cannot vouch for itself: hence the other two
    by_digest = verify(bundle, "--expect-digest", printed)
    assert by_digest.returncode == 1 and f"--expect-digest gave {printed}" in by_digest.stdout
    by_key = verify(bundle, key=KEY)
    assert by_key.returncode == 1 and "opsgate: verify: HMAC mismatch" in by_key.stdout


def test_the_hmac_is_checked_with_the_key_and_the_key_is_never_shown(bundle: Path, pristine: tuple[Path, str]) -> None:
    source, _ = pristine
    ok = verify(bundle, key=KEY)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("HMAC matches")
    wrong = verify(bundle, key=KEY + "x")
    assert wrong.returncode == 1 and "HMAC mismatch" in wrong.stdout
    unkeyed = verify(bundle)
    assert unkeyed.returncode == 0 and "HMAC is recorded but $OPSGATE_SIGNOFF_KEY is not set" in unkeyed.stdout
    assert digest_path(bundle).read_text().split()[1].startswith("hmac-sha256:")
    outputs = ok.stdout + ok.stderr + wrong.stdout + wrong.stderr
    written = [p for p in source.parent.rglob("*") if p.is_file()]
    assert digest_path(source) in written and KEY not in outputs
    assert not [p for p in written if KEY.encode() in p.read_bytes()]


def test_neither_the_key_nor_a_target_secret_is_in_the_signoff_output(
    platform: LocalEnvironment, standin: Path, real_runs: Path, tmp_path: Path
) -> None:
    reports = reports_copy(real_runs, tmp_path)
    token = platform.credentials.api_token  # a secret of the target file (secrets: [API_TOKEN, ...])
    (run_of(reports, "gate") / "planted.log").write_text(f"Authorization: Bearer {token}\n")
    result = signoff(platform, standin, reports, "--release", "r1", key=KEY)
    assert result.returncode == 0 and "HMAC-SHA256 keyed by $OPSGATE_SIGNOFF_KEY" in result.stdout
    assert KEY not in result.stdout + result.stderr and token not in result.stdout + result.stderr
    written = [p for p in (reports / "signoff").rglob("*") if p.is_file()]
    assert not [p for p in written if KEY.encode() in p.read_bytes() or token.encode() in p.read_bytes()]
    bundle = reports / "signoff" / "r1"
    assert "[REDACTED]" in (bundle / "runs/gate/planted.log").read_text()
    assert "Secrets of the target were masked in 1 copied file(s)." in (bundle / "SUMMARY.md").read_text()


def test_a_missing_digest_file_fails_verification(bundle: Path) -> None:
    digest_path(bundle).unlink()
    result = verify(bundle)
    assert result.returncode == 1 and "no digest to compare with" in result.stdout


def slo_figures(run: Path, p95: Any = None, error_rate: float | None = None) -> None:
    def edit(data: dict[str, Any]) -> None:
        (check,) = data["checks"]
        if p95 is not None:
            check["figures"]["p95_ms"] = check["measured"] = p95(check["figures"]["p95_ms"])
        if error_rate is not None:
            check["figures"]["error_rate"] = error_rate

    edit_summary(run, edit)


def test_regressions_against_the_previous_signoff(
    platform: LocalEnvironment, standin: Path, real_runs: Path, tmp_path: Path
) -> None:
    reports = reports_copy(real_runs, tmp_path)
    assert signoff(platform, standin, reports, "--release", "r1").returncode == 0
    base_p95 = manifest_of(reports / "signoff" / "r1")["figures"][0]["p95_ms"]
    load = run_of(reports, "load")
    slo_figures(load, p95=lambda v: round(v * 1.05, 3))  # within the 10% margin
    within = signoff(platform, standin, reports, "--release", "r2")
    assert within.returncode == 0, within.stdout + within.stderr
    summary = (reports / "signoff" / "r2" / "SUMMARY.md").read_text()
    assert "Previous: `r1`" in summary
    assert "No p95 or error-rate regression beyond 10% (1 figure(s) compared)" in summary
    slo_figures(load, p95=lambda v: round(v * 1.5 + 2, 3), error_rate=0.02)  # r2 is now the previous one
    beyond = signoff(platform, standin, reports, "--release", "r3")
    assert beyond.returncode == 1 and "2 regression(s) beyond 10%" in beyond.stderr
    manifest = manifest_of(reports / "signoff" / "r3")
    assert manifest["previous"]["release"] == "r2" and manifest["previous"]["digest"].startswith("sha256:")
    assert [(r["check"], r["measure"]) for r in manifest["regressions"]] == [
        ("slo[readiness]", "p95_ms"), ("slo[readiness]", "error_rate")]  # fmt: skip
    assert manifest["regressions"][0]["previous"] == round(base_p95 * 1.05, 3)
    summary = (reports / "signoff" / "r3" / "SUMMARY.md").read_text()
    assert "- **load slo[readiness] p95 " in summary
    assert "- **load slo[readiness] error rate 0.0000% → 2.0000%" in summary
    # A previous sign-off that does not verify is not compared with, and says so.
    (reports / "signoff" / "r3" / "SUMMARY.md").write_text("rewritten\n")
    refused = signoff(platform, standin, reports, "--release", "r4")
    assert refused.returncode == 1 and "the previous sign-off does not verify" in refused.stderr
    assert manifest_of(reports / "signoff" / "r4")["regressions"] == []


def figure(p95: float | None, error_rate: float | None, stage: str | None = "full") -> Figure:
    return Figure(run="load", check="slo[send-message]", stage=stage, verdict="pass", p95_ms=p95,
                  error_rate=error_rate, count=5000)  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "margin", "flagged"),
    [
        (figure(200.0, 0.0), figure(219.0, 0.0), 0.10, []),  # +9.5%: within
        (figure(200.0, 0.0), figure(221.0, 0.0), 0.10, ["p95_ms"]),  # +10.5%: beyond
        (figure(200.0, 0.0), figure(221.0, 0.0), 0.20, []),  # the margin is the caller's
        (figure(1.0, 0.0), figure(1.5, 0.0), 0.10, []),  # +50% but 0.5 ms: timer noise, under the floor
        (figure(200.0, 0.0), figure(200.0, ERROR_RATE_FLOOR / 2), 0.10, []),  # from 0: a tiny rise is not enough
        (figure(200.0, 0.0), figure(200.0, 0.004), 0.10, ["error_rate"]),  # from 0: 1 error in 250
        (figure(200.0, 0.010), figure(200.0, 0.0105), 0.10, []),  # +5%
        (figure(200.0, 0.010), figure(200.0, 0.0125), 0.10, ["error_rate"]),  # +25%, +0.25 points
        (figure(200.0, 0.0), figure(400.0, 0.5, stage="short"), 0.10, []),  # another stage: not compared
        (figure(None, None), figure(400.0, 0.5), 0.10, []),  # nothing to compare with
    ],
)
def test_regression_rule(old: Figure, new: Figure, margin: float, flagged: list[str]) -> None:
    assert [r.measure for r in find_regressions([old], [new], margin)] == flagged


def test_bad_input_is_one_line_and_exit_2(
    platform: LocalEnvironment, standin: Path, real_runs: Path, tmp_path: Path
) -> None:
    reports = reports_copy(real_runs, tmp_path)
    bad_name = signoff(platform, standin, reports, "--release", "../escape")
    assert bad_name.returncode == 2 and bad_name.stderr.count("\n") == 1
    assert bad_name.stderr.startswith("opsgate: signoff: --release: expected a name of letters") and not (
        reports / "escape").exists()  # fmt: skip
    assert signoff(platform, standin, reports, "--release", "r1").returncode == 0
    again = signoff(platform, standin, reports, "--release", "r1")
    assert again.returncode == 2 and "already exists and is not empty" in again.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nenvironment: staging\nprovider: external\nservices: 3\n")
    bad_target = run_opsgate(["signoff", "--release", "r9", "--target", str(broken)], timeout_s=60,
                             env={"OPSGATE_REPORTS_DIR": str(reports)})  # fmt: skip
    assert bad_target.returncode == 2 and bad_target.stderr.startswith(f"opsgate: {broken}: services")
    assert bad_target.stderr.count("\n") == 1 and not (reports / "signoff" / "r9").exists()
    nowhere = verify(tmp_path / "nowhere")
    assert nowhere.returncode == 2 and "no such folder" in nowhere.stderr
    both = run_opsgate(["signoff", "--release", "r1", "--verify", str(tmp_path)], timeout_s=60)
    assert both.returncode == 2 and "exactly one of --release NAME or --verify DIR" in both.stderr


def test_out_puts_the_bundle_and_its_digest_elsewhere(
    platform: LocalEnvironment, standin: Path, real_runs: Path, tmp_path: Path
) -> None:
    reports = reports_copy(real_runs, tmp_path)
    out = tmp_path / "elsewhere" / "bundle"
    result = signoff(platform, standin, reports, "--release", "r1", "--out", str(out))
    assert result.returncode == 0 and (out / "manifest.json").is_file()
    assert digest_path(out) == tmp_path / "elsewhere" / "bundle.digest" and digest_path(out).is_file()
    assert not (reports / "signoff").exists() and verify(out).returncode == 0
