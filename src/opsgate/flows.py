"""Synthetic user flows: HTTP steps sharing saved variables, polled until they hold, with a ground truth."""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from opsgate.config import Flow, FlowStep, Target
from opsgate.probes.base import ProbeError
from opsgate.probes.http import HttpObservation, contains_mismatch, json_field, request, subset_mismatch
from opsgate.probes.sources import service_url
from opsgate.reference.signing import sign

_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
STEP_TIMEOUT_S = 10.0


class FlowFailed(Exception):
    """A step's expectation did not hold; the message names the step and what differed."""


@dataclass
class FlowRun:
    """What a flow did: one line per step (method, path, status, ms) and the variables it saved."""

    steps: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    duration_s: float = 0.0


def fill(template: Any, variables: dict[str, str]) -> Any:
    """Replace ``{name}`` in every string of ``template`` (nested too); an unknown name is an error."""
    if isinstance(template, str):

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in variables:
                raise FlowFailed(f"unknown variable {{{name}}} (saved so far: {', '.join(variables) or 'none'})")
            return variables[name]

        return _VARIABLE.sub(value, template)
    if isinstance(template, dict):
        return {k: fill(v, variables) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, variables) for v in template]
    return template


def problem_of(step: FlowStep, observed: HttpObservation, variables: dict[str, str] | None = None) -> str | None:
    """What differs from the step's expectation, or None; with ``variables``, ``{name}`` in expected JSON values
    is filled in (a value saved by an earlier step)."""
    if observed.status != step.expect.status:
        return f"expected status {step.expect.status}, got {observed.status}: {observed.text[:200]}"
    if step.expect.json is not None:
        expected = fill(step.expect.json, variables) if variables is not None else step.expect.json
        if mismatch := subset_mismatch(expected, observed.json):
            return mismatch
    return contains_mismatch(step.expect.contains, observed)


def zone_at_hour(local_hour: int, now: datetime.datetime | None = None) -> str:
    """An ``Etc/GMT`` zone in which it is now ``local_hour`` o'clock (UTC-12 .. UTC+14; Etc/GMT signs are inverted)."""
    utc_hour = (now or datetime.datetime.now(datetime.UTC)).astimezone(datetime.UTC).hour
    offset = (local_hour - utc_hour) % 24
    if offset > 14:
        offset -= 24
    return "Etc/GMT" + (f"{-offset:+d}" if offset else "")


def fresh_variables() -> dict[str, str]:
    """``{uuid}`` (32 hex digits), ``{digits}`` (6 decimal digits, e.g. a unique phone number's tail) and
    ``{zone_at_HH}`` for HH 00..23 (a time zone where it is now HH o'clock: time-of-day rules, e.g. quiet hours)."""
    now = datetime.datetime.now(datetime.UTC)
    zones = {f"zone_at_{hour:02d}": zone_at_hour(hour, now) for hour in range(24)}
    return {"uuid": uuid.uuid4().hex, "digits": f"{secrets.randbelow(10**6):06d}", **zones}


async def send_step(
    client: httpx.AsyncClient, target: Target, step: FlowStep, variables: dict[str, str]
) -> HttpObservation:
    """Send one step's request with ``variables`` filled in (``{uuid}`` and ``{digits}`` fresh for this request)."""
    variables = {**fresh_variables(), **variables}
    url = service_url(target, step.service) + fill(step.path, variables)
    headers = {k: fill(v, variables) for k, v in step.headers.items()}
    content: bytes | None = None
    if step.json is not None:
        content = json.dumps(fill(step.json, variables)).encode()
        headers.setdefault("content-type", "application/json")
    if step.sign is not None:
        headers[step.sign.header] = sign(step.sign.secret, content or b"")
    return await request(client, step.method, url, timeout_s=STEP_TIMEOUT_S, headers=headers, content=content)


async def run_flow(client: httpx.AsyncClient, target: Target, flow: Flow) -> FlowRun:
    """Run every step of ``flow`` in order, then its ``cleanup`` steps whatever happened; raises
    :class:`FlowFailed` (or ProbeError) at the first broken step, naming a broken cleanup step too."""
    run = FlowRun(variables=fresh_variables())
    try:
        await run_steps(client, target, flow.steps, run)
    except (FlowFailed, ProbeError) as exc:
        problem = await clean_up(client, target, flow.cleanup, run)
        if problem is not None:
            raise FlowFailed(f"{exc}; then {problem}") from None
        raise
    duration_s = run.duration_s  # the flow's own steps, not its cleanup
    problem = await clean_up(client, target, flow.cleanup, run)
    if problem is not None:
        raise FlowFailed(problem)
    run.duration_s = duration_s
    return run


async def clean_up(client: httpx.AsyncClient, target: Target, steps: list[FlowStep], run: FlowRun) -> str | None:
    """Run every cleanup step whose variables ``run`` saved (each, even after one broke); what broke, or None."""
    problems = []
    for number, step in enumerate(steps, start=1):
        names = set(_VARIABLE.findall(json.dumps(step.model_dump(mode="json"))))
        if names - run.variables.keys():
            continue
        try:
            await run_steps(client, target, [step], run, first=number, kind="cleanup step")
        except FlowFailed as exc:
            problems.append(str(exc))
        except ProbeError as exc:
            problems.append(f"cleanup step {number}: {exc}")
    return "; ".join(problems) or None


async def run_steps(
    client: httpx.AsyncClient,
    target: Target,
    steps: list[FlowStep],
    run: FlowRun | None = None,
    *,
    first: int = 1,
    kind: str = "step",
) -> FlowRun:
    """Run ``steps`` in order, sharing saved variables (with ``run``'s, when continuing a run); failures name
    the step as ``{kind} {number}``, numbered from ``first``."""
    run = run or FlowRun(variables=fresh_variables())
    started = time.monotonic()
    for index, step in enumerate(steps, start=first):
        label = f"{kind} {index} ({step.method} {fill(step.path, run.variables)})"
        problem: str | None = None
        if step.poll is None:
            observed = await send_step(client, target, step, run.variables)
            problem = problem_of(step, observed, run.variables)
        else:
            within = target.scaled(step.poll.within, floor_s=1.0)
            every = target.scaled(step.poll.every, floor_s=0.05)
            deadline = time.monotonic() + within
            polls = 0
            for _ in range(int(within / every) + 2):
                polls += 1
                observed = await send_step(client, target, step, run.variables)
                problem = problem_of(step, observed, run.variables)
                if problem is None or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(every)
            if problem is not None:
                problem = f"still not met after {within:.1f}s ({polls} polls): {problem}"
        run.steps.append(
            f"{step.method} {fill(step.path, run.variables)} → {observed.status} ({observed.latency_ms:.0f} ms)"
        )
        if problem is not None:
            raise FlowFailed(f"{label}: {problem}")
        for name, dotted in step.save.items():
            try:
                run.variables[name] = str(json_field(observed.json, dotted))
            except KeyError as exc:
                raise FlowFailed(f"{label}: cannot save {name}: {exc.args[0]}") from None
    run.duration_s = time.monotonic() - started
    return run
