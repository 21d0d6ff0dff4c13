"""The relay's HTTP/1.1 client: URL parsing, pure head and framing parsers, and real
requests to a local upstream (an ``asyncio.start_server`` on 127.0.0.1:0) that
answers well, badly, too much or not at all."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from sse_server.ai.upstream import (
    MAX_HEAD_BYTES,
    Endpoint,
    UpstreamError,
    UpstreamResponse,
    body_framing,
    encode_request_head,
    parse_response_head,
    request,
)

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# -- pure --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected", "authority"),
    [
        ("http://127.0.0.1:8001", Endpoint("http", "127.0.0.1", 8001, "/v1"), "127.0.0.1:8001"),
        ("https://api.example/openai/v1/", Endpoint("https", "api.example", 443, "/openai/v1"), "api.example"),
        ("HTTP://Host.Example", Endpoint("http", "host.example", 80, "/v1"), "host.example"),
        ("http://h:80/x", Endpoint("http", "h", 80, "/x"), "h"),
        ("https://h:8443", Endpoint("https", "h", 8443, "/v1"), "h:8443"),
        ("http://[::1]:9/v1", Endpoint("http", "::1", 9, "/v1"), "[::1]:9"),
    ],
)
def test_endpoint_parse(url: str, expected: Endpoint, authority: str) -> None:
    """A base URL gives scheme, host, port and path (``/v1`` when there is none) and the Host header."""
    endpoint = Endpoint.parse(url)
    assert endpoint == expected and endpoint.authority == authority
    assert Endpoint.parse(endpoint.url) == endpoint


@pytest.mark.parametrize(
    "url",
    ["ftp://h", "h:80", "//h", "http://", "http://u:p@h", "http://h?q=1", "http://h/v1#f", "http://h:99999",
     "http://h:port", "", "javascript:alert(1)"],
)
def test_endpoint_parse_rejects(url: str) -> None:
    """Another scheme, no host, credentials, a query or fragment, or a bad port is a ValueError."""
    with pytest.raises(ValueError):
        Endpoint.parse(url)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"HTTP/1.1 200 OK", (200, [])),
        (b"HTTP/1.1 404", (404, [])),
        (b"HTTP/1.0 500 Server Error\r\nX-A: 1\r\nx-b:  two words ", (500, [("x-a", "1"), ("x-b", "two words")])),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream", (200, [("content-type", "text/event-stream")])),
        (b"HTTP/1.1 200 OK\r\nX-Empty:", (200, [("x-empty", "")])),
        (b"HTTP/1.1 200 OK\r\nX-Latin: caf\xe9", (200, [("x-latin", "caf\xe9")])),
    ],
)
def test_parse_response_head(head: bytes, expected: tuple[int, list[tuple[str, str]]]) -> None:
    """Status and headers, names lower-cased and values trimmed."""
    assert parse_response_head(head) == expected


@pytest.mark.parametrize(
    "head",
    [
        b"SSH-2.0-OpenSSH_9.6",
        b"HTTP/2 200",
        b"HTTP/1.1",
        b"HTTP/1.1 2000 OK",
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1 2x0 OK",
        b"HTTP/1.1 200 OK\r\nno colon",
        b"HTTP/1.1 200 OK\r\n: no name",
        b"HTTP/1.1 200 OK\r\nName : space before the colon",
        b"HTTP/1.1 200 OK\r\n folded: continuation",
        b"HTTP/1.1 200 OK\r\n\r\nX: a second blank line",
        b"",
    ],
)
def test_parse_response_head_rejects(head: bytes) -> None:
    """What is not an HTTP/1.x head, or a header line that could be read two ways, is upstream_bad_response."""
    with pytest.raises(UpstreamError) as info:
        parse_response_head(head)
    assert (info.value.status, info.value.code) == (502, "upstream_bad_response")


@pytest.mark.parametrize(
    ("method", "status", "headers", "expected"),
    [
        ("POST", 200, [("transfer-encoding", "chunked")], ("chunked", 0)),
        ("POST", 200, [("transfer-encoding", "gzip, chunked")], ("chunked", 0)),
        ("POST", 200, [("transfer-encoding", "CHUNKED")], ("chunked", 0)),
        ("POST", 200, [("transfer-encoding", "gzip")], ("close", 0)),
        ("POST", 200, [("transfer-encoding", "chunked"), ("content-length", "5")], ("chunked", 0)),
        ("GET", 200, [("content-length", "12")], ("length", 12)),
        ("GET", 200, [("content-length", "12, 12")], ("length", 12)),
        ("GET", 200, [("content-length", "0")], ("length", 0)),
        ("GET", 200, [], ("close", 0)),
        ("GET", 204, [("content-length", "5")], ("none", 0)),
        ("GET", 304, [], ("none", 0)),
        ("GET", 103, [], ("none", 0)),
        ("HEAD", 200, [("content-length", "5")], ("none", 0)),
        ("GET", 200, [("content-length", "0" * 5_000 + "5")], ("length", 5)),
    ],
)
def test_body_framing(method: str, status: int, headers: list[tuple[str, str]], expected: tuple[str, int]) -> None:
    """The body's framing follows RFC 9112 §6.3: no body, chunked, a length, or until close."""
    assert body_framing(method, status, headers) == expected


