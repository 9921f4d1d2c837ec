"""Goldens for any .tflite: several named inputs and outputs, per-output tolerances, and files
made elsewhere (their own input layout and dtype), on the host and on the board venv."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edge_runner import backends, cli, golden, tensors, verify
from edge_runner.errors import RunnerError
from pipeline.cli import main
from pipeline.devices.golden import host_golden
from tests.helpers import multi_io_data, multi_io_model
from tests.tiny_tflite import mlp

ROOT = Path(__file__).resolve().parent.parent


def _digits(size: int) -> np.ndarray:
    """Digits as edgepipe's loader gives them for a `size` x `size` x 1 input."""
    from pipeline.data import load_dataset

    return load_dataset({"name": "digits", "input_size": [size, size], "channels": 1}).x_test


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """.tflite files made here: a tiny tf_keras multi-input, multi-output model (fp32, and int8
    with int8 I/O), and single-input models of the layouts other apps use."""
    import tensorflow as tf
    import tf_keras as keras

    from pipeline import tflite

    out = tmp_path_factory.mktemp("made")
    multi, data = multi_io_model(), multi_io_data(32)
    files = {"multi": multi, "data": data, "dir": out}
    (out / "multi.tflite").write_bytes(tflite.convert(multi))
    (out / "multi_int8.tflite").write_bytes(tflite.convert(multi, "int8", data))
    conv = tf.lite.TFLiteConverter.from_keras_model(multi)  # int8 inside, float inputs/outputs
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ({k: v[i:i + 1] for k, v in data.items()}
                                           for i in range(len(data["image"])))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    (out / "multi_fio.tflite").write_bytes(conv.convert())

    # float layouts other apps use, written straight as flatbuffers (no signature: tensor names);
    # the same seed gives the same weights, so all four compute the same function of 784 pixels
    layouts = {"hw": (1, 28, 28), "flat": (1, 784), "hwc": (1, 28, 28, 1), "vec10": (1, 10)}
    for name, shape in layouts.items():
        (out / f"{name}.tflite").write_bytes(mlp(shape, (10,), seed=3))
    keras.utils.set_random_seed(0)
    x = keras.Input((28, 28, 1))
    hwc = keras.Model(x, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x)))
    calib = _digits(28)[:50]
    (out / "int8.tflite").write_bytes(tflite.convert(hwc, "int8", calib))
    conv = tf.lite.TFLiteConverter.from_keras_model(hwc)  # an app's uint8 image input
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    (out / "uint8.tflite").write_bytes(conv.convert())
    return files


# ---------------------------------------------------------------- several inputs and outputs


@pytest.mark.slow
def test_runner_names_and_predict_follow_keras_names(made):
    runner = backends.load(made["dir"] / "multi.tflite")
    assert sorted(runner.input_names) == ["image", "meta"]
    assert sorted(runner.output_names) == ["klass", "value"]
    # the interpreter's order is not Keras's: names are what keep the heads apart
    assert runner.input_names != ["image", "meta"] or runner.output_names != ["klass", "value"]
    got = runner.predict_named(made["data"])
    want = dict(zip(["klass", "value"], made["multi"].predict(made["data"], verbose=0)))
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5)
    with pytest.raises(RunnerError) as err:
        runner.predict(made["data"]["image"])
    assert str(err.value) == (f"This model has 2 inputs: give predict() a dict {{name: array}} "
                              f"with {', '.join(runner.input_names)}")
    with pytest.raises(RunnerError) as err:
        runner.predict({"image": made["data"]["image"], "meta": made["data"]["meta"][:3]})
    assert str(err.value) == ("Expected the same number of samples for every input. Received: "
                              + ", ".join(f"{n}={32 if n == 'image' else 3}"
                                          for n in runner.input_names))


