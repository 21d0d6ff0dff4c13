"""Out-of-order HTML streaming in Chromium: the demo's /suspense and /dashboard pages."""

from __future__ import annotations

from typing import Any

import pytest

from sse_server.demo import create_app

# Records when each section-N element enters the DOM, from the first byte on.
RECORD_SECTIONS = """
window.__sections = [];
new MutationObserver(() => {
  for (const el of document.querySelectorAll('[id^="section-"]')) {
    if (!window.__sections.includes(el.id)) window.__sections.push(el.id);
  }
}).observe(document, {childList: true, subtree: true});
"""


def test_shell_first_then_sections_in_completion_order(page: Any, live_server: Any) -> None:
    """The shell shows fallbacks before any boundary resolves; sections arrive fastest first."""
    st = live_server(create_app)
    page.add_init_script(RECORD_SECTIONS)
    response = page.goto(st.url + "/suspense?delays=2400,1200,1800", wait_until="commit")
    assert response.headers["content-security-policy"].startswith("default-src 'self'; script-src 'nonce-")
    page.wait_for_selector("h1")
    # Painted while every boundary is still pending: three busy fallbacks, no section.
    assert page.evaluate("document.querySelectorAll('[aria-busy=true]').length") == 3
    assert page.evaluate("window.__sections") == []
    page.wait_for_function("() => window.__sections.length === 3", timeout=20_000)
    assert page.evaluate("window.__sections") == ["section-1", "section-2", "section-0"]


def test_final_dom_has_each_section_once_and_nothing_left_over(page: Any, live_server: Any) -> None:
    """After streaming: every section once, in source order, no fallback, template or swap script left."""
    st = live_server(create_app)
    page.goto(st.url + "/suspense?delays=300,100,200,0,50")
    page.wait_for_load_state("load")
    final = page.evaluate(
        """() => ({
            ids: [...document.querySelectorAll('[id^="section-"]')].map(e => e.id),
            busy: document.querySelectorAll('[aria-busy]').length,
            templates: document.querySelectorAll('template').length,
            scripts: document.querySelectorAll('body script').length,
            comments: (() => { const w = document.createTreeWalker(document, NodeFilter.SHOW_COMMENT);
                               let n = 0; while (w.nextNode()) n++; return n; })(),
        })"""
    )
    assert final == {
        "ids": ["section-0", "section-1", "section-2", "section-3", "section-4"],
        "busy": 0, "templates": 0, "scripts": 0, "comments": 0,
    }
    assert page.errors == []


def test_strict_csp_blocks_scripts_without_the_nonce(page: Any, live_server: Any) -> None:
    """The page's policy is enforced (a script without the nonce is refused), yet the swaps run."""
    st = live_server(create_app)
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(st.url + "/suspense?delays=100")
    page.wait_for_selector("#section-0")
    ran = page.evaluate(
        """() => { window.__injected = false; const s = document.createElement('script');
                   s.textContent = 'window.__injected = true'; document.body.append(s);
                   return window.__injected; }"""
    )
    assert ran is False
    assert violations  # the refusal was reported, so the policy is live


def test_dashboard_panels_and_failing_panel_settle(page: Any, live_server: Any) -> None:
    """Every dashboard panel settles: content or the error fallback with a digest, no spinner left."""
    st = live_server(create_app)
    page.goto(st.url + "/dashboard")
    page.wait_for_load_state("load")
    assert page.evaluate("document.querySelectorAll('[aria-busy=true]').length") == 0
    assert page.evaluate("document.querySelectorAll('template').length") == 0
    error_text = page.text_content(".hs-error, .error")
    assert error_text and "Traceback" not in page.content()
    assert [e for e in page.errors if "Content Security Policy" not in e] == []


def scripted_page(inner_s: float) -> Any:
    """Boundaries whose content holds inline scripts: one direct, one nested, one inside a <template>."""
    import asyncio

    from html_stream import Document, Markup, Suspense, h

    def count(name: str) -> Any:
        return h("script", Markup(f"window.__ran=window.__ran||[];window.__ran.push('{name}')"))

    async def inner() -> Any:
        await asyncio.sleep(inner_s)  # 0: inlined into its parent's chunk; else a chunk of its own
        return h("p", {"id": "inner"}, "inner", count("inner"))

    async def outer() -> Any:
        return h("div", {"id": "outer"}, count("outer"), h("template", count("inert")),
                 Suspense(inner, h("p", "…")))

    return Document(title="scripts", body=[h("h1", "scripts"), Suspense(outer, h("p", "…"))])


@pytest.mark.parametrize("strategy", ["stream", "in_order", "buffer"])
@pytest.mark.parametrize("inner_s", [0, 0.3])
def test_scripts_in_boundary_content_run_once_with_the_nonce(
    page: Any, live_server: Any, strategy: str, inner_s: float
) -> None:
    """A script in a boundary's content runs exactly once when it is swapped in, under a strict CSP."""
    from sse_server import App, Request
    from sse_server.html import stream_page

    async def scripts(request: Request) -> Any:
        return await stream_page(request, scripted_page(inner_s), strategy=strategy, csp=True)

    app = App()
    app.add_route("/scripts", scripts)
    st = live_server(app)
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(st.url + "/scripts")
    page.wait_for_load_state("load")
    page.wait_for_selector("#inner")
    assert sorted(page.evaluate("window.__ran")) == ["inner", "outer"]
    assert page.evaluate("document.querySelectorAll('template').length") == 1  # the page's own, inert
    assert violations == [] and [e for e in page.errors if e.startswith("pageerror")] == []
