"""The demo's HTTP contract on aiohttp + aiohttp-sse, written idiomatically.

A peer for the load tests: what a user would write instead of sse_server. One
asyncio.Queue per subscriber (see channels.py), aiohttp-sse's ping as the
heartbeat, every event encoded per subscriber by EventSourceResponse.send.
handler_cancellation=True so a client that leaves cancels its handler (and
unsubscribes) instead of waiting for the next publish to notice.

Routes: GET /healthz; GET and POST /channels/{name}/events; GET /firehose?n=N&size=B.

Usage:
    python loadtests/peers/aiohttp_app.py --port 8002 [--heartbeat 15]
"""

from __future__ import annotations

import argparse
import logging
import sys

from channels import Broker, bad_event_name, firehose_params, parse_last_event_id

try:
    from aiohttp import web
    from aiohttp_sse import sse_response
except ImportError as exc:  # the peers are optional, benchmark-only dependencies
    sys.exit(f"{exc}; install the peers with: pip install -r loadtests/requirements-peers.txt")

BROKER = web.AppKey("broker", Broker)
HEARTBEAT_S = web.AppKey("heartbeat_s", float)


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


async def publish(request: web.Request) -> web.StreamResponse:
    channel = request.app[BROKER].channel(request.match_info["name"])
    event = request.query.get("event")
    if bad_event_name(event):
        raise web.HTTPBadRequest(text="event name must not contain CR or LF")
    try:
        data = (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="body must be UTF-8") from None
    ev = channel.publish(data, event)
    return web.json_response(
        {"id": str(ev.id), "subscribers": len(channel.subscribers)}, status=202
    )


async def subscribe(request: web.Request) -> web.StreamResponse:
    channel = request.app[BROKER].channel(request.match_info["name"])
    last_id = parse_last_event_id(
        request.headers.get("Last-Event-ID"), request.query.get("last_event_id")
    )
    # Subscribe before the response head goes out, so nothing published after
    # the client sees 200 can be missed.
    sub, backlog = channel.subscribe(last_id)
    try:
        async with sse_response(request, ping_interval=request.app[HEARTBEAT_S]) as resp:
            for ev in backlog:
                await resp.send(ev.data, id=str(ev.id), event=ev.event)
            while True:
                live = await sub.queue.get()
                if live is None:  # dropped for falling behind
                    break
                await resp.send(live.data, id=str(live.id), event=live.event)
    finally:
        channel.unsubscribe(sub)
    return resp


async def firehose(request: web.Request) -> web.StreamResponse:
    try:
        n, size = firehose_params(request.query.get("n"), request.query.get("size"))
    except ValueError:
        raise web.HTTPBadRequest(text="n and size must be integers") from None
    payload = "x" * size
    async with sse_response(request, ping_interval=request.app[HEARTBEAT_S]) as resp:
        for i in range(n):
            await resp.send(payload, id=str(i))
    return resp


def make_app(heartbeat_s: float) -> web.Application:
    app = web.Application()
    app[BROKER] = Broker()
    app[HEARTBEAT_S] = heartbeat_s
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/channels/{name}/events", subscribe)
    app.router.add_post("/channels/{name}/events", publish)
    app.router.add_get("/firehose", firehose)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--heartbeat", type=float, default=15.0, help="ping interval, seconds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    web.run_app(
        make_app(args.heartbeat),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        handler_cancellation=True,
    )


if __name__ == "__main__":
    main()
