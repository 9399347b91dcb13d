"""Collects the drills declared in the target file's ``drills:`` section (``opsgate drill`` runs this folder)."""

from opsgate.suite.test_drills import test_drill

__all__ = ["test_drill"]
