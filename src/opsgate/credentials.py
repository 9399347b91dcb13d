"""Which strings of a target file are credentials, so redaction can mask them all.

A target holds secrets in many fields, not only in the variables its ``secrets:`` lists: fields named like a
credential (``auth.api_token``, a flow step's ``sign.secret``, an ``Authorization`` or ``X-Api-Key`` header, a
``password`` in a JSON body or a login form), the password in any URL or DSN (and ``?token=``-style query
parameters), and tokens on the command lines of ``control:`` (``--token=...``, ``PGPASSWORD=...``,
``-H 'Authorization: Bearer ...'``, ``-u user:password``). :func:`secret_strings` finds them in a target's
validated data; :func:`named_secret_values` adds the values of ``${VAR}`` references whose names say they hold
a secret (``${KUBE_TOKEN}`` on a command line), wherever the file interpolates them.
"""

from __future__ import annotations

import base64
import binascii
import re
import shlex
from collections.abc import Iterator, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

MIN_CHARS = 4
"""Shorter candidates are not secrets worth masking (they would garble the evidence)."""
MIN_COOKIE_CHARS = 8

_CREDENTIAL_NAMES = frozenset(
    {"password", "passwd", "pass", "pwd", "secret", "token", "apikey", "apitoken", "accesstoken", "authtoken",
     "refreshtoken", "clientsecret", "privatekey", "authorization", "proxyauthorization", "cookie", "credentials",
     "credential", "passphrase"}
)  # fmt: skip
_CREDENTIAL_SUFFIXES = ("password", "passwd", "secret", "token", "apikey", "privatekey", "accesskey", "secretkey")
_FLAG_WORDS = ("token", "password", "passwd", "secret", "apikey", "credential", "privatekey", "passphrase")
_SECRET_NAME_PARTS = frozenset({"SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "CREDENTIALS"})
_SECRET_NAME_LAST = frozenset({"TOKEN", "PASS", "PW", "PWD", "APIKEY"})
_KEY_OWNERS = frozenset({"API", "ACCESS", "PRIVATE", "SECRET", "SIGNING", "WEBHOOK", "CLIENT", "ENCRYPTION", "HMAC"})
_COMMAND_FIELDS = frozenset({"read", "stop", "start"})
_AUTH_SCHEMES = frozenset({"bearer", "basic", "token", "digest", "apikey", "negotiate", "hmac"})
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SCHEME_CREDENTIALS = re.compile(r"\s*([A-Za-z][A-Za-z0-9_-]*)\s+(\S.*?)\s*")
_HEADER_WORD = re.compile(r"([A-Za-z][A-Za-z0-9_-]*)\s*:\s*(\S.*)")


def is_credential_name(name: str) -> bool:
    """True for a field or header name that holds a credential (``api_token``, ``X-Api-Key``, ``#password``)."""
    key = re.sub(r"[^a-z]", "", name.lower())
    return key in _CREDENTIAL_NAMES or key.endswith(_CREDENTIAL_SUFFIXES)


def is_secret_variable(name: str) -> bool:
    """True for an environment variable named like a secret (``KUBE_TOKEN``, ``PGPASSWORD``, ``PROVIDER_API_KEY``)."""
    parts = [p for p in name.upper().split("_") if p]
    if not parts:
        return False
    if _SECRET_NAME_PARTS & set(parts) or any(p.endswith(("PASSWORD", "SECRET")) for p in parts):
        return True
    return parts[-1] in _SECRET_NAME_LAST or (parts[-1] == "KEY" and len(parts) > 1 and parts[-2] in _KEY_OWNERS)


def url_passwords(url: str) -> set[str]:
    """The password in a URL's userinfo and its credential-named query parameters, as written and percent-decoded."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return set()
    found = {password, unquote(password)} if password else set()
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if is_credential_name(name):
            found.add(value)
    raw_query = dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair)
    found.update(value for name, value in raw_query.items() if is_credential_name(unquote(name)))
    return {value for value in found if value}


def credential_parts(value: str) -> set[str]:
    """A credential field's value and the secrets inside it: ``Bearer <token>``'s token, a Basic pair's password.

    For an HTTP auth scheme the credentials stand for the value (``Bearer`` itself is no secret, and half of
    ``Bearer t...`` would otherwise count as a cut-off copy of it).
    """
    found = {value}
    scheme = _SCHEME_CREDENTIALS.fullmatch(value)
    if scheme is not None:
        kind, credentials = scheme.group(1).lower(), scheme.group(2)
        found = {credentials} if kind in _AUTH_SCHEMES else {value, credentials}
        if kind == "basic":
            try:
                pair = base64.b64decode(credentials, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                pair = ""
            if pair:
                found |= {pair, pair.partition(":")[2]}
    if ";" in value or "=" in value:  # a Cookie header: the values long enough to be a session, not ``theme=dark``
        cookies = (part.partition("=")[2].strip() for part in value.split(";") if "=" in part)
        found.update(cookie for cookie in cookies if len(cookie) >= MIN_COOKIE_CHARS)
    return found


def _usable(candidates: set[str]) -> Iterator[str]:
    """Candidates worth masking: a flow placeholder (``Bearer {session}``) is no secret, its literal parts may be."""
    for candidate in candidates:
        if _PLACEHOLDER.search(candidate):
            yield from (piece.strip() for piece in _PLACEHOLDER.split(candidate) if len(piece.strip()) >= 8)
        elif len(candidate) >= MIN_CHARS:
            yield candidate


def _shell_spellings(value: str) -> set[str]:
    """A shell word's value and how it is written inside double quotes (``\\"`` and ``\\\\`` escaped)."""
    return {value, re.sub(r'([\\"$`])', r"\\\1", value)}


def command_secrets(command: str) -> set[str]:
    """Tokens on a control command line: credential flags and assignments, ``-u user:pw``, auth headers, URLs."""
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: plain words
        words = command.split()
    found: set[str] = set()
    for index, word in enumerate(words):
        following = words[index + 1] if index + 1 < len(words) else ""
        name, equals, value = word.partition("=")
        flag = name.lstrip("-")
        flag_key = re.sub(r"[^a-z]", "", flag.lower())
        credential_flag = any(w in flag_key for w in _FLAG_WORDS)
        if equals and name.startswith("-") and credential_flag:
            found.add(value)  # --token=abc
        elif equals and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and (is_secret_variable(name) or credential_flag):
            found.add(value)  # PGPASSWORD=abc cmd
        elif not equals and word.startswith("-") and credential_flag and following and not following.startswith("-"):
            found.add(following)  # --token abc
        if word in ("-u", "--user") and ":" in following:
            found.add(following.partition(":")[2])  # curl -u user:password
        elif word.startswith("--user=") and ":" in value:
            found.add(value.partition(":")[2])
        header = _HEADER_WORD.fullmatch(word)
        if header is not None and is_credential_name(header.group(1)):
            found |= credential_parts(header.group(2))  # -H 'Authorization: Bearer abc'
        for url in _URL.findall(word):
            found |= url_passwords(url)
    return {spelling for value in found for spelling in _shell_spellings(value)}


def secret_strings(data: object) -> set[str]:
    """Every credential in a target's validated data (``Target.model_dump()``), non-empty and usable only."""
    return set(_walk(data, ()))


def _walk(value: object, path: tuple[str, ...]) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, (*path, str(key)))
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, path)
    elif isinstance(value, str) and value:
        name = path[-1] if path else ""
        found: set[str] = set()
        if is_credential_name(name) and "save" not in path[-2:-1]:  # ``save: {token: access_token}`` names a field
            found |= credential_parts(value)
        if "://" in value:
            found |= url_passwords(value) if _URL_START.match(value) else set()  # a DSN, even one _URL cannot span
            for url in _URL.findall(value):
                found |= url_passwords(url)
        if name in _COMMAND_FIELDS and "control" in path:
            found |= command_secrets(value)
        yield from _usable(found)


def named_secret_values(data: object, environ: Mapping[str, str]) -> set[str]:
    """Values of the ``${VAR}`` references in raw target data whose variable names say they hold a secret.

    A reference's default (``${API_TOKEN:-dev-token}``) counts when it is the value used.
    """
    found: set[str] = set()
    for text in _strings(data):
        for match in _REFERENCE.finditer(text):
            name, default = match.group(1), match.group(2)
            if not is_secret_variable(name):
                continue
            value = environ.get(name) or default or ""
            if len(value) >= MIN_CHARS:
                found.add(value)
    return found


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
