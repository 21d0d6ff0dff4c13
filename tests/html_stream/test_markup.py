from __future__ import annotations

import json
from types import MappingProxyType

import pytest

from html_stream import Document, Markup, MarkupError, escape_attr, escape_text, h, render_to_string, script_json, tags
from html_stream.markup import Element, flatten, validate_attr_name


async def html(node: object) -> str:
    """`node` rendered as a fragment."""
    return await render_to_string(node)


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ("a<b", "a&lt;b"),
        ("a>b", "a&gt;b"),
        ("Tom & Jerry", "Tom &amp; Jerry"),
        ("&amp;", "&amp;amp;"),
        ('"quoted" \'single\'', '"quoted" \'single\''),
        ("</script><!--", "&lt;/script&gt;&lt;!--"),
        ("line\r\nbreak", "line&#13;\nbreak"),
        ("\u2028`${x}`", "\u2028`${x}`"),
    ],
)
def test_escape_text_table(raw: str, escaped: str) -> None:
    """Text escaping turns &, <, > and CR into references and leaves the rest."""
    assert escape_text(raw) == escaped
    assert isinstance(escape_text(raw), Markup)


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ('say "hi"', "say &quot;hi&quot;"),
        ("it's", "it&#39;s"),
        ("a&b", "a&amp;b"),
        ("<x>", "&lt;x&gt;"),
        ("`${x}`", "`${x}`"),
        ("a\rb", "a&#13;b"),
    ],
)
def test_escape_attr_table(raw: str, escaped: str) -> None:
    """Attribute escaping covers both quotes, &, <, > and CR."""
    assert escape_attr(raw) == escaped


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("</script>", '"\\u003c/script\\u003e"'),
        ("<!--", '"\\u003c!--"'),
        ("a&b", '"a\\u0026b"'),
        ("\u2028\u2029", '"\\u2028\\u2029"'),
        ({"k": [1, None, True]}, '{"k":[1,null,true]}'),
        ("é`${x}`", '"é`${x}`"'),
    ],
)
def test_script_json_table(value: object, expected: str) -> None:
    """script_json escapes <, >, &, U+2028 and U+2029 and stays valid JSON."""
    out = script_json(value)
    assert out == expected
    assert json.loads(out) == value


def test_script_json_refuses_nan() -> None:
    """NaN is not JSON, so script_json refuses it rather than emit invalid data."""
    with pytest.raises(ValueError):
        script_json(float("nan"))


def test_markup_concatenation() -> None:
    """Markup + Markup stays Markup; Markup + str becomes plain str (escaped later)."""
    assert isinstance(Markup("<b>") + Markup("</b>"), Markup)
    joined = Markup("<b>") + "<i>"
    assert type(joined) is str


async def test_strings_escaped_and_markup_trusted() -> None:
    """Strings among children are escaped; Markup and __html__ objects are written as is."""

    class Trusted:
        def __html__(self) -> str:
            return "<em>ok</em>"

    out = await html(h("p", "<b>", Markup("<i>x</i>"), Trusted(), 3, None, False))
    assert out == "<p>&lt;b&gt;<i>x</i><em>ok</em>3</p>"


async def test_attributes() -> None:
    """True gives a bare attribute, False/None drop it, lists join, keywords map _ to -."""
    out = await html(h("input", {"checked": True, "disabled": False, "value": None}, class_=["a", "", "b"], data_n=7))
    assert out == '<input checked class="a b" data-n="7">'


async def test_attribute_value_escaped() -> None:
    """An attribute value cannot close its quotes or the tag."""
    out = await html(h("a", {"title": '"><script>x</script>'}, "t"))
    assert out == '<a title="&quot;&gt;&lt;script&gt;x&lt;/script&gt;">t</a>'


@pytest.mark.parametrize("name", ['a"b', "a b", "a>b", "a/b", "a=b", "", "'x", "1x"])
def test_invalid_attribute_names_refused(name: str) -> None:
    """Names that could end the tag or start a value are refused when the element is built."""
    with pytest.raises(MarkupError):
        h("div", {name: "v"})


@pytest.mark.parametrize("name", ["class", "data-x", "aria-busy", "xlink:href", "viewBox", "@click", "x.y"])
def test_valid_attribute_names(name: str) -> None:
    """Ordinary, data-, aria-, namespaced and camelCase names are accepted."""
    assert validate_attr_name(name) == name


@pytest.mark.parametrize("tag", ["", "1a", "a b", "a>", "x/y"])
def test_invalid_tag_refused(tag: str) -> None:
    """A tag name must be a plain name."""
    with pytest.raises(MarkupError):
        h(tag)


async def test_void_elements() -> None:
    """Void elements are written without an end tag and refuse children."""
    assert await html([h("br"), h("img", {"src": "/a.png", "alt": ""})]) == '<br><img src="/a.png" alt="">'
    with pytest.raises(MarkupError):
        h("br", "child")


async def test_tag_builder() -> None:
    """tags.x(...) is h("x", ...)."""
    out = await html(tags.ul(tags.li("one"), tags.li("two", class_="last"), id="l"))
    assert out == '<ul id="l"><li>one</li><li class="last">two</li></ul>'


