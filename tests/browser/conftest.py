"""Chromium fixtures: Debian's /usr/bin/chromium driven by Playwright, and a real
server running in a thread so the synchronous Playwright API can drive the page.

Without Chromium the browser tests skip and say why; with REQUIRE_BROWSER=1 (as in
CI) a missing browser is a failure instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from sse_server import App, Config, Server

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.browser)


def _unavailable(reason: str) -> None:
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def chromium(extra_args: Sequence[str] = ()) -> Iterator[Any]:
    """Debian's Chromium, launched by Playwright with CHROMIUM_ARGS and ``extra_args``."""
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args])
        try:
            yield b
        finally:
            b.close()


# Module scope: the synchronous Playwright API keeps its own event loop running in
# this thread while it is open, which would break the asyncio tests collected after.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


class PageErrors(list):
    """Console errors and uncaught page exceptions seen during a test."""


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    pg = context.new_page()
    errors = PageErrors()
    pg.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    pg.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    pg.errors = errors
    pg.set_default_timeout(15_000)
    try:
        yield pg
    finally:
        context.close()


class ServerThread:
    """A Server on its own event loop in a background thread."""

    def __init__(self, app: App, config: Config) -> None:
        self.app = app
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.server = Server(app, config)
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-server", daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        self.call(self.server.start())
        return self

    @property
    def url(self) -> str:
        return self.server.url

    def call(self, coro: Any, timeout: float = 15.0) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn: Callable[[], Any], timeout: float = 15.0) -> Any:
        """Run a plain function on the server's loop (e.g. engine.publish_nowait)."""

        async def wrapper() -> Any:
            return fn()

        return self.call(wrapper(), timeout)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.call(self.server.shutdown(), timeout=30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()


@pytest.fixture
def live_server() -> Iterator[Callable[..., ServerThread]]:
    """A factory: ``live_server(app, **config)`` starts a server on 127.0.0.1; all stop after.

    ``app`` is an App or a factory taking the Config (``create_app``).
    """
    started: list[ServerThread] = []

    def start(app: App | Callable[[Config], App], **overrides: Any) -> ServerThread:
        config = Config(**{"host": "127.0.0.1", "port": 0, "access_log": False, **overrides})
        st = ServerThread(app if isinstance(app, App) else app(config), config).start()
        started.append(st)
        return st

    yield start
    for st in started:
        st.stop()
