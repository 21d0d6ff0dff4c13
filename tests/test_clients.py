"""clients.py, pure: who a request comes from behind trusted proxies, and token buckets."""

from __future__ import annotations

import pytest

from sse_server.clients import TokenBuckets, TrustedPeers, forwarded_client, parse_address

PEER = ("127.0.0.1", 5000)
TRUSTED = TrustedPeers(["127.0.0.1", "::1", "10.0.0.0/8"])

# (headers, expected client address, expected proto, client trusted)
CHAINS = [
    ([], "127.0.0.1", None, True),  # no header: the peer itself
    ([("x-forwarded-for", "203.0.113.7")], "203.0.113.7", None, False),
    # The client wrote the left-most entry itself; the right-most untrusted one is who connected to our proxy.
    ([("x-forwarded-for", "1.1.1.1, 203.0.113.7")], "203.0.113.7", None, False),
    ([("x-forwarded-for", "203.0.113.7, 10.0.0.5")], "203.0.113.7", None, False),  # through two trusted hops
    ([("x-forwarded-for", "203.0.113.7"), ("x-forwarded-for", "10.0.0.5")], "203.0.113.7", None, False),
    ([("x-forwarded-for", "10.0.0.9, 10.0.0.5")], "10.0.0.9", None, True),  # all trusted: the left-most
    ([("x-forwarded-for", "garbage, 10.0.0.5")], "10.0.0.5", None, True),  # not an address: the last trusted hop
    ([("x-forwarded-for", "203.0.113.7"), ("x-forwarded-proto", "https")], "203.0.113.7", "https", False),
    ([("x-forwarded-for", "203.0.113.7"), ("x-forwarded-proto", "gopher")], "203.0.113.7", None, False),
    ([("x-forwarded-proto", "https")], "127.0.0.1", "https", True),
    ([("x-forwarded-for", "2001:db8::1")], "2001:db8::1", None, False),
    ([("x-forwarded-for", "::ffff:203.0.113.7")], "203.0.113.7", None, False),
    ([("forwarded", 'for=192.0.2.60;proto=https;by=203.0.113.43')], "192.0.2.60", "https", False),
    ([("forwarded", 'for="[2001:db8:cafe::17]:4711";proto=http, for=10.0.0.5')], "2001:db8:cafe::17", "http", False),
    ([("forwarded", "for=unknown")], "127.0.0.1", None, True),  # RFC 7239 §6.2: nobody to name
    # Forwarded wins: a client's own X-Forwarded-For does not override what the proxy wrote.
    ([("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=192.0.2.60")], "192.0.2.60", None, False),
]


@pytest.mark.parametrize(("headers", "address", "proto", "trusted"), CHAINS, ids=[str(c[0]) for c in CHAINS])
def test_forwarded_client_takes_the_rightmost_untrusted_address(
    headers: list[tuple[str, str]], address: str, proto: str | None, trusted: bool,
) -> None:
    """The client is the right-most address no trusted proxy vouches for; its proto is taken with it."""
    client, got_proto, got_trusted = forwarded_client(PEER, headers, TRUSTED)
    assert client is not None
    assert (client[0], got_proto, got_trusted) == (address, proto, trusted)


def test_a_padded_chain_is_read_only_so_far() -> None:
    """Thousands of trusted hops cost a bounded walk, not one per entry."""
    client, _, trusted = forwarded_client(PEER, [("x-forwarded-for", ", ".join(["10.0.0.1"] * 5000))], TRUSTED)
    assert client == ("10.0.0.1", 0) and trusted


@pytest.mark.parametrize(("text", "expected"), [
    ("192.0.2.1", "192.0.2.1"), ("192.0.2.1:8080", "192.0.2.1"), ('"[2001:db8::1]:4711"', "2001:db8::1"),
    ("2001:DB8::1", "2001:db8::1"), (" 192.0.2.1 ", "192.0.2.1"), ("unknown", None), ("_hidden", None),
    ("", None), ("999.1.1.1", None), ("192.0.2.1\r\nX: y", None),
])
def test_parse_address(text: str, expected: str | None) -> None:
    """Only a real address comes out, normalised; names, garbage and control characters are None."""
    assert parse_address(text) == expected


def test_trusted_peers_match_addresses_and_networks() -> None:
    """Exact addresses, CIDRs and IPv4-mapped IPv6 peers match; others and non-addresses do not; * matches all."""
    peers = TrustedPeers(["127.0.0.1", "::1", "10.0.0.0/8", "fd00::/8"])
    assert all(p in peers for p in ("127.0.0.1", "::1", "10.255.0.1", "fd12::1", "::ffff:10.0.0.1"))
    assert not any(p in peers for p in ("127.0.0.2", "11.0.0.1", "fe80::1", "not-an-ip", ""))
    assert "203.0.113.9" in TrustedPeers(["*"])
    with pytest.raises(ValueError):
        TrustedPeers(["10.0.0.0/33"])


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    """burst takes at once, then one per 1/rate seconds; the wait says how long; keys are separate."""
    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.take("a", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 100.0) == pytest.approx(0.5)
    assert buckets.take("b", 100.0) == 0.0
    assert buckets.take("a", 100.5) == 0.0  # one token back after 1/rate
    assert buckets.take("a", 100.5) > 0
    assert [buckets.take("a", 110.0) for _ in range(3)] == [0.0, 0.0, 0.0]  # refilled to burst, not beyond
    assert buckets.take("a", 110.0) > 0


def test_token_buckets_forget_idle_clients() -> None:
    """A table full of refilled buckets drops them, so many one-off clients cost no memory for long."""
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=100)
    for i in range(100):
        buckets.take(f"c{i}", 0.0)
    buckets.take("late", 10.0)  # everyone else has refilled by now
    assert len(buckets) == 1
    for i in range(300):
        buckets.take(f"busy{i}", 10.0)  # none refilled: the table still stays bounded
    assert len(buckets) <= 100
