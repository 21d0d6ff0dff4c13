"""A small DOM for tests: parse our output with html.parser, apply the runtime's swaps
in Python, and compare trees.

html.parser only tokenizes, so the tree is built with a plain stack; that is enough
for the well-formed markup html_stream writes (every non-void element is closed).
`apply_swaps` does what runtime.RUNTIME_JS does, in document order, which is the
order its observer sees the swap markers in.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from html_stream.markup import VOID_ELEMENTS
from html_stream.runtime import MARK_ATTR, RUNTIME_JS

SWAP = re.compile(r"[0-9a-z]+")  # a boundary id in base 36 (runtime.short_id)


class Text:
    __slots__ = ("data", "parent")

    def __init__(self, data: str) -> None:
        self.data = data
        self.parent: El | None = None


class Comment:
    __slots__ = ("data", "parent")

    def __init__(self, data: str) -> None:
        self.data = data
        self.parent: El | None = None


class El:
    __slots__ = ("attrs", "children", "parent", "tag")

    def __init__(self, tag: str, attrs: dict[str, str | None]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.children: list[El | Text | Comment] = []
        self.parent: El | None = None

    def append(self, node: El | Text | Comment) -> None:
        node.parent = self
        self.children.append(node)

    def text(self) -> str:
        return "".join(c.data if isinstance(c, Text) else c.text() if isinstance(c, El) else "" for c in self.children)

    def iter(self, *, into_templates: bool = True):
        for child in self.children:
            yield child
            if isinstance(child, El) and (into_templates or child.tag != "template"):
                yield from child.iter(into_templates=into_templates)

    def find_all(self, tag: str) -> list[El]:
        return [n for n in self.iter() if isinstance(n, El) and n.tag == tag]

    def by_id(self, ident: str) -> El | None:
        return next((n for n in self.iter() if isinstance(n, El) and n.attrs.get("id") == ident), None)


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = El("#document", {})
        self.stack = [self.root]
        self.start_tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = El(tag, dict(attrs))
        self.start_tags.append((tag, el.attrs))
        self.stack[-1].append(el)
        if tag not in VOID_ELEMENTS:
            self.stack.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID_ELEMENTS:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return
        raise AssertionError(f"stray end tag </{tag}>")

    def handle_data(self, data: str) -> None:
        parent = self.stack[-1]
        if parent.children and isinstance(parent.children[-1], Text):
            parent.children[-1].data += data
        else:
            parent.append(Text(data))

    def handle_comment(self, data: str) -> None:
        self.stack[-1].append(Comment(data))


def parse(markup: str | bytes) -> El:
    """The document tree of `markup`; asserts every element was closed."""
    if isinstance(markup, bytes):
        markup = markup.decode("utf-8")
    builder = _Builder()
    builder.feed(markup)
    builder.close()
    assert len(builder.stack) == 1, f"unclosed: {[e.tag for e in builder.stack[1:]]}"
    for el in builder.root.iter():  # WHATWG HTML: a LF right after <pre>/<textarea> is dropped
        if isinstance(el, El) and el.tag in ("pre", "listing", "textarea") and el.children:
            first = el.children[0]
            if isinstance(first, Text) and first.data.startswith("\n"):
                first.data = first.data[1:]
    return builder.root


def start_tags(markup: str | bytes) -> list[tuple[str, dict[str, str | None]]]:
    """Every start tag in `markup` with its (unescaped) attributes, in order."""
    if isinstance(markup, bytes):
        markup = markup.decode("utf-8")
    builder = _Builder()
    builder.feed(markup)
    builder.close()
    return builder.start_tags


def normalize(el: El) -> None:
    """Node.normalize(): merge adjacent text nodes and drop empty ones, recursively."""
    merged: list[El | Text | Comment] = []
    for child in el.children:
        if isinstance(child, Text):
            if not child.data:
                continue
            if merged and isinstance(merged[-1], Text):
                merged[-1].data += child.data
                continue
        merged.append(child)
        if isinstance(child, El):
            normalize(child)
    el.children = merged


def _remove(node: El | Text | Comment) -> None:
    assert node.parent is not None
    node.parent.children.remove(node)
    node.parent = None


def apply_swaps(doc: El) -> list[int]:
    """Run what the runtime would run, in the order its observer sees the swap markers
    (document order: they are appended at the end of <body>); return the swapped ids.

    Asserts the things the runtime relies on: a template right before each marker,
    and a marked fallback in the document for every swap.
    """
    for script in doc.find_all("script"):
        if script.text() == RUNTIME_JS:
            _remove(script)  # the runtime removes itself
    markers = [n for n in doc.iter(into_templates=False) if isinstance(n, Comment) and SWAP.fullmatch(n.data)]
    swapped = []
    for marker in markers:
        parent = marker.parent
        assert parent is not None
        siblings = parent.children
        i = siblings.index(marker)
        template = siblings[i - 1] if i else None
        assert isinstance(template, El) and template.tag == "template", f"no template before swap {marker.data}"
        marked = [n for n in doc.iter(into_templates=False)
                  if isinstance(n, El) and n.attrs.get(MARK_ATTR) == marker.data]
        assert marked, f"placeholder {marker.data} is not in the document"
        target = marked[0].parent
        assert target is not None
        at = target.children.index(marked[0])
        content = template.children
        for node in content:
            node.parent = target
        target.children[at:at] = content
        template.children = []
        for node in (*marked, template, marker):
            _remove(node)
        normalize(target)
        swapped.append(int(marker.data, 36))
    return swapped


def canon(node: El | Text | Comment) -> object:
    """A comparable form of a (normalized) tree."""
    if isinstance(node, Text):
        return node.data
    if isinstance(node, Comment):
        return ("#comment", node.data)
    attrs = tuple(sorted((k, v or "") for k, v in node.attrs.items()))
    return (node.tag, attrs, tuple(canon(c) for c in node.children))


def final_tree(markup: str | bytes) -> El:
    """The DOM a browser ends with: parsed, swapped, normalized."""
    doc = parse(markup)
    apply_swaps(doc)
    normalize(doc)
    return doc
