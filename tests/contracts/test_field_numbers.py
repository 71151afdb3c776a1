"""Field numbers are never reused, and the lock in proto/fields.lock.json catches a reuse.

Consumers decode by number: a number that comes back with another name or type silently
corrupts every event still in a topic or the raw archive. These tests pin that guard, using
small proto trees in a temporary directory for the cases that must fail.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import descriptor

from tunewire.contracts.v1 import (
    datasets_pb2,
    deployments_pb2,
    evaluations_pb2,
    events_pb2,
    examples_pb2,
    objectives_pb2,
    records_pb2,
    training_pb2,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULES = [
    datasets_pb2,
    deployments_pb2,
    evaluations_pb2,
    events_pb2,
    examples_pb2,
    objectives_pb2,
    records_pb2,
    training_pb2,
]


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "tunewire_proto_generate", REPO_ROOT / "proto" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


def _all_messages() -> list[descriptor.Descriptor]:
    found: list[descriptor.Descriptor] = []

    def walk(message_type: descriptor.Descriptor) -> None:
        found.append(message_type)
        for nested in message_type.nested_types:
            walk(nested)

    for module in MODULES:
        for message_type in module.DESCRIPTOR.message_types_by_name.values():
            walk(message_type)
    return found


def _all_enums() -> list[descriptor.EnumDescriptor]:
    enums = [e for m in MODULES for e in m.DESCRIPTOR.enum_types_by_name.values()]
    return enums + [e for message_type in _all_messages() for e in message_type.enum_types]


@pytest.mark.parametrize("message_type", _all_messages(), ids=lambda m: m.full_name)
def test_no_field_number_is_used_twice(message_type: descriptor.Descriptor) -> None:
    numbers = [field.number for field in message_type.fields]
    assert len(numbers) == len(set(numbers))


@pytest.mark.parametrize("enum", _all_enums(), ids=lambda e: e.full_name)
def test_enums_follow_the_buf_style(enum: descriptor.EnumDescriptor) -> None:
    prefix = "".join(f"_{c}" if c.isupper() else c.upper() for c in enum.name).lstrip("_")
    numbers = [value.number for value in enum.values]
    assert len(numbers) == len(set(numbers)), "no aliases"
    assert enum.values[0].name == f"{prefix}_UNSPECIFIED"
    assert enum.values[0].number == 0
    assert all(value.name.startswith(f"{prefix}_") for value in enum.values)


def test_committed_proto_matches_its_lock() -> None:
    lock = generate.load_lock(generate.LOCK_PATH)
    _, current = generate.compile_protos(generate.PROTO_ROOT)
    assert lock is not None
    assert generate.check_compatibility(lock, current) == []
    assert generate.render_lock(current) == generate.LOCK_PATH.read_text()


def test_record_and_objective_changed_keep_their_agreed_shape() -> None:
    """Other services build these two by field number; they are pinned here, not only locked."""
    _, current = generate.compile_protos(generate.PROTO_ROOT)
    fields = {
        name: (entry["number"], entry["type"])
        for name, entry in current["messages"]["tunewire.v1.Record"]["fields"].items()
    }
    assert fields == {
        "objective": (1, "string"),
        "objective_version": (2, "int32"),
        "source_id": (3, "string"),
        "text": (4, "string"),
        "fields_json": (5, "string"),
        "event_type": (6, "string"),
        "event_id": (7, "string"),
        "event_source": (8, "string"),
        "occurred_at": (9, "google.protobuf.Timestamp"),
        "ingested_at": (10, "google.protobuf.Timestamp"),
        "redactions": (11, "map<string, int32>"),
    }
    fields = {
        name: (entry["number"], entry["type"])
        for name, entry in current["messages"]["tunewire.v1.ObjectiveChanged"]["fields"].items()
    }
    assert fields == {
        "name": (1, "string"),
        "version": (2, "int32"),
        "status": (3, "tunewire.v1.ObjectiveStatus"),
        "spec_json": (4, "string"),
        "changed_at": (5, "google.protobuf.Timestamp"),
        "changed_by": (6, "string"),
    }
    assert current["enums"]["tunewire.v1.ObjectiveStatus"]["values"] == {
        "OBJECTIVE_STATUS_UNSPECIFIED": 0,
        "OBJECTIVE_STATUS_ACTIVE": 1,
        "OBJECTIVE_STATUS_RETIRED": 2,
    }


BASE = """
    message Thing {
      string name = 1;
      int32 size = 2;
      string note = 3;
    }
    enum Colour {
      COLOUR_UNSPECIFIED = 0;
      COLOUR_RED = 1;
    }
