"""Run folders: a run never touches what is not its own, never calls a stale stage done, and
bad input or a full disk leave nothing behind (issue 12)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import engine, recipe
from pipeline.artifacts import TEMP_GLOB
from pipeline.cli import main
from pipeline.errors import UserError
from tests.conftest import require
from tests.helpers import TINY_RECIPE, write_recipe

HEAD = TINY_RECIPE.split("stages:")[0]
#: the fastest real run: the untrained zoo model exported as built
EXPORT_ONLY = HEAD + "stages:\n  - export: {modes: [fp32]}\n"


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def invoke(*args):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def _error(result) -> str:
    """The one error line of a failed command (exit 2, no traceback), without `error: `."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0].removeprefix("error: ")


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


# ----- 1. data loss ------------------------------------------------------------------------------
def test_out_into_a_folder_that_is_not_a_run_is_refused_and_untouched(cli, tmp_path):
    """It deleted out/01_train/thesis.txt and overwrote report.json and recipe.yaml (exit 0)."""
    write_recipe(tmp_path, EXPORT_ONLY, name="r.yaml")
    out = tmp_path / "out"
    (out / "01_export").mkdir(parents=True)
    (out / "01_export" / "thesis.txt").write_text("four years of work")
    (out / "report.json").write_text("{\"mine\": 1}")
    (out / "recipe.yaml").write_text("my notes")
    before = _tree(out)
    assert _error(cli("run", "r.yaml", "--out", "out")) == (
        "out is not empty and is not an edgepipe run folder (it has no .edgepipe-run); nothing "
        "was changed in it; give --out a new or empty folder")
    assert _tree(out) == before


def test_a_run_folder_is_marked_and_reused_and_an_empty_folder_is_fine(cli, tmp_path):
    write_recipe(tmp_path, EXPORT_ONLY, name="r.yaml")
    (tmp_path / "empty").mkdir()
    r = cli("run", "r.yaml", "--out", "empty")
    assert r.exit_code == 0, r.output
    assert sorted(_tree(tmp_path / "empty")) == [
        ".edgepipe-run", ".lock", "01_export", "01_export/manifest.json", "01_export/metrics.json",
        "01_export/model_fp32.tflite", "recipe.yaml"]
    r = cli("run", "r.yaml", "--out", "empty")
    assert r.stdout.splitlines()[0] == "done: 1 stages (1 up to date, 0 run) in empty"


@pytest.mark.parametrize("name", [".", ".."])
def test_a_recipe_name_that_is_not_a_folder_of_its_own_is_refused(cli, tmp_path, name):
    """`name: ..` made the run folder runs/.. (the current folder): ./01_train/precious.txt
    was deleted and .lock and recipe.yaml written beside it."""
    write_recipe(tmp_path, TINY_RECIPE.replace("name: tiny", f"name: '{name}'"))
    (tmp_path / "01_train").mkdir()
    (tmp_path / "01_train" / "precious.txt").write_text("keep")
    before = _tree(tmp_path)
    line = (f"recipe.yaml:1: name: {name!r} is not a folder name of its own; use letters, "
            f"digits, '_', '-' and '.'")
    assert _error(cli("recipe", "check", "recipe.yaml")) == line
    assert _error(cli("run", "recipe.yaml")) == line
    assert _tree(tmp_path) == before


