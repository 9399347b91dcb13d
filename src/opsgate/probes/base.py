"""What every probe shares: the error a failed observation raises."""

from __future__ import annotations


class ProbeError(Exception):
    """The target could not be observed (refused, timed out, malformed answer); one line naming where."""
