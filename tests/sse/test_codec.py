from __future__ import annotations

import random

import pytest

from sse_server.sse import (
    Event,
    EventStreamError,
    EventStreamParser,
    encode_comment,
    encode_event,
    encode_retry,
    parse_events,
)


def E(data: str, event: str = "message", id: str = "", retry_ms: int | None = None) -> Event:
    """A parsed event as the parser reports it."""
    return Event(data, event, id, retry_ms)


def lf(text: str) -> str:
    """text with every CRLF and lone CR turned into LF: what a parser gives back for data."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


Outcome = tuple[list[Event], str, int | None, list[str]]


def _run(chunks: list[bytes]) -> Outcome:
    comments: list[str] = []
    parser = EventStreamParser(on_comment=comments.append)
    events: list[Event] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.close()
    assert parser.comments_seen == len(comments)
    return events, parser.last_event_id, parser.retry_ms, comments


def run_every_way(raw: bytes) -> Outcome:
    """Parse raw whole, one byte at a time and split in two at every position; all must agree."""
    whole = _run([raw])
    assert _run([raw[i : i + 1] for i in range(len(raw))]) == whole, "byte at a time differs"
    for cut in range(len(raw) + 1):
        assert _run([raw[:cut], raw[cut:]]) == whole, f"split at {cut} differs"
    return whole


# --- parser tables -------------------------------------------------------------------

LINE_ENDS = [
    (b"data: a\n\n", [E("a")]),
    (b"data: a\r\n\r\n", [E("a")]),
    (b"data: a\r\r", [E("a")]),
    (b"data: a\rdata: b\ndata: c\r\ndata: d\r\n\r", [E("a\nb\nc\nd")]),
    (b"data: a\n\r", [E("a")]),  # LF then CR is two line ends
    (b"data: a\r\n\ndata: b\r\rdata: c\n\r\n", [E("a"), E("b"), E("c")]),
    (b"data: a\r\n", []),  # CRLF is one line end, so no blank line follows
    (b"\r\n\r\n\n\r\rdata: a\r\n\r\n", [E("a")]),
]

BOM = [
    (b"\xef\xbb\xbfdata: a\n\n", [E("a")]),
    (b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\n", []),  # the second BOM starts the field name
    (b"data: a\n\n\xef\xbb\xbfdata: b\n\n", [E("a")]),
    (b"data: \xef\xbb\xbfa\n\n", [E("\ufeffa")]),
    (b"\xef\xbb\xbf", []),
]

UNICODE = [
    ("data: é€😀ß\n\n".encode(), [E("é€😀ß")]),
    ("event: ünï\ndata: 日本\n\n".encode(), [E("日本", "ünï")]),
    ("data: a\u2028b\u2029c\x0bd\x0ce\n\n".encode(), [E("a\u2028b\u2029c\x0bd\x0ce")]),
    ("data: a\x1cb\x1dc\x1ed\x85e\n\n".encode(), [E("a\x1cb\x1dc\x1ed\x85e")]),
    (b"data: \xff\xfe\n\n", [E("\ufffd\ufffd")]),
    (b"data: \xe2\x82\n\n", [E("\ufffd")]),  # a truncated sequence is one replacement
    (b"data: \xf0\x9f\x98\n\n", [E("\ufffd")]),
    (b"data: a\x00b\n\n", [E("a\x00b")]),
]

FIELDS = [
    (b"data\n\n", [E("")]),
    (b"data:\n\n", [E("")]),
    (b"data: \n\n", [E("")]),
    (b"data:x\n\n", [E("x")]),
    (b"data:  x\n\n", [E(" x")]),
    (b"data: x \n\n", [E("x ")]),
    (b"data: a:b: c\n\n", [E("a:b: c")]),
    (b"data\ndata\n\n", [E("\n")]),
    (b"data: a\ndata\ndata: b\n\n", [E("a\n\nb")]),
    (b"data: a\n\ndata: b\n\n", [E("a"), E("b")]),
    (b"event: add\ndata: 1\n\ndata: 2\n\n", [E("1", "add"), E("2")]),
    (b"event: a\nevent: b\ndata: 1\n\n", [E("1", "b")]),
    (b"event\ndata: 1\n\n", [E("1")]),
    (b"event:\ndata: 1\n\n", [E("1")]),
    (b"event:  sp\ndata: 1\n\n", [E("1", " sp")]),
    (b"foo: bar\ndata: a\nbaz\n\n", [E("a")]),
    (b"Data: a\n\n", []),  # field names are case-sensitive
    (b" data: a\n\n", []),  # a leading space is part of the field name
    (b"data : a\n\n", []),
]

COMMENTS = [
    (b": hi\ndata: a\n:there\n\n", [E("a")]),
    (b":\n\n", []),
    (b":data: a\n\n", []),
    (b": ok\r: two\r\n\r\n", []),
]

DISPATCH = [
    (b"\n\n\n", []),
    (b"event: x\n\n", []),
    (b"event: x\n\ndata: y\n\n", [E("y")]),  # a blank line with no data still resets the type
    (b"retry: 10\n\ndata: y\n\n", [E("y")]),
    (b"data: a\n\ndata: b", [E("a")]),  # an unterminated final event is discarded
    (b"data: a\n\ndata: b\n", [E("a")]),
    (b"data: a\n\ndata: b\r", [E("a")]),
    (b"data: a", []),
    (b"", []),
]

IDS = [
    (b"id: 1\ndata: a\n\n", [E("a", id="1")]),
    (b"id: 1\ndata: a\n\ndata: b\n\n", [E("a", id="1"), E("b", id="1")]),
    (b"id: 1\ndata: a\n\nid\ndata: b\n\n", [E("a", id="1"), E("b", id="")]),
    (b"id: 1\ndata: a\n\nid:\ndata: b\n\n", [E("a", id="1"), E("b", id="")]),
    (b"id: 1\n\nid: 2\x003\ndata: x\n\n", [E("x", id="1")]),
    (b"id: \x00\ndata: x\n\n", [E("x")]),
    (b"id:  5\ndata: x\n\n", [E("x", id=" 5")]),
    (b"data: x\nid: 7\n\n", [E("x", id="7")]),  # the id applies to the event it sits in
    (b"id: a\nid: b\ndata: x\n\n", [E("x", id="b")]),
    ("id: é\ndata: x\n\n".encode(), [E("x", id="é")]),
]

RETRY = [
    (b"retry: 1000\ndata: a\n\ndata: b\n\n", [E("a", retry_ms=1000), E("b")]),
    (b"retry: 0\ndata: a\n\n", [E("a", retry_ms=0)]),
    (b"retry: 007\ndata: a\n\n", [E("a", retry_ms=7)]),
    (b"retry: 10x\ndata: a\n\n", [E("a")]),
    (b"retry: -1\ndata: a\n\n", [E("a")]),
    (b"retry: 1.5\ndata: a\n\n", [E("a")]),
    (b"retry:  100\ndata: a\n\n", [E("a")]),
    (b"retry:\ndata: a\n\n", [E("a")]),
    (b"retry\ndata: a\n\n", [E("a")]),
    ("retry: \u0661\u0662\ndata: a\n\n".encode(), [E("a")]),  # non-ASCII digits
    ("retry: \u00b2\ndata: a\n\n".encode(), [E("a")]),
]


@pytest.mark.parametrize(("raw", "expected"), LINE_ENDS)
def test_line_ends(raw: bytes, expected: list[Event]) -> None:
    """CRLF, lone CR and lone LF each end a line, wherever the chunks split."""
    assert run_every_way(raw)[0] == expected


@pytest.mark.parametrize(("raw", "expected"), BOM)
def test_bom(raw: bytes, expected: list[Event]) -> None:
    """One UTF-8 BOM is stripped at the very start of the stream and nowhere else."""
    assert run_every_way(raw)[0] == expected


@pytest.mark.parametrize(("raw", "expected"), UNICODE)
def test_unicode(raw: bytes, expected: list[Event]) -> None:
    """UTF-8 split across chunks decodes whole, bad bytes become U+FFFD, U+2028 and kin do not end lines."""
    assert run_every_way(raw)[0] == expected


@pytest.mark.parametrize(("raw", "expected"), FIELDS)
def test_fields(raw: bytes, expected: list[Event]) -> None:
    """Field names without a colon, one stripped space, and unknown fields follow the spec."""
    assert run_every_way(raw)[0] == expected


@pytest.mark.parametrize(("raw", "expected"), COMMENTS)
def test_comments_are_ignored(raw: bytes, expected: list[Event]) -> None:
    """A line that starts with a colon is a comment and never changes an event."""
    assert run_every_way(raw)[0] == expected


@pytest.mark.parametrize(("raw", "expected"), DISPATCH)
def test_dispatch(raw: bytes, expected: list[Event]) -> None:
    """A blank line dispatches only when data was given; an unterminated event is discarded."""
    assert run_every_way(raw)[0] == expected


@pytest.mark.parametrize(("raw", "expected"), IDS)
def test_ids(raw: bytes, expected: list[Event]) -> None:
    """An id persists across events, an empty id resets it, an id holding NUL is ignored."""
    assert run_every_way(raw)[0] == expected


@pytest.mark.parametrize(("raw", "expected"), RETRY)
def test_retry(raw: bytes, expected: list[Event]) -> None:
    """retry is taken only when it is ASCII digits, and reported on the event it came with."""
    assert run_every_way(raw)[0] == expected


@pytest.mark.parametrize(
    ("raw", "comments"),
    [
        (b": hi\ndata: a\n:there\n\n", ["hi", "there"]),
        (b":\n\n", [""]),
        (b":  two spaces\n", [" two spaces"]),
        (b": ok\r: two\r\n\r\n", ["ok", "two"]),
        (b"data: a\n: tail", []),  # an unterminated comment line is never read
    ],
)
def test_comments_reach_the_callback(raw: bytes, comments: list[str]) -> None:
    """on_comment receives each comment's text with one leading space stripped."""
    assert run_every_way(raw)[3] == comments


