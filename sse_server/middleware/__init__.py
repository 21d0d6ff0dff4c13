"""Middleware that ships with the server: ``async def mw(request, call_next) -> Response``.

``AccessLog``: one line (text or JSON) per request, written in batches when it has ended;
not a layer but a finish hook of the server (``Server.finish_hooks``), as are the metrics' counts.
``Compression``: gzip negotiated from Accept-Encoding, flushed per write on streams.
``Metrics``: counts per request and ``GET /metrics`` in the Prometheus text format.
``auth``: who may publish and subscribe (tokens, or the application's own scheme),
and the API key of the model routes. ``cors``: cross-origin access for listed origins.
"""

from __future__ import annotations

from .access_log import AccessLog
from .auth import ChannelAuth, api_key_required, install_auth, jwt_authenticator
from .compression import Compression, GzipFilter
from .cors import cors
from .metrics import Metrics

__all__ = ["AccessLog", "ChannelAuth", "Compression", "GzipFilter", "Metrics", "api_key_required", "cors",
           "install_auth", "jwt_authenticator"]
