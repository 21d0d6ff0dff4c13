# Renders a page to bytes, with boundaries whose content arrives later.
#
# One writer turns a tree into "parts": runs of str and _Boundary slots. Writing a
# Suspense into a slot starts its task, so the shell's boundaries all start when the
# render starts and nested ones when their parent's content is written. A task
# always settles to final parts: its content, or an error fallback after an
# exception, a per-boundary timeout or the page deadline (one absolute loop time
# that every task's timeout is capped at). Strategies differ only in how slots are
# emitted:
# - stream: a slot still pending becomes a placeholder: its fallback, each root
#   element marked with the boundary's id (runtime.py). Settled boundaries whose
#   placeholder is out are flushed in settle order, each as
#   <template>parts</template><!--id-->; those that settled while the previous
#   chunk was out share the next chunk (none waits for another). A boundary that
#   settles before its parent is flushed is inlined into the parent's chunk.
# Static elements arrive already written (Element.html, from h()), so the writer
# appends them; a boundary whose fallback or content is one such element skips the
# writer altogether.
# - in_order: each pending slot is awaited where it stands; each wait is a flush.
# - buffer: as in_order, one chunk at the end (send it with Content-Length).
# The shell is built inside the first __anext__, so its errors raise before any byte.
# Closing the iterator, or cancelling the task that iterates it, cancels and awaits
# every boundary task still running (WHATWG HTML §13.2.6 is why placement.py exists).
from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import time
import traceback
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from types import CoroutineType
from typing import Literal, TypeAlias, cast

from .attributes import ANIMATION_ELEMENTS, ANIMATION_VALUES, CHECKED_NAMES, UNSAFE_URL, attr_kind, unsafe_url
from .markup import (
    _ATTR_KEYS,
    _TAG_KEYS,
    KEPT_TYPES,
    LEADING_NEWLINE,
    RAW_TEXT_ELEMENTS,
    VOID_ELEMENTS,
    AttrValue,
    Element,
    Markup,
    MarkupError,
    Node,
    _escape_text,
    attr_key,
    escape_attr,
    escape_text,
    flatten,
    tag_key,
)
from .placement import (
    NO_WRAPPER_PARENTS,
    ROOTS_ALLOWED,
    TEXT_REFUSED_PARENTS,
    BoundaryPlacementError,
    banned_inside,
    check_roots,
    default_error_node,
)
from .runtime import MARK_PREFIX, RUNTIME_JS, empty_placeholder, short_id, swap_marker

__all__ = [
    "STRATEGIES",
    "BoundaryFailure",
    "BoundaryPlacementError",
    "Document",
    "Strategy",
    "Suspense",
    "render",
    "render_to_string",
]

logger = logging.getLogger("html_stream")

Strategy: TypeAlias = Literal["stream", "in_order", "buffer"]
STRATEGIES: tuple[str, ...] = ("stream", "in_order", "buffer")

ERROR_MESSAGE = "This part of the page could not be loaded."
TIMEOUT_MESSAGE = "This part of the page took too long to load."


@dataclass(frozen=True, slots=True)
class BoundaryFailure:
    """What an error fallback is told about the failure it replaces.

    `digest` is also in the server log next to the traceback. `exception` is there
    to choose a message by type; never show its text to untrusted clients.
    """

    digest: str
    timed_out: bool
    exception: BaseException | None = None


Content: TypeAlias = "Callable[[], Awaitable[Node] | Node] | Awaitable[Node]"
"""A boundary's content: a coroutine function, a function returning nodes or an
awaitable, or an awaitable."""


