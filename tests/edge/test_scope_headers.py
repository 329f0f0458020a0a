"""Headers and host addresses that handshakes repeat are shared between scopes, within
bounds; values that may carry a secret never are."""

from __future__ import annotations

import pytest

from django_ws_edge import scope


@pytest.fixture(autouse=True)
def empty_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scope, "_shared_headers", {})


def test_repeated_common_headers_are_one_object() -> None:
    agent = "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0"
    # Two handshakes parse the same value into two distinct strings.
    first = scope._header(b"user-agent", "".join(list(agent)))
    second = scope._header(b"user-agent", "".join(list(agent)))
    assert first == (b"user-agent", agent.encode()) and first is second
    # The same value under another name is another header.
    assert scope._header(b"origin", agent) == (b"origin", agent.encode())


def test_values_of_other_headers_are_never_kept() -> None:
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    first = scope._header(b"sec-websocket-key", key)
    assert first == (b"sec-websocket-key", key.encode())
    assert scope._shared_headers == {}


def test_the_table_stays_bounded_whatever_a_client_sends() -> None:
    for n in range(scope.SHARED_VALUES_MAX + 500):
        assert scope._header(b"origin", f"https://{n}.example")[1] == (
            f"https://{n}.example".encode()
        )
    assert len(scope._shared_headers) == scope.SHARED_VALUES_MAX
    long = "x" * (scope.SHARED_VALUE_LENGTH_MAX + 1)
    scope._shared_headers.clear()
    assert scope._header(b"origin", long)[1] == long.encode()
    assert scope._shared_headers == {}


def test_latin_1_values_keep_their_bytes() -> None:
    assert scope._header(b"user-agent", "caf\xe9")[1] == b"caf\xe9"


def test_a_subprotocol_is_never_kept_it_may_carry_a_token() -> None:
    token = "access_token, eyJhbGciOiJIUzI1NiJ9.e30.sig"
    assert scope._header(b"sec-websocket-protocol", token)[1] == token.encode()
    assert scope._shared_headers == {}


def test_client_and_server_hosts_are_shared_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scope, "_shared_hosts", {})
    first = scope._address(("".join(list("10.0.0.7")), 50001))
    second = scope._address(("".join(list("10.0.0.7")), 50002))
    assert first == ["10.0.0.7", 50001] and second == ["10.0.0.7", 50002]
    assert first is not None and second is not None and first[0] is second[0]
    assert scope._address("/run/app.sock") is None
    for n in range(scope.SHARED_VALUES_MAX + 10):
        scope._address((f"10.1.{n // 256}.{n % 256}", 1))
    assert len(scope._shared_hosts) == scope.SHARED_VALUES_MAX
