"""An SLO row's verdict as a check record: exact figures beside Locust's rounded ones, plan beside achievement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opsgate.config import SloSpec
from opsgate.evidence.records import CheckRecord
from opsgate.slo.profile import Stage, endpoint
from opsgate.slo.runner import LoadResult, Plan
from opsgate.slo.verdict import QUANTILES, SloVerdict


def locust_percentile(response_times: Mapping[str, int] | Mapping[int, int], count: int, q: float) -> float:
    """The percentile Locust itself reports from its rounded buckets (its ``calculate_response_time_percentile``,
    mirrored here because the pytest process never imports locust); 0 for an empty run, as Locust says."""
    wanted = int(count * q)
    processed = 0
    for ms, n in sorted(((float(ms), int(n)) for ms, n in response_times.items()), reverse=True):
        processed += n
        if count - processed <= wanted:
            return ms
    return 0.0


def locust_entry(entries: Sequence[Mapping[str, Any]], name: str | None) -> Mapping[str, Any] | None:
    """Locust's stats entry for the request ``name`` (the only entry when there is just one)."""
    if name is not None:
        named = [e for e in entries if e.get("name") == name]
        if named:
            return named[0]
    return entries[0] if len(entries) == 1 else None


def slo_record(spec: SloSpec, stage: Stage, plan: Plan, verdict: SloVerdict, result: LoadResult) -> CheckRecord:
    """The check record of one SLO row (kind ``slo``); a miss names the endpoint and by how much."""
    limits = {"p50": spec.p50_ms, "p95": spec.p95_ms, "p99": spec.p99_ms}
    headline = next((name for name in ("p95", "p99", "p50") if limits[name] is not None), "")
    figures: dict[str, float | int | str | None] = {
        "stage": stage,
        "model": plan.model,
        "endpoint": endpoint(spec),
        "duration_s": round(plan.duration_s, 3),
        "planned_rate_per_s": round(verdict.planned_rate_per_s, 3),
        "achieved_rate_per_s": round(verdict.achieved_rate_per_s, 3),
        "planned": result.run.planned,
        "count": verdict.count,
        "skipped": result.run.skipped,
        "error_rate": verdict.error_rate,
        "cpu_ratio": round(result.run.cpu_ratio, 3),
        "wait_ratio": round(result.run.wait_ratio, 3),
        "workers": plan.workers,
    }
    for name in QUANTILES:
        value = verdict.percentiles_ms.get(name)
        figures[f"{name}_ms"] = None if value is None else round(value, 3)
        figures[f"{name}_limit_ms"] = limits[name]
    figures["error_rate_limit"] = spec.error_rate
    entry = locust_entry(result.locust_entries, plan.judge_name or plan.name)
    if entry is not None:
        count = int(entry.get("num_requests", 0))
        figures["locust_count"] = count
        for name, q in QUANTILES.items():
            figures[f"locust_{name}_ms"] = locust_percentile(entry.get("response_times") or {}, count, q)
    shown = f"{endpoint(spec)}: {verdict.message}"
    if verdict.verdict == "pass":
        shown += (f"; {verdict.count} requests at {verdict.achieved_rate_per_s:.1f}/s "
                  f"(planned {verdict.planned_rate_per_s:.1f}/s, {stage} stage)")  # fmt: skip
    measured = verdict.percentiles_ms.get(headline) if headline else verdict.error_rate
    threshold = limits.get(headline) if headline else spec.error_rate
    return CheckRecord(
        id=spec.name, kind="slo", verdict=verdict.verdict, message=shown,
        measured=None if measured is None else round(measured, 3), threshold=threshold, op="<",
        unit="ms" if headline else "ratio", claim=spec.claim, figures=figures,
    )  # fmt: skip