# ----- 2. stale results --------------------------------------------------------------------------
def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_killed_force_run_leaves_no_stale_stage_marked_done(tmp_path):
    """`--force` re-trained, then was killed during export: the next run said the old export
    (made from the previous model.keras) was up to date, and `status` agreed."""
    text = HEAD.replace("channels: 1}", "channels: 1, train_fraction: 0.2}") + (
        "stages:\n  - train: {epochs: 1}\n  - export: {modes: [fp32]}\n")
    rfile = write_recipe(tmp_path, text, name="r.yaml")
    run_dir = tmp_path / "run"
    engine.run(recipe.load(rfile), run_dir, recipe_text=text)
    model = run_dir / "01_train" / "model.keras"
    old_model = _sha(model)
    exported = json.loads((run_dir / "02_export" / "manifest.json").read_text())
    assert exported["provenance"]["inputs"] == {"01_train/model.keras": old_model}

    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(rfile), "--out",
                             str(run_dir), "--force"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(run_dir.glob(".02_export.*.tmp")):
            time.sleep(0.02)
        assert list(run_dir.glob(".02_export.*.tmp")), "export never started"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert _sha(model) != old_model  # train re-ran and committed (its .keras has a timestamp)
    assert json.loads((run_dir / "02_export" / "manifest.json").read_text()) == exported

    assert [r["state"] for r in engine.status(run_dir)] == ["done", "stale"]
    records = engine.run(recipe.load(rfile), run_dir)
    assert [r["state"] for r in engine.status(run_dir)] == ["done", "done"]
    redone = json.loads((run_dir / "02_export" / "manifest.json").read_text())
    assert redone["provenance"]["inputs"] == {"01_train/model.keras": _sha(model)}
    assert redone["finished"] >= exported["finished"] and records[1].metrics == redone["metrics"]
    assert not list(run_dir.glob(TEMP_GLOB))


# ----- 3. nothing behind on bad input ------------------------------------------------------------
def _npz_without_y_test(path: Path) -> None:
    x = np.zeros((20, 8, 8, 1), np.float32)
    np.savez(path, x_train=x, y_train=np.zeros(20, np.int64), x_test=x)


@pytest.mark.parametrize("case", ["npz key missing", "lambda model", "text as npz"])
def test_bad_data_or_model_fails_before_anything_is_written(cli, tmp_path, case):
    """The right one-line error came, but .lock, recipe.yaml and `[01_train] running` first."""
    import tf_keras as keras

    text = TINY_RECIPE
    if case == "npz key missing":
        _npz_without_y_test(tmp_path / "d.npz")
        text = text.replace("{name: digits,", "{name: npz, path: d.npz,")
        line = None
    elif case == "text as npz":
        (tmp_path / "d.npz").write_text("not a zip")
        text = text.replace("{name: digits,", "{name: npz, path: d.npz,")
        line = None
    else:
        inp = keras.Input((8, 8, 1))
        out = keras.layers.Dense(10)(keras.layers.Lambda(lambda t: t * 2, name="double")(
            keras.layers.Flatten()(inp)))
        keras.Model(inp, out).save(tmp_path / "m.keras")
        text = text.replace("zoo: small_cnn\n  options: {filters: [4], dense: 16, dropout: 0.0}",
                            "path: m.keras")
        line = ("m.keras carries Python code (Lambda layer 'double') that would run when it is "
                "loaded, and is refused; load it only if you trust it: pass --unsafe (recipe: "
                "unsafe: true)")
    write_recipe(tmp_path, text)
    before = _tree(tmp_path)
    r = cli("run", "recipe.yaml", "--out", "run")
    message = _error(r)
    if line is not None:
        assert message == line
    assert "running" not in r.stderr
    assert _tree(tmp_path) == before  # no run folder, no .lock, no recipe.yaml


# ----- 4. NaN ------------------------------------------------------------------------------------
def test_a_nan_metric_fails_its_stage_and_commits_nothing(tmp_path, monkeypatch):
    """metrics.json and manifest.json held a bare NaN (not JSON) and the run exited 0."""
    from pipeline.stages.base import StageResult
    from pipeline.stages.export import Export

    monkeypatch.setattr(Export, "run", lambda self, ctx, cfg: StageResult(
        [], {"history": {"loss": [0.3, float("nan")]}}))
    run_dir = tmp_path / "run"
    with pytest.raises(UserError) as e:
        engine.run(recipe.parse(EXPORT_ONLY), run_dir)
    assert str(e.value) == (f"{run_dir}/01_export/metrics.json: metrics.history.loss.1 is nan, "
                            f"which JSON cannot hold; a measurement came out as not-a-number (did "
                            f"training diverge? try a lower learning_rate)")
    assert sorted(p.name for p in run_dir.iterdir()) == [".edgepipe-run", ".lock"]


