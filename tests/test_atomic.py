"""fedx.atomic: a reader sees the old file or the new one, never a partial one, and no temporary is left."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fedx.atomic import atomic_file, write_atomic


def test_write_replaces_the_file_with_exact_mode(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_bytes(b"old")
    old_umask = os.umask(0)
    try:
        write_atomic(path, b"new", mode=0o600)
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_atomic(path, "text é")
    assert path.read_text(encoding="utf-8") == "text é"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.key"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text("finished run")
    with pytest.raises(RuntimeError, match="disk gone"):
        with atomic_file(path) as fh:
            fh.write(b"half of the new")
            raise RuntimeError("disk gone")
    assert path.read_text() == "finished run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_the_new_content_is_invisible_until_the_block_ends(tmp_path: Path) -> None:
    path = tmp_path / "state.npz"
    path.write_bytes(b"round 3")
    with atomic_file(path) as fh:
        fh.write(b"round 4")
        assert path.read_bytes() == b"round 3"
    assert path.read_bytes() == b"round 4"
