"""Routing: literal and parameter paths, percent-decoding, 404 versus 405 with Allow."""

from __future__ import annotations

from typing import Any

import pytest

from sse_server.routing import MethodNotAllowed, NotFound, Router


def handler(name: str) -> Any:
    """A distinguishable stand-in for a request handler."""

    async def h(request: Any) -> str:
        return name

    h.__name__ = name
    return h


@pytest.fixture
def router() -> Router:
    r = Router()
    r.add("/", handler("index"))
    r.add("/healthz", handler("healthz"), ["GET"])
    r.add("/channels/{name}/events", handler("subscribe"), ["GET"])
    r.add("/channels/{name}/events", handler("publish"), ["POST"])
    r.add("/users/{uid}/posts/{pid}", handler("post"), ["GET", "DELETE"])
    r.add("/upload", handler("upload"), ["POST", "PUT"])
    r.add("/head-only", handler("head_only"), ["HEAD"])
    r.add("/both", handler("both_get"), ["GET"])
    r.add("/both", handler("both_head"), ["HEAD"])
    return r


@pytest.mark.parametrize(
    ("method", "path", "name", "params"),
    [
        ("GET", "/", "index", {}),
        ("GET", "/healthz", "healthz", {}),
        ("GET", "/channels/news/events", "subscribe", {"name": "news"}),
        ("POST", "/channels/news/events", "publish", {"name": "news"}),
        ("GET", "/users/7/posts/42", "post", {"uid": "7", "pid": "42"}),
        ("DELETE", "/users/7/posts/42", "post", {"uid": "7", "pid": "42"}),
        ("PUT", "/upload", "upload", {}),
        ("HEAD", "/head-only", "head_only", {}),
        ("HEAD", "/both", "both_head", {}),
        ("GET", "/both", "both_get", {}),
    ],
)
def test_match(router: Router, method: str, path: str, name: str, params: dict[str, str]) -> None:
    """A registered method and path give its handler and the path parameters."""
    match = router.match(method, path)
    assert match.handler.__name__ == name
    assert match.params == params


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("/channels/a%20b/events", "a b"),
        ("/channels/a%2Fb/events", "a/b"),
        ("/channels/caf%C3%A9/events", "café"),
        ("/channels/100%25/events", "100%"),
        ("/channels/a+b/events", "a+b"),
        ("/channels/%zz/events", "%zz"),
    ],
)
def test_params_are_percent_decoded(router: Router, path: str, value: str) -> None:
    """Parameters are percent-decoded after matching; '+' stays a plus in a path."""
    assert router.match("GET", path).params == {"name": value}


def test_head_is_served_by_get(router: Router) -> None:
    """HEAD falls back to the GET handler for literal and parameter routes."""
    assert router.match("HEAD", "/healthz").handler.__name__ == "healthz"
    match = router.match("HEAD", "/channels/x/events")
    assert match.handler.__name__ == "subscribe" and match.params == {"name": "x"}


@pytest.mark.parametrize(
    "path",
    ["/nope", "/healthz/", "/channels/news", "/channels//events", "/channels/a/b/events",
     "/channels/news/events/", "/users/1/posts", "", "*", "/HEALTHZ"],
)
def test_unknown_path_is_404(router: Router, path: str) -> None:
    """A path no pattern matches is NotFound whatever the method."""
    for method in ("GET", "POST", "HEAD"):
        with pytest.raises(NotFound):
            router.match(method, path)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/healthz", ["GET", "HEAD"]),
        ("DELETE", "/channels/n/events", ["GET", "HEAD", "POST"]),
        ("POST", "/users/1/posts/2", ["DELETE", "GET", "HEAD"]),
        ("GET", "/upload", ["POST", "PUT"]),
        ("HEAD", "/upload", ["POST", "PUT"]),
        ("GET", "/head-only", ["HEAD"]),
        ("POST", "/both", ["GET", "HEAD"]),
    ],
)
def test_wrong_method_is_405_with_allow(router: Router, method: str, path: str, allow: list[str]) -> None:
    """A matching path under another method is MethodNotAllowed listing every allowed method."""
    with pytest.raises(MethodNotAllowed) as info:
        router.match(method, path)
    assert info.value.allow == allow


def test_literal_route_does_not_shadow_a_pattern_for_other_methods() -> None:
    """A literal path that only takes POST still lets a matching pattern serve GET."""
    r = Router()
    r.add("/channels/{name}/events", handler("subscribe"), ["GET"])
    r.add("/channels/all/events", handler("publish_all"), ["POST"])
    assert r.match("POST", "/channels/all/events").handler.__name__ == "publish_all"
    match = r.match("GET", "/channels/all/events")
    assert match.handler.__name__ == "subscribe" and match.params == {"name": "all"}
    with pytest.raises(MethodNotAllowed) as info:
        r.match("PUT", "/channels/all/events")
    assert info.value.allow == ["GET", "HEAD", "POST"]


def test_patterns_are_tried_in_order_and_allow_is_merged() -> None:
    """The first pattern that takes the method wins; Allow merges every matching pattern."""
    r = Router()
    r.add("/a/{x}", handler("first"), ["GET"])
    r.add("/{y}/b", handler("second"), ["POST"])
    r.add("/{z}/{w}", handler("third"), ["GET"])
    assert r.match("GET", "/a/b").handler.__name__ == "first"
    assert r.match("POST", "/a/b").params == {"y": "a"}
    assert r.match("GET", "/c/d").handler.__name__ == "third"
    with pytest.raises(MethodNotAllowed) as info:
        r.match("DELETE", "/a/b")
    assert info.value.allow == ["GET", "HEAD", "POST"]


def test_a_parameter_is_one_segment_and_regex_characters_are_literal() -> None:
    """A parameter never spans '/', and '.' or '+' in a pattern match only themselves."""
    r = Router()
    r.add("/files/{name}.txt", handler("txt"))
    r.add("/v1+/{id}", handler("plus"))
    assert r.match("GET", "/files/report.txt").params == {"name": "report"}
    with pytest.raises(NotFound):
        r.match("GET", "/files/reportxtxt")
    with pytest.raises(NotFound):
        r.match("GET", "/files/a/b.txt")
    assert r.match("GET", "/v1+/9").params == {"id": "9"}
    with pytest.raises(NotFound):
        r.match("GET", "/v11/9")


def test_methods_are_upper_cased_and_duplicates_refused() -> None:
    """Methods are registered upper-case; the same method twice on a pattern is an error."""
    r = Router()
    r.add("/x", handler("x"), ["get"])
    assert r.match("GET", "/x").handler.__name__ == "x"
    with pytest.raises(ValueError):
        r.add("/x", handler("y"), ["GET"])


def test_pattern_must_start_with_slash() -> None:
    """A pattern without a leading '/' is refused when added."""
    with pytest.raises(ValueError):
        Router().add("healthz", handler("h"))
