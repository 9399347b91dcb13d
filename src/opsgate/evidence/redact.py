"""Redaction: every secret, in every form it is written in, is replaced by ``[REDACTED]`` in every artifact.

A secret reaches an artifact as written or encoded: percent-encoded (a DSN's userinfo, ``quote``/``quote_plus``),
JSON-escaped (``summary.json``, Locust's JSON, a response body quoted in a message), ``repr``/``ascii``-escaped
(an exception's message), HTML/XML-escaped (``report.html``, ``junit.xml``), one of these inside another (a JSON
body quoted in a message inside ``junit.xml``), or in base64 (HTTP Basic auth: ``base64(user:secret)``).

All but base64 encode character by character, so each secret becomes one pattern in which every character
matches any of its spellings (up to two encodings deep; a backslash escape under any number of JSON/``repr``
layers). Base64 is found by the part of the encoded secret that does not depend on what surrounds it, at each of
the three byte alignments: the base64 token around it is masked whole (it decodes to text holding the secret).

A message shortened before it was masked (``body[:200]``, a log's tail) may hold a secret cut in two: its first
or last half (and anything more of it) is masked as well. Better still, mask before shortening:
:meth:`Redactor.deep` masks a check record before it is rendered.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import html
import json
import os
import re
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar, cast
from urllib.parse import quote, quote_plus

T = TypeVar("T")
MASK = "[REDACTED]"
MIN_SECRET_CHARS = 4
"""Shorter values are not masked: replacing them everywhere would garble the evidence."""
MIN_FRAGMENT_CHARS = 8
"""A secret's first or last half is masked too, when at least this long (a truncated copy of it)."""
MIN_BASE64_CORE = 8
"""Shortest stable base64 core searched for (a shorter secret is matched as the base64 of itself only)."""
BINARY_SNIFF_BYTES = 8192
"""A NUL byte in this many leading bytes marks a file as binary (a PNG screenshot): left alone."""

_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-")
"""Characters no encoding here changes: their runs anchor a quick substring test before the regex runs."""
_B64_STD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_B64_URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


# --- per-character encodings --------------------------------------------------------------------------------------


def _json_ascii(ch: str) -> str:
    return json.dumps(ch)[1:-1]


def _json_utf8(ch: str) -> str:
    return json.dumps(ch, ensure_ascii=False)[1:-1]


def _json_html_safe(ch: str) -> str:
    """Jinja's ``tojson`` and Go's encoder also escape ``< > & '`` (Locust's HTML report embeds such JSON)."""
    return f"\\u{ord(ch):04x}" if ch in "<>&'" else _json_ascii(ch)


def _json_slash(ch: str) -> str:
    return "\\/" if ch == "/" else _json_ascii(ch)


def _python_repr(ch: str) -> str:
    """Inside ``repr(text)`` when it holds both quote kinds (``'`` escaped then)."""
    return "\\'" if ch == "'" else repr(ch)[1:-1]


def _python_ascii(ch: str) -> str:
    return "\\'" if ch == "'" else ascii(ch)[1:-1]


def _bytes_repr(ch: str) -> str:
    """Inside ``repr(text.encode())`` (an HTTP library's complaint about a header value)."""
    return "\\'" if ch == "'" else repr(ch.encode())[2:-1]


def _html(ch: str) -> str:
    return html.escape(ch, quote=True)


def _xml_attribute(ch: str) -> str:
    """ElementTree's attribute escaping (``junit.xml``): ``'`` is kept, line breaks become references."""
    return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#09;"}.get(
        ch, ch
    )


def _char_reference(ch: str) -> str:
    return ch if ch in _PLAIN else f"&#{ord(ch)};"


def _char_reference_hex(ch: str) -> str:
    return ch if ch in _PLAIN else f"&#x{ord(ch):x};"


def _percent(ch: str) -> str:
    return quote(ch, safe="")


def _percent_lower(ch: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(ch, safe=""))


def _percent_plus(ch: str) -> str:
    return quote_plus(ch, safe="")


ENCODINGS: tuple[Callable[[str], str], ...] = (
    _json_ascii, _json_utf8, _json_html_safe, _json_slash, _python_repr, _python_ascii, _bytes_repr,
    _html, _xml_attribute, _char_reference, _char_reference_hex, _percent, _percent_lower, _percent_plus,
)  # fmt: skip
"""One layer of encoding of one character; a secret's character may be under two layers (any of them, in order)."""


@functools.lru_cache(maxsize=4096)
def spellings(ch: str, depth: int = 2) -> frozenset[str]:
    """Every way ``ch`` is written under up to ``depth`` layers of :data:`ENCODINGS`."""
    found = {ch}
    layer = {ch}
    for _ in range(depth):
        layer = {"".join(encode(c) for c in text) for text in layer for encode in ENCODINGS} - found
        found |= layer
    return frozenset(found)


