"""A sign-off bundle's manifest and digest: what the bundle holds, and a fingerprint of it kept outside it.

The manifest (``manifest.json``) lists the sha256 and size of every file in the bundle but itself. That
alone proves nothing once someone rewrites the manifest too, so the **bundle digest** is a sha256 over
the canonical list of (relative path, sha256) of *every* file, manifest and summary included, and it is
kept outside the bundle (``<parent>/<NAME>.digest``) and printed for the caller to keep. With a key in
``$OPSGATE_SIGNOFF_KEY`` the same list is also signed with HMAC-SHA256, which a rewritten digest file
cannot match without the key. The key itself is never printed or stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

MANIFEST = "manifest.json"
SUMMARY = "SUMMARY.md"
KEY_ENV = "OPSGATE_SIGNOFF_KEY"
DIGEST_PREFIX = "sha256:"
HMAC_PREFIX = "hmac-sha256:"
CANONICAL_HEADER = b"opsgate-signoff-bundle-v1\n"
FORMAT = 1


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FileEntry(_Model):
    """One file of the bundle: its path relative to the bundle (``/``-separated), sha256 (hex), size (bytes)."""

    path: str
    sha256: str
    size: int


class RunEntry(_Model):
    """One run collected into the bundle (``runs/<kind>/``): its verdict and age when the bundle was made."""

    kind: str
    run_id: str
    path: str
    """Where its files are, relative to the bundle."""
    verdict: str
    counts: dict[str, int]
    started_at: str | None
    finished_at: str | None
    age_s: float
    """Wall-clock seconds from the run's end (its start if it has none) to the bundle's creation."""
    stale: bool
    """``age_s`` > the sign-off's ``max_age_s``."""
    info: dict[str, str]


class Figure(_Model):
    """A latency/error figure of one check, compared with the previous sign-off's same check.

    ``run``: the run kind it comes from (``load`` or ``gate``); ``check``: its id; ``stage``: the SLO stage
    (``short``/``full``), None for a gate. Figures are compared only when run, check and stage all match.
    """

    run: str
    check: str
    stage: str | None
    verdict: str
    p95_ms: float | None
    error_rate: float | None
    count: int | None


Measure = Literal["p95_ms", "error_rate"]


class Regression(_Model):
    """A figure worse than the previous sign-off's by more than the margin (see :mod:`opsgate.evidence.signoff`)."""

    run: str
    check: str
    measure: Measure
    previous: float
    current: float
    margin: float

    def line(self) -> str:
        """``load slo[send-message] p95 212.0 ms → 260.4 ms (+22.8%, margin 10%)``."""
        if self.measure == "p95_ms":
            shown = f"p95 {self.previous:.1f} ms → {self.current:.1f} ms"
        else:
            shown = f"error rate {self.previous:.4%} → {self.current:.4%}"
        change = f"+{(self.current / self.previous - 1):.1%}" if self.previous > 0 else f"from {self.previous:g}"
        return f"{self.run} {self.check} {shown} ({change}, margin {self.margin:.0%})"


class PreviousSignoff(_Model):
    """The sign-off compared with: its release, folder, creation time and digest."""

    release: str
    path: str
    created_at: str
    digest: str | None


class Manifest(_Model):
    """The ``manifest.json`` document of a sign-off bundle."""

    format: int = FORMAT
    release: str
    target: str
    environment: str
    created_at: str
    """ISO 8601 UTC."""
    opsgate_version: str
    tool_versions: dict[str, str]
    """The gate run's ``info`` (opsgate, Python and pytest versions, git sha, time scale...)."""
    max_age_s: float
    margin: float
    signed_off: bool
    """True only when the gate, drill and load runs are all present, fresh and passing, with no regression."""
    problems: list[str]
    runs: list[RunEntry]
    missing: list[str]
    figures: list[Figure]
    regressions: list[Regression]
    previous: PreviousSignoff | None
    coverage: str | None
    """The coverage line (``claims: V verified, ...``), None when the target has no claims registry."""
    files: list[FileEntry]
    """Every file of the bundle but manifest.json, sorted by path."""

    @property
    def created_at_unix(self) -> float:
        """``created_at`` as unix seconds."""
        return datetime.fromisoformat(self.created_at).timestamp()

    def write(self, bundle: Path) -> None:
        """Write ``<bundle>/manifest.json``."""
        (bundle / MANIFEST).write_text(self.model_dump_json(indent=2) + "\n")


