"""Request tables shared by the parser tests and the socket tests.

HOSTILE maps malformed or smuggling-shaped requests to the status the server must
answer with. Requests whose fault is in the body go to POST /echo, which reads it,
so over a real socket the fault is met and answered too.

HOSTILE_ROUTES and HARMLESS_ROUTES are well-framed requests whose *values* once
broke the demo app's routes (sse_server.demo) with a 500: deep JSON, lone
surrogates, 5,000-digit and non-ASCII integers. Each row is the request, the
status it must get and a fragment of the body saying why; HARMLESS_ROUTES are
the ones where a clean 2xx is the right answer.
"""

from __future__ import annotations

import random

import pytest

KiB = 1024
MiB = 1024 * KiB


def req(line: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    """A request from its request line, header lines and body, joined with CRLF."""
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def post_chunked(body: bytes, *headers: bytes) -> bytes:
    """A chunked POST to /echo with a hand-written (possibly broken) chunked body."""
    return req(b"POST /echo HTTP/1.1", b"Host: t", b"Transfer-Encoding: chunked", *headers, body=body)


def post_cl(length: bytes, *headers: bytes, body: bytes = b"hello") -> bytes:
    """A POST to /echo with the given raw Content-Length value."""
    return req(b"POST /echo HTTP/1.1", b"Host: t", b"Content-Length: " + length, *headers, body=body)


def get(target: bytes = b"/healthz", *headers: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    """A GET with a Host header unless told otherwise."""
    return req(b"GET " + target + b" " + version, *(headers or (b"Host: t",)))


_MANY_HEADERS = [b"X-H%d: v" % i for i in range(101)]
_BIG_HEADERS = [b"X-Big%d: " % i + b"a" * 1000 for i in range(70)]  # 70 KiB in 70 headers

HOSTILE: list = [
    # -- message framing: anything two parsers could disagree about -------------------
    pytest.param(post_cl(b"5", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400, id="cl-and-te"),
    pytest.param(req(b"POST /echo HTTP/1.1", b"Host: t", b"Transfer-Encoding: chunked",
                     b"Content-Length: 5", body=b"0\r\n\r\n"), 400, id="te-and-cl"),
    pytest.param(post_cl(b"5, 6"), 400, id="cl-list-differs"),
    pytest.param(post_cl(b"+5"), 400, id="cl-plus"),
    pytest.param(post_cl(b"-1"), 400, id="cl-negative"),
    pytest.param(post_cl(b" 0x5"), 400, id="cl-hex"),
    pytest.param(post_cl(b"5.0"), 400, id="cl-decimal-point"),
    pytest.param(post_cl(b"1_0"), 400, id="cl-underscore"),
    pytest.param(post_cl(b""), 400, id="cl-empty"),
    pytest.param(post_cl(b"\xb2"), 400, id="cl-superscript-digit"),
    pytest.param(post_cl(b"5 5"), 400, id="cl-inner-space"),
    pytest.param(req(b"POST /echo HTTP/1.1", b"Host: t", b"Content-Length: 5", b"Content-Length: 6",
                     body=b"hello!"), 400, id="two-cl-differ"),
    pytest.param(post_cl(b"99999999999999999999"), 413, id="cl-huge"),
    pytest.param(post_cl(b"9" * 5000), 413, id="cl-5000-digits"),
    pytest.param(post_cl(b"%d" % (MiB + 1)), 413, id="cl-over-limit"),
    pytest.param(req(b"POST /echo HTTP/1.1", b"Host: t", b"Transfer-Encoding: gzip", body=b"x"), 400,
                 id="te-gzip"),
    pytest.param(req(b"POST /echo HTTP/1.1", b"Host: t", b"Transfer-Encoding: chunked, gzip"), 400,
                 id="te-chunked-then-gzip"),
    pytest.param(req(b"POST /echo HTTP/1.1", b"Host: t", b"Transfer-Encoding: chunked, chunked",
                     body=b"0\r\n\r\n"), 400, id="te-chunked-twice"),
    pytest.param(req(b"POST /echo HTTP/1.1", b"Host: t", b"Transfer-Encoding: chunked",
                     b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400, id="te-header-twice"),
    pytest.param(req(b"POST /echo HTTP/1.1", b"Host: t", b"Transfer-Encoding: gzip, chunked",
                     body=b"0\r\n\r\n"), 501, id="te-gzip-chunked"),
    pytest.param(req(b"POST /echo HTTP/1.1", b"Host: t", b"Transfer-Encoding: identity"), 400, id="te-identity"),
    pytest.param(req(b"POST /echo HTTP/1.1", b"Host: t", b"Transfer-Encoding: xchunked"), 400, id="te-xchunked"),
    pytest.param(req(b"POST /echo HTTP/1.1", b"Host: t", b"Transfer-Encoding:"), 400, id="te-empty"),
    pytest.param(req(b"POST /echo HTTP/1.0", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400,
                 id="te-in-http10"),
    pytest.param(req(b"POST /echo HTTP/1.1", b"Host: t", b"Transfer-Encoding : chunked",
                     body=b"0\r\n\r\n"), 400, id="te-space-before-colon"),
    # -- chunked bodies -----------------------------------------------------------------
    pytest.param(post_chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-0x"),
    pytest.param(post_chunked(b"-1\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-negative"),
    pytest.param(post_chunked(b"+5\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-plus"),
    pytest.param(post_chunked(b"5 junk\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-junk"),
    pytest.param(post_chunked(b"\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-empty"),
    pytest.param(post_chunked(b"fffffffffffffffffff\r\n"), 400, id="chunk-size-19-hex-digits"),
    pytest.param(post_chunked(b"ffffffffffffffff\r\n"), 413, id="chunk-size-2**64"),
    pytest.param(post_chunked(b"100001\r\n"), 413, id="chunk-over-limit"),
    pytest.param(post_chunked(b"80000\r\n" + b"a" * 0x80000 + b"\r\n80001\r\n"), 413, id="chunks-sum-over-limit"),
    pytest.param(post_chunked(b"5\r\nhelloXX\r\n0\r\n\r\n"), 400, id="chunk-without-crlf"),
    pytest.param(post_chunked(b"5\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-bare-lf"),
    pytest.param(post_chunked(b"5;a=\x01\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-ext-control"),
    pytest.param(post_chunked(b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n"), 400, id="trailer-obs-fold"),
    pytest.param(post_chunked(b"5\r\nhello\r\n0\r\nno-colon\r\n\r\n"), 400, id="trailer-no-colon"),
    pytest.param(post_chunked(b"5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n"), 400, id="trailer-nul"),
    # -- line structure and characters --------------------------------------------------
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", b"X-A: a", b" folded"), 400, id="obs-fold-space"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", b"X-A: a", b"\tfolded"), 400, id="obs-fold-tab"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", b"X-A: a\rb"), 400, id="bare-cr-in-value"),
    pytest.param(b"GET /healthz HTTP/1.1\rHost: t\r\n\r\n", 400, id="bare-cr-line-end"),
    pytest.param(b"GET /healthz HTTP/1.1\nHost: t\n\n", 400, id="bare-lf-line-ends"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n", 400, id="bare-lf-in-head"),
    pytest.param(get(b"/a\x00b"), 400, id="nul-in-target"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", b"X-\x00A: b"), 400, id="nul-in-name"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", b"X-A: a\x00b"), 400, id="nul-in-value"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", b"X-A: a\x01b"), 400, id="ctl-in-value"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", b"X-A: a\x7fb"), 400, id="del-in-value"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", b"X-A: a\x1b[31m"), 400, id="esc-in-value"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", b"X\x01A: b"), 400, id="ctl-in-name"),
    pytest.param(get(b"/a\x1bb"), 400, id="ctl-in-target"),
    pytest.param(get(b"/a\x7fb"), 400, id="del-in-target"),
    pytest.param(b"\r\n" * 9 + get(), 400, id="too-many-leading-blank-lines"),
    # -- Host ---------------------------------------------------------------------------
    pytest.param(b"GET /healthz HTTP/1.1\r\n\r\n", 400, id="host-missing-1.1"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: a", b"Host: b"), 400, id="host-twice"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: a", b"Host: a"), 400, id="host-twice-same"),
    pytest.param(req(b"GET /healthz HTTP/1.0", b"Host: a", b"Host: b"), 400, id="host-twice-1.0"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: a b"), 400, id="host-with-space"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: caf\xc3\xa9"), 400, id="host-non-ascii"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host : t"), 400, id="host-space-before-colon"),
    # -- request line -------------------------------------------------------------------
    pytest.param(get(b"/").replace(b"GET", b"G(T", 1), 400, id="method-paren"),
    pytest.param(get(b"/").replace(b"GET", b"GE\"T", 1), 400, id="method-quote"),
    pytest.param(get(b"/").replace(b"GET", b"G\xc9T", 1), 400, id="method-non-ascii"),
    pytest.param(get(b"/").replace(b"GET", b"get", 1), 501, id="method-lowercase"),
    pytest.param(get(b"/").replace(b"GET", b"BREW", 1), 501, id="method-unknown"),
    pytest.param(req(b"CONNECT t:443 HTTP/1.1", b"Host: t:443"), 501, id="method-connect"),
    pytest.param(get(version=b"HTTP/2.0"), 505, id="version-2.0"),
    pytest.param(get(version=b"HTTP/3.0"), 505, id="version-3.0"),
    pytest.param(get(version=b"HTTP/0.9"), 505, id="version-0.9"),
    pytest.param(get(version=b"HTTP/1"), 400, id="version-no-minor"),
    pytest.param(get(version=b"HTTP/1.1.1"), 400, id="version-three-parts"),
    pytest.param(get(version=b"HTTP/11.1"), 400, id="version-two-digit-major"),
    pytest.param(get(version=b"http/1.1"), 400, id="version-lowercase"),
    pytest.param(get(version=b"HTTP/1.x"), 400, id="version-letter"),
    pytest.param(get(version=b"HTTP/1.1 "), 400, id="version-trailing-space"),
    pytest.param(b"GET  /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 400, id="request-line-double-space"),
    pytest.param(b"GET\t/healthz\tHTTP/1.1\r\nHost: t\r\n\r\n", 400, id="request-line-tabs"),
    pytest.param(b" GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 400, id="request-line-leading-space"),
    pytest.param(b"GET\r\nHost: t\r\n\r\n", 400, id="request-line-method-only"),
    pytest.param(b"GET /healthz\r\nHost: t\r\n\r\n", 400, id="request-line-no-version"),
    pytest.param(get(b"/a b"), 400, id="target-with-space"),
    pytest.param(get(b"/caf\xc3\xa9"), 400, id="target-non-ascii"),
    pytest.param(get(b"/healthz#frag"), 400, id="target-fragment"),
    pytest.param(get(b"healthz"), 400, id="target-no-slash"),
    pytest.param(get(b"*"), 400, id="target-asterisk-not-options"),
    pytest.param(get(b"ftp://t/healthz"), 400, id="target-absolute-ftp"),
    pytest.param(get(b"http://[::1/healthz"), 400, id="target-absolute-bad-ipv6"),
    pytest.param(get(b"http:///healthz"), 400, id="target-absolute-no-authority"),
    pytest.param(get(b"http://t/healthz#frag"), 400, id="target-absolute-fragment"),
    # -- header lines -------------------------------------------------------------------
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", b"no-colon-here"), 400, id="header-without-colon"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", b": empty-name"), 400, id="header-empty-name"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", b"X A: b"), 400, id="header-name-space"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", b"X-A\t: b"), 400, id="header-name-tab-before-colon"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", b"X(A): b"), 400, id="header-name-paren"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", b"X-\xe9: b"), 400, id="header-name-non-ascii"),
    pytest.param(req(b"POST /echo HTTP/1.1", b"Host: t", b"Content-Length: 5", b"Expect: 200-ok",
                     body=b"hello"), 417, id="expect-unknown"),
    # -- limits -------------------------------------------------------------------------
    pytest.param(get(b"/" + b"a" * (8 * KiB)), 414, id="request-line-over-8KiB"),
    pytest.param(b"GET /" + b"a" * (9 * KiB), 414, id="request-line-never-ends"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", *_MANY_HEADERS), 431, id="101-headers"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", b"X-A: " + b"a" * (64 * KiB)), 431,
                 id="one-header-over-64KiB"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", *_BIG_HEADERS), 431, id="header-block-over-64KiB"),
]

# Valid neighbours of the limits above: the same shapes one step inside.
AT_LIMITS: list = [
    pytest.param(get(b"/" + b"a" * (8 * KiB - len(b"GET / HTTP/1.1"))), id="request-line-exactly-8KiB"),
    pytest.param(req(b"GET /healthz HTTP/1.1", b"Host: t", *_MANY_HEADERS[:99]), id="100-headers"),
]

CHUNKED_EXT_TRAILERS = req(
    b"POST /upload HTTP/1.1", b"Host: t", b"Transfer-Encoding: chunked",
    body=b'5;name=value\r\nhello\r\n6;a;b="q r"\r\n world\r\n0;last\r\nX-Trailer: t1\r\nX-Other:  t2 \r\n\r\n',
)

# Valid requests that the fuzz tests damage at random.
FUZZ_SEEDS = [
    get(b"/a?b=c"),
    req(b"POST /echo HTTP/1.1", b"Host: t", b"Content-Length: 5", body=b"hello"),
    CHUNKED_EXT_TRAILERS,
    req(b"GET http://example.com/x HTTP/1.0", b"Connection: keep-alive", b"Expect: 100-continue"),
]
_FUZZ_BYTES = b"\x00\t\n\r \x7f\x80\xff:;,/?#%0aAzZ-" + b'"(){}[]<>@=\\'


def mutate(rng: random.Random, raw: bytes) -> bytes:
    """raw with one to four random deletions, insertions, replacements or duplications."""
    data = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(len(data) + 1)
        op = rng.randrange(4)
        if op == 0 and data:
            del data[pos : pos + rng.randint(1, 3)]
        elif op == 1:
            data[pos:pos] = bytes(rng.choice(_FUZZ_BYTES) for _ in range(rng.randint(1, 3)))
        elif op == 2 and pos < len(data):
            data[pos] = rng.choice(_FUZZ_BYTES)
        else:
            data[pos:pos] = data[pos : pos + rng.randint(1, 8)]  # duplicate a slice
    return bytes(data)


# -- hostile values for the demo app's routes -------------------------------------------

MODEL = b"sse-mock-1"  # sse_server.ai.mockmodel.MOCK_MODEL
_MESSAGES = b'"messages":[{"role":"user","content":"hi"}]'
_DEEP = 200_000  # far past any recursion limit; 400 KB, under the chat body limit
_DIGITS = b"9" * 5_000  # past int()'s 4,300-digit limit


def post_json(target: bytes, body: bytes, *headers: bytes) -> bytes:
    """A POST of ``body`` as JSON, with its Content-Length unless a header gives one."""
    length = () if any(h.lower().startswith(b"content-length:") for h in headers) else (
        b"Content-Length: %d" % len(body),)
    return req(b"POST " + target + b" HTTP/1.1", b"Host: t", b"Content-Type: application/json",
               *length, *headers, body=body)


def chat_body(fields: bytes = b"") -> bytes:
    """A chat body naming the mock model with one message, plus ``fields`` (``b'"n":1'``)."""
    return b'{"model":"' + MODEL + b'",' + _MESSAGES + (b"," + fields if fields else b"") + b"}"


def chat(fields: bytes, target: bytes = b"/v1/chat/completions", *headers: bytes) -> bytes:
    """A POST of ``chat_body(fields)``."""
    return post_json(target, chat_body(fields), *headers)


_DEEP_ARRAY = b"[" * _DEEP + b"]" * _DEEP
_ZEROS_CL = b"Content-Length: " + b"0" * 5_000

HOSTILE_ROUTES: list = [
    # -- JSON nested past the recursion limit: RecursionError -----------------------
    pytest.param(post_json(b"/v1/chat/completions", _DEEP_ARRAY), 400, b"nested too deeply", id="v1-deep-array"),
    pytest.param(post_json(b"/v1/chat/completions", b'{"":' * (_DEEP // 2) + b"1" + b"}" * (_DEEP // 2)), 400,
                 b"nested too deeply", id="v1-deep-object"),
    pytest.param(chat(b'"tools":' + _DEEP_ARRAY), 400, b"nested too deeply", id="v1-deep-field"),
    pytest.param(post_json(b"/chat/streams", _DEEP_ARRAY), 400, b"nested too deeply", id="streams-deep-array"),
    # -- lone surrogates echoed in an error ------------------------------------------
    pytest.param(post_json(b"/v1/chat/completions", b'{"model":"\\ud800",' + _MESSAGES + b"}"), 404,
                 b"The model '?' does not exist", id="v1-model-lone-surrogate"),
    pytest.param(post_json(b"/chat/streams", b'{"model":"\\udfff",' + _MESSAGES + b"}"), 404,
                 b"The model '?' does not exist", id="streams-model-lone-surrogate"),
    pytest.param(post_json(b"/v1/chat/completions", b'{"model":"' + MODEL
                           + b'","messages":[{"role":"\\ud800x","content":"hi"}]}'), 400,
                 b"Invalid value: '?x'", id="v1-role-lone-surrogate"),
    pytest.param(get(b"/v1/models/%ED%A0%80"), 404, "The model '\ufffd".encode(), id="model-path-encoded-surrogate"),
    # -- numbers JSON can spell but Python will not hold -----------------------------
    pytest.param(chat(b'"max_tokens":' + _DIGITS), 400, b"a number has too many digits",
                 id="v1-max-tokens-5000-digits"),
    pytest.param(chat(b'"n":' + _DIGITS), 400, b"a number has too many digits", id="v1-n-5000-digits"),
    pytest.param(chat(b'"max_completion_tokens":' + b"9" * 4_000), 400, b"out of range; expected 1 to",
                 id="v1-max-completion-tokens-4000-digits"),
    pytest.param(chat(b'"max_tokens":"\xc2\xb2"'), 400, b"expected an integer", id="v1-max-tokens-superscript"),
    pytest.param(chat(b'"temperature":1e999'), 400, b"a number is too large", id="v1-temperature-1e999"),
    pytest.param(chat(b'"max_tokens":-1e999'), 400, b"a number is too large", id="v1-max-tokens-minus-1e999"),
    pytest.param(chat(b'"top_p":NaN'), 400, b"NaN is not a JSON number", id="v1-nan"),
    pytest.param(chat(b'"top_p":-Infinity'), 400, b"-Infinity is not a JSON number", id="v1-minus-infinity"),
    # -- Content-Length with thousands of leading zeros (the ai body reader re-checks it)
    pytest.param(post_json(b"/v1/chat/completions", b"[]", _ZEROS_CL + b"2"), 400, b"must be a JSON object",
                 id="v1-cl-5000-leading-zeros"),
    pytest.param(req(b"POST /v1/chat/completions HTTP/1.1", b"Host: t", _ZEROS_CL + b"600000"), 413,
                 b"Request body too large", id="v1-cl-leading-zeros-over-limit"),
    pytest.param(post_json(b"/chat/streams", b"[]", _ZEROS_CL + b"2"), 400, b"must be a JSON object",
                 id="streams-cl-5000-leading-zeros"),
    # -- integer query parameters: non-ASCII digits, 5,000 digits --------------------
    pytest.param(get(b"/chat/stream?prompt=hi&max_tokens=%C2%B2"), 400, b"expected an integer",
                 id="chat-stream-max-tokens-superscript"),
    pytest.param(get(b"/chat/stream?prompt=hi&max_tokens=%D9%A3"), 400, b"expected an integer",
                 id="chat-stream-max-tokens-arabic-indic"),
    pytest.param(get(b"/chat/stream?prompt=hi&max_tokens=" + _DIGITS), 400, b"out of range; expected 1 to",
                 id="chat-stream-max-tokens-5000-digits"),
    pytest.param(get(b"/firehose?n=%C2%B2"), 400, b"n must be an integer", id="firehose-n-superscript"),
    pytest.param(get(b"/firehose?size=%D9%A3"), 400, b"size must be an integer", id="firehose-size-arabic-indic"),
    pytest.param(get(b"/firehose?n=" + _DIGITS), 400, b"n must be between 0 and", id="firehose-n-5000-digits"),
    pytest.param(get(b"/firehose?n=1e3"), 400, b"n must be an integer", id="firehose-n-exponent"),
    pytest.param(get(b"/suspense?delays=%C2%B2"), 400, b"delays: 1 to", id="suspense-superscript"),
    pytest.param(get(b"/suspense?delays=100," + _DIGITS), 400, b"delays: 1 to", id="suspense-5000-digits"),
    pytest.param(get(b"/suspense?delays=-5"), 400, b"each 0..60000 ms", id="suspense-negative"),
    # -- channel names ---------------------------------------------------------------
    pytest.param(get(b"/channels/a%00b/events"), 400, b"no control characters", id="channel-name-nul"),
    pytest.param(get(b"/events?channel=" + b"c" * 201), 400, b"1 to 200 characters", id="channel-name-long"),
]

_HUGE_ID = b"Last-Event-ID: lq3k9a1b2-" + b"1" * 5_000

HARMLESS_ROUTES: list = [
    # -- a Last-Event-ID with a 5,000-digit sequence: an id never issued, so a reset --
    pytest.param(get(b"/channels/x/events", b"Host: t", _HUGE_ID), 200, b"event: reset", id="channel-lei-5000-digits"),
    pytest.param(get(b"/channels/x/events?last_event_id=e-" + b"1" * 5_000), 200, b"event: reset",
                 id="channel-lei-query-5000-digits"),
    pytest.param(get(b"/events?channel=x", b"Host: t", _HUGE_ID), 200, b"event: reset", id="events-lei-5000-digits"),
    pytest.param(get(b"/channels/x/events", b"Host: t", b"Last-Event-ID: \xff\xfe-1"), 200, b"event: reset",
                 id="channel-lei-latin1"),
    # -- percent-encoded surrogates decode to U+FFFD, never to a lone surrogate --------
    pytest.param(req(b"POST /channels/x/events?event=%ED%A0%80 HTTP/1.1", b"Host: t", b"Content-Length: 2",
                     body=b"hi"), 202, b'"subscribers"', id="publish-event-encoded-surrogate"),
    pytest.param(req(b"POST /channels/%ED%A0%80/events HTTP/1.1", b"Host: t", b"Content-Length: 2", body=b"hi"),
                 202, b'"subscribers"', id="publish-channel-encoded-surrogate"),
    pytest.param(get(b"/events?channel=%ED%A0%80"), 200, b"retry:", id="events-channel-encoded-surrogate"),
    # -- lone surrogates in text the mock reads but need not refuse ---------------------
    pytest.param(post_json(b"/v1/chat/completions", b'{"model":"' + MODEL
                           + b'","messages":[{"role":"user","content":"caf\\ud800"}]}'), 200,
                 b'"chat.completion"', id="v1-content-lone-surrogate"),
    pytest.param(chat(b'"stop":["\\ud800"],"user":"\\udc00"'), 200, b'"chat.completion"',
                 id="v1-stop-lone-surrogate"),
    pytest.param(chat(b'"\\ud800":1'), 200, b'"chat.completion"', id="v1-key-lone-surrogate"),
    pytest.param(chat(b'"stream":true,"metadata":{"k":"\\ud800"}'), 200, b"data: [DONE]",
                 id="v1-stream-lone-surrogate"),
    # -- leading zeros are still the number they spell --------------------------------
    pytest.param(chat(b"", b"/v1/chat/completions", _ZEROS_CL + b"%d" % len(chat_body())), 200,
                 b'"chat.completion"', id="v1-cl-leading-zeros-exact"),
    pytest.param(get(b"/chat/stream?prompt=hi&max_tokens=" + b"0" * 5_000 + b"2"), 200, b"event: done",
                 id="chat-stream-max-tokens-leading-zeros"),
    pytest.param(get(b"/firehose?n=" + b"0" * 5_000 + b"1"), 200, b"id: 1\n", id="firehose-n-leading-zeros"),
]
