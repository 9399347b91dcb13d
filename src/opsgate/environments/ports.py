"""Free TCP ports on 127.0.0.1 below the kernel's ephemeral range.

A dependency restarted during a drill must be able to rebind its port while clients' reconnect
sockets (which take ephemeral ports) are in flight, so services never live in that range.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10_000


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux default 32768-60999 when unreadable)."""
    try:
        low, high = EPHEMERAL_RANGE_FILE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when ``host:port`` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class PortAllocator:
    """Hands out distinct free ports outside the ephemeral range (or from ``candidates`` when given)."""

    def __init__(self, candidates: Iterable[int] | None = None, seed: int | None = None) -> None:
        if candidates is None:
            low, high = ephemeral_range()
            pool = list(range(LOWEST_PORT, low))
            if len(pool) < 1000:  # an unusual kernel setting: fall back to anything outside the range
                pool = [p for p in range(1024, 65_536) if not low <= p <= high]
            random.Random(seed).shuffle(pool)
            candidates = pool
        self._candidates = iter(candidates)
        self._given: set[int] = set()

    def pick(self) -> int:
        """The next candidate port that is free and not handed out before."""
        for port in self._candidates:
            if port not in self._given and is_free(port):
                self._given.add(port)
                return port
        raise RuntimeError("no free TCP port left among the candidates")
