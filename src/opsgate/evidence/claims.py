"""The claims registry and runbook coverage: which runbook claims the evidence verifies.

A claims registry (YAML, named by the target file's ``claims:``) lists every checkable claim of a
set of runbooks: an ``id``, the ``runbook`` file, its ``section`` (a heading of that file) and the
``quote`` (copied verbatim from that section), plus ``out_of_scope: <reason>`` for a claim no tool
can check against the target. Checks and drills cite claims with ``claim: <id>``.

Coverage judges each claim on the newest record of every check citing it:

- **failing**: a citing check's newest verdict is fail, error, inconclusive or aborted;
- **verified**: otherwise, a citing check passed, the newest pass at most ``max_age_s`` ago (wall clock);
- **stale**: a citing check passed, but the newest pass is older than that;
- **untested**: nothing in the evidence cites it, or only refused checks do;
- **out-of-scope**: the registry says so (whatever the evidence).

``opsgate coverage`` exits 0 when no claim is failing: untested and stale claims are reported, not
failures (a registry is meant to list more than is checked yet). 1 when a claim is failing, 2 on bad
input (a malformed target file or registry, or a target without ``claims:``).
"""

from __future__ import annotations

import difflib
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from opsgate.alerts.rulefiles import resolve
from opsgate.config import Target, TargetError, _read_yaml
from opsgate.evidence.coverage import STATES, ClaimCoverage, ClaimState, CoverageReport
from opsgate.evidence.records import CheckRecord
from opsgate.evidence.rundir import Run, newest_runs, reports_dir

__all__ = [
    "DEFAULT_MAX_AGE_S",
    "Claim",
    "Registry",
    "check_citations",
    "citations",
    "coverage_command",
    "coverage_for_records",
    "coverage_for_runs",
    "load_registry",
    "registry_for",
]

DEFAULT_MAX_AGE_S = 7 * 86400.0
"""A claim last verified longer ago than this (wall-clock seconds) is stale, unless told otherwise."""
FAILING_VERDICTS = frozenset({"fail", "error", "inconclusive", "aborted"})
CLAIM_FIELDS = ("id", "runbook", "section", "quote", "out_of_scope")
_HEADING = re.compile(r"(#{1,6})\s+(.*?)\s*$")
_FENCE = "```"


@dataclass(frozen=True)
class Claim:
    """One checkable claim of a runbook: its id, where it is written, the words, and why it is out of scope (if)."""

    id: str
    runbook: str
    section: str
    quote: str
    out_of_scope: str | None = None


@dataclass(frozen=True)
class Registry:
    """A loaded claims registry: ``name`` as the target file names it, ``path`` on disk, claims in file order."""

    name: str
    path: Path
    claims: tuple[Claim, ...]

    def ids(self) -> frozenset[str]:
        """Every claim id of the registry."""
        return frozenset(claim.id for claim in self.claims)


# --- loading ----------------------------------------------------------------------------------


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problem(file: str, field: str, expected: str, got: object) -> TargetError:
    return TargetError(f"{file}: {field}: expected {expected}, got {_show(got)}", file=file, field=field)


def _normalised(text: str) -> str:
    """``text`` with every run of whitespace one space: quotes may wrap differently than the runbook."""
    return " ".join(text.split())


def runbook_sections(text: str) -> dict[str, list[str]]:
    """Each markdown heading of a runbook → the text under it (up to the next heading of its level or above).

    Lines inside fenced code blocks are never headings (a ``# comment`` in a shell block). A heading
    that occurs twice has two texts.
    """
    lines = text.splitlines()
    headings: list[tuple[int, int, str]] = []  # (line index, level, title)
    in_code = False
    for index, line in enumerate(lines):
        if line.lstrip().startswith(_FENCE):
            in_code = not in_code
            continue
        match = None if in_code else _HEADING.fullmatch(line)
        if match:
            headings.append((index, len(match.group(1)), match.group(2)))
    sections: dict[str, list[str]] = {}
    for position, (index, level, title) in enumerate(headings):
        end = next((i for i, lvl, _ in headings[position + 1 :] if lvl <= level), len(lines))
        sections.setdefault(title, []).append("\n".join(lines[index + 1 : end]))
    return sections