@pytest.mark.slow
def test_named_golden_layout_and_verify(made, tmp_path):
    path = made["dir"] / "multi_int8.tflite"
    g = host_golden(path, made["data"], tmp_path / "g.npz", "int8")
    with np.load(g) as z:
        assert sorted(z.files) == ["inputs__image", "inputs__meta", "outputs__klass",
                                   "outputs__value", "quantization"]
        assert z["inputs__image"].dtype == np.int8 and z["inputs__meta"].shape == (32, 3)
    r = verify.verify(path, g)
    runner = backends.load(path)
    scale = {n: d["quantization"][0] for n, d in zip(runner.output_names, runner.output_details)}
    assert r["passed"] and set(r["outputs"]) == {"klass", "value"}
    for name in ("klass", "value"):  # each int8 output: 3 of its own quantization steps
        assert r["outputs"][name]["tolerance"] == pytest.approx(3 * scale[name])
    assert scale["klass"] != scale["value"]
    # argmax only where the output is a distribution (the softmax head)
    assert r["outputs"]["klass"]["argmax_agreement"] == 1.0
    assert r["outputs"]["value"]["argmax_agreement"] is None


@pytest.mark.slow
def test_float_outputs_of_an_int8_file_get_its_quantization_steps(made, tmp_path):
    """An int8 file with float I/O: each float output is dequantized from an int8 tensor, and
    may be 3 of that tensor's steps off (not 5% of its peak, which let wrong answers through)."""
    path = made["dir"] / "multi_fio.tflite"
    runner = backends.load(path)
    assert {np.dtype(d["dtype"]) for d in runner.output_details} == {np.dtype(np.float32)}
    sources = verify.quantized_source(runner)
    g = host_golden(path, made["data"], tmp_path / "g.npz")  # no mode: the file's int8 tensors
    r = verify.verify(path, g)
    assert r["passed"] and r["mode"] == "int8"
    for i, name in enumerate(runner.output_names):
        step = sources[i]["quantization"][0]
        assert sources[i]["dtype"] == np.int8 and step > 0
        assert r["outputs"][name]["tolerance"] == pytest.approx(3 * step)
    gold = golden.read_golden(g)
    shifted = golden.write_golden(tmp_path / "off.npz", gold["inputs"], {
        **gold["outputs"], "value": gold["outputs"]["value"] + 4 * sources[
            runner.output_names.index("value")]["quantization"][0]})
    assert verify.verify(path, shifted)["reasons"][0].startswith("output 'value': max abs")


@pytest.mark.slow
def test_per_output_failures_and_tolerances(made, tmp_path):
    path = made["dir"] / "multi.tflite"
    g = golden.read_golden(host_golden(path, made["data"], tmp_path / "g.npz"))
    bad = tmp_path / "bad.npz"
    golden.write_golden(bad, g["inputs"], {**g["outputs"], "value": g["outputs"]["value"] + 0.5})
    r = verify.verify(path, bad)
    assert not r["passed"] and r["worst_output"] == "value" and r["outputs"]["klass"]["passed"]
    peak = float(np.max(np.abs(g["outputs"]["value"] + 0.5)))
    assert r["tolerance"] == pytest.approx(1e-4 * max(1.0, peak))
    assert r["reasons"] == [f"output 'value': max abs difference {r['max_abs_diff']:.6g} > "
                            f"tolerance {r['tolerance']:.6g}"]
    assert verify.verify(path, bad, output_atol={"value": 0.6})["passed"]
    assert not verify.verify(path, bad, atol=0.6, output_atol={"value": 0.1})["passed"]
    with pytest.raises(RunnerError) as err:
        verify.verify(path, bad, output_atol={"valeu": 1.0})
    assert str(err.value) == ("No output 'valeu' to set a tolerance for (did you mean \"value\"?); "
                              "the golden file checks: klass, value")
    with pytest.raises(RunnerError) as err:
        verify.verify(path, bad, output_atol={"value": -1})
    assert str(err.value) == ("Expected atol of output 'value' >= 0. "
                              "Received: atol of output 'value'=-1")
    # only some outputs named: those are checked
    part = golden.write_golden(tmp_path / "part.npz", g["inputs"], {"klass": g["outputs"]["klass"]})
    assert set(verify.verify(path, part)["outputs"]) == {"klass"}


