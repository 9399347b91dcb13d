"""The claims registry: it loads, quotes its runbooks verbatim, lists every cited id; the coverage state rules."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from helpers import run_opsgate
from opsgate.config import LOCAL_TARGET, Target, TargetError, load_target, parse_target
from opsgate.environments.launch import Launcher
from opsgate.evidence.claims import (
    Claim,
    Registry,
    citations,
    coverage_for_records,
    coverage_for_runs,
    load_registry,
    registry_for,
)
from opsgate.evidence.coverage import ClaimCoverage
from opsgate.evidence.records import CheckRecord, Verdict
from opsgate.evidence.rundir import Run
from opsgate.evidence.summary import RunSummary

REPO = Path(__file__).resolve().parents[2]
REGISTRY = LOCAL_TARGET.parent.parent / "reference" / "claims.yaml"
RUNBOOKS = REGISTRY.parent / "runbooks"
CLAIM_ID = re.compile(r"\bseed-\d{3}(?:\.[a-z0-9-]+)+")
DAY_S = 86400.0
NOW = 1_750_000_000.0


def normalised(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(REGISTRY)


@pytest.fixture(scope="module")
def local_target(tmp_path_factory: pytest.TempPathFactory) -> Target:
    return Launcher(LOCAL_TARGET, tmp_path_factory.mktemp("logs")).target


# --- the reference registry ---------------------------------------------------------------------


def test_registry_covers_the_five_runbooks(registry: Registry) -> None:
    runbooks = sorted(path.name for path in RUNBOOKS.glob("*.txt"))
    assert len(runbooks) == 5
    assert sorted({claim.runbook for claim in registry.claims}) == runbooks  # every runbook has claims
    assert len(registry.ids()) == len(registry.claims)
    for claim in registry.claims:
        assert claim.out_of_scope is None or len(claim.out_of_scope.split()) >= 4, claim  # a reason, not a flag


def test_every_quote_occurs_in_its_runbook_under_its_heading(registry: Registry) -> None:
    """Checked on the raw files here, independently of the loader's own section-scoped check."""
    texts = {path.name: path.read_text(encoding="utf-8") for path in RUNBOOKS.glob("*.txt")}
    for claim in registry.claims:
        text = texts[claim.runbook]
        assert normalised(claim.quote) in normalised(text), f"{claim.id}: quote not in {claim.runbook}"
        heading = re.compile(r"#{1,6}\s+" + re.escape(claim.section) + r"\s*")
        assert any(heading.fullmatch(line) for line in text.splitlines()), f"{claim.id}: no heading {claim.section!r}"
        start = next(i for i, line in enumerate(text.splitlines()) if heading.fullmatch(line))
        assert normalised(claim.quote) in normalised("\n".join(text.splitlines()[start:])), f"{claim.id}: above §"


def test_every_cited_claim_id_is_in_the_registry(registry: Registry) -> None:
    """local.yaml, the staging example, the Python drills of chaos/ and the generic suite."""
    files = [LOCAL_TARGET, REPO / "targets" / "staging.example.yaml", *sorted((REPO / "chaos").glob("*.py")),
             *sorted((LOCAL_TARGET.parent.parent / "suite").glob("*.py"))]  # fmt: skip
    cited = {(path.name, found) for path in files for found in CLAIM_ID.findall(path.read_text())}
    drills = {
        m for path in (REPO / "chaos").glob("*.py") for m in re.findall(r'drill\.claim = "([^"]+)"', path.read_text())
    }
    assert len(drills) >= 7 and drills <= {claim_id for _, claim_id in cited}  # the pattern finds the drills' ids
    assert len(cited) >= 45
    unknown = sorted((name, claim_id) for name, claim_id in cited if claim_id not in registry.ids())
    assert not unknown, unknown


def test_the_local_target_cites_through_its_registry(local_target: Target, registry: Registry) -> None:
    found = registry_for(local_target)
    assert found is not None and found.claims == registry.claims
    paths = dict(citations(local_target))
    assert paths["services.api.health[1].claim"] == "seed-004.health.api-liveness"
    assert paths["drills[0].claim"] == "seed-002.drills.worker-to-zero"
    assert paths["alerts.thresholds[0].claim"] == "seed-002.alerts.api-p95"


