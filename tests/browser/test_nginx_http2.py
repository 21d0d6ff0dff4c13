"""Chromium through the shipped nginx config: over HTTP/2 (TLS, a test CA) one page keeps
ten EventSources live at once; over HTTP/1.1 the browser holds six and queues the rest.

The browser trusts only the test certificate, by its public key's hash
(``--ignore-certificate-errors-spki-list``); every other certificate error still stops it.
"""

from __future__ import annotations

import base64
import hashlib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sse_server.demo import create_app

from ..conftest import TLSFiles
from ..nginx_server import NginxServer
from .conftest import ServerThread, chromium

pytestmark = [pytest.mark.nginx]

SOURCES = 10
HTTP1_CONNECTIONS_PER_HOST = 6  # Chromium's limit for one host over HTTP/1.1

OPEN_SOURCES = """n => {
  window.opened = 0; window.got = 0; window.sources = [];
  for (let i = 0; i < n; i++) {
    const source = new EventSource("/channels/ten/events?source=" + i);
    source.onopen = () => { window.opened++; };
    source.onmessage = (e) => { if (e.data === "to all") window.got++; };
    window.sources.push(source);
  }
}"""


def spki_sha256(certfile: str) -> str:
    """base64 of the SHA-256 of the first certificate's SubjectPublicKeyInfo (what Chromium pins)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    cert = x509.load_pem_x509_certificate(Path(certfile).read_bytes())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def trusting_browser(tls_files: TLSFiles) -> Iterator[Any]:
    """Chromium that accepts the test server certificate, and no other untrusted one."""
    with chromium([f"--ignore-certificate-errors-spki-list={spki_sha256(tls_files.certfile)}"]) as b:
        yield b


def publish(st: ServerThread, data: str) -> None:
    request = urllib.request.Request(st.url + "/channels/ten/events", data=data.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 202


def open_page(browser: Any, url: str) -> Any:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(url)
    return context, page


def test_ten_eventsources_are_live_at_once_over_http2(
        trusting_browser: Any, live_server: Any, tls_files: TLSFiles, tmp_path: Path) -> None:
    """Over HTTP/2 through nginx, ten EventSources of one page all open and all receive one publish."""
    st = live_server(create_app)
    with NginxServer(tmp_path, [f"127.0.0.1:{st.server.port}"], tls_files) as nginx:
        context, page = open_page(trusting_browser, f"https://127.0.0.1:{nginx.tls_port}/")
        try:
            assert page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol") == "h2"
            page.evaluate(OPEN_SOURCES, SOURCES)
            page.wait_for_function(f"window.opened === {SOURCES}")
            publish(st, "to all")
            page.wait_for_function(f"window.got === {SOURCES}")
            assert page.evaluate("window.sources.every(s => s.readyState === EventSource.OPEN)")
        finally:
            context.close()


def test_over_http1_the_seventh_eventsource_waits(
        trusting_browser: Any, live_server: Any, tls_files: TLSFiles, tmp_path: Path) -> None:
    """Over HTTP/1.1 through nginx the same page gets six EventSources open; the other four wait."""
    st = live_server(create_app)
    with NginxServer(tmp_path, [f"127.0.0.1:{st.server.port}"], tls_files) as nginx:
        context, page = open_page(trusting_browser, f"http://127.0.0.1:{nginx.plain_port}/")
        try:
            assert page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol") == "http/1.1"
            page.evaluate(OPEN_SOURCES, SOURCES)
            page.wait_for_function(f"window.opened === {HTTP1_CONNECTIONS_PER_HOST}")
            publish(st, "to all")  # time passes, events flow; still nobody else gets in
            page.wait_for_function(f"window.got === {HTTP1_CONNECTIONS_PER_HOST}")
            assert page.evaluate("window.opened") == HTTP1_CONNECTIONS_PER_HOST
            waiting = page.evaluate("window.sources.filter(s => s.readyState === EventSource.CONNECTING).length")
            assert waiting == SOURCES - HTTP1_CONNECTIONS_PER_HOST
        finally:
            context.close()
