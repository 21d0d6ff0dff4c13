from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable

import pytest

from html_stream import BoundaryFailure, Document, Suspense, h, render, render_to_string
from html_stream.render import ERROR_MESSAGE, TIMEOUT_MESSAGE

from .domsim import El, final_tree
from .gates import Gate


def page(*body: object) -> Document:
    return Document(title="t", body=list(body))


@pytest.fixture
async def boundary_tasks() -> AsyncIterator[Callable[[], list[asyncio.Task]]]:
    """A function listing every boundary task the renderer created during the test."""
    loop = asyncio.get_running_loop()
    created: list[asyncio.Task] = []

    def factory(loop: asyncio.AbstractEventLoop, coro, **kwargs) -> asyncio.Task:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        created.append(task)
        return task

    def boundaries() -> list[asyncio.Task]:  # by name, which is set after the factory returns
        return [t for t in created if t.get_name().startswith("html_stream boundary")]

    loop.set_task_factory(factory)
    yield boundaries
    loop.set_task_factory(None)


async def test_boundary_timeout_renders_final_fallback(caplog: pytest.LogCaptureFixture) -> None:
    """A boundary past its timeout_s is settled with its timeout fallback and its work cancelled."""
    gate = Gate()
    seen: list[BoundaryFailure] = []

    def error(failure: BoundaryFailure) -> object:
        seen.append(failure)
        return h("p", {"id": "late"}, f"too slow ({failure.digest})")

    with caplog.at_level(logging.WARNING, logger="html_stream"):
        out = await render_to_string(page(Suspense(gate.content(lambda: "never"), "…", error=error, timeout_s=0.02)),
                                     strategy="stream")
    assert gate.cancelled and seen[0].timed_out
    assert final_tree(out).by_id("late").text() == f"too slow ({seen[0].digest})"
    assert any(seen[0].digest in r.getMessage() for r in caplog.records)


async def test_default_timeout_fallback() -> None:
    """Without an error fallback, a timeout shows the built-in timeout message with a digest."""
    out = await render_to_string(page(Suspense(Gate().content(lambda: "x"), timeout_s=0.01)))
    assert re.search(TIMEOUT_MESSAGE.replace(".", r"\.") + r" \(reference [0-9a-f]{8}\)", out)


@pytest.mark.parametrize("strategy", ["stream", "in_order", "buffer"])
async def test_page_deadline_settles_everything(strategy: str) -> None:
    """The page deadline settles every pending boundary, nested ones included; nothing waits forever."""
    never, parent = Gate(), Gate()
    parent.go.set()
    nested = Suspense(Gate().content(lambda: "x"), "…")
    doc = page(Suspense(never.content(lambda: "x"), "…"),
               Suspense(parent.content(lambda: h("div", {"id": "p"}, nested)), "…"))
    async with asyncio.timeout(5):  # the gates never open: without the deadline this would hang
        out = await render_to_string(doc, strategy=strategy, deadline_s=0.05)
    assert out.count(TIMEOUT_MESSAGE) == 2 and never.cancelled
    tree = final_tree(out)
    assert TIMEOUT_MESSAGE in tree.by_id("p").text()
    assert not [n for n in tree.iter() if isinstance(n, El) and "aria-busy" in n.attrs]  # no spinner left


async def test_deadline_keeps_fast_boundaries() -> None:
    """Boundaries that finish before the deadline keep their content."""
    fast = Gate()
    fast.go.set()
    out = await render_to_string(page(Suspense(fast.content(lambda: h("p", {"id": "ok"}))),
                                      Suspense(Gate().content(lambda: "x"))), deadline_s=0.05)
    assert final_tree(out).by_id("ok") is not None and out.count(TIMEOUT_MESSAGE) == 1


async def test_timeout_counts_from_boundary_start() -> None:
    """A nested boundary's timeout starts when its parent's content is produced."""
    parent, child = Gate(), Gate()
    inner = Suspense(child.content(lambda: h("b", {"id": "c"})), "…", timeout_s=5)
    chunks = render(page(Suspense(parent.content(lambda: h("div", inner)), "…", timeout_s=5)))
    await anext(chunks)
    parent.go.set()
    await anext(chunks)
    child.go.set()
    assert b'id="c"' in await anext(chunks)


async def test_parent_failure_cancels_children(boundary_tasks: Callable[[], list[asyncio.Task]], caplog) -> None:
    """When a parent's content fails after starting children, the children are cancelled and never shown."""
    parent, child = Gate(), Gate()
    parent.go.set()

    def content() -> object:
        # the first boundary starts, then the misplaced one makes the parent fail
        misplaced = h("textarea", Suspense(Gate().content(lambda: "x")))
        return [Suspense(child.content(lambda: "the child's text")), misplaced]

    with caplog.at_level(logging.ERROR, logger="html_stream"):
        out = await render_to_string(page(Suspense(parent.content(content), "…")), strategy="stream")
    assert ERROR_MESSAGE in out and "the child" not in out
    tasks = boundary_tasks()
    assert len(tasks) == 2 and tasks[1].cancelled()
    assert not child.started.is_set()


@pytest.mark.parametrize("strategy", ["stream", "in_order", "buffer"])
async def test_aclose_cancels_pending_work(strategy: str, boundary_tasks: Callable[[], list[asyncio.Task]]) -> None:
    """Closing the iterator (client gone) cancels every pending boundary; their code sees CancelledError."""
    parent, child, other = Gate(), Gate(), Gate()
    parent.go.set()
    nested = Suspense(child.content(lambda: "x"))
    chunks = render(page("A", Suspense(other.content(lambda: "y")),
                         Suspense(parent.content(lambda: h("div", nested)))), strategy=strategy)
    first = asyncio.ensure_future(anext(chunks))
    await other.started.wait()
    await child.started.wait()
    if strategy == "buffer":
        first.cancel()  # buffer has nothing to yield before everything is done
        with pytest.raises(asyncio.CancelledError):
            await first
    else:
        await first
        await chunks.aclose()
    assert other.cancelled and child.cancelled
    assert all(t.done() for t in boundary_tasks())


async def test_cancelling_the_consumer_cancels_pending_work(boundary_tasks: Callable[[], list[asyncio.Task]]) -> None:
    """Cancelling the task that iterates the render (disconnect) cancels pending boundaries."""
    gates = [Gate(), Gate()]
    got_shell = asyncio.Event()

    async def consume() -> None:
        async for _chunk in render(page([Suspense(g.content(lambda: "x")) for g in gates])):
            got_shell.set()

    consumer = asyncio.ensure_future(consume())
    await got_shell.wait()
    await asyncio.gather(*(g.started.wait() for g in gates))
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert all(g.cancelled for g in gates)
    assert all(t.cancelled() for t in boundary_tasks())


async def test_content_raising_cancelled_error_is_an_error() -> None:
    """A CancelledError raised by content itself (not the render closing) renders the error fallback."""
    gate = Gate()
    gate.go.set()
    out = await render_to_string(page(Suspense(gate.fail(asyncio.CancelledError()))))
    assert ERROR_MESSAGE in out