def test_alert_threshold_rows_quote_what_their_claim_quotes(local_target: Target, registry: Registry) -> None:
    claims = {claim.id: claim for claim in registry.claims}
    assert local_target.alerts.thresholds
    for row in local_target.alerts.thresholds:
        assert row.claim is not None
        claim = claims[row.claim]
        assert (claim.runbook, claim.section) == (row.source.runbook, row.source.section), row.alert
        assert normalised(claim.quote) == normalised(row.source.quote), row.alert


# --- one-line errors ----------------------------------------------------------------------------


def target_file(folder: Path, claims: str, cited: str = "seed-004.health.api-liveness") -> Path:
    path = folder / "staging.yaml"
    path.write_text(
        f"name: staging\nenvironment: staging\nclaims: {claims!r}\nservices:\n  api:\n    url: http://127.0.0.1:9\n"
        f"    health:\n      - {{path: /healthz, claim: seed-004.health.api-liveness}}\n"
        f"      - {{path: /readyz, claim: {cited}}}\n"
    )
    return path


def test_an_unknown_cited_id_fails_the_target_load(tmp_path: Path) -> None:
    path = target_file(tmp_path, "opsgate:reference/claims.yaml", cited="seed-004.health.api-livenes")
    with pytest.raises(TargetError) as raised:
        load_target(path)
    assert raised.value.message == (
        f"{path}: services.api.health[1].claim: expected a claim id of the registry opsgate:reference/claims.yaml "
        "(did you mean 'seed-004.health.api-liveness'?), got 'seed-004.health.api-livenes'"
    )
    result = run_opsgate(["validate", str(path)], timeout_s=60)
    assert result.returncode == 2
    assert result.stderr == f"opsgate: {raised.value.message}\n" and "Traceback" not in result.stderr


def test_a_missing_registry_names_the_target_field(tmp_path: Path) -> None:
    path = target_file(tmp_path, "nope.yaml")
    with pytest.raises(TargetError) as raised:
        load_target(path)
    assert raised.value.message == (
        f"{path}: claims: expected a claims registry file (not found: {tmp_path / 'nope.yaml'}), got 'nope.yaml'"
    )


def test_a_registry_beside_the_target_file_is_found_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(
        "claims:\n  - {id: seed-004.health.api-liveness, runbook: r.txt, section: S, quote: q}\n"
    )
    path = target_file(tmp_path, "mine.yaml", cited="seed-004.health.api-liveness")
    target = load_target(path)
    registry = registry_for(target)
    assert registry is not None and registry.ids() == {"seed-004.health.api-liveness"}


