# Markup, escaping, and the element tree pages are written in. Pure: no asyncio.
#
# A str is data and is escaped for where it lands; Markup is the one way to say
# "this is already HTML". There are three contexts (WHATWG HTML §13.1.2-13.1.4):
# - text: `&` and `<` would start a reference or a tag (`>` and CR escaped too, so
#   text survives any later re-quoting and CRLF normalisation);
# - a double-quoted attribute value: `&` and `"` (plus `'`, `<`, `>` for defence);
# - data inside <script>: JSON with `<`, `>`, `&`, U+2028 and U+2029 written as
#   \uXXXX, so neither `</script` nor `<!--` (which would enter the "script data
#   escaped" state) can appear, and the text is a valid JS expression in any engine.
# Elements are frozen, so a tree can be built once and rendered any number of times;
# render.py serialises them and owns the context rules for raw-text elements.
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache, partial
from json import dumps
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias

from .attributes import CHECKED_NAMES, UNSAFE_URL, attr_kind, unsafe_url
from .runtime import MARK_ATTR

if TYPE_CHECKING:  # render.py imports this module; only the type is needed here
    from .render import Suspense

__all__ = [
    "AttrValue",
    "Element",
    "HasHTML",
    "Markup",
    "MarkupError",
    "Node",
    "RAW_TEXT_ELEMENTS",
    "VOID_ELEMENTS",
    "escape_attr",
    "escape_text",
    "flatten",
    "h",
    "script_json",
    "tags",
    "validate_attr_name",
    "validate_tag_name",
]

# WHATWG HTML §13.1.2: elements with no end tag and no contents.
VOID_ELEMENTS = frozenset(
    "area base br col embed hr img input link meta source track wbr".split()
)
# Raw text and escapable raw text (§13.1.2): the tokenizer reads their contents
# as text up to the matching end tag, so child elements cannot exist there.
RAW_TEXT_ELEMENTS = frozenset(
    "script style xmp iframe noembed noframes textarea title".split()
)


class HasHTML(Protocol):
    """An object that renders itself as trusted HTML (Markup, or a template library's type)."""

    def __html__(self) -> str: ...


Node: TypeAlias = "str | Element | Suspense | HasHTML | int | float | None | Iterable[Node]"
"""What a page is made of: str (escaped), Markup, Element, a boundary, numbers,
None/bool (skipped), or any iterable of nodes (flattened)."""

AttrValue: TypeAlias = "str | HasHTML | int | float | bool | None | Sequence[object]"
"""An attribute value: True -> bare, False/None -> omitted, a list or tuple ->
space-joined (falsy items dropped), numbers -> str, Markup -> as is."""


class MarkupError(ValueError):
    """The page's author built markup this package refuses to write (the page's fault)."""


class Markup(str):
    """A str that is already HTML: written as is, never escaped.

    >>> Markup("<b>hi</b>") + Markup("!")
    Markup('<b>hi</b>!')

    Adding a plain str gives a plain str, which is then escaped like any data.
    Objects with an ``__html__()`` method are treated as Markup too.
    """

    __slots__ = ()

    def __html__(self) -> Markup:
        return self

    def __add__(self, other: str) -> str:
        if isinstance(other, Markup):
            return Markup(str.__add__(self, other))
        return str.__add__(self, other)

    def __repr__(self) -> str:
        return f"Markup({str.__repr__(self)})"


def escape_text(value: str) -> Markup:
    """Escape a str for HTML text: ``escape_text("a<b & c") == "a&lt;b &amp; c"``."""
    if hasattr(value, "__html__"):
        return Markup(value.__html__())
    return Markup(_escape_text(value))


def _escape_text(value: str) -> str:
    # escape_text for a plain str, without the Markup wrapper: the writer's hot path.
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\r", "&#13;")  # a raw CR would be normalised to LF by the parser
    )


def escape_attr(value: str) -> str:
    """Escape a str for a double-quoted attribute value."""
    return (
        value.replace("&", "&amp;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\r", "&#13;")
    )


_SCRIPT_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def script_json(value: object) -> Markup:
    """JSON for use inside <script>, as data or as a JS expression.

    >>> script_json({"q": "</script>"})
    Markup('{"q":"\\\\u003c/script\\\\u003e"}')

    Raises ValueError for NaN and infinities (not JSON) and TypeError for what
    json cannot encode.
    """
    text = dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return Markup(text.translate(_SCRIPT_ESCAPES))


# Stricter than the HTML tokenizer (which allows almost anything but whitespace,
# `/`, `>`, `=` and quotes) so a name can never end the tag or start a value.
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9\-]*\Z")
_ATTR_NAME = re.compile(r"[A-Za-z_:@][A-Za-z0-9_:.\-@]*\Z")


