"""The pure HTTP/1.1 parser: tables of raw bytes fed whole, a byte at a time and split
at random points must all give the same events, or the same error status."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from sse_server.http11 import (
    END_OF_MESSAGE,
    NEED_DATA,
    ChunkedDecoder,
    ProtocolError,
    RequestHead,
    RequestParser,
    encode_chunk,
    encode_response_head,
    http_date,
)

from .http_cases import AT_LIMITS, CHUNKED_EXT_TRAILERS, FUZZ_SEEDS, HOSTILE, MiB, get, mutate, post_chunked, req
from .http_client import read_head, read_reply

END = "END"


def normalize(events: list[Any]) -> list[Any]:
    """Events as comparable values: heads as dicts, adjacent body pieces merged."""
    out: list[Any] = []
    for e in events:
        if isinstance(e, RequestHead):
            out.append(("head", dataclasses.asdict(e)))
        elif isinstance(e, bytes):
            if out and isinstance(out[-1], bytes):
                out[-1] += e
            else:
                out.append(e)
        elif e is END_OF_MESSAGE:
            out.append(END)
        else:
            out.append(e)
    return out


def parse(pieces: Iterable[bytes], **limits: int) -> list[Any]:
    """Feed pieces in order; collect every event and end with ("error", status) on a ProtocolError."""
    parser = RequestParser(**limits)
    events: list[Any] = []
    try:
        for piece in pieces:
            parser.feed(piece)
            while (event := parser.next_event()) is not NEED_DATA:
                events.append(event)
    except ProtocolError as e:
        events.append(("error", e.status))
    return normalize(events)


def bytewise(raw: bytes) -> Iterator[bytes]:
    return (raw[i : i + 1] for i in range(len(raw)))


def random_split(raw: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(1, 24))))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


def splittings(raw: bytes) -> list[tuple[str, list[bytes] | Iterator[bytes]]]:
    """Ways to deliver raw: a byte at a time (when small enough to be quick) and random splits."""
    ways: list[tuple[str, list[bytes] | Iterator[bytes]]] = [
        (f"random-{seed}", random_split(raw, seed)) for seed in range(4)
    ]
    if len(raw) <= 100_000:
        ways.append(("bytewise", bytewise(raw)))
    return ways


def H(**fields: Any) -> tuple[str, dict[str, Any]]:
    """An expected head: only the given fields are compared."""
    return ("head", fields)


def matches(actual: list[Any], expected: list[Any]) -> bool:
    if len(actual) != len(expected):
        return False
    for a, e in zip(actual, expected, strict=True):
        if isinstance(e, tuple) and e and e[0] == "head":
            if not (isinstance(a, tuple) and a[0] == "head"):
                return False
            if any(a[1][k] != v for k, v in e[1].items()):
                return False
        elif a != e:
            return False
    return True


VALID: list[Any] = [
    pytest.param(get(), [H(method="GET", target="/healthz", path="/healthz", query="", version="1.1",
                           headers=[("host", "t")], keep_alive=True, content_length=None, chunked=False,
                           expect_continue=False)], id="get"),
    pytest.param(get(b"/search?q=a+b&x=%20"), [H(path="/search", query="q=a+b&x=%20")], id="get-query"),
    pytest.param(get(b"/a%2Fb/%7E"), [H(path="/a%2Fb/%7E", target="/a%2Fb/%7E")], id="percent-kept-raw"),
    pytest.param(req(b"HEAD /healthz HTTP/1.1", b"Host: t"), [H(method="HEAD", path="/healthz")], id="head"),
    pytest.param(req(b"POST /echo HTTP/1.1", b"Host: t", b"Content-Length: 5", body=b"hello"),
                 [H(method="POST", content_length=5, chunked=False), b"hello", END], id="post-cl"),
    pytest.param(req(b"POST /echo HTTP/1.1", b"Host: t", b"Content-Length: 0"),
                 [H(method="POST", content_length=0)], id="post-cl-0"),
    pytest.param(req(b"PUT /x HTTP/1.1", b"Host: t", b"Content-Length: 5, 5", body=b"hello"),
                 [H(method="PUT", content_length=5), b"hello", END], id="cl-list-same"),
    pytest.param(req(b"PUT /x HTTP/1.1", b"Host: t", b"Content-Length: 5", b"content-length: 005",
                     body=b"hello"), [H(content_length=5), b"hello", END], id="cl-twice-same"),
    pytest.param(CHUNKED_EXT_TRAILERS,
                 [H(method="POST", chunked=True, content_length=None), b"hello world", END],
                 id="chunked-extensions-trailers"),
    pytest.param(req(b"POST /u HTTP/1.1", b"Host: t", b"Transfer-Encoding: Chunked",
                     body=b"A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n"),
                 [H(chunked=True), b"0123456789abcdefghij", END], id="chunked-hex-case"),
    pytest.param(req(b"POST /u HTTP/1.1", b"Host: t", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
                 [H(chunked=True), END], id="chunked-empty"),
    pytest.param(req(b"POST /u HTTP/1.1", b"Host: t", b"Transfer-Encoding: chunked",
                     body=b"5 ;a=1\r\nhello\r\n0\t;b\r\n\r\n"),
                 [H(chunked=True), b"hello", END], id="chunk-ext-bws-before-semicolon"),
    pytest.param(get(b"/1") + get(b"/2"), [H(path="/1"), H(path="/2")], id="pipelined-get-get"),
    pytest.param(req(b"POST /1 HTTP/1.1", b"Host: t", b"Content-Length: 3", body=b"abc") + get(b"/2"),
                 [H(path="/1", content_length=3), b"abc", END, H(path="/2")], id="pipelined-post-get"),
    pytest.param(req(b"POST /1 HTTP/1.1", b"Host: t", b"Transfer-Encoding: chunked", body=b"3\r\nabc\r\n0\r\n\r\n")
                 + req(b"HEAD /2 HTTP/1.1", b"Host: t"),
                 [H(path="/1", chunked=True), b"abc", END, H(method="HEAD", path="/2")],
                 id="pipelined-chunked-head"),
    pytest.param(get(b"/1") + b"\r\n" + get(b"/2"), [H(path="/1"), H(path="/2")], id="blank-line-between"),
    pytest.param(b"\r\n\r\n" + get(), [H(path="/healthz")], id="leading-crlf"),
    pytest.param(b"\r\n" * 8 + get(), [H(path="/healthz")], id="eight-leading-crlf"),
    pytest.param(b"GET / HTTP/1.0\r\n\r\n", [H(version="1.0", keep_alive=False, headers=[])], id="http10-close"),
    pytest.param(req(b"GET / HTTP/1.0", b"Connection: keep-alive"), [H(version="1.0", keep_alive=True)],
                 id="http10-keep-alive"),
    pytest.param(req(b"GET / HTTP/1.0", b"Connection: Keep-Alive"), [H(version="1.0", keep_alive=True)],
                 id="http10-keep-alive-case"),
    pytest.param(req(b"GET / HTTP/1.0", b"Connection: keep-alive, close"), [H(keep_alive=False)],
                 id="http10-close-wins"),
    pytest.param(req(b"GET / HTTP/1.1", b"Host: t", b"Connection: close"), [H(keep_alive=False)],
                 id="http11-close"),
    pytest.param(req(b"GET / HTTP/1.1", b"Host: t", b"Connection: Upgrade, CLOSE"), [H(keep_alive=False)],
                 id="http11-close-in-list"),
    pytest.param(req(b"GET / HTTP/1.1", b"Host: t", b"Connection: upgrade"), [H(keep_alive=True)],
                 id="http11-default-keep-alive"),
    pytest.param(get(version=b"HTTP/1.2"), [H(version="1.1")], id="http12-served-as-11"),
    pytest.param(get(version=b"HTTP/1.9"), [H(version="1.1")], id="http19-served-as-11"),
    pytest.param(get(b"http://example.com/x?y=1"),
                 [H(target="http://example.com/x?y=1", path="/x", query="y=1")], id="absolute-form"),
    pytest.param(get(b"http://example.com"), [H(path="/", query="")], id="absolute-form-no-path"),
    pytest.param(get(b"https://example.com:8443/a/b"), [H(path="/a/b")], id="absolute-form-https-port"),
    pytest.param(get(b"http://[::1]:80/v6"), [H(path="/v6")], id="absolute-form-ipv6"),
    pytest.param(req(b"OPTIONS * HTTP/1.1", b"Host: t"), [H(method="OPTIONS", target="*", path="*")],
                 id="options-asterisk"),
    pytest.param(req(b"POST /e HTTP/1.1", b"Host: t", b"Content-Length: 2", b"Expect: 100-continue", body=b"hi"),
                 [H(expect_continue=True, content_length=2), b"hi", END], id="expect-100-continue"),
    pytest.param(req(b"POST /e HTTP/1.1", b"Host: t", b"Content-Length: 2", b"Expect: 100-Continue", body=b"hi"),
                 [H(expect_continue=True), b"hi", END], id="expect-case-insensitive"),
    pytest.param(req(b"POST /e HTTP/1.0", b"Content-Length: 2", b"Expect: 100-continue", body=b"hi"),
                 [H(expect_continue=False), b"hi", END], id="expect-ignored-in-10"),
    pytest.param(req(b"GET / HTTP/1.1", b"Host: t", b"X-Name: caf\xe9 \x80\xff"),
                 [H(headers=[("host", "t"), ("x-name", "caf\xe9 \x80\xff")])], id="obs-text-in-value"),
    pytest.param(req(b"GET / HTTP/1.1", b"Host: t", b"X-A: \t a\tb \t"),
                 [H(headers=[("host", "t"), ("x-a", "a\tb")])], id="value-ows-trimmed"),
    pytest.param(req(b"GET / HTTP/1.1", b"HOST: t", b"X-Mixed-CASE: V", b"X-Empty:"),
                 [H(headers=[("host", "t"), ("x-mixed-case", "V"), ("x-empty", "")])], id="names-lower-cased"),
    pytest.param(req(b"GET / HTTP/1.1", b"Host:"), [H(headers=[("host", "")])], id="host-empty-value"),
    pytest.param(req(b"GET / HTTP/1.1", b"Host: t", b"Accept: a", b"Accept: b"),
                 [H(headers=[("host", "t"), ("accept", "a"), ("accept", "b")])], id="repeated-header-kept"),
    pytest.param(req(b"DELETE /x HTTP/1.1", b"Host: t"), [H(method="DELETE")], id="delete"),
    pytest.param(req(b"PATCH /x HTTP/1.1", b"Host: t", b"Content-Length: 1", body=b"p"),
                 [H(method="PATCH"), b"p", END], id="patch"),
    pytest.param(req(b"TRACE /x HTTP/1.1", b"Host: t"), [H(method="TRACE")], id="trace"),
    pytest.param(req(b"POST /big HTTP/1.1", b"Host: t", b"Content-Length: %d" % MiB, body=b"x" * MiB),
                 [H(content_length=MiB), b"x" * MiB, END], id="cl-exactly-1MiB"),
    pytest.param(req(b"POST /big HTTP/1.1", b"Host: t", b"Transfer-Encoding: chunked",
                     body=b"80000\r\n" + b"y" * 0x80000 + b"\r\n80000\r\n" + b"y" * 0x80000 + b"\r\n0\r\n\r\n"),
                 [H(chunked=True), b"y" * MiB, END], id="chunked-exactly-1MiB"),
    *[pytest.param(p.values[0], [H(method="GET")], id=p.id) for p in AT_LIMITS],
]


@pytest.mark.parametrize(("raw", "expected"), VALID)
def test_valid_request_fed_whole(raw: bytes, expected: list[Any]) -> None:
    """A valid request fed in one piece gives the expected heads, bodies and ends."""
    result = parse([raw])
    assert matches(result, expected), result


@pytest.mark.parametrize(("raw", "expected"), VALID)
def test_valid_request_split_anywhere(raw: bytes, expected: list[Any]) -> None:
    """A valid request split a byte at a time or at random points parses as when whole."""
    whole = parse([raw])
    for name, pieces in splittings(raw):
        assert parse(pieces) == whole, name


@pytest.mark.parametrize(("raw", "status"), HOSTILE)
def test_hostile_request_fed_whole(raw: bytes, status: int) -> None:
    """A malformed or smuggling-shaped request fed whole is refused with its status."""
    result = parse([raw])
    assert result[-1] == ("error", status), result[-3:]
    assert not any(isinstance(e, tuple) and e[0] == "head" and e[1]["path"] != "/echo" for e in result)


@pytest.mark.parametrize(("raw", "status"), HOSTILE)
def test_hostile_request_split_anywhere(raw: bytes, status: int) -> None:
    """A hostile request split a byte at a time or at random points fails exactly as when whole."""
    whole = parse([raw])
    for name, pieces in splittings(raw):
        assert parse(pieces) == whole, name


@pytest.mark.parametrize(("raw", "status"), HOSTILE)
def test_hostile_request_pipelined_behind_a_valid_one_fails_the_same(raw: bytes, status: int) -> None:
    """A hostile request after a complete valid one on the same parser fails exactly as when first."""
    valid = parse([get()])
    assert [e[0] for e in valid] == ["head"]  # a request without a body is one event
    assert parse([get() + raw]) == valid + parse([raw])


def test_parser_stays_broken_after_error() -> None:
    """After a ProtocolError every later call fails too, even for a valid request."""
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00\r\n\r\n")
    with pytest.raises(ProtocolError):
        parser.next_event()
    parser.feed(get())
    for _ in range(3):
        with pytest.raises(ProtocolError):
            parser.next_event()


def test_parser_stays_broken_after_body_error() -> None:
    """A chunk framing error leaves the parser refusing the pipelined request behind it."""
    parser = RequestParser()
    parser.feed(req(b"POST / HTTP/1.1", b"Host: t", b"Transfer-Encoding: chunked", body=b"5\r\nhelloXX") + get())
    assert isinstance(parser.next_event(), RequestHead)
    assert parser.next_event() == b"hello"
    with pytest.raises(ProtocolError) as first:
        parser.next_event()
    assert first.value.status == 400
    with pytest.raises(ProtocolError):
        parser.next_event()


def test_error_carries_status_and_message() -> None:
    """ProtocolError says what was wrong and which status answers it."""
    parser = RequestParser()
    parser.feed(get(version=b"HTTP/2.0"))
    with pytest.raises(ProtocolError, match="version") as info:
        parser.next_event()
    assert info.value.status == 505


def test_idle_and_in_head_track_message_boundaries() -> None:
    """idle is true only between messages with nothing buffered; in_head is false inside a body."""
    parser = RequestParser()
    assert parser.idle and parser.in_head
    parser.feed(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nab")
    assert not parser.idle
    head = parser.next_event()
    assert isinstance(head, RequestHead) and head.has_body
    assert not parser.in_head and not parser.idle
    assert parser.next_event() == b"ab"
    assert parser.next_event() is NEED_DATA
    parser.feed(b"c")
    assert parser.next_event() == b"c"
    assert parser.next_event() is END_OF_MESSAGE
    assert parser.idle and parser.buffered == 0


def test_custom_limits_are_honoured() -> None:
    """Limits given to the constructor replace the defaults, each with its status."""
    assert parse([get(b"/" + b"a" * 100)], max_request_line_bytes=64)[-1] == ("error", 414)
    assert parse([req(b"GET / HTTP/1.1", b"Host: t", b"A: 1", b"B: 2")], max_header_count=2)[-1] == ("error", 431)
    assert parse([req(b"GET / HTTP/1.1", b"Host: t", b"A: " + b"a" * 200)], max_header_bytes=128)[-1] == (
        "error", 431)
    assert parse([req(b"POST / HTTP/1.1", b"Host: t", b"Content-Length: 11", body=b"x" * 11)],
                 max_body_bytes=10)[-1] == ("error", 413)
    assert parse([req(b"POST / HTTP/1.1", b"Host: t", b"Content-Length: 10", body=b"x" * 10)],
                 max_body_bytes=10)[-1] == END


def test_head_limit_edges_do_not_depend_on_split() -> None:
    """A head of exactly the limit is accepted however it arrives; one byte more is 431."""
    for extra, expect_error in ((0, False), (1, True)):
        head = req(b"GET / HTTP/1.1", b"Host: t", b"X: ")
        head = head[:-4] + b"a" * (256 - (len(head) - 4) + extra) + b"\r\n\r\n"
        assert len(head) - 4 == 256 + extra
        for pieces in ([head], bytewise(head), random_split(head, 7)):
            result = parse(pieces, max_header_bytes=256)
            assert (result == [("error", 431)]) is expect_error, result


def test_request_line_limit_edge_with_trailing_cr() -> None:
    """A request line of exactly the limit is not refused while its CR waits for the LF."""
    raw = get(b"/" + b"a" * (64 - len(b"GET / HTTP/1.1")))
    assert raw.index(b"\r\n") == 64
    assert parse(bytewise(raw), max_request_line_bytes=64)[0][0] == "head"
    assert parse(bytewise(raw), max_request_line_bytes=63) == [("error", 414)]


class ScanCountingBuffer(bytearray):
    """A parser buffer that counts the bytes its find() and count() calls examine."""

    scanned = 0

    def find(self, sub: Any, start: Any = 0, end: Any = None) -> int:
        stop = len(self) if end is None else min(end, len(self))
        found = super().find(sub, start, stop)
        self.scanned += (found + len(sub) if found >= 0 else stop) - start
        return found

    def count(self, sub: Any, start: Any = 0, end: Any = None) -> int:
        stop = len(self) if end is None else min(end, len(self))
        self.scanned += max(0, stop - start)
        return super().count(sub, start, stop)


def test_head_dripped_a_byte_at_a_time_is_linear() -> None:
    """Feeding a 60 KB head one byte per feed scans a bounded number of bytes per feed, not the whole buffer."""
    raw = req(b"GET / HTTP/1.1", b"Host: t", *[b"X-%d: " % i + b"v" * 600 for i in range(99)])
    assert 60_000 < len(raw) < 64 * 1024
    parser = RequestParser()
    buf = parser._buf = ScanCountingBuffer()  # the parser scans its buffer with find() and count()
    per_feed: list[int] = []
    events: list[Any] = []
    for piece in bytewise(raw):
        before = buf.scanned
        parser.feed(piece)
        while (event := parser.next_event()) is not NEED_DATA:
            events.append(event)
        per_feed.append(buf.scanned - before)
    assert isinstance(events[0], RequestHead) and len(events[0].headers) == 100
    assert parser._buf is buf and buf.scanned >= len(raw)  # the counter saw every byte scanned
    # Rescanning the buffer from its start would cost up to 60 000 bytes on the last feeds.
    assert max(per_feed) <= 64, max(per_feed)


def test_leading_blank_line_limit_counts_across_feeds() -> None:
    """Nine empty lines before a request are refused even when each arrives alone."""
    raw = b"\r\n" * 9 + get()
    assert parse([raw]) == [("error", 400)]
    assert parse(raw[i : i + 2] for i in range(0, len(raw), 2)) == [("error", 400)]


def test_body_arrives_in_pieces_without_copying_ahead() -> None:
    """Body events never run past the declared length into the next request."""
    parser = RequestParser()
    parser.feed(req(b"POST / HTTP/1.1", b"Host: t", b"Content-Length: 3", body=b"abc") + b"GET /n")
    assert isinstance(parser.next_event(), RequestHead)
    assert parser.next_event() == b"abc"
    assert parser.next_event() is END_OF_MESSAGE
    assert parser.next_event() is NEED_DATA
    assert parser.buffered == len(b"GET /n")


def test_encode_response_head() -> None:
    """A response head is a status line, one line per header and a blank line."""
    assert encode_response_head(200, [("Content-Length", "2"), ("X-A", "b")]) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\n"
    )
    assert encode_response_head(599, []).startswith(b"HTTP/1.1 599 Unknown\r\n")


@pytest.mark.parametrize(("name", "value"), [("X-A", "a\r\nSet-Cookie: x"), ("X-A", "a\nb"), ("X-A", "a\rb"),
                                               ("X A", "v"), ("X-A\r\nB", "v"), ("", "v")])
def test_encode_response_head_refuses_splitting(name: str, value: str) -> None:
    """CR or LF in a header value, or a name that is not a token, is refused (response splitting)."""
    with pytest.raises(ValueError):
        encode_response_head(200, [(name, value)])


def test_encode_chunk() -> None:
    """A chunk is its hex size, CRLF, data, CRLF; empty data is the last chunk."""
    assert encode_chunk(b"hello world!") == b"c\r\nhello world!\r\n"
    assert encode_chunk(b"") == b"0\r\n\r\n"


def test_http_date_is_imf_fixdate() -> None:
    """The Date value is an IMF-fixdate in GMT."""
    value = http_date().decode()
    assert value.endswith(" GMT") and len(value) == 29 and value[3:5] == ", "


_ALLOWED_STATUSES = {400, 413, 414, 417, 431, 501, 505}


def _outcome(result: list[Any]) -> tuple[list[Any], int | None]:
    """(events, error status or None) of a parse."""
    if result and isinstance(result[-1], tuple) and result[-1][0] == "error":
        return result[:-1], result[-1][1]
    return result, None


def test_mutated_requests_only_ever_fail_with_a_client_error() -> None:
    """Thousands of damaged requests parse, wait for more, or fail with 4xx/501/505 whole and split alike."""
    # A request with several faults may be refused for a different one of them
    # depending on where its bytes were cut (a NUL seen early versus a bad method
    # seen once the head is complete): statuses must be allowed ones, while the
    # events and the fact of failing must be identical.
    rng = random.Random(9112)
    for i in range(3000):
        raw = mutate(rng, rng.choice(FUZZ_SEEDS))
        events, status = _outcome(parse([raw]))
        assert status is None or status in _ALLOWED_STATUSES, raw
        for pieces in (random_split(raw, i), bytewise(raw)):
            split_events, split_status = _outcome(parse(pieces))
            assert split_events == events, raw
            assert (split_status is None) == (status is None), raw
            assert split_status is None or split_status in _ALLOWED_STATUSES, raw


def test_chunked_response_decoder_byte_at_a_time() -> None:
    """The chunked body decoder gives the same payload fed whole or one byte at a time, trailers included."""
    wire = b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\nworld12345\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT"
    whole = ChunkedDecoder()
    assert whole.feed(wire) == b"hello world12345" and whole.done and whole.extra == b"NEXT"
    single = ChunkedDecoder()
    assert b"".join(single.feed(wire[i : i + 1]) for i in range(len(wire))) == b"hello world12345"
    assert single.done and single.extra == b"NEXT"
    for bad in (b"zz\r\n", b"5\r\nhelloXX\r\n", b"-1\r\n", b"0x5\r\n", b"1" * 2000):
        with pytest.raises(ProtocolError):
            ChunkedDecoder().feed(bad)


# -- one chunked decoder for both directions ----------------------------------------------

# Chunked bodies on their own and what reading them gives: the payload, or the status
# of the ProtocolError. Each is read as a response body by ChunkedDecoder.feed() and as
# a request body behind a chunked POST head by RequestParser, with the same result.
CHUNKED_BODIES: list[Any] = [
    pytest.param(b"0\r\n\r\n", b"", id="empty"),
    pytest.param(b"5\r\nhello\r\n0\r\n\r\n", b"hello", id="one-chunk"),
    pytest.param(b"A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", b"0123456789abcdefghij", id="hex-case"),
    pytest.param(b"005\r\nhello\r\n000\r\n\r\n", b"hello", id="leading-zeros"),
    pytest.param(b"2\r\n\r\n\r\n1\r\n\n\r\n1\r\n\r\r\n0\r\n\r\n", b"\r\n\n\r", id="cr-lf-in-payload"),
    pytest.param(b'5;name=value\r\nhello\r\n6;a;b="q r"\r\n world\r\n0;last\r\n\r\n', b"hello world",
                 id="extensions"),
    pytest.param(b"5 ;a=1\r\nhello\r\n0\t;b\r\n\r\n", b"hello", id="ext-bws-before-semicolon"),
    pytest.param(b"5;a=\xe9\t\r\nhello\r\n0\r\n\r\n", b"hello", id="ext-obs-text-and-tab"),
    pytest.param(b"5\r\nhello\r\n0\r\nX-T: 1\r\nX-U:  2 \r\n\r\n", b"hello", id="trailers"),
    pytest.param(b"5\r\nhello\r\n0\r\nX-Empty:\r\n\r\n", b"hello", id="trailer-empty-value"),
    pytest.param(b"ffffffffffff\r\n", 413, id="size-over-1MiB"),
    pytest.param(b"zz\r\nhello\r\n0\r\n\r\n", 400, id="size-not-hex"),
    pytest.param(b"0x5\r\nhello\r\n0\r\n\r\n", 400, id="size-0x"),
    pytest.param(b"-1\r\nhello\r\n0\r\n\r\n", 400, id="size-negative"),
    pytest.param(b"+5\r\nhello\r\n0\r\n\r\n", 400, id="size-plus"),
    pytest.param(b"5_0\r\nhello\r\n0\r\n\r\n", 400, id="size-underscore"),
    pytest.param(b"\r\nhello\r\n0\r\n\r\n", 400, id="size-empty"),
    pytest.param(b" 5\r\nhello\r\n0\r\n\r\n", 400, id="size-leading-space"),
    pytest.param(b"5 \r\nhello\r\n0\r\n\r\n", 400, id="size-trailing-space-without-extension"),
    pytest.param(b"5 junk\r\nhello\r\n0\r\n\r\n", 400, id="size-junk"),
    pytest.param(b"1" * 17 + b"\r\n", 400, id="size-17-hex-digits"),
    pytest.param(b"5\nhello\r\n0\r\n\r\n", 400, id="size-line-bare-lf"),
    pytest.param(b"5\rhello\r\n0\r\n\r\n", 400, id="size-line-bare-cr"),
    pytest.param(b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n", 400, id="size-line-over-limit"),
    pytest.param(b"5;a=\x01\r\nhello\r\n0\r\n\r\n", 400, id="ext-control"),
    pytest.param(b"5;a=\x00\r\nhello\r\n0\r\n\r\n", 400, id="ext-nul"),
    pytest.param(b"5;a=\x7f\r\nhello\r\n0\r\n\r\n", 400, id="ext-del"),
    pytest.param(b"5;a\rb\r\nhello\r\n0\r\n\r\n", 400, id="ext-bare-cr"),
    pytest.param(b"5;a\nb\r\nhello\r\n0\r\n\r\n", 400, id="ext-bare-lf"),
    pytest.param(b"5\r\nhelloXX\r\n0\r\n\r\n", 400, id="data-longer-than-size"),
    pytest.param(b"3\r\nhello\r\n0\r\n\r\n", 400, id="data-shorter-than-size"),
    pytest.param(b"5\r\nhello\n0\r\n\r\n", 400, id="data-ends-in-bare-lf"),
    pytest.param(b"5\r\nhello\r\r\n0\r\n\r\n", 400, id="data-ends-in-cr-cr"),
    pytest.param(b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n", 400, id="trailer-obs-fold"),
    pytest.param(b"5\r\nhello\r\n0\r\nno-colon\r\n\r\n", 400, id="trailer-no-colon"),
    pytest.param(b"5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n", 400, id="trailer-nul"),
    pytest.param(b"5\r\nhello\r\n0\r\nX-T: a\x1bb\r\n\r\n", 400, id="trailer-control"),
    pytest.param(b"5\r\nhello\r\n0\r\nX T: 1\r\n\r\n", 400, id="trailer-name-space"),
    pytest.param(b"5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n", 400, id="trailer-space-before-colon"),
    pytest.param(b"5\r\nhello\r\n0\r\n: 1\r\n\r\n", 400, id="trailer-empty-name"),
    pytest.param(b"5\r\nhello\r\n0\r\nX-T: 1\nX-U: 2\r\n\r\n", 400, id="trailer-bare-lf"),
    pytest.param(b"5\r\nhello\r\n0\r\nX-T: 1\rX-U: 2\r\n\r\n", 400, id="trailer-bare-cr"),
    pytest.param(b"5\r\nhello\r\n0\r\nX-T: " + b"a" * (64 * 1024) + b"\r\n\r\n", 431, id="trailer-over-64KiB"),
    pytest.param(b"5\r\nhello\r\n0\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n", 431,
                 id="101-trailers"),
    pytest.param(b"5\r\nhello\r\n0\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n", b"hello",
                 id="100-trailers"),
]

# The request side's limits (RequestParser's defaults) given to the response side's decoder.
REQUEST_LIMITS: dict[str, int] = {
    "max_body_bytes": MiB, "max_size_line_bytes": 4096, "max_trailer_bytes": 64 * 1024, "max_trailer_count": 100,
}
_NEXT_RESPONSE = b"HTTP/1.1 200 OK\r\n"


def decode_response(pieces: Iterable[bytes], **limits: Any) -> bytes | int | None:
    """Payload of a chunked response body (extra must be what followed it), the error status, or None if unfinished."""
    decoder = ChunkedDecoder(**limits)
    out = []
    try:
        for piece in pieces:
            out.append(decoder.feed(piece))
    except ProtocolError as e:
        return e.status
    if not decoder.done:
        return None
    assert decoder.extra == _NEXT_RESPONSE
    return b"".join(out)


def decode_request(pieces: Iterable[bytes], **limits: int) -> bytes | int | None:
    """Payload of a chunked request body (the request after it must parse), the error status, or None if unfinished."""
    events = parse(pieces, **limits)
    if isinstance(events[-1], tuple) and events[-1][0] == "error":
        return int(events[-1][1])
    if END not in events:
        return None
    end = events.index(END)
    assert events[0][0] == "head" and events[0][1]["chunked"]
    assert matches(events[end + 1 :], [H(path="/healthz")]), events[end + 1 :]
    return b"".join(e for e in events[1:end] if isinstance(e, bytes))


def both_ways(body: bytes, direction: str, **limits: int) -> list[bytes | int | None]:
    """The outcome of reading body in one direction, fed whole and then one byte at a time."""
    if direction == "response":
        raw = body + _NEXT_RESPONSE
        return [decode_response([raw], **limits), decode_response(bytewise(raw), **limits)]
    raw = post_chunked(body) + get()
    return [decode_request([raw], **limits), decode_request(bytewise(raw), **limits)]


@pytest.mark.parametrize("direction", ["response", "request"])
@pytest.mark.parametrize(("body", "expected"), CHUNKED_BODIES)
def test_chunked_body_reads_the_same_in_both_directions(body: bytes, expected: bytes | int, direction: str) -> None:
    """A chunked body gives the same payload or error status as a response and as a request, whole or bytewise."""
    limits = REQUEST_LIMITS if direction == "response" else {}
    assert both_ways(body, direction, **limits) == [expected, expected]


# Bodies at the edge of each limit: (body, decoder limits, RequestParser limits, expected).
_ONE_KIB_EXT = b"5;" + b"e" * (4096 - len(b"5;\r\n")) + b"\r\nhello\r\n0\r\n\r\n"  # size line of 4096 with CRLF
CHUNKED_LIMITS: list[Any] = [
    pytest.param(b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", {"max_body_bytes": 10}, {"max_body_bytes": 10},
                 b"helloworld", id="body-at-limit"),
    pytest.param(b"5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n", {"max_body_bytes": 10}, {"max_body_bytes": 10},
                 413, id="body-over-limit"),
    pytest.param(b"b\r\nhello", {"max_body_bytes": 10}, {"max_body_bytes": 10}, 413, id="body-refused-on-size-line"),
    pytest.param(_ONE_KIB_EXT, {"max_size_line_bytes": 4096}, {}, b"hello", id="size-line-at-limit"),
    pytest.param(_ONE_KIB_EXT.replace(b"5;", b"5;e", 1), {"max_size_line_bytes": 4096}, {}, 400,
                 id="size-line-over-limit"),
    pytest.param(b"0\r\nX-T: " + b"a" * 251 + b"\r\n\r\n", {"max_trailer_bytes": 256}, {"max_header_bytes": 256},
                 b"", id="trailer-block-at-limit"),
    pytest.param(b"0\r\nX-T: " + b"a" * 252 + b"\r\n\r\n", {"max_trailer_bytes": 256}, {"max_header_bytes": 256},
                 431, id="trailer-block-over-limit"),
    pytest.param(b"0\r\nA: 1\r\nB: 2\r\n\r\n", {"max_trailer_count": 2}, {"max_header_count": 2}, b"",
                 id="trailer-count-at-limit"),
    pytest.param(b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", {"max_trailer_count": 2}, {"max_header_count": 2}, 431,
                 id="trailer-count-over-limit"),
]


@pytest.mark.parametrize("direction", ["response", "request"])
@pytest.mark.parametrize(("body", "decoder_limits", "parser_limits", "expected"), CHUNKED_LIMITS)
def test_chunked_limits_hold_in_both_directions(
    body: bytes, decoder_limits: dict[str, int], parser_limits: dict[str, int], expected: bytes | int, direction: str
) -> None:
    """Each chunked-body limit accepts a body exactly at it and refuses one byte more with its status, both ways."""
    limits = decoder_limits if direction == "response" else parser_limits
    assert both_ways(body, direction, **limits) == [expected, expected]


def test_response_decoder_defaults_suit_an_endless_stream() -> None:
    """By default a response body has no total limit and its size line is limited to 1 KiB with its CRLF."""
    big = b"100000\r\n" + b"x" * 0x100000 + b"\r\n"
    assert decode_response([big * 3 + b"0\r\n\r\n" + _NEXT_RESPONSE]) == b"x" * 0x300000
    line = b"5;" + b"e" * (1024 - len(b"5;\r\n")) + b"\r\n"
    assert decode_response([line + b"hello\r\n0\r\n\r\n" + _NEXT_RESPONSE]) == b"hello"
    assert decode_response([line[:2] + b"e" + line[2:] + b"hello\r\n0\r\n\r\n"]) == 400


def test_request_head_keeps_no_trailers() -> None:
    """Trailers are checked and dropped (RFC 9112 §7.1.2): the head has no field for them."""
    assert "trailers" not in {f.name for f in dataclasses.fields(RequestHead)}
    assert matches(parse([CHUNKED_EXT_TRAILERS + get()]), [H(chunked=True), b"hello world", END, H(path="/healthz")])


@pytest.mark.parametrize("split", ["whole", "bytewise"])
def test_decoder_reports_chunk_boundaries(split: str) -> None:
    """With keep_chunks, chunks holds each chunk's payload however the bytes arrived."""
    wire = b"5;x=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-T: 1\r\n\r\n"
    decoder = ChunkedDecoder(keep_chunks=True)
    payload = b"".join(decoder.feed(p) for p in ([wire] if split == "whole" else bytewise(wire)))
    assert payload == b"hello world" and decoder.done
    assert decoder.chunks == [b"hello", b" ", b"world"]
    assert ChunkedDecoder().chunks is None


