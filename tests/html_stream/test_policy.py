from __future__ import annotations

import pytest

from html_stream import choose_strategy

BROWSER = "ExampleBrowser/126.0 (X11; Linux x86_64) ExampleEngine/537.36"


@pytest.mark.parametrize(
    ("user_agent", "http_version", "strategy"),
    [
        (BROWSER, "HTTP/1.1", "stream"),
        (BROWSER, "1.1", "stream"),
        (BROWSER, "HTTP/2", "stream"),
        (None, "HTTP/1.1", "stream"),
        ("", "HTTP/1.1", "stream"),
        ("simple-client/8.5", "HTTP/1.1", "stream"),
        (BROWSER, "HTTP/1.0", "buffer"),
        (BROWSER, "1.0", "buffer"),
        (BROWSER, "HTTP/0.9", "buffer"),
        (BROWSER, "garbage", "buffer"),
        ("ExampleAgent/5.0 (compatible; ExampleBot/2.1; +https://example.com/bot.html)", "HTTP/1.1", "buffer"),
        ("SomeCrawler/1.0", "HTTP/1.1", "buffer"),
        ("site-spider 3", "HTTP/1.1", "buffer"),
        ("ExampleAgent/5.0 (compatible; LinkPreview/1.0)", "HTTP/1.1", "buffer"),
        ("FeedFetcher/2", "HTTP/1.1", "buffer"),
        ("ExampleAgent/5.0 (compatible; +http://example.org/info)", "HTTP/1.1", "buffer"),
        ("EXAMPLEBOT", "HTTP/1.1", "buffer"),
    ],
)
def test_choose_strategy(user_agent: str | None, http_version: str, strategy: str) -> None:
    """Crawlers, preview fetchers and HTTP/1.0 get the whole page; browsers get the stream."""
    assert choose_strategy(user_agent, http_version) == strategy