@pytest.mark.slow
def test_edge_runner_cli_per_output(made, tmp_path, capsys):
    path = made["dir"] / "multi.tflite"
    g = golden.read_golden(host_golden(path, made["data"], tmp_path / "g.npz"))
    bad = golden.write_golden(tmp_path / "bad.npz", g["inputs"],
                              {**g["outputs"], "value": g["outputs"]["value"] + 0.5})
    assert cli.main(["verify", str(path), bad]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("FAIL  ") and lines[1] == "mode fp32, n 32"
    assert lines[2].startswith("  value: FAIL max abs diff 0.5 (tolerance")
    assert lines[3].startswith("  klass: ok   max abs diff 0 (tolerance 0.0001)")
    assert lines[-1] == "  - output 'value': " + lines[-1].split(": ", 1)[1]
    assert cli.main(["verify", str(path), bad, "--output-atol", "value=0.6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"]["value"]["tolerance"] == 0.6
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["verify", str(path), bad, "--output-atol", "0.6"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "edge-runner: error: argument --output-atol: expected NAME=X (an output name and a "
        "number), got '0.6' (see edge-runner verify --help)\n")
    assert cli.main(["bench", str(path), "--min-runs", "3", "--min-seconds", "0", "--warmup",
                     "0"]) == 0
    out = capsys.readouterr().out
    runner = backends.load(path)
    assert f"inputs       {runner.input_names[0]} float32[1, " in out
    assert "outputs      " in out and "klass float32[1, 4]" in out and "value float32[1, 2]" in out


@pytest.mark.slow
def test_golden_layout_errors(made, tmp_path):
    path = made["dir"] / "multi.tflite"
    d = made["data"]
    with pytest.raises(RunnerError) as err:
        golden.read_golden(_npz(tmp_path / "both.npz", inputs=d["image"], inputs__meta=d["meta"],
                                outputs=d["meta"]))
    assert str(err.value) == (f"Golden file {tmp_path / 'both.npz'} has both inputs and "
                              f"inputs__NAME arrays; keep one layout.")
    with pytest.raises(RunnerError) as err:
        golden.read_golden(_npz(tmp_path / "n.npz", inputs__image=d["image"],
                                inputs__meta=d["meta"][:5], outputs=d["meta"]))
    assert str(err.value) == (f"Golden file {tmp_path / 'n.npz'} holds different numbers of "
                              f"samples: inputs__image 32, inputs__meta 5, outputs 32")
    with pytest.raises(RunnerError) as err:
        verify.verify(path, _npz(tmp_path / "one.npz", inputs=d["image"], outputs=d["meta"]))
    names = ", ".join(backends.load(path).input_names)
    assert str(err.value) == (f"Golden file {tmp_path / 'one.npz'} has one inputs array but the "
                              f"model has 2 inputs ({names}): give one inputs__NAME array per "
                              f"input.")
    with pytest.raises(RunnerError) as err:
        verify.verify(path, _npz(tmp_path / "other.npz", inputs__image=d["image"],
                                 inputs__extra=d["meta"], outputs=d["meta"]))
    assert str(err.value) == (f"Golden file {tmp_path / 'other.npz'} has inputs extra, image but "
                              f"the model's are image, meta: the golden file is not for this "
                              f"model.")
    # a golden with plain outputs checks the first output (what unnamed goldens held)
    runner = backends.load(path)
    first = runner.predict_named(d)[runner.output_names[0]]
    legacy = _npz(tmp_path / "legacy.npz", inputs__image=d["image"], inputs__meta=d["meta"],
                  outputs=first)
    assert set(verify.verify(path, legacy)["outputs"]) == {runner.output_names[0]}


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.board
@pytest.mark.slow
def test_board_venv_verifies_named_goldens(board_python, made, tmp_path):
    """tflite-runtime 2.14 + numpy<2 names the tensors the same way and checks every output."""
    for name, mode in (("multi", None), ("multi_int8", "int8"), ("multi_fio", None),
                       ("uint8", None)):
        data = _digits(28)[:8] if name == "uint8" else made["data"]
        g = host_golden(made["dir"] / f"{name}.tflite", data, tmp_path / f"{name}.npz", mode)
        proc = subprocess.run([board_python, "-m", "edge_runner", "verify",
                               str(made["dir"] / f"{name}.tflite"), str(g), "--json"],
                              capture_output=True, text=True, timeout=120, cwd=str(ROOT))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        r = json.loads(proc.stdout)
        assert r["passed"] and r["backend"] == "tflite-runtime"
        want = {"klass", "value"} if name != "uint8" else set(backends.load(
            made["dir"] / "uint8.tflite").output_names)
        assert set(r["outputs"]) == want


# ---------------------------------------------------------------- .tflite files made elsewhere


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["hw", "flat", "hwc", "int8", "uint8"])
def test_golden_cli_fits_the_files_own_input(made, tmp_path, layout):
    """`edgepipe golden X.tflite --data digits` for inputs [1, 28, 28], [1, 784], [1, 28, 28, 1]
    float, int8 and uint8 (quantized with the file's own parameters); edge-runner verify passes."""
    path = made["dir"] / f"{layout}.tflite"
    out = tmp_path / "g.npz"
    r = CliRunner().invoke(main, ["golden", str(path), "--samples", "8", "--out", str(out)])
    assert r.exit_code == 0, r.output
    detail = backends.load(path).input_details[0]
    g = golden.read_golden(out)
    assert g["inputs"].shape == (8, *detail["shape"][1:]) and g["inputs"].dtype == detail["dtype"]
    images = _digits(28)[:8]  # what the golden's inputs are: digits at 28 x 28, fitted
    scale, zero = detail["quantization"]
    if scale:  # int8/uint8: the file's own scale and zero point (digits are in [0, 1])
        assert scale == pytest.approx(1 / 255, rel=0.05)
        floats = (g["inputs"].astype(np.float32) - zero) * scale
        np.testing.assert_allclose(floats.reshape(images.shape), images, atol=scale / 2 + 1e-6)
    else:  # the same pixels in the file's layout: the same answers as the NHWC file gives
        np.testing.assert_allclose(g["inputs"].reshape(images.shape), images, atol=1e-6)
        want = backends.load(made["dir"] / "hwc.tflite").predict(images)
        np.testing.assert_allclose(g["outputs"], want, atol=1e-6)
    assert verify.verify(path, out)["passed"]


@pytest.mark.slow
def test_golden_cli_shape_that_cannot_fit(made, tmp_path):
    r = CliRunner().invoke(main, ["golden", str(made["dir"] / "vec10.tflite"), "--out",
                                  str(tmp_path / "g.npz")])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr == ('error: Input "input": the data\'s samples have shape [32, 32, 1] but '
                        "the model expects "
                        "[10]; give float images (any size, 1 or 3 channels, channel axis "
                        "optional) or samples of exactly that shape\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_golden_cli_multi_input_npz(made, tmp_path):
    """`edgepipe golden` of a two-input file with an x-only npz of one array per input."""
    d = made["data"]
    np.savez(tmp_path / "two.npz", x__image=d["image"], x__meta=d["meta"])
    out = tmp_path / "g.npz"
    path = made["dir"] / "multi.tflite"
    r = CliRunner().invoke(main, ["golden", str(path), "--data", str(tmp_path / "two.npz"),
                                  "--samples", "5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    g = golden.read_golden(out)
    assert {k: v.shape for k, v in g["inputs"].items()} == {"image": (5, 6), "meta": (5, 3)}
    assert set(g["outputs"]) == {"klass", "value"}
    first = g["inputs"]["image"][0]  # the inputs of one sample stay together
    rows = [i for i in range(len(d["image"])) if np.array_equal(d["image"][i], first)]
    assert len(rows) == 1 and np.array_equal(d["meta"][rows[0]], g["inputs"]["meta"][0])
    assert verify.verify(path, out)["passed"]


@pytest.mark.slow
def test_golden_cli_multi_input_needs_named_data(made, tmp_path):
    path = made["dir"] / "multi.tflite"
    r = CliRunner().invoke(main, ["golden", str(path), "--out", str(tmp_path / "g.npz")])
    names = ", ".join(backends.load(path).input_names)
    assert r.exit_code == 2 and r.stderr == (f"error: multi.tflite has 2 inputs ({names}) but the "
                                             f"data has one; give data with one array per input\n")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- fitting data to an input


def _detail(shape, dtype=np.float32, quantization=(0.0, 0)):
    return {"shape": np.array([1, *shape]), "dtype": dtype, "quantization": quantization}


def test_fit_shapes():
    x = np.random.default_rng(0).random((2, 8, 8, 1), dtype=np.float32)
    assert tensors.fit(x, _detail((8, 8))).shape == (2, 8, 8)
    np.testing.assert_array_equal(tensors.fit(x, _detail((64,))), x.reshape(2, 64))
    np.testing.assert_array_equal(tensors.fit(x.reshape(2, 64), _detail((8, 8, 1))), x)
    rgb = tensors.fit(x, _detail((8, 8, 3)))
    np.testing.assert_array_equal(rgb, np.repeat(x, 3, axis=-1))
    np.testing.assert_allclose(tensors.fit(rgb, _detail((8, 8, 1))), x, atol=1e-7)
    assert tensors.fit(x, _detail((4 * 4 * 3,))).shape == (2, 48)  # 4 x 4 x 3, flattened
    assert tensors.fit(x[..., 0], _detail((16, 16, 1))).shape == (2, 16, 16, 1)
    with pytest.raises(RunnerError) as err:
        tensors.fit(x, _detail((3, 8, 8)), "img")
    assert str(err.value) == ('Input "img": the data\'s samples have shape [8, 8, 1] but the model '
                              "expects [3, 8, 8]; give float images (any size, 1 or 3 channels, "
                              "channel axis optional) or samples of exactly that shape")


def test_resize_bilinear_matches_tensorflow():
    import tensorflow as tf

    x = np.random.default_rng(1).random((2, 9, 7, 3), dtype=np.float32)
    for size in ((4, 5), (16, 11), (9, 7)):
        want = tf.image.resize(x, size, method="bilinear").numpy()
        np.testing.assert_allclose(tensors.resize_bilinear(x, size), want, atol=1e-5)


def test_fit_dtypes():
    x = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    assert tensors.fit(x, _detail((3,), np.uint8)).tolist() == [[0, 128, 255]]  # pixels
    assert tensors.fit(x, _detail((3,), np.int8)).tolist() == [[-128, 0, 127]]
    q = tensors.fit(x, _detail((3,), np.int8, (1 / 255, -128)))
    assert q.dtype == np.int8 and q.tolist() == [[-128, 0, 127]]
    same = np.array([[1, 2, 3]], dtype=np.int8)
    assert tensors.fit(same, _detail((3,), np.int8)) is same
    with pytest.raises(RunnerError) as err:
        tensors.fit(np.array([[200, 1, 2]], dtype=np.uint8), _detail((3,), np.int8), "x")
    assert str(err.value) == ('Input "x": the data is uint8 but the model takes int8; give floats '
                              "in [0, 1] (or values of that dtype)")


def test_image_layout():
    assert tensors.image_layout((28, 28)) == (28, 28, 1)
    assert tensors.image_layout((784,)) == (28, 28, 1)
    assert tensors.image_layout((48,), channels=3) == (4, 4, 3)
    assert tensors.image_layout((12,)) == (2, 2, 3)
    assert tensors.image_layout((10,)) is None and tensors.image_layout((3, 8, 8)) is None
    assert tensors.image_layout((32, 32, 3)) == (32, 32, 3)


def test_edge_runner_still_imports_no_tensorflow():
    code = ("import sys, edge_runner.tensors, edge_runner.golden, edge_runner.verify; "
            "sys.exit('tensorflow' in sys.modules or 'pipeline' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=str(ROOT)).returncode == 0


@pytest.mark.slow
def test_verify_fits_a_golden_in_another_layout_and_profile_takes_any_layout(made, tmp_path):
    """A golden of 28 x 28 x 1 images for the [1, 28, 28] and [1, 784] files (an npz of real
    images as a user has them): verify fits the inputs; `edgepipe profile` times any layout."""
    images = _digits(28)[:8]
    for layout in ("hw", "flat", "uint8"):
        path = made["dir"] / f"{layout}.tflite"
        runner = backends.load(path)
        want = runner.predict(tensors.fit(images, runner.input_details[0]))
        g = golden.write_golden(tmp_path / f"{layout}.npz", images, want)
        r = verify.verify(path, g)
        assert r["passed"] and r["max_abs_diff"] == 0, r
        r = CliRunner().invoke(main, ["profile", str(path), "--min-runs", "3", "--min-seconds",
                                      "0", "--warmup", "0", "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["io"]["inputs"][0]["shape"][1:] == \
            list(backends.load(path).input_details[0]["shape"][1:])


@pytest.mark.slow
def test_bench_times_a_goldens_named_inputs(made, tmp_path, capsys):
    """`edge-runner bench --golden`: the golden's first sample of every named input is what runs
    (a detector's post-processing time depends on real inputs), and the result says so."""
    from edge_runner import bench

    path = made["dir"] / "multi_int8.tflite"
    g = host_golden(path, made["data"], tmp_path / "g.npz", "int8")
    runner = backends.load(path)
    first = {k: v[:1] for k, v in golden.inputs_for(runner, golden.read_golden(g)["inputs"],
                                                     str(g)).items()}
    runner.set_inputs(first)
    runner.invoke()
    want = runner.predict_named(first)
    for i, name in enumerate(runner.output_names):
        np.testing.assert_array_equal(runner.get_output(i), want[name])
    assert cli.main(["bench", str(path), "--golden", str(g), "--min-runs", "3", "--min-seconds",
                     "0", "--warmup", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["inputs"] == {"from": str(g)}
    assert bench.benchmark(path, min_runs=3, min_seconds=0, warmup=0)["inputs"] == {
        "from": "random", "seed": 0}
    other = golden.write_golden(tmp_path / "other.npz", made["data"]["meta"], made["data"]["meta"])
    assert cli.main(["bench", str(path), "--golden", other, "--min-runs", "3"]) == 2
    names = ", ".join(runner.input_names)
    assert capsys.readouterr().err == (f"edge-runner: error: Golden file {other} has one inputs "
                                       f"array but the model has 2 inputs ({names}): give one "
                                       f"inputs__NAME array per input.\n")


def test_is_distribution():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(1000), size=8).astype(np.float32)
    assert verify.is_distribution(probs)
    # int8 softmax over 1000 classes: each value rounded to 1/256, the row sums drift
    q = np.round(probs * 256 + rng.uniform(0, 0.5, probs.shape)) / 256
    assert np.abs(q.sum(axis=1) - 1).max() > 0.05
    assert not verify.is_distribution(q) and verify.is_distribution(q, step=1 / 256)
    assert not verify.is_distribution(probs - 0.01)  # negative values: not probabilities
    assert not verify.is_distribution(probs * 2)  # logits/scores: rows do not sum to 1
    assert not verify.is_distribution(probs[:, :1]) and not verify.is_distribution(probs[0])


@pytest.mark.slow
def test_golden_cli_with_an_npz_of_28x28_images_for_a_28x28_input(made, tmp_path):
    """The reported case: an npz of real 28 x 28 uint8 images (no channel axis) and a .tflite
    taking [1, 28, 28] ("[28, 28, 1] but the model expects [28, 28]" before)."""
    rng = np.random.default_rng(0)
    x = (rng.random((40, 28, 28)) * 255).astype(np.uint8)
    np.savez(tmp_path / "mnist.npz", x=x, y=rng.integers(0, 10, 40))
    out = tmp_path / "g.npz"
    r = CliRunner().invoke(main, ["golden", str(made["dir"] / "hw.tflite"), "--data",
                                  str(tmp_path / "mnist.npz"), "--samples", "5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    g = golden.read_golden(out)
    assert g["inputs"].shape == (5, 28, 28) and g["inputs"].dtype == np.float32
    assert 0 <= g["inputs"].min() and g["inputs"].max() <= 1  # scaled like every dataset
    assert any(np.allclose(g["inputs"][0], img / 255.0, atol=1e-6) for img in x)
    assert verify.verify(made["dir"] / "hw.tflite", out)["passed"]