@pytest.mark.parametrize(
    ("raw", "last_event_id"),
    [
        (b"", ""),
        (b"id: 5\n\n", "5"),  # taken at the blank line even though nothing is dispatched
        (b"id: 5\n", ""),  # not yet: the block never ended
        (b"id: 5\n\nid: 6\ndata: x", "5"),
        (b"id: 5\n\nid\n\n", ""),
        (b"id: 5\n\nid: \x00\n\n", "5"),
    ],
)
def test_last_event_id_property(raw: bytes, last_event_id: str) -> None:
    """last_event_id is the id in effect at the last blank line, what a reconnect sends."""
    assert run_every_way(raw)[1] == last_event_id


@pytest.mark.parametrize(
    ("raw", "retry_ms"),
    [
        (b"", None),
        (b"retry: 1500\n", 1500),  # applies at once, no blank line needed
        (b"retry: 1500\n\nretry: x\n\n", 1500),
        (b"retry: 1500\nretry: 20\n", 20),
    ],
)
def test_retry_property(raw: bytes, retry_ms: int | None) -> None:
    """retry_ms is the reconnection time the stream last set with valid digits."""
    assert run_every_way(raw)[2] == retry_ms


def test_retry_beyond_int_digit_limit_is_ignored() -> None:
    """A retry longer than the interpreter converts is ignored instead of raising."""
    raw = b"retry: 1" + b"0" * 5000 + b"\ndata: a\n\n"
    assert _run([raw]) == ([E("a")], "", None, [])
    assert _run([raw[i : i + 1] for i in range(len(raw))]) == ([E("a")], "", None, [])


