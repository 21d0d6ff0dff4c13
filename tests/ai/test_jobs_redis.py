"""Resumable generations across nodes: two real servers on one real redis-server share
every job: resume, cancel and the idle rule work from the node that does not run it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sse_server import App, Server
from sse_server.ai import install_llm
from sse_server.ai.jobs import JOB_KEY_PREFIX, JobLimits
from sse_server.ai.mockmodel import mock_complete
from sse_server.demo import create_app
from sse_server.sse import Event, EventStreamParser
from tests.ai.helpers import LLM_CONFIG, MESSAGES, llm_config, read_events, service, tokens_text
from tests.conftest import StartServer
from tests.processes import start_cli
from tests.redis_server import RedisServer, require_redis
from tests.waiting import eventually

pytestmark = pytest.mark.redis

TEXT = mock_complete(MESSAGES).text


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    require_redis()
    async with RedisServer(tmp_path) as server:
        yield server


async def two_nodes(start_server: StartServer, redis: RedisServer, limits: JobLimits | None = None,
                    **config: Any) -> tuple[Server, Server]:
    """Nodes A and B on one Redis: the demo app, or only the model routes with ``limits``."""
    settings = {**LLM_CONFIG, "backplane": redis.url, "backplane_timeout_s": 0.5, **config}

    def app(_: Any) -> App:
        if limits is None:
            return create_app(llm_config(**settings))
        only_llm = App()
        install_llm(only_llm, llm_config(**settings), limits)
        return only_llm

    return await start_server(app, **settings), await start_server(app, **settings)


async def start_job(http: httpx.AsyncClient) -> str:
    started = await http.post("/chat/streams", json={"messages": MESSAGES}, headers={"Prefer": "respond-async"})
    assert started.status_code == 202, started.text
    job_id: str = started.json()["id"]
    return job_id


async def read_until(response: httpx.Response, stop: Any) -> list[Event]:
    """Events until ``stop(events)`` holds (then the response is left), or its end."""
    parser, events = EventStreamParser(), []
    async for piece in response.aiter_bytes():
        events += parser.feed(piece)
        if stop(events):
            break
    return events


def seqs(events: list[Event]) -> list[int]:
    return [int(e.id.rsplit("-", 1)[1]) for e in events]


async def test_a_job_started_on_a_resumes_on_b_with_every_token_once(
        start_server: StartServer, redis_server: RedisServer) -> None:
    """Cut on A mid-generation, resumed on B with Last-Event-ID: every token once, in order,
    then done; B replays a finished job whole, answers 204 after its last event, 404 for an unknown id."""
    a, b = await two_nodes(start_server, redis_server, model_tokens_per_s=150)
    async with httpx.AsyncClient(base_url=a.url) as on_a, httpx.AsyncClient(base_url=b.url) as on_b:
        job_id = await start_job(on_a)
        async with on_a.stream("GET", f"/chat/streams/{job_id}") as response:
            first = await read_until(response, lambda ev: sum(e.event == "token" for e in ev) >= 3)
        assert service(a).jobs[job_id].running and job_id not in service(b).jobs  # mid-generation, owned by A
        async with on_b.stream("GET", f"/chat/streams/{job_id}", headers={"Last-Event-ID": first[-1].id}) as rest:
            assert rest.status_code == 200 and rest.headers["chat-stream-id"] == job_id
            later = await read_events(rest)
        assert sum(e.event == "token" for e in later) > 0  # B followed it live, not only from history
        events = first + later
        assert events[0].event == "start" and events[-1].event == "done"
        assert json.loads(events[-1].data)["finish_reason"] == "stop"
        assert tokens_text(events) == TEXT  # every token exactly once, in order
        assert seqs(events) == sorted(set(seqs(events)))
        async with on_b.stream("GET", f"/chat/streams/{job_id}") as whole:
            assert [e.id for e in await read_events(whole)] == [e.id for e in events]
        over = await on_b.get(f"/chat/streams/{job_id}", headers={"Last-Event-ID": events[-1].id})
        assert over.status_code == 204
        for unknown in ("gen_AAAAAAAAAAAAAAAA", "nope"):
            missing = await on_b.get(f"/chat/streams/{unknown}")
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "stream_not_found"
            assert (await on_b.post(f"/chat/streams/{unknown}/cancel")).status_code == 404


async def test_a_burst_of_tokens_is_stored_in_order(start_server: StartServer, redis_server: RedisServer) -> None:
    """Unpaced (every token in one go), a job's events reach Redis in the order generated: A's
    stream and B's replay both read start, every token in order, then done; a publish to
    /channels/gen:<id>/events does not reach the job."""
    a, b = await two_nodes(start_server, redis_server, model_tokens_per_s=0)
    async with httpx.AsyncClient(base_url=a.url) as on_a, httpx.AsyncClient(base_url=b.url) as on_b:
        async with on_a.stream("POST", "/chat/streams", json={"messages": MESSAGES}) as response:
            live = await read_events(response)
            job_id = response.headers["chat-stream-id"]
        # The channels' routes cannot reach a job: a publish there lands in another namespace.
        assert (await on_b.post(f"/channels/gen:{job_id}/events", content="injected")).status_code == 202
        async with on_b.stream("GET", f"/chat/streams/{job_id}") as replayed:
            replay = await read_events(replayed)
    redis = await redis_server.client()
    try:
        assert await redis.exists(f"{JOB_KEY_PREFIX}h:gen:{job_id}") and await redis.xlen(f"sse:h:gen:{job_id}") == 1
    finally:
        await redis.aclose()
    for events in (live, replay):
        assert [e.event for e in events] == ["start", *["token"] * (len(events) - 2), "done"]
        assert tokens_text(events) == TEXT and seqs(events) == sorted(set(seqs(events)))
    assert [e.id for e in live] == [e.id for e in replay]


async def test_cancel_on_b_stops_the_generation_on_a(start_server: StartServer, redis_server: RedisServer) -> None:
    """The stop button's request on B stops A's run: B answers the final state, A's watcher
    gets done (cancelled), and nothing is generated after it."""
    a, b = await two_nodes(start_server, redis_server, model_tokens_per_s=20)
    async with httpx.AsyncClient(base_url=a.url) as on_a, httpx.AsyncClient(base_url=b.url) as on_b:
        job_id = await start_job(on_a)
        job = service(a).jobs[job_id]
        async with on_a.stream("GET", f"/chat/streams/{job_id}") as response:
            parser, events, stopped = EventStreamParser(), [], None
            async for piece in response.aiter_bytes():
                events += parser.feed(piece)
                if stopped is None and any(e.event == "token" for e in events):
                    assert job.running
                    stopped = await on_b.delete(f"/chat/streams/{job_id}")
                    assert stopped.status_code == 200, stopped.text
                    assert (stopped.json()["id"], stopped.json()["state"]) == (job_id, "cancelled")
                    assert job.state == "cancelled"  # A has stopped by the time B answers
        assert events[-1].event == "done"
        assert json.loads(events[-1].data) == {"finish_reason": "cancelled", "usage": None}
        assert len(tokens_text(events)) < len(TEXT)
        assert job.run is not None
        await asyncio.wait_for(job.run.done, 5)  # the run has ended: nothing more can come
        assert service(a).stats.cancelled == 1
        again = await on_b.post(f"/chat/streams/{job_id}/cancel")  # already over: its final state
        assert again.status_code == 200 and again.json()["state"] == "cancelled"
    redis = await redis_server.client()
    try:
        history = await redis.xrange(f"{JOB_KEY_PREFIX}h:gen:{job_id}")
    finally:
        await redis.aclose()
    names = [fields[b"e"].split(b"\n")[1] for _, fields in history]
    assert names[-1] == b"event: done" and names.count(b"event: done") == 1  # no token after the cancel's done
    assert b"event: done" not in names[:-1]


async def test_a_job_watched_only_on_b_is_not_idle_cancelled(
        start_server: StartServer, redis_server: RedisServer) -> None:
    """The idle rule counts watchers on every node: a job followed on B runs to its end on A,
    while a job nobody follows anywhere is cancelled."""
    a, b = await two_nodes(start_server, redis_server, JobLimits(idle_cancel_s=0.3, retention_s=30),
                           model_tokens_per_s=80)
    async with httpx.AsyncClient(base_url=a.url) as on_a, httpx.AsyncClient(base_url=b.url) as on_b:
        watched, unwatched = await start_job(on_a), await start_job(on_a)
        async with on_b.stream("GET", f"/chat/streams/{watched}") as response:
            events = await read_events(response)
        assert json.loads(events[-1].data)["finish_reason"] == "stop" and tokens_text(events) == TEXT
        assert service(a).jobs[watched].state == "done"
        await eventually(lambda: service(a).jobs[unwatched].state == "cancelled", 3, "the unwatched job cancelled")


async def test_a_new_subscription_while_redis_is_stalled_is_told_to_retry(
        start_server: StartServer, redis_server: RedisServer) -> None:
    """With Redis stopped, GET /channels/{name}/events and a job resume answer 200 with only a
    retry hint and end (EventSource reconnects; a 503 would stop it for good); publishes are 503
    + Retry-After; once Redis is back the same Last-Event-ID gets what was published since."""
    a, b = await two_nodes(start_server, redis_server, backplane_timeout_s=0.25)
    async with httpx.AsyncClient(base_url=a.url, timeout=5) as on_a, httpx.AsyncClient(base_url=b.url) as on_b:
        before = (await on_a.post("/channels/c/events", content="before")).json()["id"]
        job_id = await start_job(on_a)
        redis_server.pause()
        try:
            for path in ("/channels/c/events", f"/chat/streams/{job_id}"):
                async with asyncio.timeout(3):
                    stalled = await on_b.get(path, headers={"Last-Event-ID": before})
                assert stalled.status_code == 200
                assert stalled.headers["content-type"].startswith("text/event-stream")
                lines = stalled.text.split("\n")
                retry = [int(line[7:]) for line in lines if line.startswith("retry: ")]
                assert len(retry) == 1 and 1000 <= retry[0] <= 2000
                assert not [line for line in lines if line.startswith(("data:", "id:", "event:"))]
                assert any(line.startswith(": unavailable") for line in lines)
            refused = await on_a.post("/channels/c/events", content="refused")
            assert refused.status_code == 503 and refused.headers["retry-after"]
        finally:
            redis_server.resume()
        async with asyncio.timeout(10):
            while (after := await on_a.post("/channels/c/events", content="after")).status_code != 202:
                assert after.status_code == 503
        got: list[Event] = []
        async with asyncio.timeout(10):
            while not got:  # as EventSource does: reconnect after each hint until served
                async with on_b.stream("GET", "/channels/c/events", headers={"Last-Event-ID": before}) as resumed:
                    assert resumed.status_code == 200 and "sse-reset" not in resumed.headers
                    got = await read_until(resumed, lambda ev: any(e.data == "after" for e in ev))
        # The refused publish was not acknowledged: it may have been stored once Redis
        # ran again (a 503 says "unknown", never "stored"), so it may come first, once.
        assert [(e.id, e.data) for e in got][-1] == (after.json()["id"], "after")
        assert [e.data for e in got[:-1]] in ([], ["refused"]) and seqs(got) == sorted(set(seqs(got)))


async def test_two_cli_nodes_resume_and_cancel_each_others_jobs(tmp_path: Path, redis_server: RedisServer) -> None:
    """`python -m sse_server --backplane` twice: a job started on one is followed on the other
    from Last-Event-ID and stopped there; both nodes then stop cleanly on SIGTERM."""
    args = ("--backplane", redis_server.url, "--model-tokens-per-s", "30")
    a, b = await start_cli(tmp_path, *args), await start_cli(tmp_path, *args)
    try:
        async with httpx.AsyncClient(base_url=a.url) as on_a, httpx.AsyncClient(base_url=b.url) as on_b:
            job_id = await start_job(on_a)
            async with on_a.stream("GET", f"/chat/streams/{job_id}") as response:
                first = await read_until(response, lambda ev: sum(e.event == "token" for e in ev) >= 2)
            async with on_b.stream("GET", f"/chat/streams/{job_id}", headers={"Last-Event-ID": first[-1].id}) as rest:
                parser, later, stopped = EventStreamParser(), [], None
                async for piece in rest.aiter_bytes():
                    later += parser.feed(piece)
                    if stopped is None and any(e.event == "token" for e in later):
                        stopped = await on_b.post(f"/chat/streams/{job_id}/cancel")
        assert stopped is not None and stopped.status_code == 200 and stopped.json()["state"] == "cancelled"
        events = first + later
        assert events[-1].event == "done" and json.loads(events[-1].data)["finish_reason"] == "cancelled"
        assert seqs(events) == sorted(set(seqs(events))) and TEXT.startswith(tokens_text(events))
    finally:
        codes = [await a.stop(), await b.stop()]
    assert codes == [0, 0], a.lines + b.lines
