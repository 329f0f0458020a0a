"""Hot-path tallies reach Prometheus exactly as direct increments would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from django_ws_edge import metrics


def samples(name: str) -> dict[str, float]:
    from prometheus_client import REGISTRY

    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for family in REGISTRY.collect()
        if family.name == name
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_latency_tally_matches_direct_observations() -> None:
    values = [0.0001, 0.0005, 0.0007, 0.003, 0.02, 0.02, 0.3, 7.0]
    reference = Histogram(
        "reference_latency_seconds",
        "same buckets",
        buckets=metrics.DELIVERY_LATENCY._upper_bounds[:-1],
        registry=CollectorRegistry(),
    )
    before = samples("django_ws_edge_delivery_latency_seconds")
    tally = metrics.Tally()
    for value in values:
        tally.observe_latency(value)
        reference.observe(value)
    tally.flush()
    after = samples("django_ws_edge_delivery_latency_seconds")
    added = {
        key.replace("django_ws_edge_delivery_latency_seconds", ""): after[key] - before.get(key, 0)
        for key in after
    }
    expected = {
        s.name.replace("reference_latency_seconds", "") + str(sorted(s.labels.items())): s.value
        for s in next(iter(reference.collect())).samples
        if not s.name.endswith("_created")
    }
    assert added.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(added[key] - value) < 1e-9, key
    assert tally.latency_counts == [0] * len(tally.latency_counts) and tally.latency_sum == 0
    assert generate_latest()  # the registry still renders


def test_counter_tallies_flush_and_reset() -> None:
    before = samples("django_ws_edge_messages_sent")
    tally = metrics.Tally()
    tally.sent += 5
    tally.flush()
    tally.flush()
    after = samples("django_ws_edge_messages_sent")
    key = "django_ws_edge_messages_sent_total[]"
    assert after[key] - before.get(key, 0) == 5