def test_cr_at_chunk_end_then_lf_is_one_line_end() -> None:
    """A CR ending one feed and an LF opening the next count as one line end."""
    parser = EventStreamParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"data: b\r") == []
    assert parser.feed(b"\n\r") == [E("a\nb")]


def test_cr_pairing_survives_empty_and_partial_feeds() -> None:
    """Feeds that decode to nothing between a CR and its LF do not break the pair."""
    parser = EventStreamParser()
    assert parser.feed(b"data: \xc3") == []
    assert parser.feed(b"\xa9\r") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\n") == [E("é")]


def test_bom_split_across_feeds() -> None:
    """A BOM arriving one byte per feed is still stripped."""
    parser = EventStreamParser()
    events: list[Event] = []
    for byte in b"\xef\xbb\xbfdata: a\n\n":
        events += parser.feed(bytes([byte]))
    assert events == [E("a")]


def test_feed_accepts_bytearray_and_memoryview() -> None:
    """feed takes any bytes-like chunk."""
    parser = EventStreamParser()
    assert parser.feed(bytearray(b"data: a\n")) == []
    assert parser.feed(memoryview(b"\n")) == [E("a")]


def test_parse_events_matches_parser() -> None:
    """parse_events is feed then close on a fresh parser."""
    raw = b"id: 1\ndata: a\n\nevent: e\ndata: b\n\ndata: c"
    assert parse_events(raw) == [E("a", id="1"), E("b", "e", "1")]