@dataclass(frozen=True, slots=True, eq=False)
class Suspense:
    """A part of the page that arrives when `content` completes.

        Suspense(load_orders, h("p", "Loading orders…"),
                 error=lambda f: h("p", f"Orders are unavailable (ref {f.digest})"),
                 timeout_s=2.0)

    `content` is a coroutine function (preferred: the page can be rendered again),
    any function returning nodes or an awaitable, or an awaitable. Its nodes may
    hold further Suspense. `fallback` shows until then (stream strategy only) and
    may not hold a boundary. `error` is nodes or a function of BoundaryFailure; it
    replaces the content after an exception or a timeout (default: a short message
    with the digest). `timeout_s` counts from when this boundary's work starts.

    So that the page does not jump when the content arrives, give the fallback the
    content's box: the same elements and classes with placeholder text of the same
    length, or a CSS min-height on a wrapper (html_stream/demo.py does both; an
    inline style= would be refused by a strict CSP, so use classes).
    """

    content: Content
    fallback: Node = None
    error: Node | Callable[[BoundaryFailure], Node] = None
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if not callable(self.content) and not inspect.isawaitable(self.content):
            raise TypeError("Suspense content must be a coroutine function, a function or an awaitable")


@dataclass(frozen=True, slots=True, eq=False)
class Document:
    """A whole HTML document; its shell opens with charset and title.

        Document(title="Orders", head=[h("link", rel="stylesheet", href="/app.css")],
                 body=[h("h1", "Orders"), Suspense(load_orders, spinner)])

    Renders as ``<!doctype html><html lang><head><meta charset="utf-8"><meta
    name="viewport"><title>…</title>{head}{runtime}</head><body>{body}…</body></html>``;
    the runtime script is there only for the stream strategy when a boundary is.
    """

    title: str
    body: Node = None
    head: Node = None
    lang: str = "en"
    body_attrs: Mapping[str, AttrValue] | None = None


_PageValue: TypeAlias = "Document | Node"
Page: TypeAlias = "_PageValue | Callable[[], _PageValue | Awaitable[_PageValue]] | Awaitable[_PageValue]"
"""A Document or any nodes, or a (coroutine) function returning one, or an awaitable of one."""


class _Boundary:
    """One boundary of one render (a plain class: a page starts many)."""

    __slots__ = ("children", "fallback", "flushed", "id", "parent_tag", "parts", "placed", "spec", "task")

    def __init__(self, boundary_id: int, spec: Suspense, parent_tag: str, fallback: str) -> None:
        self.id = boundary_id
        self.spec = spec
        self.parent_tag = parent_tag  # the element the boundary's nodes will be children of
        self.fallback = fallback
        self.task: asyncio.Task[None] | None = None
        self.parts: list[_Part] | None = None  # set once settled
        self.children: list[_Boundary] = []
        self.placed = False  # stream: its placeholder has been emitted
        self.flushed = False  # stream: its parts have been emitted


_Part: TypeAlias = "str | _Boundary"  # what the writer emits: HTML text, or a slot for a boundary
Spawn: TypeAlias = Callable[[Suspense, str], _Boundary]


# Foreign content (WHATWG HTML §13.2.6.5): inside <svg> and <math> the parser builds
# elements of that namespace, and <style>/<script> there hold markup, not raw text.
_FOREIGN_ROOTS = frozenset({"svg", "math"})
# Start tags that end foreign content and reopen HTML where the parser pops to: the
# writer would think it is still inside <svg>, so they are refused there.
_BREAKOUT = frozenset(
    "b big blockquote body br center code dd div dl dt em embed h1 h2 h3 h4 h5 h6 head hr i img"
    " li listing menu meta nobr ol p pre ruby s small span strong strike sub sup table tt u ul var".split()
)
# Elements of foreign content whose children are HTML again (§13.2.6.5 integration points).
_HTML_INTEGRATION = frozenset({"foreignobject", "desc", "title", "mi", "mo", "mn", "ms", "mtext"})
_HTML_ENCODINGS = frozenset({"text/html", "application/xhtml+xml"})

# Parents where check_roots() has rules for a boundary's roots.
_CHECKED_PARENTS = frozenset(ROOTS_ALLOWED) | TEXT_REFUSED_PARENTS


