# Where a boundary may stand, and what may stand at the root of its content,
# fallback and error fallback there. Pure tables and small helpers for render.py.
#
# The same bytes must build the same tree whether the HTML parser meets them in
# place (in_order, buffer) or inside a <template> that is swapped in later (stream).
# A template parses its content as if it had no ancestors (WHATWG HTML §13.2.6.4.18
# "in template"), so the two agree only when the content is what the parent's
# insertion mode keeps anyway:
# - table parts: text is foster-parented out of the table and <tr> directly in a
#   <table> gets an implied <tbody>, so roots must be exactly the children the
#   parser keeps (a <tbody>, rows, cells, ...), and non-blank text is refused;
# - <select>/<optgroup>: the parser drops most tags, so roots must be options.
# Marks (runtime.py): where a <span> may stand, the fallback is its single root
# element (which gets aria-busy and the boundary's mark) or is wrapped in one
# <span aria-busy=true data-hs=id>. Inside lists, tables, selects, <head> and the
# like, no wrapper is valid, so each root element of the fallback carries both
# itself, and text is refused there. An empty fallback is an empty marked
# <template>, which every insertion mode keeps in place.
# A boundary cannot stand where there is no node to swap: raw text (script, style,
# textarea, title, ...), an attribute value, <template> contents (not in the
# document), <noscript> (raw text when scripts run), or SVG/MathML (a template
# would parse the content as HTML, not in the foreign namespace).
from __future__ import annotations

from collections.abc import Sequence

from .markup import AttrValue, Element, MarkupError, h

__all__ = [
    "BoundaryPlacementError",
    "NO_WRAPPER_PARENTS",
    "ROOTS_ALLOWED",
    "TEXT_REFUSED_PARENTS",
    "banned_inside",
    "check_roots",
    "default_error_node",
]


class BoundaryPlacementError(MarkupError):
    """A boundary stands where the parser could not swap it in (the page's fault)."""


_ANYWHERE = frozenset({"script", "template"})  # kept by every table and select mode

ROOTS_ALLOWED: dict[str, frozenset[str]] = {
    "table": frozenset({"caption", "colgroup", "thead", "tbody", "tfoot"}),
    "thead": frozenset({"tr"}),
    "tbody": frozenset({"tr"}),
    "tfoot": frozenset({"tr"}),
    "tr": frozenset({"td", "th"}),
    "colgroup": frozenset({"col"}),
    "select": frozenset({"option", "optgroup", "hr"}),
    "optgroup": frozenset({"option"}),
}
# Text here is moved elsewhere by the parser (foster-parented out of a table,
# out of <head> into <body>), so it would not stay where the page put it.
TEXT_REFUSED_PARENTS = frozenset({"table", "thead", "tbody", "tfoot", "tr", "colgroup", "head"})
NO_WRAPPER_PARENTS = frozenset(ROOTS_ALLOWED) | frozenset(
    {"ul", "ol", "menu", "dl", "html", "head", "hgroup", "picture", "audio", "video"}
)

_BANNED = {
    "template": "inside <template> (its contents are not part of the document)",
    "noscript": "inside <noscript> (it is raw text when scripts run)",
    "svg": "inside <svg> (put the whole <svg> inside the boundary instead)",
    "math": "inside <math> (put the whole <math> inside the boundary instead)",
}


def banned_inside(tag: str) -> str | None:
    """Why no boundary may stand anywhere inside `tag`, or None if one may."""
    return _BANNED.get(tag)


def check_roots(roots: Sequence[object], parent: str, what: str, *, fallback: bool = False) -> None:
    """Raise MarkupError unless `roots` parse the same in place and in a template.

    `what` names the part for the message ("a boundary's content"); a fallback
    must also be elements wherever no wrapper may carry its aria-busy.
    """
    allowed = ROOTS_ALLOWED.get(parent)
    no_text = parent in TEXT_REFUSED_PARENTS or (fallback and parent in NO_WRAPPER_PARENTS)
    if allowed is None and not no_text:
        return
    for node in roots:
        if isinstance(node, Element):
            tag = node.tag.lower()
            if allowed is not None and tag not in allowed and tag not in _ANYWHERE:
                want = ", ".join(f"<{t}>" for t in sorted(allowed))
                raise MarkupError(
                    f"{what} inside <{parent}> must have {want} at its root, not <{node.tag}>"
                )
        elif type(node) is str and no_text and node.strip(" \t\n\f\r"):
            raise MarkupError(f"{what} inside <{parent}> must be elements, not text ({node[:30]!r})")


def default_error_node(parent: str, message: str, digest: str) -> Element | None:
    """The built-in error fallback for a boundary inside `parent`, or None where
    nothing visible may stand (e.g. <head>, <colgroup>)."""
    data: dict[str, AttrValue] = {"class": "hs-error", "data-digest": digest}
    text = f"{message} (reference {digest})"
    alert = h("span", {"role": "alert"}, text)
    if parent == "table":
        return h("tbody", data, h("tr", h("td", alert)))
    if parent in ("thead", "tbody", "tfoot"):
        return h("tr", data, h("td", alert))
    if parent == "tr":
        return h("td", data, alert)
    if parent in ("select", "optgroup"):
        return h("option", data | {"disabled": True}, text)
    if parent in ("ul", "ol", "menu"):
        return h("li", data, alert)
    if parent == "dl":
        return h("dd", data, alert)
    if parent == "hgroup":
        return h("p", data, alert)
    if parent in NO_WRAPPER_PARENTS:
        return None
    return h("span", data | {"role": "alert"}, text)
