"""Collect the artifacts and measurements of a run into the report.json structure."""

from __future__ import annotations

from typing import Any

from pipeline.records import StageRecord

#: Fields every artifact row has (null when not measured). Later capabilities add more.
CORE = ("stage", "name", "path", "format", "quantization", "params", "nonzero_params",
        "size_bytes", "gzip_bytes", "accuracy", "latency_ms")


def build(recipe: dict[str, Any], records: list[StageRecord]) -> dict[str, Any]:
    latency: dict[str, dict] = {}
    stages = []
    plots = [p for r in records for p in r.metrics.get("plots", [])]  # run-relative .png files
    for r in records:
        for path, per_target in r.metrics.get("latency_ms", {}).items():
            latency.setdefault(path, {}).update(per_target)
        stages.append({"stage": r.dir.name, "name": r.name,
                       "artifacts": [a.path for a in r.artifacts]})
    rows = []
    for r in records:
        for a in r.artifacts:
            row: dict[str, Any] = {k: None for k in CORE}
            row.update({k: v for k, v in a.metrics.items() if k != "latency_ms"})
            row.update(stage=a.stage or r.dir.name, name=a.name, path=a.path, format=a.format,
                       quantization=a.quantization)
            row["latency_ms"] = {**a.metrics.get("latency_ms", {}), **latency.get(a.path, {})}
            rows.append(row)
    _add_baseline_ratios(rows)
    _add_same_model_ratios(rows)
    _add_dense_ratios(rows)
    return {"recipe": recipe, "stages": stages, "artifacts": rows, "plots": plots,
            "task": task_of(rows)}


#: a one-output classifier's task, for runs recorded before tasks were
CLASSIFICATION = {"name": "classification", "primary": "accuracy", "higher_is_better": True,
                  "columns": ["accuracy"], "describe": "classification", "heads": {}}


def task_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's task as its newest artifact recorded it (pipeline.tasks.Task.to_json)."""
    return next((r["task"] for r in reversed(rows) if r.get("task")), CLASSIFICATION)


def _add_baseline_ratios(rows: list[dict[str, Any]]) -> None:
    """Size and latency of each .tflite relative to the first fp32 .tflite (the baseline)."""
    base = next((r for r in rows if r["format"] == "tflite" and r["quantization"] == "fp32"), None)
    if base is None:
        return
    base_p50 = (base["latency_ms"].get("host") or {}).get("p50")
    for r in rows:
        if r["format"] != "tflite":
            continue
        if base.get("gzip_bytes") and r.get("gzip_bytes"):
            r["gzip_ratio_vs_fp32"] = base["gzip_bytes"] / r["gzip_bytes"]
        p50 = (r["latency_ms"].get("host") or {}).get("p50")
        if base_p50 and p50:
            r["speedup_vs_fp32"] = base_p50 / p50


def _host_p50(row: dict[str, Any]) -> float | None:
    return (row["latency_ms"].get("host") or {}).get("p50")


def _made_from(row: dict[str, Any]) -> tuple[str, str]:
    """The Keras model a .tflite was converted from: its recorded `source`, else its stage
    (one export stage converts one model into every mode)."""
    return ("source", row["source"]) if row.get("source") else ("stage", row["stage"])


def _add_same_model_ratios(rows: list[dict[str, Any]]) -> None:
    """Each quantized .tflite against the fp32 .tflite converted from the same Keras model: the
    baseline ratio hides a quantization that is slower than its own network in float."""
    fp32: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        if r["format"] == "tflite" and r["quantization"] == "fp32":
            fp32.setdefault(_made_from(r), r)
    for r in rows:
        if r["format"] != "tflite" or r["quantization"] in (None, "fp32"):
            continue
        sib = fp32.get(_made_from(r))
        if sib is None:
            continue
        r["fp32_same_model"] = sib["path"]
        p50, sib_p50 = _host_p50(r), _host_p50(sib)
        if p50 and sib_p50:
            r["speedup_vs_fp32_same_model"] = sib_p50 / p50


def _add_dense_ratios(rows: list[dict[str, Any]]) -> None:
    """Each sparse .tflite against the .tflite of the same quantization made from the dense Keras
    model it was pruned from (found by walking the Keras models' `source`): the baseline ratio
    credits sparsity with what an earlier channel pruning bought."""
    by_path = {r["path"]: r for r in rows}
    for r in rows:
        if r["format"] != "tflite" or not r.get("sparsity"):
            continue
        k, seen = r.get("source"), set()
        while k and k not in seen and k in by_path:
            seen.add(k)
            if not by_path[k].get("sparsity"):  # the dense model
                dense = next((d for d in rows if d["format"] == "tflite" and d.get("source") == k
                              and d["quantization"] == r["quantization"]
                              and not d.get("sparsity")), None)
                if dense is not None and _host_p50(dense) and _host_p50(r):
                    r["dense_model"] = dense["path"]
                    r["speedup_vs_dense_model"] = _host_p50(dense) / _host_p50(r)
                break
            k = by_path[k].get("source")


#: a compressed file whose task metric is this much worse (relative to the fp32 file of the
#: same model, at least 0.5 % of it) costs the metric
METRIC_COST = 0.005


def metric_notes(rows: list[dict[str, Any]], task: dict[str, Any]) -> list[str]:
    """Each compressed .tflite against the fp32 .tflite of the same Keras model, in the task's
    metric: what it costs there, and whether it bought any speed for that."""
    p, higher = task["primary"], task["higher_is_better"]
    by_path = {r["path"]: r for r in rows}
    out = []
    for r in rows:
        sib = by_path.get(r.get("fp32_same_model"))
        if sib is None or r.get(p) is None or sib.get(p) is None:
            continue
        worse = (sib[p] - r[p]) if higher else (r[p] - sib[p])
        if worse > max(METRIC_COST * abs(sib[p]), 1e-12):
            same = r.get("speedup_vs_fp32_same_model")
            paid = (f"and is {same:.2f}x as fast" if same is not None else "with no latency "
                    "measured") + (": it does not pay off" if same is not None and same < 1.05
                                   else "")
            out.append(f"{r['path']} ({r['quantization']}) costs {p} {sib[p]:.4g} → {r[p]:.4g} "
                       f"({'higher' if higher else 'lower'} is better) against the fp32 .tflite "
                       f"of the same model, {paid}.")
    return out