KEPT_TYPES.add(Suspense)

# A fallback element written ahead, split where its marks go: (start of the start
# tag with aria-busy and the mark's name, rest), by its bytes. Pages reuse the same
# fallback elements (h() returns the one it built before), so the split is done once.
# Cleared when full, like h()'s cache.
_FALLBACK_SPLITS: dict[str, tuple[str, str]] = {}
_MAX_FALLBACK_SPLITS = 1024


def _marked_fallback(el: Element, html: str, boundary_id: int) -> str:
    # _marked_html(html, _marks(el, boundary_id)), the same bytes, without redoing the split.
    split = _FALLBACK_SPLITS.get(html)
    if split is None:
        end = html.index(">")
        split = (html[:end] + _marks_prefix(el), html[end:])
        if len(_FALLBACK_SPLITS) >= _MAX_FALLBACK_SPLITS:
            _FALLBACK_SPLITS.clear()
        _FALLBACK_SPLITS[html] = split
    return split[0] + short_id(boundary_id) + split[1]


def _marks(el: Element, boundary_id: int) -> str:
    # What a fallback's root element gets at the end of its start tag: aria-busy
    # (unless the page set it) and the boundary's mark, both unquoted (no quote needed).
    return _marks_prefix(el) + short_id(boundary_id)


def _marks_prefix(el: Element) -> str:
    for name, _ in el.attrs:
        if name.lower() == "aria-busy":
            return MARK_PREFIX
    return " aria-busy=true" + MARK_PREFIX


def _marked_html(html: str, marks: str) -> str:
    # An element's bytes written ahead by h(), with `marks` at the end of its start
    # tag, as the writer's start_tag() puts them: that tag holds no ">" (h() writes
    # ahead only escaped str values, never a Markup value).
    end = html.index(">")
    return html[:end] + marks + html[end:]


