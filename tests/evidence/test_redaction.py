"""Redaction: a secret is masked in every form it reaches an artifact in, in every file a run writes.

The unit tests pin each form on its own (literal, percent-encoded, base64 alone and inside Basic auth, JSON-escaped,
``repr``, HTML/XML-escaped, and one inside another). The end-to-end test places canaries in every secret field of
an external target pointing at the session's platform, makes them reach the evidence through real paths (a service
reflecting credentials in its error body, a team locustfile logging its settings, a control command echoing its
token into a drill's failure), runs ``opsgate gate`` and ``opsgate drill``, and greps everything they wrote.
"""

from __future__ import annotations

import base64
import html
import json
import re
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, quote_plus
from xml.sax.saxutils import escape as xml_escape

import pytest

from helpers import run_opsgate
from opsgate.environments.local import LocalEnvironment
from opsgate.evidence.records import CheckRecord, TimelineEvent
from opsgate.evidence.redact import MASK, Redactor

CANARY = 'Cn4ry/+"\\&<@: é-x9Q'
"""Every form differs from the literal: ``/ +`` (URL), ``" \\`` (JSON, repr), ``& < "`` (HTML), space, ``é``."""

FORMS: dict[str, Callable[[str], str]] = {
    "literal": lambda s: s,
    "quote": quote,
    "quote-safe-none": lambda s: quote(s, safe=""),
    "quote-plus": quote_plus,
    "quote-lowercase": lambda s: re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(s, safe="")),
    "base64": lambda s: base64.b64encode(s.encode()).decode(),
    "base64-urlsafe": lambda s: base64.urlsafe_b64encode(s.encode()).decode(),
    "basic-auth": lambda s: "Basic " + base64.b64encode(f"ops:{s}".encode()).decode(),
    "json": lambda s: json.dumps(s)[1:-1],
    "json-utf8": lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    "json-html-safe": lambda s: json.dumps(s)[1:-1].replace("<", "\\u003c").replace("&", "\\u0026"),
    "repr": lambda s: repr(s)[1:-1],
    "ascii": lambda s: ascii(s)[1:-1],
    "exception": lambda s: str(ValueError(f"rejected {s!r}")),
    "bytes-repr": lambda s: repr(s.encode())[2:-1],
    "html": html.escape,
    "html-no-quotes": lambda s: html.escape(s, quote=False),
    "xml-attribute": lambda s: xml_escape(s, {'"': "&quot;"}),
    "json-in-json": lambda s: json.dumps(json.dumps(s))[1:-1],
    "json-in-html": lambda s: html.escape(json.dumps(s)[1:-1]),
    "repr-in-json": lambda s: json.dumps(repr(s))[1:-1],
    "html-in-json": lambda s: json.dumps(html.escape(s))[1:-1],
    "json-in-json-in-json": lambda s: json.dumps(json.dumps(json.dumps(s)))[1:-1],
}


def forms_of(secret: str) -> dict[str, str]:
    """Each form's text of ``secret`` (the exception form is the whole message)."""
    return {name: encode(secret) for name, encode in FORMS.items()}


# --- the redactor, form by form ------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", list(FORMS))
def test_every_form_is_masked(form: str) -> None:
    encoded = FORMS[form](CANARY)
    assert form == "literal" or CANARY not in encoded  # the form really differs from the secret
    cleaned = Redactor([CANARY]).text(f"before {encoded} after")
    assert cleaned.startswith("before ") and cleaned.endswith(" after") and MASK in cleaned
    assert encoded not in cleaned and "Cn4ry" not in cleaned and "x9Q" not in cleaned, cleaned


@pytest.mark.parametrize("prefix", ["", "a", "ab", "abc", "ops:", "user-name:"])
def test_base64_found_at_every_byte_alignment(prefix: str) -> None:
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        token = encode(f"{prefix}{CANARY} and more".encode()).decode()
        assert Redactor([CANARY]).text(f"Authorization: Basic {token}\n") == f"Authorization: Basic {MASK}\n"