def test_a_recipe_or_inventory_that_is_not_utf8_is_one_line(cli, tmp_path):
    (tmp_path / "r.yaml").write_bytes(TINY_RECIPE.encode().replace(b"tiny", b"t\xe9st"))
    assert _error(cli("recipe", "check", "r.yaml")) == (
        "r.yaml:1: the recipe is not UTF-8 text (byte 0xe9 at offset 7); save it as UTF-8")
    (tmp_path / "devices.yaml").write_bytes(b"devices:\n  pi:\n    host: caf\xe9\n")
    assert _error(cli("devices", "list", "--devices", "devices.yaml")) == (
        "devices.yaml:3: the device inventory is not UTF-8 text (byte 0xe9 at offset 28); save "
        "it as UTF-8")
    assert sorted(_tree(tmp_path)) == ["devices.yaml", "r.yaml"]


# ----- 5. resources ------------------------------------------------------------------------------
def _bomb(indent: str) -> str:
    """Nine levels of nine aliases: 9**10 values once expanded, in half a kilobyte."""
    lines = [f"{indent}a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\n"]
    for prev, cur in zip("abcdefghi", "bcdefghij"):
        lines.append(f"{indent}{cur}: &{cur} [{', '.join(['*' + prev] * 9)}]\n")
    return "".join(lines)


def test_a_yaml_alias_bomb_is_refused_at_load_time(cli, tmp_path):
    """A 1 KB recipe passed `recipe check`, then `run` reached 3 GB while fingerprinting."""
    text = TINY_RECIPE.replace("options: {filters: [4], dense: 16, dropout: 0.0}\n",
                               "options:\n" + _bomb("    "))
    assert len(text) < 1500
    write_recipe(tmp_path, text)
    t0 = time.time()
    line = ("recipe.yaml: YAML aliases expand to more than 100,000 values (an alias bomb?); "
            "write the values out instead of nesting aliases")
    assert _error(cli("recipe", "check", "recipe.yaml")) == line
    assert _error(cli("run", "recipe.yaml")) == line
    assert time.time() - t0 < 5
    (tmp_path / "devices.yaml").write_text("x:\n" + _bomb("  ") + "devices: {}\n")
    assert _error(cli("devices", "list", "--devices", "devices.yaml")) == line.replace(
        "recipe.yaml", "devices.yaml")
    (tmp_path / "self.yaml").write_text("name: &n [1, *n]\n")
    assert _error(cli("recipe", "check", "self.yaml")) == (
        "self.yaml:1: a YAML alias refers to a value that contains it; write the value out "
        "instead")
    assert sorted(_tree(tmp_path)) == ["devices.yaml", "recipe.yaml", "self.yaml"]


@pytest.fixture
def small_disk(tmp_path):
    """A real file system of 16 KiB (tmpfs): room for a run folder, not for a Keras model."""
    require(os.geteuid() == 0, "mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_is_one_line_leaves_nothing_half_written_and_resumes(cli, tmp_path,
                                                                          small_disk):
    text = HEAD + "stages:\n  - train: {epochs: 1}\n"
    write_recipe(tmp_path, text, name="r.yaml")
    assert _error(cli("run", "r.yaml", "--out", small_disk / "run")) == (
        f"{small_disk}/run/01_train/model.keras: No space left on device; free some space and "
        f"run again")
    assert sorted(_tree(small_disk)) == ["run", "run/.edgepipe-run", "run/.lock", "run/recipe.yaml"]
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    r = cli("run", "r.yaml", "--out", small_disk / "run")
    assert r.exit_code == 0, r.output
    assert [x["state"] for x in engine.status(small_disk / "run")] == ["done"]


def test_a_read_only_output_folder_is_one_line(cli, tmp_path, small_disk):
    write_recipe(tmp_path, EXPORT_ONLY, name="r.yaml")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert _error(cli("run", "r.yaml", "--out", small_disk / "run")) == (
        f"{small_disk}/run: Read-only file system; write somewhere else")
    assert list(small_disk.iterdir()) == []


