# Which strategy a request gets. Pure.
#
# Streaming out of order needs a client that runs the swap script and reads a
# response as it arrives. Crawlers and link-preview fetchers often do neither: they
# would index the fallbacks, or stop reading at the first bytes. HTTP/1.0 has no
# chunked transfer coding (RFC 9112 §7.1 is HTTP/1.1), so a response of unknown
# length can only end by closing the connection. Both get the whole page at once,
# never a fallback. Everybody else gets `stream`.
from __future__ import annotations

import re

from .render import Strategy

__all__ = ["CRAWLER_USER_AGENT", "choose_strategy"]

# Generic words crawlers put in their User-Agent, plus the "+https://..." contact
# URL that crawlers add and browsers never do. A false positive only costs the
# streaming; the page is the same.
CRAWLER_USER_AGENT = re.compile(
    r"bot|crawl|spider|scrape|preview|fetch|archiv|index|\+https?://", re.IGNORECASE
)


def choose_strategy(user_agent: str | None, http_version: str) -> Strategy:
    """The strategy for one request: "buffer" for crawlers and HTTP/1.0, else "stream".

    >>> choose_strategy("ExampleBot/1.0 (+https://example.com/bot)", "HTTP/1.1")
    'buffer'
    >>> choose_strategy("ExampleBrowser/1.0 (X11; Linux x86_64)", "HTTP/1.0")
    'buffer'
    >>> choose_strategy("ExampleBrowser/1.0 (X11; Linux x86_64)", "HTTP/1.1")
    'stream'

    `http_version` may be given as "HTTP/1.1" or "1.1"; anything below 1.1 (or
    unreadable) buffers.
    """
    version = http_version.strip().upper().removeprefix("HTTP/")
    major, _, minor = version.partition(".")
    try:
        if (int(major), int(minor or 0)) < (1, 1):
            return "buffer"
    except ValueError:
        return "buffer"
    if user_agent and CRAWLER_USER_AGENT.search(user_agent):
        return "buffer"
    return "stream"