@lru_cache(maxsize=1024)
def validate_attr_name(name: str) -> str:
    """Return `name` if it is a safe attribute name, else raise MarkupError."""
    if not isinstance(name, str) or not _ATTR_NAME.match(name):
        raise MarkupError(f"invalid attribute name {name!r}")
    if name.lower() == MARK_ATTR:  # the runtime removes what carries it (runtime.py)
        raise MarkupError(f"attribute {name!r} is reserved: the stream strategy marks fallbacks with it")
    return name


@lru_cache(maxsize=512)
def validate_tag_name(tag: str) -> str:
    """Return `tag` if it is a safe tag name, else raise MarkupError."""
    if not isinstance(tag, str) or not _TAG_NAME.match(tag):
        raise MarkupError(f"invalid tag name {tag!r}")
    return tag


# Valid names mapped to their lower-case form. h() and the writer meet the same few
# names on every render, and a dict lookup is cheaper than validate_*() and lower();
# callers try `_TAG_KEYS.get(tag) or tag_key(tag)` so a known name costs no call.
# Capped so a page that uses untrusted names cannot grow them without limit.
_MAX_KNOWN_NAMES = 1024
_TAG_KEYS: dict[str, str] = {}
_ATTR_KEYS: dict[str, str] = {}


def _known_key(name: str, known: dict[str, str], validate: Callable[[str], str]) -> str:
    key = known.get(name)
    if key is None:
        key = validate(name).lower()
        if len(known) < _MAX_KNOWN_NAMES:
            known[name] = key
    return key


def tag_key(tag: str) -> str:
    """The lower-case form of `tag`; raises MarkupError unless it is a safe tag name."""
    return _known_key(tag, _TAG_KEYS, validate_tag_name)


def attr_key(name: str) -> str:
    """The lower-case form of `name`; raises MarkupError unless it is a safe attribute name."""
    return _known_key(name, _ATTR_KEYS, validate_attr_name)


class Element:
    """One HTML element. Build it with `h()` or `tags`, which validate and flatten.

    Immutable by contract (the fields are Final), so a tree can be built once and
    rendered any number of times. `html` is the element already written out, when
    h() could do it once for every render (see _compile); the writer then appends
    it instead of walking the tree. A plain class with slots: a frozen dataclass
    costs four times as much to build, and pages build thousands.
    """

    __slots__ = ("attrs", "children", "html", "tag")

    def __init__(
        self,
        tag: str,
        attrs: tuple[tuple[str, AttrValue], ...] = (),
        children: tuple[Node, ...] = (),
        html: str | None = None,
    ) -> None:
        self.tag: Final = tag
        self.attrs: Final = attrs
        self.children: Final = children
        self.html: Final = html

    def __eq__(self, other: object) -> bool:
        if type(other) is not Element:
            return NotImplemented
        return (self.tag, self.attrs, self.children) == (other.tag, other.attrs, other.children)

    def __hash__(self) -> int:
        return hash((self.tag, self.attrs, self.children))

    def __repr__(self) -> str:
        return f"Element(tag={self.tag!r}, attrs={self.attrs!r}, children={self.children!r})"


# Elements h() never writes ahead: their bytes depend on where they stand or on the
# render (raw text is checked on joined text; <svg>/<math> switch the parser to
# foreign content; <script>, <style> and stylesheet <link> get the render's nonce).
_NOT_COMPILED = RAW_TEXT_ELEMENTS | {"svg", "math", "plaintext", "link", "script", "style"}
LEADING_NEWLINE = frozenset({"pre", "listing", "textarea"})  # the parser drops one LF after the start tag


def _start_attr(key: str, name: str, value: AttrValue) -> str | None:
    # One attribute as render.py's writer writes it in a start tag, or None when
    # only the writer may write it (Markup values, and values it refuses).
    if type(value) is str:
        lowered = _ATTR_KEYS.get(name) or attr_key(name)
        if lowered[:2] == "on" or lowered in CHECKED_NAMES:
            kind = attr_kind(key, lowered)
            if kind != "url":
                return None
            if unsafe_url(value, key):
                value = UNSAFE_URL
        return f' {name}="{escape_attr(value)}"'
    if value is True:
        return " " + name
    return None


def _write_ahead(parts: list[str], nodes: list[Node], first: int) -> list[str] | None:
    # Adds what the writer would write for nodes[first:] to `parts`, or None if one
    # of them needs the writer (a boundary, an element not written ahead, ...).
    for child in nodes[first:]:
        cls = type(child)
        if cls is str:
            parts.append(_escape_text(child))  # type: ignore[arg-type]
        elif cls is Element:
            written = child.html  # type: ignore[union-attr]
            if written is None:
                return None
            parts.append(written)
        elif cls is Markup:
            parts.append(child)  # type: ignore[arg-type]
        else:
            return None
    return parts


