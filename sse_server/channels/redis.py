"""The Redis engine: channels shared by every node that names the same Redis.

    engine = RedisEngine("redis://localhost:6379/0")      # pip install 'sse_server[redis]'

Strategy. Redis holds what must be shared; each node holds only its own subscribers.

- **Publish** is one Lua script, atomic on the Redis server: take the next sequence
  of the epoch (a hash ``meta`` with ``epoch`` and ``seq``; the epoch is created
  there once, so an id issued by node A resumes on node B), refuse an event over
  ``max_event_bytes`` before anything changes, append the event to the channel's
  history (a stream whose entry ids are the sequence numbers), trim it by count and
  bytes, refresh the keys' expiry, and PUBLISH the encoded event (its id line
  included) on the channel's topic. A publish is acknowledged only after the script
  ran: the event is stored where every node can replay it. With an idempotency
  key, the same script first looks for the key's record (a string key per channel
  and idempotency key, expiring after the window) and answers from it instead; else
  it writes the record with the new id. Check and store are one atomic step, so
  retries racing on two nodes store one event.
- **Delivery**: a node SUBSCRIBEs to the topic of each channel it has local
  subscribers for, on one connection of its own, and turns each message into one
  ``EncodedEvent`` for all of them (fan-out as in MemoryEngine: one ``deliver`` per
  subscriber, False drops it).
- **Gaps**: pub/sub is at-most-once, and it loses messages only across a broken
  connection (a node never skips a message on a connection that stays up: Redis
  writes them in script order, which is sequence order). So on every reconnect the
  node holds incoming messages, reads each channel's history after the last
  sequence it delivered, and delivers the missing events and the held ones merged
  by sequence, each once, before anything later. A subscriber whose channel lost
  events meanwhile (trimmed, expired) is ended, and resumes with an explicit reset.
- **Epoch**: if Redis loses its data, the next contact creates a new epoch; a node
  that sees it ends its streams, and their clients' old ids get ``reset`` (unknown).
- **Expiry**: a channel's keys expire ``history_ttl_s`` after its last publish. So
  that a client cannot silently miss what an expired channel held, the publish
  script samples (time, sequence) about ``_MARKS`` times per ttl; a resume from an
  id older than the oldest sample younger than the ttl, on a channel made again (or
  gone), gets a reset.
- **Unreachable or stalled Redis**: every command runs under ``timeout_s``; a
  publish or a subscribe that cannot be served raises EngineUnavailableError
  (the demo answers a publish 503 with Retry-After, a subscribe a 200 stream with
  only a retry hint, which EventSource reconnects after). Open streams stay up (their heartbeats are
  local); the subscription connection is pinged when silent and replaced, with
  backoff, when a ping goes unanswered; then the gap rule above catches up.

Engines with different ``key_prefix`` on one Redis share nothing (keys, topics,
epoch): the resumable generations use one of their own (ai/jobs.py).

Bytes per channel (``history_bytes``) count the encoded event as Redis stores it
(its bytes, not the stream's per-entry overhead; the in-memory engine also counts a
framed copy it caches, which Redis does not hold). Redis itself bounds the total:
run it with a ``maxmemory`` and ``maxmemory-policy noeviction``, so a full Redis
refuses publishes (503) instead of evicting history or the epoch. One Redis (not a
cluster: a publish touches several keys in one script).

The client library (redis-py) is imported here only, when the engine is made. The
subscription connection is one of its ``Connection`` objects driven directly rather
than its ``PubSub`` helper, which reconnects and re-subscribes on its own and would
hide the very reconnects the gap rule must see.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
import random
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from ..sse import encode_event
from .engine import (
    ChannelLimitError,
    EncodedEvent,
    Engine,
    EngineUnavailableError,
    EventTooLargeError,
    History,
    IdempotencyKeyReusedError,
    Published,
    Subscriber,
    Subscription,
    new_epoch,
    parse_event_id,
    publish_fingerprint,
)


def _redis(module: str) -> Any:
    """A module of redis-py, the optional extra, loaded only when this engine is used."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(_INSTALL_HINT) from None

__all__ = ["RedisEngine", "check_backplane_url"]

