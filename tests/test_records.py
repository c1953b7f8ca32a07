"""Records behave as the dataclasses they stand in for, in everything nvreload's values use."""

import dataclasses

import pytest

from nvreload.records import FrozenRecordError, field, fields, record, replace


@record
class Plain:
    name: str
    count: int = 0
    tags: list = field(default_factory=list)
    note: dict = field(default_factory=dict, compare=False)


@record(frozen=True)
class Frozen:
    key: str
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def test_fields_are_taken_by_position_or_by_name_with_their_defaults():
    assert Plain("a", 2) == Plain(name="a", count=2) == Plain("a", count=2, tags=[])
    assert (Plain("a").count, Plain("a").tags) == (0, [])
    with pytest.raises(TypeError, match="missing the argument 'name'"):
        Plain()
    with pytest.raises(TypeError, match="unexpected argument 'colour'"):
        Plain("a", colour="red")
    with pytest.raises(TypeError, match="two values for 'name'"):
        Plain("a", name="b")


def test_a_default_factory_gives_each_record_its_own_value():
    first, second = Plain("a"), Plain("b")
    first.tags.append("x")
    assert second.tags == []


def test_a_field_that_does_not_compare_is_left_out_of_equality_and_the_hash():
    assert Plain("a", note={"x": 1}) == Plain("a", note={"y": 2})
    assert Plain("a", tags=[1]) != Plain("a", tags=[2])
    assert Frozen("k", {"a": 1}) == Frozen("k", {"b": 2}) and hash(Frozen("k", {"a": 1})) == hash(Frozen("k"))
    assert Plain("a") != Frozen("a")  # another class is never equal


def test_a_frozen_record_refuses_changes_and_can_be_a_key_a_plain_one_cannot():
    key = Frozen("k")
    with pytest.raises(FrozenRecordError):
        key.key = "other"  # type: ignore[misc]
    assert {key: 1}[Frozen("k")] == 1
    with pytest.raises(TypeError):
        hash(Plain("a"))


def test_replace_gives_a_changed_copy_as_dataclasses_replace_does():
    original = Plain("a", 1, ["t"])
    assert replace(original, count=5) == Plain("a", 5, ["t"]) and original.count == 1
    assert dataclasses.replace(original, name="b") == Plain("b", 1, ["t"])  # what the tests use
    assert [f.name for f in fields(Plain)] == ["name", "count", "tags", "note"]


def test_repr_names_every_field():
    assert repr(Plain("a")) == "Plain(name='a', count=0, tags=[], note={})"
