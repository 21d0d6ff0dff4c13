"""Every limit, timeout and size the server enforces, in one frozen dataclass.

Each default says what it defends against; change them with the CLI flags of the
same name (``--max-body-bytes``, ``--heartbeat``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Config"]


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8000

    # Parser limits (RFC 9112 leaves them to us). Each bounds what one request may
    # make us buffer before we have decided to serve it.
    max_request_line_bytes: int = 8 * 1024  # 414 beyond
    max_header_bytes: int = 64 * 1024  # whole head incl. request line; 431 beyond
    max_header_count: int = 100  # 431 beyond; bounds per-request dict/list work
    max_body_bytes: int = 1024 * 1024  # 413 beyond, before reading it

    # Timeouts. A client that drips its head a byte at a time holds a connection
    # slot; the head deadline is the whole budget, not a per-read idle timer.
    head_timeout_s: float = 10.0  # 408 then close
    keepalive_timeout_s: float = 15.0  # idle time between requests on one connection
    body_timeout_s: float = 30.0  # a declared body must arrive within this
    shutdown_timeout_s: float = 10.0  # in-flight plain responses get this long
    # A client whose socket takes no bytes for this long is dropped (streams included):
    # without it a reader that stops holds its buffers, its descriptor and its producer.
    write_timeout_s: float = 30.0

    # Concurrency. Each connection is one file descriptor and a few KiB; past the
    # cap we answer 503 rather than let the process hit its descriptor limit.
    max_connections: int = 15_000
    backlog: int = 4096

    # TLS (PEM files; the key may sit in the certificate file). With a certificate the
    # port speaks only HTTPS: TLS 1.2 or later, ALPN http/1.1; a handshake has
    # head_timeout_s to complete, like a request head.
    certfile: str | None = None
    keyfile: str | None = None

    # Peers whose Forwarded / X-Forwarded-For / X-Forwarded-Proto are believed (addresses,
    # CIDRs, or "*"). From anyone else the headers are ignored: a client could otherwise
    # pick its own address and slip every per-client limit. These peers themselves are
    # not limited (a proxy carries everybody; loopback is this host's own tools).
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")

    # Per-client limits (a client is its address after trusted proxies; 0 turns a limit
    # off). Beyond them: 429 with Retry-After. A browser holds at most 6 connections
    # per host over HTTP/1.1 and reconnects an EventSource every few seconds at most,
    # so these leave room for dozens of browsers behind one NAT address, while one
    # address alone can hold at most 1/60 of max_connections.
    max_connections_per_client: int = 256  # open connections (streams hold one each)
    # New connections: each costs an accept and, with TLS, a handshake (~1 ms of CPU);
    # 20/s sustained per client is a few percent of a core, and the burst covers a
    # whole office reconnecting at once after a restart (shutdown_retry_jitter_ms).
    connect_rate: float = 20.0  # per second, on average
    connect_burst: int = 100
    # Publishes: each is fanned out to every subscriber, so one client publishing in a
    # loop costs the server (subscribers x rate) writes. A person types far slower; a
    # server-side publisher on another host raises it, or sets 0.
    publish_rate: float = 50.0  # per second, on average
    publish_burst: int = 200

    # Server-Sent Events.
    heartbeat_s: float = 15.0  # comment line after this much idle time; proxies drop silent streams
    retry_ms: int = 3_000  # reconnection hint sent at the start of each stream
    history_size: int = 1_000  # events kept per channel for Last-Event-ID resume
    # Bytes of history (an event costs twice its encoded size plus ~200 B: the framed
    # copy a connection caches on it). Publishers choose event sizes and channel
    # names; these bound what they can make the server hold.
    history_bytes: int = 8 * 1024 * 1024  # per channel
    history_total_bytes: int = 128 * 1024 * 1024  # all channels; the least recently used lose events first
    # One encoded event (a data line per line of the body: 1 MB of newlines is 6 MB
    # encoded). Bounds one publish and one delivery; 413 beyond.
    max_event_bytes: int = 1024 * 1024
    max_channels: int = 10_000  # clients name channels; idle ones past this are forgotten (LRU)
    # One stream of several channels costs a set entry per channel per publish; this
    # bounds what one connection can make each publish do (400 beyond).
    max_channels_per_stream: int = 32
    max_subscriber_buffer_bytes: int = 1024 * 1024  # unsent bytes before a slow client is dropped
    # Kernel send buffer of a streaming response. Left to autotuning, a stalled
    # reader pins up to several MiB of kernel memory before the budget above even
    # starts counting; fixed, both together bound what one slow client costs.
    stream_send_buffer_bytes: int = 256 * 1024  # 0 leaves it to the kernel
    shutdown_retry_jitter_ms: int = 5_000  # spread of reconnects after a restart
    # A publish with an Idempotency-Key is stored once per channel and key for this
    # long: a backend's retries (network errors, 503s) fall well within it.
    idempotency_window_s: float = 300.0
    # Keys the in-memory engine remembers: 0.3 to 0.7 KiB each (a 24 to 128 character
    # key; tracemalloc), so 30 to 70 MiB at most, and 333 keyed publishes/s for the whole
    # window. Past it the oldest go first. Redis keeps its own, each expiring after the window.
    idempotency_keys: int = 100_000

    # Channels shared through Redis ("redis://[:password@]host:port/db", "rediss://" for
    # TLS) instead of this process's memory: every node naming it sees every channel.
    backplane: str | None = None
    # A channel's history in Redis expires this long after its last publish: without
    # it every channel name ever used would stay in Redis.
    history_ttl_s: float = 86_400.0
    # Every Redis command: past it a publish answers 503, so a stalled Redis cannot
    # hold publishers (or promise them an event that was not stored).
    backplane_timeout_s: float = 1.0
    # Processes serving one port under a supervisor (sse_server/workers.py); one
    # Python process uses one core. Above 1, channels need the backplane: each
    # worker would otherwise hold its own.
    workers: int = 1

    # Resumable generations (POST /chat/streams) one client address may run at once;
    # without it one client fills the global table (1,000) and everyone gets 429.
    max_jobs_per_client: int = 8
    # The chat model (sse_server/ai/). With no upstream the built-in mock answers, paced
    # like a model so pages and clients see realistic streaming.
    model_tokens_per_s: float = 40.0  # mock pacing after the first token; 0 sends all at once
    model_first_token_ms: float = 300.0  # mock latency before the first token
    # An OpenAI-compatible base URL ("https://host/v1"; a bare host gets "/v1")
    # to relay instead of the mock; its key is read from this environment variable.
    upstream_url: str | None = None
    upstream_key_env: str = "OPENAI_API_KEY"
    # Each bounds how long a silent upstream can hold a client's stream open.
    upstream_connect_timeout_s: float = 10.0  # TCP + TLS handshake
    upstream_first_byte_timeout_s: float = 60.0  # request sent -> response head
    upstream_idle_timeout_s: float = 120.0  # between body reads (reasoning models pause long)

    # Who may publish and subscribe (sse_server/auth.py, middleware/auth.py). Off unless
    # a secret is named: then nothing is readable or writable without a token that
    # covers it, except channels matching public_channels (subscribe only).
    jwt_secret_env: str | None = None  # environment variable holding the HS256 secret (>= 32 bytes)
    jwt_leeway_s: float = 10.0  # clock skew allowed on exp/nbf between the minting host and this one
    public_channels: tuple[str, ...] = ()  # patterns anyone may subscribe to: "news", "public/*"
    # Key the model API (/v1/*, /chat/stream*) requires as a Bearer token; without it
    # anyone who reaches the port spends the upstream's quota.
    api_key_env: str | None = None
    # Origins whose pages may call this server (CORS); exact origins get credentials,
    # "*" any origin without them. Empty: same-origin only, as browsers default.
    cors_origins: tuple[str, ...] = ()

    server_header: str = "sse_server"
    access_log: bool = True  # written when the "sse_server.access" logger is at info (--log-level)
    access_log_format: str = "text"  # or "json": one object per request and per ended stream

    # Observability. GET /metrics (Prometheus text format) exposes counts, not
    # content; a token keeps it from anyone who can reach the port.
    metrics: bool = True
    metrics_token_env: str | None = None  # environment variable holding the bearer token

    # Compression (gzip, flushed per write, so it never delays a stream). A body
    # smaller than about one packet gains little and costs a compressor.
    compression: bool = True  # plain responses over compress_min_bytes, and HTML streams
    compress_min_bytes: int = 1024
    # SSE too: every subscriber then needs its own compressor (~300 KiB of zlib state
    # while live), and a broadcast costs one compression per subscriber.
    compress_sse: bool = False
