"""Chromium over HTTPS: the live page, its EventSource and its fetch POST, with a test CA's certificate."""

from __future__ import annotations

from typing import Any

from sse_server.demo import create_app

from ..conftest import TLSFiles


def test_live_page_streams_over_https(browser: Any, live_server: Any, tls_files: TLSFiles) -> None:
    """The live page loads over HTTPS, its EventSource connects, and what its form publishes appears."""
    st = live_server(create_app, certfile=tls_files.certfile, keyfile=tls_files.keyfile)
    assert st.url.startswith("https://")
    context = browser.new_context(ignore_https_errors=True)  # the test CA is not in Chromium's store
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(st.url + "/live")
        page.wait_for_function("document.getElementById('status').textContent === 'live'")
        assert page.evaluate("location.protocol") == "https:"
        page.fill("#message", "sent over tls")
        page.click("button")
        page.wait_for_function("document.querySelector('#feed li')?.textContent.includes('sent over tls')")
        assert errors == []
    finally:
        context.close()
