"""An SLO row of the target file → its limits, its honesty rules and the load plan of one stage.

Two stages: the gate's **short** stage (the shortest run its limits can honestly be judged on, or
``load.short_duration``) and the **full** profile (``load.duration`` scaled by ``time_scale``). Neither is
shorter than ``load.min_duration`` nor than the samples the highest percentile asked needs at the
planned rate, with a quarter to spare (a linear ramp loses half its length's worth of requests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from opsgate.config import SloSpec, Target
from opsgate.probes.sources import service_url
from opsgate.slo.runner import Plan
from opsgate.slo.verdict import Honesty, Limits, needed_samples

Stage = Literal["short", "full"]
SAMPLE_MARGIN = 1.25
"""Run this much longer than the bare minimum of samples needs, so a few slow starts cannot starve it."""


def limits_of(spec: SloSpec) -> Limits:
    """The row's percentile ceilings (ms) and error-rate ceiling (ratio)."""
    return Limits(p50_ms=spec.p50_ms, p95_ms=spec.p95_ms, p99_ms=spec.p99_ms, error_rate=spec.error_rate)


def honesty_of(spec: SloSpec) -> Honesty:
    """The row's rules for an inconclusive run (the issue's defaults unless the row overrides them)."""
    h = spec.honesty
    return Honesty(min_samples=h.min_samples, min_rate_ratio=h.min_rate_ratio,
                   max_skipped_ratio=h.max_skipped_ratio, max_cpu_ratio=h.max_cpu_ratio,
                   max_wait_ratio=h.max_wait_ratio)  # fmt: skip


def ramp_s(target: Target, spec: SloSpec) -> float:
    """The ramp (seconds, scaled)."""
    return target.scaled(spec.load.ramp)


def floor_s(target: Target, spec: SloSpec) -> float:
    """The shortest honest run (seconds): ``min_duration``, or long enough for the samples needed."""
    load = spec.load
    if load.rate_per_s <= 0:
        return load.min_duration
    needed = needed_samples(limits_of(spec), honesty_of(spec))
    return max(load.min_duration, SAMPLE_MARGIN * needed / load.rate_per_s + ramp_s(target, spec) / 2)


def duration_s(target: Target, spec: SloSpec, stage: Stage) -> float:
    """How long the stage sends load (seconds): the full profile scaled, or the short stage within it."""
    full = max(floor_s(target, spec), target.scaled(spec.load.duration))
    if stage == "full":
        return full
    short = spec.load.short_duration if spec.load.short_duration is not None else floor_s(target, spec)
    return min(full, max(short, floor_s(target, spec)))


def window_s(target: Target, spec: SloSpec) -> float | None:
    """The sub-window every part of the run is judged on too (seconds, scaled), or None."""
    return None if spec.window is None else target.scaled(spec.window)


def endpoint(spec: SloSpec) -> str:
    """What the row loads, for messages: ``POST /v1/tenants/…/messages`` or the locustfile and request name."""
    if spec.request is not None:
        return f"{spec.request.method} {spec.request.path}"
    return f"{spec.locustfile} ({spec.judge or 'all requests'})"


def plan_for(target: Target, spec: SloSpec, stage: Stage, *, workers: int | None = None) -> Plan:
    """The load plan of ``spec`` for ``stage``; ``workers`` overrides the row's Locust worker count."""
    load, step = spec.load, spec.request
    locustfile = None
    if spec.locustfile is not None:
        base = target.source.parent if target.source is not None else Path.cwd()
        locustfile = base / spec.locustfile
    return Plan(
        service_url(target, step.service if step is not None else spec.service),
        step.path if step is not None else "/",
        rate_per_s=load.rate_per_s,
        duration_s=duration_s(target, spec, stage),
        method=step.method if step is not None else "GET",
        headers=dict(step.headers) if step is not None and step.headers else None,
        body=step.json if step is not None else None,
        status=step.expect.status if step is not None else 200,
        max_in_flight=load.max_in_flight,
        name=spec.name,
        model=load.model,
        users=load.users,
        ramp_s=ramp_s(target, spec),
        workers=load.workers if workers is None else workers,
        sign_header=step.sign.header if step is not None and step.sign is not None else None,
        sign_secret=step.sign.secret if step is not None and step.sign is not None else None,
        locustfile=locustfile,
        judge_name=spec.judge,
    )
