# The inline script that swaps streamed boundaries into their placeholders.
#
# The stream strategy marks each root element of a boundary's fallback with the
# boundary's id (an empty fallback is an empty <template>, which every insertion
# mode keeps in place):
#     <section class="card" aria-busy=true data-hs=7>…</section>
# and, when the boundary completes, appends at the end of <body>
#     <template>content</template><!--7-->
# The runtime, once in <head>, watches the document with a MutationObserver. The
# parser inserts the comment only after the </template> before it, so when the
# observer sees a comment "7" right after a <template>, that template is complete:
# it inserts a copy of the template's content (document.importNode) before the
# first element marked 7, removes every element marked 7, normalises the parent's
# text nodes (so the DOM equals the one parsed in place), and removes the template
# and the comment. No script per boundary: the swap costs 8 bytes, not a <script>.
# Scripts in a boundary's content run once, when it is swapped in: the parser never
# runs a script inside a <template>, and a copy made by importNode is not
# parser-inserted, so it runs as it is inserted (WHATWG HTML §4.12.1.1 "prepare the
# script element"), with the nonce the writer gave it (cloning keeps the nonce).
# in_order and buffer run them where the parser meets them.
# Marks are attributes, so a fallback element the parser moves (say a <div> that
# closes an open <p>) is still found and removed; querySelectorAll does not look
# into <template> contents, so a nested boundary's fallback is found only once its
# parent's content is in the document. `data-hs` is reserved (h() refuses it).
# Mutation records arrive in insertion order, so a parent swaps before its child.
#
# Ids are written in base 36 (1..z, then 10..zz): a page's first 35 boundaries
# take one character in each of the two places an id appears.
#
# Properties the tests rely on: at most 400 bytes; defining it twice is harmless
# (the second observer finds the comment already detached, with no template
# before it); a comment with no marked element is left alone (so is a page's own
# <template> followed by a comment that is not an id); no framework; the defining
# <script> removes itself, so the final DOM has no trace of the runtime.
# Readable form:
#     (d => {
#       new MutationObserver((records, r, n, t, f, p, e) => {
#         for (r of records) for (n of r.addedNodes)
#           if (n.nodeType == 8 /* Comment */ && (t = n.previousSibling)?.content
#               && /^\w+$/.test(e = n.data)
#               && (p = (f = d.querySelectorAll(`[data-hs='${e}']`))[0]?.parentNode)) {
#             f[0].before(d.importNode(t.content, true));
#             for (e of [...f, t, n]) e.remove();
#             p.normalize();
#           }
#       }).observe(d, {childList: true, subtree: true});
#       d.currentScript.remove();
#     })(document);
from __future__ import annotations

__all__ = ["MARK_ATTR", "MARK_PREFIX", "RUNTIME_JS", "empty_placeholder", "mark", "short_id", "swap_marker"]

MARK_ATTR = "data-hs"
MARK_PREFIX = f" {MARK_ATTR}="  # the value is unquoted: letters and digits need no quotes

RUNTIME_JS = (
    "(d=>{new MutationObserver((a,r,n,t,f,p,e)=>{for(r of a)for(n of r.addedNodes)"
    "if(n.nodeType==8&&(t=n.previousSibling)?.content&&/^\\w+$/.test(e=n.data)"
    "&&(p=(f=d.querySelectorAll(`[data-hs='${e}']`))[0]?.parentNode)){"
    "f[0].before(d.importNode(t.content,1));for(e of[...f,t,n])e.remove();p.normalize()}})"
    ".observe(d,{childList:1,subtree:1});d.currentScript.remove()})(document)"
)

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(number: int) -> str:
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = _DIGITS[digit] + text
        if not number:
            return text


_SHORT_IDS = tuple(_base36(i) for i in range(36 * 36))  # every id of one or two characters


def short_id(boundary_id: int) -> str:
    """`boundary_id` in base 36, as marks and swap markers write it: ``short_id(36) == "10"``."""
    return _SHORT_IDS[boundary_id] if boundary_id < len(_SHORT_IDS) else _base36(boundary_id)


def mark(boundary_id: int) -> str:
    """What goes in the start tag of each root element of boundary `boundary_id`'s fallback."""
    return MARK_PREFIX + short_id(boundary_id)


def empty_placeholder(boundary_id: int) -> str:
    """The placeholder of a boundary whose fallback has no element."""
    return f"<template{mark(boundary_id)}></template>"


def swap_marker(boundary_id: int) -> str:
    """The comment after a boundary's <template> that swaps it in: ``<!--7-->``."""
    return f"<!--{short_id(boundary_id)}-->"
