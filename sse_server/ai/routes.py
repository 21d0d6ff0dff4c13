"""The model's HTTP routes: an OpenAI-compatible API and the chat page's streams.

    app = App()
    install_llm(app, config)    # config.upstream_url switches mock -> relay

Routes:
  POST   /v1/chat/completions      OpenAI chat completions, ``"stream": true`` or not
  GET    /v1/models[/{model}]      the mock model (or the upstream's list)
  GET    /chat/stream?prompt=...   one generation as EventSource events token/done/error
                                   (one-shot: a reconnect with Last-Event-ID gets 204)
  POST   /chat/streams             start a resumable generation and stream it
                                   (``Prefer: respond-async``: 202 with its id instead)
  GET    /chat/streams/{id}        its events after Last-Event-ID (all of them without
                                   one), then live; the response ends after done/error
  POST   /chat/streams/{id}/cancel, DELETE /chat/streams/{id}   stop it

With ``--backplane`` the last three work on every node, whichever node runs the job
(jobs.py).

Each handler is a module-level function that finds the ChatService in
``request.app.state["llm"]``; an APIError anywhere in it becomes OpenAI's error
body with its status (``_api``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..app import App, JSONResponse, Request, Response, StreamingResponse
from ..channels import ChannelLimitError, EngineUnavailableError
from ..sse.streams import come_back_later, last_event_id_of
from ..untrusted import NotAnInteger, OutOfRange, parse_int
from .generation import CompletionStream, NamedEventStream
from .jobs import DEFAULT_JOB_LIMITS, JobLimits
from .mockmodel import MOCK_CREATED, MOCK_MODEL, mock_complete
from .service import ChatService
from .upstream import UpstreamError, UpstreamResponse, path_segment
from .wire import (
    MAX_CHAT_BODY_BYTES,
    MAX_TOKENS,
    MAX_UPSTREAM_ERROR_BYTES,
    APIError,
    ChatRequest,
    completion_id,
    completion_object,
    decode_json_body,
    missing_parameter,
    model_object,
    out_of_range,
    parse_chat_request,
    request_too_large,
    upstream_error,
)

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["STATE_KEY", "install_llm"]

STATE_KEY = "llm"  # app.state[STATE_KEY] is the ChatService
MAX_UPSTREAM_BODY_BYTES = 16 * 1024 * 1024  # a non-streamed upstream answer

Answer = Response | StreamingResponse


def install_llm(app: App, config: Config, jobs: JobLimits = DEFAULT_JOB_LIMITS) -> ChatService:
    """Add the model routes to ``app``, served by a ChatService built from ``config`` now."""
    service = ChatService(config, jobs)
    app.state[STATE_KEY] = service

    async def stop() -> None:
        await service.aclose()

    app.on_shutdown.append(stop)
    for pattern, handler, methods in ROUTES:
        app.add_route(pattern, handler, methods)
    return service


def _service(request: Request) -> ChatService:
    assert request.app is not None  # the connection sets it on every request
    service: ChatService = request.app.state[STATE_KEY]
    return service


def _api(handler: Callable[[Request], Awaitable[Answer]]) -> Callable[[Request], Awaitable[Answer]]:
    """``handler`` with APIError answered as OpenAI's error body."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Answer:
        try:
            return await handler(request)
        except APIError as e:
            return JSONResponse(e.body(), status=e.status, headers=e.headers)
        except (EngineUnavailableError, ChannelLimitError) as e:  # the jobs' engine, with --backplane
            error = APIError(503, str(e), "server_error", None, "engine_unavailable", [("Retry-After", "1")])
            return JSONResponse(error.body(), status=error.status, headers=error.headers)

    return wrapped


async def _read_chat_body(request: Request, service: ChatService) -> tuple[bytes, object]:
    """The body bytes and their JSON, or an APIError in OpenAI's shape."""
    limit = min(MAX_CHAT_BODY_BYTES, service.config.max_body_bytes)
    declared = request.headers.get("content-length")
    if declared is not None:
        # The HTTP parser has validated the header and frames the body by it; this only
        # answers a body we would refuse before reading it (the connection then closes
        # rather than drain it). parse_int: the header may carry thousands of leading zeros.
        try:
            parse_int(declared, 0, limit)
        except OutOfRange:
            raise request_too_large(limit) from None
        except NotAnInteger:
            pass  # a list form ("5, 5") the parser accepted: the length check below decides
    raw = await request.body()
    if len(raw) > limit:
        raise request_too_large(limit)
    return raw, decode_json_body(raw)


# -- /v1 -------------------------------------------------------------------------------------


@_api
async def chat_completions(request: Request) -> Answer:
    service = _service(request)
    raw, body = await _read_chat_body(request, service)
    chat = parse_chat_request(body)
    model = service.check_model(chat.model)
    if service.endpoint is not None:
        return await _relay_completion(service, chat, raw, model)
    completion = mock_complete(chat.messages, chat.max_tokens)
    if chat.stream:
        return CompletionStream(service.mock_starter(completion), model, chat.include_usage)
    service.stats.started += 1
    # Not streamed: the answer arrives when a paced stream would have ended.
    await asyncio.sleep(service.first_token_s + service.interval_s * max(len(completion.tokens) - 1, 0))
    service.stats.finished += 1
    return JSONResponse(completion_object(completion_id(), int(time.time()), model, completion.text,
                                          completion.finish_reason, completion.usage))


