"""Browser probe: a page in headless Chromium, driven by a check's steps, read like a user would.

Every request is routed: the page may talk to its own origin only (for a local file: ``file://``
and ``data:``); anything else is aborted and reported, so a check never leaks a request to a
third party. Playwright's routes see only the first URL of a redirect chain, so a second guard
(Chromium's own request interception, per page) stops redirect hops out of the origin too, and a
response from another origin that still got through is reported as not stopped.

Console errors, uncaught page errors and error pages become problems. Every wait is bounded by the
check's time budget; a timeout is a problem naming the step, never a hang. Values typed into
fields (passwords) are masked in everything a result carries, and in the screenshot.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    Response,
    Route,
    WebSocketRoute,
    async_playwright,
)
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from opsgate.config import BrowserCheck, BrowserStep, HttpSource

__all__ = ["DEFAULT_CHROMIUM", "BrowserResult", "chromium", "inspect_file", "run_browser_check"]

DEFAULT_CHROMIUM = "/usr/bin/chromium"
"""Debian's chromium; the environment variable ``OPSGATE_CHROMIUM`` overrides it."""
CHROMIUM_ARGS = ("--disable-gpu", "--disable-dev-shm-usage")
"""Added to Playwright's own flags (which already include --headless and --no-sandbox)."""
LAUNCH_TIMEOUT_S = 30.0
"""Seconds Chromium may take to start."""
SCREENSHOT_TIMEOUT_S = 10.0
"""Seconds the final screenshot may take (on top of the check's budget)."""
CLOSE_TIMEOUT_S = 10.0
"""Seconds closing a browser context or the browser may take before it is abandoned."""
SETTLE_S = 2.0
"""At most this many seconds to let a local file's late requests and scripts run after load."""
TEXT_LIMIT = 4000
FILE_TEXT_LIMIT = 2_000_000  # a whole report's text, e.g. to find every check id in it
"""Characters kept of a text read from the page (observed values)."""
MESSAGE_LIMIT = 300
"""Characters kept of a page-supplied text inside a problem (console messages, URLs)."""
_MARGIN_S = 0.25  # Playwright's own timeout fires this much before the check's, so the step is named
_MASK = "***"


@dataclass
class BrowserResult:
    """What one browser check saw: problems (empty = pass), texts read per selector, screenshot path.

    ``observed`` and ``expected`` map a selector to the text the page showed and the text it
    should show; ``duration_s`` is wall time in seconds, launch and screenshot included.
    """

    check: str
    problems: list[str]
    observed: dict[str, str]
    expected: dict[str, str]
    console_errors: list[str]
    blocked_requests: list[str]
    """Requests to other origins, aborted before they left the browser."""
    screenshot: Path | None
    duration_s: float

    @property
    def passed(self) -> bool:
        """True when the check found no problem."""
        return not self.problems


