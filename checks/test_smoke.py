"""Collects opsgate's generic smoke checks for the target given with ``--target`` (default: embedded)."""

from opsgate.suite.test_smoke import test_health, test_postgres_accepts_connections, test_redis_ping

__all__ = ["test_health", "test_postgres_accepts_connections", "test_redis_ping"]
