"""The `prune`, `cluster` and `lowrank` stages, their recipe settings, and `edgepipe prune`."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

from pipeline import engine, models, recipe
from pipeline.cli import main
from pipeline.errors import RecipeError

HEAD = """name: pr
seed: 0
dataset: {name: digits, input_size: [8, 8], train_fraction: 0.5}
model: {zoo: small_cnn, options: {filters: [8, 16], dense: 32, dropout: 0.0}}
stages:
  - train: {epochs: 3, batch_size: 32, learning_rate: 0.01, patience: null}
"""


def _recipe(*stages: str) -> recipe.Recipe:
    return recipe.parse(HEAD + "".join(f"  - {s}\n" for s in stages), "r.yaml")


@pytest.mark.slow
def test_magnitude_channels_cluster_lowrank_chain(tmp_path):
    r = _recipe("prune: {method: channels, ratio: 0.5, round_to: 4, min_channels: 4, epochs: 1,"
                " protect: [classifier]}",
                "prune: {method: magnitude, sparsity: 0.8, skip_first: true, epochs: 2}",
                "cluster: {clusters: 8, epochs: 1, layers: [fc]}",
                "lowrank: {ratio: 0.25, epochs: 1, layers: [fc]}",
                # not sparse: true: lowrank keeps its best validation epoch, which may be its
                # start (conv1 and classifier still 80% zeros), and LiteRT's XNNPACK refuses
                # sparse-encoded int8 FULLY_CONNECTED nodes
                "export: {modes: [int8]}")
    records = engine.run(r, tmp_path / "run")
    _, channels, magnitude, cluster, lowrank, export = records
    # channels: per-layer counts before/after in the artifact
    rows = {row["layer"]: row for row in channels.artifacts[0].metrics["channels"]}
    assert (rows["conv0"]["out_before"], rows["conv0"]["out_after"]) == (8, 4)
    assert (rows["conv1"]["out_before"], rows["conv1"]["out_after"]) == (16, 8)
    assert rows["classifier"]["out_after"] == 10
    # magnitude: measured per-layer sparsity in metrics.json, the first conv left dense
    saved = json.loads((tmp_path / "run" / "03_prune" / "metrics.json").read_text())
    sp = saved["artifacts"][0]["metrics"]["sparsity"]
    assert sp["conv0"] == 0.0
    assert all(sp[k] == pytest.approx(0.8, abs=0.01) for k in ("conv1", "fc", "classifier"))
    plan = saved["metrics"]["schedules"][0]
    assert plan["frequency"] < plan["total_steps"]  # fitted, not TF-MOT's default of 100
    # cluster on the sparse model: zeros kept, at most 8 values + zero in fc
    cm = cluster.artifacts[0].metrics
    assert cm["preserve_sparsity"] is True and cm["unique_values"]["fc"] <= 9
    assert cm["sparsity"]["fc"] >= 0.79
    # lowrank: fewer params, a plain model that loads in safe mode
    lm = lowrank.artifacts[0].metrics
    assert lm["params_after"] < lm["params_before"] and lm["macs_after"] < lm["macs_before"]
    m = models.load_model(tmp_path / "run" / lowrank.artifacts[0].path)
    assert "fc_lr" in [layer.name for layer in m.layers]
    # the lowrank model was fine-tuned without pruning wrappers (its zeros are not kept), and
    # the export row does not claim a sparsity
    assert "sparsity" not in export.artifacts[0].metrics
    # ...and its .tflite scores as the Keras model it was converted from (measured on the file)
    assert export.artifacts[0].metrics["accuracy"] == pytest.approx(lm["accuracy"], abs=0.01)


@pytest.mark.parametrize("stage, msg", [
    ("prune: {sparsity: 1.5}",
     "r.yaml:7: stages.1.prune.sparsity: Expected sparsity in [0, 1). Received: sparsity=1.5"),
    ("prune: {method: channels, ratio: 1.0}",
     "r.yaml:7: stages.1.prune.ratio: Expected ratio in [0, 1). Received: ratio=1.0"),
    ("prune: {method: channels, steps: 2, per_layer: {conv0: 0.5, conv1: 1.5}}",
     "r.yaml:7: stages.1.prune.per_layer: Expected per_layer ratios in [0, 1). Received: "
     "per_layer['conv1']=1.5"),
    ("prune: {begin_step: 10, end_step: 5}",
     "r.yaml:7: stages.1.prune: Expected end_step > begin_step (the schedule ends before it "
     "begins). Received: begin_step=10, end_step=5"),
    ("prune: {method: magnitde}",
     "r.yaml:7: stages.1.prune.method: unknown method 'magnitde' (did you mean \"magnitude\"?); "
     "expected one of: magnitude, m_by_n, channels"),
    ("prune: {method: magnitude, ratio: 0.5}",
     "r.yaml:7: stages.1.prune: ratio applies to method channels, not magnitude"),
    ("prune: {patience: 3}",
     "r.yaml:7: stages.1.prune: patience must be null for method magnitude: early "
     "stopping would restore weights from before the target sparsity"),
    ("cluster: {clusters: 1}",
     "r.yaml:7: stages.1.cluster.clusters: Expected clusters >= 2. Received: clusters=1"),
    ("lowrank: {rank: 0}", "r.yaml:7: stages.1.lowrank: Expected rank > 0. Received: rank=0"),
    ("lowrank: {energy: 1.5}",
     "r.yaml:7: stages.1.lowrank: Expected energy in (0, 1]. Received: energy=1.5"),
    ("lowrank: {epochs: 1}",
     "r.yaml:7: stages.1.lowrank: give exactly one of rank, ratio, energy; got none"),
])
def test_recipe_settings_are_validated(stage, msg):
    with pytest.raises(RecipeError) as e:
        _recipe(stage)
    assert str(e.value) == msg


# ----- edgepipe prune ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from tests.helpers import tiny_model

    folder = tmp_path_factory.mktemp("prune_cli")
    m = tiny_model()
    path = folder / "m.keras"
    models.save_model(m, path)
    return path


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("args, msg", [
    (["--sparsity", "1.5"], "error: --sparsity: Expected sparsity in [0, 1). Received: sparsity=1.5"),
    (["--method", "channels", "--per-layer", "conv0=1.0"],
     "error: --per-layer: Expected per_layer ratios in [0, 1). Received: per_layer['conv0']=1.0"),
    (["--method", "chanels"], "error: --method: unknown method 'chanels' (did you mean \"channels\"?)"
     "; expected one of: magnitude, m_by_n, channels"),
    (["--begin-step", "20", "--end-step", "10"], "error: Expected end_step > begin_step (the "
     "schedule ends before it begins). Received: begin_step=20, end_step=10"),
    (["--frequency", "100", "--epochs", "1"],
     "error: pruning frequency=100 is more than the 15 steps between begin_step=0 and end_step=15 "
     "(21 training steps): the target sparsity would never be reached. Use frequency <= 15 or "
     "leave it unset"),
    (["--method", "channels", "--protect", "clasifier", "--epochs", "0"],
     'error: Unknown layer "clasifier" in protect (did you mean "classifier"?)'),
    (["--skip", "fcc"], 'error: Unknown layer "fcc" in pruning (did you mean "fc"?); layers: '
     'input, conv0, bn0, relu0, pool0, flatten, fc, classifier'),
    (["--method", "m_by_n", "--m-by-n", "4:4"],
     "error: --m-by-n: Expected 0 < m < n. Received: m_by_n=[4, 4]"),
])
def test_cli_bad_input_one_line_exit_2_nothing_written(model_file, args, msg):
    before = _files(model_file.parent)
    res = CliRunner().invoke(main, ["prune", str(model_file), *args])
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == [msg], res.stderr
    assert "Traceback" not in res.stderr
    assert _files(model_file.parent) == before


@pytest.mark.slow
def test_cli_m_by_n(model_file, tmp_path):
    out = tmp_path / "p.keras"
    res = CliRunner().invoke(main, ["prune", str(model_file), "--method", "m_by_n", "--epochs", "1",
                                    "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["m_by_n"] == [2, 4] and m["m_by_n_layers"] == ["conv0", "fc", "classifier"]
    assert m["sparsity"]["fc"] == 0.5 and m["sparsity"]["classifier"] == 0.5
    from pipeline.compress.magnitude import m_by_n_report

    assert all(m_by_n_report(models.load_model(out)).values())
    assert np.isfinite(m["accuracy"])


def test_export_and_quantize_carry_the_same_structure_of_their_model(tmp_path):
    """Regression: export copied only sparsity and channels from the Keras model it converted,
    quantize also unique_values and clusters, so a clustered model's export row lost them."""
    r = _recipe("cluster: {clusters: 4, epochs: 0, layers: [fc]}", "export: {modes: [fp32]}",
                "quantize: {mode: ptq_int8}")
    _, cluster, export, quantize = engine.run(r, tmp_path / "run")
    keras_m = cluster.artifacts[0].metrics
    for tfl in (export.artifacts[0].metrics, quantize.artifacts[0].metrics):
        assert tfl["unique_values"] == keras_m["unique_values"] and tfl["unique_values"]["fc"] <= 4
        assert tfl["clusters"] == 4 and tfl["source"] == cluster.artifacts[0].path
