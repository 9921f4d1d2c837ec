"""The report's tables and plain statements, from hand-made rows (no TensorFlow, no run)."""

import json

import pytest
from pathlib import Path

from pipeline.report import build, render
from pipeline.report.build import _add_baseline_ratios, measurement_warnings, notes, search_lines
from pipeline.report.render import html_page, markdown
from pipeline.records import Artifact, StageRecord


def _row(name, quant, p50, gzip, *, sparsity=None, warnings=(), board=None):
    latency = {"host": {"p50": p50, "warnings": list(warnings)}}
    if board is not None:
        latency["pi4"] = board
    return {"stage": name, "name": name, "path": f"{name}/model.tflite", "format": "tflite",
            "quantization": quant, "params": 100, "nonzero_params": 100, "size_bytes": gzip * 2,
            "gzip_bytes": gzip, "accuracy": 0.98, "latency_ms": latency,
            **({"sparsity": sparsity} if sparsity is not None else {})}


def _report(rows):
    _add_baseline_ratios(rows)
    return {"recipe": {"name": "t"}, "artifacts": rows, "plots": []}


def test_ratios_and_where_compression_did_not_pay_off():
    rows = [_row("export", "fp32", 2.0, 4000), _row("int8", "int8", 2.5, 1000),
            _row("prune", "fp32", 1.98, 500, sparsity=0.8), _row("fast", "int8", 1.0, 1000)]
    report = _report(rows)
    assert [r["speedup_vs_fp32"] for r in rows] == [1.0, 0.8, 2.0 / 1.98, 2.0]
    assert rows[1]["gzip_ratio_vs_fp32"] == 4.0
    said = notes(rows)
    assert said == ["int8/model.tflite is slower than the fp32 baseline on host (0.80x): this "
                    "compression does not pay off in latency here.",
                    "prune/model.tflite: unstructured sparsity shrinks the file (gzip) but gives "
                    "no speed-up on this runtime (1.01x)."]
    md = markdown(report)
    assert "## Where compression did not pay off" in md and said[0] in md
    assert "## Measurement warnings" not in md


def test_measurement_warnings_reach_markdown_and_html_per_target():
    board = {"p50": 9.0, "warnings": ["CPU governor is 'ondemand', not 'performance'"]}
    rows = [_row("export", "fp32", 2.0, 4000, warnings=["noisy: cv 17% > 10%"], board=board),
            _row("int8", "int8", 1.0, 1000)]
    report = _report(rows)
    assert measurement_warnings(rows) == [
        "export/model.tflite on host: noisy: cv 17% > 10%",
        "export/model.tflite on pi4: CPU governor is 'ondemand', not 'performance'"]
    md = markdown(report)
    assert "| p50 ms (host) | p50 ms (pi4) |" in md
    assert "## Measurement warnings" in md
    assert "- export/model.tflite on host: noisy: cv 17% &gt; 10%" not in md  # markdown: raw
    assert "- export/model.tflite on host: noisy: cv 17% > 10%" in md
    page = html_page(report, None)
    assert "<h2>Measurement warnings</h2>" in page
    assert "<li>export/model.tflite on pi4: CPU governor is &#x27;ondemand&#x27;" in page


def test_emulated_board_latency_is_marked_and_kept_out_of_measurement_warnings():
    emu = {"p50": 8.5, "emulated": True,
           "warnings": ["emulated CPU (cortex-a72 emulated by QEMU (aarch64) on X): these "
                        "timings are the emulator's, not a board's"]}
    rows = [_row("export", "fp32", 2.0, 4000, board=emu), _row("int8", "int8", 1.0, 1000)]
    report = _report(rows)
    assert measurement_warnings(rows) == []
    md = markdown(report)
    assert "| p50 ms (host) | p50 ms (pi4, EMULATED) |" in md
    assert ("## Emulated targets\n\n- pi4: the CPU was emulated (QEMU on the host); these "
            "latencies are the emulator's, not a board's, and no latency gate was applied to "
            "them\n") in md
    page = html_page(report, None)
    assert "<th>p50 ms (pi4, EMULATED)</th>" in page and "<h2>Emulated targets</h2>" in page


