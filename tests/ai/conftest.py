"""The ``serve`` fixture: the demo app (or a given one) on 127.0.0.1:0 with fast pacing."""

from __future__ import annotations

from typing import Any

import pytest

from sse_server import App, Server
from tests.ai.helpers import LLM_CONFIG, Serve, demo_app, llm_config
from tests.conftest import StartServer


@pytest.fixture
def serve(start_server: StartServer) -> Serve:
    """``await serve(app=None, **config)``: the demo app (or ``app``) on 127.0.0.1:0, stopped after the test."""

    async def start(app: App | None = None, **overrides: Any) -> Server:
        settings = {**LLM_CONFIG, **overrides}
        return await start_server(app or demo_app(llm_config(**overrides)), **settings)

    return start