class _Writer:
    """Writes nodes into `out` as str runs and boundary slots."""

    __slots__ = ("nonce_attr", "out", "refusal", "spawn")

    def __init__(self, nonce_attr: str, spawn: Spawn | None, refusal: str = "") -> None:
        self.out: list[_Part] = []
        self.nonce_attr = nonce_attr
        self.spawn = spawn
        self.refusal = refusal  # the message when spawn is None

    def text(self) -> str:
        """All output as one str; only for a writer without `spawn`, which holds no slots."""
        assert self.spawn is None
        return "".join(cast("list[str]", self.out))  # node() refuses a boundary when spawn is None

    def root(self, node: Node, parent: str, what: str) -> None:
        roots = flatten(node)
        check_roots(roots, parent, what)
        for child in roots:
            self.node(child, parent, None)

    def fallback(self, node: Node, parent: str, boundary_id: int) -> None:
        # Every root is an element carrying the marks (runtime.py): the single root, a
        # <span> around mixed roots, or, where no wrapper may stand, each root element
        # (blank text between them is dropped: it would stay behind after the swap).
        roots = flatten(node)
        check_roots(roots, parent, "a boundary's fallback", fallback=True)
        if parent in NO_WRAPPER_PARENTS:
            for root in roots:
                if not isinstance(root, Element) and type(root) is not str:  # check_roots refused non-blank str
                    raise MarkupError(f"a boundary's fallback inside <{parent}> must be elements, not {root!r:.40}")
            roots = [root for root in roots if isinstance(root, Element)]
        elif roots and (len(roots) > 1 or not isinstance(roots[0], Element)):
            roots = [Element("span", (), tuple(roots))]
        if not roots:
            self.out.append(empty_placeholder(boundary_id))
        for root in roots:
            assert isinstance(root, Element)
            marks = _marks(root, boundary_id)
            if root.html is not None:
                self.out.append(_marked_html(root.html, marks))
            else:
                self.element(root, None, marks)

    def node(self, node: Node, parent: str, banned: str | None) -> None:
        # Fast paths for the two commonest nodes, by exact type before the checks below.
        if type(node) is str:
            self.out.append(_escape_text(node))
        elif type(node) is Element:
            self.element(node, banned)
        elif type(node) is Suspense:  # a page's boundaries, before the slower checks below
            if banned is not None:
                raise BoundaryPlacementError(f"a boundary cannot stand {banned}")
            if self.spawn is None:
                raise MarkupError(self.refusal)
            self.out.append(self.spawn(node, parent))
        elif isinstance(node, str):
            self.out.append(node if isinstance(node, Markup) else escape_text(node))
        elif isinstance(node, Element):
            self.element(node, banned)
        elif isinstance(node, Suspense):
            if banned is not None:
                raise BoundaryPlacementError(f"a boundary cannot stand {banned}")
            if self.spawn is None:
                raise MarkupError(self.refusal)
            self.out.append(self.spawn(node, parent))
        elif node is None or isinstance(node, bool):
            pass
        elif isinstance(node, (int, float)):
            self.out.append(str(node))
        elif hasattr(node, "__html__"):
            self.out.append(node.__html__())
        elif isinstance(node, Iterable) and not isinstance(node, (bytes, bytearray)):
            for child in node:
                self.node(child, parent, banned)
        else:
            raise TypeError(f"cannot render a {type(node).__name__} as HTML")

    def start_tag(self, el: Element, key: str, marks: str = "") -> None:
        tag = el.tag
        text = "<" + tag
        if key in ANIMATION_ELEMENTS:
            for name, value in _animation_attrs(el, key):
                text += _attribute(name, value, key)
        else:
            for name, value in el.attrs:
                text += _attribute(name, value, key)
        if (
            self.nonce_attr
            and _wants_nonce(el, key)
            and not any(name.lower() == "nonce" for name, _ in el.attrs)
        ):
            text += self.nonce_attr
        self.out.append(text + marks + ">")

    def element(self, el: Element, banned: str | None, marks: str = "") -> None:
        # `marks`: what a fallback's root gets in its start tag (see fallback()).
        if el.html is not None:  # written once by h(): no boundary inside, same bytes in any HTML
            self.out.append(el.html)
            return
        tag = el.tag
        key = _TAG_KEYS.get(tag) or tag_key(tag)
        if key in _FOREIGN_ROOTS:
            self.foreign(el, key, banned or banned_inside(key), marks)
            return
        self.start_tag(el, key, marks)
        if key in VOID_ELEMENTS:
            if el.children:
                raise MarkupError(f"<{tag}> is a void element and takes no children")
            return
        if key in RAW_TEXT_ELEMENTS:
            self.raw_text(el, key)
        else:
            if key == "plaintext":
                raise MarkupError("<plaintext> never ends; it cannot be written")
            children = el.children
            if children:
                if key in LEADING_NEWLINE and isinstance(children[0], str) and children[0][:1] == "\n":
                    self.out.append("\n")
                inner = banned if banned is not None else banned_inside(key)
                out = self.out
                for child in children:
                    if type(child) is str:  # text is most children: spare a node() call
                        out.append(_escape_text(child))
                    else:
                        self.node(child, key, inner)
        self.out.append(f"</{tag}>")

    def foreign(self, el: Element, key: str, banned: str | None, marks: str = "") -> None:
        # An element in SVG or MathML. Its children are foreign too (text escaped,
        # <style> holding text rather than raw CSS) unless it is an HTML integration
        # point, whose children are HTML again.
        if key in _BREAKOUT or (key == "font" and any(n.lower() in ("color", "face", "size") for n, _ in el.attrs)):
            raise MarkupError(f"<{el.tag}> would end the <svg>/<math> it stands in; wrap it in <foreignObject>")
        self.start_tag(el, key, marks)
        html = key in _HTML_INTEGRATION or (
            key == "annotation-xml"
            and any(n.lower() == "encoding" and str(v).lower() in _HTML_ENCODINGS for n, v in el.attrs)
        )
        if key == "script":  # an SVG script runs like an HTML one: trusted code only
            self.raw_text(el, key, foreign=True)
        else:
            out = self.out
            for child in flatten(el.children):
                if type(child) is str:
                    out.append(_escape_text(child))
                elif html:
                    self.node(child, key, banned)
                elif isinstance(child, Element):
                    self.foreign(child, _TAG_KEYS.get(child.tag) or tag_key(child.tag), banned)
                elif isinstance(child, Suspense):
                    raise BoundaryPlacementError(f"a boundary cannot stand {banned or 'in foreign content'}")
                else:
                    self.node(child, key, banned)  # Markup, numbers: the same as in HTML
        self.out.append(f"</{el.tag}>")

    def raw_text(self, el: Element, key: str, *, foreign: bool = False) -> None:
        # §13.1.2.6: raw text may not contain "</tag"; a script may not contain "<!--"
        # either, which would open the "script data escaped" state and let a later
        # "<script" swallow the real end tag. Checked on the joined text: the parser
        # sees one run, however the page split it into children.
        escapable = key in ("textarea", "title")
        texts: list[str] = []
        for child in flatten(el.children):
            if isinstance(child, Suspense):
                raise BoundaryPlacementError(f"a boundary cannot stand inside <{key}> (raw text)")
            if isinstance(child, Element):
                raise MarkupError(f"<{key}> holds text only, not <{child.tag}>")
            if not isinstance(child, str):
                raise TypeError(f"cannot render a {type(child).__name__} inside <{key}>")
            if isinstance(child, Markup):
                texts.append(str(child))
            elif escapable:
                texts.append(_escape_text(child))
            elif key == "script":
                raise MarkupError("<script> takes Markup (trusted code), not str (for data use script_json())")
            else:
                raise MarkupError(f"<{key}> takes Markup (trusted {'CSS' if key == 'style' else 'markup'}), not str")
        text = "".join(texts)
        if not foreign:  # in foreign content the text is markup: Markup is the page's own
            lowered = text.lower()
            if "</" + key in lowered or (key == "script" and "<!--" in text):
                raise MarkupError(f"text inside <{key}> would end it early: {text[:40]!r}")
            if key == "textarea" and text[:1] == "\n":
                self.out.append("\n")
        self.out.append(text)