def test_latency_gate_neither_passes_nor_fails_an_emulated_timing():
    from pipeline import gates

    assert gates.check_latency(1.0, "m on emu", 8.5, emulated=True) == []
    assert gates.check_latency(1.0, "m on pi4", 8.5) == [
        "m on pi4: p50 latency 8.500 ms > max_latency_ms 1.0"]


def _record(i, stage, *arts):
    return StageRecord(i, stage.split("_", 1)[1], Path(stage), list(arts), {})


def _tfl(stage, quant, p50, source, name=None, **extra):
    name = name or f"model_{quant}"
    return Artifact(name=name, path=f"{stage}/{name}.tflite", format="tflite", quantization=quant,
                    stage=stage, metrics={"accuracy": 0.9, "gzip_bytes": 1000, "source": source,
                                          "latency_ms": {"host": {"p50": p50}}, **extra})


def test_quantized_file_slower_than_the_fp32_of_its_own_model_is_noted():
    # digits_prune: the pruned network's int8 beats the original fp32 but not its own fp32
    records = [
        _record(1, "02_export", _tfl("02_export", "fp32", 0.048, "01_train/model.keras")),
        _record(3, "04_export", _tfl("04_export", "fp32", 0.021, "03_prune/model.keras"),
                _tfl("04_export", "int8", 0.039, "03_prune/model.keras")),
        _record(5, "06_quantize", _tfl("06_quantize", "int8", 0.040, "05_prune/model.keras",
                                       name="model_qat")),
        _record(6, "07_export", _tfl("07_export", "fp32", 0.020, "05_prune/model.keras",
                                     name="model_fp32_sparse")),
        _record(7, "08_export", _tfl("08_export", "int8", 0.010, "05_prune/model.keras")),
    ]
    rows = {r["path"]: r for r in build({"name": "t"}, records)["artifacts"]}
    int8 = rows["04_export/model_int8.tflite"]
    assert int8["speedup_vs_fp32"] == 0.048 / 0.039  # the baseline column stays
    assert int8["fp32_same_model"] == "04_export/model_fp32.tflite"
    assert int8["speedup_vs_fp32_same_model"] == 0.021 / 0.039
    assert rows["06_quantize/model_qat.tflite"]["fp32_same_model"] == \
        "07_export/model_fp32_sparse.tflite"  # lineage, not order: the fp32 came later
    assert notes(list(rows.values())) == [
        "04_export/model_int8.tflite (int8) is slower than the fp32 .tflite of the same model "
        "04_export/model_fp32.tflite on host (0.54x): quantization does not pay off in latency "
        "here.",
        "06_quantize/model_qat.tflite (int8) is slower than the fp32 .tflite of the same model "
        "07_export/model_fp32_sparse.tflite on host (0.50x): quantization does not pay off in "
        "latency here."]


def _keras(stage, source, **extra):
    return Artifact(name="model", path=f"{stage}/model.keras", format="keras",
                    quantization="fp32", stage=stage, metrics={"source": source, **extra})


