"""Time-compress a Prometheus rules document by one factor, so a drill runs in seconds with the same rule logic.

Locally opsgate runs a real Prometheus (scrape and evaluation every ~1 s) with the target's rules
compressed by its ``time_scale``: at 0.02 a ``for: 5m`` becomes ``6s`` and ``rate(x[5m])`` becomes
``rate(x[6s])``. Scaled by the one factor: ``for``, ``keep_firing_for``, the group ``interval``,
range windows ``[5m]``, subquery ranges ``[10m:30s]`` (range and resolution step) and ``offset``.

Floors, each recorded as a :class:`Clamp` so the evidence shows it (a floor never widens a window
beyond its original length):

- a range window or subquery range keeps at least ``min_samples_per_window`` scrapes
  (``rate(x[1s])`` at 1 s scrapes was empty every time; ``[5s]`` always had 5 samples);
- ``for``, ``keep_firing_for`` and the group ``interval`` stay >= one evaluation interval
  (``scrape_interval_s``) unless they were 0;
- every other duration stays >= 1 ms, the resolution of a Prometheus duration.

What is deliberately *not* scaled:

- **Count thresholds.** ``increase(x[15m]) > 5`` becomes ``increase(x[18s]) > 5``: the drill must
  produce the 6 events inside the compressed 18 s window, not 6 * 0.02 of an event.
- **Literal seconds in expressions.** ``time() - last_success_timestamp_seconds > 300`` is an age
  compared with a number, not a window: it stays 300. An age threshold needs its own treatment in
  the drill (e.g. set the timestamp 300 s in the past), because compressing the number would change
  what the rule means in production.

How the expression is rewritten: promql-parser (a Rust parser; it cannot evaluate) parses each
expression and lists its windows. The output is the author's text with only the duration tokens
replaced, not the parser's printout, because here (0.12) the printers change meaning: ``str()``
prints ``rate(x[500ms])`` as ``rate(x{}[0s])``, ``[10m:]`` as ``[10m]`` (no longer a subquery) and
drops the backslash in ``x{a="b\\"c"}``, while ``prettify()`` reorders matchers, drops comments and
reflows long expressions. Editing an AST node's attributes is silently lost (each getter returns a
copy) and ``transform()`` ignores an edited node returned as-is. Every rewritten expression is
parsed again and must have the original's syntax tree, apart from the windows, which must be the
planned ones; otherwise compression fails loudly rather than change a rule.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import promql_parser

__all__ = ["Clamp", "Compressed", "compress_expr", "compress_rules", "format_duration"]

# One Prometheus duration (model.ParseDuration, the grammar promtool 2.42 accepts): units in this
# order, each at most once; "0" alone is allowed in rule fields. Bare numbers like [300] are not
# durations for 2.42 ("missing unit character in duration") although promql-parser accepts them.
_DURATION = r"(?:[0-9]+y)?(?:[0-9]+w)?(?:[0-9]+d)?(?:[0-9]+h)?(?:[0-9]+m)?(?:[0-9]+s)?(?:[0-9]+ms)?"
_DURATION_PARTS = re.compile(r"([0-9]+)(ms|y|w|d|h|m|s)")
_UNIT_MS = {"y": 365 * 86_400_000, "w": 7 * 86_400_000, "d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000}
_UNIT_MS["ms"] = 1
_FORMAT_UNITS = (  # (unit, milliseconds, only when it divides exactly) as in Prometheus' model.Duration.String
    ("y", _UNIT_MS["y"], True),
    ("w", _UNIT_MS["w"], True),
    ("d", _UNIT_MS["d"], False),
    ("h", _UNIT_MS["h"], False),
    ("m", _UNIT_MS["m"], False),
    ("s", _UNIT_MS["s"], False),
    ("ms", 1, False),
)

# Tokens of an expression's text that matter to the splicer: strings and comments are skipped whole.
_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|`[^`]*`|#[^\n]*')
_BRACKET = re.compile(rf"\[\s*(?P<range>{_DURATION})\s*(?:(?P<colon>:)\s*(?P<step>{_DURATION})\s*)?\]")
_OFFSET = re.compile(
    rf"(?<![\w:])offset(?=[\s-])\s*(?P<sign>-?)\s*(?P<dur>(?=[0-9]){_DURATION})(?![\w:])", re.IGNORECASE
)
# A duration in the Debug text of a parsed tree (Rust's Duration: 300s, 1.5s, 500ms), outside string literals.
_DEBUG_DURATION = re.compile(r'"(?:[^"\\]|\\.)*"|\b[0-9]+(?:\.[0-9]+)?(?:ns|µs|ms|s)\b')

# Kinds of window, as named in a Clamp's ``where``.
_RANGE, _SUBQUERY, _STEP, _OFFSET_KIND = "range", "subquery", "step", "offset"
_RULE_FIELDS = ("for", "keep_firing_for")


@dataclass(frozen=True)
class Clamp:
    """A window that could not be compressed by the full factor."""

    rule: str
    """Alert or record name (the group name for a group ``interval``)."""
    where: str
    """``for``, ``keep_firing_for``, ``interval``, ``expr range [5m]``, ``expr subquery [10m:30s]``, ``expr offset 1h``,
    ``expr subquery step [10m:30s]``."""
    original_s: float
    """Length as written in the rule, seconds."""
    wanted_s: float
    """``original_s * factor``, seconds."""
    used_s: float
    """What was written, seconds (>= wanted_s)."""


@dataclass(frozen=True)
class Compressed:
    """A compressed rules document, the factor used and every window that hit a floor."""

    groups: dict[str, Any]
    """The rules document, the same shape as the input YAML: ``{"groups": [...]}``."""
    factor: float
    clamps: list[Clamp]


@dataclass(frozen=True)
class _Scaled:
    """One duration after scaling, in whole milliseconds (Prometheus' resolution)."""

    original_ms: int
    wanted_s: float
    used_ms: int

    @property
    def clamped(self) -> bool:
        """Whether a floor, not the factor, decided the length."""
        return self.used_ms > round(self.wanted_s * 1000)


def format_duration(seconds: float) -> str:
    """Prometheus duration text for ``seconds`` (>= 0, rounded to ms): 6 → "6s", 90 → "1m30s", 0.5 → "500ms"."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"format_duration: expected seconds >= 0, got {seconds!r}")
    return _format_ms(round(seconds * 1000))


def _format_ms(ms: int) -> str:
    """Prometheus duration text for a whole number of milliseconds (model.Duration.String)."""
    if ms == 0:
        return "0s"
    parts: list[str] = []
    for unit, unit_ms, exact in _FORMAT_UNITS:
        if exact and ms % unit_ms:
            continue
        count, ms = divmod(ms, unit_ms)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _parse_duration_ms(text: str) -> int:
    """Milliseconds in a Prometheus duration like "5m", "1h30m", "90s", "500ms" or "0"."""
    if text == "0":
        return 0
    if not text or not re.fullmatch(_DURATION, text):
        raise ValueError(f"expected a Prometheus duration like '5m', '1h30m' or '500ms', got {text!r}")
    return sum(int(count) * _UNIT_MS[unit] for count, unit in _DURATION_PARTS.findall(text))


def _scale(original_ms: int, factor: float, floor_ms: int) -> _Scaled:
    """``original_ms`` times ``factor``, rounded to ms, not below the floor (nor the floor above the original)."""
    wanted_s = original_ms * factor / 1000
    floor = min(max(floor_ms, 1), original_ms) if original_ms else 0
    return _Scaled(original_ms, wanted_s, max(round(original_ms * factor), floor))


def _check_factor(factor: float) -> None:
    """Refuse a factor outside 0 < factor <= 1."""
    if isinstance(factor, bool) or not (isinstance(factor, int | float) and 0 < factor <= 1):
        raise ValueError(f"time-compression factor must be 0 < factor <= 1, got {factor!r}")


# --- promql-parser, behind a few typed functions -------------------------------------------------


def _parse(expr: str) -> promql_parser.Expr:
    """The syntax tree of ``expr``; ValueError carries the parser's message."""
    try:
        return promql_parser.parse(expr)
    except ValueError as exc:
        raise ValueError(f"invalid PromQL {expr!r}: {exc}") from None


def _td_ms(delta: timedelta) -> int:
    """A parser duration as whole milliseconds (signed)."""
    return round(delta.total_seconds() * 1000)


def _windows(tree: promql_parser.Expr) -> list[tuple[str, int]]:
    """Every window of a syntax tree as (kind, signed ms), depth-first, parents before children."""
    found: list[tuple[str, int]] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.MatrixSelector):
            found.append((_RANGE, _td_ms(node.range)))
        elif isinstance(node, promql_parser.SubqueryExpr):
            if node.range is not None:
                found.append((_SUBQUERY, _td_ms(node.range)))
            if node.step is not None:
                found.append((_STEP, _td_ms(node.step)))
            if node.offset is not None:
                found.append((_OFFSET_KIND, _td_ms(node.offset)))
        elif isinstance(node, promql_parser.VectorSelector) and node.offset is not None:
            # A matrix selector's offset lives on its vector selector, visited right after it.
            found.append((_OFFSET_KIND, _td_ms(node.offset)))

    promql_parser.walk(tree, pre_visit=visit)
    return found


