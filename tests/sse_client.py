"""A raw-socket SSE client for the tests: de-chunks the body and parses events
with the project's WHATWG parser, so what it sees is what a browser would see."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from sse_server.http11 import ChunkedDecoder
from sse_server.sse import Event, EventStreamParser

from .http_client import Reply, read_head


class SSEClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: Reply) -> None:
        self.reader = reader
        self.writer = writer
        self.reply = reply
        self.chunked = reply.header("transfer-encoding") == "chunked"
        self.parser = EventStreamParser(on_comment=self._on_comment)
        self.events: list[Event] = []
        self.comments = 0
        self.ended = False  # the response body ended (last chunk or EOF)
        self.complete = False  # it ended as a whole body: the last chunk (close-delimited: EOF)
        self._decoder = ChunkedDecoder() if self.chunked else None
        self._pending: list[Event] = []

    @classmethod
    async def connect(
        cls,
        port: int,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        method: str = "GET",
        body: bytes = b"",
        version: str = "1.1",
        rcvbuf: int | None = None,
    ) -> SSEClient:
        sock = None
        if rcvbuf is not None:
            # A tiny receive buffer set before connecting makes a frozen reader's
            # backlog land in the server's buffer quickly.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        lines = [f"{method} {path} HTTP/{version}", "Host: test", "Accept: text/event-stream"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        reply = await read_head(reader)
        return cls(reader, writer, reply)

    def _on_comment(self, text: str) -> None:
        self.comments += 1

    async def _read_body_bytes(self) -> bytes:
        decoder = self._decoder
        if decoder is None:
            data = await self.reader.read(65536)
            if not data:
                self.ended = self.complete = True
            return data
        # The server's own strict decoder: a wrong size line fails the test.
        data = await self.reader.read(65536)
        if not data:
            raise asyncio.IncompleteReadError(b"", None)  # closed before the last chunk
        payload = decoder.feed(data)
        if decoder.done:
            self.ended = self.complete = True
        return payload

    async def next_event(self) -> Event:
        """The next dispatched event; comments are counted, not returned."""
        while not self._pending:
            if self.ended:
                raise EOFError("stream ended" if self.complete else "connection closed")
            try:
                data = await self._read_body_bytes()
            except (asyncio.IncompleteReadError, ConnectionError):
                self.ended = True
                raise EOFError("connection closed") from None
            self._pending.extend(self.parser.feed(data))
        event = self._pending.pop(0)
        self.events.append(event)
        return event

    async def take(self, n: int, timeout: float = 10.0) -> list[Event]:
        async with asyncio.timeout(timeout):
            return [await self.next_event() for _ in range(n)]

    async def read_until_end(self, timeout: float = 10.0) -> list[Event]:
        """Every event until the response ends."""
        got = []
        async with asyncio.timeout(timeout):
            while True:
                try:
                    got.append(await self.next_event())
                except EOFError:
                    return got

    async def wait_comment(self, timeout: float) -> None:
        """Read until a comment line (a heartbeat) arrives."""
        async with asyncio.timeout(timeout):
            start = self.comments
            while self.comments == start:
                self._pending.extend(self.parser.feed(await self._read_body_bytes()))

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


class ResumingSubscriber:
    """An EventSource as a browser runs one: when its stream breaks it reconnects with
    ``Last-Event-ID``, and keeps every event it was given, in order, across connections.

        sub = ResumingSubscriber(port, "/channels/c/events")
        task = asyncio.create_task(sub.follow(lambda e: e.data == "last"))
        await sub.connected.wait()
    """

    def __init__(self, port: int, path: str, *, max_connects: int = 20, retry_s: float = 0.05) -> None:
        self.port = port
        self.path = path
        self.max_connects = max_connects  # bounds the reconnect loop of a server that keeps failing
        self.retry_s = retry_s
        self.events: list[Event] = []
        self.connects = 0  # responses with status 200
        self.drops = 0  # streams that broke before the last event
        self.refused: list[str] = []  # why a connect did not give a stream (refused, status)
        self.last_event_id = ""
        self.connected = asyncio.Event()  # the first stream is open

    async def follow(self, last: Callable[[Event], bool]) -> None:
        """Read (and reconnect) until an event for which ``last(event)`` holds."""
        for _ in range(self.max_connects):
            headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
            try:
                client = await SSEClient.connect(self.port, self.path, headers=headers)
            except (OSError, asyncio.IncompleteReadError) as e:
                self.refused.append(repr(e))
                await asyncio.sleep(self.retry_s)
                continue
            try:
                if client.reply.status != 200:
                    self.refused.append(f"status {client.reply.status}")
                else:
                    self.connects += 1
                    self.connected.set()
                    while True:
                        event = await client.next_event()
                        self.events.append(event)
                        self.last_event_id = event.id or self.last_event_id
                        if last(event):
                            return
            except EOFError:
                self.drops += 1
            finally:
                await client.close()
            await asyncio.sleep(self.retry_s)  # an EventSource waits its retry: before reconnecting
        raise AssertionError(f"gave up after {self.max_connects} connects: {self.refused[-3:]}")
