"""The `quantize` stage (PTQ modes, QAT, PQAT after pruning, the accuracy gate), `edgepipe
quantize`, and the files on the board runtime (tflite-runtime 2.14, numpy<2)."""

import json
import re
import subprocess
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

from pipeline import engine, models, recipe
from pipeline.cli import main
from pipeline.errors import GateError, RecipeError

HEAD = """name: q
seed: 0
dataset: {name: digits, input_size: [8, 8]}
model: {zoo: small_cnn, options: {filters: [8], dense: 32, dropout: 0.0}}
stages:
  - train: {epochs: 4, batch_size: 32, learning_rate: 0.01, patience: null}
"""


def _recipe(*stages: str) -> recipe.Recipe:
    return recipe.parse(HEAD + "".join(f"  - {s}\n" for s in stages), "r.yaml")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """train -> PTQ int8 / float16 -> prune 80% -> QAT (prune-preserving, picked automatically).
    Plain QAT's scheme is covered by tests/test_quantize.py."""
    folder = tmp_path_factory.mktemp("qrun")
    r = _recipe("quantize: {mode: ptq_int8}",
                "quantize: {mode: ptq_float16}",
                "prune: {method: magnitude, sparsity: 0.8, skip_first: true, epochs: 3,"
                " learning_rate: 0.002}",
                "quantize: {mode: qat, epochs: 1}")
    records = engine.run(r, folder / "run")
    return folder / "run", {rec.dir.name: rec for rec in records}


@pytest.mark.slow
def test_ptq_and_qat_files(run):
    run_dir, rec = run
    int8, fp16, qat = (rec[k].artifacts[0] for k in ("02_quantize", "03_quantize", "05_quantize"))
    assert (int8.quantization, fp16.quantization, qat.quantization) == ("int8", "float16", "int8")
    for a in (int8, fp16, qat):
        m = a.metrics
        assert (run_dir / a.path).is_file() and m["size_bytes"] > 0 and m["gzip_bytes"] > 0
        assert m["float_accuracy"] > (0.85 if a is not qat else 0.75)  # qat: of the pruned model
        assert m["accuracy"] >= m["float_accuracy"] - 0.03, (a.name, {k: v for k, v in m.items() if "acc" in k or "epoch" in k})
    assert fp16.metrics["max_abs_diff"] < 1e-2
    # full integer: int8 in and out, no float ops left
    ops = qat.metrics["ops"]
    assert "DEQUANTIZE" not in ops and "QUANTIZE" not in ops, ops


@pytest.mark.slow
def test_pruned_model_gets_pqat_and_the_tflite_keeps_the_zeros(run):
    _, rec = run
    pruned = rec["04_prune"].artifacts[0].metrics
    m = rec["05_quantize"].artifacts[0].metrics
    assert m["preserve"] == "sparsity" and m["scheme"] == "Default8BitPrunePreserveQuantizeScheme"
    assert m["sparsity"] == pruned["sparsity"]  # carried from the keras artifact
    kernels = m["tflite_sparsity"]
    assert len(kernels) == 3  # conv0 (left dense: skip_first), fc, classifier
    assert [k for k, v in kernels.items() if v == 0.0] == [k for k in kernels if "conv0" in k]
    assert all(v >= 0.79 for k, v in kernels.items() if "conv0" not in k), kernels
    assert m["tflite_overall_sparsity"] >= 0.79 * 0.98  # the 72 stem weights stay dense


_INFER = """
def infer(Interpreter, resolver, path, x):
    it = Interpreter(model_path=path, num_threads=1, experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    ys = []
    for row in x:
        v = row[None]
        if i["dtype"] == np.int8:
            s, z = i["quantization"]
            v = np.clip(np.round(v / s + z), -128, 127).astype(np.int8)
        it.set_tensor(i["index"], v)
        it.invoke()
        ys.append(it.get_tensor(o["index"])[0].copy())
    return np.stack(ys)
"""
#: default (XNNPACK on) and the built-in kernels alone
RESOLVERS = ("AUTO", "BUILTIN_WITHOUT_DEFAULT_DELEGATES")


