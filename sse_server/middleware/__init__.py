"""Middleware: ``async def mw(request, call_next) -> Response`` wrappers of an App.

``access_log``: one line per request, written when the response has ended.
``auth``: who may publish and subscribe (tokens, or the application's own scheme),
and the API key of the model routes. ``cors``: cross-origin access for listed origins.
"""

from __future__ import annotations

from .access_log import access_log
from .auth import ChannelAuth, api_key_required, install_auth, jwt_authenticator
from .cors import cors

__all__ = ["ChannelAuth", "access_log", "api_key_required", "cors", "install_auth", "jwt_authenticator"]
