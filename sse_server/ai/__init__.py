"""The AI chat: a deterministic mock model behind an OpenAI-compatible API, a relay
of a real upstream, and resumable generations for the chat page.

    from sse_server.ai import install_llm
    install_llm(app, config)    # the routes in routes.py; config.upstream_url: relay

One room per concern, read in this order:
  wire.py         the OpenAI wire format, pure: requests, errors, chunks, objects
  mockmodel.py    the mock model, pure: deterministic text cut into tokens
  upstream.py     a small HTTP/1.1 client for the relayed upstream
  generation.py   runs (mock, relay), the shared Pacer, the streams a run writes
  jobs.py         resumable generations on broker channels, with their limits
  service.py      ChatService: one Config turned into the above
  routes.py       the HTTP handlers and install_llm
"""

from __future__ import annotations

from .generation import Pacer
from .jobs import Job
from .mockmodel import MOCK_MODEL
from .routes import install_llm
from .service import ChatService
from .wire import APIError, ChatRequest, parse_chat_request

__all__ = [
    "MOCK_MODEL",
    "APIError",
    "ChatRequest",
    "ChatService",
    "Job",
    "Pacer",
    "install_llm",
    "parse_chat_request",
]
