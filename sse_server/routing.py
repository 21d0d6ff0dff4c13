"""Path patterns compiled once, matched per request.

    router.add("/channels/{name}/events", handler, ["GET", "POST"])
    router.match("POST", "/channels/news/events")  -> Match(handler, {"name": "news"})

A path that matches under another method is a 405 with ``Allow``; no match is a
404. HEAD is served by the GET handler when no HEAD handler is registered.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

__all__ = ["Match", "NotFound", "MethodNotAllowed", "Router"]

_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)}")


class NotFound(Exception):
    pass


class MethodNotAllowed(Exception):
    def __init__(self, allow: list[str]) -> None:
        super().__init__(", ".join(allow))
        self.allow = allow


@dataclass(slots=True, frozen=True)
class Match:
    handler: Callable[..., Any]
    params: dict[str, str]


@dataclass(slots=True)
class _Route:
    pattern: str
    regex: re.Pattern[str] | None  # None for a literal path, matched by dict lookup
    handlers: dict[str, Callable[..., Any]]


def _compile(pattern: str) -> re.Pattern[str] | None:
    if not pattern.startswith("/"):
        raise ValueError(f"route pattern must start with '/': {pattern!r}")
    if not _PARAM.search(pattern):
        return None
    parts, pos = [], 0
    for m in _PARAM.finditer(pattern):
        parts.append(re.escape(pattern[pos : m.start()]))
        parts.append(f"(?P<{m.group(1)}>[^/]+)")  # a parameter is one path segment
        pos = m.end()
    parts.append(re.escape(pattern[pos:]))
    return re.compile("".join(parts) + r"\Z")


class Router:
    def __init__(self) -> None:
        self._literal: dict[str, _Route] = {}
        self._dynamic: list[_Route] = []
        self._by_pattern: dict[str, _Route] = {}

    def add(self, pattern: str, handler: Callable[..., Any], methods: Iterable[str] = ("GET",)) -> None:
        route = self._by_pattern.get(pattern)
        if route is None:
            regex = _compile(pattern)
            route = _Route(pattern, regex, {})
            self._by_pattern[pattern] = route
            if regex is None:
                self._literal[pattern] = route
            else:
                self._dynamic.append(route)
        for method in methods:
            method = method.upper()
            if method in route.handlers:
                raise ValueError(f"{method} {pattern} is registered twice")
            route.handlers[method] = handler

    def match(self, method: str, path: str) -> Match:
        """Return the handler and decoded path parameters, or raise NotFound/MethodNotAllowed.

        Routes are tried literal first, then in the order added; the first one with a
        handler for the method wins, so a path that several patterns share is only a
        405 when none of them takes the method.
        """
        allow: set[str] = set()
        route = self._literal.get(path)
        if route is not None:
            handler = _handler_for(route, method)
            if handler is not None:
                return Match(handler, {})
            allow.update(route.handlers)
        for route in self._dynamic:
            m = route.regex.match(path)  # type: ignore[union-attr]
            if m is None:
                continue
            handler = _handler_for(route, method)
            if handler is not None:
                return Match(handler, {k: unquote(v) for k, v in m.groupdict().items()})
            allow.update(route.handlers)
        if not allow:
            raise NotFound(path)
        if "GET" in allow:
            allow.add("HEAD")
        raise MethodNotAllowed(sorted(allow))


def _handler_for(route: _Route, method: str) -> Callable[..., Any] | None:
    handler = route.handlers.get(method)
    if handler is None and method == "HEAD":
        handler = route.handlers.get("GET")
    return handler