def _skeleton(tree: promql_parser.Expr) -> str:
    """The tree's full Debug text with every duration masked: equal skeletons mean equal rules but for windows."""
    return _DEBUG_DURATION.sub(lambda m: m.group(0) if m.group(0).startswith('"') else "<duration>", repr(tree))


# --- the expression splicer ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Edit:
    """Replace text[start:end] with ``text``."""

    start: int
    end: int
    text: str


def _windows_in_text(expr: str) -> list[tuple[str, int, int, str, str]]:
    """Duration tokens in ``expr`` as (kind, start, end, token, where), skipping strings and comments."""
    code = _STRING_OR_COMMENT.sub(lambda m: " " * len(m.group(0)), expr)  # same offsets, strings blanked
    tokens: list[tuple[str, int, int, str, str]] = []
    for bracket in re.finditer(r"\[[^\]]*\]", code):
        match = _BRACKET.fullmatch(code, bracket.start(), bracket.end())
        if match is None or not match.group("range"):
            raise ValueError(f"{bracket.group(0)!r} is not a window promtool 2.42 accepts (a unit is needed: '[5m]')")
        written = bracket.group(0)
        if match.group("colon"):
            tokens.append((_SUBQUERY, *match.span("range"), match.group("range"), f"expr subquery {written}"))
            if match.group("step"):
                tokens.append((_STEP, *match.span("step"), match.group("step"), f"expr subquery step {written}"))
        else:
            tokens.append((_RANGE, *match.span("range"), match.group("range"), f"expr range {written}"))
    for match in _OFFSET.finditer(code):
        tokens.append(
            (
                _OFFSET_KIND,
                *match.span("dur"),
                match.group("dur"),
                f"expr offset {match.group('sign')}{match.group('dur')}",
            )
        )
    return sorted(tokens, key=lambda token: token[1])


