"""The app ``python -m sse_server`` serves by default (routes in ../shared DESIGN contract)."""

from __future__ import annotations

from ..app import App, PlainTextResponse, Request

__all__ = ["create_app"]


def create_app() -> App:
    app = App()

    @app.route("/healthz")
    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    return app
