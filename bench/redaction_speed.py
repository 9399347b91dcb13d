"""How fast redaction masks evidence: MB/s on log text with no secret, and with one on every line.

Prints figures, asserts nothing. ``python bench/redaction_speed.py [--mb 5] [--runs 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from opsgate.evidence.redact import Redactor

SECRETS = ["s3cret-token-value", "another/secret+value", 'p@ss "w/ord" é']
LINE = 'INFO 127.0.0.1 "GET /v1/messages/8c1f0a HTTP/1.1" 200 {"status": "delivered", "to": "+61412345678"}\n'


def timed(redactor: Redactor, text: str, runs: int) -> float:
    """Median seconds to mask ``text``."""
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        redactor.text(text)
        took.append(time.perf_counter() - started)
    return statistics.median(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=5.0, help="size of the log text, MB")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    started = time.perf_counter()
    redactor = Redactor(SECRETS)
    build_ms = (time.perf_counter() - started) * 1000
    lines = int(args.mb * 1e6 / len(LINE))
    clean = LINE * lines
    dirty = (LINE.rstrip("\n") + f" token={SECRETS[0]}\n") * lines
    print(f"redactor for {len(SECRETS)} secrets built in {build_ms:.1f} ms")
    for name, text in (("no secret", clean), ("a secret on every line", dirty)):
        seconds = timed(redactor, text, args.runs)
        print(f"{name:<24} {len(text) / 1e6:5.1f} MB in {seconds:.3f} s  ({len(text) / 1e6 / seconds:,.1f} MB/s)")


if __name__ == "__main__":
    main()