def _check_in_runbook(claim: Claim, at: str, folder: Path, file: str, cache: dict[str, dict[str, list[str]]]) -> None:
    if claim.runbook not in cache:
        path = folder / claim.runbook
        if not path.is_file():
            raise _problem(file, f"{at}.runbook", f"a runbook file in {folder}", claim.runbook)
        cache[claim.runbook] = runbook_sections(path.read_text(encoding="utf-8"))
    sections = cache[claim.runbook]
    if claim.section not in sections:
        close = difflib.get_close_matches(claim.section, list(sections), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _problem(file, f"{at}.section", f"a heading of {claim.runbook}{hint}", claim.section)
    quote = _normalised(claim.quote)
    bodies = [_normalised(body) for body in sections[claim.section]]
    if not any(quote in body for body in bodies):
        agreed = next(n for n in range(len(quote), -1, -1) if any(quote[:n] in body for body in bodies))
        expected = f"a passage of {claim.runbook} under {claim.section!r}, copied verbatim (whitespace aside)"
        problem = _problem(file, f"{at}.quote", expected, claim.quote)
        raise TargetError(f"{problem.message}; it departs from the runbook after {quote[:agreed][-40:]!r}",
                          file=file, field=f"{at}.quote")  # fmt: skip


def _claim(entry: object, at: str, file: str) -> Claim:
    if not isinstance(entry, dict):
        raise _problem(file, at, "a mapping with id, runbook, section and quote", entry)
    unknown = sorted(str(key) for key in entry if key not in CLAIM_FIELDS)
    if unknown:
        raise _problem(file, f"{at}.{unknown[0]}", f"one of the fields {', '.join(CLAIM_FIELDS)}", unknown[0])
    values: dict[str, str] = {}
    for name in CLAIM_FIELDS:
        value = entry.get(name)
        if value is None and name == "out_of_scope":
            continue
        if not isinstance(value, str) or not value.strip():
            reason = " (the reason it cannot be checked)" if name == "out_of_scope" else ""
            raise _problem(file, f"{at}.{name}", f"a non-empty string{reason}", value)
        values[name] = value
    if any(ch.isspace() for ch in values["id"]):
        raise _problem(file, f"{at}.id", "a claim id like 'seed-004.health.api-liveness' (no spaces)", values["id"])
    return Claim(**values)


def load_registry(path: Path, *, name: str | None = None) -> Registry:
    """Read and validate a claims registry; any problem is a one-line :class:`TargetError` naming file and field.

    With a top-level ``runbooks:`` folder (relative to the registry), every claim's runbook must be
    a file there, its section one of that file's headings and its quote a passage of that section.
    """
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TargetError(f"{file}: file not found", file=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"{file}: cannot read the claims registry: {exc}", file=file) from None
    data = _read_yaml(text, file)
    if not isinstance(data, dict):
        raise TargetError(f"{file}: expected a mapping with 'claims:' at the top level, got {_show(data)}", file=file)
    unknown = sorted(str(key) for key in data if key not in ("runbooks", "claims"))
    if unknown:
        raise _problem(file, unknown[0], "one of the top-level fields runbooks, claims", unknown[0])
    entries = data.get("claims")
    if not isinstance(entries, list) or not entries:
        raise _problem(file, "claims", "a non-empty list of claims", entries)
    folder_name = data.get("runbooks")
    if folder_name is not None and (not isinstance(folder_name, str) or not folder_name.strip()):
        raise _problem(file, "runbooks", "a folder of runbook files, relative to the registry", folder_name)
    folder = path.parent / folder_name if folder_name else None
    claims: list[Claim] = []
    first: dict[str, int] = {}
    sections: dict[str, dict[str, list[str]]] = {}
    for index, entry in enumerate(entries):
        at = f"claims[{index}]"
        claim = _claim(entry, at, file)
        if claim.id in first:
            raise _problem(file, f"{at}.id", f"an id not used before (claims[{first[claim.id]}] has it)", claim.id)
        first[claim.id] = index
        if folder is not None:
            _check_in_runbook(claim, at, folder, file, sections)
        claims.append(claim)
    return Registry(name or file, path, tuple(claims))


def registry_for(target: Target) -> Registry | None:
    """The target's claims registry (``claims:``, ``opsgate:`` = packaged file), or None when it names none."""
    if target.claims is None:
        return None
    path = resolve(target, target.claims)
    if not path.is_file():
        file = str(target.source) if target.source is not None else "<target>"
        raise _problem(file, "claims", f"a claims registry file (not found: {path})", target.claims)
    return load_registry(path, name=target.claims)


def citations(target: Target) -> Iterator[tuple[str, str]]:
    """(field path, claim id) of every ``claim:`` in the target file, e.g. ``('gates[2].claim', 'seed-002.x')``."""

    def walk(value: object, path: str) -> Iterator[tuple[str, str]]:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                item = getattr(value, name)
                at = f"{path}.{name}" if path else name
                if name == "claim" and isinstance(item, str):
                    yield at, item
                else:
                    yield from walk(item, at)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                yield from walk(item, f"{path}[{index}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                yield from walk(item, f"{path}.{key}")

    yield from walk(target, "")


def check_citations(target: Target) -> None:
    """Load the target's registry and refuse a ``claim:`` id it does not list (one-line :class:`TargetError`)."""
    registry = registry_for(target)
    if registry is None:
        return
    ids = registry.ids()
    file = str(target.source) if target.source is not None else "<target>"
    for at, claim_id in citations(target):
        if claim_id not in ids:
            close = difflib.get_close_matches(claim_id, sorted(ids), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _problem(file, at, f"a claim id of the registry {registry.name}{hint}", claim_id)


# --- coverage ---------------------------------------------------------------------------------


def _finished(record: CheckRecord) -> float:
    """When a record's check finished (unix s; its start when unfinished, 0 when neither is known)."""
    return record.finished_at or record.started_at or 0.0


def _days(seconds: float) -> str:
    """A wall-clock age for people: ``8.0 d``, ``3.5 h``, ``12 min``, ``4 s``."""
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _judge(claim: Claim, cited: list[CheckRecord], now: float, max_age_s: float) -> ClaimCoverage:
    checks = tuple(record.id for record in cited)
    passing = [r for r in cited if r.verdict == "pass"]
    last = max((_finished(r) for r in passing), default=None)
    state: ClaimState
    note = ""
    if claim.out_of_scope:
        state, note = "out-of-scope", claim.out_of_scope
    elif failing := [r for r in cited if r.verdict in FAILING_VERDICTS]:
        state = "failing"
        note = "; ".join(f"{r.id} {r.verdict}: {' '.join(r.message.split())[:200]}" for r in failing)
    elif last is None:
        state = "untested"
        note = f"only refused: {', '.join(checks)}" if checks else ""
    elif now - last > max_age_s:
        state, note = "stale", f"last verified {_days(now - last)} ago (max age {_days(max_age_s)})"
    else:
        state = "verified"
    return ClaimCoverage(claim.id, claim.runbook, claim.section, claim.quote, state, checks, last, note)


def coverage_for_records(
    registry: Registry, records: Iterable[CheckRecord], *, now: float, max_age_s: float
) -> CoverageReport:
    """Coverage of every registry claim by ``records`` (of any runs), judged at ``now`` (unix s).

    Each check counts by its newest record (by id): an older failure of a check that passed since is
    history, not a failing claim. Records citing no claim, or a claim not in the registry, are ignored.
    """
    newest: dict[str, CheckRecord] = {}
    for record in records:
        if record.claim is not None and (record.id not in newest or _finished(record) >= _finished(newest[record.id])):
            newest[record.id] = record
    by_claim: dict[str, list[CheckRecord]] = {}
    for record in newest.values():
        assert record.claim is not None
        by_claim.setdefault(record.claim, []).append(record)
    claims = [_judge(claim, by_claim.get(claim.id, []), now, max_age_s) for claim in registry.claims]
    return CoverageReport(registry.name, claims)


def coverage_for_runs(target: Target, runs: Sequence[Run], *, now: float, max_age_s: float) -> CoverageReport | None:
    """Coverage of the target's registry by the checks of ``runs``; None when the target names no registry."""
    registry = registry_for(target)
    if registry is None:
        return None
    records = [record for run in runs for record in run.summary.checks]
    return coverage_for_records(registry, records, now=now, max_age_s=max_age_s)


# --- opsgate coverage -------------------------------------------------------------------------

_ORDER: dict[ClaimState, int] = {"failing": 0, "stale": 1, "untested": 2, "verified": 3, "out-of-scope": 4}
assert set(_ORDER) == set(STATES)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def render_table(report: CoverageReport, cited_in_target: dict[str, list[str]]) -> list[str]:
    """One line per claim, failing first (state, id, runbook § section, citing checks or reason), then the count line.

    ``cited_in_target``: claim id → field paths of the target file citing it, to tell an untested
    claim that a check cites (but that did not run) from one nothing cites.
    """
    lines = []
    for claim in sorted(report.claims, key=lambda c: _ORDER[c.state]):
        if claim.state == "untested" and not claim.note:
            cited = cited_in_target.get(claim.id)
            detail = (f"cited by {', '.join(cited)}: not in the newest runs" if cited
                      else "not in the evidence (no claim: of the target file cites it)")  # fmt: skip
        elif claim.state in ("verified", "stale"):
            detail = ", ".join(claim.checks) + (f" ({claim.note})" if claim.note else "")
        else:
            detail = claim.note
        where = f"{claim.runbook} §{claim.section}"
        lines.append(f"  {claim.state.upper():<13}{claim.id:<46} {where[:72]:<72}  {detail[:300]}")
    lines.append(report.line())
    return lines


def coverage_command(target_file: Path, max_age_s: float) -> int:
    """``opsgate coverage``: print the registry's coverage by the newest gate, drill and load runs; exit code.

    0 when no claim is failing (untested and stale claims are reported, not failures), 1 when one is,
    2 on a malformed target file or registry, or a target that names no registry.
    """
    from opsgate.environments.launch import Launcher

    try:
        with tempfile.TemporaryDirectory() as scratch:  # a local target's addresses are placeholders here
            target = Launcher(target_file, Path(scratch)).target
        if target.claims is None:
            print(f"opsgate: {target_file}: claims: the target names no claims registry (add 'claims: <file>')",
                  file=sys.stderr)  # fmt: skip
            return 2
        newest = newest_runs(target=target.name)
        report = coverage_for_runs(target, list(newest.values()), now=time.time(), max_age_s=max_age_s)
    except TargetError as exc:
        print(f"opsgate: {exc.message}", file=sys.stderr)
        return 2
    assert report is not None
    print(f"opsgate: coverage of {report.registry} ({len(report.claims)} claims) for target {target.name!r}, "
          f"max age {_days(max_age_s)}")  # fmt: skip
    for kind in ("gate", "drill", "load"):
        run = newest.get(kind)
        print(f"  {kind:<6}{f'{run.path} (started {_iso(run.summary.started_at)})' if run else 'no run'}")
    if not newest:
        print(f"  (no gate, drill or load run of {target.name!r} in {reports_dir()}: every claim is untested)")
    cited: dict[str, list[str]] = {}
    for at, claim_id in citations(target):
        cited.setdefault(claim_id, []).append(at)
    print("")
    for line in render_table(report, cited):
        print(line)
    return 1 if report.counts()["failing"] else 0