def test_sparse_file_is_compared_with_the_dense_model_it_was_pruned_from():
    # digits_prune: channels (03) then 80% magnitude (05); the sparse fp32 beats the original
    # fp32 only because of the channel pruning before it
    sparse = {"conv1": 0.8}
    records = [
        _record(0, "01_train", _keras("01_train", None)),
        _record(1, "02_export", _tfl("02_export", "fp32", 0.048, "01_train/model.keras")),
        _record(2, "03_prune", _keras("03_prune", "01_train/model.keras")),
        _record(3, "04_export", _tfl("04_export", "fp32", 0.021, "03_prune/model.keras")),
        _record(4, "05_prune", _keras("05_prune", "03_prune/model.keras", sparsity=sparse)),
        _record(5, "06_export", _tfl("06_export", "fp32", 0.022, "05_prune/model.keras",
                                     name="model_fp32_sparse", sparsity=sparse),
                _tfl("06_export", "int8", 0.019, "05_prune/model.keras",
                     name="model_int8_sparse", sparsity=sparse)),
    ]
    rows = {r["path"]: r for r in build({"name": "t"}, records)["artifacts"]}
    row = rows["06_export/model_fp32_sparse.tflite"]
    assert row["dense_model"] == "04_export/model_fp32.tflite"
    assert row["speedup_vs_dense_model"] == 0.021 / 0.022
    assert "dense_model" not in rows["06_export/model_int8_sparse.tflite"]  # no dense int8
    assert notes(list(rows.values())) == [
        "06_export/model_fp32_sparse.tflite: unstructured sparsity gives no speed-up over the "
        "fp32 .tflite of the dense model it was pruned from, 04_export/model_fp32.tflite (0.95x "
        "on host); what it gains is file size (gzip)."]


def test_same_model_note_is_not_repeated_when_that_fp32_is_the_baseline():
    records = [_record(1, "02_export", _tfl("02_export", "fp32", 2.0, "01_train/model.keras"),
                       _tfl("02_export", "int8", 2.5, "01_train/model.keras"))]
    rows = build({"name": "t"}, records)["artifacts"]
    assert rows[1]["speedup_vs_fp32_same_model"] == 0.8
    assert notes(rows) == ["02_export/model_int8.tflite is slower than the fp32 baseline on host "
                           "(0.80x): this compression does not pay off in latency here."]


def test_an_export_without_a_recorded_source_pairs_within_its_stage():
    records = [_record(0, "01_export", _tfl("01_export", "fp32", 1.0, None),
                       _tfl("01_export", "dynamic", 2.0, None)),
               _record(1, "02_quantize", _tfl("02_quantize", "int8", 0.5, None))]
    rows = build({"name": "t"}, records)["artifacts"]
    assert rows[1]["fp32_same_model"] == "01_export/model_fp32.tflite"
    assert "fp32_same_model" not in rows[2]


def test_files_made_from_the_recipes_own_model_pair_across_stages():
    # model: {path: m.keras} then export fp32 and quantize int8: no Keras model in the run
    records = [_record(0, "01_export", _tfl("01_export", "fp32", 1.0, "recipe:model")),
               _record(1, "02_quantize", _tfl("02_quantize", "int8", 2.0, "recipe:model"))]
    rows = build({"name": "t"}, records)["artifacts"]
    assert rows[1]["fp32_same_model"] == "01_export/model_fp32.tflite"
    assert rows[1]["speedup_vs_fp32_same_model"] == 0.5


def test_report_json_and_md_name_the_plot_that_is_written(tmp_path):
    report = _report([_row("export", "fp32", 2.0, 4000), _row("int8", "int8", 1.0, 1000)])
    files = render(report, tmp_path)
    assert files["png"] == tmp_path / "plot.png" and files["png"].stat().st_size > 1000
    assert json.loads((tmp_path / "report.json").read_text())["plot"] == "plot.png"
    assert "![accuracy against latency and size](plot.png)" in (tmp_path / "report.md").read_text()
    keras_only = {"recipe": {"name": "t"}, "plots": [], "artifacts": [
        {**_row("train", "fp32", None, 4000), "format": "keras", "latency_ms": {}}]}
    files = render(keras_only, tmp_path / "none")
    assert "png" not in files and not (tmp_path / "none" / "plot.png").exists()
    assert json.loads((tmp_path / "none" / "report.json").read_text())["plot"] is None
    assert "](plot.png)" not in (tmp_path / "none" / "report.md").read_text()


