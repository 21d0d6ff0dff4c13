from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable

import pytest

from html_stream import demo, render
from html_stream.demo import dashboard_page, suspense_page
from html_stream.markup import Node

from .domsim import canon, final_tree, parse, start_tags
from .gates import Gate

STRATEGIES = ["stream", "in_order", "buffer"]
DIGEST = re.compile(rb"[0-9a-f]{8}")


async def chunks_of(page, **kw) -> list[bytes]:
    return [c async for c in render(page, **kw)]


@pytest.fixture
def delay_gates(monkeypatch: pytest.MonkeyPatch) -> dict[float, Gate]:
    """The demo's delayed content waits on one Gate per delay instead of sleeping; the test opens them."""
    gates: dict[float, Gate] = {}

    def after(delay_s: float, make: Callable[[], Node]) -> Callable[[], Awaitable[Node]]:
        return gates.setdefault(delay_s, Gate()).content(make)

    monkeypatch.setattr(demo, "_after", after)
    return gates


async def test_suspense_page_streams_in_delay_order(delay_gates: dict[float, Gate]) -> None:
    """suspense_page([30, 10, 20]) completing in delay order flushes section-1, section-2, section-0, then ends."""
    async with contextlib.aclosing(render(suspense_page([30, 10, 20]))) as chunks:
        shell = await anext(chunks)
        assert b"section-" not in shell.split(b"<body>")[1]
        assert sorted(delay_gates) == [0.01, 0.02, 0.03]
        order = []
        async with asyncio.timeout(5):  # a renderer waiting in document order would hang here
            for delay in sorted(delay_gates):
                delay_gates[delay].go.set()
                chunk = await anext(chunks)
                found = re.search(rb'id="section-(\d)"', chunk)
                assert found, chunk
                order.append(found.group(1))
        assert order == [b"1", b"2", b"0"]
        assert chunk.endswith(b"</body></html>")
        with pytest.raises(StopAsyncIteration):
            await anext(chunks)


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_suspense_page_dom(strategy: str) -> None:
    """Every strategy ends with sections 0..n-1 in document order."""
    tree = final_tree(b"".join(await chunks_of(suspense_page([5, 1, 3]), strategy=strategy)))
    ids = [n.attrs["id"] for n in tree.find_all("section")]
    assert ids == ["section-0", "section-1", "section-2"]


async def test_dashboard_same_dom_for_all_strategies(caplog: pytest.LogCaptureFixture) -> None:
    """The dashboard's final DOM is the same for every strategy (digests aside)."""
    trees = []
    with caplog.at_level(logging.CRITICAL, logger="html_stream"):
        for strategy in STRATEGIES:
            whole = b"".join(await chunks_of(dashboard_page(scale=0.01), strategy=strategy))
            trees.append(canon(final_tree(DIGEST.sub(b"digest00", whole))))
    assert trees[0] == trees[1] == trees[2]


async def test_dashboard_shows_failure_and_timeout(caplog: pytest.LogCaptureFixture) -> None:
    """The failing panel shows its digest (also logged); the slow one times out; the rest arrive."""
    with caplog.at_level(logging.WARNING, logger="html_stream"):
        chunks = await chunks_of(dashboard_page(scale=0.01))
    # streamed: the shell, then swaps (those that settle together share a chunk)
    assert len(chunks) > 2 and len(re.findall(rb"</template><!--\w+-->", b"".join(chunks))) >= 8
    tree = final_tree(b"".join(chunks))
    errors = [n for n in tree.iter() if getattr(n, "attrs", {}).get("class") == "error"]
    assert len(errors) == 2
    logged = " ".join(r.getMessage() for r in caplog.records)
    for err in errors:
        assert err.attrs["data-digest"] in err.text() and err.attrs["data-digest"] in logged
    assert "backend unavailable" not in b"".join(chunks).decode()
    assert len(tree.find_all("tr")) == 5 and len(tree.find_all("li")) == 4
    assert [o.text() for o in tree.find_all("option")] == ["All", "EU", "US", "APAC"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("make", [lambda: suspense_page([3, 1]), lambda: dashboard_page(scale=0.01)])
async def test_csp_nonce_everywhere_and_no_style_attributes(strategy: str, make, caplog) -> None:
    """With a nonce, every <script> and <style> carries it (escaped), and no style= attribute is written."""
    nonce = 'r4nd"<om>&'
    with caplog.at_level(logging.CRITICAL, logger="html_stream"):
        whole = b"".join(await chunks_of(make(), strategy=strategy, nonce=nonce))
    tags = start_tags(whole)
    scripts = [attrs for tag, attrs in tags if tag in ("script", "style")]
    assert scripts and all(attrs.get("nonce") == nonce for attrs in scripts)
    assert b'nonce="r4nd&quot;&lt;om&gt;&amp;"' in whole
    assert not [tag for tag, attrs in tags if "style" in attrs]
    parse(whole)  # well formed
