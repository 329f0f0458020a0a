"""The websockets internals the edge relies on exist in the installed release: a release
that renames or drops one fails here, naming it, before any connection is served. The
frames the edge builds itself are websockets' own."""

from __future__ import annotations

import importlib.metadata

import pytest
from packaging.requirements import Requirement
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from django_ws_client import DISTRIBUTION
from django_ws_edge import ws_internals


def test_the_installed_websockets_has_every_internal_the_edge_uses() -> None:
    missing = ws_internals.incompatibilities()
    print(f"\nwebsockets {ws_internals.websockets_version}: missing internals {missing or 'none'}")
    assert not missing, f"websockets {ws_internals.websockets_version} lacks {missing}"
    ws_internals.require_compatible()


def test_the_supported_range_is_the_one_pyproject_declares() -> None:
    declared = next(
        Requirement(r)
        for r in importlib.metadata.requires(DISTRIBUTION) or []
        if Requirement(r).name == "websockets"
    )
    assert str(declared.specifier) == str(Requirement(f"websockets{ws_internals.SUPPORTED}").specifier)
    assert declared.specifier.contains(ws_internals.websockets_version)


def test_a_release_without_them_is_refused_with_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Stands for a websockets release that dropped one of the internals.
    monkeypatch.delattr(ws_internals.Connection, "acknowledge_pings")
    with pytest.raises(RuntimeError, match=r"lacks internals .*Connection\.acknowledge_pings"):
        ws_internals.require_compatible()


def _parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("an incomplete frame")


def test_a_repeated_message_is_framed_once_and_framed_right() -> None:
    frames = ws_internals.FrameCache()
    text = "hello, room " * 20
    first = frames.frame(text)
    assert frames.frame(text) is first  # the same string object: the same frame
    parsed = _parse(first)
    assert parsed.opcode is Opcode.TEXT and parsed.fin and parsed.data == text.encode()
    # An equal string that is another object is framed anew (identity, not equality,
    # is what the cache trusts), and gives the same bytes.
    again = frames.frame("".join(list(text)))
    assert again == first and again is not first
    binary = bytes(range(256))
    parsed = _parse(frames.frame(binary))
    assert parsed.opcode is Opcode.BINARY and parsed.data == binary


def test_the_frame_cache_keeps_no_large_message() -> None:
    frames = ws_internals.FrameCache(max_bytes=1024)
    big = "x" * 2000
    assert frames.frame(big) is not frames.frame(big)
    assert _parse(frames.frame(big)).data == big.encode()


def test_a_mutable_buffer_is_framed_anew_each_time() -> None:
    """A bytearray sent, changed and sent again goes out as it is at each send."""
    frames = ws_internals.FrameCache()
    buffer = bytearray(b"first")
    assert _parse(frames.frame(buffer)).data == b"first"  # type: ignore[arg-type]
    buffer[:] = b"second"
    assert _parse(frames.frame(buffer)).data == b"second"  # type: ignore[arg-type]
