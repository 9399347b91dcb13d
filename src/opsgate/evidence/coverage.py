"""Runbook coverage over the claims registry: each claim verified, failing, untested, stale or out of scope."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ClaimState = Literal["verified", "failing", "untested", "stale", "out-of-scope"]
STATES: tuple[ClaimState, ...] = ("verified", "failing", "untested", "stale", "out-of-scope")


@dataclass(frozen=True)
class ClaimCoverage:
    """One registry claim and what the evidence says of it.

    ``checks``: ids of the checks/drills in the evidence that cite the claim; ``last_verified_at``:
    unix s of the newest passing one (None: never); ``note``: the out-of-scope reason, or the failing
    check's message.
    """

    id: str
    runbook: str
    section: str
    quote: str
    state: ClaimState
    checks: tuple[str, ...] = ()
    last_verified_at: float | None = None
    note: str = ""


@dataclass
class CoverageReport:
    """Coverage of every claim of a registry, in registry order."""

    registry: str
    claims: list[ClaimCoverage] = field(default_factory=list)

    def counts(self) -> dict[ClaimState, int]:
        """How many claims are in each state (every state present, 0 when none)."""
        result: dict[ClaimState, int] = dict.fromkeys(STATES, 0)
        for claim in self.claims:
            result[claim.state] += 1
        return result

    def line(self) -> str:
        """``claims: V verified, F failing, U untested, S stale, O out of scope``."""
        c = self.counts()
        return (
            f"claims: {c['verified']} verified, {c['failing']} failing, {c['untested']} untested, "
            f"{c['stale']} stale, {c['out-of-scope']} out of scope"
        )