def _wants_nonce(el: Element, key: str) -> bool:
    if key in ("script", "style"):
        return True
    if key == "link":
        rel = next((v for n, v in el.attrs if n.lower() == "rel"), "")
        return isinstance(rel, str) and "stylesheet" in rel.lower().split()
    return False


def _attribute(name: str, value: object, key: str) -> str:
    # `key` is the element's lower-case tag. The value's kind comes from attributes.py.
    lowered = _ATTR_KEYS.get(name) or attr_key(name)
    if type(value) is not str:  # a plain str (the common case) needs none of these
        if value is True:
            return " " + name
        if value is None or value is False:
            return ""
        if isinstance(value, Suspense):
            raise BoundaryPlacementError(f"a boundary cannot be the value of attribute {name!r} of <{key}>")
        if hasattr(value, "__html__"):
            text = str(value.__html__())
            if '"' in text:
                raise MarkupError(f"Markup value of attribute {name!r} contains '\"'")
            return f' {name}="{text}"'
        if isinstance(value, (int, float)):
            value = str(value)
        elif isinstance(value, (list, tuple)):
            value = " ".join(str(v) for v in value if v)
        if not isinstance(value, str):
            raise TypeError(f"attribute {name!r} of <{key}> cannot be a {type(value).__name__}")
    if lowered[:2] == "on" or lowered in CHECKED_NAMES:
        kind = attr_kind(key, lowered)
        if kind == "url":
            if unsafe_url(value, key):
                value = UNSAFE_URL
        elif kind != "data":
            raise MarkupError(f"attribute {name!r} of <{key}> takes Markup (trusted {_TRUSTED[kind]}), not str")
    return f' {name}="{escape_attr(value)}"'


