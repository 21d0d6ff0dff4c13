"""PageUser: loads the out-of-order streamed page GET /suspense?delays=...

Reports (request type PAGE):
  first byte   request sent until the first byte of the response
  shell        request sent until the body holds "</head>" (the shell a browser
               can paint while the slow sections are still pending)
  whole page   request sent until the last chunk; the failures of a load land here
A page that is not streamed (no chunked body), or that lacks one of its sections
(id="section-{i}" for every delay), is a failure.
"""

from __future__ import annotations

import time

from locust import task

from .common import PAGE, RequestUser, ms_since, report
from .wire import HTTPFailure

__all__ = ["PageUser"]

SHELL_MARK = b"</head>"
MAX_PAGE_BYTES = 8 * 1024 * 1024  # a broken server cannot make a user buffer more


class PageFailure(Exception):
    """The page arrived, but not as a complete streamed page."""


class PageUser(RequestUser):
    weight = 1
    think_option = "page_think_s"

    def on_start(self) -> None:
        super().on_start()
        options = self.environment.parsed_options
        delays = (options.page_delays if options else "") or "300,100,200"
        self.target = f"/suspense?delays={delays}"
        count = len([d for d in delays.split(",") if d.strip()])
        self.sections = [b'id="section-%d"' % i for i in range(count)]

    @task
    def load_page(self) -> None:
        env = self.environment
        start = time.perf_counter()
        size = 0
        try:
            start, head = self.conn.exchange("GET", self.target, [("Accept", "text/html")])
            first_byte_s = head.first_byte_s
            if head.status != 200:
                raise PageFailure(f"status {head.status}")
            if not head.chunked:
                raise PageFailure("page not streamed (no chunked body)")
            parts: list[bytes] = []
            shell_s = 0.0
            tail = b""
            for piece in self.conn.body(head):
                parts.append(piece)
                size += len(piece)
                if size > MAX_PAGE_BYTES:
                    raise PageFailure(f"page over {MAX_PAGE_BYTES} bytes")
                if not shell_s:
                    if SHELL_MARK in tail + piece:
                        shell_s = time.perf_counter()
                    tail = (tail + piece)[1 - len(SHELL_MARK) :]  # a mark split across reads
            end = time.perf_counter()
            page = b"".join(parts)
            if not shell_s:
                raise PageFailure("page without </head>")
            missing = sum(1 for mark in self.sections if mark not in page)
            if missing:
                raise PageFailure("page without all its sections")
        except (OSError, HTTPFailure, PageFailure) as e:
            self.conn.close()
            report(env, PAGE, "whole page", ms_since(start), size, exception=e)
            return
        if not self.conn.reusable:
            self.conn.close()
        report(env, PAGE, "first byte", ms_since(start, first_byte_s))
        report(env, PAGE, "shell", ms_since(start, shell_s))
        report(env, PAGE, "whole page", ms_since(start, end), size)
