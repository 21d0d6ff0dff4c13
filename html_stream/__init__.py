"""Streaming HTML: write pages in Python, stream their slow parts out of order.

    from html_stream import Document, Suspense, choose_strategy, h, render

    async def orders():
        rows = await db.fetch_orders()
        return [h("tr", h("td", r.id), h("td", r.total)) for r in rows]

    page = Document(
        title="Orders",
        body=h("table", h("tbody", Suspense(orders, h("tr", h("td", "Loading…")), timeout_s=2))),
    )
    strategy = choose_strategy(request.headers.get("user-agent"), request.http_version)
    async with contextlib.aclosing(render(page, strategy=strategy, nonce=nonce, deadline_s=5)) as chunks:
        async for chunk in chunks:          # the first chunk is the shell; an error
            await send(chunk)               # before it means "answer 500"

Strategies (same page code, same final DOM): "stream" sends the shell at once with
fallbacks, then each boundary as it completes (those that complete together share
one chunk), swapped in by a 371-byte inline script that watches for them (no
script per boundary); "in_order" waits for each
boundary where it stands (no script); "buffer"
sends the whole page as one chunk. Crawlers and HTTP/1.0 clients get "buffer" from
choose_strategy. Boundary errors and timeouts render an error fallback showing a
digest that is also logged (logger "html_stream"), never a traceback.

Where boundaries may stand, and what their fallbacks must be there (elements such
as <tr> inside <tbody>, carrying aria-busy themselves): see placement.py. The
attribute data-hs is reserved: the stream strategy marks fallbacks with it.
Scripts inside a boundary's content run once, when it is swapped in (stream: the
runtime inserts a copy of the <template>'s content, whose scripts run and carry
the nonce; in_order/buffer: where the parser meets them). Known limit: a
boundary's content must be valid where the boundary stands.

A str is data everywhere: <script>/<style> take Markup only (in <svg>/<math> a str
in <style> is escaped as text), and attributes follow one table (attributes.py):
on*, srcdoc, script src, base href take Markup; URL attributes neutralise
javascript:; SVG animation values take the kind of the attribute they set.

Modules: markup (Markup, escaping, h/tags), attributes (the attribute policy), render (Suspense, Document, render),
placement (where a boundary may stand), runtime (the swap script), policy
(choose_strategy), demo (example pages).
"""

from __future__ import annotations

from .markup import (
    Element,
    Markup,
    MarkupError,
    escape_attr,
    escape_text,
    h,
    script_json,
    tags,
)
from .placement import BoundaryPlacementError
from .policy import choose_strategy
from .render import (
    STRATEGIES,
    BoundaryFailure,
    Document,
    Strategy,
    Suspense,
    render,
    render_to_string,
)
from .runtime import RUNTIME_JS

__all__ = [
    "RUNTIME_JS",
    "STRATEGIES",
    "BoundaryFailure",
    "BoundaryPlacementError",
    "Document",
    "Element",
    "Markup",
    "MarkupError",
    "Strategy",
    "Suspense",
    "choose_strategy",
    "escape_attr",
    "escape_text",
    "h",
    "render",
    "render_to_string",
    "script_json",
    "tags",
]
