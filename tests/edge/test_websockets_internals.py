"""The websockets internals the edge relies on exist in the installed release: a release
that renames or drops one fails here, naming it, before any connection is served."""

from __future__ import annotations

import importlib.metadata

import pytest
from packaging.requirements import Requirement

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