def read_manifest(bundle: Path) -> Manifest:
    """``<bundle>/manifest.json`` read back; ValueError with one line naming the file and the problem."""
    path = bundle / MANIFEST
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "(document)"
        raise ValueError(f"{path}: {where}: {error['msg']}") from None


def file_sha256(path: Path) -> str:
    """The sha256 (hex) of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def scan(bundle: Path, *, exclude_manifest: bool) -> tuple[list[FileEntry], list[str]]:
    """Every regular file under ``bundle`` (sorted by relative path) and the relative paths of anything else
    (symlinks, sockets...), which a bundle must not hold: a symlink's target could change under a fixed digest."""
    files, odd = [], []
    for path in sorted(bundle.rglob("*")):
        relative = path.relative_to(bundle).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            odd.append(relative)
        elif path.is_file() and not (exclude_manifest and relative == MANIFEST):
            files.append(FileEntry(path=relative, sha256=file_sha256(path), size=path.stat().st_size))
    return files, odd


def canonical(files: Sequence[FileEntry]) -> bytes:
    """The bytes the digest and HMAC are computed over: a header and the sorted (path, sha256) pairs as JSON."""
    pairs = sorted([entry.path, entry.sha256] for entry in files)
    return CANONICAL_HEADER + json.dumps(pairs, separators=(",", ":"), ensure_ascii=True).encode()


def bundle_digest(files: Sequence[FileEntry]) -> str:
    """``sha256:<hex>`` over :func:`canonical` of every file of the bundle."""
    return DIGEST_PREFIX + hashlib.sha256(canonical(files)).hexdigest()


def bundle_hmac(files: Sequence[FileEntry], key: bytes) -> str:
    """``hmac-sha256:<hex>`` over :func:`canonical` of every file, with ``key``."""
    return HMAC_PREFIX + hmac.new(key, canonical(files), hashlib.sha256).hexdigest()


def signing_key() -> bytes | None:
    """The HMAC key from ``$OPSGATE_SIGNOFF_KEY`` (None when unset or empty)."""
    value = os.environ.get(KEY_ENV, "")
    return value.encode() if value else None


def digest_path(bundle: Path) -> Path:
    """Where a bundle's digest is kept: ``<parent>/<NAME>.digest``, beside the bundle, not in it."""
    return bundle.parent / f"{bundle.name}.digest"


class DigestRecord(_Model):
    """The contents of ``<NAME>.digest``: the bundle digest and, when a key was given, its HMAC."""

    digest: str
    hmac: str | None = None

    def write(self, path: Path) -> None:
        """Write one value a line (``sha256:...``, then ``hmac-sha256:...``)."""
        path.write_text(self.digest + "\n" + (self.hmac + "\n" if self.hmac else ""))

    @classmethod
    def read(cls, path: Path) -> DigestRecord:
        """Read a digest file; ValueError with one line naming it when it is not one."""
        try:
            lines = path.read_text().split()
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the digest file ({exc.strerror or exc})") from None
        digests = [line for line in lines if line.startswith(DIGEST_PREFIX)]
        macs = [line for line in lines if line.startswith(HMAC_PREFIX)]
        if len(digests) != 1 or len(macs) > 1 or len(lines) != len(digests) + len(macs):
            raise ValueError(f"{path}: expected a 'sha256:<hex>' line and optionally a 'hmac-sha256:<hex>' line")
        return cls(digest=digests[0], hmac=macs[0] if macs else None)