def _floor_ms(kind: str, floor_s: float) -> int:
    """The floor for a kind of window, ms: ranges keep enough scrapes; steps and offsets only stay non-zero."""
    return round(floor_s * 1000) if kind in (_RANGE, _SUBQUERY) else 1


def compress_expr(expr: str, factor: float, *, floor_s: float) -> tuple[str, list[tuple[str, float, float, float]]]:
    """``expr`` with its windows scaled by ``factor``, and the clamps as (where, original_s, wanted_s, used_s).

    Range windows and subquery ranges are not shortened below ``floor_s`` seconds; subquery steps and
    offsets only below 1 ms. Tokens whose length does not change keep their text. Raises ValueError
    with the parser's message for invalid PromQL.
    """
    _check_factor(factor)
    if not (isinstance(floor_s, int | float) and math.isfinite(floor_s) and floor_s >= 0):
        raise ValueError(f"floor_s must be a number of seconds >= 0, got {floor_s!r}")
    tree = _parse(expr)
    edits: list[_Edit] = []
    clamps: list[tuple[str, float, float, float]] = []
    for kind, start, end, token, where in _windows_in_text(expr):
        scaled = _scale(_parse_duration_ms(token), factor, _floor_ms(kind, floor_s))
        if scaled.used_ms != scaled.original_ms:
            edits.append(_Edit(start, end, _format_ms(scaled.used_ms)))
        if scaled.clamped:
            clamps.append((where, scaled.original_ms / 1000, scaled.wanted_s, scaled.used_ms / 1000))
    result = expr
    for edit in reversed(edits):
        result = result[: edit.start] + edit.text + result[edit.end :]
    _verify(expr, tree, result, lambda kind, ms: _scale(ms, factor, _floor_ms(kind, floor_s)).used_ms)
    return result, clamps


