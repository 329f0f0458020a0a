"""Renderings shared by the deploy tests: each is produced once per session."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from deploy.manifests import Release

# deploy.manifests needs the deploy extra: imported in the fixtures, so that without
# it the test modules report a skip instead of this file failing to import.


@pytest.fixture(scope="session")
def default_release() -> Release:
    from deploy.manifests import render_chart

    return render_chart()


@pytest.fixture(scope="session")
def full_release() -> Release:
    from deploy.manifests import FULL_VALUES, load_values, render_chart

    return render_chart(load_values(FULL_VALUES))


@pytest.fixture(scope="session")
def kustomize_release() -> Release:
    from deploy.manifests import Release, kustomize_files, load_docs

    docs = load_docs(path.read_text() for path in kustomize_files())
    return Release("django-ws", "", {}, docs)


@pytest.fixture(params=["chart-defaults", "chart-full", "kustomize-base"])
def release(request: pytest.FixtureRequest) -> Release:
    """Every shipped set of manifests: the wiring rules hold for each."""
    fixture = {
        "chart-defaults": "default_release",
        "chart-full": "full_release",
        "kustomize-base": "kustomize_release",
    }[request.param]
    return request.getfixturevalue(fixture)
