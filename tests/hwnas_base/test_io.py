"""Atomic writes: a file appears whole or not at all."""

from __future__ import annotations

from pathlib import Path

from hwnas_base.io import write_atomic


def test_write_atomic_replaces_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.csv"
    write_atomic(target, "a,b\n1,2\n")
    write_atomic(target, b"c\n")
    assert target.read_bytes() == b"c\n"
    assert [p.name for p in target.parent.iterdir()] == ["f.csv"]
    assert target.stat().st_mode & 0o777 == 0o644
