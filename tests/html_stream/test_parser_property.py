"""Random trees with hostile str values, parsed by a real HTML5 parser (html5lib) in
every strategy: no element, attribute, script or URL in the DOM came from a str."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import html5lib
import pytest

from html_stream import (
    RUNTIME_JS,
    STRATEGIES,
    Document,
    Markup,
    MarkupError,
    Suspense,
    h,
    markup,
    render_to_string,
    script_json,
)
from html_stream.markup import Element, Node
from html_stream.runtime import MARK_ATTR

PIECES = [
    "<pwn-a>", "<img src=x onerror=pwn()>", "</style><pwn-b>", "</script><pwn-c>", "</textarea><pwn-d>",
    "</title><pwn-e>", "]]><pwn-f>", "--><pwn-g>", "<svg onload=pwn()>", "javascript:pwn()",
    " JaVa\tScRiPt:pwn()", "\x01javascript:pwn()", '" pwn="x', "' pwn='y", "<!--", "<![CDATA[", "</template>",
    "</svg>", "<math><mi>", "&lt;pwn-h&gt;", "&#x3c;pwn-i>", "data:text/html,<pwn-j>", "</noscript><pwn-k>",
    "</foreignObject><pwn-l>", "<!--1-->", "</template><!--1-->", " data-hs=1", "/ok", "a", " ", "&", "\n", "\r", "é",
    "vbscript:pwn", "/next;javascript:pwn()", "</iframe><pwn-m>", "<style>", "<script>", "<p>", "</p>",
]
URL_ATTRS = {"a": "href", "iframe": "src", "video": "poster", "form": "action", "button": "formaction", "img": "src"}
SVG_URL_TARGETS = ["href", "xlink:href", "opacity"]
MAX_BOUNDARIES = 6
SEEDS = 120
DIGEST = re.compile(r"(?<=data-digest=\")[0-9a-f]{8}|(?<=reference )[0-9a-f]{8}")  # error digests differ per render
URL_IGNORED = str.maketrans("", "", "\t\n\r")
C0_AND_SPACE = "".join(map(chr, range(0x21)))


def unsafe(value: str) -> bool:
    scheme = value.translate(URL_IGNORED).lstrip(C0_AND_SPACE).lower()
    return scheme.startswith(("javascript:", "vbscript:", "data:"))  # the pages here hold no data: media


@dataclass
class Gen:
    """Builds one random page; records what each element `data-k` was given."""

    rng: random.Random
    boundaries: int = 0
    next_k: int = 0
    attrs: dict[str, set[str]] = field(default_factory=dict)  # data-k -> attribute names (lower, local)
    raw: dict[str, str] = field(default_factory=dict)  # data-k -> the exact text of a <script>/<style>

    def s(self) -> str:
        return "".join(self.rng.choice(PIECES) for _ in range(self.rng.randint(0, 6)))

    def el(self, tag: str, *children: Node, url: str | None = None, **fixed: Any) -> Any:
        self.next_k += 1
        k = str(self.next_k)
        attrs: dict[str, Any] = {"data-k": k, **fixed}
        for name in ("title", "class", "data-x"):
            if self.rng.random() < 0.3:
                attrs[name] = self.s()
        if url is not None:
            attrs[url] = self.rng.choice([self.s(), "javascript:pwn()", " java\tscript:pwn()", "/ok"])
        if self.rng.random() < 0.005:  # a str where only Markup may go: the render must refuse
            attrs[self.rng.choice(["onclick", "srcdoc", "onload"])] = self.s()
        self.attrs[k] = {n.lower().rpartition(":")[2] for n in attrs}
        return h(tag, attrs, *children)

    def boundary(self, make: Callable[[], list[Node]], fallback: Callable[[], list[Node]]) -> Suspense:
        self.boundaries += 1
        content = make()
        spins = self.rng.randint(0, 3)

        async def run() -> Node:
            for _ in range(spins):  # vary the completion order without waiting on time
                await asyncio.sleep(0)
            return content

        roots = fallback()  # as a list, or as the one element itself (the writer's fast path)
        return Suspense(run, roots[0] if len(roots) == 1 and self.rng.random() < 0.5 else roots)

    def many(self, make: Callable[[int], Node], depth: int, lo: int = 0) -> list[Node]:
        return [make(depth + 1) for _ in range(self.rng.randint(lo, 3 if depth < 4 else 1))]

    def can_suspend(self, depth: int, boundaries: bool) -> bool:
        return boundaries and self.boundaries < MAX_BOUNDARIES and depth < 5 and self.rng.random() < 0.25

    def flow(self, depth: int, boundaries: bool = True) -> Node:
        rng = self.rng
        if self.can_suspend(depth, boundaries):
            return self.boundary(lambda: self.many(lambda d: self.flow(d), depth, 1),
                                 lambda: [self.el("p", self.s())])
        kinds = ["text", "p", "div", "ul", "table", "select", "textarea", "svg", "math", "template", "style",
                 "script", "iframe", "form", "video", "pre"] if depth < 4 else ["text", "p"]
        kind = rng.choice(kinds)
        if kind == "text":
            return self.s()
        if kind == "p":
            return self.el("p", *self.many(self.phrasing, depth))
        if kind == "div":
            return self.el("div", *self.many(lambda d: self.flow(d, boundaries), depth))
        if kind == "ul":
            return self.el("ul", *self.many(lambda d: self.li(d, boundaries), depth))
        if kind == "table":
            return self.el("table", self.el("tbody", *self.many(lambda d: self.tr(d, boundaries), depth)))
        if kind == "select":
            return self.el("select", *self.many(lambda d: self.option(d, boundaries), depth))
        if kind == "textarea":
            return self.el("textarea", self.s())
        if kind == "svg":
            return self.el("svg", *self.many(self.svg, depth))
        if kind == "math":
            return self.el("math", *self.many(self.math, depth))
        if kind == "template":
            return self.el("template", *self.many(lambda d: self.flow(d, False), depth))
        if kind in ("style", "script"):
            text = Markup("a{color:red}") if kind == "style" else Markup("window.D=") + script_json(self.s())
            el = self.el(kind, text)
            self.raw[el.attrs[0][1]] = str(text)
            return el
        if kind == "form":
            return self.el("form", self.el("button", self.s(), url="formaction"), url="action")
        if kind == "pre":
            return self.el("pre", self.s())
        return self.el(kind, url=URL_ATTRS[kind])

    def phrasing(self, depth: int) -> Node:
        kind = self.rng.choice(["text", "span", "b", "a", "img", "svg"] if depth < 5 else ["text"])
        if kind == "text":
            return self.s()
        if kind in ("span", "b"):
            return self.el(kind, *self.many(lambda d: self.rng.choice([self.s(), self.el("i", self.s())]), depth))
        if kind == "a":
            return self.el("a", self.s(), url="href")
        if kind == "img":
            return self.el("img", url="src")
        return self.el("svg", *self.many(self.svg, depth))

    def li(self, depth: int, boundaries: bool) -> Node:
        if self.can_suspend(depth, boundaries):
            return self.boundary(lambda: [self.li(depth + 1, True)], lambda: [self.el("li", self.s())])
        return self.el("li", *self.many(lambda d: self.flow(d, boundaries), depth))

    def tr(self, depth: int, boundaries: bool) -> Node:
        if self.can_suspend(depth, boundaries):
            return self.boundary(lambda: [self.tr(depth + 1, True)],
                                 lambda: [self.el("tr", self.el("td", self.s()))])
        return self.el("tr", *[self.el("td", *self.many(lambda d: self.flow(d, boundaries), depth))
                               for _ in range(self.rng.randint(1, 2))])

    def option(self, depth: int, boundaries: bool) -> Node:
        if self.can_suspend(depth, boundaries):
            return self.boundary(lambda: [self.option(depth + 1, True)], lambda: [self.el("option", self.s())])
        return self.el("option", self.s())

    def svg(self, depth: int) -> Node:
        kind = self.rng.choice(["text", "g", "a", "style", "title", "foreignObject", "animate", "set", "circle"]
                               if depth < 5 else ["text", "circle"])
        if kind == "text":
            return self.el("text", self.s())
        if kind == "g":
            return self.el("g", *self.many(self.svg, depth))
        if kind == "a":
            return self.el("a", *self.many(self.svg, depth), url=self.rng.choice(["href", "xlink:href"]))
        if kind == "style":
            return self.el("style", self.s())
        if kind == "title":
            return self.el("title", *self.many(self.phrasing, depth))
        if kind == "foreignObject":
            return self.el("foreignObject", *self.many(lambda d: self.flow(d, False), depth))
        if kind in ("animate", "set"):
            values = {n: self.s() + self.rng.choice(["", "javascript:pwn()"]) for n in ("values", "to", "from")}
            return self.el(kind, attributeName=self.rng.choice(SVG_URL_TARGETS), **values)
        return self.el("circle")

    def math(self, depth: int) -> Node:
        kind = self.rng.choice(["mi", "mtext", "mrow", "style"] if depth < 5 else ["mi"])
        if kind == "mi":
            return self.el("mi", self.s())
        if kind == "mtext":
            return self.el("mtext", *self.many(self.phrasing, depth))
        if kind == "mrow":
            return self.el("mrow", *self.many(self.math, depth))
        return self.el("style", self.s())


def local(name: str) -> str:
    return name.rpartition("}")[2]


def elements(root: Any) -> Iterator[Any]:
    yield from (el for el in root.iter() if isinstance(el.tag, str))  # comments have a function as tag


def check(doc: Any, gen: Gen, where: str) -> None:
    """Every element is one the page built (or the document's and runtime's own), with
    only its own attribute names; scripts and styles hold exactly their Markup; no URL
    attribute holds a script URL."""
    seen: set[str] = set()
    fallbacks = {id(e) for root in elements(doc) if root.attrib.get("class") == "hs-error"
                 or root.attrib.get("role") == "alert" for e in root.iter()}
    for el in elements(doc):
        tag = local(el.tag)
        names = {local(n).lower().rpartition(":")[2] for n in el.attrib}
        k = el.attrib.get("data-k")
        assert "pwn" not in tag and not any("pwn" in n for n in names), f"{where}: injected {tag} {names}"
        if id(el) in fallbacks:
            # the default error fallback of a boundary whose content the writer refused
            assert names <= {"class", "data-digest", "role", "disabled"}, f"{where}: error fallback {names}"
            continue
        if k is None:
            text = "".join(el.itertext())
            assert tag in ("html", "head", "body", "meta", "title", "template", "script", "span"), f"{where}: <{tag}>"
            if tag == "script":
                assert text == RUNTIME_JS, f"{where}: a script the page did not write: {text[:60]!r}"
            if tag == "span":
                assert names == {"aria-busy", MARK_ATTR}, f"{where}: span {names}"
            continue
        assert k not in seen, f"{where}: element {k} twice"
        seen.add(k)
        assert names <= gen.attrs[k] | {"aria-busy", MARK_ATTR, "nonce"}, f"{where}: <{tag}> got {names - gen.attrs[k]}"
        if k in gen.raw and not el.tag.startswith("{http://www.w3.org/2000/svg}"):
            assert (el.text or "") == gen.raw[k], f"{where}: <{tag}> text changed"
        for name, value in el.attrib.items():
            lname = local(name).lower()
            if lname in ("href", "src", "action", "formaction", "poster"):
                assert not unsafe(value), f"{where}: {lname}={value!r}"
            if tag in ("animate", "set") and lname in ("values", "to", "from") and \
                    el.attrib.get("attributeName") in ("href", "xlink:href"):
                assert not any(unsafe(v) for v in value.split(";")), f"{where}: {lname}={value!r}"
        if tag in ("script", "style") and el.tag.startswith("{http://www.w3.org/1999/xhtml}"):
            assert k in gen.raw, f"{where}: a <{tag}> the page did not write"


async def test_no_str_becomes_markup_in_a_real_parser() -> None:
    """Over random HTML/SVG/MathML trees with hostile strs, in every strategy, html5lib
    finds only the elements, attributes and URLs the page itself built."""
    rendered = refused = 0
    for seed in range(SEEDS):
        for strategy in STRATEGIES:
            gen = Gen(random.Random(seed))
            body = [gen.flow(0) for _ in range(gen.rng.randint(1, 4))]
            page = Document(title=gen.s(), body=body, head=gen.el("meta", name=gen.s()))
            try:
                out = await render_to_string(page, strategy=strategy, nonce=gen.s() or "n")
            except MarkupError:
                refused += 1
                continue
            rendered += 1
            check(html5lib.parse(out, treebuilder="etree"), gen, f"seed {seed} {strategy}")
    assert rendered > refused * 4  # most trees are valid pages, so the check saw them


def walked(node: Any) -> Any:
    """`node` with every Element (and each boundary's fallback) rebuilt without its
    compiled bytes, so the writer walks it."""
    if isinstance(node, Element):
        return Element(node.tag, node.attrs, tuple(walked(c) for c in node.children))
    if isinstance(node, Suspense):
        return Suspense(node.content, walked(node.fallback), node.error, node.timeout_s)
    if isinstance(node, list):
        return [walked(c) for c in node]
    return node


async def test_compiled_elements_write_the_same_bytes_as_the_writer() -> None:
    """What h() writes ahead for an element (and for a fallback with its marks) is byte for
    byte what the writer would write, in every strategy."""
    compared = 0
    for seed in range(SEEDS):
        for strategy in STRATEGIES:
            gen = Gen(random.Random(seed))
            body = [gen.flow(0) for _ in range(gen.rng.randint(1, 4))]
            try:
                ahead = await render_to_string(body, strategy=strategy)
            except MarkupError:
                continue
            again = await render_to_string(walked(body), strategy=strategy)
            assert DIGEST.sub("#", again) == DIGEST.sub("#", ahead), f"seed {seed} {strategy}"
            compared += 1
    assert compared > SEEDS


class _NoCache(dict[tuple[object, ...], Element]):
    """A cache of built elements that never keeps one, so every h() call builds."""

    def __setitem__(self, key: tuple[object, ...], value: Element) -> None:
        pass


async def test_cached_elements_equal_built_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """h() returning an element it built before gives the same tree and bytes as building it anew."""
    compared = 0
    for seed in range(SEEDS):
        def page(seed: int = seed) -> list[Node]:
            gen = Gen(random.Random(seed))
            return [gen.flow(0, boundaries=False) for _ in range(gen.rng.randint(1, 4))]

        try:
            page()  # fills the cache
        except MarkupError:
            continue
        cached = page()  # the same calls again: elements come from the cache
        with monkeypatch.context() as m:
            m.setattr(markup, "_BUILT", _NoCache())
            built = page()
        assert cached == built, f"seed {seed}"
        try:
            out = await render_to_string(cached, strategy="buffer")
        except MarkupError:  # refused when written (a str where only Markup may go): refused both ways
            with pytest.raises(MarkupError):
                await render_to_string(built, strategy="buffer")
            continue
        assert out == await render_to_string(built, strategy="buffer"), f"seed {seed}"
        assert out == await render_to_string(walked(built), strategy="buffer"), f"seed {seed}"
        compared += 1
    assert compared > SEEDS // 2
