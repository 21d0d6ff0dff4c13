"""The pure HTTP/1.1 parser: tables of raw bytes fed whole, a byte at a time and split
at random points must all give the same events, or the same error status."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from sse_server.http11 import (
    END_OF_MESSAGE,
    ChunkedDecoder,
    NEED_DATA,
    ProtocolError,
    RequestHead,
    RequestParser,
    encode_chunk,
    encode_response_head,
    http_date,
)

from .http_cases import AT_LIMITS, CHUNKED_EXT_TRAILERS, FUZZ_SEEDS, HOSTILE, MiB, get, mutate, req

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
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])]


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
    for a, e in zip(actual, expected):
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


def test_hostile_table_is_large() -> None:
    """The hostile table holds at least 60 distinct requests."""
    assert len(HOSTILE) >= 60
    assert len({p.values[0] for p in HOSTILE}) == len(HOSTILE)


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


def test_head_dripped_a_byte_at_a_time_is_linear() -> None:
    """Feeding a 64 KiB head one byte per feed stays cheap: each feed scans only new bytes."""
    raw = req(b"GET / HTTP/1.1", b"Host: t", *[b"X-%d: " % i + b"v" * 600 for i in range(99)])
    assert 60_000 < len(raw) < 64 * 1024
    started = time.perf_counter()
    result = parse(bytewise(raw))
    assert result[0][0] == "head"
    assert time.perf_counter() - started < 3.0


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
