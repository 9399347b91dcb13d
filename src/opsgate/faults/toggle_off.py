"""Undo a toggle on an external target from the journal: ``python -m opsgate.faults.toggle_off FILE DRILL``.

The target file is loaded again with this process's environment (secrets are never journalled), and
the ``disable`` steps of the drill ``DRILL``'s toggle run in order. Exit 0 when every step held, else
1 with a one-line reason.
"""

from __future__ import annotations

import asyncio
import sys

import httpx

from opsgate.config import TargetError, load_target
from opsgate.flows import FlowFailed, run_steps
from opsgate.probes.base import ProbeError


async def _run(target_file: str, drill_name: str) -> None:
    target = load_target(target_file)
    drill = next((d for d in target.drills if d.name == drill_name), None)
    if drill is None or drill.fault.toggle is None:
        raise ValueError(f"{target_file}: no drill {drill_name!r} with a toggle fault")
    async with httpx.AsyncClient() as client:
        await run_steps(client, target, drill.fault.toggle.disable)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.exit("usage: python -m opsgate.faults.toggle_off TARGET_FILE DRILL")
    try:
        asyncio.run(_run(args[0], args[1]))
    except TargetError as exc:
        sys.exit(f"toggle-off: {exc.message}")
    except (FlowFailed, ProbeError, ValueError) as exc:
        sys.exit(f"toggle-off: {exc}")


if __name__ == "__main__":
    main()
