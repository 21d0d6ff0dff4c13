"""Middleware: ``async def mw(request, call_next) -> Response`` wrappers of an App.

``access_log``: one line per request, written when the response has ended.
"""

from __future__ import annotations

from .access_log import access_log

__all__ = ["access_log"]
