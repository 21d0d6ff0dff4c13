# Server-sent events as bytes: an encoder for the server's hot path and an incremental
# parser for relays, clients and tests. Pure: no asyncio, no I/O.
#
# Both follow WHATWG HTML §9.2 "Server-sent events": §9.2.5 "Parsing an event stream"
# (UTF-8 with one optional leading BOM; CRLF, lone CR and lone LF all end a line) and
# §9.2.6 "Interpreting an event stream" (fields, the data / event type / last event ID
# buffers, dispatch on a blank line, an unterminated event discarded at end of stream).
# The encoder writes only what that parser reads back as given (line ends inside data
# come back as LF): data is split on CR, LF and CRLF and nothing else (str.splitlines
# would also split on U+2028, \x0b, \x1c and friends, which a browser keeps inside one
# line); `event` and `id` can never carry a line end, so a publisher cannot inject
# fields; a non-empty value gets one space after the colon because a parser strips
# exactly one, which keeps values that start with a space.
from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "Event",
    "EventStreamError",
    "EventStreamParser",
    "encode_comment",
    "encode_event",
    "encode_retry",
    "parse_events",
]


@dataclass(slots=True)
class Event:
    """One server-sent event.

    >>> Event("hello", event="greeting", id="7").encode()
    b'id: 7\\nevent: greeting\\ndata: hello\\n\\n'

    Events from EventStreamParser always carry a str `event` ("message" when the
    stream named none) and a str `id`: the last event ID in effect when the event was
    dispatched ("" when there is none), since an id persists until the stream changes
    it. Their `retry_ms` is the `retry` field given within that event's block, if any.
    """

    data: str = ""
    event: str | None = None
    id: str | None = None
    retry_ms: int | None = None

    def encode(self) -> bytes:
        return encode_event(self.data, event=self.event, id=self.id, retry_ms=self.retry_ms)


class EventStreamError(ValueError):
    """The peer sent an event stream larger than this parser agreed to buffer."""


def _split_lines(text: str) -> list[str]:
    # §9.2.5: CRLF, lone CR and lone LF are the only line ends.
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


def _check_retry(retry_ms: int) -> None:
    if isinstance(retry_ms, bool) or not isinstance(retry_ms, int):
        raise TypeError(f"SSE retry must be an int of milliseconds, not {type(retry_ms).__name__}")
    if retry_ms < 0:
        raise ValueError(f"SSE retry must be a non-negative number of milliseconds, not {retry_ms}")


def encode_event(
    data: str | None = None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry_ms: int | None = None,
) -> bytes:
    """Encode one event as UTF-8 bytes, ended by a blank line.

    >>> encode_event("a\\r\\nb", event="tick", id="1")
    b'id: 1\\nevent: tick\\ndata: a\\ndata: b\\n\\n'
    >>> encode_event("")
    b'data:\\n\\n'

    `data=None` writes no data line: a browser then dispatches nothing, but still
    takes the `id` and `retry`. `event=""` is the default type and is left out.
    Raises ValueError for an `event` or `id` holding CR or LF, an `id` holding NUL or a
    negative `retry_ms`, TypeError for a `retry_ms` that is not an int, and
    UnicodeEncodeError (a ValueError) for lone surrogates.
    """
    line_end = "must not contain CR or LF: it would end the field and start another"
    head = ""
    if id is not None:
        if "\n" in id or "\r" in id:
            raise ValueError(f"SSE id {line_end}")
        if "\0" in id:
            raise ValueError("SSE id must not contain NUL: browsers ignore such an id")
        head = f"id: {id}\n" if id else "id:\n"
    if event:
        if "\n" in event or "\r" in event:
            raise ValueError(f"SSE event name {line_end}")
        head += f"event: {event}\n"
    if retry_ms is not None:
        _check_retry(retry_ms)
        head += f"retry: {retry_ms:d}\n"
    if data is None:
        return (head + "\n").encode()
    if "\n" not in data and "\r" not in data:
        # Fast path: one line, the usual shape of a broadcast payload.
        if data:
            return (f"{head}data: {data}\n\n").encode()
        return (head + "data:\n\n").encode()
    body = "".join([f"data: {line}\n" if line else "data:\n" for line in _split_lines(data)])
    return (head + body + "\n").encode()


def encode_comment(text: str = "") -> bytes:
    """Encode a comment block, one `:` line per line of text, ended by a blank line.

    Parsers ignore it; it keeps idle connections and the proxies between alive.

    >>> encode_comment()
    b':\\n\\n'
    >>> encode_comment("ping")
    b': ping\\n\\n'
    """
    if "\n" not in text and "\r" not in text:
        return (f": {text}\n\n" if text else ":\n\n").encode()
    body = "".join([f": {line}\n" if line else ":\n" for line in _split_lines(text)])
    return (body + "\n").encode()


def encode_retry(retry_ms: int) -> bytes:
    """Encode a block that only sets the client's reconnection time.

    >>> encode_retry(3000)
    b'retry: 3000\\n\\n'
    """
    _check_retry(retry_ms)
    return b"retry: %d\n\n" % retry_ms


