"""Redaction: every secret value is replaced in every artifact opsgate writes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

MASK = "[REDACTED]"
TEXT_SUFFIXES = {".json", ".xml", ".html", ".md", ".log", ".txt", ".csv"}


class Redactor:
    """Replaces each known secret (longest first, so a secret containing another is masked whole)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def text(self, value: str) -> str:
        """``value`` with every secret masked."""
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def file(self, path: Path) -> bool:
        """Mask secrets in a text file in place; True when it changed."""
        original = path.read_text(errors="replace")
        cleaned = self.text(original)
        if cleaned != original:
            path.write_text(cleaned)
        return cleaned != original

    def tree(self, root: Path) -> list[Path]:
        """Mask every text artifact under ``root``; returns the files changed."""
        changed = []
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink() and path.suffix in TEXT_SUFFIXES and self.file(path):
                changed.append(path)
        return changed
