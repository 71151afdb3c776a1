"""The committed contracts package is exactly what `proto/generate.py` produces.

Generated code is never edited by hand, so regenerating must change nothing; and `--check` must
notice a stale or hand-edited file without touching it, or `make` could not rely on it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATOR = REPO_ROOT / "proto" / "generate.py"
CONTRACTS = REPO_ROOT / "services" / "tunewire" / "contracts" / "v1"


def _check(*extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), "--check", *extra],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_regeneration_is_byte_identical() -> None:
    result = _check()
    assert result.returncode == 0, result.stderr


def test_check_lists_stale_files_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "v1"
    shutil.copytree(CONTRACTS, out, ignore=shutil.ignore_patterns("__pycache__"))
    edited = out / "records_pb2.pyi"
    edited.write_text(edited.read_text() + "# edited by hand\n")
    (out / "records_pb2.py").unlink()
    (out / "leftover_pb2.py").write_text("")

    result = _check("--out", str(out))

    assert result.returncode == 1
    assert "records_pb2.pyi (differs)" in result.stderr
    assert "records_pb2.py (missing)" in result.stderr
    assert "leftover_pb2.py (not generated; would be deleted)" in result.stderr
    assert "make contracts" in result.stderr
    assert edited.read_text().endswith("# edited by hand\n")
    assert not (out / "records_pb2.py").exists()
    assert (out / "leftover_pb2.py").exists()


def test_check_fails_on_a_stale_lock(tmp_path: Path) -> None:
    lock = tmp_path / "fields.lock.json"
    lock.write_text('{"messages": {}, "enums": {}}\n')

    result = _check("--lock", str(lock))

    assert result.returncode == 1
    assert "fields.lock.json (out of date)" in result.stderr


def test_cross_file_imports_point_at_the_contracts_package(tmp_path: Path) -> None:
    package = tmp_path / "proto" / "tunewire" / "v1"
    package.mkdir(parents=True)
    header = 'syntax = "proto3";\npackage tunewire.v1;\n'
    (package / "a.proto").write_text(header + "message A { string x = 1; }\n")
    (package / "b.proto").write_text(
        header + 'import "tunewire/v1/a.proto";\nmessage B { A a = 1; }\n'
    )
    out = tmp_path / "out"

    result = subprocess.run(
        [
            sys.executable,
            str(GENERATOR),
            "--proto-root",
            str(tmp_path / "proto"),
            "--out",
            str(out),
            "--lock",
            str(tmp_path / "fields.lock.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in out.iterdir()) == [
        "__init__.py",
        "a_pb2.py",
        "a_pb2.pyi",
        "b_pb2.py",
        "b_pb2.pyi",
    ]
    for name in ("b_pb2.py", "b_pb2.pyi"):
        source = (out / name).read_text()
        assert "from tunewire.contracts.v1 import a_pb2 as " in source
        assert "tunewire.v1 import" not in source
    assert "'tunewire.contracts.v1.b_pb2'" in (out / "b_pb2.py").read_text()
