"""The edge's defences, driven directly: handshake validation, rate limits, log limits."""

from __future__ import annotations

from websockets.datastructures import Headers
from websockets.http11 import Request

from django_ws_edge.guards import SourceLogLimiter, TokenBucket, invalid_handshake


def request(**headers: str) -> Request:
    base = {
        "Host": "example.com",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    base.update(headers)
    return Request("/ws/", Headers({k: v for k, v in base.items() if v}))


def test_a_valid_handshake_passes() -> None:
    assert invalid_handshake(request()) is None


def test_plain_http_gets_426_and_bad_headers_400() -> None:
    plain = invalid_handshake(request(Upgrade="", Connection=""))
    assert plain is not None and plain.status_code == 426 and plain.headers["Upgrade"] == "websocket"
    assert invalid_handshake(request(**{"Sec-WebSocket-Key": ""})).status_code == 400  # type: ignore[union-attr]
    assert invalid_handshake(request(**{"Sec-WebSocket-Key": "short"})).status_code == 400  # type: ignore[union-attr]
    wrong_version = invalid_handshake(request(**{"Sec-WebSocket-Version": "8"}))
    assert wrong_version is not None and wrong_version.status_code == 400
    assert b"Sec-WebSocket-Version" in wrong_version.body


def test_token_bucket_allows_bursts_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.allow(now=0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.allow(now=0.05) is False  # half a token
    assert bucket.allow(now=0.1) is True
    assert bucket.allow(now=10.0) and bucket.tokens == 2  # refills up to the burst only


def test_source_log_limiter_once_per_second_per_source_and_bounded() -> None:
    limiter = SourceLogLimiter(interval=1.0, max_sources=3)
    assert limiter.allow("a", now=0.0) and not limiter.allow("a", now=0.5)
    assert limiter.allow("b", now=0.5) and limiter.allow("a", now=1.01)
    for source in "cdef":
        limiter.allow(source, now=2.0)
    assert len(limiter._last) == 3 and limiter.suppressed == 1
