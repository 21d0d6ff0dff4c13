"""Resumable generations: ids, resume after a cut, cancel, and the job table's limits."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from httpx_sse import aconnect_sse

from sse_server import App, Config
from sse_server.ai import APIError, install_llm
from sse_server.ai.jobs import MAX_JOB_EVENTS, JobLimits, JobTable
from sse_server.ai.mockmodel import mock_complete
from sse_server.http11 import ChunkedDecoder
from sse_server.sse import EventStreamParser
from tests.ai.helpers import MESSAGES, RawStream, Serve, llm_config, read_events, service, sse_events, tokens_text
from tests.waiting import eventually


async def test_job_post_streams_with_ids_and_ends(serve: Serve) -> None:
    """POST /chat/streams streams start, tokens and done with broker ids, names the job, then ends."""
    server = await serve()
    async with (
        httpx.AsyncClient(base_url=server.url) as http,
        http.stream("POST", "/chat/streams", json={"messages": MESSAGES}) as response,
    ):
        events = await read_events(response)
        job_id = response.headers["chat-stream-id"]
        assert response.headers["location"] == f"/chat/streams/{job_id}"
    assert events[0].event == "start" and json.loads(events[0].data)["id"] == job_id
    assert events[-1].event == "done" and json.loads(events[-1].data)["finish_reason"] == "stop"
    assert tokens_text(events) == mock_complete(MESSAGES).text
    seqs = [int(e.id.rsplit("-", 1)[1]) for e in events]
    assert seqs == list(range(1, len(events) + 1))


async def test_job_respond_async_describes_the_job(serve: Serve) -> None:
    """With Prefer: respond-async the answer is 202 with the job's description and where to follow it."""
    server = await serve(model_tokens_per_s=20)
    async with httpx.AsyncClient(base_url=server.url) as http:
        started = await http.post("/chat/streams", json={"messages": MESSAGES}, headers={"Prefer": "respond-async"})
    body = started.json()
    assert started.status_code == 202 and started.headers["preference-applied"] == "respond-async"
    assert started.headers["location"] == body["url"] == f"/chat/streams/{body['id']}"
    assert (body["object"], body["state"], body["model"]) == ("chat.stream", "running", "sse-mock-1")


async def test_job_resume_after_a_cut_gives_every_token_once(serve: Serve) -> None:
    """A client cut mid-generation resumes with Last-Event-ID: every token exactly once, no restart."""
    server = await serve(model_tokens_per_s=300)
    async with httpx.AsyncClient(base_url=server.url) as http:
        started = await http.post("/chat/streams", json={"messages": MESSAGES}, headers={"Prefer": "respond-async"})
        assert started.status_code == 202
        job_id = started.json()["id"]
        stream = await RawStream.open(server, "GET", f"/chat/streams/{job_id}")
        await stream.read_until(b"event: token\ndata: ")
        await stream.read_until(b"\n\n", after=stream.received.rindex(b"event: token"))
        await stream.close()  # cut mid-generation
        body = stream.received.split(b"\r\n\r\n", 1)[1]
        first = EventStreamParser().feed(ChunkedDecoder().feed(body))
        assert first[-1].event == "token" and job_id in service(server).jobs
        assert service(server).jobs[job_id].running
        async with aconnect_sse(http, "GET", f"/chat/streams/{job_id}",
                                headers={"Last-Event-ID": first[-1].id}) as source:
            rest = await sse_events(source)
        # A second late reader without an id gets the whole history, then the end.
        async with aconnect_sse(http, "GET", f"/chat/streams/{job_id}") as source:
            replay = await sse_events(source)
    events = first + rest
    assert [e.id for e in events] == [e.id for e in replay]
    assert len({e.id for e in events}) == len(events)
    assert tokens_text(events) == mock_complete(MESSAGES).text
    assert service(server).stats.started == 1 and service(server).stats.finished == 1


async def test_job_keeps_generating_without_a_client(serve: Serve) -> None:
    """A job whose client dropped finishes anyway; a later GET replays it all and ends."""
    server = await serve()
    async with httpx.AsyncClient(base_url=server.url) as http:
        started = await http.post("/chat/streams", json={"messages": MESSAGES}, headers={"Prefer": "respond-async"})
        job = service(server).jobs[started.json()["id"]]
        await eventually(lambda: job.state == "done")
        async with http.stream("GET", f"/chat/streams/{job.id}") as response:
            events = await read_events(response)
    assert tokens_text(events) == mock_complete(MESSAGES).text and events[-1].event == "done"


@pytest.mark.parametrize("how", ["POST cancel", "DELETE"])
async def test_job_cancel_stops_generation_and_ends_streams(serve: Serve, how: str) -> None:
    """The stop button's request cancels the job: subscribers get done (cancelled) and their streams end."""
    server = await serve(model_tokens_per_s=20)
    async with httpx.AsyncClient(base_url=server.url) as http:
        async with http.stream("POST", "/chat/streams", json={"messages": MESSAGES}) as response:
            job_id = response.headers["chat-stream-id"]
            parser, events = EventStreamParser(), []
            async for piece in response.aiter_bytes():
                events += parser.feed(piece)
                if any(e.event == "token" for e in events) and not any(e.event == "done" for e in events):
                    if how == "DELETE":
                        stopped = await http.delete(f"/chat/streams/{job_id}")
                    else:
                        stopped = await http.post(f"/chat/streams/{job_id}/cancel")
                    assert stopped.json()["state"] == "cancelled"
        assert json.loads(events[-1].data) == {"finish_reason": "cancelled", "usage": None}
        assert service(server).stats.cancelled == 1
        assert len(tokens_text(events)) < len(mock_complete(MESSAGES).text)


