# Example pages for the demo server and the tests. Pure page builders: no server.
#
# suspense_page: one boundary per delay, boundary i holding #section-{i}; the
#   shape outside checks rely on (DESIGN.md, GET /suspense).
# dashboard_page: panels in every context a boundary supports (cards in a grid, rows
#   in a <tbody>, items in a <ul>, options in a <select>, a nested boundary); two
#   fail on purpose (one raises, one times out), so both fallbacks can be seen.
#   `scale` multiplies every delay (tests use a small one).
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .markup import Element, Markup, Node, h
from .render import BoundaryFailure, Document, Suspense

__all__ = ["FAVICON_SVG", "REGIONS", "dashboard_page", "suspense_page"]

# Fallbacks reserve the size of what replaces them, so the page does not jump
# (cumulative layout shift under 0.01, tests/browser/test_layout.py): a skeleton
# has the content's elements and classes with placeholder text of the same length
# (transparent), table cells do not wrap, and panels whose content is unknown
# (an error message) get a min-height. Wide tables scroll inside their own box, so
# a 390 px screen has no horizontal overflow. No style= attribute: the CSP allows
# only the nonce'd <style>.
_CSS = Markup(
    "body{font:16px/1.4 system-ui,sans-serif;margin:1rem auto;max-width:60rem;padding:0 1rem;color:#1d2330}"
    "nav{margin-bottom:.5rem}a{color:#0b57d0}"
    "[aria-busy=true]{opacity:.55}"
    ".skeleton{color:transparent;background:#e6e8ee;border-radius:4px}"
    ".cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(12rem,1fr));gap:1rem}"
    ".card{border:1px solid #d5d9e2;border-radius:8px;padding:1rem}"
    ".card h2,.card h3,.card p{margin:0 0 .5rem}"
    ".card strong{display:block;font-size:1.8rem;line-height:1.2}.card small{display:block}"
    ".scroll{overflow-x:auto}"
    "table{border-collapse:collapse;table-layout:fixed;width:40rem}"
    "td,th{padding:.25rem .75rem;border-bottom:1px solid #e6e8ee;white-space:nowrap;overflow:hidden;"
    "text-overflow:ellipsis;text-align:left}"
    "ul.activity{padding-left:1.25rem}ul.activity li{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}"
    ".panel{min-height:4.2em}.panel p{margin:0}"
    ".hs-error,.error{color:#a11}"
    "form.region{display:flex;gap:.5rem;align-items:center;flex-wrap:wrap;margin:.5rem 0 1rem}"
)
FAVICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#0b57d0"/>'
    '<path d="M4 11l3-6 2 4 1-2 2 4" fill="none" stroke="#fff" stroke-width="1.5"/></svg>'
)
"""The demo's icon, served at /favicon.svg and linked from every page."""


def _head() -> list[Element]:
    return [h("style", _CSS), h("link", rel="icon", href="/favicon.svg", type="image/svg+xml")]


def _nav() -> Element:
    return h("nav", h("a", {"href": "/"}, "← Demo index"))


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

        # The skeleton is the section's own shape: same elements, text of the same length.
        skeleton = h("section", {"class": "card"}, h("h2", {"class": "skeleton"}, f"Section {i}"),
                     h("p", {"class": "skeleton"}, f"Resolved after {delay} ms."))
        sections.append(Suspense(_after(delay / 1000, section), skeleton))
    return Document(
        title="Out-of-order streaming",
        head=_head(),
        body=[_nav(), h("h1", "Out-of-order streaming"),
              h("p", f"{len(delays_ms)} sections, each arriving after its own delay."),
              h("div", {"class": "cards"}, sections)],
    )


_ORDERS = [
    ("A-1042", "Rowan Vale", "3 items", "€128.40", "shipped", "EU"),
    ("A-1043", "Imani Stone", "1 item", "€19.99", "paid", "US"),
    ("A-1044", "Tomas Reed", "5 items", "€342.00", "packing", "EU"),
    ("A-1045", "Mia Park", "2 items", "€56.10", "paid", "APAC"),
]
REGIONS = ("EU", "US", "APAC")
_ACTIVITY = ["Order A-1045 paid", "Stock of SKU-77 below 10", "Refund R-311 approved", "New customer signed up"]


def _card(label: str, value: str, note: Node) -> Element:
    return h("article", {"class": "card"}, h("h3", label), h("strong", value), h("small", note))