def test_children_flattened() -> None:
    """Nested lists and generators flatten when the element is built, so a tree renders twice."""
    el = h("ul", [h("li", str(i)) for i in range(2)], (x for x in ["a"]))
    assert isinstance(el, Element)
    assert len(el.children) == 3
    assert flatten([None, [1, [True, "x"]]]) == ["1", "x"]


def test_h_fast_paths_keep_general_semantics() -> None:
    """A plain dict, another Mapping and keyword attributes all give the same element."""
    attrs = {"class": ["a", "", "b"], "n": 1.5, "off": False, "none": None, "on": True}
    want = (("class", "a b"), ("n", "1.5"), ("on", True))
    assert h("i", attrs).attrs == want
    assert h("i", MappingProxyType(attrs)).attrs == want
    assert h("i", class_=["a", "", "b"], n=1.5, off=False, none=None, on=True).attrs == want
    assert h("i", {"class": "x"}, class_="y").attrs == (("class", "y"),)
    with pytest.raises(MarkupError):
        h("i", {"bad name": "x"})
    with pytest.raises(MarkupError):
        h("bad tag")
    with pytest.raises(MarkupError):
        h("br", "child")


async def test_built_elements_reused_only_for_the_same_input() -> None:
    """An element h() built before is reused for the same call, never for Markup in place of a str."""
    first = h("p", {"class": "c"}, "<b>")
    assert h("p", {"class": "c"}, "<b>") is first
    assert await html(h("p", {"class": "c"}, Markup("<b>"))) == '<p class="c"><b></p>'
    assert await html(first) == '<p class="c">&lt;b&gt;</p>'
    assert await html(h("a", {"href": Markup("/x?a&amp;b")})) == '<a href="/x?a&amp;b"></a>'
    assert await html(h("a", {"href": "/x?a&amp;b"})) == '<a href="/x?a&amp;amp;b"></a>'
    inner = h("i", "x")
    assert h("b", inner).children[0] is inner and h("b", h("i", "y")) != h("b", inner)


@pytest.mark.parametrize("url", ["javascript:alert(1)", " JavaScript:x", "java\tscript:x", "\x01vbscript:x"])
async def test_script_urls_neutralised(url: str) -> None:
    """A javascript: URL in href/src becomes about:invalid instead of running."""
    out = await html(h("a", {"href": url}, "x"))
    assert out == '<a href="about:invalid#unsafe-url">x</a>'


async def test_safe_urls_kept() -> None:
    """Relative, http(s) and mailto URLs are kept (escaped)."""
    out = await html(h("a", {"href": "/p?a=1&b=2"}, h("img", src="https://x/y.png")))
    assert out == '<a href="/p?a=1&amp;b=2"><img src="https://x/y.png"></a>'


async def test_event_handler_needs_markup() -> None:
    """An on* attribute takes trusted Markup only; a str is refused."""
    with pytest.raises(MarkupError):
        await html(h("button", {"onclick": "go()"}))
    assert await html(h("button", {"onclick": Markup("go()")})) == '<button onclick="go()"></button>'


async def test_script_takes_markup_only() -> None:
    """A str inside <script> is refused; Markup and script_json are written raw."""
    with pytest.raises(MarkupError):
        await html(h("script", "alert(1)"))
    out = await html(h("script", Markup("var d=") + script_json({"a": "</script>"})))
    assert out == '<script>var d={"a":"\\u003c/script\\u003e"}</script>'


@pytest.mark.parametrize(
    "node",
    [
        h("script", Markup("x='</script>'")),
        h("script", Markup("x='</SCRIPT '")),
        h("script", Markup("<!--")),
        h("style", "a{}</style><b>"),
        h("title", Markup("</title>")),
    ],
)
async def test_raw_text_cannot_end_early(node: Element) -> None:
    """Raw-text content that would close its element early is refused, even as Markup."""
    with pytest.raises(MarkupError):
        await html(node)


async def test_escapable_raw_text() -> None:
    """<title> and <textarea> escape strings and refuse child elements."""
    assert await html(h("textarea", "</textarea><b>")) == "<textarea>&lt;/textarea&gt;&lt;b&gt;</textarea>"
    with pytest.raises(MarkupError):
        await html(h("title", h("b", "x")))


async def test_leading_newline_kept() -> None:
    """A leading LF in <pre>/<textarea> survives the parser, which drops the first one."""
    assert await html(h("pre", "\nx")) == "<pre>\n\nx</pre>"
    assert await html(h("textarea", "\nx")) == "<textarea>\n\nx</textarea>"


async def test_unrenderable_object() -> None:
    """An object that is not a node is a TypeError naming its type."""
    with pytest.raises(TypeError, match="object"):
        await html(h("p", object()))


async def test_document_shell_order() -> None:
    """The document opens with doctype, charset and title, then the head nodes."""
    out = await render_to_string(Document(title="A & B", head=h("link", rel="stylesheet", href="/a.css"), body="x"))
    assert out.startswith(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><title>A &amp; B</title>'
        '<link rel="stylesheet" href="/a.css"></head><body>x</body></html>'
    )


async def test_document_head_refuses_text() -> None:
    """Text in <head> would be moved into <body> by the parser, so it is refused."""
    with pytest.raises(MarkupError):
        await render_to_string(Document(title="t", head="stray"))