# Attribute names already validated whose value is plain data on any element (not
# on*, not a URL, not HTML): h() writes them with no further look. Capped like _TAG_KEYS.
_PLAIN_NAMES: set[str] = set()
# Escaped attribute values seen before (short ones only): class names and the like
# repeat on every render. Capped, so untrusted values cannot grow it without limit.
_ESCAPED_ATTRS: dict[str, str] = {}
_MAX_ESCAPED = 4096


def _escaped_attr(value: str) -> str:
    escaped = _ESCAPED_ATTRS.get(value)
    if escaped is None:
        escaped = escape_attr(value)
        if len(value) <= 64 and len(_ESCAPED_ATTRS) < _MAX_ESCAPED:
            _ESCAPED_ATTRS[value] = escaped
    return escaped


def _plain_name(name: str) -> bool:
    lowered = _ATTR_KEYS.get(name) or attr_key(name)  # validates
    plain = lowered[:2] != "on" and lowered not in CHECKED_NAMES
    if plain and len(_PLAIN_NAMES) < _MAX_KNOWN_NAMES:
        _PLAIN_NAMES.add(name)
    return plain


def flatten(node: Node) -> list[Node]:
    """The node as a flat list: iterables expanded, None and bools dropped."""
    out: list[Node] = []
    _flatten_into(node, out)
    return out


# Node types flatten() keeps as they are, found by exact type before the slow
# checks below; render.py adds Suspense (it imports this module, not the reverse).
KEPT_TYPES: set[type] = set()


def _flatten_into(node: Node, out: list[Node]) -> None:
    # Fast paths for the commonest nodes, by exact type: the ABC checks below are slow.
    cls = type(node)
    if cls is str or cls is Element or cls is Markup or cls in KEPT_TYPES:
        out.append(node)
        return
    if type(node) is list or type(node) is tuple:  # type() again: mypy narrows on it, not on `cls`
        for child in node:
            _flatten_into(child, out)
        return
    if node is None or isinstance(node, bool):
        return
    if isinstance(node, (str, Element)):
        out.append(node)
    elif isinstance(node, (int, float)):
        out.append(str(node))
    elif hasattr(node, "__html__"):
        out.append(Markup(node.__html__()))
    elif isinstance(node, (bytes, bytearray)):
        raise TypeError("cannot render bytes; decode them to str first")
    elif isinstance(node, Iterable):
        for child in node:
            _flatten_into(child, out)
    else:
        out.append(node)  # a boundary, or something render() will refuse


def _attr_key(key: str) -> str:
    # Python keywords: class_="x" -> class, aria_busy="true" -> aria-busy.
    return key.rstrip("_").replace("_", "-")


def _attr_value(value: AttrValue) -> AttrValue:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value if v)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


# Elements h() built before, by what it was given: pages build the same small
# elements on every render (a card's heading, a skeleton), and an element is
# immutable, so the one built last time is returned. The key holds the tag, the
# attributes (str values only: Markup compares equal to its str) and the children:
# a str as itself, an Element by id() (it stays alive in the cached element's
# children, so the id cannot be reused while the entry exists); anything else, a
# long text or keyword attributes, is built without the cache. Cleared when full,
# so a page whose elements never repeat costs one dict insert per element.
_BUILT: dict[tuple[object, ...], Element] = {}
_MAX_BUILT = 2048
_MAX_BUILT_TEXT = 200  # longer texts are page data rather than a repeated label


def h(tag: str, attrs: Mapping[str, AttrValue] | Node = None, /, *children: Node, **kw: AttrValue) -> Element:
    """Build an element; strings among the children are escaped unless Markup.

        h("a", {"href": "/x?a=1&b=2"}, "Tom & Jerry")     # <a href="/x?a=1&amp;b=2">Tom &amp; Jerry</a>
        h("li", "text", class_="done", data_id=7)         # <li class="done" data-id="7">text</li>
        h("input", {"checked": True, "disabled": False})  # <input checked>

    Attribute values: True -> bare attribute, False/None -> omitted, a list ->
    space-joined (falsy items dropped), numbers -> str. Void elements take no
    children. Raises MarkupError for invalid tag or attribute names.
    """
    if kw or type(tag) is not str:
        return _build(tag, attrs, children, kw)
    given = type(attrs)
    items: tuple[tuple[str, AttrValue], ...] | None = None
    if given is dict:
        for value in attrs.values():  # type: ignore[union-attr]  # a dict, by exact type
            if type(value) is not str:
                return _build(tag, attrs, children, kw)
        items = tuple(attrs.items())  # type: ignore[union-attr]
    elif given is str or given is Element:
        children = (attrs, *children)  # text or a child in the attrs place
        attrs = None
    elif attrs is not None:
        return _build(tag, attrs, children, kw)
    elements = False
    for child in children:
        cls = type(child)
        if cls is Element:
            elements = True
        elif cls is not str or len(child) > _MAX_BUILT_TEXT:  # type: ignore[arg-type]
            return _build(tag, attrs, children, kw)
    # Text only: the children tuple is the key as it is (a str hashes by value).
    key: tuple[object, ...] = (
        (tag, items, *[id(c) if type(c) is Element else c for c in children]) if elements else (tag, items, children)
    )
    el = _BUILT.get(key)
    if el is None:
        el = _build(tag, attrs, children, kw)
        if len(_BUILT) >= _MAX_BUILT:
            _BUILT.clear()
        _BUILT[key] = el
    return el