def test_decoder_refuses_a_wrong_size_rather_than_splitting_elsewhere() -> None:
    """A size line that does not match its payload raises; it never yields differently cut chunks."""
    for wire in (b"4\r\nhello\r\n0\r\n\r\n", b"6\r\nhello\r\n0\r\n\r\n"):
        decoder = ChunkedDecoder(keep_chunks=True)
        with pytest.raises(ProtocolError) as info:
            decoder.feed(wire)
        assert info.value.status == 400 and decoder.chunks == []


def test_safe_feed_bytes_never_reads_past_the_body() -> None:
    """Feeding exactly safe_feed_bytes at a time ends on the body's last byte, leaving the next message unread."""
    wire = b"1a;e\r\n" + b"z" * 26 + b"\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
    stream = wire + _NEXT_RESPONSE
    decoder, pos, payload = ChunkedDecoder(), 0, b""
    while not decoder.done:
        want = decoder.safe_feed_bytes
        assert want > 0
        payload += decoder.feed(stream[pos : pos + want])
        pos += want
    assert pos == len(wire) and decoder.extra == b"" and decoder.safe_feed_bytes == 0
    assert payload == b"z" * 26 + b"abc"


def test_decoder_stays_broken_after_error() -> None:
    """After a framing error the decoder refuses every later feed, even of a valid body."""
    decoder = ChunkedDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(b"5\r\nhelloXX")
    for _ in range(2):
        with pytest.raises(ProtocolError):
            decoder.feed(b"0\r\n\r\n")