def test_per_layer_channels_and_sparsity_reach_markdown_and_html():
    channels = [{"layer": "conv0", "type": "Conv2D", "out_before": 16, "out_after": 8},
                {"layer": "bn0", "type": "BatchNormalization", "out_before": 16, "out_after": 8},
                {"layer": "classifier", "type": "Dense", "out_before": 10, "out_after": 10}]
    pruned = {**_row("03_prune", "fp32", None, 4000), "format": "keras",
              "path": "03_prune/model.keras", "channels": channels}
    sparse = {**_row("05_prune", "fp32", None, 900), "format": "keras",
              "path": "05_prune/model.keras", "sparsity": {"conv0": 0.0, "fc": 0.800003}}
    carried = {**_row("07_export", "fp32", 1.0, 800), "sparsity": {"conv0": 0.0, "fc": 0.8}}
    report = {"recipe": {"name": "t"}, "plots": [], "artifacts": [pruned, sparse, carried]}
    md = markdown(report)
    assert ("## Per layer (prune, cluster, adapt)\n\n"
            "- 03_prune/model.keras output channels: conv0 16→8, classifier 10\n"
            "- 05_prune/model.keras zero weights: conv0 0.0%, fc 80.0%\n") in md
    page = html_page(report, None)
    assert ("<h2>Per layer (prune, cluster, adapt)</h2><ul><li>03_prune/model.keras output channels: "
            "conv0 16→8, classifier 10</li><li>05_prune/model.keras zero weights: conv0 0.0%, "
            "fc 80.0%</li></ul>") in page


@pytest.mark.slow
def test_stages_record_the_recipes_own_model_as_source(tmp_path):
    """export then quantize straight from the recipe's model (no train): one lineage."""
    import json

    from pipeline import engine, recipe
    from tests.helpers import TINY_RECIPE

    text = TINY_RECIPE.replace(
        "  - train: {epochs: 3, batch_size: 64, learning_rate: 0.01, patience: null}\n"
        "  - export: {modes: [fp32, int8]}\n",
        "  - export: {modes: [fp32]}\n  - quantize: {mode: ptq_dynamic}\n")
    assert "quantize" in text
    engine.run(recipe.parse(text), tmp_path)
    rows = {r["path"]: r for r in json.loads((tmp_path / "report.json").read_text())["artifacts"]}
    dyn = rows["02_quantize/model_ptq_dynamic.tflite"]
    assert dyn["source"] == rows["01_export/model_fp32.tflite"]["source"] == "recipe:model"
    assert dyn["fp32_same_model"] == "01_export/model_fp32.tflite"


def test_the_nas_search_says_which_latencies_were_measured_and_which_predicted():
    def best(**more):
        return {"stage": "01_nas", "name": "best", "path": "01_nas/best.keras", "format": "keras",
                "quantization": None, "params": 100, "nonzero_params": 100, "size_bytes": 4000,
                "gzip_bytes": 3000, "accuracy": 0.9, "latency_ms": {}, "nas_trial": "3",
                "architecture": "width=0.5", "nas_quantization": "int8",
                "nas_latency_ms": 1.25, "nas_latency_source": "measured", **more}

    assert search_lines([best(nas_latency="measured")]) == [
        "01_nas/best.keras: nas trial 3 [width=0.5], int8 latency 1.25 ms measured on this host; "
        "every trial's latency was measured"]
    rows = [best(nas_latency="predicted", nas_predicted_latency_ms=1.5,
                 nas_measured_trials=["1", "3"])]
    line = ("01_nas/best.keras: nas trial 3 [width=0.5], int8 latency 1.25 ms measured on this "
            "host (predicted 1.5 ms); the search scored trials by latency predicted from the host "
            "latency table and measured its 2 finalist(s) (trials 1, 3) before choosing")
    assert search_lines(rows) == [line]
    assert f"## Architecture search\n\n- {line}\n" in markdown(_report(rows))
    assert "<h2>Architecture search</h2><ul><li>" in html_page(_report(rows), None)
