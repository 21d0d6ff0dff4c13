from __future__ import annotations

import asyncio
import logging
import re

import pytest

from html_stream import (
    BoundaryFailure,
    BoundaryPlacementError,
    Document,
    Markup,
    MarkupError,
    Suspense,
    h,
    render,
    render_to_string,
)
from html_stream.render import ERROR_MESSAGE

from .domsim import apply_swaps, canon, final_tree, parse
from .gates import Gate


def page(*body: object) -> Document:
    return Document(title="t", body=list(body))


async def test_shell_before_any_boundary_completes() -> None:
    """The first chunk is the whole shell, yielded while every boundary is still pending."""
    gate = Gate()
    chunks = render(page(h("h1", "Hi"), Suspense(gate.content(lambda: h("p", {"id": "late"}, "x")), "wait")))
    first = await anext(chunks)
    assert first.startswith(b"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">")
    assert b"<h1>Hi</h1><span aria-busy=true data-hs=1>wait</span>" in first
    assert b"late" not in first and not gate.go.is_set()
    gate.go.set()
    second = await anext(chunks)
    assert second == b'<template><p id="late">x</p></template><!--1--></body></html>'
    with pytest.raises(StopAsyncIteration):
        await anext(chunks)


async def test_boundaries_start_concurrently_at_render_start() -> None:
    """Every boundary in the shell has started before any of them is released."""
    gates = [Gate() for _ in range(3)]
    chunks = render(page([Suspense(g.content(lambda: "x")) for g in gates]))
    await anext(chunks)
    await asyncio.gather(*(g.started.wait() for g in gates))
    for g in gates:
        g.go.set()
    rest = [c async for c in chunks]
    assert re.findall(rb"</template><!--(\w)-->", b"".join(rest)) == [b"1", b"2", b"3"]  # settled together: one chunk
    assert len(rest) == 1


async def test_chunks_follow_completion_order() -> None:
    """Each boundary is flushed as it completes, in completion order, one chunk each."""
    gates = [Gate() for _ in range(3)]
    body = [Suspense(g.content(lambda i=i: h("section", {"id": f"s{i}"}))) for i, g in enumerate(gates)]
    chunks = render(page(body))
    await anext(chunks)
    order = []
    for i in (2, 0, 1):
        gates[i].go.set()
        chunk = await anext(chunks)
        order.append(re.search(rb'id="s(\d)"', chunk).group(1).decode())
    assert order == ["2", "0", "1"]
    assert [c async for c in chunks] == []


async def test_child_done_before_parent_flush_is_inlined() -> None:
    """A child that completes before its parent is flushed goes inside the parent's chunk."""
    parent, child = Gate(), Gate()
    inner = Suspense(child.content(lambda: h("b", {"id": "child"}, "c")), "…")
    chunks = render(page(Suspense(parent.content(lambda: h("div", {"id": "parent"}, inner)), "…")))
    await anext(chunks)
    parent.go.set()
    child.go.set()
    await child.done.wait()  # the generator is parked: parent settled, not flushed
    chunk = await anext(chunks)
    assert b'<div id="parent"><b id="child">c</b></div>' in chunk
    assert b"data-hs=2" not in chunk and b"<!--2-->" not in chunk and chunk.endswith(b"</body></html>")
    assert [c async for c in chunks] == []


async def test_child_after_parent_flush_gets_placeholder() -> None:
    """A child still pending when its parent flushes gets a placeholder in the parent's template."""
    parent, child = Gate(), Gate()
    inner = Suspense(child.content(lambda: h("b", {"id": "child"}, "c")), h("i", "wait"))
    chunks = render(page(Suspense(parent.content(lambda: h("div", {"id": "parent"}, inner)), "…")))
    shell = await anext(chunks)
    parent.go.set()
    chunk = await anext(chunks)
    assert b'<template><div id="parent"><i aria-busy=true data-hs=2>wait</i></div></template><!--1-->' in chunk
    child.go.set()
    last = await anext(chunks)
    assert last.startswith(b'<template><b id="child">c</b></template><!--2-->')
    tree = final_tree(shell + chunk + last)
    assert tree.by_id("parent").children[0].tag == "b"


async def test_page_without_boundaries_is_one_chunk_without_script() -> None:
    """A page with no boundary is yielded at once and carries no runtime."""
    chunks = [c async for c in render(page(h("p", "x")))]
    assert len(chunks) == 1 and b"<script" not in chunks[0]


async def test_runtime_sent_once_before_first_use_in_fragments() -> None:
    """A fragment page gets the runtime with the first swap, and only once."""
    gates = [Gate(), Gate()]
    chunks = render([Suspense(g.content(lambda: "x")) for g in gates])
    shell = await anext(chunks)
    assert b"<script" not in shell
    gates[0].go.set()
    first = await anext(chunks)
    gates[1].go.set()
    second = await anext(chunks)
    assert first.startswith(b"<script>(d=>{new MutationObserver(") and b"MutationObserver" not in second


@pytest.mark.parametrize("strategy", ["in_order", "buffer"])
async def test_in_order_and_buffer_need_no_script(strategy: str) -> None:
    """in_order and buffer write content in place: no placeholder, template or script."""
    gate = Gate()
    gate.go.set()
    out = await render_to_string(page(Suspense(gate.content(lambda: h("p", "x")), "fallback")), strategy=strategy)
    assert "<script" not in out and "<template" not in out and "fallback" not in out and "data-hs" not in out


async def test_in_order_flushes_before_each_wait() -> None:
    """in_order yields what precedes a pending boundary, then waits for it in place."""
    a, b = Gate(), Gate()
    chunks = render(page("A", Suspense(a.content(lambda: "1")), "B", Suspense(b.content(lambda: "2")), "C"),
                    strategy="in_order")
    first = await anext(chunks)
    assert first.endswith(b"<body>A")
    b.go.set()
    await b.done.wait()
    a.go.set()
    assert await anext(chunks) == b"1B2C</body></html>"


async def test_buffer_is_one_chunk() -> None:
    """buffer yields the whole page once, so it can be sent with Content-Length."""
    gates = [Gate(), Gate()]
    chunks = render(page([Suspense(g.content(lambda: "x")) for g in gates]), strategy="buffer")
    pending = asyncio.ensure_future(anext(chunks))
    for g in gates:
        await g.started.wait()
        g.go.set()
    whole = await pending
    assert whole.endswith(b"<body>xx</body></html>")
    assert [c async for c in chunks] == []


async def test_error_renders_fallback_with_digest_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    """An exception in a boundary shows the error fallback with a digest that the log carries too."""
    gate = Gate()
    gate.go.set()
    with caplog.at_level(logging.ERROR, logger="html_stream"):
        out = await render_to_string(page(h("ul", Suspense(gate.fail(RuntimeError("db password=hunter2")),
                                                           h("li", "…")))), strategy="stream")
    digest = re.search(r'data-digest="([0-9a-f]{8})"', out).group(1)
    assert f"(reference {digest})" in out and ERROR_MESSAGE in out
    assert "hunter2" not in out and "Traceback" not in out
    [record] = [r for r in caplog.records if r.name == "html_stream"]
    assert digest in record.getMessage() and record.exc_info is not None
    item = final_tree(out).find_all("li")[0]
    assert item.attrs["data-digest"] == digest


async def test_custom_error_fallback_gets_failure() -> None:
    """A callable error fallback receives the digest and the exception."""
    gate = Gate()
    gate.go.set()
    seen: list[BoundaryFailure] = []

    def error(failure: BoundaryFailure) -> object:
        seen.append(failure)
        return h("p", {"class": "oops"}, f"ref {failure.digest}")

    out = await render_to_string(page(Suspense(gate.fail(KeyError("k")), error=error)))
    assert isinstance(seen[0].exception, KeyError) and not seen[0].timed_out
    assert f'<p class="oops">ref {seen[0].digest}</p>' in out


async def test_error_fallback_that_fails_uses_default(caplog: pytest.LogCaptureFixture) -> None:
    """If the error fallback itself raises, the built-in one is shown."""
    gate = Gate()
    gate.go.set()

    def error(failure: BoundaryFailure) -> object:
        raise ValueError("broken error page")

    with caplog.at_level(logging.ERROR, logger="html_stream"):
        out = await render_to_string(page(Suspense(gate.fail(RuntimeError("x")), error=error)))
    assert ERROR_MESSAGE in out and "broken error page" not in out


async def test_shell_error_raises_before_any_byte() -> None:
    """An exception while building the shell raises from the first __anext__."""

    async def broken_page() -> Document:
        raise LookupError("no such page")

    chunks = render(broken_page)  # creating the iterator does no work
    with pytest.raises(LookupError):
        await anext(chunks)


@pytest.mark.parametrize(
    "misplaced",
    [
        lambda s: h("script", s),
        lambda s: h("style", s),
        lambda s: h("textarea", s),
        lambda s: h("title", s),
        lambda s: h("div", {"title": s}),
        lambda s: h("template", h("div", s)),
        lambda s: h("svg", h("g", s)),
        lambda s: h("noscript", h("p", s)),
    ],
    ids=["script", "style", "textarea", "title", "attribute", "template", "svg", "noscript"],
)
async def test_boundary_in_raw_text_or_attribute_refused(misplaced) -> None:
    """A boundary where no swap can reach raises BoundaryPlacementError before any byte."""
    earlier, gate = Gate(), Gate()
    chunks = render(page(Suspense(earlier.content(lambda: "x")), misplaced(Suspense(gate.content(lambda: "y")))))
    with pytest.raises(BoundaryPlacementError, match="boundary"):
        await anext(chunks)
    assert not earlier.started.is_set()  # its task was cancelled with the failed shell


async def test_table_contexts_mark_the_fallbacks_own_elements() -> None:
    """Inside tbody/tr/select/ul each of the fallback's own elements carries the marks (no wrapper)."""
    g = [Gate() for _ in range(4)]
    body = [
        h("table", h("tbody", Suspense(g[0].content(lambda: h("tr", h("td", "row"))), h("tr", h("td", "…"))),
                     h("tr", Suspense(g[1].content(lambda: h("td", "cell")), h("td", "…"))))),
        h("select", Suspense(g[2].content(lambda: h("option", "o")), h("option", "…"))),
        h("ul", Suspense(g[3].content(lambda: h("li", "i")), [h("li", "…"), h("li", "…")])),
    ]
    chunks = render(page(body))
    shell = await anext(chunks)
    assert b"<tbody><tr aria-busy=true data-hs=1><td>" in shell
    assert b"<tr><td aria-busy=true data-hs=2>" in shell
    assert b"<select><option aria-busy=true data-hs=3>" in shell
    assert b"<ul><li aria-busy=true data-hs=4>\xe2\x80\xa6</li><li aria-busy=true data-hs=4>" in shell
    assert b"<span" not in shell
    for gate in g:
        gate.go.set()
    rest = b"".join([c async for c in chunks])
    doc = parse(shell + rest)
    assert sorted(apply_swaps(doc)) == [1, 2, 3, 4]


async def test_fallback_wrapped_where_a_span_may_stand() -> None:
    """In flow or phrasing content a mixed fallback is wrapped in one <span aria-busy>."""
    gate = Gate()
    chunks = render(page(h("p", "a", Suspense(gate.content(lambda: "b"), ["loading ", h("b", "…")]), "c")))
    shell = await anext(chunks)
    assert b"<p>a<span aria-busy=true data-hs=1>loading <b>\xe2\x80\xa6</b></span>c</p>" in shell
    await chunks.aclose()


@pytest.mark.parametrize(
    ("parent", "fallback"),
    [("tr", "loading"), ("tbody", h("td", "x")), ("ul", "loading"), ("select", h("span", "x"))],
)
async def test_fallback_must_fit_its_context(parent: str, fallback: object) -> None:
    """A fallback the parser would move or drop in that context is refused at render time."""
    gate = Gate()
    inner = Suspense(gate.content(lambda: None), fallback)
    tree = h("table", h("tbody", h("tr", inner))) if parent == "tr" else (
        h("table", h("tbody", inner)) if parent == "tbody" else h(parent, inner))
    with pytest.raises(MarkupError, match=f"<{parent}>"):
        await anext(render(page(tree)))


async def test_content_that_would_reparse_differently_is_an_error() -> None:
    """Rows directly in <table> (an implied <tbody>) are refused and shown as the error fallback."""
    gate = Gate()
    gate.go.set()
    out = await render_to_string(page(h("table", Suspense(gate.content(lambda: h("tr", h("td", "x")))))))
    assert '<table><tbody class="hs-error"' in out


async def test_fallback_may_not_hold_a_boundary() -> None:
    """A boundary inside a fallback is refused."""
    inner = Suspense(Gate().content(lambda: "x"))
    with pytest.raises(MarkupError, match="fallback"):
        await anext(render(page(Suspense(Gate().content(lambda: "y"), h("p", inner)))))


def test_unknown_strategy_fails_at_call() -> None:
    """An unknown strategy is a ValueError when render() is called, not later."""
    with pytest.raises(ValueError, match="strategy"):
        render(page("x"), strategy="eager")


async def test_page_function_and_plain_content() -> None:
    """A page may be a coroutine function; content may be a plain function or an awaitable."""

    async def load() -> Document:
        return page(Suspense(lambda: Markup("<i>sync</i>")), Suspense(asyncio.sleep(0, "awaited")))

    out = await render_to_string(load, strategy="in_order")
    assert "<body><i>sync</i>awaited</body>" in out


async def test_page_renders_twice() -> None:
    """A page built once can be rendered again (content functions are called per render)."""
    async def content() -> object:
        return h("p", "x")

    doc = page(Suspense(content))
    assert await render_to_string(doc) == await render_to_string(doc)


async def test_empty_fallback_is_an_empty_marked_template() -> None:
    """A boundary without a fallback holds its place with an empty marked <template>, swapped like any other."""
    gate = Gate()
    chunks = render(page(h("table", h("tbody", Suspense(gate.content(lambda: h("tr", h("td", "row"))))))))
    shell = await anext(chunks)
    assert b"<tbody><template data-hs=1></template></tbody>" in shell
    gate.go.set()
    tree = final_tree(shell + b"".join([c async for c in chunks]))
    assert [td.text() for td in tree.find_all("td")] == ["row"] and tree.find_all("template") == []


async def test_fallback_roots_where_no_wrapper_stands() -> None:
    """In a list the blank text between fallback elements is dropped (it would stay after the swap);
    a Markup root there, which cannot carry the marks, is refused."""
    gate = Gate()
    chunks = render(page(h("ul", Suspense(gate.content(lambda: h("li", "i")), [h("li", "a"), " \n", h("li", "b")]))))
    shell = await anext(chunks)
    assert b"<ul><li aria-busy=true data-hs=1>a</li><li aria-busy=true data-hs=1>b</li></ul>" in shell
    gate.go.set()
    tree = final_tree(shell + b"".join([c async for c in chunks]))
    assert canon(tree.find_all("ul")[0]) == ("ul", (), (("li", (), ("i",)),))
    with pytest.raises(MarkupError, match="must be elements"):
        await render_to_string(page(h("ul", Suspense(lambda: "x", Markup("<li>…</li>")))), strategy="stream")


def test_mark_attribute_is_reserved() -> None:
    """A page cannot set the attribute the runtime removes fallbacks by."""
    with pytest.raises(MarkupError, match="reserved"):
        h("p", {"data-hs": "1"})
    with pytest.raises(MarkupError, match="reserved"):
        h("p", data_HS="1")
