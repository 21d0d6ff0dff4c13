"""Hostile strings in every context: they come back as the same data, never as markup."""

from __future__ import annotations

import json
import random

import pytest

from html_stream import BoundaryFailure, Document, Markup, Suspense, h, render, script_json

from .domsim import El, apply_swaps, final_tree, parse, start_tags
from .gates import Gate

PIECES = [
    "</script>", "<script>", "<!--", "-->", "</template>", "<template>", "</style>", "</title>",
    "</textarea>", "`", "${", "}", "\u2028", "\u2029", '"', "'", "<", ">", "&", "&amp;", "&lt;",
    "\\", "/", " ", "a", "é", "]]>", "<!--1-->", "</template><!--1-->", " data-hs=1", "<img src=x onerror=alert(1)>",
    "\n", "\t", "=", "<p>", "</p>", "<![CDATA[", "😀",
]


def hostile(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 10)))


def fuzz_page(s: list[str], gates: list[Gate]) -> Document:
    def error(failure: BoundaryFailure) -> object:
        return h("p", {"id": "error", "title": s[9]}, str(failure.exception))  # the page's own choice

    return Document(
        title=s[0],
        head=h("script", {"type": "application/json", "id": "data"}, script_json({"k": s[1], "l": [s[2]]})),
        body=[
            h("div", {"id": "text", "title": s[3], "data-x": s[4]}, s[5]),
            h("textarea", {"id": "area"}, s[6]),
            Suspense(gates[0].content(lambda: h("p", {"id": "content", "lang": s[7]}, s[8])),
                     h("p", {"id": "fallback"}, s[10])),
            Suspense(gates[1].fail(RuntimeError(s[11])), h("span", s[12]), error=error),
            h("ul", Suspense(gates[2].content(lambda: h("li", {"id": "item"}, s[13])), h("li", {"id": "lf"}, s[14]))),
            h("script", Markup("window.D=") + script_json(s[15])),
        ],
    )


@pytest.mark.parametrize("seed", range(40))
async def test_hostile_strings_stay_in_their_context(seed: int) -> None:
    """Text, attributes, JSON in scripts, fallbacks, errors and the nonce survive as data."""
    rng = random.Random(seed)
    s = [hostile(rng) for _ in range(16)]
    nonce = hostile(rng) or '"'
    gates = [Gate() for _ in range(3)]
    chunks = render(fuzz_page(s, gates), nonce=nonce)
    shell = await anext(chunks)
    for g in gates:
        g.go.set()
    whole = shell + b"".join([c async for c in chunks])

    # before the swaps: the fallbacks as data
    before = parse(shell + b"</body></html>")
    assert before.by_id("fallback").text() == s[10]
    assert before.by_id("lf").text() == s[14]

    doc = parse(whole)
    assert len(apply_swaps(doc)) == 3
    assert doc.find_all("title")[0].text() == s[0]
    data = doc.by_id("data")
    assert json.loads(data.text()) == {"k": s[1], "l": [s[2]]}
    for script in doc.find_all("script"):
        raw = script.text()
        assert "</script" not in raw.lower() and "<!--" not in raw
    text = doc.by_id("text")
    assert (text.attrs["title"], text.attrs["data-x"], text.text()) == (s[3], s[4], s[5])
    assert doc.by_id("area").text() == s[6]
    content = doc.by_id("content")
    assert (content.attrs["lang"], content.text()) == (s[7], s[8])
    error = doc.by_id("error")
    assert (error.attrs["title"], error.text()) == (s[9], s[11])
    assert doc.by_id("item").text() == s[13]
    assert json.loads(doc.find_all("script")[-1].text().removeprefix("window.D=")) == s[15]

    # nothing injected: the same tags as with harmless strings, and every script/style has the nonce
    tags_seen = [t for t, _ in start_tags(whole)]
    gates2 = [Gate() for _ in range(3)]
    for g in gates2:
        g.go.set()
    chunks2 = render(fuzz_page(["x"] * 16, gates2), nonce="n")
    safe = b"".join([c async for c in chunks2])
    assert tags_seen == [t for t, _ in start_tags(safe)]
    for tag, attrs in start_tags(whole):
        if tag in ("script", "style"):
            assert attrs.get("nonce") == nonce


@pytest.mark.parametrize("seed", range(20))
async def test_default_error_never_leaks(seed: int) -> None:
    """The built-in error fallback shows a digest only, never the exception's text."""
    rng = random.Random(seed)
    secret = "SECRET" + hostile(rng)
    gate = Gate()
    gate.go.set()
    out = b"".join([c async for c in render(Document(title="t", body=Suspense(gate.fail(ValueError(secret)))))])
    assert b"SECRET" not in out


@pytest.mark.parametrize("seed", range(20))
async def test_hostile_strings_in_final_dom(seed: int) -> None:
    """After the swaps the hostile text is still one text node of its element."""
    rng = random.Random(1000 + seed)
    value = hostile(rng)
    gate = Gate()
    gate.go.set()
    out = b"".join([c async for c in render(Document(title="t", body=h("div", {"id": "d"}, Suspense(
        gate.content(lambda: [value, h("b", value)]), h("i", value)))))])
    div = final_tree(out).by_id("d")
    kids = div.children
    assert len(kids) == (2 if value else 1)
    assert isinstance(kids[-1], El) and kids[-1].text() == value


@pytest.mark.parametrize("value", ["\n", "\nx", "\n\nx", "x\n"])
async def test_textarea_and_pre_keep_leading_newlines(value: str) -> None:
    """A value starting with LF keeps it, although the parser drops one LF after the tag."""
    out = b"".join([c async for c in render([h("textarea", {"id": "t"}, value), h("pre", {"id": "p"}, value)])])
    doc = parse(out)
    assert doc.by_id("t").text() == value and doc.by_id("p").text() == value