async def test_job_nobody_watches_is_cancelled_then_forgotten(serve: Serve) -> None:
    """A job with no subscriber for the idle limit is cancelled; a finished job is forgotten after retention."""
    app = App()
    install_llm(app, llm_config(model_tokens_per_s=20), JobLimits(max_jobs=2, idle_cancel_s=0.2, retention_s=0.4))
    server = await serve(app)
    async with httpx.AsyncClient(base_url=server.url) as http:
        async def start() -> httpx.Response:
            return await http.post("/chat/streams", json={"messages": MESSAGES}, headers={"Prefer": "respond-async"})

        first, second = (await start()).json()["id"], (await start()).json()["id"]
        full = await start()
        assert full.status_code == 429 and full.json()["error"]["code"] == "too_many_generations"
        job = service(server).jobs[first]
        await eventually(lambda: job.state == "cancelled", timeout_s=2)
        assert (await start()).status_code == 202  # room again: a finished job makes way
        assert first not in service(server).jobs
        await eventually(lambda: second not in service(server).jobs, timeout_s=3)
        assert (await http.get(f"/chat/streams/{second}")).status_code == 404


class HeldRun:
    """A run that produces nothing by itself: the test calls the job's listener methods."""

    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


async def test_a_job_stops_at_its_event_limit() -> None:
    """A job whose history would pass MAX_JOB_EVENTS stops its run and ends with finish_reason "length"."""
    table = JobTable(Config(), JobLimits(max_jobs=1))
    run = HeldRun()
    job = table.start("m", lambda listener: run)
    try:
        for _ in range(MAX_JOB_EVENTS + 10):
            job.token("x", None)
        assert (job.state, job.events, run.cancelled) == ("done", MAX_JOB_EVENTS, True)
        job.finish("stop", None)  # the run's own end, arriving late, changes nothing
        assert (job.state, job.events) == ("done", MAX_JOB_EVENTS)
    finally:
        table.close()


async def test_a_full_table_of_running_jobs_refuses_more() -> None:
    """With max_jobs running, start() is a 429; once one has finished it makes way."""
    table = JobTable(Config(), JobLimits(max_jobs=1))
    first = table.start("m", lambda listener: HeldRun())
    try:
        with pytest.raises(APIError) as info:
            table.start("m", lambda listener: HeldRun())
        assert (info.value.status, info.value.error["code"]) == (429, "too_many_generations")
        first.finish("stop", None)
        second = table.start("m", lambda listener: HeldRun())
        assert list(table) == [second.id] and first.id not in table
    finally:
        table.close()


async def test_one_client_cannot_fill_the_job_table(serve: Serve) -> None:
    """Past --max-jobs-per-client running jobs one address gets 429 with Retry-After; another
    address still starts jobs, and the first may again once one of its jobs has ended."""
    server = await serve(model_tokens_per_s=20, max_jobs_per_client=2)

    def client(address: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=server.url, transport=httpx.AsyncHTTPTransport(local_address=address))

    async def start(http: httpx.AsyncClient) -> httpx.Response:
        return await http.post("/chat/streams", json={"messages": MESSAGES}, headers={"Prefer": "respond-async"})

    async with client("127.0.0.1") as greedy, client("127.0.0.2") as other:
        first = (await start(greedy)).json()["id"]
        assert (await start(greedy)).status_code == 202
        refused = await start(greedy)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "5"
        assert refused.json()["error"]["code"] == "too_many_generations_for_client"
        assert (await start(other)).status_code == 202  # somebody else is not affected
        assert (await greedy.post(f"/chat/streams/{first}/cancel")).status_code == 200
        assert (await start(greedy)).status_code == 202  # one ended: room for one more


async def test_a_finished_job_resumed_from_its_last_event_is_204(serve: Serve) -> None:
    """Reconnecting with the last id of a finished job gets 204 (EventSource stops); from an
    earlier id it gets the rest, then the end."""
    server = await serve()
    async with httpx.AsyncClient(base_url=server.url) as http:
        async with http.stream("POST", "/chat/streams", json={"messages": MESSAGES}) as response:
            events = await read_events(response)
            job_id = response.headers["chat-stream-id"]
        last = await http.get(f"/chat/streams/{job_id}", headers={"Last-Event-ID": events[-1].id})
        assert last.status_code == 204 and last.content == b""
        async with http.stream("GET", f"/chat/streams/{job_id}",
                               headers={"Last-Event-ID": events[-2].id}) as rest:
            assert rest.status_code == 200
            assert [e.id for e in await read_events(rest)] == [events[-1].id]
    await eventually(lambda: service(server).jobs.broker.subscriber_count(f"gen:{job_id}") == 0)