_TRUSTED = {"script": "script", "html": "HTML", "code": "code URL"}


def _animation_attrs(el: Element, key: str) -> list[tuple[str, AttrValue]]:
    # <animate attributeName="href" values="a;b">: the values take the kind of the
    # attribute they set. A str item that is an unsafe URL empties the whole value.
    target = next((str(v) for n, v in el.attrs if n.lower() == "attributename" and isinstance(v, str)), "")
    kind = attr_kind("", target.strip().lower())
    if kind == "data":
        return list(el.attrs)
    pairs: list[tuple[str, AttrValue]] = []
    for name, value in el.attrs:
        if type(value) is str and name.lower() in ANIMATION_VALUES:
            if kind != "url":
                raise MarkupError(
                    f"attribute {name!r} of <{key}> animates {target!r}, so it takes Markup, not str"
                )
            if any(unsafe_url(item, "") for item in value.split(";")):
                value = UNSAFE_URL
        pairs.append((name, value))
    return pairs


def _compact(parts: list[_Part]) -> list[_Part]:
    out: list[_Part] = []
    run: list[str] = []
    for part in parts:
        if isinstance(part, str):
            run.append(part)
        else:
            if run:
                out.append("".join(run))
                run = []
            out.append(part)
    if run:
        out.append("".join(run))
    return out


def _digest(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc)) + str(time.time_ns())
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:8]


def _encode(parts: list[str]) -> bytes:
    return "".join(parts).encode("utf-8", "replace")  # "replace": lone surrogates


async def _produce(content: Content) -> Node:
    result = content() if callable(content) else content
    if type(result) is CoroutineType or inspect.isawaitable(result):  # a coroutine first: the check is cheap
        node: Node = await result
        return node
    return result