"""


class ProtoTree:
    """A throw-away proto root, contracts folder and lock, driven through generate.py."""

    def __init__(self, root: Path) -> None:
        self.root = root / "proto"
        self.out = root / "out"
        self.lock = root / "fields.lock.json"

    def write(self, body: str) -> None:
        path = self.root / "tunewire" / "v1" / "things.proto"
        path.parent.mkdir(parents=True, exist_ok=True)
        header = 'syntax = "proto3";\npackage tunewire.v1;\n'
        path.write_text(header + textwrap.dedent(body))

    def run(self, *, check: bool) -> int:
        argv = ["--proto-root", str(self.root), "--out", str(self.out), "--lock", str(self.lock)]
        result: int = generate.main([*argv, "--check"] if check else argv)
        return result

    def problems(self) -> list[str]:
        lock = generate.load_lock(self.lock)
        assert lock is not None
        _, current = generate.compile_protos(self.root)
        result: list[str] = generate.check_compatibility(lock, current)
        return result


@pytest.fixture
def tree(tmp_path: Path) -> ProtoTree:
    tree = ProtoTree(tmp_path)
    tree.write(BASE)
    assert tree.run(check=False) == 0
    assert tree.run(check=True) == 0
    return tree


def test_a_reused_field_number_fails_the_check(
    tree: ProtoTree, capsys: pytest.CaptureFixture[str]
) -> None:
    tree.write(BASE.replace("int32 size = 2;", "string colour = 2;"))

    assert tree.run(check=True) == 1
    assert "number 2 was `size: int32` and is now `colour: string`" in capsys.readouterr().err
    assert len(tree.problems()) == 1


def test_a_changed_field_type_fails_the_check(tree: ProtoTree) -> None:
    tree.write(BASE.replace("int32 size = 2;", "int64 size = 2;"))

    assert tree.problems() == [
        "message tunewire.v1.Thing: number 2 was `size: int32` and is now `size: int64`; "
        "numbers are never reused: give the new member a new number and reserve 2"
    ]
    assert tree.run(check=True) == 1


def test_a_write_run_refuses_an_incompatible_change(tree: ProtoTree) -> None:
    locked = tree.lock.read_text()
    tree.write(BASE.replace("int32 size = 2;", "string colour = 2;"))

    assert tree.run(check=False) == 1
    assert tree.lock.read_text() == locked


def test_removing_a_field_needs_a_reservation(tree: ProtoTree) -> None:
    tree.write(BASE.replace("string note = 3;", ""))
    assert tree.problems() == [
        "message tunewire.v1.Thing: `note: string` = 3 was removed without `reserved 3;`"
    ]

    tree.write(BASE.replace("string note = 3;", 'reserved 3; reserved "note";'))
    assert tree.problems() == []
    assert tree.run(check=True) == 1, "the lock must be refreshed"
    assert tree.run(check=False) == 0
    assert tree.run(check=True) == 0


def test_a_reserved_number_stays_reserved(tree: ProtoTree) -> None:
    tree.write(BASE.replace("string note = 3;", "reserved 3 to 5;"))
    assert tree.run(check=False) == 0

    tree.write(BASE.replace("string note = 3;", "reserved 3; bool flag = 4;"))

    assert tree.problems() == [
        "message tunewire.v1.Thing: reserved 3 to 5 is no longer reserved "
        "(now used by `flag: bool` = 4); reserved numbers stay reserved"
    ]


def test_enum_values_keep_their_numbers(tree: ProtoTree) -> None:
    tree.write(BASE.replace("COLOUR_RED = 1;", "COLOUR_RED = 2;"))

    assert tree.problems() == [
        "enum tunewire.v1.Colour: `COLOUR_RED` = 1 was removed without `reserved 1;`"
    ]


def test_removing_a_message_fails_the_check(tree: ProtoTree) -> None:
    tree.write(BASE.split("enum")[0].replace("message Thing", "message Other"))

    assert "message tunewire.v1.Thing was removed; deprecate it instead" in tree.problems()
    assert "enum tunewire.v1.Colour was removed; deprecate it instead" in tree.problems()


def test_additive_changes_pass(tree: ProtoTree) -> None:
    tree.write(
        BASE.replace("string note = 3;", "string note = 3;\n  repeated string tags = 4;")
        + "message Extra { map<string, double> scores = 1; }\n"
    )

    assert tree.problems() == []
    assert tree.run(check=True) == 1, "generated code and lock are stale until regenerated"
    assert tree.run(check=False) == 0
    assert tree.run(check=True) == 0
    assert '"scores": {"number": 1, "type": "map<string, double>"}' in tree.lock.read_text()


def test_a_proto_that_does_not_compile_is_reported(
    tree: ProtoTree, capsys: pytest.CaptureFixture[str]
) -> None:
    tree.write(BASE.replace("int32 size = 2;", "int32 size = 1;"))

    assert tree.run(check=True) == 1
    assert "protoc failed" in capsys.readouterr().err
