"""Chromium through the shipped nginx config: over HTTP/2 (TLS, a test CA) one page keeps
ten EventSources live at once; over HTTP/1.1 the browser holds six and queues the rest.

The browser trusts only the test certificate, by its public key's hash
(``--ignore-certificate-errors-spki-list``); every other certificate error still stops it.
"""

from __future__ import annotations

import base64
import contextlib
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


@contextlib.contextmanager
def page_through_nginx(
        browser: Any, st: ServerThread, tls_files: TLSFiles, tmp_path: Path, *, tls: bool) -> Iterator[Any]:
    """A page of the demo loaded through nginx: its HTTP/2 + TLS listener, or its plain HTTP/1.1 one."""
    with NginxServer(tmp_path, [f"127.0.0.1:{st.server.port}"], tls_files) as nginx:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.set_default_timeout(15_000)
            page.goto(f"https://127.0.0.1:{nginx.tls_port}/" if tls else f"http://127.0.0.1:{nginx.plain_port}/")
            yield page
        finally:
            context.close()


def protocol(page: Any) -> str:
    return str(page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol"))


@pytest.mark.parametrize(("tls", "wanted_protocol", "live"), [
    (True, "h2", SOURCES),  # one connection, ten streams
    (False, "http/1.1", HTTP1_CONNECTIONS_PER_HOST),  # the contrast: the seventh waits
])
def test_eventsources_live_at_once_through_nginx(
        trusting_browser: Any, live_server: Any, tls_files: TLSFiles, tmp_path: Path,
        tls: bool, wanted_protocol: str, live: int) -> None:
    """Ten EventSources on one page through nginx: all ten live over HTTP/2; six over HTTP/1.1, four waiting."""
    st = live_server(create_app)
    with page_through_nginx(trusting_browser, st, tls_files, tmp_path, tls=tls) as page:
        assert protocol(page) == wanted_protocol
        page.evaluate(OPEN_SOURCES, SOURCES)
        page.wait_for_function(f"window.opened === {live}")
        publish(st, "to all")  # published once `live` are open; time passes while it flows
        page.wait_for_function(f"window.got === {live}")
        assert page.evaluate("window.opened") == live
        waiting = page.evaluate("window.sources.filter(s => s.readyState === EventSource.CONNECTING).length")
        assert waiting == SOURCES - live
