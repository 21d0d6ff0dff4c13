"""The chat service: one Config turned into what the routes need at run time.

Built by ``install_llm(app, config)`` before the server starts, so nothing here may
need a running loop at construction: the Pacer (bound to a loop) is made on first
use, and the job table arms its sweep timer with its first job.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .generation import Listener, MockRun, Pacer, RelayRun, Run, Stats
from .jobs import DEFAULT_JOB_LIMITS, Job, JobLimits, JobTable
from .mockmodel import MOCK_MODEL, MockCompletion, mock_complete
from .upstream import Endpoint, UpstreamResponse
from .upstream import request as upstream_request
from .wire import APIError, ChatRequest, dumps, missing_parameter

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["ChatService"]

log = logging.getLogger("sse_server")


class ChatService:
    """Everything the model routes need at run time; ``app.state["llm"]``.

    ``endpoint`` is None for the built-in mock, else the upstream relayed to.
    """

    def __init__(self, config: Config, jobs: JobLimits = DEFAULT_JOB_LIMITS) -> None:
        self.config = config
        self.stats = Stats()
        self._pacer: Pacer | None = None
        self.endpoint = Endpoint.parse(config.upstream_url) if config.upstream_url else None
        self.api_key = os.environ.get(config.upstream_key_env) if self.endpoint else None
        if self.endpoint is not None and not self.api_key:
            log.warning("relaying %s without a key: $%s is not set", self.endpoint.url, config.upstream_key_env)
        self.first_token_s = max(config.model_first_token_ms, 0.0) / 1000
        self.interval_s = 1 / config.model_tokens_per_s if config.model_tokens_per_s > 0 else 0.0
        self.jobs = JobTable(config, jobs)

    @property
    def pacer(self) -> Pacer:
        """The loop's pacer, made on first use (the service is built before the loop runs)."""
        if self._pacer is None:
            self._pacer = Pacer(asyncio.get_running_loop())
        return self._pacer

    def close(self) -> None:
        self.jobs.close()
        if self._pacer is not None:
            self._pacer.close()
            self._pacer = None  # a later start on another loop makes its own

    async def aclose(self) -> None:
        """``close``, then the jobs' last events stored and their engine released."""
        self.close()
        await self.jobs.aclose()

    # -- generation sources --------------------------------------------------------------

    def _headers(self, accept: str) -> list[tuple[str, str]]:
        headers = [("Content-Type", "application/json"), ("Accept", accept),
                   ("Accept-Encoding", "identity"), ("User-Agent", "sse_server")]
        if self.api_key:
            headers.append(("Authorization", f"Bearer {self.api_key}"))
        return headers

    async def open_upstream(self, path: str, body: bytes | None = None) -> UpstreamResponse:
        """POST ``body`` (streamed answer wanted) or GET ``path`` on the upstream."""
        assert self.endpoint is not None
        cfg = self.config
        return await upstream_request(
            self.endpoint, "POST" if body is not None else "GET", path, body=body or b"",
            headers=self._headers("text/event-stream" if body is not None else "application/json"),
            connect_timeout_s=cfg.upstream_connect_timeout_s,
            first_byte_timeout_s=cfg.upstream_first_byte_timeout_s,
            idle_timeout_s=cfg.upstream_idle_timeout_s,
        )

    def check_model(self, model: str | None) -> str:
        if self.endpoint is not None:
            if model is None:
                raise missing_parameter("model")
            return model
        if model is None:
            return MOCK_MODEL
        if model != MOCK_MODEL:
            raise APIError(404, f"The model '{model[:100]}' does not exist or you do not have access to it.",
                           param="model", code="model_not_found")
        return model

    def mock_starter(self, completion: MockCompletion) -> Callable[[Listener], Run]:
        return lambda listener: MockRun(self.pacer, listener, completion, self.first_token_s,
                                        self.interval_s, self.stats)

    def relay_starter(self, body: bytes, response: UpstreamResponse | None = None) -> Callable[[Listener], Run]:
        """Relay ``body``; ``response`` is the upstream's answer to it if already open."""
        return lambda listener: RelayRun(listener, lambda: self.open_upstream("/chat/completions", body),
                                         self.stats, response)

    def starter(self, chat: ChatRequest, model: str) -> Callable[[Listener], Run]:
        """A function that starts the generation for ``chat`` with a listener."""
        if self.endpoint is None:
            return self.mock_starter(mock_complete(chat.messages, chat.max_tokens))
        # Usage asked for always: the named-event and job streams end with it.
        body: dict[str, Any] = {"model": model, "messages": chat.messages, "stream": True,
                                "stream_options": {"include_usage": True}}
        if chat.max_tokens is not None:
            body["max_completion_tokens"] = chat.max_tokens
        return self.relay_starter(dumps(body).encode())

    def start_job(self, chat: ChatRequest, model: str, client: str | None = None) -> Job:
        return self.jobs.start(model, self.starter(chat, model), client)
