"""stream, in_order and buffer end with the same DOM in Chromium, for random trees
(flow, phrasing, tables, lists, selects, nested boundaries) and completion orders."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from html_stream import Document, h
from sse_server import App, Request
from sse_server.html import stream_page

from ..html_stream.gates import Gate, release
from ..html_stream.test_equivalence import build, make_spec

SEEDS = range(8)
FINAL_DOM = """() => {
  const w = document.createTreeWalker(document, NodeFilter.SHOW_COMMENT);
  let comments = 0; while (w.nextNode()) comments++;
  return {html: document.body.innerHTML, comments,
          leftovers: document.querySelectorAll('template, script, [aria-busy]').length};
}"""


async def tree(request: Request) -> Any:
    """The random page of ?seed=, its boundaries completing in the order ?order= (ids, comma-separated)."""
    seed = int(request.query["seed"][0])
    spec, root = make_spec(seed)
    gates = {bid: Gate() for bid in spec.kids}
    order = [int(b) for b in request.query["order"][0].split(",")]
    page = Document(title="random", body=h("main", build(root, spec, gates)))
    releasing = asyncio.ensure_future(release([gates[b] for b in order]))
    request.on_finish(lambda _outcome: releasing.cancel())
    return await stream_page(request, page, strategy=request.query["strategy"][0])


@pytest.mark.parametrize("seed", SEEDS)
def test_final_dom_is_the_same_in_every_strategy(page: Any, live_server: Any, seed: int) -> None:
    """After streaming, the body Chromium built is identical across strategies and completion orders."""
    app = App()
    app.add_route("/tree", tree)
    st = live_server(app)
    spec, _ = make_spec(seed)
    rng = random.Random(seed * 31)
    results = {}
    for strategy, runs in (("stream", 2), ("in_order", 1), ("buffer", 1)):
        for run in range(runs):
            order = list(spec.kids)
            rng.shuffle(order)
            page.goto(f"{st.url}/tree?seed={seed}&strategy={strategy}&order={','.join(map(str, order))}")
            page.wait_for_load_state("load")
            results[f"{strategy} {run}"] = page.evaluate(FINAL_DOM)
    want = results["buffer 0"]
    assert want["comments"] == 0 and want["leftovers"] == 0
    assert {name: got for name, got in results.items() if got != want} == {}
