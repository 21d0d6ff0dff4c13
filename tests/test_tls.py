"""HTTPS with --certfile/--keyfile, as real clients see it: httpx, the openai SDK, Node's
eventsource, raw ssl sockets; a handshake that stalls and plain HTTP to the TLS port."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import ssl
import subprocess
import time
import warnings
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI

from sse_server import App, PlainTextResponse, Request
from sse_server.ai.mockmodel import MOCK_MODEL, mock_complete
from sse_server.demo import create_app

from .conftest import StartServer, TLSFiles
from .waiting import eventually

NODE_DIR = Path(__file__).resolve().parent / "node"
FAST_MODEL = {"model_first_token_ms": 0, "model_tokens_per_s": 0}


def scheme_app() -> App:
    app = App()

    @app.route("/whoami")
    async def whoami(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{request.scheme} {request.client[0] if request.client else '-'}")

    return app


def tls(files: TLSFiles) -> dict[str, str]:
    return {"certfile": files.certfile, "keyfile": files.keyfile}


async def test_httpx_over_https_keeps_the_connection_and_sees_https(
    start_server: StartServer, tls_files: TLSFiles,
) -> None:
    """Two requests share one TLS connection; the app sees scheme https; the url says https."""
    server = await start_server(scheme_app(), **tls(tls_files))
    assert server.url.startswith("https://127.0.0.1:")
    async with httpx.AsyncClient(base_url=server.url, verify=tls_files.client_context()) as http:
        first = await http.get("/whoami")
        second = await http.get("/whoami")
    assert first.status_code == second.status_code == 200 and first.http_version == "HTTP/1.1"
    assert first.text == "https 127.0.0.1"
    assert len(server.connections) <= 1  # the second request reused the first connection


async def test_handshake_offers_http11_and_tls12_or_later(start_server: StartServer, tls_files: TLSFiles) -> None:
    """ALPN settles on http/1.1 (even for a client that prefers h2); TLS 1.1 is refused."""
    server = await start_server(scheme_app(), **tls(tls_files))
    context = tls_files.client_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    reader, writer = await asyncio.open_connection(server.host, server.port, ssl=context)
    sslobj = writer.get_extra_info("ssl_object")
    assert sslobj.selected_alpn_protocol() == "http/1.1" and sslobj.version() in ("TLSv1.2", "TLSv1.3")
    writer.close()
    old = tls_files.client_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is deprecated: the point here
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that it is the server that says no
    with pytest.raises((ssl.SSLError, ConnectionError)):  # an alert, or the server just hangs up
        await asyncio.open_connection(server.host, server.port, ssl=old)


async def test_channel_stream_over_https(start_server: StartServer, tls_files: TLSFiles) -> None:
    """A subscriber over HTTPS receives what is published, framed as on plain HTTP."""
    server = await start_server(create_app, **tls(tls_files), access_log=False)
    async with httpx.AsyncClient(base_url=server.url, verify=tls_files.client_context(), timeout=5) as http:
        async with http.stream("GET", "/channels/tls/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            posted = await http.post("/channels/tls/events", content="over tls")
            assert posted.status_code == 202 and posted.json()["subscribers"] == 1
            received = b""
            async for piece in stream.aiter_bytes():
                received += piece
                if b"data: over tls" in received:
                    break
    assert f"id: {posted.json()['id']}".encode() in received


async def test_openai_sdk_over_https(start_server: StartServer, tls_files: TLSFiles) -> None:
    """The openai SDK streams a chat completion over HTTPS with the same text as without streaming."""
    server = await start_server(create_app, **tls(tls_files), access_log=False, **FAST_MODEL)
    messages = [{"role": "user", "content": "hello over tls"}]
    async with (
        httpx.AsyncClient(verify=tls_files.client_context()) as http,
        AsyncOpenAI(base_url=server.url + "/v1", api_key="test", http_client=http, max_retries=0) as client,
    ):
        chunks = [c async for c in await client.chat.completions.create(
            model=MOCK_MODEL, messages=messages, stream=True)]  # type: ignore[arg-type]
        whole = await client.chat.completions.create(model=MOCK_MODEL, messages=messages)  # type: ignore[arg-type]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content == mock_complete(messages).text


async def test_a_stalled_handshake_is_closed_within_the_head_timeout(
    start_server: StartServer, tls_files: TLSFiles,
) -> None:
    """A client that connects and never says hello is dropped after head_timeout_s, and forgotten."""
    server = await start_server(scheme_app(), **tls(tls_files), head_timeout_s=0.5)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    started = time.monotonic()
    await eventually(lambda: len(server.connections) == 1, what="the silent connection is tracked")
    try:
        async with asyncio.timeout(5):
            assert await reader.read(1) == b""
    except ConnectionResetError:
        pass  # aborted: just as closed
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 3, elapsed
    await eventually(lambda: not server.connections, what="the dropped connection is untracked")
    writer.close()


async def test_plain_http_to_the_tls_port_is_closed_quietly(
    start_server: StartServer, tls_files: TLSFiles, caplog: pytest.LogCaptureFixture,
) -> None:
    """Plain HTTP sent to the HTTPS port is closed without an answer or a logged error; HTTPS still works."""
    server = await start_server(scheme_app(), **tls(tls_files))
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            async with asyncio.timeout(5):
                assert await reader.read(65536) == b""
        except ConnectionResetError:
            pass
        writer.close()
    await eventually(lambda: not server.connections, what="the plain connections are gone")
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not noisy, [r.getMessage() for r in noisy]
    async with httpx.AsyncClient(base_url=server.url, verify=tls_files.client_context()) as http:
        assert (await http.get("/whoami")).text == "https 127.0.0.1"


def _node_eventsource() -> Path:
    """tests/node with its packages installed (npm install when missing), or a skip saying why."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for Node's eventsource client (apt-get install nodejs npm)")
    if not (NODE_DIR / "node_modules" / "eventsource").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=NODE_DIR, check=True, timeout=180)
    return NODE_DIR / "subscribe.mjs"


async def test_node_eventsource_over_https(start_server: StartServer, tls_files: TLSFiles) -> None:
    """Node's eventsource package, trusting the test CA, receives published events over HTTPS with their ids."""
    script = _node_eventsource()
    server = await start_server(create_app, **tls(tls_files), access_log=False)
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": tls_files.ca_pem}
    node = await asyncio.create_subprocess_exec(
        "node", str(script), server.url + "/channels/node/events", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    assert node.stdout is not None and node.stderr is not None
    try:
        async with asyncio.timeout(15):
            first = await node.stdout.readline()
            assert json.loads(first or b"null") == {"open": True}, (first, await node.stderr.read())
            async with httpx.AsyncClient(base_url=server.url, verify=tls_files.client_context()) as http:
                ids = [(await http.post("/channels/node/events", content=text)).json()["id"]
                       for text in ("one", "two")]
            lines = [json.loads(await node.stdout.readline()) for _ in range(2)]
            assert await node.wait() == 0, await node.stderr.read()
    finally:
        if node.returncode is None:
            node.kill()
            await node.wait()
    assert lines == [{"id": ids[0], "data": "one"}, {"id": ids[1], "data": "two"}]