def _card_skeleton(label: str) -> Element:
    return h("article", {"class": "card"}, h("h3", label), h("strong", {"class": "skeleton"}, "00,000"),
             h("small", {"class": "skeleton"}, "loading the note"))


def dashboard_page(*, scale: float = 1.0, region: str | None = None) -> Document:
    """A dashboard whose panels arrive at different times; two fail on purpose (one
    raises, one times out). `region` (one of REGIONS, else all) filters the orders;
    the Region form re-requests the page with ?region=."""

    def at(ms: int) -> float:
        return ms * scale / 1000

    async def recommendations() -> Element:
        await asyncio.sleep(at(250))
        raise RuntimeError("recommendation backend unavailable")

    async def forecast() -> Element:
        await asyncio.sleep(at(60_000))  # never makes it: timeout_s below settles it
        return h("p", "Sunny")

    def top_customer() -> Suspense:  # nested: starts when the revenue card arrives
        return Suspense(_after(at(300), lambda: "Top customer: Rowan Vale"),
                        h("span", {"class": "skeleton"}, "Top customer: loading"))

    rows = [row for row in _ORDERS if region in (None, row[5])]
    cards = h(
        "div", {"class": "cards"},
        Suspense(_after(at(150), lambda: _card("Visitors", "12,408", "+4% this week")), _card_skeleton("Visitors")),
        Suspense(_after(at(450), lambda: _card("Revenue", "€48,210", top_customer())), _card_skeleton("Revenue")),
        Suspense(_after(at(300), lambda: _card("Orders", "311", "27 awaiting shipment")), _card_skeleton("Orders")),
    )
    columns = ("Order", "Customer", "Items", "Total", "Status", "Region")
    placeholder = ("A-0000", "Loading name", "0 items", "€000.00", "loading", "—")
    orders = h("div", {"class": "scroll"}, h(
        "table",
        h("caption", "Latest orders" if region is None else f"Latest orders in {region}"),
        h("thead", h("tr", [h("th", {"scope": "col"}, c) for c in columns])),
        h("tbody", Suspense(
            _after(at(600), lambda: [h("tr", [h("td", c) for c in row]) for row in rows]
                   or [h("tr", h("td", {"colspan": 6}, "No orders in this region."))]),
            [h("tr", [h("td", h("span", {"class": "skeleton"}, c)) for c in placeholder]) for _ in rows]
            or [h("tr", h("td", {"colspan": 6}, h("span", {"class": "skeleton"}, "Loading orders…")))],
        )),
    ))
    activity = h("ul", {"class": "activity"},
                 Suspense(_after(at(400), lambda: [h("li", item) for item in _ACTIVITY]),
                          [h("li", {"class": "skeleton"}, "Loading one activity") for _ in _ACTIVITY]))

    def option(name: str) -> Element:
        return h("option", {"value": name, "selected": name == region}, name)

    region_form = h(
        "form", {"class": "region", "method": "get", "action": "/dashboard"},
        h("label", {"for": "region"}, "Region"),
        h("select", {"name": "region", "id": "region"}, h("option", {"value": ""}, "All"),
          Suspense(_after(at(200), lambda: [option(r) for r in REGIONS]),
                   [h("option", {"disabled": True}, "loading…")])),
        h("button", "Show"),
    )

    def broken(failure: BoundaryFailure) -> Element:
        return h("p", {"class": "error", "data-digest": failure.digest},
                 f"Recommendations are unavailable right now (reference {failure.digest}).")

    def slow(failure: BoundaryFailure) -> Element:
        return h("p", {"class": "error", "data-digest": failure.digest},
                 f"The forecast took too long (reference {failure.digest}).")

    return Document(
        title="Shop dashboard",
        head=_head(),
        body=[
            _nav(),
            h("h1", "Shop dashboard"),
            region_form,
            cards,
            h("h2", "Orders"), orders,
            h("h2", "Activity"), activity,
            h("h2", "Recommendations"),
            h("div", {"class": "panel"},
              Suspense(recommendations, h("p", {"class": "skeleton"}, "Loading recommendations…"), error=broken)),
            h("h2", "Forecast"),
            h("div", {"class": "panel"},
              Suspense(forecast, h("p", {"class": "skeleton"}, "Loading forecast…"), error=slow,
                       timeout_s=at(1_200))),
        ],
    )