def test_bytes_after_the_body_are_kept() -> None:
    """Whatever follows the last chunk is extra for feed() and stays in the parser's buffer for the next request."""
    decoder = ChunkedDecoder()
    assert decoder.feed(b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1 2") == b"abc" and decoder.extra == b"HTTP/1.1 2"
    assert decoder.feed(b"00 OK") == b"" and decoder.extra == b"HTTP/1.1 200 OK"
    parser = RequestParser()
    parser.feed(post_chunked(b"3\r\nabc\r\n0\r\n\r\n") + b"GET /n")
    events = [parser.next_event() for _ in range(4)]
    assert events[1:] == [b"abc", END_OF_MESSAGE, NEED_DATA] and parser.buffered == len(b"GET /n")


def test_chunked_body_dripped_a_byte_at_a_time_is_linear() -> None:
    """A body with a long size line and a 60 KB trailer block fed a byte per feed scans a bounded amount per feed."""

    class CountingBuffer(bytearray):
        """A decoder buffer that counts the bytes its find() calls examine."""

        scanned = 0

        def find(self, sub: Any, start: Any = 0, end: Any = None) -> int:
            stop = len(self) if end is None else min(end, len(self))
            found = super().find(sub, start, stop)
            self.scanned += max(0, (found + len(sub) if found >= 0 else stop) - start)
            return found

    body = (b"5;" + b"e" * 3000 + b"\r\nhello\r\n0\r\n"
            + b"".join(b"X-%d: " % i + b"v" * 600 + b"\r\n" for i in range(99)) + b"\r\n")
    assert 60_000 < len(body) < 64 * 1024
    decoder = ChunkedDecoder(max_size_line_bytes=4096)
    buf = decoder._buf = CountingBuffer()  # feed() scans its buffer with find()
    per_feed = []
    for piece in bytewise(body + _NEXT_RESPONSE):
        before = buf.scanned
        decoder.feed(piece)
        per_feed.append(buf.scanned - before)
    assert decoder.done and decoder.extra == _NEXT_RESPONSE and buf.scanned >= len(body) - 1
    assert max(per_feed) <= 64, max(per_feed)  # rescanning from the start would cost thousands


async def test_test_client_refuses_a_chunked_reply_with_a_wrong_size() -> None:
    """The socket tests' client reads chunked replies with the strict decoder: a wrong size line fails the read."""
    good, bad = asyncio.StreamReader(), asyncio.StreamReader()
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    good.feed_data(head + b"5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n" + head)
    bad.feed_data(head + b"4\r\nhello\r\n0\r\n\r\n")
    reply = await read_reply(good)
    assert reply.chunks == [b"hello", b"!"] and reply.body == b"hello!"
    assert (await read_head(good)).status == 200  # the next reply was left in the reader
    with pytest.raises(ProtocolError):
        await read_reply(bad)
