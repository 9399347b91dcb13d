"""Undo a toggle on an external target from the journal: ``python -m opsgate.faults.toggle_off FILE STEPS``.

The target file is loaded again with this process's environment (secrets are never journalled), and
the ``off`` steps (JSON) are run in order. Exit 0 when every step held, 1 with a one-line reason otherwise.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx
from pydantic import TypeAdapter

from opsgate.config import FlowStep, TargetError, load_target
from opsgate.flows import FlowFailed, run_steps
from opsgate.probes.base import ProbeError


async def _run(target_file: str, steps_json: str) -> None:
    target = load_target(target_file)
    steps = TypeAdapter(list[FlowStep]).validate_python(json.loads(steps_json))
    async with httpx.AsyncClient() as client:
        await run_steps(client, target, steps)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.exit("usage: python -m opsgate.faults.toggle_off TARGET_FILE STEPS_JSON")
    try:
        asyncio.run(_run(args[0], args[1]))
    except TargetError as exc:
        sys.exit(f"toggle-off: {exc.message}")
    except (FlowFailed, ProbeError, ValueError) as exc:
        sys.exit(f"toggle-off: {exc}")


if __name__ == "__main__":
    main()