def test_close_discards_pending_and_readies_next_stream() -> None:
    """close() drops the unterminated event; a new stream keeps last_event_id and retry_ms."""
    parser = EventStreamParser()
    assert parser.feed(b"retry: 900\nid: 1\ndata: a\n\nid: 2\ndata: b\n") == [E("a", id="1", retry_ms=900)]
    assert parser.close() == []
    assert parser.last_event_id == "1"
    assert parser.retry_ms == 900
    # a new connection: it may open with a BOM, and its first event inherits the id
    assert parser.feed(b"\xef\xbb\xbfdata: c\n\n") == [E("c", id="1")]


def test_close_forgets_a_trailing_cr() -> None:
    """An LF opening the next stream is a line end of its own, not the pair of an old CR."""
    parser = EventStreamParser()
    assert parser.feed(b"data: a\r") == []
    parser.close()
    assert parser.feed(b"\ndata: b\n\n") == [E("b")]


def test_initial_last_event_id() -> None:
    """A parser built with last_event_id reports it on events until the stream sets another."""
    parser = EventStreamParser(last_event_id="41")
    assert parser.last_event_id == "41"
    assert parser.feed(b"data: a\n\nid: 42\ndata: b\n\n") == [E("a", id="41"), E("b", id="42")]


def test_comments_seen_counts_without_callback() -> None:
    """comments_seen counts heartbeats even when no callback is given."""
    parser = EventStreamParser()
    parser.feed(encode_comment() + encode_event("a") + encode_comment("x\ny"))
    assert parser.comments_seen == 3


@pytest.mark.parametrize(
    "raw",
    [
        b"data: " + b"x" * 200,  # one long unterminated line
        b"data: " + b"x" * 90 + b"\n" + b"data: " + b"y" * 90 + b"\n",  # data gathered without dispatch
        b": " + b"z" * 200,  # even a comment line must end somewhere
    ],
)
def test_max_event_chars_bounds_memory(raw: bytes) -> None:
    """Past max_event_chars feed() raises EventStreamError, whole or one byte at a time."""
    with pytest.raises(EventStreamError):
        EventStreamParser(max_event_chars=150).feed(raw)
    parser = EventStreamParser(max_event_chars=150)
    with pytest.raises(EventStreamError):
        for i in range(len(raw)):
            parser.feed(raw[i : i + 1])


def test_max_event_chars_allows_what_fits() -> None:
    """Events within max_event_chars parse normally, and dispatch frees the budget."""
    parser = EventStreamParser(max_event_chars=150)
    chunk = b"data: " + b"x" * 100 + b"\n\n"
    assert parser.feed(chunk * 20) == [E("x" * 100)] * 20


def test_oversized_stream_is_caught_as_bad_input() -> None:
    """A caller handling bad input with `except ValueError` catches an oversized stream, told the limit."""
    parser = EventStreamParser(max_event_chars=150)
    assert parser.feed(b"data: ok\n\n") == [E("ok")]
    with pytest.raises(ValueError, match="over 150 characters"):
        parser.feed(b"data: " + b"x" * 200)


# --- encoder tables ------------------------------------------------------------------

