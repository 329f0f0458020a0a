"""Hypothesis settings for the fuzz targets: a few seconds each by default, longer on demand.

``FUZZ_EXAMPLES=10000 python -m pytest tests/robustness -k fuzz`` runs every target with
that many examples (the default run uses each target's own small number).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def examples(default: int) -> int:
    """How many examples a target runs: ``FUZZ_EXAMPLES`` when set, else ``default``."""
    return int(os.environ.get("FUZZ_EXAMPLES", default))


def fuzz_settings(default: int) -> settings:
    """Settings for one target: no deadline (real processes answer in variable time),
    and one server shared by every example (the function-scoped ``stack`` fixture)."""
    return settings(
        max_examples=examples(default),
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


def timeout_for(default_examples: int, seconds_per_example: float, floor: float = 60) -> float:
    """A pytest timeout that grows with ``FUZZ_EXAMPLES`` (long runs must not be cut)."""
    return max(floor, examples(default_examples) * seconds_per_example + 30)
