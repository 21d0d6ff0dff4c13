"""A deliberately small HTTP/1.1 client over raw asyncio streams, for the socket tests.

It reads exactly what the server sent: status line, headers, and a body framed by
Content-Length, chunked coding (keeping each chunk) or the end of the connection.
Chunked bodies go through the server's own strict ChunkedDecoder, so a size line
that does not match its payload fails the test rather than being read around.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sse_server.http11 import ChunkedDecoder


@dataclass
class Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]  # names lower-cased
    body: bytes = b""
    chunks: list[bytes] | None = None  # set when the body was chunked: each chunk's payload
    raw_head: bytes = field(default=b"", repr=False)

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]


async def read_head(reader: asyncio.StreamReader) -> Reply:
    """Read a status line and header block (raises IncompleteReadError at EOF)."""
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw[:-4].decode("latin-1").split("\r\n")
    version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
    assert version == "HTTP/1.1", lines[0]
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return Reply(int(status), reason, headers, raw_head=raw)


async def read_body(reader: asyncio.StreamReader, reply: Reply) -> Reply:
    """Read the body the head announces: chunked, Content-Length, or until EOF."""
    te = reply.header("transfer-encoding")
    cl = reply.header("content-length")
    if te is not None:
        assert te == "chunked" and cl is None, reply.headers
        decoder = ChunkedDecoder(keep_chunks=True)
        parts = []
        while not decoder.done:
            # Never past the body's end: a pipelined next reply shares this reader.
            parts.append(decoder.feed(await reader.readexactly(decoder.safe_feed_bytes)))
        reply.chunks = decoder.chunks
        reply.body = b"".join(parts)
    elif cl is not None:
        reply.body = await reader.readexactly(int(cl))
    else:
        reply.body = await reader.read(-1)
    return reply


async def read_reply(reader: asyncio.StreamReader, *, head_request: bool = False) -> Reply:
    """One whole response; a response to HEAD, a 1xx, 204 or 304 has no body."""
    reply = await read_head(reader)
    if head_request or reply.status < 200 or reply.status in (204, 304):
        return reply
    return await read_body(reader, reply)


async def exchange(host: str, port: int, raw: bytes, *, head_request: bool = False) -> Reply:
    """Open a connection, send raw, read one response, close."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw)
        await writer.drain()
        return await read_reply(reader, head_request=head_request)
    finally:
        writer.close()
        await _closed(writer)


async def _closed(writer: asyncio.StreamWriter) -> None:
    try:
        async with asyncio.timeout(5):
            await writer.wait_closed()
    except ConnectionError:
        pass


async def close(writer: asyncio.StreamWriter) -> None:
    """Close a client connection, ignoring a peer that already reset it."""
    writer.close()
    await _closed(writer)
