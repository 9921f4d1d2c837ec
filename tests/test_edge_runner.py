"""edge_runner: backends, predict, bench, verify, sysinfo, CLI, isolation from TensorFlow, board venv."""

import ast
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from edge_runner import backends, bench, cli, golden, sysinfo, verify
from edge_runner.errors import RunnerError

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def edge_models(tmp_path_factory):
    """A tiny CNN trained briefly on the 8x8 digits, exported fp32 and int8 (int8 I/O)."""
    import tensorflow as tf
    import tf_keras as keras
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:1500], y[:1500], epochs=4, batch_size=32, verbose=0)
    out = tmp_path_factory.mktemp("edge_models")
    fp32 = out / "fp32.tflite"
    fp32.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(100))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    int8 = out / "int8.tflite"
    int8.write_bytes(conv.convert())
    # batch fixed at 1 (no -1 in the signature): predict must go sample by sample
    fixed = tf.function(lambda t: model(t)).get_concrete_function(
        tf.TensorSpec([1, 8, 8, 1], tf.float32))
    fixed1 = out / "fixed1.tflite"
    fixed1.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([fixed], model).convert())
    x_test = x[1500:1564]
    return {"fp32": fp32, "int8": int8, "fixed1": fixed1, "x": x_test, "keras": model.predict(x_test, verbose=0),
            "labels": y[1500:1564], "dir": out}


