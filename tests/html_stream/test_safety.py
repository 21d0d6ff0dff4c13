"""A str is data wherever it lands: raw-text elements, foreign content, and attributes
whose value is HTML, script or a URL (html_stream/attributes.py)."""

from __future__ import annotations

import pytest

from html_stream import Markup, MarkupError, h, render_to_string
from html_stream.attributes import UNSAFE_URL, attr_kind, unsafe_url
from html_stream.markup import Element

XSS = "<img src=x onerror=alert(1)>"


async def html(node: object) -> str:
    """`node` rendered as a fragment."""
    return await render_to_string(node)


@pytest.mark.parametrize("root", ["svg", "math"])
async def test_style_in_foreign_content_escapes_a_str(root: str) -> None:
    """Inside <svg>/<math> a <style> holds markup, so its str child is escaped as text."""
    out = await html(h(root, h("style", XSS)))
    assert out == f"<{root}><style>&lt;img src=x onerror=alert(1)&gt;</style></{root}>"


async def test_style_in_html_refuses_a_str() -> None:
    """In HTML a <style> is raw text: only Markup (trusted CSS) may go there."""
    with pytest.raises(MarkupError, match="trusted CSS"):
        await html(h("style", "a{}"))
    assert await html(h("style", Markup("a>b{}"))) == "<style>a>b{}</style>"


@pytest.mark.parametrize(
    "node",
    [
        h("style", Markup("a{}</sty"), Markup("le><b>")),
        h("script", Markup("x='</scr"), Markup("ipt>'")),
        h("script", Markup("<!"), Markup("--")),
        h("textarea", Markup("</text"), "area>"),
        h("title", Markup("</TI"), Markup("TLE>")),
    ],
    ids=["style", "script", "script-comment", "textarea", "title"],
)
async def test_raw_text_is_checked_on_its_joined_children(node: Element) -> None:
    """An end tag split across children is refused: the parser sees one run of text."""
    with pytest.raises(MarkupError, match="end it early"):
        await html(node)


@pytest.mark.parametrize("root", ["svg", "math"])
async def test_script_in_foreign_content_refuses_a_str(root: str) -> None:
    """An SVG/MathML <script> runs like an HTML one, so it takes Markup only."""
    with pytest.raises(MarkupError, match="trusted code"):
        await html(h(root, h("script", "alert(1)")))


@pytest.mark.parametrize("tag", ["p", "div", "img", "table", "br", "span"])
async def test_html_breakout_tags_are_refused_in_foreign_content(tag: str) -> None:
    """A tag that would end the <svg> early is refused rather than written where the parser moves it."""
    with pytest.raises(MarkupError, match="foreignObject"):
        await html(h("svg", h("g", h(tag))))


async def test_integration_points_hold_html() -> None:
    """<foreignObject>, <desc>, SVG <title> and <mtext> children are HTML again: <style> there is raw text."""
    out = await html(h("svg", h("foreignObject", h("p", "x<"))))
    assert out == "<svg><foreignObject><p>x&lt;</p></foreignObject></svg>"
    for node in (h("svg", h("foreignObject", h("style", "a"))), h("math", h("mtext", h("style", "a")))):
        with pytest.raises(MarkupError, match="trusted CSS"):
            await html(node)


@pytest.mark.parametrize(
    ("tag", "name"),
    [("iframe", "srcdoc"), ("button", "onclick"), ("svg", "onload"), ("script", "src"), ("base", "href")],
)
async def test_attributes_that_are_code_or_html_refuse_a_str(tag: str, name: str) -> None:
    """srcdoc, on*, script src and base href take Markup; a str there raises."""
    with pytest.raises(MarkupError, match="takes Markup"):
        await html(h(tag, {name: "x"}))
    assert f' {name}="x"' in await html(h(tag, {name: Markup("x")}))


@pytest.mark.parametrize(
    ("tag", "name", "value"),
    [
        ("a", "href", "javascript:alert(1)"),
        ("a", "href", " \x01Java\tScript:alert(1)"),
        ("a", "xlink:href", "vbscript:x"),
        ("form", "action", "javascript:x"),
        ("button", "formaction", "JAVASCRIPT:x"),
        ("iframe", "src", "data:text/html,<script>alert(1)</script>"),
        ("object", "data", "data:text/html,x"),
        ("a", "href", "data:text/html,<script>alert(1)</script>"),
        ("a", "href", "data:image/svg+xml,<svg onload=alert(1)>"),
        ("iframe", "src", "data:image/png,x"),
        ("embed", "src", "javascript:x"),
        ("video", "poster", "javascript:x"),
    ],
)
async def test_unsafe_urls_are_replaced(tag: str, name: str, value: str) -> None:
    """A str URL that would run script when followed becomes about:invalid."""
    assert f'{name}="{UNSAFE_URL}"' in await html(h(tag, {name: value}))


async def test_safe_urls_are_kept() -> None:
    """Ordinary links, and data: images, are written as given."""
    assert await html(h("a", href="/x?a=1&b=2")) == '<a href="/x?a=1&amp;b=2"></a>'
    assert await html(h("img", src="data:image/png;base64,AA")) == '<img src="data:image/png;base64,AA">'


@pytest.mark.parametrize("element", ["animate", "set", "animateMotion", "animateTransform"])
@pytest.mark.parametrize("target", ["href", "xlink:href", "HREF"])
async def test_svg_animation_of_a_url_checks_its_values(element: str, target: str) -> None:
    """<animate attributeName="href" values="javascript:..."> is neutralised, item by item."""
    node = h("svg", h("a", h(element, {"attributeName": target, "values": "/ok;javascript:alert(1)",
                                         "to": "javascript:x", "from": "/fine"})))
    out = await html(node)
    assert f'values="{UNSAFE_URL}"' in out and f'to="{UNSAFE_URL}"' in out and 'from="/fine"' in out


async def test_svg_animation_of_a_handler_refuses_a_str() -> None:
    """Animating an on* attribute or srcdoc takes Markup values only."""
    for target in ("onclick", "srcdoc"):
        with pytest.raises(MarkupError, match="animates"):
            await html(h("svg", h("set", attributeName=target, to="alert(1)")))


async def test_animation_of_plain_attributes_is_untouched() -> None:
    """Animating a presentation attribute leaves its values alone."""
    out = await html(h("svg", h("animate", attributeName="opacity", values="0;1", to="javascript:")))
    assert 'values="0;1"' in out and 'to="javascript:"' in out


def test_policy_table() -> None:
    """One table decides every attribute's kind."""
    assert [attr_kind("a", n) for n in ("onclick", "srcdoc", "href", "title")] == ["script", "html", "url", "data"]
    assert attr_kind("script", "src") == "code" and attr_kind("img", "src") == "url"
    assert unsafe_url("\njavascript:", "a") and not unsafe_url("https://x/javascript:", "a")