log = logging.getLogger("sse_server.redis")

_MARKS = 1000  # (time, seq) samples kept per ttl: bounds the marks set; finer means fewer needless resets
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 2.0
_POOL_CONNECTIONS = 64  # commands in flight to Redis per node; more wait (Redis runs one at a time anyway)

_INSTALL_HINT = "the Redis backplane needs redis-py: pip install 'sse_server[redis]'"

# KEYS: meta, marks, history, channel meta[, idempotency record]
# ARGV: candidate epoch, event without its id line, max event bytes, history size,
#       history bytes, ttl s, mark interval s, topic[, window ms, fingerprint, subscribers]
_PUBLISH = """
if KEYS[5] then
  local seen = redis.call('GET', KEYS[5])
  if seen then return {'seen', seen} end
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local fresh = not epoch
local seq = 1
if fresh then epoch = ARGV[1] else seq = (tonumber(redis.call('HGET', KEYS[1], 'seq')) or 0) + 1 end
local seqs = string.format('%d', seq)
local raw = 'id: ' .. epoch .. '-' .. seqs .. '\\n' .. ARGV[2]
if #raw > tonumber(ARGV[3]) then return {'too_large', #raw} end
if fresh then redis.call('HSET', KEYS[1], 'epoch', epoch) end
redis.call('HSET', KEYS[1], 'seq', seqs)
local ttl = tonumber(ARGV[6])
local every = tonumber(ARGV[7])
local now = tonumber(redis.call('TIME')[1])
if now - (tonumber(redis.call('HGET', KEYS[1], 'mark')) or 0) >= every then
  redis.call('HSET', KEYS[1], 'mark', now)
  redis.call('ZADD', KEYS[2], now, seqs)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl - 2 * every)
end
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('HSET', KEYS[4], 'created', string.format('%d', seq - 1), 'bytes', 0, 'evicted', 0)
end
redis.call('XADD', KEYS[3], seqs .. '-0', 'e', raw)
local bytes = redis.call('HINCRBY', KEYS[4], 'bytes', #raw)
local n = redis.call('XLEN', KEYS[3])
local size, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
while n > size or bytes > limit do
  local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1]
  redis.call('XDEL', KEYS[3], oldest[1])
  bytes = redis.call('HINCRBY', KEYS[4], 'bytes', -#oldest[2][2])
  redis.call('HSET', KEYS[4], 'evicted', string.match(oldest[1], '^(%d+)'))
  n = n - 1
end
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('EXPIRE', KEYS[4], ttl)
redis.call('PUBLISH', ARGV[8], raw)
if KEYS[5] then
  redis.call('SET', KEYS[5], ARGV[10] .. ' ' .. ARGV[11] .. ' ' .. epoch .. '-' .. seqs, 'PX', ARGV[9])
end
return {'ok', epoch, seqs}
"""

# KEYS: meta, marks, history, channel meta.  ARGV: first sequence wanted, ttl s
_READ = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
local now = tonumber(redis.call('TIME')[1])
local recent = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. (now - tonumber(ARGV[2])), '+inf', 'LIMIT', 0, 1)
local cm = redis.call('HMGET', KEYS[4], 'created', 'evicted')
local entries = redis.call('XRANGE', KEYS[3], ARGV[1], '+')
local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)
return {meta[1], meta[2] or '0', recent[1] or false, cm[1], cm[2] or '0', entries, oldest[1] and oldest[1][1] or false}
"""

# KEYS: meta.  ARGV: candidate epoch
_ENSURE_EPOCH = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
end
return {epoch, redis.call('HGET', KEYS[1], 'seq') or '0'}
"""