def notes(rows: list[dict[str, Any]], task: dict[str, Any] | None = None) -> list[str]:
    """Plain statements of where compression did not pay off on the hardware, and what it cost
    in the task's metric."""
    out = metric_notes(rows, task or task_of(rows))
    base = next((r["path"] for r in rows
                 if r["format"] == "tflite" and r["quantization"] == "fp32"), None)
    for r in rows:
        if r["format"] != "tflite":
            continue
        sp = r.get("speedup_vs_fp32")
        if sp is not None and (r["quantization"] != "fp32" or r.get("sparsity")):
            if sp < 0.95:
                out.append(f"{r['path']} is slower than the fp32 baseline on host "
                           f"({sp:.2f}x): this compression does not pay off in latency here.")
            elif r.get("sparsity") and sp < 1.1:
                out.append(f"{r['path']}: unstructured sparsity shrinks the file (gzip) but gives "
                           f"no speed-up on this runtime ({sp:.2f}x).")
        dense = r.get("speedup_vs_dense_model")
        if dense is not None and dense < 1.1 and r["dense_model"] != base:
            out.append(f"{r['path']}: unstructured sparsity gives no speed-up over the "
                       f"{r['quantization']} .tflite of the dense model it was pruned from, "
                       f"{r['dense_model']} ({dense:.2f}x on host); what it gains is file size "
                       f"(gzip).")
        same = r.get("speedup_vs_fp32_same_model")
        if same is not None and same < 0.95 and r["fp32_same_model"] != base:
            out.append(f"{r['path']} ({r['quantization']}) is slower than the fp32 .tflite of the "
                       f"same model {r['fp32_same_model']} on host ({same:.2f}x): quantization "
                       f"does not pay off in latency here.")
    return out


def layer_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per-layer results of prune / cluster / adapt stages (and adapt's budget), per Keras model."""
    out = []
    for r in rows:
        if r["format"] != "keras":
            continue
        if r.get("channels"):  # BatchNormalization follows its conv's count: left out
            out.append(f"{r['path']} output channels: " + ", ".join(
                f"{c['layer']} {c['out_before']}" + (f"→{c['out_after']}"
                                                     if c["out_after"] != c["out_before"] else "")
                for c in r["channels"] if c.get("type") != "BatchNormalization"))
        if r.get("adapt_budget"):
            b = r["adapt_budget"]
            out.append(f"{r['path']} latency budget on {b['target']}: {b['budget']}, "
                       f"{'met' if b['budget_met'] else 'MISSED'} ({b['final_ms']:.4g} ms "
                       f"measured)")
        if r.get("sparsity"):
            out.append(f"{r['path']} zero weights: " + ", ".join(
                f"{k} {v:.1%}" for k, v in r["sparsity"].items()))
        if r.get("unique_values"):
            out.append(f"{r['path']} distinct weight values: " + ", ".join(
                f"{k} {v}" for k, v in r["unique_values"].items()))
    return out


def search_lines(rows: list[dict[str, Any]]) -> list[str]:
    """What the nas stage chose, and which of its latencies were measured or predicted."""
    out = []
    for r in rows:
        if r["format"] != "keras" or r.get("nas_trial") is None:
            continue
        line = (f"{r['path']}: nas trial {r['nas_trial']} [{r.get('architecture')}], "
                f"{r.get('nas_quantization')} latency {r['nas_latency_ms']:.4g} ms "
                f"{r.get('nas_latency_source', 'measured')} on this host")
        if r.get("nas_latency") == "predicted":
            measured = r.get("nas_measured_trials") or []
            line += (f" (predicted {r['nas_predicted_latency_ms']:.4g} ms); the search scored "
                     f"trials by latency predicted from the host latency table and measured its "
                     f"{len(measured)} finalist(s) (trials {', '.join(measured)}) before choosing")
        else:
            line += "; every trial's latency was measured"
        out.append(line)
    return out


def io_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The input/output type of each int8 .tflite, and why (given, or the task's default)."""
    return [f"{r['path']}: {r['io']} inputs and outputs ({r.get('io_reason', 'given')})"
            for r in rows if r["format"] == "tflite" and r.get("io")]


def measurement_warnings(rows: list[dict[str, Any]]) -> list[str]:
    """edge-runner's own warnings (noise, governor, throttling, ...), one line per target.
    Emulated targets are left out: `emulated_lines` says all there is to say about them."""
    return [f"{r['path']} on {target}: {w}" for r in rows
            for target, lat in r.get("latency_ms", {}).items()
            if not (lat or {}).get("emulated") for w in (lat or {}).get("warnings", [])]


def emulated_targets(rows: list[dict[str, Any]]) -> list[str]:
    """Latency columns (targets) measured on an emulated CPU, in table order."""
    out: list[str] = []
    for r in rows:
        for target, lat in r.get("latency_ms", {}).items():
            if (lat or {}).get("emulated") and target not in out:
                out.append(target)
    return out


def emulated_lines(rows: list[dict[str, Any]]) -> list[str]:
    return [f"{t}: the CPU was emulated (QEMU on the host); these latencies are the emulator's, "
            "not a board's, and no latency gate was applied to them" for t in emulated_targets(rows)]