@pytest.mark.slow
@pytest.mark.board
def test_board_runtime_matches_litert(run, board_python, tmp_path):
    """tflite-runtime 2.14 (numpy<2, no TensorFlow) runs the int8, float16 and QAT files and gives
    ai-edge-litert's outputs: bit-identical with the built-in kernels; with the default XNNPACK
    delegate (two years apart) a rare int8 step of rounding differs."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    run_dir, rec = run
    files = {k: run_dir / rec[d].artifacts[0].path
             for k, d in (("int8", "02_quantize"), ("float16", "03_quantize"),
                          ("qat", "05_quantize"))}
    x = np.random.default_rng(0).random((32, 8, 8, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    script = "import sys, numpy as np\n" + _INFER + textwrap.dedent("""
        from tflite_runtime.interpreter import Interpreter, OpResolverType
        x = np.load(sys.argv[1])
        for path, out, resolver in zip(sys.argv[2::3], sys.argv[3::3], sys.argv[4::3]):
            np.save(out, infer(Interpreter, getattr(OpResolverType, resolver), path, x))
        import tflite_runtime
        print(tflite_runtime.__version__, np.__version__)
    """)
    args = [board_python, "-c", script, str(tmp_path / "x.npy")]
    for k, p in files.items():
        for r in RESOLVERS:
            args += [str(p), str(tmp_path / f"{k}_{r}.npy"), r]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    version, np_version = proc.stdout.split()[:2]
    assert version == "2.14.0" and np_version.startswith("1."), proc.stdout
    scope: dict = {"np": np}
    exec(_INFER, scope)  # the very same inference code on the host, with ai-edge-litert
    for k, p in files.items():
        for r in RESOLVERS:
            ref = scope["infer"](Interpreter, getattr(OpResolverType, r), str(p), x)
            board = np.load(tmp_path / f"{k}_{r}.npy")
            assert board.dtype == ref.dtype and board.shape == ref.shape == (32, 10)
            diff = np.abs(board.astype(np.float64) - ref.astype(np.float64))
            if r == "BUILTIN_WITHOUT_DEFAULT_DELEGATES" or k == "float16":
                assert diff.max() <= (1e-6 if k == "float16" else 0), (k, r, diff.max())
            else:  # int8 steps
                assert diff.mean() <= 0.25 and (board.argmax(-1) == ref.argmax(-1)).mean() >= 0.9, \
                    (k, r, diff.max(), diff.mean())


# ----- gate and bad input ------------------------------------------------------------------------

@pytest.mark.slow
def test_accuracy_gate_names_both_numbers_and_leaves_no_file(run, tmp_path):
    from pipeline.data import load_dataset
    from pipeline.stages.quantize import QuantizeConfig, quantize_model

    run_dir, rec = run
    model = models.load_model(run_dir / rec["01_train"].artifacts[0].path)
    ds = load_dataset({"name": "digits", "input_size": [8, 8]})
    # one calibration image of a blank-ish digit: activation ranges far too narrow
    cfg = QuantizeConfig(mode="ptq_int8", calibration=1, max_accuracy_drop=0.0)
    dest = tmp_path / "out" / "m.tflite"
    with pytest.raises(GateError) as e:
        quantize_model(model, ds, cfg, dest)
    msg = str(e.value)
    assert re.fullmatch(r"gate failed: m\.tflite: ptq_int8 accuracy 0\.\d{4} is 0\.\d{4} below "
                        r"the float model's (0|1)\.\d{4} \(max_accuracy_drop 0\.0\)", msg), msg
    assert not dest.exists() and not dest.parent.exists()


@pytest.mark.parametrize("stage, msg", [
    ("quantize: {mode: int8}",
     "r.yaml:7: stages.1.quantize.mode: unknown mode 'int8' (did you mean \"ptq_int8\"?); "
     "expected one of: ptq_dynamic, ptq_float16, ptq_int8, ptq_int16x8, qat"),
    ("quantize: {mode: ptq_int8, calibration: 0}",
     "r.yaml:7: stages.1.quantize.calibration: int8 needs calibration data: expected "
     "calibration >= 1. Received: calibration=0"),
    ("quantize: {mode: ptq_int8, epochs: 3}",
     "r.yaml:7: stages.1.quantize: epochs applies to mode qat, not ptq_int8"),
    ("quantize: {mode: qat, preserve: sparse}",
     "r.yaml:7: stages.1.quantize.preserve: unknown preserve 'sparse' (did you mean "
     "\"sparsity\"?); expected one of: auto, none, sparsity, clusters, clusters+sparsity"),
])
def test_recipe_settings_are_validated(stage, msg):
    with pytest.raises(RecipeError) as e:
        _recipe(stage)
    assert str(e.value) == msg


@pytest.fixture(scope="module")
def odd_model_file(tmp_path_factory):
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(2.0, -1.0, name="rescale")(i)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    g = keras.layers.Dense(4, activation="sigmoid", name="gate")(
        keras.layers.GlobalAveragePooling2D(name="gap")(x))
    x = keras.layers.Multiply(name="se")([x, keras.layers.Reshape((1, 1, 4), name="rs")(g)])
    o = keras.layers.Dense(10, activation="softmax", name="classifier")(
        keras.layers.Flatten(name="flat")(x))
    path = tmp_path_factory.mktemp("qcli") / "odd.keras"
    models.save_model(keras.Model(i, o), path)
    return path


@pytest.mark.parametrize("args, msg", [
    (["--mode", "qat"], "error: QAT cannot quantize layer(s): rescale (Rescaling), se (Multiply); "
                        "set skip_unsupported: true to leave them in float, or remove them"),
    (["--mode", "int16"], "error: --mode: unknown mode 'int16' (did you mean \"ptq_int16x8\"?); "
     "expected one of: ptq_dynamic, ptq_float16, ptq_int8, ptq_int16x8, qat"),
    (["--mode", "ptq_int8", "--calibration", "0"], "error: --calibration: int8 needs calibration "
     "data: expected calibration >= 1. Received: calibration=0"),
    (["--mode", "qat", "--preserve", "clusterz"], "error: --preserve: unknown preserve 'clusterz' "
     "(did you mean \"clusters\"?); expected one of: auto, none, sparsity, clusters, clusters+sparsity"),
])
def test_cli_bad_input_one_line_exit_2_nothing_written(odd_model_file, args, msg):
    folder = odd_model_file.parent
    before = sorted(p.name for p in folder.iterdir())
    res = CliRunner().invoke(main, ["quantize", str(odd_model_file), *args])
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == [msg], res.stderr
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in folder.iterdir()) == before


@pytest.mark.slow
def test_cli_qat_skip_unsupported(odd_model_file, tmp_path):
    out = tmp_path / "odd_qat.tflite"
    res = CliRunner().invoke(main, ["quantize", str(odd_model_file), "--mode", "qat",
                                    "--skip-unsupported", "--epochs", "1", "--out", str(out),
                                    "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["float_layers"] == ["rescale", "se"] and out.is_file()
    assert m["size_bytes"] == out.stat().st_size