def _spelling_pattern(spelling: str) -> str:
    """A spelling as a regex; a leading backslash matches a run of them (an escape under more JSON/repr layers)."""
    stripped = spelling.lstrip("\\")
    if stripped != spelling:
        return r"\\+" + re.escape(stripped)
    return re.escape(spelling)


def _char_pattern(ch: str) -> str:
    if ch in _PLAIN:
        return re.escape(ch)
    patterns = sorted({_spelling_pattern(s) for s in spellings(ch)}, key=lambda p: (-len(p), p))
    return "(?:" + "|".join(patterns) + ")"


def fragment_chars(secret: str) -> int:
    """The shortest cut-off piece of ``secret`` that is masked: half of it, and at least :data:`MIN_FRAGMENT_CHARS`."""
    return max(MIN_FRAGMENT_CHARS, -(-len(secret) // 2))


def secret_pattern(secret: str, *, fragments: bool = True) -> str:
    """A regex matching ``secret`` in any of its per-character encodings (base64 aside), and with ``fragments``
    its first :func:`fragment_chars` characters and more of it too (a copy cut off at its end)."""
    chars = [_char_pattern(ch) for ch in secret]
    keep = len(chars) if not fragments else min(len(chars), fragment_chars(secret))
    rest = ""  # c[keep] (c[keep+1] (...)?)?: the rest of the secret, or a prefix of it
    for char in reversed(chars[keep:]):
        rest = f"(?:{char}{rest})?"
    return "".join(chars[:keep]) + rest


def tail_pattern(secret: str) -> str | None:
    """A regex matching the last :func:`fragment_chars` characters of ``secret`` (None when that is all of it).

    A copy cut off at its start ends with them; :meth:`Redactor.spans` extends such a match to the left over what
    else of the secret precedes it (a suffix chain in the regex itself would be slow on every position of a text).
    """
    keep = fragment_chars(secret)
    return None if keep >= len(secret) else "".join(_char_pattern(ch) for ch in secret[-keep:])


def extend_left(text: str, start: int, head: str) -> int:
    """Where a copy of ``head`` (any spelling of each character) that ends at ``start`` in ``text`` begins.

    Each character is matched from right to left, its longest spelling first; a spelling that starts with a
    backslash takes any backslashes before it (the same escape under more layers).
    """
    for ch in reversed(head):
        for spelling in sorted(spellings(ch), key=len, reverse=True):
            if start >= len(spelling) and text.startswith(spelling, start - len(spelling)):
                start -= len(spelling)
                while spelling.startswith("\\") and start > 0 and text[start - 1] == "\\":
                    start -= 1
                break
        else:
            return start
    return start


def _anchors(secret: str) -> list[str | None]:
    """Anchors of the parts every match contains: the secret's, or its first and its last part's."""
    keep = fragment_chars(secret)
    return [_anchor(secret)] if keep >= len(secret) else [_anchor(secret[:keep]), _anchor(secret[-keep:])]


def _anchor(secret: str) -> str | None:
    """The longest run of characters no encoding changes (None when shorter than 3): present in every spelling."""
    runs = re.findall(r"[A-Za-z0-9._~-]+", secret)
    best = max(runs, key=len, default="")
    return best if len(best) >= 3 else None


# --- base64 --------------------------------------------------------------------------------------------------------


def base64_cores(secret: str) -> set[str]:
    """Substrings of ``base64(prefix + secret + suffix)`` fixed by the secret's bytes alone, at each alignment.

    A base64 token holding one of them decodes to text containing (all but the edge bytes of) the secret. For a
    secret too short to have cores of :data:`MIN_BASE64_CORE` characters, the base64 of the secret itself.
    """
    raw = secret.encode()
    cores: set[str] = set()
    for align in range(3):
        encoded = base64.b64encode(b"\0" * align + raw + b"\0\0").decode()
        first = -(-8 * align // 6)  # the first character whose 6 bits all come from the secret
        last = (8 * (align + len(raw))) // 6  # one past the last such character
        core = encoded[first:last]
        if len(core) >= MIN_BASE64_CORE:
            cores |= {core, core.replace("+", "-").replace("/", "_")}
    if not cores:
        whole = base64.b64encode(raw).decode()
        cores = {whole, whole.replace("+", "-").replace("/", "_")}
    return cores


def _token_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen ``[start, end)`` to the whole base64 token around it (padding included)."""
    alphabet = _B64_STD | _B64_URL
    while start > 0 and text[start - 1] in alphabet:
        start -= 1
    while end < len(text) and text[end] in alphabet:
        end += 1
    for _ in range(2):
        if end < len(text) and text[end] == "=":
            end += 1
    return start, end


# --- the redactor --------------------------------------------------------------------------------------------------


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``ranges`` sorted, overlapping or touching ones joined."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


class Redactor:
    """Masks every known secret, in every form above, in text and in the files of a run directory.

    The patterns are built once: one compiled regex over all secrets (longest first, so a secret containing
    another is masked whole) and their cut-off copies, one over their last parts, one over their base64 cores. A
    text that holds none of the anchors every match contains costs a few substring searches.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        anchors = [anchor for s in self.secrets for anchor in _anchors(s)]
        self._anchors: list[str] | None = None if None in anchors else sorted({a for a in anchors if a})
        """Substrings one of which every match contains (None: some secret has none, always search)."""
        self._pattern = re.compile("|".join(secret_pattern(s) for s in self.secrets)) if self.secrets else None
        tails = [(s, tail_pattern(s)) for s in self.secrets]
        self._heads = {f"t{i}": s[: len(s) - fragment_chars(s)] for i, (s, tail) in enumerate(tails) if tail}
        """Per group of the tails' regex: the part of the secret before its tail."""
        named = [f"(?P<t{i}>{tail})" for i, (_, tail) in enumerate(tails) if tail]
        self._tails = re.compile("|".join(named)) if named else None
        cores = sorted({core for s in self.secrets for core in base64_cores(s)}, key=len, reverse=True)
        self._base64 = re.compile("|".join(re.escape(c) for c in cores)) if cores else None

    def spans(self, value: str) -> list[tuple[int, int]]:
        """Sorted, merged ``(start, end)`` ranges of ``value`` that hold a secret (or a cut-off copy of one)."""
        found: list[tuple[int, int]] = []
        if self._anchors is None or any(a in value for a in self._anchors):
            if self._pattern is not None:
                found += [m.span() for m in self._pattern.finditer(value) if m.end() > m.start()]
            if self._tails is not None:
                for m in self._tails.finditer(value):
                    found.append((extend_left(value, m.start(), self._heads[str(m.lastgroup)]), m.end()))
        if self._base64 is not None:
            found += [_token_span(value, *m.span()) for m in self._base64.finditer(value)]
        return _merged(found)

    def text(self, value: str) -> str:
        """``value`` with every secret masked."""
        spans = self.spans(value)
        if not spans:
            return value
        parts, cursor = [], 0
        for start, end in spans:
            parts += [value[cursor:start], MASK]
            cursor = end
        parts.append(value[cursor:])
        return "".join(parts)

    def deep(self, value: T) -> T:
        """A copy of ``value`` with every string in it masked: text, lists, dicts, dataclasses (a check record).

        Mask records before rendering them: a renderer that shortens a message would cut a secret in two.
        """
        masked: object
        if isinstance(value, str):
            masked = self.text(value)
        elif isinstance(value, list | tuple):
            masked = type(value)(self.deep(item) for item in value)
        elif isinstance(value, dict):
            masked = {self.deep(k): self.deep(v) for k, v in value.items()}
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: self.deep(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
            masked = dataclasses.replace(value, **fields)
        else:
            masked = value
        return cast(T, masked)

    def json_text(self, value: str) -> str:
        """Mask a JSON document; if masking its text would break the JSON, mask its decoded strings instead."""
        cleaned = self.text(value)
        if cleaned == value:
            return value
        try:
            json.loads(cleaned)
            return cleaned
        except ValueError:
            pass
        try:
            document = json.loads(value)
        except ValueError:
            return cleaned  # not JSON to begin with
        return json.dumps(self._json_value(document), indent=2)

    def _json_value(self, value: object) -> object:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self._json_value(item) for item in value]
        if isinstance(value, dict):
            return {self.text(str(k)): self._json_value(v) for k, v in value.items()}
        return value

    def file(self, path: Path) -> bool:
        """Mask secrets in a text file in place (binary files are left alone); True when it changed.

        Bytes that are not UTF-8 are kept as they are (a log with a stray byte is still redacted).
        """
        data = path.read_bytes()
        if b"\0" in data[:BINARY_SNIFF_BYTES]:
            return False
        original = data.decode("utf-8", errors="surrogateescape")
        cleaned = self.json_text(original) if path.suffix == ".json" else self.text(original)
        if cleaned == original:
            return False
        path.write_bytes(cleaned.encode("utf-8", errors="surrogateescape"))
        return True

    def tree(self, root: Path) -> list[Path]:
        """Mask every text file under ``root``, whatever its name (symlinks are not followed); the files changed."""
        changed: list[Path] = []
        if not self.secrets:
            return changed
        for folder, _, names in os.walk(root, followlinks=False):
            for name in sorted(names):
                path = Path(folder) / name
                try:
                    if not stat.S_ISREG(path.lstat().st_mode):  # symlinks, sockets, FIFOs
                        continue
                    if self.file(path):
                        changed.append(path)
                except FileNotFoundError:
                    continue  # gone since the walk listed it
        return sorted(changed)
