"""The edge's local membership index: transitions that drive broker subscriptions."""

from __future__ import annotations

from django_ws_edge.group_index import GroupIndex


def test_first_join_and_last_leave_are_reported() -> None:
    index = GroupIndex()
    assert index.add("room", "c1") is True
    assert index.add("room", "c2") is False
    assert index.add("room", "c2") is False
    assert list(index.members("room")) == ["c1", "c2"]
    assert index.discard("room", "c1") is False
    assert index.discard("room", "c1") is False
    assert index.discard("room", "c2") is True
    assert "room" not in index and len(index) == 0


def test_removing_a_channel_empties_only_its_last_groups() -> None:
    index = GroupIndex()
    index.add("a", "c1")
    index.add("b", "c1")
    index.add("b", "c2")
    assert index.remove_channel("c1") == ["a"]
    assert index.groups() == ["b"] and index.groups_of("c1") == frozenset()
    assert index.remove_channel("unknown") == []


def test_members_is_a_snapshot() -> None:
    index = GroupIndex()
    for i in range(3):
        index.add("g", f"c{i}")
    for channel in index.members("g"):
        index.discard("g", channel)
    assert "g" not in index


def test_a_channels_groups_are_tracked_through_one_and_many() -> None:
    """One group is kept as its name, more as a set: joins, repeated joins and leaves
    give the same answers either way."""
    index = GroupIndex()
    index.add("a", "c1")
    index.add("a", "c1")
    assert index.groups_of("c1") == frozenset({"a"})
    index.add("b", "c1")
    index.add("c", "c1")
    assert index.groups_of("c1") == frozenset({"a", "b", "c"})
    index.discard("b", "c1")
    assert index.groups_of("c1") == frozenset({"a", "c"})
    index.discard("a", "c1")
    assert index.groups_of("c1") == frozenset({"c"})
    index.add("d", "c1")
    assert index.groups_of("c1") == frozenset({"c", "d"})
    assert sorted(index.remove_channel("c1")) == ["c", "d"]
    assert index.groups_of("c1") == frozenset() and len(index) == 0
