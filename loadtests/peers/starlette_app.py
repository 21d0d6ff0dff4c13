"""The demo's HTTP contract on uvicorn + Starlette + sse-starlette, written idiomatically.

A peer for the load tests: what a user would write instead of sse_server. One
asyncio.Queue per subscriber (see channels.py), sse-starlette's ping as the
heartbeat, every event encoded per subscriber by ServerSentEvent.

Routes: GET /healthz; GET and POST /channels/{name}/events; GET /firehose?n=N&size=B.

Usage:
    python loadtests/peers/starlette_app.py --port 8001
    python loadtests/peers/starlette_app.py --port 8001 --loop asyncio --http h11
    python loadtests/peers/starlette_app.py --port 8001 --loop uvloop --http httptools

--loop/--http default to uvicorn's "auto" (uvloop and httptools when installed),
which is what `pip install uvicorn[standard]` users run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator

from channels import Broker, Event, bad_event_name, firehose_params, parse_last_event_id

try:
    import uvicorn
    from sse_starlette import EventSourceResponse, ServerSentEvent
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route
except ImportError as exc:  # the peers are optional, benchmark-only dependencies
    sys.exit(f"{exc}; install the peers with: pip install -r loadtests/requirements-peers.txt")

broker = Broker()
HEARTBEAT_S = 15.0  # set from --heartbeat before the app serves


def to_sse(ev: Event) -> ServerSentEvent:
    return ServerSentEvent(data=ev.data, id=str(ev.id), event=ev.event)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def channel_events(request: Request) -> Response:
    channel = broker.channel(request.path_params["name"])
    if request.method == "POST":
        event = request.query_params.get("event")
        if bad_event_name(event):
            return PlainTextResponse("event name must not contain CR or LF", status_code=400)
        try:
            data = (await request.body()).decode("utf-8")
        except UnicodeDecodeError:
            return PlainTextResponse("body must be UTF-8", status_code=400)
        ev = channel.publish(data, event)
        return JSONResponse(
            {"id": str(ev.id), "subscribers": len(channel.subscribers)}, status_code=202
        )

    last_id = parse_last_event_id(
        request.headers.get("last-event-id"), request.query_params.get("last_event_id")
    )
    # Subscribe before the response head goes out, so nothing published after
    # the client sees 200 can be missed.
    sub, backlog = channel.subscribe(last_id)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        try:
            for ev in backlog:
                yield to_sse(ev)
            while True:
                live = await sub.queue.get()
                if live is None:  # dropped for falling behind
                    return
                yield to_sse(live)
        finally:  # runs on disconnect too: sse-starlette cancels the generator
            channel.unsubscribe(sub)

    return EventSourceResponse(stream(), ping=HEARTBEAT_S)


async def firehose(request: Request) -> Response:
    try:
        n, size = firehose_params(request.query_params.get("n"), request.query_params.get("size"))
    except ValueError:
        return PlainTextResponse("n and size must be integers", status_code=400)
    payload = "x" * size

    async def stream() -> AsyncIterator[ServerSentEvent]:
        for i in range(n):
            yield ServerSentEvent(data=payload, id=str(i))

    return EventSourceResponse(stream(), ping=HEARTBEAT_S)


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/channels/{name}/events", channel_events, methods=["GET", "POST"]),
        Route("/firehose", firehose),
    ]
)


def main() -> None:
    global HEARTBEAT_S
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    parser.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto")
    parser.add_argument("--heartbeat", type=float, default=15.0, help="ping interval, seconds")
    args = parser.parse_args()
    HEARTBEAT_S = args.heartbeat
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop=args.loop,
        http=args.http,
        ws="none",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