def _verify(original: str, tree: promql_parser.Expr, result: str, scale: Callable[[str, int], int]) -> None:
    """Fail unless ``result`` parses to ``tree`` with exactly the planned windows (sign kept)."""
    expected = [(kind, int(math.copysign(scale(kind, abs(ms)), ms))) for kind, ms in _windows(tree)]
    try:
        new_tree = promql_parser.parse(result)
    except ValueError as exc:
        raise ValueError(f"compressing {original!r} produced unparsable {result!r} ({exc}); please report") from None
    got = _windows(new_tree)
    if got != expected or _skeleton(new_tree) != _skeleton(tree):
        raise ValueError(
            f"could not compress {original!r} safely: got {result!r} with windows {got}, expected {expected}; "
            "please report this expression"
        )


# --- the rules document --------------------------------------------------------------------------


def _rule_duration_ms(value: object, where: str) -> int:
    """Milliseconds in a rule's ``for``/``keep_firing_for``/``interval`` value ("5m", "0" or YAML 0)."""
    if value == 0 and not isinstance(value, bool):
        return 0
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a Prometheus duration like '5m', got {value!r}")
    try:
        return _parse_duration_ms(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def compress_rules(
    document: dict[str, Any], factor: float, *, scrape_interval_s: float = 1.0, min_samples_per_window: int = 4
) -> Compressed:
    """A deep copy of a rules document (``{"groups": [...]}``) with every window scaled by ``factor``.

    ``scrape_interval_s`` is the local scrape and evaluation interval, seconds: range windows keep at
    least ``min_samples_per_window`` scrapes, and ``for``/``keep_firing_for``/``interval`` stay >= one
    interval unless 0. Labels and annotations are untouched. At factor 1.0 the copy equals the input.
    Raises ValueError naming the group and rule for invalid PromQL or durations.
    """
    _check_factor(factor)
    if not (isinstance(scrape_interval_s, int | float) and math.isfinite(scrape_interval_s) and scrape_interval_s > 0):
        raise ValueError(f"scrape_interval_s must be a number of seconds > 0, got {scrape_interval_s!r}")
    if (
        isinstance(min_samples_per_window, bool)
        or not isinstance(min_samples_per_window, int)
        or min_samples_per_window < 1
    ):
        raise ValueError(f"min_samples_per_window must be an integer >= 1, got {min_samples_per_window!r}")
    if not isinstance(document, dict) or not isinstance(document.get("groups"), list):
        raise ValueError("rules document: expected a mapping with a 'groups' list, as in a Prometheus rules file")
    range_floor_s = min_samples_per_window * scrape_interval_s
    interval_floor_ms = round(scrape_interval_s * 1000)
    result = copy.deepcopy(document)
    clamps: list[Clamp] = []

    def scale_field(holder: dict[str, Any], key: str, owner: str, where: str) -> None:
        if key not in holder:
            return
        scaled = _scale(_rule_duration_ms(holder[key], where), factor, interval_floor_ms)
        if scaled.used_ms != scaled.original_ms:
            holder[key] = _format_ms(scaled.used_ms)
        if scaled.clamped:
            clamps.append(Clamp(owner, key, scaled.original_ms / 1000, scaled.wanted_s, scaled.used_ms / 1000))

    for g, group in enumerate(result["groups"]):
        if not isinstance(group, dict) or not isinstance(group.get("rules", []), list):
            raise ValueError(f"groups[{g}]: expected a mapping with 'name' and a 'rules' list, got {group!r}")
        group_name = str(group.get("name", f"groups[{g}]"))
        scale_field(group, "interval", group_name, f"groups[{g}] ({group_name!r}).interval")
        for r, rule in enumerate(group.get("rules") or []):
            if not isinstance(rule, dict):
                raise ValueError(f"groups[{g}].rules[{r}]: expected a mapping with 'alert' or 'record', got {rule!r}")
            kind = "alert" if "alert" in rule else "record"
            name = str(rule.get(kind, f"groups[{g}].rules[{r}]"))
            location = f"groups[{g}].rules[{r}] ({kind} {name!r})"
            for key in _RULE_FIELDS:
                scale_field(rule, key, name, f"{location}.{key}")
            expr = rule.get("expr")
            if isinstance(expr, bool) or not isinstance(expr, str | int | float):
                raise ValueError(f"{location}.expr: expected a PromQL expression, got {expr!r}")
            try:
                new_expr, expr_clamps = compress_expr(str(expr), factor, floor_s=range_floor_s)
            except ValueError as exc:
                raise ValueError(f"{location}.expr: {exc}") from None
            if new_expr != str(expr):
                rule["expr"] = new_expr
            clamps.extend(Clamp(name, *clamp) for clamp in expr_clamps)
    return Compressed(groups=result, factor=factor, clamps=clamps)