@pytest.mark.parametrize("length", ["1, 2", "-1", "+5", "0x10", "5 5", "", "1e3", "\u00b2", "\u0661\u0662",
                                    "9" * 5_000])
def test_body_framing_rejects_bad_lengths(length: str) -> None:
    """A Content-Length that is not one run of ASCII digits is upstream_bad_response, never a crash."""
    with pytest.raises(UpstreamError) as info:
        body_framing("GET", 200, [("content-length", length)])
    assert info.value.code == "upstream_bad_response"


def test_request_head() -> None:
    """The head names the base path, Host, our headers, the body length and Connection: close."""
    endpoint = Endpoint.parse("http://h:81/api/v1")
    assert encode_request_head(endpoint, "POST", "/chat/completions", [("Accept", "text/event-stream")], 7) == (
        b"POST /api/v1/chat/completions HTTP/1.1\r\nHost: h:81\r\nAccept: text/event-stream\r\n"
        b"Content-Length: 7\r\nConnection: close\r\n\r\n")
    assert b"Content-Length: 0" in encode_request_head(endpoint, "POST", "/x", [], 0)
    assert b"Content-Length" not in encode_request_head(endpoint, "GET", "/models", [], 0)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/models/a\r\nX: 1", []),
        ("/models/a\nX: 1", []),
        ("/models/a b", []),
        ("/models/a\0", []),
        ("/m", [("Authorization", "k\r\nX: 1")]),
        ("/m", [("Authorization", "k\n")]),
        ("/m", [("Authorization", "k\0")]),
    ],
)
def test_request_head_refuses_line_breaks(path: str, headers: list[tuple[str, str]]) -> None:
    """A CR, LF, NUL or space from a path parameter, or a CR, LF or NUL from a key, cannot split the request."""
    with pytest.raises(ValueError):
        encode_request_head(Endpoint.parse("http://h"), "GET", path, headers, 0)


# -- a real local upstream -----------------------------------------------------------------------


class Upstream:
    """What the local upstream received: each request's bytes (head and body)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.requests: list[bytes] = []
        self.closed_by_client = asyncio.Event()


@contextlib.asynccontextmanager
async def local_upstream(answer: Answer) -> AsyncIterator[Upstream]:
    """An upstream on 127.0.0.1:0: reads a request, runs ``answer``, and notes when the client hangs up."""
    tasks: set[asyncio.Task[None]] = set()
    upstream: Upstream

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            upstream.requests.append(head + await reader.readexactly(length))
            await answer(reader, writer)
            if not await reader.read():  # EOF: our client closed its side
                upstream.closed_by_client.set()
        except (ConnectionError, asyncio.IncompleteReadError):
            upstream.closed_by_client.set()
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    upstream = Upstream(Endpoint.parse(f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}/v1"))
    try:
        yield upstream
    finally:
        listener.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def writes(*parts: bytes, hold: bool = True) -> Answer:
    """An answer that writes ``parts`` one by one (each its own segment), then holds the
    connection open until the client leaves (``hold``) or closes it."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for part in parts:
            writer.write(part)
            await writer.drain()
        if not hold:
            writer.close()

    return answer


async def read_body(response: UpstreamResponse) -> list[bytes]:
    pieces = []
    while piece := await response.read():
        pieces.append(piece)
    return pieces


async def call(upstream: Upstream, method: str = "GET", path: str = "/models", body: bytes = b"",
               **timeouts: float) -> UpstreamResponse:
    return await request(upstream.endpoint, method, path, body=body, headers=[("Accept", "application/json")],
                         **{"connect_timeout_s": 2.0, "first_byte_timeout_s": 2.0, "idle_timeout_s": 2.0, **timeouts})


async def test_chunked_body() -> None:
    """A chunked body arrives decoded, split as the upstream sent it, then read() gives b""."""
    answer = writes(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                    b"5\r\nHello\r\n", b"7\r\n, world\r\n", b"0\r\n\r\n")
    async with local_upstream(answer) as upstream:
        response = await call(upstream, "POST", "/chat/completions", b'{"a":1}')
        try:
            assert (response.status, response.headers) == (200, [("transfer-encoding", "chunked")])
            assert b"".join(await read_body(response)) == b"Hello, world"
            assert await response.read() == b""
        finally:
            response.close()
    sent = upstream.requests[0]
    assert sent.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nContent-Length: 7\r\nConnection: close\r\n\r\n" in sent and sent.endswith(b'{"a":1}')


