"""Edge ids derived from keys, and secrets files read again when they change."""

from __future__ import annotations

from pathlib import Path

import pytest

from django_ws_broker.shard import edge_id_error
from django_ws_proto.credentials import (
    SecretFile,
    SecretFileError,
    edge_id_for,
    new_edge_key,
    parse_secrets,
)
from django_ws_proto.names import channel_home, channel_name_error


def test_edge_ids_follow_the_rules_and_only_their_key_gives_them() -> None:
    keys = [new_edge_key() for _ in range(1000)]
    ids = [edge_id_for(key) for key in keys]
    assert len(set(ids)) == 1000 and len(set(keys)) == 1000
    for key, edge_id in zip(keys, ids, strict=True):
        assert edge_id_for(key) == edge_id  # stateless: the broker derives it again
        assert edge_id_error(edge_id) is None
        channel = f"{edge_id}!{'f' * 16}"
        assert channel_name_error(channel) is None and channel_home(channel) == edge_id
    print(f"\nedge id: {ids[0]} ({len(ids[0])} characters)")


def test_secrets_are_listed_one_a_line_and_bad_ones_are_named_by_line() -> None:
    assert parse_secrets("\n  " + "a" * 16 + "  \n\n" + "b" * 40 + "\n", "f") == (
        "a" * 16,
        "b" * 40,
    )
    for text, expected in (
        ("", "holds no secret"),
        ("x" * 15, "line 1 is not a usable secret"),
        ("a" * 20 + "\nwith a space inside it", "line 2 is not a usable secret"),
        ("replace-me-with-something-random", "line 1 is a placeholder"),
    ):
        with pytest.raises(SecretFileError, match=expected) as refused:
            parse_secrets(text, "the file")
        assert "with a space" not in str(refused.value)


def test_a_secret_file_is_read_again_when_it_changes_and_survives_a_bad_update(
    tmp_path: Path,
) -> None:
    path = tmp_path / "publisher"
    path.write_text("old-secret-0123456789\n")
    now = [0.0]
    file = SecretFile(path, "--publisher-secrets", recheck=1.0, clock=lambda: now[0])
    assert file.values == ("old-secret-0123456789",)

    replacement = tmp_path / "staged"
    replacement.write_text("new-secret-0123456789\nold-secret-0123456789\n")
    replacement.replace(path)
    assert file.first == "old-secret-0123456789"  # not checked again within a second
    now[0] = 1.5
    assert file.values == ("new-secret-0123456789", "old-secret-0123456789")

    path.write_text("")  # an update that went wrong: the last good secrets stay
    now[0] = 3.0
    assert file.first == "new-secret-0123456789"
    path.unlink()
    now[0] = 4.5
    assert file.first == "new-secret-0123456789"
    with pytest.raises(SecretFileError, match="cannot read"):
        SecretFile(path, "--publisher-secrets")