async def _relay_completion(service: ChatService, chat: ChatRequest, raw: bytes, model: str) -> Answer:
    # Wait for the upstream's head here, before ours goes out, so its status (401,
    # 404, 429...) reaches the client as the same status and the SDK raises the
    # same exception it would raise talking to the upstream directly.
    try:
        response = await service.open_upstream("/chat/completions", raw)
    except UpstreamError as e:
        raise APIError.from_upstream(e) from None
    if response.status != 200:
        raise upstream_error(response.status, await _read_upstream(response, MAX_UPSTREAM_ERROR_BYTES))
    if chat.stream:
        return CompletionStream(service.relay_starter(raw, response), model, chat.include_usage)
    return Response(await _read_upstream(response, MAX_UPSTREAM_BODY_BYTES), 200, content_type="application/json")


@_api
async def list_models(request: Request) -> Answer:
    service = _service(request)
    if service.endpoint is not None:
        return await _relay_get(service, "/models")
    return JSONResponse({"object": "list", "data": [model_object(MOCK_MODEL, MOCK_CREATED)]})


@_api
async def get_model(request: Request) -> Answer:
    service = _service(request)
    name = request.path_params["model"]
    if service.endpoint is not None:
        try:
            segment = path_segment(name)
        except ValueError:  # "." or "..": no model, and no way up the upstream's tree
            raise APIError(404, f"The model '{name}' does not exist or you do not have access to it.",
                           param="model", code="model_not_found") from None
        return await _relay_get(service, "/models/" + segment)
    service.check_model(name)
    return JSONResponse(model_object(name, MOCK_CREATED))


async def _read_upstream(response: UpstreamResponse, limit: int) -> bytes:
    """The whole upstream body (at most ``limit`` bytes), then the connection closed."""
    try:
        return await response.read_all(limit)
    except UpstreamError as e:
        raise APIError.from_upstream(e) from None
    finally:
        response.close()


async def _relay_get(service: ChatService, path: str) -> Response:
    try:
        response = await service.open_upstream(path)
    except UpstreamError as e:
        raise APIError.from_upstream(e) from None
    body = await _read_upstream(response, MAX_UPSTREAM_BODY_BYTES)
    if response.status != 200:
        raise upstream_error(response.status, body)
    return Response(body, 200, content_type="application/json")


# -- /chat -----------------------------------------------------------------------------------


@_api
async def chat_stream(request: Request) -> Answer:
    service = _service(request)
    if last_event_id_of(request):
        # An EventSource reconnecting to a one-shot answer: 204 makes it stop rather
        # than generate the answer again (resumable answers are /chat/streams).
        return Response(b"", 204)
    prompt = request.query_param("prompt")
    if prompt is None:
        raise missing_parameter("prompt")
    if len(prompt) > MAX_CHAT_BODY_BYTES:
        raise APIError(413, "prompt too long", param="prompt", code="request_too_large")
    max_tokens = request.query_param("max_tokens")
    body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}],
                            "model": request.query_param("model")}
    if max_tokens is not None:
        try:
            body["max_tokens"] = parse_int(max_tokens, 1, MAX_TOKENS)
        except NotAnInteger:
            body["max_tokens"] = max_tokens  # parse_chat_request names the wrong type
        except OutOfRange:
            raise out_of_range("max_tokens", 1, MAX_TOKENS) from None
    chat = parse_chat_request(body, require_model=False)
    model = service.check_model(chat.model)
    return NamedEventStream(service.starter(chat, model))


@_api
async def start_stream(request: Request) -> Answer:
    service = _service(request)
    _, body = await _read_chat_body(request, service)
    chat = parse_chat_request(body, require_model=False)
    client = request.client[0] if request.client else None
    model = service.check_model(chat.model)
    await service.jobs.listen()  # with a backplane: other nodes can cancel what this one runs
    job = service.start_job(chat, model, client)
    location = [("Location", f"/chat/streams/{job.id}"), ("Chat-Stream-Id", job.id)]
    if "respond-async" in (request.headers.get("prefer") or ""):
        return JSONResponse(job.describe(), 202, [*location, ("Preference-Applied", "respond-async")])
    stream = await service.jobs.stream(request, job.id)
    if stream is None:  # a Last-Event-ID past its end on the very request that started it
        return Response(b"", 204, location)
    stream.headers.append(location[0])
    return stream


@_api
async def resume_stream(request: Request) -> Answer:
    job_id = request.path_params["id"]
    try:
        stream = await _service(request).jobs.stream(request, job_id)
    except EngineUnavailableError as e:  # a 503 would stop the page's EventSource for good
        return come_back_later(str(e))
    if stream is None:
        # It had ended and this client saw its last event: 204 stops EventSource
        # reconnecting (WHATWG HTML §9.2), where an empty 200 would loop forever.
        return Response(b"", 204, [("Chat-Stream-Id", job_id)])
    return stream


@_api
async def cancel_stream(request: Request) -> Answer:
    return JSONResponse(await _service(request).jobs.cancel(request.path_params["id"]))


ROUTES: list[tuple[str, Callable[[Request], Awaitable[Answer]], list[str]]] = [
    ("/v1/chat/completions", chat_completions, ["POST"]),
    ("/v1/models", list_models, ["GET"]),
    ("/v1/models/{model}", get_model, ["GET"]),
    ("/chat/stream", chat_stream, ["GET"]),
    ("/chat/streams", start_stream, ["POST"]),
    ("/chat/streams/{id}", resume_stream, ["GET"]),
    ("/chat/streams/{id}", cancel_stream, ["DELETE"]),
    ("/chat/streams/{id}/cancel", cancel_stream, ["POST"]),
]