async def test_content_length_body() -> None:
    """A Content-Length body is read to its length, even if the upstream keeps the connection open."""
    async with local_upstream(writes(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello", b" world")) as upstream:
        response = await call(upstream)
        try:
            assert await response.read_all(1024) == b"hello world"
        finally:
            response.close()


async def test_close_delimited_body() -> None:
    """A body with neither length nor chunking runs until the upstream closes."""
    async with local_upstream(writes(b"HTTP/1.1 200 OK\r\n\r\nall of ", b"it", hold=False)) as upstream:
        response = await call(upstream)
        try:
            assert await response.read_all(1024) == b"all of it"
        finally:
            response.close()


async def test_interim_responses_are_skipped() -> None:
    """1xx interim heads (100 Continue, 103 Early Hints) before the real one are skipped."""
    answer = writes(b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                    b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    async with local_upstream(answer) as upstream:
        response = await call(upstream)
        try:
            assert response.status == 201 and await response.read_all(10) == b"ok"
        finally:
            response.close()


async def test_body_over_the_limit() -> None:
    """read_all past its limit is upstream_too_large."""
    async with local_upstream(writes(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100)) as upstream:
        response = await call(upstream)
        try:
            with pytest.raises(UpstreamError) as info:
                await response.read_all(99)
        finally:
            response.close()
    assert info.value.code == "upstream_too_large"


async def test_head_over_max_head_bytes() -> None:
    """A response head larger than MAX_HEAD_BYTES is upstream_bad_response, not buffered on."""
    huge = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n"
    async with local_upstream(writes(huge)) as upstream:
        with pytest.raises(UpstreamError) as info:
            await call(upstream)
        await asyncio.wait_for(upstream.closed_by_client.wait(), 3)  # and the socket was dropped
    assert (info.value.status, info.value.code) == (502, "upstream_bad_response")
    assert str(MAX_HEAD_BYTES) in str(info.value)


async def test_silent_upstream_hits_the_first_byte_timeout() -> None:
    """An upstream that accepts the request and says nothing is a 504 upstream_timeout at the deadline."""
    async with local_upstream(writes()) as upstream:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(UpstreamError) as info:
            await call(upstream, first_byte_timeout_s=0.2)
        elapsed = loop.time() - start
        await asyncio.wait_for(upstream.closed_by_client.wait(), 3)
    assert (info.value.status, info.value.code) == (504, "upstream_timeout")
    assert 0.19 <= elapsed < 2.0


async def test_silence_mid_body_hits_the_idle_timeout() -> None:
    """An upstream that stops sending mid-body is a 504 upstream_idle_timeout after the piece it sent."""
    answer = writes(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHello\r\n")
    async with local_upstream(answer) as upstream:
        response = await call(upstream, idle_timeout_s=0.2)
        try:
            assert await response.read() == b"Hello"
            with pytest.raises(UpstreamError) as info:
                await response.read()
        finally:
            response.close()
    assert (info.value.status, info.value.code) == (504, "upstream_idle_timeout")


@pytest.mark.parametrize(
    ("parts", "code"),
    [
        ((b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",), "upstream_closed"),
        ((b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHel",), "upstream_closed"),
        ((b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nHello\r\n",), "upstream_bad_response"),
    ],
)
async def test_cut_or_bad_bodies(parts: tuple[bytes, ...], code: str) -> None:
    """A body cut short, or a chunked body that is not chunked, is an UpstreamError with its code."""
    async with local_upstream(writes(*parts, hold=False)) as upstream:
        response = await call(upstream)
        try:
            with pytest.raises(UpstreamError) as info:
                await read_body(response)
        finally:
            response.close()
    assert info.value.code == code


@pytest.mark.parametrize(
    ("parts", "code"),
    [
        ((), "upstream_closed"),
        ((b"HTTP/1.1 200 OK\r\n",), "upstream_closed"),
        ((b"SSH-2.0-OpenSSH_9.6\r\n\r\n",), "upstream_bad_response"),
        ((b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",), "upstream_bad_response"),
        ((b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n",), "upstream_bad_response"),
    ],
)
async def test_bad_heads_from_a_real_upstream(parts: tuple[bytes, ...], code: str) -> None:
    """No head, half a head, or a hostile one is an UpstreamError 502 with its code, never another exception."""
    async with local_upstream(writes(*parts, hold=False)) as upstream:
        with pytest.raises(UpstreamError) as info:
            await call(upstream)
    assert (info.value.status, info.value.code) == (502, code)


async def test_close_drops_the_connection_at_once() -> None:
    """close() mid-body aborts the socket, so the upstream sees the client leave."""
    answer = writes(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHello\r\n")
    async with local_upstream(answer) as upstream:
        response = await call(upstream)
        assert await response.read() == b"Hello"
        response.close()
        await asyncio.wait_for(upstream.closed_by_client.wait(), 3)


async def test_unreachable_upstream() -> None:
    """A port nobody listens on is a 502 upstream_unreachable."""
    async with local_upstream(writes()) as upstream:
        endpoint = upstream.endpoint
    with pytest.raises(UpstreamError) as info:
        await request(endpoint, "GET", "/models", connect_timeout_s=2)
    assert (info.value.status, info.value.code) == (502, "upstream_unreachable")


async def test_a_splitting_path_is_refused_before_connecting() -> None:
    """A path that would split the request is upstream_bad_request, and nothing is sent."""
    async with local_upstream(writes()) as upstream:
        with pytest.raises(UpstreamError) as info:
            await call(upstream, path="/models/x\r\nX-Injected: 1")
    assert info.value.code == "upstream_bad_request" and upstream.requests == []
