"""Label values that come from clients are bucketed, so series stay bounded."""

from __future__ import annotations

from django_ws_edge.metrics import close_code_label, status_label


def test_close_codes_are_bucketed() -> None:
    labels = {close_code_label(code) for code in range(0, 70000)}
    print(f"\n70000 close codes give {len(labels)} labels: {sorted(labels)}")
    assert close_code_label(1000) == "1000"
    assert close_code_label(1011) == "1011"
    assert close_code_label(1004) == "other"  # reserved, never sent on the wire
    assert close_code_label(3001) == "3000-3999"
    assert close_code_label(4001) == close_code_label(4999) == "4000-4999"
    assert close_code_label(5000) == close_code_label(999) == "other"
    assert len(labels) == 18


def test_statuses_are_bounded() -> None:
    assert status_label(404) == "404"
    assert status_label(1000) == status_label(42) == "other"
