"""One run of opsgate's open-model load path, for bench/load_throughput.py (run pinned with ``taskset``).

Calls :func:`opsgate.slo.runner.run_load` (which starts Locust with src/opsgate/slo/locustfile.py as its own
child, inheriting this process's CPU affinity) and prints one JSON line: achieved rate, exact p95 from the raw
timings, and the run's bookkeeping. This process never imports locust.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from opsgate.slo.runner import Plan, run_load
from opsgate.slo.verdict import exact_percentile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = run_load(Plan(args.host, args.path, rate_per_s=args.rate, duration_s=args.seconds), args.out)
    run = result.run
    latencies = [t.latency_ms for t in run.timings]
    ok = sum(1 for t in run.timings if t.ok)
    print(
        json.dumps(
            {
                "sent": len(run.timings),
                "ok": ok,
                "planned": run.planned,
                "skipped": run.skipped,
                "elapsed_s": run.actual_duration_s,
                "rate": len(run.timings) / run.actual_duration_s if run.actual_duration_s else 0.0,
                "p95_ms": exact_percentile(latencies, 0.95),
                "cpu_ratio": run.cpu_ratio,
                "ended_early": run.ended_early,
                "locust_requests": result.locust.get("num_requests"),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
