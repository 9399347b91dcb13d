"""Cold start of the local reference platform: prints min/median/max seconds over N runs."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from opsgate.environments.local import LocalEnvironment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    starts: list[float] = []
    stops: list[float] = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            environment = LocalEnvironment(Path(tmp) / "logs", time_scale=0.02)
            environment.start()
            assert environment.started_in_s is not None
            starts.append(environment.started_in_s)
            began = time.monotonic()
            environment.stop()
            stops.append(time.monotonic() - began)
    for label, values in (("start", starts), ("stop", stops)):
        print(
            f"{label}: runs={len(values)} min={min(values):.2f}s median={statistics.median(values):.2f}s"
            f" max={max(values):.2f}s"
        )


if __name__ == "__main__":
    main()