class _Render:
    """The state of one render: boundaries, their tasks, and the stream's queue."""

    def __init__(self, strategy: str, nonce: str | None, deadline_s: float | None) -> None:
        self.strategy = strategy
        self.nonce_attr = "" if nonce is None else f' nonce="{escape_attr(nonce)}"'
        self.loop = asyncio.get_running_loop()
        self.deadline = None if deadline_s is None else self.loop.time() + deadline_s
        self.tasks: list[asyncio.Task[None]] = []  # every boundary's, done or not (bounded by the page)
        self.last_id = 0
        self.ready: deque[_Boundary] = deque()  # stream: settled, placeholder out, not yet flushed
        self.wake: asyncio.Future[None] | None = None  # stream: set while it waits for `ready`
        self.open = 0  # stream: placeholders emitted and not yet flushed
        self.runtime_sent = False

    # -- writing -----------------------------------------------------------------

    def writer(self, siblings: list[_Boundary]) -> _Writer:
        return _Writer(self.nonce_attr, lambda spec, parent: self.spawn(spec, parent, siblings))

    def fixed_writer(self, refusal: str) -> _Writer:
        return _Writer(self.nonce_attr, None, refusal)

    def spawn(self, spec: Suspense, parent: str, siblings: list[_Boundary]) -> _Boundary:
        self.last_id += 1
        boundary_id = self.last_id
        node = spec.fallback
        if type(node) is Element and node.html is not None and parent not in NO_WRAPPER_PARENTS:
            fallback = _marked_fallback(node, node.html, boundary_id)  # written ahead: no writer needed
        else:
            fb = self.fixed_writer("a boundary's fallback cannot hold a boundary")
            fb.fallback(node, parent, boundary_id)
            fallback = fb.text()
        b = _Boundary(boundary_id, spec, parent, fallback)
        task = self.loop.create_task(self.run(b), name=f"html_stream boundary {b.id}")
        self.tasks.append(task)
        b.task = task
        siblings.append(b)
        return b

    async def shell(self, page: Page) -> tuple[list[_Part], str]:
        made = page() if callable(page) else page
        if inspect.isawaitable(made):
            async with asyncio.timeout_at(self.deadline):
                page = await made
        else:
            page = made
        w = self.writer([])
        if not isinstance(page, Document):
            w.root(page, "body", "a page")
            return _compact(w.out), ""
        w.out.append(
            f'<!doctype html><html lang="{escape_attr(page.lang)}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape_text(page.title)}</title>"
        )
        w.root(page.head, "head", "the document head")
        head_end = len(w.out)
        w.start_tag(Element("body", tuple((page.body_attrs or {}).items())), "body")
        w.out.insert(head_end, "</head>")
        w.root(page.body, "body", "the document body")
        if self.strategy == "stream" and self.last_id:
            w.out.insert(head_end, self.runtime_script())
        return _compact(w.out), "</body></html>"

    def runtime_script(self) -> str:
        self.runtime_sent = True
        return f"<script{self.nonce_attr}>{RUNTIME_JS}</script>"

    # -- boundary work -------------------------------------------------------------

    async def run(self, b: _Boundary) -> None:
        when = None if b.spec.timeout_s is None else self.loop.time() + b.spec.timeout_s
        if self.deadline is not None:
            when = self.deadline if when is None else min(when, self.deadline)
        scope = None if when is None else asyncio.timeout_at(when)
        try:
            content = b.spec.content
            if scope is None:  # nothing to time out: skip the scope's bookkeeping
                made = content() if callable(content) else content
                node = await made if type(made) is CoroutineType or inspect.isawaitable(made) else made
            else:
                async with scope:
                    node = await _produce(content)
            parts = self.write_content(node, b)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the render is closing
            parts = self.fail(b, exc, timed_out=False)  # content raised it by itself
        except TimeoutError as exc:
            parts = self.fail(b, exc, timed_out=scope is not None and scope.expired())
        except Exception as exc:
            parts = self.fail(b, exc, timed_out=False)
        b.parts = parts
        if b.placed and not b.flushed:
            self.ready.append(b)
            if self.wake is not None and not self.wake.done():
                self.wake.set_result(None)

    def write_content(self, node: Node, b: _Boundary) -> list[_Part]:
        if type(node) is Element and node.html is not None and b.parent_tag not in _CHECKED_PARENTS:
            return [node.html]  # one element written ahead, where any root may stand
        w = self.writer(b.children)
        try:
            w.root(node, b.parent_tag, "a boundary's content")
        except BaseException:
            for child in b.children:  # a parent's failure cancels its children
                assert child.task is not None
                child.task.cancel()
            b.children.clear()
            raise
        return _compact(w.out)

    def fail(self, b: _Boundary, exc: BaseException, *, timed_out: bool) -> list[_Part]:
        digest = _digest(exc)
        if timed_out:
            logger.warning("html_stream boundary %d timed out [%s]", b.id, digest)
        else:
            logger.error("html_stream boundary %d failed [%s]", b.id, digest, exc_info=exc)
        error = b.spec.error
        if error is not None:
            try:
                node = error(BoundaryFailure(digest, timed_out, exc)) if callable(error) else error
                w = self.fixed_writer("a boundary's error fallback cannot hold a boundary")
                w.root(node, b.parent_tag, "a boundary's error fallback")
                return [w.text()]
            except Exception:
                logger.exception("html_stream boundary %d: its error fallback failed too [%s]", b.id, digest)
        w = self.fixed_writer("")
        w.root(default_error_node(b.parent_tag, TIMEOUT_MESSAGE if timed_out else ERROR_MESSAGE, digest),
               b.parent_tag, "the default error fallback")
        return [w.text()]

    async def close(self) -> None:
        while pending := [t for t in self.tasks if not t.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)

    # -- strategies -----------------------------------------------------------------

    def expand(self, parts: list[_Part], out: list[str]) -> None:
        for part in parts:
            if isinstance(part, str):
                out.append(part)
            elif part.parts is not None:  # settled before its parent was flushed
                part.flushed = True
                self.expand(part.parts, out)
            else:
                part.placed = True
                self.open += 1
                out.append(part.fallback)

    def flush(self, b: _Boundary) -> list[str]:
        assert b.parts is not None
        self.open -= 1
        b.flushed = True
        out = [] if self.runtime_sent else [self.runtime_script()]
        out.append("<template>")
        self.expand(b.parts, out)
        out.append("</template>" + swap_marker(b.id))
        return out

    async def stream(self, shell: list[_Part], tail: str) -> AsyncGenerator[bytes, None]:
        out: list[str] = []
        self.expand(shell, out)
        while self.open:
            yield _encode(out)
            out = []
            if not self.ready:
                self.wake = self.loop.create_future()
                await self.wake
            while self.ready:  # all that settled meanwhile go in one chunk: none waits for another
                out += self.flush(self.ready.popleft())
        out.append(tail)
        yield _encode(out)

    async def in_order(self, shell: list[_Part], tail: str) -> AsyncGenerator[bytes, None]:
        buffered = self.strategy == "buffer"
        out: list[str] = []
        stack = [iter(shell)]
        while stack:
            part = next(stack[-1], None)
            if part is None:
                stack.pop()
            elif isinstance(part, str):
                out.append(part)
            else:
                if part.parts is None:
                    if out and not buffered:
                        yield _encode(out)
                        out = []
                    assert part.task is not None
                    await asyncio.wait((part.task,))
                    if part.parts is None:
                        raise RuntimeError(f"html_stream boundary {part.id} ended without settling")
                stack.append(iter(part.parts))
        out.append(tail)
        yield _encode(out)