def test_short_secret_matches_only_its_own_base64() -> None:
    redactor = Redactor(["k3y!z"])  # too short for a stable core inside longer base64
    assert redactor.text(base64.b64encode(b"k3y!z").decode()) == MASK
    assert redactor.text("plain words and a k3y in them") == "plain words and a k3y in them"


def test_nothing_else_is_touched() -> None:
    text = 'status 200 {"ready": true} Cn4ry/+"\\ x9Q <@: e-x9Q dXNlcjpwYXNz'
    assert Redactor([CANARY]).text(text) == text  # pieces shorter than half the secret are not the secret


@pytest.mark.parametrize("cut", range(1, len(CANARY)))
def test_a_copy_cut_off_by_truncation_is_masked_when_half_of_it_remains(cut: int) -> None:
    """A message shortened before it was masked (``body[:200]``, a log tail) holds a piece of the secret."""
    half = -(-len(CANARY) // 2)
    head, tail = CANARY[:cut], CANARY[cut:]
    pieces = [(head, len(head)), (tail, len(tail)), (json.dumps(head)[1:-1], len(head)), (html.escape(tail), len(tail))]
    for piece, kept in pieces:
        cleaned = Redactor([CANARY]).text(f"got: {piece}")
        assert cleaned == (f"got: {MASK}" if kept >= half else f"got: {piece}"), (kept, cleaned)


def test_records_are_masked_before_they_are_rendered() -> None:
    event = TimelineEvent(at=1.0, what="fault applied", detail=f"--token '{CANARY}'")
    record = CheckRecord(id="drill[x]", kind="drill", verdict="fail", message=f"token {CANARY!r}", timeline=[event])
    masked = Redactor([CANARY]).deep(record)
    assert masked.message == f"token '{MASK}'" and masked.timeline[0].detail == f"--token '{MASK}'"
    assert masked.id == "drill[x]" and record.message == f"token {CANARY!r}"  # a copy: the original is kept


def test_short_and_empty_secrets_are_ignored() -> None:
    assert Redactor(["", "abc"]).text("abc abc") == "abc abc"


def test_a_secret_containing_another_is_masked_whole() -> None:
    redactor = Redactor(["s3cret", "s3cret-and-more"])
    assert redactor.text("x s3cret-and-more y s3cret z") == f"x {MASK} y {MASK} z"


def test_json_stays_json_when_masking_its_text_would_break_it(tmp_path: Path) -> None:
    # The literal secret `abc"` matches across the end of the string "abc": a textual mask breaks the document.
    document = json.dumps({"k": "abc", "j": 'x abc" y'})
    assert json.loads(Redactor(['abc"']).json_text(document)) == {"k": "abc", "j": f"x {MASK} y"}
    (tmp_path / "summary.json").write_text(document)
    Redactor(['abc"']).tree(tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text()) == {"k": "abc", "j": f"x {MASK} y"}


# --- every file of a run directory ---------------------------------------------------------------------------------


def test_tree_masks_every_text_file_whatever_its_name(tmp_path: Path) -> None:
    run = tmp_path / "run"
    names = ["logs/api.out", "logs/worker.err", "logs/redis", "slo/row/locust.json", "slo/row/locust.html",
             "slo/row/locust_stats.csv", "slo/row/locust.log", "junit.xml", "drills/x.md", "notes.TXT"]  # fmt: skip
    for name in names:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(f"token={CANARY}\n")
    (run / "summary.json").write_text(json.dumps({"message": f"got {CANARY!r}"}))
    (run / "stray-byte.log").write_bytes(b"\xff\xfe not UTF-8, then " + CANARY.encode() + b"\n")
    png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + CANARY.encode() + bytes(range(256))
    (run / "screenshots").mkdir()
    (run / "screenshots" / "page.png").write_bytes(png)
    outside = tmp_path / "outside.log"
    outside.write_text(CANARY)
    (run / "logs" / "link.log").symlink_to(outside)

    changed = Redactor([CANARY]).tree(run)

    assert {p.relative_to(run).as_posix() for p in changed} == {*names, "summary.json", "stray-byte.log"}
    for name in names:
        assert (run / name).read_text() == f"token={MASK}\n"
    assert json.loads((run / "summary.json").read_text()) == {"message": f"got '{MASK}'"}
    assert (run / "stray-byte.log").read_bytes() == b"\xff\xfe not UTF-8, then " + MASK.encode() + b"\n"
    assert (run / "screenshots" / "page.png").read_bytes() == png  # binary: left alone, no crash
    assert outside.read_text() == CANARY  # symlinks are not followed out of the run directory
    assert Redactor([CANARY]).tree(run) == []  # idempotent


def test_megabytes_of_logs_with_one_secret_get_exactly_one_mask() -> None:
    """A few MB of log lines around one secret: that one is masked, nothing else (speed: bench/redaction_speed.py)."""
    line = 'INFO 127.0.0.1 "GET /v1/messages/8c1f0a HTTP/1.1" 200 {"status": "delivered", "to": "+61412345678"}\n'
    text = line * 40_000 + f"ERROR login with {CANARY!r} failed\n" + line * 10_000
    cleaned = Redactor([CANARY, "s3cret-token-value", "another/secret+value"]).text(text)
    assert len(text) > 4_000_000 and cleaned.count(MASK) == 1
    untouched = [row for row in cleaned.splitlines() if MASK not in row]
    assert untouched == [row for row in text.splitlines() if not row.startswith("ERROR")]


# --- end to end: canaries in every secret field, a real gate and a real drill, every file grepped -------------------


def canary(tag: str, *, ascii_only: bool = False) -> str:
    """A distinct canary per field, in both halves (each finding rule must work on its own: half of a canary is
    masked as a cut-off copy of it); HTTP header values stay ASCII."""
    return f'{tag}-Cn4ry/+"\\&<@: {"" if ascii_only else "é"}-{tag}'


GATE_CANARIES = {
    "CANARY_LISTED": canary("listed"),  # only listed in `secrets:`; the team's locustfile logs it and queries with it
    "CANARY_BASIC": canary("basic"),  # the echo service URL's userinfo: httpx sends it as HTTP Basic auth
    "CANARY_DB": canary("db"),  # the DSN's password (percent-encoded there)
    "CANARY_REDIS": canary("redis"),  # the Redis URL's password
    "CANARY_BEARER": canary("bearer", ascii_only=True),  # Authorization: Bearer on a flow step
    "CANARY_HDR": canary("hdr", ascii_only=True),  # X-Api-Key on the same step
    "CANARY_SIGN": canary("sign"),  # the step's HMAC signing secret
    "CANARY_AUTH": canary("auth"),  # auth.api_token
    "CANARY_SVC": canary("svc"),  # auth.service_password
}
DRILL_CANARIES = {
    "CANARY_CTL": canary("ctl"),  # --token on the control command line
    "CANARY_CTLPW": canary("ctlpw"),  # CTL_PASSWORD=... assigned on it
}

GATE_TARGET = """\
name: canary-staging
environment: staging
provider: external
time_scale: 0.02
secrets: [CANARY_LISTED]
services:
  api:
    url: "${API_URL}"
    health: [{path: /healthz}]
  echo:    # answers with the credentials it was sent: its error body reaches the check's message
    url: "http://ops:${CANARY_BASIC_URL}@127.0.0.1:${ECHO_PORT}"
    health: [{path: /whoami, expect: {status: 418}}]
  mirror:  # the same server, no userinfo (httpx would send that as Basic auth instead of the step's header)
    url: "http://127.0.0.1:${ECHO_PORT}"
datastores:
  postgres: {dsn: "postgresql://opsgate:${CANARY_DB_URL}@127.0.0.1:${PG_PORT}/opsgate"}
  redis: {url: "redis://:${CANARY_REDIS_URL}@127.0.0.1:${REDIS_PORT}/0"}
auth: {tenant_id: "${TENANT_ID}", api_token: "${CANARY_AUTH}", service_user: ops-bot, service_password: "${CANARY_SVC}"}
flows:
  - name: credentials-reflected
    steps:
      - service: mirror
        path: /flow
        headers: {Authorization: "Bearer ${CANARY_BEARER}", X-Api-Key: "${CANARY_HDR}"}
        sign: {header: x-signature, secret: "${CANARY_SIGN}"}
        expect: {status: 418}
slos:
  - name: team-journey
    locustfile: journey.py
    p95_ms: 1000
    honesty: {min_samples: 5}
    load: {model: closed, users: 1, rate_per_s: 10, duration: 2s, short_duration: 2s}
"""

# A team's journey that does what journeys do: logs its settings at start (tokens and all) and passes its API key
# in the query string (so Locust names the request after the URL), and reports the key in a failure message.
JOURNEY = """\
import logging
import os
from urllib.parse import quote_plus

from locust import FastHttpUser, constant, task

from opsgate.slo import recording  # noqa: F401

SETTINGS = {k: v for k, v in sorted(os.environ.items()) if k.startswith("CANARY_")}
print("journey settings:", " ".join(f"{k}={v}" for k, v in SETTINGS.items()), flush=True)
logging.warning("journey settings: %r", SETTINGS)


class Journey(FastHttpUser):
    wait_time = constant(0.1)

    @task
    def readyz(self):
        key = SETTINGS["CANARY_LISTED"]
        with self.client.get(f"/readyz?api_key={quote_plus(key)}", catch_response=True) as response:
            response.failure(f"api key {key!r} was not accepted (HTTP {response.status_code})")
"""

# A kubectl-like client that prints its credentials with the state it reads, and whose `stop` changes nothing:
# the drill's fault does not show, and the exception saying so quotes what `read` printed.
CTL = """\
import os
import sys

if sys.argv[-1] == "read":
    token = sys.argv[sys.argv.index("--token") + 1]
    print(f"replicas=1 token={token} password={os.environ.get('CTL_PASSWORD', '')}")
"""

DRILL_TARGET = """\
name: canary-drill
environment: staging
provider: external
time_scale: 0.02
services:
  api:
    url: "${API_URL}"
    health: [{path: /healthz}]
  scaler:
    url: "${API_URL}"
    control:
      kind: command
      read: "CTL_PASSWORD='${CANARY_CTLPW}' @PY@ @CTL@ --token '${CANARY_CTL}' read"
      stop: "CTL_PASSWORD='${CANARY_CTLPW}' @PY@ @CTL@ --token '${CANARY_CTL}' stop"
      start: "CTL_PASSWORD='${CANARY_CTLPW}' @PY@ @CTL@ --token '${CANARY_CTL}' start"
      timeout: 30s
drills:
  - name: canary-scale
    objective: Scale the canary part to zero and back; its credentials must reach no evidence.
    fault: {stop: scaler}
"""


class _Echo(BaseHTTPRequestHandler):
    """Answers 200 with the credential headers it received, as JSON (like a debug endpoint in a staging build)."""

    def do_GET(self) -> None:
        sent = {name: self.headers.get(name) for name in ("authorization", "x-api-key") if self.headers.get(name)}
        body = json.dumps(sent).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    """``name:form`` of every secret form found in ``text``."""
    found = []
    for name, value in secrets.items():
        for form, encoded in forms_of(value).items():
            if form != "exception" and encoded in text:
                found.append(f"{name}:{form}")
    return found


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        yield from (p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def test_canaries_in_every_secret_field_reach_no_artifact(
    platform: LocalEnvironment, tmp_path: Path, echo_port: int
) -> None:
    reports, drill_logs, state = tmp_path / "reports", tmp_path / "drill-logs", tmp_path / "state"
    (tmp_path / "journey.py").write_text(JOURNEY)
    (tmp_path / "ctl.py").write_text(CTL)
    (tmp_path / "gate.yaml").write_text(GATE_TARGET)
    (tmp_path / "drill.yaml").write_text(
        DRILL_TARGET.replace("@PY@", sys.executable).replace("@CTL@", str(tmp_path / "ctl.py"))
    )
    ports = platform.ports
    common = {"OPSGATE_REPORTS_DIR": str(reports), "OPSGATE_STATE_DIR": str(state), "API_URL": platform.api_url}
    gate_env = {**common, **GATE_CANARIES, "ECHO_PORT": str(echo_port), "PG_PORT": str(ports.postgres),
                "REDIS_PORT": str(ports.redis), "TENANT_ID": platform.tenant_id,
                **{f"{name}_URL": quote(GATE_CANARIES[name], safe="") for name in ("CANARY_BASIC", "CANARY_DB",
                                                                                  "CANARY_REDIS")}}  # fmt: skip
    # The process-level secrets the gate's own environment must not leak either (the URL spellings are read there).
    gate_secrets = {**GATE_CANARIES, **{k: v for k, v in gate_env.items() if k.endswith("_URL") and "CANARY" in k}}

    gate = run_opsgate(["gate", "--target", str(tmp_path / "gate.yaml"), "--allow-destructive"], timeout_s=180,
                       env=gate_env)  # fmt: skip
    drill = run_opsgate(
        ["drill", "--target", str(tmp_path / "drill.yaml"), "--allow-destructive", "--match", "canary",
         "--chaos", str(tmp_path / "no-chaos"), "--drill-logs", str(drill_logs)],
        timeout_s=120, env={**common, **DRILL_CANARIES},
    )  # fmt: skip

    runs = sorted(p for p in reports.iterdir() if p.is_dir() and not p.is_symlink())
    assert len(runs) == 2, (runs, gate.stdout[-2000:], drill.stdout[-2000:])
    gate_run, drill_run = runs
    gate_summary = json.loads((gate_run / "summary.json").read_text())
    drill_summary = json.loads((drill_run / "summary.json").read_text())

    # The canaries did reach the evidence before it was redacted: each place that carried one shows the mask.
    checks = {c["id"]: c for c in gate_summary["checks"]}
    echo = checks["health[echo:/whoami]"]
    assert echo["verdict"] == "fail" and echo["message"].count(MASK) >= 2, echo  # URL password + Basic credentials
    flow = next(c for c in gate_summary["checks"] if c["kind"] == "flow")
    assert flow["verdict"] == "fail" and flow["message"].count(MASK) >= 2, flow  # Bearer token + API key echoed
    locust_log = (gate_run / "slo" / "team-journey" / "locust.log").read_text()
    settings_lines = [line for line in locust_log.splitlines() if "journey settings:" in line]
    assert len(settings_lines) == 2 and all(line.count(MASK) >= len(gate_secrets) for line in settings_lines)
    assert MASK in (gate_run / "slo" / "team-journey" / "locust.html").read_text()
    for name in ("junit.xml", "report.html"):
        assert MASK in (gate_run / name).read_text(), name
    assert MASK in gate.stdout  # the terminal table shows the failing checks' (masked) messages
    (only_drill,) = drill_summary["checks"]
    assert only_drill["verdict"] == "inconclusive" and "still" in only_drill["message"], only_drill
    assert only_drill["message"].count(MASK) >= 4, only_drill  # read's output (repr), and the stop command line
    (drill_log,) = (drill_logs / "staging").glob("*-canary-scale.md")
    assert MASK in drill_log.read_text() and (drill_run / "drills" / drill_log.name).is_file()
    # The steps table shortens each detail: it must shorten the masked message (masking a shortened message
    # would find a secret cut in two). The message is long enough to be shortened, with canaries before the cut.
    (row,) = [
        line for line in drill_log.read_text().splitlines() if line.startswith("| ") and "drill inconclusive" in line
    ]
    shortened = only_drill["message"].replace("|", "\\|")[:300]
    assert len(only_drill["message"]) > 300 and MASK in shortened and row.endswith(f" | {shortened} |"), row

    # ...and no form of any canary is left anywhere: the run directories, the drill logs, the terminal output.
    for path in files_under(gate_run, drill_run, drill_logs):
        text = path.read_bytes().decode("utf-8", errors="surrogateescape")
        secrets = gate_secrets if gate_run in path.parents else DRILL_CANARIES
        assert not leaks(text, secrets), (path, leaks(text, secrets))
        assert "Cn4ry" not in text, path  # nor any other spelling that keeps the canary's letters
    for run in (gate, drill):
        assert not leaks(run.stdout + run.stderr, {**gate_secrets, **DRILL_CANARIES}), run.stdout[-3000:]
        assert "Cn4ry" not in run.stdout + run.stderr, run.stdout[-3000:]