ENCODE = [
    ({"data": "hello"}, b"data: hello\n\n"),
    ({"data": ""}, b"data:\n\n"),
    ({"data": " lead"}, b"data:  lead\n\n"),
    ({"data": "a\nb"}, b"data: a\ndata: b\n\n"),
    ({"data": "a\r\nb\rc\n"}, b"data: a\ndata: b\ndata: c\ndata:\n\n"),
    ({"data": "\n"}, b"data:\ndata:\n\n"),
    ({"data": "\r\n\r"}, b"data:\ndata:\ndata:\n\n"),
    ({"data": "a\n\nb"}, b"data: a\ndata:\ndata: b\n\n"),
    ({"data": "a\u2028b"}, "data: a\u2028b\n\n".encode()),
    ({"data": "\x0b\x0c\x1c\x1d\x1e\x85\u2029"}, "data: \x0b\x0c\x1c\x1d\x1e\x85\u2029\n\n".encode()),
    ({"data": "é😀"}, "data: é😀\n\n".encode()),
    ({"data": "x", "event": "tick"}, b"event: tick\ndata: x\n\n"),
    ({"data": "x", "event": ""}, b"data: x\n\n"),
    ({"data": "x", "id": "5"}, b"id: 5\ndata: x\n\n"),
    ({"data": "x", "id": ""}, b"id:\ndata: x\n\n"),
    ({"data": "x", "id": " 5"}, b"id:  5\ndata: x\n\n"),
    ({"data": "x", "retry_ms": 0}, b"retry: 0\ndata: x\n\n"),
    (
        {"data": "x\ny", "event": "tick", "id": "5", "retry_ms": 3000},
        b"id: 5\nevent: tick\nretry: 3000\ndata: x\ndata: y\n\n",
    ),
    ({"id": "7"}, b"id: 7\n\n"),
    ({"retry_ms": 10}, b"retry: 10\n\n"),
    ({}, b"\n"),
]


@pytest.mark.parametrize(("kwargs", "expected"), ENCODE)
def test_encode_event(kwargs: dict[str, object], expected: bytes) -> None:
    """encode_event puts one space after each colon, splits data on CR/LF/CRLF only, ends in a blank line."""
    assert encode_event(**kwargs) == expected  # type: ignore[arg-type]
    if "data" in kwargs:
        assert Event(**kwargs).encode() == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "expected"), ENCODE)
def test_encoded_events_parse_back(kwargs: dict[str, object], expected: bytes) -> None:
    """Every encoder table row parses back to its own data, type, id and retry."""
    data = kwargs.get("data")
    event = str(kwargs.get("event") or "message")
    id_ = str(kwargs.get("id") or "")
    retry = kwargs.get("retry_ms")
    assert retry is None or isinstance(retry, int)
    want = [] if data is None else [E(lf(str(data)), event, id_, retry)]
    assert run_every_way(expected)[0] == want


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", b":\n\n"),
        ("ping", b": ping\n\n"),
        (" sp", b":  sp\n\n"),
        ("a\r\nb", b": a\n: b\n\n"),
        ("a\n", b": a\n:\n\n"),
        ("a\rb\nc", b": a\n: b\n: c\n\n"),
        ("a\u2028b", ": a\u2028b\n\n".encode()),
    ],
)
def test_encode_comment(text: str, expected: bytes) -> None:
    """encode_comment prefixes every line with a colon and ends with a blank line."""
    assert encode_comment(text) == expected
    assert run_every_way(expected)[0] == []
    assert run_every_way(expected)[3] == lf(text).split("\n")


def test_encode_comment_default_is_heartbeat() -> None:
    """encode_comment() is the smallest heartbeat, an empty comment."""
    assert encode_comment() == b":\n\n"


@pytest.mark.parametrize(("retry_ms", "expected"), [(0, b"retry: 0\n\n"), (3000, b"retry: 3000\n\n")])
def test_encode_retry(retry_ms: int, expected: bytes) -> None:
    """encode_retry writes a block holding only the reconnection time."""
    assert encode_retry(retry_ms) == expected
    assert encode_event(retry_ms=retry_ms) == expected


@pytest.mark.parametrize("event", ["a\nb", "a\rb", "a\r\nb", "\n", "tick\r"])
def test_event_name_refuses_line_ends(event: str) -> None:
    """An event name holding CR or LF is refused, so it cannot inject fields."""
    with pytest.raises(ValueError, match="CR or LF"):
        encode_event("x", event=event)


@pytest.mark.parametrize("id", ["1\n", "1\r", "1\r\ndata: evil", "\n"])
def test_id_refuses_line_ends(id: str) -> None:
    """An id holding CR or LF is refused, so it cannot inject fields."""
    with pytest.raises(ValueError, match="CR or LF"):
        encode_event("x", id=id)


@pytest.mark.parametrize("id", ["\x00", "1\x002"])
def test_id_refuses_nul(id: str) -> None:
    """An id holding NUL is refused, since a browser would ignore it."""
    with pytest.raises(ValueError, match="NUL"):
        encode_event("x", id=id)


