"""The swap runtime on hand-written documents in Chromium: what it swaps, what it leaves alone."""

from __future__ import annotations

from typing import Any

from html_stream import RUNTIME_JS

# Defined twice; boundary 1 in flow content, 2 in a list (two marked roots), 3 with a
# script in its content, 9 with no placeholder; a page's own template and comment.
DOCUMENT = (
    f"<!doctype html><html><head><script>{RUNTIME_JS}</script><script>{RUNTIME_JS}</script></head><body>"
    '<div id="a">a<p aria-busy=true data-hs=1>wait</p>b</div>'
    '<ul id="l"><li aria-busy=true data-hs=2>x</li><li aria-busy=true data-hs=2>y</li></ul>'
    '<p id="s"><span aria-busy=true data-hs=3>…</span></p>'
    '<template id="own"><i>mine</i></template><!--note-->'
    "<template><b>late</b></template><!--9-->"
    "<template>X<i>y</i></template><!--1-->"
    "<template><li>one</li><li>two</li></template><!--2-->"
    "<template><script>window.ran = (window.ran || 0) + 1</script>ok</template><!--3-->"
    "</body></html>"
)


def test_runtime_swaps_marked_fallbacks_and_leaves_the_rest(page: Any) -> None:
    """Each marked fallback is replaced by its template's content (normalized, scripts run once,
    even with the runtime defined twice); a marker with no fallback and a page's own template
    and comment stay; no runtime script is left."""
    page.set_content(DOCUMENT)
    page.wait_for_load_state("load")
    state = page.evaluate(
        """() => ({
            a: document.getElementById('a').innerHTML,
            aNodes: document.getElementById('a').childNodes.length,
            list: document.getElementById('l').innerHTML,
            s: document.getElementById('s').innerHTML,
            ran: window.ran,
            marked: document.querySelectorAll('[data-hs]').length,
            headScripts: document.head.querySelectorAll('script').length,
            own: document.getElementById('own') !== null,
            tail: [...document.body.childNodes].slice(-4).map(n => n.nodeType == 8 ? '<!--' + n.data + '-->'
                                                          : n.outerHTML),
        })"""
    )
    assert state == {
        "a": "aX<i>y</i>b",
        "aNodes": 3,
        "list": "<li>one</li><li>two</li>",
        "s": "<script>window.ran = (window.ran || 0) + 1</script>ok",
        "ran": 1,
        "marked": 0,
        "headScripts": 0,
        "own": True,
        "tail": ['<template id="own"><i>mine</i></template>', "<!--note-->", "<template><b>late</b></template>",
                 "<!--9-->"],
    }
    assert page.errors == []
