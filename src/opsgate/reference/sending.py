"""The send gates a message passes before it is accepted: recipient, do-not-contact, quiet hours."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})


class RejectedSend(Exception):
    """A send refused by a gate: ``code`` is the API's error code, ``http_status`` its status."""

    def __init__(self, code: str, detail: str, http_status: int) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.http_status = http_status


def to_e164(raw: str, region: str) -> str:
    """Normalise a phone number to E.164 (``+61412345678``) using ``region`` for national forms."""
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise RejectedSend("INVALID_RECIPIENT", f"not a phone number: {exc}", 422) from None
    if not phonenumbers.is_valid_number(parsed):
        raise RejectedSend("INVALID_RECIPIENT", f"not a valid phone number for region {region}", 422)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; an unknown name is a 422 rejection."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RejectedSend("INVALID_TIMEZONE", f"unknown time zone {name!r}", 422) from None


def in_quiet_hours(now: datetime, tz: ZoneInfo, start: int | None, end: int | None) -> bool:
    """True when ``now`` falls in [start, end) hours local to ``tz``; a window may wrap midnight."""
    if start is None or end is None or start == end:
        return False
    hour = now.astimezone(tz).hour
    if start < end:
        return start <= hour < end
    return hour >= start or hour < end


def is_stop_reply(body: str) -> bool:
    """True when an inbound reply asks to opt out (STOP and its synonyms)."""
    return body.strip().upper() in STOP_WORDS
