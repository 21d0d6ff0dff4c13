"""Who a request comes from, and how much one client may do.

Behind a reverse proxy every connection comes from the proxy. Its ``Forwarded``
(RFC 7239) or ``X-Forwarded-For`` / ``X-Forwarded-Proto`` headers say who the client
is, but anyone can send those headers, so they are believed only from a peer in
``--forwarded-allow-ips`` (``TrustedPeers``) and ignored from everyone else.

The rule for a chain (``forwarded_client``): each proxy appends the address it was
connected from, so the list reads client, proxy1, proxy2, ... and our peer is the
last proxy. Walking it from the right, trusted addresses are proxies we believe;
the first address that is not trusted is the client. Entries left of it were
written by that client and prove nothing. An entry that is not an address
(``unknown``, an obfuscated name, garbage) ends the walk: the client is then the
last trusted hop. ``Forwarded`` wins over ``X-Forwarded-For`` when both are sent.

Per-client limits count a client by ``client_key(request)``: its token's subject,
else its address, or None
for a trusted peer itself (a proxy carries everybody's requests, and this host's
own tools, loopback by default, are not limited). ``TokenBuckets`` is the rate
limit: ``rate`` per second on average, up to ``burst`` at once.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import Request

__all__ = ["TokenBuckets", "TrustedPeers", "client_key", "forwarded_client", "parse_address", "retry_after"]

_CACHE_ENTRIES = 4096  # addresses remembered per TrustedPeers; bounds what many peers can make us hold
_MAX_CHAIN = 32  # forwarded hops examined; a longer header is someone padding it
_FORWARDED_NAMES = frozenset({"forwarded", "x-forwarded-for", "x-forwarded-proto"})
_PROTOS = frozenset({"http", "https"})


def client_key(request: Request) -> str | None:
    """The name per-client limits count ``request`` under; None: not limited.

    The subject of its principal when it has one (``sub:alice``: set by the auth
    middleware, middleware/auth.py, which runs before the handlers), so one user is
    one client wherever they connect from, behind a proxy included; else the
    client's address (after trusted proxies).
    """
    principal = request.principal
    if principal is not None and principal.subject:
        return "sub:" + principal.subject
    client = request.client
    if client is None or request.client_trusted:
        return None
    return client[0]


def parse_address(text: str) -> str | None:
    """The address in a forwarded entry, normalised; None if it is not one.

    >>> parse_address('"[2001:db8::1]:4711"'), parse_address("192.0.2.1:80"), parse_address("unknown")
    ('2001:db8::1', '192.0.2.1', None)
    """
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has several colons
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


class TrustedPeers:
    """The peers whose forwarding headers are believed: addresses, CIDRs, or ``*`` for all.

    >>> peers = TrustedPeers(["127.0.0.1", "10.0.0.0/8"])
    >>> "10.1.2.3" in peers, "192.0.2.1" in peers
    (True, False)
    """

    __slots__ = ("_all", "_cache", "_networks")

    def __init__(self, specs: Iterable[str]) -> None:
        self._all = False
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for spec in specs:
            spec = spec.strip()
            if spec == "*":
                self._all = True
            elif spec:
                self._networks.append(ipaddress.ip_network(spec, strict=False))  # ValueError: not an address
        self._cache: dict[str, bool] = {}

    def __contains__(self, host: object) -> bool:
        if self._all:
            return True
        if not isinstance(host, str):
            return False
        known = self._cache.get(host)
        if known is not None:
            return known
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            trusted = False
        else:
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped  # a dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d
            trusted = any(address in network for network in self._networks)
        if len(self._cache) >= _CACHE_ENTRIES:
            self._cache.clear()
        self._cache[host] = trusted
        return trusted


def _split_forwarded(values: list[str]) -> tuple[list[str | None], list[str | None]]:
    """RFC 7239 §4: elements separated by commas, pairs by semicolons -> (for, proto) per element."""
    fors: list[str | None] = []
    protos: list[str | None] = []
    for value in values:
        for element in value.split(","):
            found_for: str | None = None
            found_proto: str | None = None
            for pair in element.split(";"):
                name, _, raw = pair.partition("=")
                name = name.strip().lower()
                if name == "for":
                    found_for = raw
                elif name == "proto":
                    found_proto = raw.strip().strip('"').lower()
            fors.append(found_for)
            protos.append(found_proto)
    return fors, protos


def forwarded_client(
    peer: tuple[str, int] | None, headers: list[tuple[str, str]], trusted: TrustedPeers,
) -> tuple[tuple[str, int] | None, str | None, bool]:
    """(client, proto or None, whether the client is trusted) for a request from a trusted ``peer``.

    ``headers`` are (lower-cased name, value) pairs. Without forwarding headers the
    client is the peer itself (trusted).
    """
    forwarded: list[str] = []
    xff: list[str] = []
    xfp: list[str] = []
    for name, value in headers:
        if name in _FORWARDED_NAMES:
            (forwarded if name == "forwarded" else xff if name == "x-forwarded-for" else xfp).append(value)
    if not (forwarded or xff or xfp):
        return peer, None, True
    if forwarded:
        fors, protos = _split_forwarded(forwarded)
    else:
        fors = [v for value in xff for v in value.split(",")]
        proto_list = [v.strip().lower() for value in xfp for v in value.split(",")]
        # Proxies that append both keep them aligned; otherwise the nearest proxy's word counts.
        if len(proto_list) == len(fors):
            protos = list(proto_list)
        else:
            protos = [None] * len(fors)
            if proto_list:
                if fors:
                    protos[-1] = proto_list[-1]
                else:
                    return peer, proto_list[-1] if proto_list[-1] in _PROTOS else None, True
    client = peer
    client_trusted = True
    proto: str | None = None
    for raw, hop_proto in list(zip(fors, protos, strict=True))[::-1][:_MAX_CHAIN]:
        address = parse_address(raw) if raw is not None else None
        if address is None:
            break  # not an address: the client is the last trusted hop
        client = (address, 0)
        proto = hop_proto if hop_proto in _PROTOS else proto
        if address not in trusted:
            client_trusted = False
            break
    return client, proto, client_trusted


class TokenBuckets:
    """One token bucket per key: ``rate`` tokens a second, holding at most ``burst``.

    ``take(key, now)`` spends a token and returns 0.0, or returns the seconds until
    one is there (spending nothing). Keys whose bucket has refilled are forgotten
    when the table grows past ``max_keys``, so idle clients cost nothing.
    """

    __slots__ = ("burst", "max_keys", "rate", "_buckets")

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(max(1, burst))
        self.max_keys = max_keys
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, time of last update]

    def take(self, key: str, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_full(now)
            self._buckets[key] = [self.burst - 1.0, now]
            return 0.0
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        full = [k for k, (tokens, t) in self._buckets.items() if tokens + (now - t) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:  # all busy: the oldest half goes (they refill soonest)
            for k in sorted(self._buckets, key=lambda k: self._buckets[k][1])[: self.max_keys // 2]:
                del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