def normalise_digest(value: str) -> str:
    """A digest as given on the command line, with or without its ``sha256:`` prefix, in canonical form."""
    value = value.strip().lower()
    return value if value.startswith(DIGEST_PREFIX) else DIGEST_PREFIX + value


def same(a: str, b: str) -> bool:
    """Constant-time equality of two digests."""
    return hmac.compare_digest(a.encode(), b.encode())


def compare_files(listed: Sequence[FileEntry], found: Sequence[FileEntry]) -> list[str]:
    """One line per file changed, added or removed since ``listed`` (the manifest) was written."""
    before = {entry.path: entry for entry in listed}
    now = {entry.path: entry for entry in found}
    problems = []
    for path in sorted(before.keys() | now.keys()):
        old, new = before.get(path), now.get(path)
        if new is None:
            problems.append(f"removed: {path} (listed in {MANIFEST}, not in the bundle)")
        elif old is None:
            problems.append(f"added: {path} (in the bundle, not listed in {MANIFEST})")
        elif (old.sha256, old.size) != (new.sha256, new.size):
            problems.append(f"changed: {path} (sha256 {old.sha256[:12]}… in {MANIFEST}, now {new.sha256[:12]}…, "
                            f"{old.size} → {new.size} bytes)")  # fmt: skip
    return problems


class Verification(_Model):
    """What :func:`verify_bundle` found: every problem (one line each; none: intact) and what was compared."""

    problems: list[str]
    digest: str
    """The digest recomputed from the bundle's files."""
    files: int
    """How many files the bundle holds (manifest.json included)."""
    compared_with: str
    """Where the expected digest came from (``--expect-digest`` or the digest file's path)."""
    hmac_recorded: bool
    hmac_checked: bool


def verify_bundle(bundle: Path, *, expect_digest: str | None, key: bytes | None) -> Verification:
    """Check ``bundle``: its files against the manifest (changed, added, removed); the digest of every file
    against ``expect_digest`` or else the digest file beside the bundle; with ``key``, the HMAC recorded there."""
    problems: list[str] = []
    files, odd = scan(bundle, exclude_manifest=False)
    problems += [f"not a regular file: {path} (a bundle holds only regular files)" for path in odd]
    try:
        manifest = read_manifest(bundle)
    except ValueError as exc:
        problems.append(str(exc))
    else:
        problems += compare_files(manifest.files, [entry for entry in files if entry.path != MANIFEST])
    digest = bundle_digest(files)
    beside = digest_path(bundle)
    record: DigestRecord | None = None
    if beside.exists():
        try:
            record = DigestRecord.read(beside)
        except ValueError as exc:
            problems.append(str(exc))
    if expect_digest is not None:
        compared_with = "--expect-digest"
        if not same(digest, normalise_digest(expect_digest)):
            problems.append(f"digest mismatch: the bundle's digest is {digest}, --expect-digest gave "
                            f"{normalise_digest(expect_digest)}")  # fmt: skip
    else:
        compared_with = str(beside)
        if record is not None and not same(digest, record.digest):
            problems.append(f"digest mismatch: the bundle's digest is {digest}, {beside} records {record.digest}")
        elif not beside.exists():
            problems.append(f"no digest to compare with: {beside} is missing and no --expect-digest was given")
    recorded = record is not None and record.hmac is not None
    if key is not None:
        if record is None or record.hmac is None:
            problems.append(f"no HMAC recorded in {beside} to check with {KEY_ENV}")
        elif not same(bundle_hmac(files, key), record.hmac):
            problems.append(f"HMAC mismatch: {beside} records an HMAC that {KEY_ENV} does not reproduce "
                            "(the bundle or the digest file changed, or the key differs)")  # fmt: skip
    return Verification(problems=problems, digest=digest, files=len(files), compared_with=compared_with,
                        hmac_recorded=recorded, hmac_checked=key is not None and recorded)  # fmt: skip
