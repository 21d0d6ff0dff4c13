# Example pages for the demo server and the tests. Pure page builders: no server.
#
# suspense_page: one boundary per delay, boundary i holding #section-{i}; the
#   shape outside checks rely on (DESIGN.md, GET /suspense).
# dashboard_page: panels in every context a boundary supports (cards in a grid, rows
#   in a <tbody>, items in a <ul>, options in a <select>, a nested boundary), one
#   failing on purpose and one timing out, so both fallbacks can be seen. `scale`
#   multiplies every delay (tests use a small one).
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .markup import Element, Markup, Node, h
from .render import BoundaryFailure, Document, Suspense

__all__ = ["dashboard_page", "suspense_page"]

_CSS = Markup(
    "body{font:16px/1.4 system-ui,sans-serif;margin:2rem;color:#1d2330}"
    "[aria-busy=true]{opacity:.55}"
    ".skeleton{display:inline-block;min-width:8em;background:#e6e8ee;border-radius:4px;color:transparent}"
    ".cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(12rem,1fr));gap:1rem}"
    ".card{border:1px solid #d5d9e2;border-radius:8px;padding:1rem}"
    ".card strong{display:block;font-size:1.8rem}"
    "table{border-collapse:collapse}td,th{padding:.25rem .75rem;border-bottom:1px solid #e6e8ee}"
    ".hs-error,.error{color:#a11}"
)


def _after(delay_s: float, make: Callable[[], Node]) -> Callable[[], Awaitable[Node]]:
    async def content() -> Node:
        await asyncio.sleep(delay_s)
        return make()

    return content


def suspense_page(delays_ms: list[int]) -> Document:
    """A page with one boundary per delay; boundary i resolves after delays_ms[i] ms
    into a <section id="section-{i}">."""
    sections = []
    for i, delay in enumerate(delays_ms):

        def section(i: int = i, delay: int = delay) -> Element:
            return h("section", {"id": f"section-{i}", "class": "card"},
                     h("h2", f"Section {i}"), h("p", f"Resolved after {delay} ms."))

        sections.append(
            Suspense(_after(delay / 1000, section),
                     h("section", {"class": "card"}, h("p", {"class": "skeleton"}, f"Loading section {i}…")))
        )
    return Document(
        title="Out-of-order streaming",
        head=h("style", _CSS),
        body=[h("h1", "Out-of-order streaming"),
              h("p", f"{len(delays_ms)} sections, each arriving after its own delay."),
              h("div", {"class": "cards"}, sections)],
    )


_ORDERS = [
    ("A-1042", "Rowan Vale", "3 items", "€128.40", "shipped"),
    ("A-1043", "Imani Stone", "1 item", "€19.99", "paid"),
    ("A-1044", "Tomas Reed", "5 items", "€342.00", "packing"),
    ("A-1045", "Mia Park", "2 items", "€56.10", "paid"),
]
_ACTIVITY = ["Order A-1045 paid", "Stock of SKU-77 below 10", "Refund R-311 approved", "New customer signed up"]


def _card(label: str, value: str, note: str) -> Element:
    return h("article", {"class": "card"}, h("h3", label), h("strong", value), h("small", note))


def _card_skeleton(label: str) -> Element:
    return h("article", {"class": "card"}, h("h3", label), h("strong", {"class": "skeleton"}, "000"))


def dashboard_page(*, scale: float = 1.0) -> Document:
    """A dashboard whose panels arrive at different times; one fails, one times out."""

    def at(ms: int) -> float:
        return ms * scale / 1000

    async def recommendations() -> Element:
        await asyncio.sleep(at(250))
        raise RuntimeError("recommendation backend unavailable")

    async def forecast() -> Element:
        await asyncio.sleep(at(60_000))  # never makes it: timeout_s below settles it
        return h("p", "Sunny")

    def top_customer() -> Suspense:  # nested: starts when the revenue card arrives
        return Suspense(_after(at(300), lambda: h("small", "Top customer: Rowan Vale")),
                        h("small", {"class": "skeleton"}, "…"))

    cards = h(
        "div", {"class": "cards"},
        Suspense(_after(at(150), lambda: _card("Visitors", "12,408", "+4% this week")), _card_skeleton("Visitors")),
        Suspense(_after(at(450), lambda: h("article", {"class": "card"}, h("h3", "Revenue"),
                                           h("strong", "€48,210"), top_customer())),
                 _card_skeleton("Revenue")),
        Suspense(_after(at(300), lambda: _card("Orders", "311", "27 awaiting shipment")), _card_skeleton("Orders")),
    )
    orders = h(
        "table",
        h("caption", "Latest orders"),
        h("thead", h("tr", [h("th", {"scope": "col"}, c) for c in ("Order", "Customer", "Items", "Total", "Status")])),
        h("tbody", Suspense(
            _after(at(600), lambda: [h("tr", [h("td", c) for c in row]) for row in _ORDERS]),
            [h("tr", h("td", {"colspan": 5}, h("span", {"class": "skeleton"}, "Loading orders…")))],
        )),
    )
    activity = h("ul", Suspense(_after(at(400), lambda: [h("li", item) for item in _ACTIVITY]),
                                h("li", {"class": "skeleton"}, "Loading activity…")))
    region = h("label", "Region ", h("select", {"name": "region"}, h("option", "All"),
                                     Suspense(_after(at(200), lambda: [h("option", r) for r in ("EU", "US", "APAC")]),
                                              h("option", {"disabled": True}, "loading…"))))

    def broken(failure: BoundaryFailure) -> Element:
        return h("p", {"class": "error", "data-digest": failure.digest},
                 f"Recommendations are unavailable right now (reference {failure.digest}).")

    def slow(failure: BoundaryFailure) -> Element:
        return h("p", {"class": "error", "data-digest": failure.digest},
                 f"The forecast took too long (reference {failure.digest}).")

    return Document(
        title="Shop dashboard",
        head=h("style", _CSS),
        body=[
            h("h1", "Shop dashboard"),
            region,
            cards,
            h("h2", "Orders"), orders,
            h("h2", "Activity"), activity,
            h("h2", "Recommendations"),
            Suspense(recommendations, h("p", {"class": "skeleton"}, "Loading recommendations…"), error=broken),
            h("h2", "Forecast"),
            Suspense(forecast, h("p", {"class": "skeleton"}, "Loading forecast…"), error=slow,
                     timeout_s=at(1_200)),
        ],
    )
