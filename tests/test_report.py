"""The report's tables and plain statements, from hand-made rows (no TensorFlow, no run)."""

from pipeline.report.build import _add_baseline_ratios, measurement_warnings, notes
from pipeline.report.render import html_page, markdown


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
