# The one table that says what an attribute's value is, and what a str may be there.
# Pure: no asyncio.
#
# A str is data. Some attribute values are not data but code or documents, and a str
# there would run (WHATWG HTML §8.1.8 event handlers, §4.8.5 iframe srcdoc):
# - SCRIPT  on*: the value is JavaScript. Markup only.
# - HTML    srcdoc: the value is a whole HTML document. Markup only.
# - CODE    a URL whose resource runs as this page's script (script src, the SVG
#           script's href) or re-bases every relative URL of the page (base href).
#           Markup only: a str could point the page at anybody's code.
# - URL     a URL that is navigated to or fetched. A str is checked: `javascript:`
#           and `vbscript:` run when followed, and a `data:` document runs script
#           inside a frame (a link can target one), so those become
#           about:invalid#unsafe-url. `data:` images, audio and video (not SVG,
#           which is a document) stay, except on frames, objects and forms (the
#           URL parser drops tab/LF/CR anywhere and C0/space at the start, WHATWG
#           URL §4.4, so the check does too).
# SVG animation elements (SVG 2 §16 / SMIL) set another attribute over time:
# `<animate attributeName="href" values="javascript:...">` turns a link into script.
# Their `values`/`from`/`to`/`by` take the kind of the attribute `attributeName`
# names: a str is checked item by item as a URL, or refused for SCRIPT/HTML/CODE.
from __future__ import annotations

from typing import Literal, TypeAlias

__all__ = [
    "ANIMATION_ELEMENTS",
    "ANIMATION_VALUES",
    "AttrKind",
    "CHECKED_NAMES",
    "UNSAFE_URL",
    "attr_kind",
    "unsafe_url",
]

AttrKind: TypeAlias = Literal["data", "script", "html", "code", "url"]

# Attributes whose value is a URL, on whatever element they stand.
_URL_NAMES = frozenset({
    "href", "src", "action", "formaction", "poster", "cite", "xlink:href", "data",
    "background", "ping", "longdesc", "manifest", "codebase", "icon", "dynsrc", "lowsrc",
    "xml:base", "archive", "classid", "profile",
})
_HTML_NAMES = frozenset({"srcdoc"})
# (element, attribute) pairs whose URL is code run as the page, or the page's base.
_CODE = frozenset({
    ("script", "src"), ("script", "href"), ("script", "xlink:href"), ("base", "href"),
})
# Elements whose URL attributes show a document: `data:` runs script there.
# Every name whose str value needs a look besides on*: a cheap first test for writers.
CHECKED_NAMES = _URL_NAMES | _HTML_NAMES
_FRAMES = frozenset({"iframe", "frame", "object", "embed", "form", "button", "input"})

_MEDIA_DATA = ("data:image/", "data:audio/", "data:video/")

ANIMATION_ELEMENTS = frozenset({"animate", "set", "animatemotion", "animatetransform", "animatecolor"})
ANIMATION_VALUES = frozenset({"values", "from", "to", "by"})

UNSAFE_URL = "about:invalid#unsafe-url"
_URL_IGNORED = str.maketrans("", "", "\t\n\r")  # the URL parser drops these anywhere
_C0_AND_SPACE = "".join(map(chr, range(0x21)))  # ...and strips these at the start


def attr_kind(tag: str, name: str) -> AttrKind:
    """What the value of attribute `name` (lower case) of `tag` (lower case) is.

    >>> attr_kind("a", "onclick"), attr_kind("iframe", "srcdoc"), attr_kind("a", "href")
    ('script', 'html', 'url')
    >>> attr_kind("script", "src"), attr_kind("p", "title")
    ('code', 'data')
    """
    if name.startswith("on"):
        return "script"
    if name in _HTML_NAMES:
        return "html"
    if (tag, name) in _CODE:
        return "code"
    if name in _URL_NAMES:
        return "url"
    return "data"


def unsafe_url(value: str, tag: str) -> bool:
    """True when following `value` from a `tag` element would run script.

    >>> unsafe_url(" Java\\tScript:alert(1)", "a"), unsafe_url("/next?a=1", "a")
    (True, False)
    >>> unsafe_url("data:text/html,<script>", "a"), unsafe_url("data:image/png;base64,AA", "img")
    (True, False)
    """
    scheme = value.translate(_URL_IGNORED).lstrip(_C0_AND_SPACE)[:20].lower()
    if scheme.startswith(("javascript:", "vbscript:")):
        return True
    if not scheme.startswith("data:"):
        return False
    return tag in _FRAMES or not scheme.startswith(_MEDIA_DATA) or scheme.startswith("data:image/svg")