def render(
    page: Page,
    *,
    strategy: Strategy | str = "stream",
    nonce: str | None = None,
    deadline_s: float | None = None,
) -> AsyncGenerator[bytes, None]:
    """Render `page`, yielding bytes at each flush point.

        async with contextlib.aclosing(render(page, nonce=nonce)) as chunks:
            async for chunk in chunks:
                await send(chunk)          # one chunk per flush; do not buffer

    The first ``__anext__`` builds the shell: an error there (in the page function,
    or a misplaced boundary) raises before any byte, so answer a real 500; a page
    coroutine still running at the deadline raises TimeoutError there too. After
    that, boundary errors and timeouts render error fallbacks and never raise.
    `deadline_s` settles every boundary still pending that long after the render
    starts. Close the iterator when the client leaves (``aclose()``, or cancel the
    task iterating it): pending boundary tasks are cancelled and awaited.
    Raises ValueError at once for an unknown strategy.

    stream and in_order: send each chunk as it comes (chunked transfer coding, no
    compression that waits to fill a buffer). buffer: one chunk, so Content-Length.
    Content-Type is ``text/html; charset=utf-8``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if deadline_s is not None and deadline_s < 0:
        raise ValueError("deadline_s must be >= 0")
    return _render(page, strategy, nonce, deadline_s)


async def _render(
    page: Page, strategy: str, nonce: str | None, deadline_s: float | None
) -> AsyncGenerator[bytes, None]:
    state = _Render(strategy, nonce, deadline_s)
    try:
        shell, tail = await state.shell(page)
        chunks = state.stream(shell, tail) if strategy == "stream" else state.in_order(shell, tail)
        async with aclosing(chunks):
            async for chunk in chunks:
                yield chunk
    finally:
        await state.close()


async def render_to_string(
    page: Page,
    *,
    strategy: Strategy | str = "buffer",
    nonce: str | None = None,
    deadline_s: float | None = None,
) -> str:
    """The whole rendered page as one str (all chunks joined)."""
    chunks = []
    async with aclosing(render(page, strategy=strategy, nonce=nonce, deadline_s=deadline_s)) as it:
        async for chunk in it:
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8")