ENTRY = "{id: a.b, runbook: 004_a1ebd492f6b52f94.txt, section: Health Checks, quote: 'Returns `PONG`.'}"
MALFORMED = {
    "empty list": ("claims: []\n", "claims: expected a non-empty list of claims, got []"),
    "not a mapping": ("- 1\n", "expected a mapping with 'claims:' at the top level, got [1]"),
    "unknown top-level": (
        f"claim:\n  - {ENTRY}\n",
        "claim: expected one of the top-level fields runbooks, claims, got 'claim'",
    ),
    "missing quote": (
        f"claims:\n  - {ENTRY}\n  - {{id: c.d, runbook: 004_a1ebd492f6b52f94.txt, section: Health Checks}}\n",
        "claims[1].quote: expected a non-empty string, got None",
    ),
    "quote not in the runbook": (
        "claims:\n  - {id: a.b, runbook: 004_a1ebd492f6b52f94.txt, section: Health Checks, quote: 'Returns `PING`.'}\n",
        "claims[0].quote: expected a passage of 004_a1ebd492f6b52f94.txt under 'Health Checks', copied verbatim "
        "(whitespace aside), got 'Returns `PING`.'; it departs from the runbook after 'Returns `P'",
    ),
    "quote in another section": (
        "claims:\n  - {id: a.b, runbook: 004_a1ebd492f6b52f94.txt, section: Incident Response, quote: 'Returns `PONG`.'}\n",  # noqa: E501
        "claims[0].quote: expected a passage of 004_a1ebd492f6b52f94.txt under 'Incident Response', copied verbatim "
        "(whitespace aside), got 'Returns `PONG`.'; it departs from the runbook after 'Re'",
    ),
    "duplicate id": (
        f"claims:\n  - {ENTRY}\n  - {ENTRY}\n",
        "claims[1].id: expected an id not used before (claims[0] has it), got 'a.b'",
    ),
    "unknown field": (
        "claims:\n  - {id: a.b, runbook: r, section: s, quote: q, claim: x}\n",
        "claims[0].claim: expected one of the fields id, runbook, section, quote, out_of_scope, got 'claim'",
    ),
    "not a heading": (
        "claims:\n  - {id: a.b, runbook: 004_a1ebd492f6b52f94.txt, section: Health Check, quote: q}\n",
        "claims[0].section: expected a heading of 004_a1ebd492f6b52f94.txt (did you mean 'Health Checks'?), "
        "got 'Health Check'",
    ),
    "empty reason": (
        "claims:\n  - {id: a.b, runbook: r, section: s, quote: q, out_of_scope: ''}\n",
        "claims[0].out_of_scope: expected a non-empty string (the reason it cannot be checked), got ''",
    ),
    "id with a space": (
        "claims:\n  - {id: a b, runbook: r, section: s, quote: q}\n",
        "claims[0].id: expected a claim id like 'seed-004.health.api-liveness' (no spaces), got 'a b'",
    ),
    "entry not a mapping": (
        "claims:\n  - a.b\n",
        "claims[0]: expected a mapping with id, runbook, section and quote, got 'a.b'",
    ),
    "invalid YAML": (
        "claims: [\n",
        "line 2, column 1: invalid YAML: expected the node content, but found '<stream end>'",
    ),
    "duplicate key": ("claims: []\nclaims: []\n", "line 2, column 1: invalid YAML: duplicate key 'claims'"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_registry_is_one_line_naming_file_and_field(case: str, tmp_path: Path) -> None:
    text, problem = MALFORMED[case]
    checked = "missing quote" in case or "runbook" in case or "section" in case or "heading" in case
    path = tmp_path / "claims.yaml"
    path.write_text((f"runbooks: {RUNBOOKS}\n" if checked else "") + text)
    with pytest.raises(TargetError) as raised:
        load_registry(path)
    assert raised.value.message == f"{path}: {problem}"
    assert "\n" not in raised.value.message


def test_a_runbook_missing_from_the_folder(tmp_path: Path) -> None:
    path = tmp_path / "claims.yaml"
    path.write_text(f"runbooks: {RUNBOOKS}\nclaims:\n  - {{id: a.b, runbook: nope.txt, section: s, quote: q}}\n")
    with pytest.raises(TargetError) as raised:
        load_registry(path)
    assert raised.value.message == f"{path}: claims[0].runbook: expected a runbook file in {RUNBOOKS}, got 'nope.txt'"


def test_a_malformed_registry_fails_opsgate_validate_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("claims:\n  - {id: a.b, runbook: r, section: s}\n")
    path = target_file(tmp_path, "bad.yaml")
    result = run_opsgate(["validate", str(path)], timeout_s=60)
    assert result.returncode == 2
    assert (
        result.stderr == f"opsgate: {tmp_path / 'bad.yaml'}: claims[0].quote: expected a non-empty string, got None\n"
    )


# --- state rules --------------------------------------------------------------------------------


def claim(claim_id: str, out_of_scope: str | None = None) -> Claim:
    return Claim(claim_id, "r.txt", "S", f"quote of {claim_id}", out_of_scope)


def record(check: str, cites: str | None, verdict: Verdict, *, age_s: float = 60.0, message: str = "") -> CheckRecord:
    finished = NOW - age_s
    return CheckRecord(check, "health", verdict, message=message, claim=cites, started_at=finished - 1,
                       finished_at=finished)  # fmt: skip


def states(registry: Registry, records: list[CheckRecord], max_age_s: float = 7 * DAY_S) -> dict[str, ClaimCoverage]:
    report = coverage_for_records(registry, records, now=NOW, max_age_s=max_age_s)
    assert [c.id for c in report.claims] == [c.id for c in registry.claims]  # every claim, in registry order
    return {c.id: c for c in report.claims}


def test_each_state_from_constructed_records() -> None:
    names = ["verified", "failing", "stale", "untested", "refused"]
    registry = Registry("r", Path("r"), (*map(claim, names), claim("scope", out_of_scope="a human approval step")))
    records = [
        record("c1", "verified", "pass", age_s=3600),
        record("c2", "failing", "fail", message="expected status 200,\n got 503"),
        record("c3", "stale", "pass", age_s=8 * DAY_S),
        record("c4", "refused", "refused"),
        record("c5", "scope", "pass"),
        record("c6", "not-in-the-registry", "fail"),
        record("c7", None, "fail"),
    ]
    got = states(registry, records)
    assert {k: v.state for k, v in got.items()} == {
        "verified": "verified", "failing": "failing", "stale": "stale", "untested": "untested",
        "refused": "untested", "scope": "out-of-scope",
    }  # fmt: skip
    verified, failing, stale = got["verified"], got["failing"], got["stale"]
    assert verified.checks == ("c1",) and verified.last_verified_at == NOW - 3600
    assert failing.note == "c2 fail: expected status 200, got 503"
    assert stale.note == "last verified 8.0 d ago (max age 7.0 d)"
    assert got["refused"].note == "only refused: c4"
    assert got["untested"].checks == ()
    assert got["scope"].note == "a human approval step"
    report = coverage_for_records(registry, records, now=NOW, max_age_s=7 * DAY_S)
    assert report.line() == "claims: 1 verified, 1 failing, 2 untested, 1 stale, 1 out of scope"


@pytest.mark.parametrize("verdict", ["fail", "error", "inconclusive", "aborted"])
def test_every_non_pass_verdict_but_refused_is_failing(verdict: Verdict) -> None:
    registry = Registry("r", Path("r"), (claim("a"),))
    assert states(registry, [record("c", "a", verdict)])["a"].state == "failing"


def test_a_claim_cited_by_two_checks_one_failing_is_failing() -> None:
    registry = Registry("r", Path("r"), (claim("a"),))
    got = states(registry, [record("ok", "a", "pass"), record("bad", "a", "inconclusive", message="no samples")])["a"]
    assert got.state == "failing" and set(got.checks) == {"ok", "bad"}
    assert got.note == "bad inconclusive: no samples"


def test_each_check_counts_by_its_newest_record() -> None:
    registry = Registry("r", Path("r"), (claim("healed"), claim("broke"), claim("fresh")))
    records = [
        record("h", "healed", "pass", age_s=60),  # newest first here, newest last below: order in the list is no clue
        record("h", "healed", "fail", age_s=DAY_S),
        record("b", "broke", "pass", age_s=60),
        record("b", "broke", "fail", age_s=10),
        record("old", "fresh", "pass", age_s=9 * DAY_S),
        record("new", "fresh", "pass", age_s=2 * DAY_S),
    ]
    got = states(registry, records)
    assert got["healed"].state == "verified" and got["broke"].state == "failing"
    assert got["fresh"].state == "verified"  # the newest pass of any citing check decides
    assert got["fresh"].last_verified_at == NOW - 2 * DAY_S
    assert states(registry, records, max_age_s=DAY_S)["fresh"].state == "stale"


def test_coverage_for_runs_reads_the_runs_and_needs_a_registry(tmp_path: Path) -> None:
    no_registry = parse_target("name: t\nenvironment: local\n")
    assert coverage_for_runs(no_registry, [], now=NOW, max_age_s=DAY_S) is None
    path = target_file(tmp_path, "opsgate:reference/claims.yaml")
    target = load_target(path)
    summary = RunSummary("staging", "staging", NOW - 120, NOW - 60, [record("health[api:/healthz]",
                         "seed-004.health.api-liveness", "pass")])  # fmt: skip
    report = coverage_for_runs(target, [Run(tmp_path, summary)], now=time.time(), max_age_s=1e12)
    assert report is not None and report.registry == "opsgate:reference/claims.yaml"
    by_id = {c.id: c for c in report.claims}
    assert by_id["seed-004.health.api-liveness"].state == "verified"
    assert report.counts()["verified"] == 1 and sum(report.counts().values()) == len(report.claims)
