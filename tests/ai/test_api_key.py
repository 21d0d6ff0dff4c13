"""--api-key-env: the model routes want the key as a Bearer token, as the openai SDKs send it."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from sse_server import Server
from sse_server.ai.mockmodel import MOCK_MODEL, mock_complete
from tests.ai.helpers import MESSAGES, Serve, sdk_stream_text

KEY = "sk-test-0123456789"
ENV = "SSE_TEST_API_KEY"


@pytest.fixture
async def server(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setenv(ENV, KEY)
    return await serve(api_key_env=ENV)


def client_with(server: Server, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=10)


async def test_the_right_key_streams_an_answer(server: Server) -> None:
    """With the configured key the SDK streams and lists models as without a key."""
    async with client_with(server, KEY) as client:
        text, _ = await sdk_stream_text(client, model=MOCK_MODEL, messages=MESSAGES)
        assert [m.id async for m in client.models.list()] == [MOCK_MODEL]
    assert text == mock_complete(MESSAGES).text


async def test_a_wrong_key_is_an_authentication_error(server: Server) -> None:
    """A wrong key gets 401 in OpenAI's error JSON: the SDK raises AuthenticationError with its code."""
    async with client_with(server, KEY + "x") as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.chat.completions.create(model=MOCK_MODEL, messages=MESSAGES, stream=True)
        with pytest.raises(openai.AuthenticationError):
            await client.models.list()
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    assert info.value.body == {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                               "param": None, "code": "invalid_api_key"}


async def test_the_chat_api_needs_the_key_and_the_page_does_not(server: Server) -> None:
    """POST /chat/streams and GET /chat/stream want the key; the /chat page and channels do not."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        body = {"messages": MESSAGES}
        missing = await http.post("/chat/streams", json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "invalid_api_key"
        assert (await http.get("/chat/stream", params={"prompt": "hi"})).status_code == 401
        started = await http.post("/chat/streams", json=body, headers={"Authorization": f"Bearer {KEY}",
                                                                       "Prefer": "respond-async"})
        assert started.status_code == 202
        assert (await http.get("/chat")).status_code == 200
        assert (await http.get("/healthz")).status_code == 200