def _run_cli(*args, env=None, python=sys.executable):
    return subprocess.run([python, "-m", "edge_runner", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=env, cwd=str(ROOT))


# ---------------------------------------------------------------- backends / predict


def test_predict_fp32_matches_keras(edge_models):
    runner = backends.load(edge_models["fp32"])
    got = runner.predict(edge_models["x"])
    assert runner.backend == "litert" and runner.backend_version
    assert got.shape == (64, 10) and got.dtype == np.float32
    assert np.max(np.abs(got - edge_models["keras"])) < 1e-5
    # the model is real: it learned the digits
    assert np.mean(np.argmax(got, 1) == edge_models["labels"]) > 0.8


def test_predict_batched_equals_one_by_one_and_restores_shape(edge_models):
    runner = backends.load(edge_models["fp32"])
    batched = runner.predict(edge_models["x"], batch_size=64)
    single = runner.predict(edge_models["x"], batch_size=1)
    odd = runner.predict(edge_models["x"][:37], batch_size=16)  # 16 + 16 + 5
    assert np.max(np.abs(batched - single)) < 1e-6
    assert np.max(np.abs(odd - single[:37])) < 1e-6
    assert list(runner.input_details[0]["shape"]) == [1, 8, 8, 1]


def test_predict_fixed_batch_model_runs_one_by_one(edge_models):
    runner = backends.load(edge_models["fixed1"])
    assert list(runner.input_details[0]["shape_signature"]) == [1, 8, 8, 1]
    got = runner.predict(edge_models["x"])
    assert got.shape == (64, 10)
    assert np.max(np.abs(got - edge_models["keras"])) < 1e-5


def test_predict_int8_quantizes_and_dequantizes(edge_models):
    runner = backends.load(edge_models["int8"])
    assert runner.input_details[0]["dtype"] == np.int8
    got = runner.predict(edge_models["x"])
    assert got.dtype == np.float32 and got.shape == (64, 10)
    scale = runner.output_details[0]["quantization"][0]
    assert np.allclose(got / scale, np.round(got / scale), atol=1e-3)  # on the int8 grid
    agree = np.mean(np.argmax(got, 1) == np.argmax(edge_models["keras"], 1))
    assert agree >= 0.9
    assert np.max(np.abs(got - edge_models["keras"])) < 0.1


def test_quantize_rounds_and_clips():
    detail = {"dtype": np.int8, "quantization": (0.5, -10)}
    q = backends.quantize(np.array([0.0, 1.26, -100.0, 100.0], np.float32), detail)
    assert q.dtype == np.int8 and q.tolist() == [-10, -7, -128, 127]
    assert backends.dequantize(q, detail).tolist() == [0.0, 1.5, -59.0, 68.5]


def test_predict_rejects_wrong_shape(edge_models):
    runner = backends.load(edge_models["fp32"])
    with pytest.raises(RunnerError) as err:
        runner.predict(np.zeros((2, 8, 9, 1), np.float32))
    assert str(err.value) == "Expected inputs of shape (N, 8, 8, 1). Received: x.shape=(2, 8, 9, 1)"


def test_tensorflow_backend_agrees_with_litert(edge_models):
    lite = backends.load(edge_models["int8"]).predict(edge_models["x"])
    tf_runner = backends.load(edge_models["int8"], backend="tensorflow")
    assert tf_runner.backend == "tensorflow"
    assert np.array_equal(tf_runner.predict(edge_models["x"]), lite)


def test_no_xnnpack_gives_same_answers(edge_models):
    on = backends.load(edge_models["fp32"], threads=2).predict(edge_models["x"])
    off = backends.load(edge_models["fp32"], xnnpack=False).predict(edge_models["x"])
    assert np.max(np.abs(on - off)) < 1e-5


def test_backend_order_and_errors(monkeypatch):
    assert backends.resolve().name == "litert"
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    assert backends.resolve().name == "tensorflow"  # last resort
    with pytest.raises(RunnerError, match=r'^Backend "litert" is not installed \(cannot import '
                                          r"ai_edge_litert\.interpreter: .*\)\. Install it with: "
                                          r"pip install ai-edge-litert$"):
        backends.resolve("litert")
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(RunnerError) as err:
        backends.resolve()
    assert str(err.value) == ("No TFLite interpreter found. Install one with: pip install "
                              "ai-edge-litert (or tflite-runtime==2.14.0 with numpy<2)")


def test_bad_model_files(tmp_path):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(RunnerError) as err:
        backends.load(junk)
    assert str(err.value) == (f"Not a TFLite model: {junk} (no TFL3 identifier at bytes 4..8). "
                              "Pass a .tflite file made by the TFLite converter.")
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\xff" * 40)
    with pytest.raises(RunnerError, match=r"^Cannot load \S+/broken\.tflite with litert 2\.3\.0: "
                                          r"The model is not a valid Flatbuffer buffer$"):
        backends.load(broken)
    with pytest.raises(RunnerError, match=r"^Expected threads >= 1\. Received: threads=0$"):
        backends.load(junk, threads=0)


# ---------------------------------------------------------------- bench


def test_benchmark_keys_and_sane_numbers(edge_models):
    t0 = time.perf_counter()
    r = bench.benchmark(edge_models["fp32"], warmup=3, min_runs=30, min_seconds=0.05, seed=1)
    assert time.perf_counter() - t0 >= 0.05  # min_seconds honoured
    json.dumps(r, allow_nan=False)
    lat = r["latency_ms"]
    assert set(lat) == {"mean", "std", "min", "max", "p50", "p90", "p99", "cv", "robust_cv"}
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] < 1000
    assert lat["cv"] == pytest.approx(lat["std"] / lat["mean"])
    assert r["runs"] >= 30
    assert r["init_ms"] > 0 and r["first_inference_ms"] > 0
    assert (r["threads"], r["xnnpack"], r["backend"]) == (1, True, "litert")
    data = edge_models["fp32"].read_bytes()
    assert r["model"] == {"path": str(edge_models["fp32"]),
                          "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
    assert r["peak_rss_kb"] > 10_000
    assert r["python"] == ".".join(map(str, sys.version_info[:3]))
    for key in ("system_before", "system_after"):
        assert r[key]["runtime"] == {"backend": "litert", "version": r["backend_version"]}
        assert {"cpu_model", "cores", "cpufreq", "temperature_c", "throttling",
                "loadavg"} <= set(r[key])


def test_benchmark_repeats_max_seconds_and_threads(edge_models):
    r = bench.benchmark(edge_models["int8"], warmup=0, min_runs=10**9, min_seconds=0,
                        max_seconds=0.02, repeats=3, cooldown_s=0.01, threads=2, xnnpack=False)
    assert len(r["per_repeat"]) == 3 and r["runs"] == sum(p["runs"] for p in r["per_repeat"])
    assert r["runs"] < 10**8  # max_seconds won over min_runs
    p50s = sorted(rep["p50"] for rep in r["per_repeat"])  # (max - min) / median of the three
    assert r["p50_spread"] == pytest.approx((p50s[2] - p50s[0]) / p50s[1])
    assert (r["threads"], r["xnnpack"]) == (2, False)


def _result(cv=0.02, robust_cv=0.01, repeats=1, spread=0.0, before=None, after=None):
    lat = {"cv": cv, "robust_cv": robust_cv, "min": 1.0, "p50": 1.1}
    return {"latency_ms": lat, "repeats": repeats, "p50_spread": spread,
            "system_before": before or {}, "system_after": after or {}}


def _sys(governor="performance", mhz=1500.0, temp=50.0, flags=()):
    thr = {"flags": {name: name in flags for name in sysinfo.THROTTLE_FLAGS.values()}}
    return {"cpufreq": {"governor": governor, "cur_mhz": mhz}, "temperature_c": temp,
            "throttling": thr}


def test_conditions_quiet_run_has_no_warnings():
    assert bench.conditions(_result(before=_sys(), after=_sys())) == []
    assert bench.conditions(_result()) == []  # nothing known about the machine: nothing to say


@pytest.mark.parametrize("kwargs, expected", [
    ({"cv": 0.17, "robust_cv": 0.08}, "noisy: robust cv 8.0% > 5% (cv 17%; other load on the "
     "machine?); min 1 ms vs p50 1.1 ms"),
    ({"repeats": 3, "spread": 0.08}, "repeats disagree: p50 spread 8.0% > 5%"),
    ({"after": _sys(governor="ondemand")}, "CPU governor is 'ondemand', not 'performance': the "
     "frequency may change during the run"),
    ({"before": _sys(mhz=1500), "after": _sys(mhz=600)}, "CPU frequency moved during the run: "
     "1500 -> 600 MHz"),
    ({"after": _sys(temp=82.5)}, "CPU at 82.5 C after the run (>= 80 C: thermal throttling "
     "likely); add --cooldown or cooling"),
    ({"before": _sys(), "after": _sys(flags=("throttled", "throttled_occurred"))},
     "throttling/under-voltage flagged by the firmware during the run: throttled, "
     "throttled_occurred"),
])
def test_conditions_name_what_spoils_a_measurement(kwargs, expected):
    before = kwargs.pop("before", _sys())
    after = kwargs.pop("after", _sys())
    warnings = bench.conditions(_result(before=before, after=after, **kwargs))
    assert warnings == [expected]


def test_a_few_outliers_are_not_noise():
    assert bench.conditions(_result(cv=1.15, robust_cv=0.009)) == []  # p50 is steady
    times = [1.0, 1.01, 0.99, 1.02, 0.98] * 20 + [30.0]  # one stall: cv jumps, robust cv not
    s = bench.latency_stats(times)
    assert s["cv"] > 1 and s["robust_cv"] == pytest.approx(1.4826 * 0.01 / 1.0)


def test_conditions_ignore_throttling_that_happened_before_the_run():
    old = _sys(flags=("under_voltage_occurred",))  # sticky since boot, not during this run
    assert bench.conditions(_result(before=old, after=old)) == []


def test_latency_stats_match_numpy():
    data = [5.0, 1.0, 2.0, 9.0, 3.0, 3.5, 7.25]
    s = bench.latency_stats(data)
    assert s["p50"] == np.percentile(data, 50) and s["p90"] == pytest.approx(np.percentile(data, 90))
    assert s["p99"] == pytest.approx(np.percentile(data, 99))
    assert s["std"] == pytest.approx(np.std(data, ddof=1)) and s["mean"] == pytest.approx(np.mean(data))


def test_timed_runs_honours_min_runs_and_min_seconds():
    calls = []
    times = bench.timed_runs(lambda: calls.append(1), min_runs=500, min_seconds=0,
                             max_seconds=None, expected_ms=1.0)
    assert len(times) == len(calls) == 500  # grew past the preallocated guess
    times = bench.timed_runs(lambda: None, min_runs=1, min_seconds=0.02, max_seconds=None,
                             expected_ms=1.0)
    assert len(times) > 1000


@pytest.mark.parametrize("kwargs, message", [
    ({"threads": 0}, "Expected threads >= 1 (an integer). Received: threads=0"),
    ({"warmup": -1}, "Expected warmup >= 0 (an integer). Received: warmup=-1"),
    ({"min_seconds": float("nan")}, "Expected min_seconds >= 0 seconds. Received: min_seconds=nan"),
    ({"max_seconds": 0}, "Expected max_seconds > 0 seconds (or None). Received: max_seconds=0"),
])
def test_benchmark_rejects_bad_options(edge_models, kwargs, message):
    with pytest.raises(RunnerError) as err:
        bench.benchmark(edge_models["fp32"], **kwargs)
    assert str(err.value) == message


# ---------------------------------------------------------------- verify


@pytest.fixture(scope="session")
def goldens(edge_models):
    out = {}
    for mode in ("fp32", "int8"):
        outputs = backends.load(edge_models[mode]).predict(edge_models["x"])
        out[mode] = edge_models["dir"] / f"golden_{mode}.npz"
        golden.write_golden(out[mode], edge_models["x"], outputs, quantization=mode)
    return out


def test_verify_passes_on_right_golden(edge_models, goldens):
    r = verify.verify(edge_models["fp32"], goldens["fp32"])
    assert r["passed"] and r["max_abs_diff"] == 0 and r["argmax_agreement"] == 1.0
    assert (r["n"], r["mode"], r["tolerance"]) == (64, "fp32", pytest.approx(1e-4))
    r = verify.verify(edge_models["int8"], goldens["int8"])
    scale = backends.load(edge_models["int8"]).output_details[0]["quantization"][0]
    assert r["passed"] and r["mode"] == "int8" and r["tolerance"] == pytest.approx(3 * scale)


def test_golden_file_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        golden.write_golden(tmp_path / "g.npz", np.zeros((2, 3)), np.ones((2, 4)))
    finally:
        os.umask(old)
    assert (tmp_path / "g.npz").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["g.npz"]


def test_verify_fails_on_perturbed_golden(edge_models, goldens, tmp_path):
    g = golden.read_golden(goldens["fp32"])
    nudged = tmp_path / "nudged.npz"
    golden.write_golden(nudged, g["inputs"], g["outputs"] + 1e-3, "fp32")
    r = verify.verify(edge_models["fp32"], nudged)
    assert not r["passed"] and r["argmax_agreement"] == 1.0
    assert r["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    assert r["reasons"] == [f"max abs difference {r['max_abs_diff']:.6g} > tolerance 0.0001"]
    assert verify.verify(edge_models["fp32"], nudged, atol=2e-3)["passed"]
    # wrong labels: outputs rolled by one class -> argmax never agrees
    rolled = tmp_path / "rolled.npz"
    golden.write_golden(rolled, g["inputs"], np.roll(g["outputs"], 1, axis=1), "fp32")
    r = verify.verify(edge_models["fp32"], rolled, atol=1.0)
    assert not r["passed"] and r["argmax_agreement"] < 0.2
    assert r["reasons"] == [f"argmax agreement {r['argmax_agreement']:.4f} < 1.0"]


def test_verify_int8_golden_from_keras_needs_looser_mode(edge_models, tmp_path):
    keras_golden = tmp_path / "keras.npz"
    golden.write_golden(keras_golden, edge_models["x"], edge_models["keras"], "int8")
    r = verify.verify(edge_models["int8"], keras_golden)
    assert r["argmax_agreement"] >= 0.9 and r["max_abs_diff"] < 0.1


def test_verify_bad_golden_files(edge_models, tmp_path):
    with pytest.raises(RunnerError, match=r"^Golden file not found: .*nope\.npz$"):
        verify.verify(edge_models["fp32"], tmp_path / "nope.npz")
    np.savez(tmp_path / "half.npz", inputs=edge_models["x"])
    with pytest.raises(RunnerError) as err:
        verify.verify(edge_models["fp32"], tmp_path / "half.npz")
    assert str(err.value) == (f"Golden file {tmp_path / 'half.npz'} has no outputs array. "
                              "Expected arrays: inputs, outputs (or inputs__NAME, outputs__NAME "
                              "per input and output), optionally quantization.")
    golden.write_golden(tmp_path / "wide.npz", edge_models["x"], np.zeros((64, 3)))
    with pytest.raises(RunnerError) as err:
        verify.verify(edge_models["fp32"], tmp_path / "wide.npz")
    assert str(err.value) == ("Golden outputs have shape (64, 3) but the model gives (64, 10): "
                              "the golden file is not for this model.")
    with pytest.raises(RunnerError) as err:
        golden.write_golden(tmp_path / "m.npz", edge_models["x"], edge_models["keras"], "int9")
    assert str(err.value) == ('Unknown quantization mode "int9" (did you mean "int8"?). '
                              "Expected one of: fp32, float16, dynamic, int8, int16x8.")


def test_verify_nan_outputs_fail():
    r = verify.compare(np.array([[np.nan, 1.0]]), np.array([[0.0, 1.0]]), tolerance=1.0,
                       argmax_threshold=0.0)
    assert not r["passed"] and r["max_abs_diff"] is None
    assert r["reasons"][0] == "1 output values are NaN or Inf"


# ---------------------------------------------------------------- sysinfo


def _fake_sysfs(root: pathlib.Path) -> None:
    files = {
        "proc/cpuinfo": "processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\n"
                        "Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n",
        "proc/device-tree/model": "Raspberry Pi 4 Model B Rev 1.4\x00",
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor": "ondemand\n",
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq": "1500000\n",
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_min_freq": "600000\n",
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq": "1800000\n",
        "sys/devices/system/cpu/cpu1/cpufreq/scaling_cur_freq": "700000\n",
        "sys/class/thermal/thermal_zone0/temp": "61234\n",
        "sys/class/thermal/thermal_zone0/type": "cpu-thermal\n",
        "sys/class/thermal/thermal_zone1/temp": "garbage\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_sysinfo_reads_sysfs_and_vcgencmd(tmp_path, monkeypatch):
    _fake_sysfs(tmp_path / "root")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "vcgencmd").write_text("#!/bin/sh\necho throttled=0x50005\n")
    (bindir / "vcgencmd").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    info = sysinfo.collect(root=str(tmp_path / "root"), runtime={"backend": "x", "version": "1"})
    assert info["cpu_model"] == "BCM2835"  # the CPU (here only the SoC is named), not the board
    assert info["board"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert info["cpufreq"] == {"governor": "ondemand", "cur_mhz": 1500.0, "min_mhz": 600.0,
                               "max_mhz": 1800.0,
                               "cur_mhz_per_cpu": {"cpu0": 1500.0, "cpu1": 700.0}}
    assert info["temperature_c"] == 61.2 and info["thermal_zones"] == {"cpu-thermal": 61.2}
    thr = info["throttling"]
    assert thr["raw"] == "0x50005" and thr["any_now"] and thr["any_occurred"]
    assert [k for k, v in thr["flags"].items() if v] == [
        "under_voltage", "throttled", "under_voltage_occurred", "throttled_occurred"]
    assert info["runtime"] == {"backend": "x", "version": "1"}


def test_sysinfo_missing_everything_is_null(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no vcgencmd
    info = sysinfo.collect(root=str(tmp_path / "empty"))
    assert info["cpu_model"] is None and info["temperature_c"] is None
    assert info["throttling"] is None and info["board"] is None
    assert set(info["cpufreq"].values()) == {None}
    json.dumps(info, allow_nan=False)


# ---------------------------------------------------------------- CLI


def test_cli_user_errors_are_one_line_exit_2(edge_models, tmp_path, capsys):
    not_model = tmp_path / "notes.tflite"
    not_model.write_text("hello, this is not a flatbuffer")
    cases = [
        (["bench", str(tmp_path / "missing.tflite")],
         f"edge-runner: error: Model file not found: {tmp_path / 'missing.tflite'}"),
        (["bench", str(not_model)],
         f"edge-runner: error: Not a TFLite model: {not_model} (no TFL3 identifier at bytes "
         "4..8). Pass a .tflite file made by the TFLite converter."),
        (["bench", str(edge_models["fp32"]), "--backend", "litrt"],
         'edge-runner: error: Unknown backend "litrt" (did you mean "litert"?). '
         "Expected one of: litert, tflite-runtime, tensorflow."),
        (["verify", str(edge_models["fp32"]), str(tmp_path / "g.npz")],
         f"edge-runner: error: Golden file not found: {tmp_path / 'g.npz'}"),
    ]
    for argv, line in cases:
        assert cli.main(argv) == 2
        captured = capsys.readouterr()
        assert captured.err == line + "\n" and captured.out == ""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", str(edge_models["fp32"]), "--threads", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("edge-runner: error: argument --threads: expected an "
                                       "integer >= 1, got '0' (see edge-runner bench --help)\n")


def test_cli_forced_missing_backend_subprocess(edge_models):
    proc = _run_cli("bench", edge_models["fp32"], "--backend", "tflite-runtime")
    assert proc.returncode == 2 and proc.stdout == ""
    assert re.fullmatch(r'edge-runner: error: Backend "tflite-runtime" is not installed \(cannot '
                        r"import tflite_runtime\.interpreter: [^\n]+\)\. Install it with: pip "
                        r"install tflite-runtime\n", proc.stderr), proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_cli_verify_exit_codes(edge_models, goldens, tmp_path, capsys):
    assert cli.main(["verify", str(edge_models["int8"]), str(goldens["int8"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True
    g = golden.read_golden(goldens["fp32"])
    bad = tmp_path / "bad.npz"
    golden.write_golden(bad, g["inputs"], g["outputs"] * 0.5, "fp32")
    assert cli.main(["verify", str(edge_models["fp32"]), str(bad)]) == 1
    out = capsys.readouterr().out
    assert re.fullmatch(
        r"FAIL  \S+/fp32\.tflite vs \S+/bad\.npz\n"
        r"mode fp32, n 64, max abs diff [0-9.]+ \(tolerance 0\.0001\), mean abs diff [0-9.]+, "
        r"argmax agreement n/a\nruntime \S+ \S+, threads 1\n"
        r"  - max abs difference [0-9.]+ > tolerance 0\.0001\n", out), out
    assert cli.main(["verify", str(edge_models["fp32"]), str(bad), "--atol", "1"]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(
        r"PASS  \S+/fp32\.tflite vs \S+/bad\.npz\n"
        r"mode fp32, n 64, max abs diff [0-9.]+ \(tolerance 1\), mean abs diff [0-9.]+, "
        r"argmax agreement n/a\nruntime \S+ \S+, threads 1\n", out), out


def test_cli_bench_prints_warnings(edge_models, capsys, monkeypatch):
    monkeypatch.setattr(bench, "conditions", lambda r: ["noisy: cv 30% > 10%"])
    assert cli.main(["bench", str(edge_models["fp32"]), "--min-runs", "5", "--min-seconds", "0",
                     "--warmup", "1"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("warning      noisy: cv 30% > 10%")


def test_cli_bench_table_and_info(edge_models, capsys):
    assert cli.main(["bench", str(edge_models["fp32"]), "--min-runs", "5", "--min-seconds", "0",
                     "--warmup", "1", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "runtime      litert 2.3.0, threads 1, xnnpack on" in out
    assert "runs         " in out and " p99 " in out and "p50 spread" in out
    r = bench.benchmark(edge_models["fp32"], warmup=1, min_runs=5, min_seconds=0)
    assert r["warnings"] == bench.conditions(r)
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["runtime"]["backend"] == "litert" and info["backends_found"]["litert"] is True


def test_cli_info_without_any_backend_still_describes_the_machine(monkeypatch, capsys):
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime",
                 "tflite_runtime.interpreter", "tensorflow"):
        monkeypatch.setitem(sys.modules, name, None)
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["runtime"] is None and info["python"] and info["cores"]["logical"] >= 1
    assert cli.main(["info", "--backend", "litert"]) == 2
    assert capsys.readouterr().err == (
        'edge-runner: error: Backend "litert" is not installed (cannot import '
        "ai_edge_litert.interpreter: import of ai_edge_litert.interpreter halted; None in "
        "sys.modules). Install it with: pip install ai-edge-litert\n")
    with pytest.raises(SystemExit):
        cli.main(["verify", "m.tflite", "g.npz", "--atol", "-1"])
    assert capsys.readouterr().err == ("edge-runner: error: argument --atol: expected a number "
                                       ">= 0, got '-1' (see edge-runner verify --help)\n")


def test_cli_no_xnnpack_really_disables_the_delegate(edge_models):
    args = ["bench", edge_models["fp32"], "--min-runs", "5", "--min-seconds", "0", "--json"]
    on = _run_cli(*args)
    off = _run_cli(*args, "--no-xnnpack")
    assert on.returncode == off.returncode == 0, on.stderr + off.stderr
    assert "XNNPACK" in on.stderr and "XNNPACK" not in off.stderr
    assert json.loads(off.stdout)["xnnpack"] is False


BLOCKER = textwrap.dedent("""
    import os, sys
    BLOCKED = {"tensorflow", "tf_keras", "keras", "pipeline", "tflite_runtime"}
    class _Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                with open(os.environ["EDGE_BLOCK_LOG"], "a") as f:
                    f.write(name + "\\n")
                raise ImportError("blocked by the test: " + name)
            return None
    sys.meta_path.insert(0, _Blocker())
""")


def test_runs_on_ai_edge_litert_alone(edge_models, goldens, tmp_path):
    """`python -m edge_runner` with TensorFlow (and pipeline) unimportable: bench and verify."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    log = tmp_path / "blocked.log"
    env = dict(os.environ, PYTHONPATH=str(tmp_path), EDGE_BLOCK_LOG=str(log))
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env,
                           capture_output=True, text=True)
    assert "blocked by the test: tensorflow" in probe.stderr  # the blocker works
    log.write_text("")
    proc = _run_cli("bench", edge_models["int8"], "--min-runs", "5", "--min-seconds", "0",
                    "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["backend"] == "litert"
    proc = _run_cli("verify", edge_models["fp32"], goldens["fp32"], env=env)
    assert proc.returncode == 0 and proc.stdout.startswith("PASS"), proc.stderr
    assert log.read_text() == ""  # nothing even tried to import them


def test_source_never_imports_tensorflow_or_pipeline():
    forbidden = {"tensorflow", "tf_keras", "keras", "pipeline", "click", "rich", "yaml"}
    for path in sorted((ROOT / "edge_runner").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"


# ---------------------------------------------------------------- board venv (tflite-runtime 2.14)


@pytest.mark.board
def test_board_venv_bench_and_verify_match_litert(board_python, edge_models, goldens):
    check = subprocess.run([board_python, "-c", "import tflite_runtime, numpy, sys; "
                            "print(tflite_runtime.__version__, numpy.__version__); "
                            "import importlib.util as u; "
                            "sys.exit(u.find_spec('tensorflow') is not None)"],
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.startswith("2.14.0 1."), check.stderr
    proc = _run_cli("bench", edge_models["int8"], "--min-runs", "5", "--min-seconds", "0",
                    "--json", python=board_python)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert (r["backend"], r["backend_version"]) == ("tflite-runtime", "2.14.0")
    assert r["latency_ms"]["p50"] > 0 and r["system_after"]["runtime"]["backend"] == "tflite-runtime"
    proc = _run_cli("bench", edge_models["fp32"], "--min-runs", "5", "--min-seconds", "0",
                    "--no-xnnpack", "--json", python=board_python)
    assert proc.returncode == 0 and json.loads(proc.stdout)["xnnpack"] is False, proc.stderr
    for mode in ("fp32", "int8"):
        proc = _run_cli("verify", edge_models[mode], goldens[mode], "--json", python=board_python)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        v = json.loads(proc.stdout)
        assert v["passed"] and v["backend"] == "tflite-runtime" and v["argmax_agreement"] == 1.0
        if mode == "fp32":
            assert v["max_abs_diff"] < 1e-5
        else:  # kernels differ (litert's XNNPACK int8 path rounds differently): a few values
            # land 1-2 int8 steps apart, almost all are identical
            scale = backends.load(edge_models["int8"]).output_details[0]["quantization"][0]
            assert v["max_abs_diff"] <= 2 * scale + 1e-7
            assert v["mean_abs_diff"] <= 0.05 * scale