class EventStreamParser:
    """Incremental WHATWG event-stream parser: bytes in, dispatched events out.

    >>> p = EventStreamParser()
    >>> p.feed(b"id: 1\\ndata: hel")
    []
    >>> p.feed(b"lo\\r\\n\\r\\n")
    [Event(data='hello', event='message', id='1', retry_ms=None)]

    Chunk boundaries never matter: a CR ending one feed and an LF opening the next are
    one line end, and a UTF-8 character split across feeds is decoded whole.
    `on_comment` receives each comment line's text (one leading space stripped, as for
    field values). `max_event_chars` bounds the memory a peer can pin with one
    unterminated line or one event's data; past it feed() raises EventStreamError and
    the stream should be dropped (the parser's state is then undefined until close()).
    close() ends the stream (an unterminated event is discarded, as the spec says) and
    readies the parser for the next connection's stream; `last_event_id` and `retry_ms`
    carry over, as an EventSource keeps them across reconnections.
    """

    __slots__ = (
        "_block_retry",
        "_data",
        "_data_chars",
        "_decoder",
        "_event_type",
        "_id_buffer",
        "_last_event_id",
        "_max_event_chars",
        "_on_comment",
        "_pending",
        "_pending_chars",
        "_retry_ms",
        "_skip_lf",
        "_started",
        "comments_seen",
    )

    def __init__(
        self,
        *,
        last_event_id: str = "",
        on_comment: Callable[[str], object] | None = None,
        max_event_chars: int | None = None,
    ) -> None:
        self._on_comment = on_comment
        self._max_event_chars = max_event_chars
        self._last_event_id = last_event_id
        self._retry_ms: int | None = None
        self.comments_seen = 0
        # §9.2.5: decode as UTF-8 with replacement; incremental so split characters survive.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._reset_stream()

    def _reset_stream(self) -> None:
        self._decoder.reset()
        self._started = False  # False until the first character: only it may be a BOM
        self._skip_lf = False  # the previous feed ended in CR; an LF opening this one is its pair
        self._pending: list[str] = []  # pieces of the current unterminated line
        self._pending_chars = 0
        self._data: list[str] = []  # data buffer, one item per `data` field
        self._data_chars = 0
        self._event_type = ""
        self._id_buffer = self._last_event_id
        self._block_retry: int | None = None

    @property
    def last_event_id(self) -> str:
        """The last event ID string as of the last blank line ("" if none): what a
        reconnecting client sends as `Last-Event-ID`."""
        return self._last_event_id

    @property
    def retry_ms(self) -> int | None:
        """The reconnection time the stream last set, or None if it never did."""
        return self._retry_ms

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Parse more bytes; return the events that a blank line completed."""
        text = self._decoder.decode(data)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            if text[:1] == "\n":
                text = text[1:]
        if "\n" not in text and "\r" not in text:
            if text:
                self._pending.append(text)
                self._pending_chars += len(text)
                self._check_size()
            return []
        if self._pending:
            self._pending.append(text)
            text = "".join(self._pending)
            self._pending.clear()
            self._pending_chars = 0
        self._skip_lf = text[-1] == "\r"
        lines = _split_lines(text)
        tail = lines.pop()
        if tail:
            self._pending.append(tail)
            self._pending_chars = len(tail)
        events: list[Event] = []
        for line in lines:
            self._process_line(line, events)
        self._check_size()
        return events

    def close(self) -> list[Event]:
        """End the stream: an event not ended by a blank line is discarded (§9.2.6)."""
        self._reset_stream()
        return []

    def _check_size(self) -> None:
        limit = self._max_event_chars
        if limit is not None and self._pending_chars + self._data_chars > limit:
            raise EventStreamError(f"event stream sent an event over {limit} characters")

    def _process_line(self, line: str, events: list[Event]) -> None:
        if not line:
            self._dispatch(events)
            return
        colon = line.find(":")
        if colon == 0:
            self.comments_seen += 1
            if self._on_comment is not None:
                self._on_comment(line[2:] if line[1:2] == " " else line[1:])
            return
        if colon < 0:
            field, value = line, ""
        else:
            field = line[:colon]
            value = line[colon + 2 :] if line[colon + 1 : colon + 2] == " " else line[colon + 1 :]
        if field == "data":
            self._data.append(value)
            self._data_chars += len(value) + 1
            if self._max_event_chars is not None:
                self._check_size()
        elif field == "event":
            self._event_type = value
        elif field == "id":
            if "\0" not in value:  # §9.2.6: an id holding NUL is ignored
                self._id_buffer = value
        elif field == "retry":
            if value.isascii() and value.isdigit():
                try:
                    retry = int(value)
                except ValueError:  # past the interpreter's digit limit: ignore it
                    return
                self._retry_ms = retry
                self._block_retry = retry
        # any other field name is ignored (§9.2.6)

    def _dispatch(self, events: list[Event]) -> None:
        # §9.2.6 "dispatch the event": the id is taken even when nothing is dispatched.
        self._last_event_id = self._id_buffer
        if self._data:
            events.append(
                Event(
                    "\n".join(self._data),
                    self._event_type or "message",
                    self._last_event_id,
                    self._block_retry,
                )
            )
            self._data = []
            self._data_chars = 0
        self._event_type = ""
        self._block_retry = None


def parse_events(data: bytes) -> list[Event]:
    """Parse a whole event stream; an unterminated final event is discarded.

    >>> parse_events(b"data: a\\n\\ndata: b")
    [Event(data='a', event='message', id='', retry_ms=None)]
    """
    parser = EventStreamParser()
    return parser.feed(data) + parser.close()