# --- the browser ------------------------------------------------------------------------------


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Launch headless Chromium (``OPSGATE_CHROMIUM`` or Debian's) and close it on the way out, also on error."""
    path = os.environ.get("OPSGATE_CHROMIUM") or DEFAULT_CHROMIUM
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError(f"chromium not found at {path}: apt-get install chromium (or set OPSGATE_CHROMIUM)")
    async with async_playwright() as playwright:
        try:
            browser = await playwright.chromium.launch(
                executable_path=path, headless=True, args=list(CHROMIUM_ARGS), timeout=LAUNCH_TIMEOUT_S * 1000
            )
        except PlaywrightError as exc:
            raise RuntimeError(f"chromium at {path} did not start: {_first_line(exc.message)}") from exc
        try:
            yield browser
        finally:
            with suppress(PlaywrightError, TimeoutError):
                await asyncio.wait_for(browser.close(), CLOSE_TIMEOUT_S)


# --- checks -----------------------------------------------------------------------------------


async def run_browser_check(
    check: BrowserCheck,
    base_url: str,
    *,
    screenshot: Path,
    resolve: Callable[[HttpSource], Awaitable[str]],
    timeout_s: float = 30.0,
    browser: Browser | None = None,
) -> BrowserResult:
    """Play ``check``'s steps against ``base_url``, then compare what its selectors show.

    ``resolve`` reads the API value an ``equals`` expectation compares with. Steps and
    expectations share one budget of ``timeout_s`` seconds; the full-page screenshot is taken at
    the end in any case. Pass ``browser`` to reuse one (saves about a second per check);
    otherwise Chromium is launched and closed here. Raises only when Chromium cannot start.
    """
    started = time.perf_counter()
    secrets = _fill_values(check.steps)
    origin = _origin(base_url)
    watch = _Watch(lambda url: url.startswith("data:") or _origin(url) == origin, secrets)
    observed: dict[str, str] = {}
    expected: dict[str, str] = {}
    async with _page(browser, watch) as page:
        deadline = time.monotonic() + timeout_s
        try:
            await asyncio.wait_for(
                _play(page, check, base_url, resolve, watch, observed, expected, deadline), timeout_s
            )
        except TimeoutError:
            watch.problem(f"{watch.doing}: the check's {timeout_s:g} s ran out ({_where(page, watch)})")
        masks = [page.locator(selector) for step in check.steps for selector in step.fill or {}]
        shot = await _screenshot(page, screenshot, watch, masks)
    return watch.result(check.name, observed, expected, shot, time.perf_counter() - started)


async def inspect_file(
    path: Path, *, screenshot: Path, timeout_s: float = 30.0, browser: Browser | None = None
) -> BrowserResult:
    """Open a local HTML file (file://) as a user would: console errors, any request leaving the file, its text.

    ``observed`` holds the page's ``title`` and ``text`` (the body's visible text). Only
    ``file://`` and ``data:`` requests are allowed; anything else is aborted and reported.
    """
    started = time.perf_counter()
    watch = _Watch(lambda url: url.startswith(("file:", "data:")), ())
    observed: dict[str, str] = {}
    if not path.is_file():
        watch.problem(f"no such file: {path}")
        return watch.result(str(path), observed, {}, None, time.perf_counter() - started)
    async with _page(browser, watch) as page:
        deadline = time.monotonic() + timeout_s
        try:
            await asyncio.wait_for(_open_file(page, path, watch, observed, deadline), timeout_s)
        except TimeoutError:
            watch.problem(f"{watch.doing}: the check's {timeout_s:g} s ran out ({_where(page, watch)})")
        shot = await _screenshot(page, screenshot, watch, [])
    return watch.result(str(path), observed, {}, shot, time.perf_counter() - started)


# --- internals --------------------------------------------------------------------------------


class _Watch:
    """Listens to one browser context: routes requests, collects console and page errors, names the step."""

    def __init__(self, allowed: Callable[[str], bool], secrets: Sequence[str]) -> None:
        self._allowed = allowed
        # A page may echo a typed value URL-encoded (a query string): mask those spellings too.
        spellings = {spelling for s in secrets if s for spelling in (s, quote(s, safe=""), quote_plus(s))}
        self._secrets = sorted(spellings, key=len, reverse=True)
        self._reported_urls: set[str] = set()
        self._leaked: set[str] = set()
        self.problems: list[str] = []
        self.console_errors: list[str] = []
        self.blocked: list[str] = []
        self.doing = "opening the page"
        """What the check is doing now (``step 2 (fill input[name=password])``), for timeout messages."""
        self.last_status: int | None = None
        """HTTP status of the main frame's latest document."""

    def redact(self, text: str, limit: int = MESSAGE_LIMIT) -> str:
        """``text`` from the page with typed-in values masked, cut to ``limit`` characters."""
        for secret in self._secrets:
            text = text.replace(secret, _MASK)
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def problem(self, text: str) -> None:
        self.problems.append(self.redact(text, limit=2 * MESSAGE_LIMIT))

    async def attach(self, context: BrowserContext) -> None:
        await context.route("**/*", self._route)
        await context.route_web_socket(re.compile(r".*"), self._route_web_socket)

    async def listen(self, page: Page) -> None:
        """Collect the page's errors and guard its redirect hops (also for pages it opens later)."""
        page.on("console", self._console)
        page.on("pageerror", self._page_error)
        page.on("response", self._response)
        page.on("popup", self.listen)
        await self._guard(page)

    async def _guard(self, page: Page) -> None:
        """Intercept every request of ``page`` in Chromium, redirect hops included, and fail those leaving."""
        session = await page.context.new_cdp_session(page)

        async def paused(event: dict[str, Any]) -> None:
            url = str(event["request"]["url"])
            with suppress(PlaywrightError):  # the session ends with the page
                if self._allowed(url):
                    await session.send("Fetch.continueRequest", {"requestId": event["requestId"]})
                else:
                    self._block(url)
                    await session.send(
                        "Fetch.failRequest", {"requestId": event["requestId"], "errorReason": "BlockedByClient"}
                    )

        session.on("Fetch.requestPaused", paused)
        await session.send("Fetch.enable", {"patterns": [{"urlPattern": "*", "requestStage": "Request"}]})

    async def _route(self, route: Route) -> None:
        url = route.request.url
        with suppress(PlaywrightError):  # the page may close while a request is in flight
            if self._allowed(url):
                await route.continue_()
            else:
                self._block(url)
                await route.abort("blockedbyclient")

    async def _route_web_socket(self, socket: WebSocketRoute) -> None:
        with suppress(PlaywrightError):
            if self._allowed(socket.url.replace("ws", "http", 1)):
                socket.connect_to_server()
            else:
                self._block(socket.url)
                await socket.close(code=1008, reason="blocked by opsgate")

    def _block(self, url: str) -> None:
        self._reported_urls.add(url)
        shown = self.redact(url)
        if shown not in self.blocked:
            self.blocked.append(shown)
            self.problem(f"request left the page's origin: {shown}")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        # Chromium logs each blocked request and each error page again; both are reported already.
        if message.text.startswith("Failed to load resource") and (
            "ERR_BLOCKED_BY_CLIENT" in message.text or message.location.get("url") in self._reported_urls
        ):
            return
        text = self.redact(message.text)
        self.console_errors.append(text)
        self.problem(f"console error: {text}")

    def _page_error(self, error: PlaywrightError) -> None:
        text = self.redact(f"{error.name or 'Error'}: {error.message}")
        self.console_errors.append(text)
        self.problem(f"uncaught page error: {text}")

    def _response(self, response: Response) -> None:
        if not self._allowed(response.url) and response.url not in self._leaked:
            self._leaked.add(response.url)
            self.problem(f"request left the page's origin and was not stopped: {self.redact(response.url)}")
        request = response.request
        if not request.is_navigation_request() or request.frame.parent_frame is not None:
            return
        self.last_status = response.status
        if response.status >= 400:
            self._reported_urls.add(response.url)
            self.problem(f"page answered HTTP {response.status} at {_path(response.url)}")

    def result(
        self, check: str, observed: dict[str, str], expected: dict[str, str], shot: Path | None, duration_s: float
    ) -> BrowserResult:
        return BrowserResult(
            check=check,
            problems=list(self.problems),
            observed=observed,
            expected=expected,
            console_errors=list(self.console_errors),
            blocked_requests=list(self.blocked),
            screenshot=shot,
            duration_s=round(duration_s, 3),
        )


@asynccontextmanager
async def _page(browser: Browser | None, watch: _Watch) -> AsyncIterator[Page]:
    """A fresh page in its own context, watched by ``watch``; context (and a browser launched here) closed after."""
    async with AsyncExitStack() as stack:
        if browser is None:
            browser = await stack.enter_async_context(chromium())
        context = await browser.new_context(service_workers="block", accept_downloads=False)
        stack.push_async_callback(_close, context)
        await watch.attach(context)
        page = await context.new_page()
        await watch.listen(page)
        yield page


async def _close(context: BrowserContext) -> None:
    with suppress(PlaywrightError, TimeoutError):
        await asyncio.wait_for(context.close(), CLOSE_TIMEOUT_S)


async def _play(
    page: Page,
    check: BrowserCheck,
    base_url: str,
    resolve: Callable[[HttpSource], Awaitable[str]],
    watch: _Watch,
    observed: dict[str, str],
    expected: dict[str, str],
    deadline: float,
) -> None:
    """Run the steps (stopping at the first failure), then check every expectation."""
    for number, step in enumerate(check.steps, 1):
        if not await _step(page, number, step, base_url, watch, deadline):
            return
    for number, expect in enumerate(check.expect, 1):
        selector = expect.selector
        watch.doing = f"expect {number} ({selector})"
        text = await _read(page, selector, watch, deadline)
        if text is None:
            continue
        observed[selector] = watch.redact(text, TEXT_LIMIT)
        if expect.text is not None:
            expected[selector] = watch.redact(expect.text.strip(), TEXT_LIMIT)
            if text != expect.text.strip():
                watch.problem(f"{selector}: page shows {_q(text)}, expected {_q(expect.text.strip())}")
        if expect.equals is not None:
            source = expect.equals
            try:
                value = str(await resolve(source)).strip()
            except Exception as exc:
                watch.problem(
                    f"{selector}: could not read the API value ({source.service} {source.path} {source.field}): "
                    f"{type(exc).__name__}: {exc}"
                )
                continue
            expected[selector] = watch.redact(value, TEXT_LIMIT)
            if text != value:
                watch.problem(f"{selector}: page shows {_q(text)}, API says {_q(value)}")


async def _step(page: Page, number: int, step: BrowserStep, base_url: str, watch: _Watch, deadline: float) -> bool:
    """Do one step; False (with a problem naming it) when it failed."""
    started = time.monotonic()
    try:
        if step.goto is not None:
            watch.doing = f"step {number} (goto {step.goto})"
            await page.goto(_join(base_url, step.goto), wait_until="load", timeout=_ms(deadline))
        elif step.fill is not None:
            for selector, value in step.fill.items():
                watch.doing = f"step {number} (fill {selector})"
                await page.locator(selector).fill(value, timeout=_ms(deadline))
        elif step.click is not None:
            watch.doing = f"step {number} (click {step.click})"
            await page.locator(step.click).click(timeout=_ms(deadline))
            await page.wait_for_load_state("load", timeout=_ms(deadline))
        elif step.see is not None:
            watch.doing = f"step {number} (see {step.see})"
            await page.locator(step.see).first.wait_for(state="visible", timeout=_ms(deadline))
    except PlaywrightTimeoutError:
        waited = time.monotonic() - started
        target = "the page to load" if step.goto is not None else "the element to be ready"
        if step.see is not None:
            target = "it to be shown"
        watch.problem(f"{watch.doing}: timed out after {waited:.1f} s waiting for {target} ({_where(page, watch)})")
        return False
    except PlaywrightError as exc:
        watch.problem(f"{watch.doing}: {_first_line(exc.message)}")
        return False
    return True


async def _read(page: Page, selector: str, watch: _Watch, deadline: float) -> str | None:
    """The stripped visible text of the one element ``selector`` matches, or None (with a problem)."""
    started = time.monotonic()
    locator = page.locator(selector)
    try:
        await locator.first.wait_for(state="visible", timeout=_ms(deadline))
        count = await locator.count()
        if count > 1:
            watch.problem(f"{watch.doing}: matches {count} elements; make the selector unique")
            return None
        return (await locator.inner_text(timeout=_ms(deadline))).strip()
    except PlaywrightTimeoutError:
        waited = time.monotonic() - started
        watch.problem(f"{watch.doing}: not shown within {waited:.1f} s ({_where(page, watch)})")
    except PlaywrightError as exc:
        watch.problem(f"{watch.doing}: {_first_line(exc.message)}")
    return None


async def _open_file(page: Page, path: Path, watch: _Watch, observed: dict[str, str], deadline: float) -> None:
    """Load ``path``, let late requests settle (at most SETTLE_S), read its title and text."""
    watch.doing = f"open {path.name}"
    try:
        await page.goto(path.resolve().as_uri(), wait_until="load", timeout=_ms(deadline))
    except PlaywrightTimeoutError:
        watch.problem(f"{watch.doing}: did not finish loading ({_where(page, watch)})")
        return
    except PlaywrightError as exc:
        watch.problem(f"{watch.doing}: {_first_line(exc.message)}")
        return
    watch.doing = f"let {path.name} settle"
    with suppress(PlaywrightTimeoutError):
        await page.wait_for_load_state("networkidle", timeout=min(SETTLE_S * 1000, _ms(deadline)))
    watch.doing = f"read {path.name}"
    try:
        observed["title"] = watch.redact(await page.title(), TEXT_LIMIT)
        observed["text"] = watch.redact(
            (await page.locator("body").inner_text(timeout=_ms(deadline))).strip(), FILE_TEXT_LIMIT
        )
    except PlaywrightError as exc:
        watch.problem(f"{watch.doing}: {_first_line(exc.message)}")


async def _screenshot(page: Page, path: Path, watch: _Watch, masks: list[Locator]) -> Path | None:
    """A full-page PNG of the page as it ended, fields that were filled masked; None (and a problem) if it failed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.wait_for(
            page.screenshot(
                path=path,
                type="png",
                full_page=True,
                mask=masks,
                animations="disabled",
                timeout=SCREENSHOT_TIMEOUT_S * 1000,
            ),
            SCREENSHOT_TIMEOUT_S + 1,
        )
    except (PlaywrightError, TimeoutError, OSError) as exc:
        detail = _first_line(exc.message) if isinstance(exc, PlaywrightError) else f"{type(exc).__name__}: {exc}"
        watch.problem(f"screenshot to {path} failed: {detail}")
        return None
    return path


def _fill_values(steps: Sequence[BrowserStep]) -> list[str]:
    return [value for step in steps for value in (step.fill or {}).values()]


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with default ports filled in; http and ws share an origin for sockets."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port if port is not None else default


def _join(base_url: str, path: str) -> str:
    """``path`` under ``base_url`` (``http://h/app`` + ``/admin`` = ``http://h/app/admin``); full URLs as is."""
    if "://" in path:
        return path
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def _path(url: str) -> str:
    """Where a URL points, without query or fragment (they may carry tokens)."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(unquote(parts.path)).name
    return parts.path or "/"


def _where(page: Page, watch: _Watch) -> str:
    status = f", HTTP {watch.last_status}" if watch.last_status is not None else ""
    return f"page at {_path(page.url)}{status}"


def _ms(deadline: float) -> float:
    """Milliseconds left for one Playwright wait: the budget minus a margin, at least 50 ms (0 would mean forever)."""
    return max(50.0, (deadline - time.monotonic() - _MARGIN_S) * 1000)


def _q(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"
