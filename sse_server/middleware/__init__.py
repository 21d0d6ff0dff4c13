"""Middleware that ships with the server: ``async def mw(request, call_next) -> Response``.

``AccessLog``: one line (text or JSON) per request, written in batches when it has ended.
``Compression``: gzip negotiated from Accept-Encoding, flushed per write on streams.
``Metrics``: counts per request and ``GET /metrics`` in the Prometheus text format.
"""

from __future__ import annotations

from .access_log import AccessLog
from .compression import Compression, GzipFilter
from .metrics import Metrics

__all__ = ["AccessLog", "Compression", "GzipFilter", "Metrics"]