def check_backplane_url(url: str) -> str:
    """``redis://[:password@]host:port/db`` or ``rediss://`` (TLS); ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"a backplane is redis://[:password@]host:port/db or rediss://..., got {url!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValueError(f"the backplane's port is not a port number: {url!r}") from None
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ValueError(f"the backplane's database is a number: {url!r}")
    return url


def _db_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "0"


class _Local:
    """A channel with subscribers on this node."""

    __slots__ = ("name", "topic", "subscribers", "joining", "last_seq", "floor", "lag_until", "ready")

    def __init__(self, name: str, topic: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self.topic = topic
        # Each live subscriber with the sequence its replay reached: an event at or
        # below it reached that subscriber from history already (see _go_live).
        self.subscribers: dict[Subscriber, int] = {}
        self.joining: list[Subscription] = []
        self.last_seq = 0  # the newest event fanned out here
        self.floor: int | None = None  # the global sequence at the first history read: catch-up starts there
        self.lag_until = 0  # the highest replay sequence of a subscriber above last_seq when it went live
        self.ready: asyncio.Future[None] = loop.create_future()  # SUBSCRIBE confirmed on the current connection

    @property
    def idle(self) -> bool:
        return not self.subscribers and not self.joining


class RedisEngine(Engine):
    """Channels in Redis, shared by every node; see the module docstring."""

    def __init__(
        self,
        url: str,
        history_size: int = 1_000,
        max_channels: int = 10_000,
        *,
        history_bytes: int = 8 * 1024 * 1024,
        max_event_bytes: int = 1024 * 1024,
        history_ttl_s: float = 86_400.0,
        timeout_s: float = 1.0,
        key_prefix: str = "sse:",
        idempotency_window_s: float = 300.0,
    ) -> None:
        _redis("redis.asyncio")  # fail here, at start-up, not at the first publish
        check_backplane_url(url)
        if (min(history_size, max_channels, history_bytes, max_event_bytes) < 1
                or min(history_ttl_s, timeout_s, idempotency_window_s) <= 0):
            raise ValueError("every history and channel limit, the ttl, the timeout and the idempotency window "
                             "must be positive")
        self.url = url
        self.history_size = history_size
        self.max_channels = max_channels  # channels with subscribers on this node (one SUBSCRIBE each)
        self.history_bytes = history_bytes  # per channel, encoded bytes as stored
        self.max_event_bytes = max_event_bytes
        self.history_ttl_s = history_ttl_s
        self.ttl = max(1, math.ceil(history_ttl_s))
        self.mark_every_s = max(1, self.ttl // _MARKS)
        self.timeout_s = timeout_s  # every Redis command; past it a publish is a 503, never a 202
        self.prefix = key_prefix
        # Redis bounds the records itself: one per publish with a key, each gone after the window.
        self.idempotency_window_ms = max(1, round(idempotency_window_s * 1000))
        self.topic_prefix = f"{key_prefix}{_db_of(url)}:t:".encode()  # pub/sub ignores the database number
        self.epoch = ""  # learnt from Redis at the first contact
        self.reconnects = 0  # subscription connections replaced (each followed by a catch-up)
        self._candidate = new_epoch()  # the epoch this node proposes should Redis have none
        self._seq = 0
        self._locals: dict[str, _Local] = {}
        self._by_topic: dict[bytes, _Local] = {}
        self._client: Any = None
        self._pool: Any = None
        self._scripts: dict[str, Any] = {}
        self._runner: asyncio.Task[None] | None = None
        self._session: _Session | None = None
        self._closing = False
        self._errors: tuple[type[BaseException], ...] = (OSError, TimeoutError)

    # -- connections -----------------------------------------------------------------

    def _start(self) -> None:
        if self._runner is not None or self._closing:
            return
        aioredis = _redis("redis.asyncio")
        Retry = _redis("redis.asyncio.retry").Retry
        NoBackoff = _redis("redis.backoff").NoBackoff
        RedisError = _redis("redis.exceptions").RedisError

        self._errors = (RedisError, OSError, TimeoutError)
        # No retries inside the client: a retried command could outlive timeout_s,
        # and this engine decides itself when to reconnect.
        # A burst of commands (hundreds of subscribes arriving through a load balancer)
        # waits for one of _POOL_CONNECTIONS, within timeout_s like the command itself;
        # redis-py's default pool refuses at once past its size ("Too many connections").
        self._pool = aioredis.BlockingConnectionPool.from_url(
            self.url, max_connections=_POOL_CONNECTIONS, timeout=self.timeout_s,
            socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 0),
            protocol=2,  # pub/sub messages as plain replies on the subscription connection (RESP3 pushes them)
        )
        self._client = aioredis.Redis(connection_pool=self._pool, retry=Retry(NoBackoff(), 0))
        self._scripts = {name: self._client.register_script(src)
                         for name, src in (("publish", _PUBLISH), ("read", _READ), ("epoch", _ENSURE_EPOCH))}
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def _call(self, script: str, keys: Sequence[str | bytes], args: Sequence[str | bytes | int]) -> Any:
        self._start()
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._scripts[script](keys=list(keys), args=list(args))
        except self._errors as e:
            raise EngineUnavailableError(f"the channel backplane did not answer: {e or type(e).__name__}") from None

    async def ready(self) -> bool:
        """Redis answers a PING within the timeout and the subscription connection is up."""
        self._start()
        if self._session is None or not self._session.live:
            return False
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._client.ping()
        except self._errors:
            return False
        return True

    async def subscribed_anywhere(self, channels: Sequence[str]) -> list[bool]:
        """PUBSUB NUMSUB of each channel's topic: a node SUBSCRIBEs to a topic exactly
        while it has local subscribers (or joiners) for the channel, so a count above
        zero means somebody, on some node, follows it."""
        if not channels:
            return []
        self._start()
        try:
            async with asyncio.timeout(self.timeout_s):
                counts = await self._client.pubsub_numsub(*(self._topic(ch) for ch in channels))
        except self._errors as e:
            raise EngineUnavailableError(f"the channel backplane did not answer: {e or type(e).__name__}") from None
        return [int(n) > 0 for _, n in counts]

    async def close(self) -> None:
        self._closing = True
        runner, self._runner = self._runner, None
        # The client library can swallow a cancellation that lands inside its connect;
        # cancel again until the runner has stopped (bounded: it stops at its next await).
        for _ in range(50):
            if runner is None or runner.done():
                break
            runner.cancel()
            await asyncio.wait({runner}, timeout=0.1)
        if self._client is not None:
            await self._client.aclose()
            await self._pool.disconnect()

    def _keys(self, channel: str) -> tuple[str, str, str, str]:
        p = self.prefix
        return f"{p}meta", f"{p}marks", f"{p}h:{channel}", f"{p}c:{channel}"

    def _topic(self, channel: str) -> bytes:
        return self.topic_prefix + channel.encode()

    # -- the epoch ---------------------------------------------------------------------

    def _saw_epoch(self, epoch: str, seq: int) -> None:
        if epoch != self.epoch:
            if self.epoch:
                log.warning("the backplane's epoch changed (%s -> %s): Redis lost its data; "
                            "streams restart and their clients are told", self.epoch, epoch)
                self._epoch_changed()
            self.epoch = epoch
            self._seq = 0
            if epoch == self._candidate:
                self._candidate = new_epoch()
        if seq > self._seq:
            self._seq = seq

    def _epoch_changed(self) -> None:
        """Every local stream ends: its client resumes with an id of the old epoch and gets a reset."""
        for local in list(self._locals.values()):
            self._end_local(local)
            local.last_seq = 0
            local.floor = 0

    def _end_local(self, local: _Local) -> None:
        subscribers = list(local.subscribers)
        local.subscribers.clear()
        for sub in subscribers:
            sub.end()
        for joining in local.joining:
            joining.subscriber.end()
        if local.idle:
            self._drop_local(local)

    async def _refresh_epoch(self) -> None:
        epoch, seq = await self._call("epoch", [self._keys("")[0]], [self._candidate])
        self._saw_epoch(epoch.decode(), int(seq))

    # -- publish -------------------------------------------------------------------------

    async def publish(
        self, channel: str, data: str, event: str | None = None, *, idempotency_key: str | None = None,
    ) -> Published:
        body = encode_event(data, event=event)  # may raise ValueError: nothing sent yet
        if len(body) > self.max_event_bytes:
            raise EventTooLargeError(len(body), self.max_event_bytes)
        local = self._locals.get(channel)
        subscribers = len(local.subscribers) if local is not None else 0
        keys: list[str | bytes] = [*self._keys(channel)]
        args: list[str | bytes | int] = [
            self._candidate, body, self.max_event_bytes, self.history_size, self.history_bytes,
            self.ttl, self.mark_every_s, self._topic(channel),
        ]
        fingerprint = ""
        if idempotency_key is not None:
            fingerprint = publish_fingerprint(data, event)
            # Length-prefixed: a channel name may hold any printable character, ":" included.
            keys.append(f"{self.prefix}i:{len(idempotency_key)}:{idempotency_key}:{channel}")
            args += [self.idempotency_window_ms, fingerprint, subscribers]
        result = await self._call("publish", keys, args)
        if result[0] == b"too_large":
            raise EventTooLargeError(int(result[1]), self.max_event_bytes)
        if result[0] == b"seen":
            seen_fingerprint, seen_subscribers, seen_id = result[1].decode().split(" ")
            if seen_fingerprint != fingerprint:
                raise IdempotencyKeyReusedError(channel)
            return Published(seen_id, int(seen_subscribers), replayed=True)
        epoch, seq = result[1].decode(), int(result[2])
        self._saw_epoch(epoch, seq)
        self.published += 1  # by this node; every node counts its own
        # Delivery, here as on every node, comes from the subscription: one order for all.
        return Published(f"{epoch}-{seq}", subscribers)

    # -- subscribe (the algorithm is Engine.subscribe) ------------------------------------

    async def subscribe(
        self,
        channels: Sequence[str],
        subscriber: Subscriber,
        last_event_id: str | None = None,
        *,
        from_start: bool = False,
    ) -> Subscription:
        parsed = parse_event_id(last_event_id) if last_event_id else None
        if not self.epoch or (parsed is not None and (parsed[0] != self.epoch or parsed[1] > self._seq)):
            await self._refresh_epoch()  # another node may have issued the id, or Redis lost its data
        return await super().subscribe(channels, subscriber, last_event_id, from_start=from_start)

    def _last_seq(self) -> int:
        return self._seq

    def subscriber_count(self, channel: str) -> int:
        local = self._locals.get(channel)
        return len(local.subscribers) if local is not None else 0

    def subscriber_total(self) -> int:
        return sum(len(local.subscribers) for local in self._locals.values())

    @property
    def channel_count(self) -> int:
        """Channels with subscribers on this node."""
        return len(self._locals)

    def _join(self, sub: Subscription) -> None:
        self._start()
        made: list[_Local] = []
        for name in sub.channels:
            local = self._locals.get(name)
            if local is None:
                if len(self._locals) >= self.max_channels:
                    for m in made:
                        m.joining.remove(sub)
                    self._leave(sub)
                    raise ChannelLimitError(self.max_channels)
                local = _Local(name, self._topic(name), asyncio.get_running_loop())
                self._locals[name] = local
                self._by_topic[local.topic] = local
                if self._session is not None:
                    self._session.subscribe(local)
            local.joining.append(sub)
            made.append(local)

    def _go_live(self, sub: Subscription) -> None:
        for name in sub.channels:
            local = self._locals.get(name)
            if local is None:
                continue  # ended meanwhile (an epoch change): the stream ends after its replay
            if sub in local.joining:
                local.joining.remove(sub)
            # The history read can run ahead of the subscription connection: events up
            # to the replay's newest may still arrive on it, and this subscriber has them.
            reached = max((e.seq for e in sub.replay if e.channel == name), default=0)
            if reached > local.last_seq:
                local.lag_until = max(local.lag_until, reached)
            else:
                reached = 0
            local.subscribers[sub.subscriber] = reached

    def _leave(self, sub: Subscription) -> None:
        for name in sub.channels:
            local = self._locals.get(name)
            if local is None:
                continue
            if sub in local.joining:
                local.joining.remove(sub)
            local.subscribers.pop(sub.subscriber, None)
            if local.idle:
                self._drop_local(local)

    def _drop_local(self, local: _Local) -> None:
        if self._locals.get(local.name) is local:
            del self._locals[local.name]
            del self._by_topic[local.topic]
            if self._session is not None:
                self._session.unsubscribe(local)

    async def _read_history(self, channel: str, after_seq: int) -> History:
        local = self._locals.get(channel)
        if local is not None and not local.ready.done():
            # Subscribed before reading, so every later event arrives on the subscription.
            try:
                async with asyncio.timeout(self.timeout_s):
                    await asyncio.shield(local.ready)
            except TimeoutError:
                raise EngineUnavailableError("the channel backplane is not reachable") from None
        history, global_seq = await self._fetch(channel, after_seq)
        if local is not None and local.floor is None:
            local.floor = global_seq
        return history

    async def _fetch(self, channel: str, after_seq: int) -> tuple[History, int]:
        reply = await self._call("read", self._keys(channel), [str(after_seq + 1), self.ttl])
        epoch_b, seq_b, recent_b, created_b, evicted_b, entries, oldest_b = reply
        if epoch_b is None:
            await self._refresh_epoch()  # Redis has no data: a new epoch, nothing held
            return History([], None, 0, 0), 0
        epoch, global_seq = epoch_b.decode(), int(seq_b)
        self._saw_epoch(epoch, global_seq)
        events = []
        for entry_id, fields in entries:
            seq = int(entry_id.partition(b"-")[0])
            events.append(EncodedEvent(channel, seq, f"{epoch}-{seq}", fields[1]))
        oldest_id = f"{epoch}-{int(oldest_b.partition(b'-')[0])}" if oldest_b else None
        # What an expired channel held is gone: for a channel made again (or gone), an id
        # issued before the oldest sample younger than the ttl may have missed events.
        created = int(created_b) if created_b is not None else global_seq
        expired_upto = int(recent_b) - 1 if recent_b is not None else global_seq
        return History(events, oldest_id, int(evicted_b), min(created, expired_upto)), global_seq

    # -- delivery ----------------------------------------------------------------------

    def _on_message(self, topic: bytes, raw: bytes) -> None:
        local = self._by_topic.get(topic)
        if local is None:
            return  # unsubscribed meanwhile
        event_id = raw[4:raw.index(b"\n")].decode()  # "id: <epoch>-<seq>\n..." as the script wrote it
        epoch, _, seq_text = event_id.rpartition("-")
        seq = int(seq_text)
        if epoch != self.epoch:
            self._saw_epoch(epoch, seq)
            local = self._by_topic.get(topic)
            if local is None:
                return
        if seq > local.last_seq:
            self._deliver(local, EncodedEvent(local.name, seq, event_id, raw))

    def _deliver(self, local: _Local, event: EncodedEvent) -> None:
        seq = event.seq
        local.last_seq = seq
        if seq > self._seq:
            self._seq = seq
        subscribers = local.subscribers
        if subscribers:
            if seq <= local.lag_until:
                over = [s for s, reached in subscribers.items() if seq > reached and not s.deliver(event)]
            else:
                over = [s for s in subscribers if not s.deliver(event)]
            self.delivered += len(subscribers) - len(over)
            for s in over:
                subscribers.pop(s, None)
                self.dropped += 1
            if local.idle:
                self._drop_local(local)
        for joining in local.joining:
            if joining.buffer is not None:
                joining.buffer.append(event)

    async def _catch_up(self, locals_: list[_Local], held: list[tuple[bytes, bytes]]) -> None:
        """After a reconnect: what each channel missed, then the held messages, by sequence."""
        missed: list[tuple[_Local, EncodedEvent]] = []
        for local in locals_:
            if local.floor is None or self._locals.get(local.name) is not local:
                continue  # no history read yet (its joiners read after this), or gone
            after = max(local.last_seq, local.floor)
            history, _ = await self._fetch(local.name, after)
            if history.lost_after(after, False):
                log.warning("channel %r lost events while the backplane was unreachable; "
                            "its streams restart with a reset", local.name)
                self._end_local(local)
                local.last_seq = max([after, *(e.seq for e in history.events)])
                continue
            missed.extend((local, e) for e in history.events)
        missed.sort(key=lambda item: item[1].seq)
        for local, event in missed:
            if event.seq > local.last_seq and self._locals.get(local.name) is local:
                self._deliver(local, event)
        for topic, raw in held:
            self._on_message(topic, raw)

    # -- the subscription connection ---------------------------------------------------

    async def _run(self) -> None:
        backoff = _BACKOFF_FIRST_S
        first = True
        while not self._closing:
            session = _Session(self)
            try:
                await session.run(catch_up=not first)
            except asyncio.CancelledError:
                await session.close()
                raise
            except Exception as e:  # any failure of the connection: replace it
                (log.warning if session.live else log.debug)(
                    "backplane subscription %s (%r); reconnecting", "lost" if session.live else "failed", e)
            finally:
                if session.live:
                    backoff = _BACKOFF_FIRST_S
                    first = False
                    self.reconnects += 1
                await session.close()
                if self._session is session:
                    self._session = None
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, _BACKOFF_MAX_S)


class _Session:
    """One subscription connection: subscribe, read, ping; ends on the first failure."""

    def __init__(self, engine: RedisEngine) -> None:
        self.engine = engine
        self.conn: Any = None
        self.live = False  # connected, subscribed and caught up
        self.pending: dict[bytes, int] = {}  # SUBSCRIBEs not yet confirmed, per topic
        self.commands: asyncio.Queue[tuple[bytes, ...]] = asyncio.Queue()
        self.last_rx = 0.0

    def subscribe(self, local: _Local) -> None:
        if local.ready.done():
            local.ready = asyncio.get_running_loop().create_future()
        self.pending[local.topic] = self.pending.get(local.topic, 0) + 1
        self.commands.put_nowait((b"SUBSCRIBE", local.topic))

    def unsubscribe(self, local: _Local) -> None:
        self.commands.put_nowait((b"UNSUBSCRIBE", local.topic))

    async def run(self, *, catch_up: bool) -> None:
        engine = self.engine
        loop = asyncio.get_running_loop()
        self.conn = conn = engine._pool.make_connection()
        async with asyncio.timeout(engine.timeout_s):
            await conn.connect()
        await engine._refresh_epoch()  # a restarted, empty Redis shows here first
        engine._session = self
        initial = list(engine._locals.values())
        for local in initial:
            self.subscribe(local)
        self.last_rx = loop.time()
        tasks = {loop.create_task(self._read(initial, catch_up)), loop.create_task(self._write()),
                 loop.create_task(self._ping())}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises what ended it
            raise ConnectionError("the subscription connection stopped")
        finally:
            for task in tasks:
                task.cancel()
            # Collected, so a write cut by the disconnect is not logged as never retrieved.
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, initial: list[_Local], catch_up: bool) -> None:
        engine = self.engine
        loop = asyncio.get_running_loop()
        conn = self.conn
        waiting = {local.topic for local in initial}
        held: list[tuple[bytes, bytes]] | None = [] if catch_up and waiting else None
        self.live = held is None
        while True:
            msg = await conn.read_response(disable_decoding=True, timeout=math.inf)
            self.last_rx = loop.time()
            if not isinstance(msg, list):
                continue  # +PONG while subscribed to nothing
            kind = msg[0]
            if kind == b"message":
                if held is None:
                    engine._on_message(msg[1], msg[2])
                else:
                    held.append((msg[1], msg[2]))
            elif kind == b"subscribe":
                topic = msg[1]
                left = self.pending.get(topic, 0) - 1
                if left > 0:
                    self.pending[topic] = left
                    continue
                self.pending.pop(topic, None)
                waiting.discard(topic)
                local = engine._by_topic.get(topic)
                if local is not None and not local.ready.done():
                    local.ready.set_result(None)
                if held is not None and not waiting:
                    await engine._catch_up(initial, held)
                    held = None
                    self.live = True

    async def _write(self) -> None:
        while True:
            command = await self.commands.get()
            await self.conn.send_command(*command, check_health=False)

    async def _ping(self) -> None:
        """PING when silent; a connection silent for two timeouts is given up (a stalled Redis)."""
        timeout_s = self.engine.timeout_s
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(timeout_s / 2)
            silent = loop.time() - self.last_rx
            if silent >= 2 * timeout_s:
                raise TimeoutError(f"the backplane sent nothing for {silent:.1f}s")
            if silent >= timeout_s / 2:
                self.commands.put_nowait((b"PING",))

    async def close(self) -> None:
        self.live = False
        conn, self.conn = self.conn, None
        if conn is not None:
            await conn.disconnect(nowait=True)