#: the CLI run with the file modes enforced: as root, CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
#: leave the bounding set (prctl PR_CAPBSET_DROP) before exec, so root obeys modes as any user
#: does, while still owning its files (a 0700 /root holding the interpreter stays readable)
_AS_A_USER = """\
import ctypes, os, sys
if os.geteuid() == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def _run_as_a_user(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.run([sys.executable, "-c", _AS_A_USER, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _not_writable(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    probe = _run_as_a_user(folder.parent, "-c", f"open({str(folder / 'probe')!r}, 'w')")
    assert "PermissionError: [Errno 13] Permission denied" in probe.stderr, probe.stderr
    return folder


@pytest.mark.slow
def test_permission_denied_is_one_line_naming_the_path_and_nothing_is_written(tmp_path):
    """Not tested before (root ignores file modes). An unwritable existing output folder named
    the temporary file edgepipe tried to create (`ro/..edgepipe-run.983cbda7.tmp`), and so did
    a finished run folder made unwritable (`done/.recipe.yaml.aa01bab5.tmp`)."""
    write_recipe(tmp_path, EXPORT_ONLY, name="r.yaml")
    engine.run(recipe.load(tmp_path / "r.yaml"), tmp_path / "done", recipe_text=EXPORT_ONLY)
    before = _tree(tmp_path / "done")
    ro = _not_writable(tmp_path / "ro")
    _not_writable(tmp_path / "done")
    cases = {("ro/run",): "ro/run", ("ro",): "ro/.edgepipe-run",
             ("done", "--force"): "done/recipe.yaml"}
    try:
        for args, path in cases.items():
            r = _run_as_a_user(tmp_path, "-m", "pipeline.cli", "run", "r.yaml", "--out", *args)
            errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
            assert (r.returncode, r.stdout, errors) == (2, "", [
                f"error: {path}: Permission denied; fix its permissions or use another path"]), \
                r.stderr
            assert "Traceback" not in r.stderr
        assert list(ro.iterdir()) == [] and _tree(tmp_path / "done") == before
    finally:
        for folder in (ro, tmp_path / "done"):
            folder.chmod(0o755)


# ----- 6. boards ---------------------------------------------------------------------------------
def test_adding_devices_changes_only_the_stages_that_use_boards(tmp_path):
    """Adding `devices:` changed every fingerprint: the model was trained again for a board."""
    inv = tmp_path / "devices.yaml"
    inv.write_text("devices:\n  pi: {host: 127.0.0.1}\n")
    host_only = [p.fingerprint for p in engine.plan(recipe.parse(TINY_RECIPE))]
    with_devices = TINY_RECIPE.replace("seed: 0\n", f"seed: 0\ndevices: {inv}\n")
    assert [p.fingerprint for p in engine.plan(recipe.parse(with_devices))] == host_only
    boards = with_devices.replace("  - profile: {", "  - profile: {targets: [host, pi], ")
    fps = [p.fingerprint for p in engine.plan(recipe.parse(boards))]
    assert fps[:2] == host_only[:2] and fps[2] != host_only[2]
    inv.write_text("devices:\n  pi: {host: 127.0.0.2}\n")  # editing the board re-profiles
    edited = [p.fingerprint for p in engine.plan(recipe.parse(boards))]
    assert edited[:2] == fps[:2] and edited[2] != fps[2]


def test_run_takes_devices_like_deploy_and_profile(cli, tmp_path):
    text = EXPORT_ONLY + "  - profile: {min_runs: 5, min_seconds: 0.0, targets: [host, pi]}\n"
    write_recipe(tmp_path, text, name="r.yaml")
    assert _error(cli("run", "r.yaml", "--out", "run", "--devices", "nope.yaml")) == (
        f"Device inventory not found: {tmp_path / 'nope.yaml'}")
    assert recipe.load(tmp_path / "run" / "recipe.yaml").devices == str(tmp_path / "nope.yaml")