def _build(
    tag: str, attrs: Mapping[str, AttrValue] | Node, children: tuple[Node, ...], kw: dict[str, AttrValue]
) -> Element:
    key = _TAG_KEYS.get(tag) or tag_key(tag)
    # Exact types first: the Mapping ABC check is slow, and a dict, a str or an
    # Element (text or a child in the attrs place) are what pages pass.
    if attrs is not None:
        given = type(attrs)
        if given is not dict and (given is str or given is Element or not isinstance(attrs, Mapping)):
            children = (attrs, *children)
            attrs = None
    mapping: Mapping[str, AttrValue] | None = attrs  # type: ignore[assignment]  # narrowed above, by exact type
    # `start` is the start tag written once here (None: the writer will write it).
    start: str | None = None if key in _NOT_COMPILED else "<" + tag
    pairs: tuple[tuple[str, AttrValue], ...] = ()
    if kw or (mapping and type(mapping) is not dict):
        merged: dict[str, AttrValue] = {}
        if mapping:
            for name, value in mapping.items():
                merged[validate_attr_name(name)] = _attr_value(value)
        for name, value in kw.items():
            merged[validate_attr_name(_attr_key(name))] = _attr_value(value)
        pairs = tuple((k, v) for k, v in merged.items() if v is not None and v is not False)
        for name, value in pairs:
            if start is None:
                break
            more = _start_attr(key, name, value)
            start = None if more is None else start + more
    elif mapping:
        # Fast path: a plain dict's keys are already unique, so no merge dict is
        # needed, and a str value under a known plain name needs no conversion or check.
        kept: list[tuple[str, AttrValue]] = []
        for name, value in mapping.items():
            if type(value) is str and (name in _PLAIN_NAMES or _plain_name(name)):
                kept.append((name, value))
                if start is not None:
                    start += f' {name}="{_ESCAPED_ATTRS.get(value) or _escaped_attr(value)}"'
                continue
            if name not in _ATTR_KEYS:
                attr_key(name)
            if type(value) is not str:
                value = _attr_value(value)
                if value is None or value is False:
                    continue
            kept.append((name, value))
            if start is not None:
                more = _start_attr(key, name, value)
                start = None if more is None else start + more
        pairs = tuple(kept)
    flat: tuple[Node, ...] = ()
    if children:
        # Flatten and write ahead in one pass; `parts` is None once a child needs the writer.
        out: list[Node] = []
        parts: list[str] | None = None if start is None else [start, ">"]
        for child in children:  # one level by hand: most children are str or Element
            cls = type(child)
            if cls is str:
                out.append(child)
                if parts is not None:
                    parts.append(_escape_text(child))  # type: ignore[arg-type]
            elif cls is Element:
                out.append(child)
                if parts is not None:
                    written = child.html  # type: ignore[union-attr]
                    if written is None:
                        parts = None
                    else:
                        parts.append(written)
            else:
                first = len(out)
                _flatten_into(child, out)
                if parts is not None:
                    parts = _write_ahead(parts, out, first)
        flat = tuple(out)
        if key in VOID_ELEMENTS:
            raise MarkupError(f"<{tag}> is a void element and takes no children")
        html = None
        if parts is not None:
            if flat and key in LEADING_NEWLINE and isinstance(flat[0], str) and flat[0][:1] == "\n":
                parts.insert(2, "\n")
            parts.append(f"</{tag}>")
            html = "".join(parts)
    elif start is None:
        html = None
    else:
        html = start + ">" if key in VOID_ELEMENTS else f"{start}></{tag}>"
    return Element(tag, pairs, flat, html)


class _Tags:
    """`tags.div(...)` is `h("div", ...)`; a trailing `_` is dropped and `_` becomes `-`.

        from html_stream import tags as t
        t.ul(t.li("one"), t.li("two"), class_="plain")
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Callable[..., Element]:
        if name.startswith("__"):
            raise AttributeError(name)
        return partial(h, _attr_key(name))


tags = _Tags()