def test_event_name_and_data_may_hold_nul() -> None:
    """NUL is only refused in an id; data and event names carry it through."""
    assert parse_events(encode_event("a\x00", event="e\x00")) == [E("a\x00", "e\x00")]


@pytest.mark.parametrize("retry_ms", [-1, -3000])
def test_retry_refuses_negative(retry_ms: int) -> None:
    """A negative retry is refused by encode_event and encode_retry."""
    with pytest.raises(ValueError, match="non-negative"):
        encode_event("x", retry_ms=retry_ms)
    with pytest.raises(ValueError, match="non-negative"):
        encode_retry(retry_ms)


@pytest.mark.parametrize("retry_ms", [1.5, "100", True, None, 3.0])
def test_retry_refuses_non_int(retry_ms: object) -> None:
    """A retry that is not an int (a bool included) is refused with TypeError."""
    with pytest.raises(TypeError, match="int"):
        encode_retry(retry_ms)  # type: ignore[arg-type]
    if retry_ms is not None:
        with pytest.raises(TypeError, match="int"):
            encode_event("x", retry_ms=retry_ms)  # type: ignore[arg-type]


def test_lone_surrogate_is_refused() -> None:
    """Data that is not encodable as UTF-8 raises rather than sending invalid bytes."""
    with pytest.raises(UnicodeEncodeError):
        encode_event("\ud800")


def test_event_defaults() -> None:
    """Event() is an empty message that still dispatches."""
    assert Event().encode() == b"data:\n\n"
    assert parse_events(Event().encode()) == [E("")]


def test_heartbeat_between_events_changes_nothing() -> None:
    """A heartbeat comment between events leaves both events intact."""
    raw = encode_event("a", id="1") + encode_comment() + encode_event("b", event="e")
    assert run_every_way(raw)[0] == [E("a", id="1"), E("b", "e", "1")]


# --- round trip ----------------------------------------------------------------------

_PIECES = [
    "a", "b", "z", "0", " ", "  ", ":", ": ", "\r", "\n", "\r\n", "\n\r", "\u2028", "\u2029",
    "\x0b", "\x0c", "\x1c", "\x85", "\x00", "\ufeff", "é", "€", "😀", "data: ", "id: x", "\t",
]  # fmt: skip
_NAME_PIECES = [p for p in _PIECES if "\r" not in p and "\n" not in p]
_ID_PIECES = [p for p in _NAME_PIECES if "\0" not in p]


def _random_text(rng: random.Random, pieces: list[str], most: int) -> str:
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, most)))


def test_round_trip_random() -> None:
    """Random events encode then parse back, whole and chunked, to their data, type, id and retry."""
    rng = random.Random(20240601)
    for _case in range(3000):
        raw = bytearray()
        expected: list[Event] = []
        last_id = ""
        for _ in range(rng.randint(1, 4)):
            data = None if rng.random() < 0.1 else _random_text(rng, _PIECES, 12)
            event = rng.choice([None, "", _random_text(rng, _NAME_PIECES, 5)])
            id_ = rng.choice([None, None, "", _random_text(rng, _ID_PIECES, 5)])
            retry = rng.choice([None, None, rng.randint(0, 10**12)])
            raw += encode_event(data, event=event, id=id_, retry_ms=retry)
            if rng.random() < 0.2:
                raw += encode_comment(_random_text(rng, _PIECES, 6))
            if id_ is not None:
                last_id = id_
            if data is not None:
                expected.append(Event(lf(data), event or "message", last_id, retry))
        raw = bytes(raw)
        assert parse_events(raw) == expected, raw
        cuts = sorted(rng.sample(range(len(raw) + 1), min(len(raw) + 1, rng.randint(1, 6))))
        chunks = [raw[i:j] for i, j in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        assert _run(chunks)[0] == expected, (raw, cuts)
        assert _run(chunks)[1] == last_id


def test_round_trip_every_split_of_a_sample() -> None:
    """A sample of random events parses identically for every split and byte at a time."""
    rng = random.Random(7)
    for _case in range(40):
        data = _random_text(rng, _PIECES, 10)
        event = _random_text(rng, _NAME_PIECES, 3)
        raw = encode_event(data, event=event, id="i")
        assert run_every_way(raw)[0] == [Event(lf(data), event or "message", "i", None)]
