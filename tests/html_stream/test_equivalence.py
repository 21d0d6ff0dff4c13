"""The three strategies build the same final DOM, over random trees and completion orders."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest

from html_stream import Document, Suspense, h, render
from html_stream.runtime import MARK_ATTR

from .domsim import Comment, El, canon, final_tree, parse
from .gates import Gate, release

TEXTS = ["a", "b c", "x<y", "&amp;", '"q"', "é", " ", "</p>", "`${z}`", "\u2028"]
MAX_BOUNDARIES = 9


@dataclass
class Spec:
    """A random page as plain data, so each render builds fresh nodes and gates."""

    rng: random.Random
    boundaries: int = 0
    kids: dict[int, list] = field(default_factory=dict)  # boundary id -> content specs
    parents: dict[int, int | None] = field(default_factory=dict)

    def text(self) -> tuple:
        return ("t", self.rng.choice(TEXTS))

    def boundary(self, ctx: str, depth: int, parent: int | None) -> tuple:
        self.boundaries += 1
        bid = self.boundaries
        self.parents[bid] = parent
        self.kids[bid] = self.nodes(ctx, depth + 1, bid, at_least=1 if ctx in ("tbody", "tr", "ul", "select") else 0)
        return ("b", bid, ctx)

    def nodes(self, ctx: str, depth: int, owner: int | None, at_least: int = 0) -> list:
        rng = self.rng
        out = []
        for _ in range(rng.randint(at_least, 3 if depth < 4 else 1)):
            want_boundary = self.boundaries < MAX_BOUNDARIES and depth < 5 and rng.random() < 0.35
            if want_boundary:
                out.append(self.boundary(ctx, depth, owner))
                continue
            deeper = depth < 4
            if ctx == "flow":
                kind = rng.choice(["text", "p", "div", "ul", "table", "select"] if deeper else ["text", "p"])
                if kind == "text":
                    out.append(self.text())
                elif kind == "p":
                    out.append(("e", "p", self.nodes("phrasing", depth + 1, owner)))
                elif kind == "div":
                    out.append(("e", "div", self.nodes("flow", depth + 1, owner)))
                elif kind == "ul":
                    out.append(("e", "ul", self.nodes("ul", depth + 1, owner)))
                elif kind == "table":
                    out.append(("e", "table", [("e", "tbody", self.nodes("tbody", depth + 1, owner))]))
                else:
                    out.append(("e", "select", self.nodes("select", depth + 1, owner)))
            elif ctx == "phrasing":
                if deeper and rng.random() < 0.4:
                    out.append(("e", rng.choice(["span", "b", "em"]), self.nodes("phrasing", depth + 1, owner)))
                else:
                    out.append(self.text())
            elif ctx == "tbody":
                out.append(("e", "tr", self.nodes("tr", depth + 1, owner)))
            elif ctx == "tr":
                out.append(("e", rng.choice(["td", "th"]), self.nodes("flow", depth + 1, owner)))
            elif ctx == "ul":
                out.append(("e", "li", self.nodes("flow", depth + 1, owner)))
            else:  # select
                out.append(("e", "option", [self.text()]))
        return out


FALLBACKS = {
    "flow": lambda: h("p", "loading"),
    "phrasing": lambda: "…",
    "tbody": lambda: h("tr", h("td", "…")),
    "tr": lambda: h("td", "…"),
    "ul": lambda: h("li", "…"),
    "select": lambda: h("option", "…"),
}


def build(specs: list, spec: Spec, gates: dict[int, Gate]) -> list:
    out = []
    for item in specs:
        if item[0] == "t":
            out.append(item[1])
        elif item[0] == "e":
            out.append(h(item[1], build(item[2], spec, gates)))
        else:
            bid, ctx = item[1], item[2]
            kids = spec.kids[bid]
            content = gates[bid].content(lambda kids=kids: build(kids, spec, gates))
            out.append(Suspense(content, FALLBACKS[ctx]()))
    return out


def make_spec(seed: int) -> tuple[Spec, list]:
    spec = Spec(random.Random(seed))
    root = spec.nodes("flow", 0, None, at_least=2)
    while spec.boundaries == 0:
        root.append(spec.boundary("flow", 1, None))
    return spec, root


async def run(seed: int, strategy: str, order: list[int]) -> list[bytes]:
    spec, root = make_spec(seed)
    gates = {bid: Gate() for bid in spec.kids}
    doc = Document(title="random", body=h("main", build(root, spec, gates)))
    chunks: list[bytes] = []

    async def consume() -> None:
        async for chunk in render(doc, strategy=strategy):
            chunks.append(chunk)

    consumer = asyncio.ensure_future(consume())
    await release([gates[bid] for bid in order])
    await consumer
    return chunks


@pytest.mark.parametrize("seed", range(60))
async def test_strategies_build_the_same_dom(seed: int) -> None:
    """stream (after the swaps), in_order and buffer end with equal trees for any completion order."""
    spec, _ = make_spec(seed)
    rng = random.Random(seed * 7919)
    order = list(spec.kids)
    rng.shuffle(order)
    streamed = await run(seed, "stream", order)
    rng.shuffle(order)
    in_order = await run(seed, "in_order", order)
    buffered = await run(seed, "buffer", list(spec.kids))
    assert len(buffered) == 1

    want = canon(final_tree(b"".join(buffered)))
    assert canon(final_tree(b"".join(in_order))) == want
    streamed_tree = final_tree(b"".join(streamed))
    assert canon(streamed_tree) == want
    leftovers = [n for n in streamed_tree.iter() if isinstance(n, Comment)
                 or (isinstance(n, El) and (n.tag in ("template", "script") or "aria-busy" in n.attrs))]
    assert leftovers == []


@pytest.mark.parametrize("seed", range(0, 60, 6))
async def test_every_boundary_flushed_once(seed: int) -> None:
    """In a stream each boundary is either inlined or swapped exactly once, after its placeholder;
    every chunk after the shell holds at least one swap."""
    spec, _ = make_spec(seed)
    order = sorted(spec.kids, reverse=True)  # children first: exercises inlining
    chunks = await run(seed, "stream", order)
    whole = b"".join(chunks)
    for chunk in chunks[1:]:
        assert chunk.startswith((b"<template>", b"<script>(d=>{new MutationObserver"))
    doc = parse(whole)
    placeholders = {n.attrs[MARK_ATTR] for n in doc.iter() if isinstance(n, El) and MARK_ATTR in n.attrs}
    swapped = [c.data for c in doc.iter(into_templates=False) if isinstance(c, Comment)]
    # Boundaries that settled while the previous chunk was being sent share the next one.
    assert len(swapped) == len(set(swapped)) >= len(chunks) - 1
    assert set(swapped) == placeholders
