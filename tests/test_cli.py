"""The CLI: every user error is one line on stderr, exit code 2, and nothing written."""

import json

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from tests.helpers import TINY_RECIPE, tiny_model, write_recipe


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def invoke(*args):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def _one_line_error(result, expected: str):
    """Exit 2, no traceback, exactly one error line, the whole of it `expected` (progress lines
    may precede it)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert errors[0] == "error: " + expected
    return errors[0]


def _files(tmp_path):
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))


def test_recipe_missing(cli, tmp_path):
    _one_line_error(cli("run", "nope.yaml"), "recipe file not found: nope.yaml")
    assert _files(tmp_path) == []


def test_recipe_yaml_syntax_error(cli, tmp_path):
    write_recipe(tmp_path, "name: x\nstages: [\n")
    _one_line_error(cli("run", "recipe.yaml"), "recipe.yaml:3: YAML syntax error: expected the node "
                    "content, but found '<stream end>'")
    assert _files(tmp_path) == ["recipe.yaml"]


@pytest.mark.parametrize("old,new,start", [
    ("  - report", "  - reprt", "recipe.yaml:11: stages.3: unknown stage 'reprt' (did you mean "
     "\"report\"?); expected one of: train, export, profile, report, distill, prune, quantize, "
     "cluster, lowrank, nas, adapt"),
    ("{epochs: 3,", "{epochz: 3,", "recipe.yaml:8: stages.0.train.epochz: unknown key (did you mean "
     "\"epochs\"?)"),
    ("epochs: 3", "epochs: -1", "recipe.yaml:8: stages.0.train.epochs: Input should be greater "
     "than or equal to 0"),
    ("name: digits", "name: mnist", "recipe.yaml:3: dataset.name: unknown dataset 'mnist'; "
     "expected one of: diabetes, digits, image_dir, npz, tfds"),
])
def test_bad_recipes(cli, tmp_path, old, new, start):
    write_recipe(tmp_path, TINY_RECIPE.replace(old, new))
    _one_line_error(cli("run", "recipe.yaml"), start)
    _one_line_error(cli("recipe", "check", "recipe.yaml"), start)
    assert _files(tmp_path) == ["recipe.yaml"]


def test_recipe_check_and_schema(cli, tmp_path):
    write_recipe(tmp_path)
    r = cli("recipe", "check", "recipe.yaml")
    assert r.exit_code == 0 and r.stdout.strip() == (
        "ok: recipe.yaml: 4 stages: train -> export -> profile -> report")
    schema = json.loads(cli("recipe", "schema").stdout)
    assert schema["title"] == "edgepipe recipe"


def test_model_file_missing_or_corrupt(cli, tmp_path):
    _one_line_error(cli("export", "m.keras"), "model file not found: m.keras")
    (tmp_path / "m.keras").write_bytes(b"garbage")
    _one_line_error(cli("export", "m.keras", "--mode", "int8"),
                    "cannot load model m.keras: not a valid .keras archive (truncated or not a zip "
                    "file: File is not a zip file)")
    assert _files(tmp_path) == ["m.keras"]


def test_recipe_with_missing_model_file_writes_no_stage(cli, tmp_path):
    write_recipe(tmp_path, TINY_RECIPE.replace("zoo: small_cnn\n  options: {filters: [4], "
                                               "dense: 16, dropout: 0.0}", "path: gone.keras"))
    _one_line_error(cli("run", "recipe.yaml", "--out", "run"), "model file not found: gone.keras")
    assert _files(tmp_path) == ["recipe.yaml"]


def test_dataset_shape_not_matching_the_model(cli, tmp_path):
    tiny_model().save(tmp_path / "m.keras")
    write_recipe(tmp_path, TINY_RECIPE.replace("zoo: small_cnn\n  options: {filters: [4], "
                                               "dense: 16, dropout: 0.0}", "path: m.keras")
                 .replace("input_size: [8, 8]", "input_size: [16, 16]"))
    _one_line_error(cli("run", "recipe.yaml", "--out", "run"),
                    "dataset samples have shape [16, 16, 1] but the model expects [8, 8, 1]; "
                    "set dataset.input_size/channels to match, or use a model built for this data")
    assert _files(tmp_path) == ["m.keras", "recipe.yaml"]  # no run folder, .lock, recipe.yaml


def test_unknown_mode_and_dataset_on_export(cli, tmp_path):
    tiny_model().save(tmp_path / "m.keras")
    _one_line_error(cli("export", "m.keras", "--mode", "int4"), "unknown TFLite mode 'int4' (did you mean \"int8\"?); "
                    "expected one of: fp32, dynamic, float16, int8, int16x8")
    _one_line_error(cli("export", "m.keras", "--data", "digts"),
                    "--data: unknown dataset 'digts' (did you mean \"digits\"?); expected one "
                    "of: diabetes, digits, image_dir, npz, tfds")
    assert _files(tmp_path) == ["m.keras"]


def test_profile_rejects_a_file_that_is_not_tflite(cli, tmp_path):
    (tmp_path / "x.tflite").write_bytes(b"\0" * 100)
    _one_line_error(cli("profile", "x.tflite"), "x.tflite is not a TFLite file (no TFL3 "
                    "identifier); give a .tflite made by `edgepipe export`")


@pytest.mark.slow
def test_ad_hoc_export_then_profile(cli, tmp_path):
    tiny_model().save(tmp_path / "m.keras")
    r = cli("export", "m.keras", "--mode", "int8", "--data", "digits", "--json")
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["path"] == "m_int8.tflite" and m["quantization"] == "int8"
    r = cli("profile", "m_int8.tflite", "--min-runs", "5", "--min-seconds", "0", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["latency_ms"]["p50"] > 0
    from edge_runner import bench

    with pytest.MonkeyPatch.context() as mp:  # the table form says what spoils a measurement
        mp.setattr(bench, "conditions", lambda result: ["noisy: cv 30% > 10%"])
        r = cli("profile", "m_int8.tflite", "--min-runs", "5", "--min-seconds", "0")
    assert r.exit_code == 0 and r.stdout.startswith("m_int8.tflite: p50 ")
    assert r.stderr.splitlines()[-1] == "warning: noisy: cv 30% > 10%"
    # golden outputs for `edge-runner verify` on a board
    before = _files(tmp_path)
    _one_line_error(cli("golden", "m_int8.tflite", "--data", "none.npz"),
                    "dataset file not found: none.npz")
    assert _files(tmp_path) == before
    _one_line_error(cli("golden", "m_int8.tflite", "--out", "no/such/g.npz"),
                    "cannot write no/such/g.npz: No such file or directory; give --out in a "
                    "folder that exists and is writable")
    assert _files(tmp_path) == before
    r = cli("golden", "m_int8.tflite", "--samples", "5", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"model": "m_int8.tflite", "golden": "m_int8_golden.npz",
                                    "samples": 5}
    from edge_runner.verify import verify

    checked = verify(tmp_path / "m_int8.tflite", tmp_path / "m_int8_golden.npz")
    assert checked["passed"] and checked["n"] == 5 and checked["mode"] == "int8"


@pytest.mark.parametrize("flag", ["-v", "--verbose"])
def test_verbose_shows_the_traceback_and_still_exits_2(cli, flag):
    r = cli(flag, "run", "nope.yaml")
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("Traceback (most recent call last):")
    assert "pipeline.errors.RecipeError: recipe file not found: nope.yaml" in r.stderr
    assert r.stderr.splitlines()[-1] == "error: recipe file not found: nope.yaml"


def test_workers_without_a_nas_or_adapt_stage(cli, tmp_path):
    write_recipe(tmp_path)
    _one_line_error(cli("run", "recipe.yaml", "--workers", "2"),
                    "--workers 2: recipe.yaml has no nas or adapt stage to distribute; drop "
                    "--workers or add a nas or adapt stage")
    assert _files(tmp_path) == ["recipe.yaml"]


def test_status_of_a_folder_that_is_not_a_run(cli, tmp_path):
    (tmp_path / "recipes").mkdir()
    for folder in (".", "recipes"):
        _one_line_error(cli("status", folder),
                        f"{folder} is not an edgepipe run folder (no recipe.yaml, no stage "
                        "folders); give the folder `edgepipe run` wrote, e.g. runs/digits")
    _one_line_error(cli("status", "nope"), "run folder not found: nope")
    assert _files(tmp_path) == ["recipes"]


@pytest.mark.parametrize("args, line", [
    (["profile", "m.tflite", "--threads", "0"], "error: Invalid value for '--threads': 0 is not in "
     "the range x>=1. (see edgepipe profile --help)"),
    (["run", "--bogus"], "error: No such option '--bogus'. Did you mean '--out'? (see edgepipe run "
     "--help)"),
    (["--bogus"], "error: No such option '--bogus'. Did you mean '--verbose'? (see edgepipe "
     "--help)"),
    (["nosuch"], "error: No such command 'nosuch'. (see edgepipe --help)"),
    (["recipe", "check"], "error: Missing argument 'FILE'. (see edgepipe recipe check --help)"),
    (["devices", "list", "--bogus"], "error: No such option '--bogus'. (see edgepipe devices list "
     "--help)"),
    (["-v", "nas", "recipe.yaml"], "error: give --chief or --worker (one machine: edgepipe run "
     "RECIPE --workers N) (see edgepipe nas --help)"),
])
def test_click_usage_errors_are_one_line(cli, tmp_path, args, line):
    (tmp_path / "m.tflite").write_bytes(b"")
    (tmp_path / "recipe.yaml").write_text("")
    r = cli(*args)
    assert r.exit_code == 2, r.output
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr == line + "\n"
    assert _files(tmp_path) == ["m.tflite", "recipe.yaml"]


def test_help_and_version_still_work(cli):
    for args in (["--help"], ["-h"], ["profile", "--help"], ["devices", "list", "-h"]):
        r = cli(*args)
        assert r.exit_code == 0 and r.stdout.startswith("Usage: edgepipe "), (args, r.output)
    r = cli("--version")
    assert r.exit_code == 0 and r.stdout.startswith("edgepipe, version ")
    r = cli("devices")  # a bare group shows its help (click's own behaviour, exit 2)
    assert r.exit_code == 2 and "Usage: edgepipe devices" in r.output


@pytest.mark.slow
def test_run_says_what_was_skipped_and_status_shows_report_files(cli, tmp_path):
    write_recipe(tmp_path, "name: t\n"
                 "dataset: {name: digits, input_size: [8, 8], channels: 1, train_fraction: 0.2}\n"
                 "model: {zoo: small_cnn, options: {filters: [4], dense: 16, dropout: 0.0}}\n"
                 "stages:\n  - train: {epochs: 1}\n  - report\n")
    for args, done in ([(), "done: 2 stages (0 up to date, 2 run) in run"],
                       [(), "done: 2 stages (2 up to date, 0 run) in run"],
                       [("--from", "report"), "done: 2 stages (1 up to date, 1 run) in run"]):
        r = cli("run", "recipe.yaml", "--out", "run", *args)
        assert r.exit_code == 0, r.output
        assert r.stdout.splitlines()[0] == done
    rows = [ln.split()[:4] for ln in cli("status", "run").stdout.splitlines()]
    assert rows == [["01_train", "done", "1", "artifact"],
                    ["02_report", "done", "report.html,", "report.json,"]]


@pytest.mark.parametrize("change, problem", [
    ("y", "integer labels are class indices 0, 1, 2, ...; found -3 (map your classes to 0..N-1, "
          "or give float targets for regression)"),
    ("x", "{npz}: NaN or infinite input values in 1 of 30 samples (the first is sample 0); "
          "replace or drop them"),
])
def test_run_on_bad_data_is_one_line_and_writes_nothing(cli, tmp_path, change, problem):
    """Issue 12: through `edgepipe run`, bad data is exit 2, one line, and no run folder (was: a
    TensorFlow traceback for label -3; exit 0 with accuracy 0.0 and bare NaN in JSON for NaN)."""
    import numpy as np

    x, y = np.zeros((30, 8, 8), np.float32), np.arange(30) % 3
    if change == "y":
        y[0] = -3
    else:
        x[0, 0, 0] = np.nan
    np.savez(tmp_path / "bad.npz", x=x, y=y)
    recipe = write_recipe(tmp_path, TINY_RECIPE.replace(
        "dataset: {name: digits, input_size: [8, 8], channels: 1}",
        "dataset: {name: npz, path: bad.npz}"))
    r = cli("run", recipe, "--out", "out")
    _one_line_error(r, problem.format(npz=tmp_path / "bad.npz"))
    assert not (tmp_path / "out").exists()
