"""Atomic writes and temp folders: modes follow the umask (tempfile's are 0600/0700)."""

import os
import stat

import pytest

from pipeline.artifacts import atomic_write_bytes, atomic_write_json


def _mode(p):
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_atomic_writes_get_the_umask_mode(tmp_path, umask_027):
    atomic_write_json(tmp_path / "manifest.json", {"a": 1})
    atomic_write_bytes(tmp_path / "sub" / "plot.png", b"png")
    atomic_write_bytes(tmp_path / "sub" / "plot.png", b"new")  # replacing keeps the rule
    assert _mode(tmp_path / "manifest.json") == 0o640
    assert _mode(tmp_path / "sub" / "plot.png") == 0o640
    assert _mode(tmp_path / "sub") == 0o750
    assert (tmp_path / "sub" / "plot.png").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["manifest.json", "plot.png", "sub"]


def test_make_temp_dir_gets_the_umask_mode_and_a_fresh_name(tmp_path, umask_027):
    from pipeline.artifacts import make_temp_dir

    a = make_temp_dir(tmp_path, ".02_export.tmp-")
    b = make_temp_dir(tmp_path, ".02_export.tmp-")
    assert a != b and a.parent == tmp_path and a.name.startswith(".02_export.tmp-")
    assert a.is_dir() and list(a.iterdir()) == [] and _mode(a) == 0o750
