"""Atomic writes and temp folders: modes follow the umask (tempfile's are 0600/0700)."""

import json
import os
import stat

import numpy as np
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

    a = make_temp_dir(tmp_path, "02_export")
    b = make_temp_dir(tmp_path, "02_export")
    assert a != b and a.parent == tmp_path and a.name.startswith(".02_export.")
    assert a.name.endswith(".tmp") and len(a.name) == len(".02_export.12345678.tmp")
    assert a.is_dir() and list(a.iterdir()) == [] and _mode(a) == 0o750


def test_clean_temps_removes_what_atomic_writes_leave_and_nothing_else(tmp_path, monkeypatch):
    """A writer killed mid-write leaves `.NAME.<random>.tmp` files and folders; the cleanup
    pattern used to be `.*.tmp-*`, which matched none of the files atomic writes create."""
    from pipeline import artifacts
    from pipeline.artifacts import atomic_output, clean_temps, make_temp_dir

    def killed(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifacts.os, "replace", killed)  # dies between write and rename
    monkeypatch.setattr(artifacts.os, "unlink", killed)  # and before its own cleanup
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "report.json", b"{}")
    monkeypatch.undo()
    make_temp_dir(tmp_path, "01_train")
    with atomic_output(tmp_path / "model.keras") as tmp:  # its temp folder, before it lands
        (tmp_path / "x").write_text("keep")
        leftovers = sorted(p.name.split(".")[1] for p in tmp_path.glob(artifacts.TEMP_GLOB))
        assert leftovers == ["01_train", "model", "report"]
        tmp.write_text("model")
    for keep in ("notes.tmp", ".hidden", "a.tmp-1"):
        (tmp_path / keep).write_text("user")
    clean_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".hidden", "a.tmp-1", "model.keras", "notes.tmp", "x"]


@pytest.mark.parametrize("value, text", [(float("nan"), "nan"), (float("inf"), "inf"),
                                         (np.float32("-inf"), "-inf")])
def test_json_is_standard_and_a_non_finite_number_is_one_error(tmp_path, value, text):
    """A NaN metric was written as a bare `NaN` into metrics.json/manifest.json (not JSON)."""
    from pipeline.errors import UserError

    path = tmp_path / "metrics.json"
    with pytest.raises(UserError) as e:
        atomic_write_json(path, {"metrics": {"history": [{"loss": 0.5}, {"loss": value}]}})
    assert str(e.value) == (f"{path}: metrics.history.1.loss is {text}, which JSON cannot hold; "
                            f"a measurement came out as not-a-number (did training diverge? try a "
                            f"lower learning_rate)")
    assert list(tmp_path.iterdir()) == []
    atomic_write_json(path, {"a": np.float32(0.5), "b": np.arange(2)})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1]}


def test_every_json_we_write_is_standard():
    """metrics.json and manifest.json held a bare `NaN`: every json.dump(s) in the two programs
    passes allow_nan=False (or goes through artifacts.json_text), except the one that only
    hashes (sha256_json, never written)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    loose = []
    for f in sorted([*root.glob("pipeline/**/*.py"), *root.glob("edge_runner/**/*.py")]):
        tree = ast.parse(f.read_text())
        exempt = {id(c) for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)
                  and fn.name == "sha256_json" for c in ast.walk(fn)}
        for call in ast.walk(tree):
            if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr in ("dump", "dumps")
                    and getattr(call.func.value, "id", None) == "json" and id(call) not in exempt
                    and not any(k.arg == "allow_nan" and getattr(k.value, "value", 1) is False
                                for k in call.keywords)):
                loose.append(f"{f.relative_to(root)}:{call.lineno}")
    assert loose == []
