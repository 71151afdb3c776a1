"""The bucket's layout is built in one module; no service spells a shared prefix itself."""

from __future__ import annotations

import ast
import datetime
from pathlib import Path

import tunewire
from tunewire.core.state import layout

PACKAGE = Path(tunewire.__file__).parent
PREFIXES = (
    "objectives/",
    "raw/",
    "labels/",
    "datasets/",
    "runs/",
    "checkpoints/",
    "adapters/",
    "evaluations/",
    "registry/",
    "state/",
)


def _leading_text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        return _leading_text(node.values[0])
    return None


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            found.add(id(body[0].value))
    return found


def prefix_literals(path: Path) -> list[str]:
    """``file:line text`` of every string in ``path`` that starts like a bucket key."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in docstrings or isinstance(node, ast.FormattedValue):
            continue
        text = _leading_text(node)
        if text is not None and text.startswith(PREFIXES):
            found.append(f"{path.relative_to(PACKAGE)}:{getattr(node, 'lineno', '?')} {text!r}")
    return found


def test_no_module_but_the_layout_spells_a_bucket_prefix() -> None:
    sources = [
        p
        for p in PACKAGE.rglob("*.py")
        if "contracts" not in p.parts and p != PACKAGE / "core" / "state" / "layout.py"
    ]
    assert len(sources) > 100
    found = [hit for path in sources for hit in prefix_literals(path)]
    assert found == [], "build these keys with tunewire.core.state.layout:\n" + "\n".join(found)


def test_the_check_finds_a_spelled_prefix() -> None:
    sample = PACKAGE / "core" / "state" / "layout.py"
    hits = prefix_literals(sample)
    assert any("'raw/'" in hit for hit in hits)
    assert any("'runs/'" in hit for hit in hits)


def test_keys_nest_under_their_prefixes() -> None:
    day = datetime.date(2026, 12, 7)
    assert layout.raw_day("support", day) == "raw/support/dt=2026-12-07/"
    assert layout.raw_day("support", day).startswith(layout.raw_objective("support"))
    assert layout.dataset("support", "ds-1").startswith(layout.datasets("support"))
    assert layout.run("support", "ft-1").startswith(layout.runs("support"))
    assert layout.evaluation("support", "ft-1").startswith(layout.evaluations("support"))
    assert layout.objective_version("support", 3) == "objectives/support/v000003.json"
    assert layout.registry("support") == "registry/support.json"
    assert layout.service_state("ingest", "seen") == "state/ingest/seen/"
    keys = [
        layout.objective_version("a", 1),
        layout.raw_day("a", day),
        layout.label_examples("a"),
        layout.label_queue("a"),
        layout.dataset("a", "d"),
        layout.run("a", "r"),
        layout.checkpoints("a", "r"),
        layout.adapter("a", "r"),
        layout.evaluation("a", "r"),
        layout.registry("a"),
        layout.service_state("s", "w"),
    ]
    assert all(key.startswith(PREFIXES) for key in keys)
