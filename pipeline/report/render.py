"""report.json / report.md / report.html (+ plot.png), written atomically into a folder."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from pipeline.artifacts import atomic_write_bytes, atomic_write_json, atomic_write_text
from pipeline.report.build import (emulated_lines, emulated_targets, io_lines, layer_lines,
                                   measurement_warnings, notes, search_lines, task_of)


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "—"
    return format(v, spec) if spec else str(v)


def latency_targets(rows: list[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for r in rows:
        for k in r["latency_ms"]:
            if k not in keys:
                keys.append(k)
    return keys


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    targets = latency_targets(rows)
    columns = task_of(rows)["columns"]
    emulated = emulated_targets(rows)
    head = ["stage", "artifact", "quant", "params", "nonzero", "size KB", "gzip KB", *columns,
            *[f"p50 ms ({t}{', EMULATED' if t in emulated else ''})" for t in targets],
            "speed-up", "gzip ratio"]
    body = []
    for r in rows:
        kb = lambda b: _fmt(b / 1024 if b is not None else None, ".1f")  # noqa: E731
        body.append([r["stage"], Path(r["path"]).name, _fmt(r["quantization"]),
                     _fmt(r["params"], ","), _fmt(r["nonzero_params"], ","), kb(r["size_bytes"]),
                     kb(r["gzip_bytes"]), *[_fmt(r.get(c), ".4f" if c.endswith("accuracy")
                                                 else ".4g") for c in columns],
                     *[_fmt((r["latency_ms"].get(t) or {}).get("p50"), ".3f") for t in targets],
                     _fmt(r.get("speedup_vs_fp32"), ".2f"), _fmt(r.get("gzip_ratio_vs_fp32"), ".2f")])
    return head, body


def markdown(report: dict[str, Any]) -> str:
    head, body = table(report["artifacts"])
    lines = [f"# edgepipe report: {report['recipe'].get('name', '')}", "",
             f"Task: {task_of(report['artifacts'])['describe']}.", "",
             "Metrics are measured on each file itself (test split); sizes are on disk; latency "
             "is edge-runner's p50 at the listed target. Ratios are against the first fp32 .tflite; "
             "the notes also compare each quantized file with the fp32 .tflite of the same model.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    ns = notes(report["artifacts"])
    if ns:
        lines += ["", "## Where compression did not pay off", ""] + [f"- {n}" for n in ns]
    io = io_lines(report["artifacts"])
    if io:
        lines += ["", "## int8 inputs and outputs", ""] + [f"- {x}" for x in io]
    ss = search_lines(report["artifacts"])
    if ss:
        lines += ["", "## Architecture search", ""] + [f"- {x}" for x in ss]
    ls = layer_lines(report["artifacts"])
    if ls:
        lines += ["", "## Per layer (prune, cluster, adapt)", ""] + [f"- {x}" for x in ls]
    es = emulated_lines(report["artifacts"])
    if es:
        lines += ["", "## Emulated targets", ""] + [f"- {e}" for e in es]
    ws = measurement_warnings(report["artifacts"])
    if ws:
        lines += ["", "## Measurement warnings", "", "edge-runner flagged these latencies as less "
                  "trustworthy; re-measure on a quieter, cooler board before relying on them.",
                  ""] + [f"- {w}" for w in ws]
    if report.get("plot"):
        lines += ["", "## Accuracy against latency and size", "",
                  f"![accuracy against latency and size]({report['plot']})"]
    if report.get("plots"):
        lines += ["", "## Stage plots", ""] + [f"![{p}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def plot_png(rows: list[dict[str, Any]]) -> bytes | None:
    """Accuracy against host p50 latency and against gzip size, one point per .tflite."""
    task = task_of(rows)
    metric, pct = task["primary"], task["primary"].endswith("accuracy")
    pts = [r for r in rows if r["format"] == "tflite" and r.get(metric) is not None]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, xkey, xlabel in ((axes[0], "latency", "host p50 latency (ms)"),
                             (axes[1], "gzip_bytes", "gzip size (KB)")):
        for r in pts:
            x = ((r["latency_ms"].get("host") or {}).get("p50") if xkey == "latency"
                 else r["gzip_bytes"] / 1024)
            if x is None:
                continue
            y = r[metric] * 100 if pct else r[metric]
            ax.scatter(x, y)
            ax.annotate(f"{r['stage']}/{r['name']}", (x, y), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric} of the .tflite{' (%)' if pct else ''} "
                      f"({'higher' if task['higher_is_better'] else 'lower'} is better)")
        if pct:
            lo, hi = ax.get_ylim()
            ax.set_ylim(lo, min(hi, 100.5))  # accuracy cannot pass 100%
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _stage_plots(report: dict[str, Any], run_dir: Path | None) -> str:
    """Plots stages made (metrics["plots"], run-relative), embedded."""
    out = []
    for p in report.get("plots", []):
        f = Path(run_dir) / p if run_dir is not None else None
        if f is not None and f.is_file():
            out.append(f'<h3>{html.escape(p)}</h3><img alt="{html.escape(p)}" '
                       f'src="data:image/png;base64,{base64.b64encode(f.read_bytes()).decode()}">')
    return "<h2>Stage plots</h2>" + "".join(out) if out else ""


def html_page(report: dict[str, Any], png: bytes | None, run_dir: Path | None = None) -> str:
    head, body = table(report["artifacts"])
    esc = html.escape
    rows = "\n".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in body)
    img = (f'<img alt="accuracy against latency and size" src="data:image/png;base64,'
           f'{base64.b64encode(png).decode()}">' if png else "<p>No .tflite files to plot.</p>")
    ns = "".join(f"<li>{esc(n)}</li>" for n in notes(report["artifacts"]))
    ws = "".join(f"<li>{esc(w)}</li>" for w in measurement_warnings(report["artifacts"]))
    es = "".join(f"<li>{esc(e)}</li>" for e in emulated_lines(report["artifacts"]))
    ls = "".join(f"<li>{esc(x)}</li>" for x in layer_lines(report["artifacts"]))
    ss = "".join(f"<li>{esc(x)}</li>" for x in search_lines(report["artifacts"]))
    io = "".join(f"<li>{esc(x)}</li>" for x in io_lines(report["artifacts"]))
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>edgepipe report: {esc(str(report['recipe'].get('name', '')))}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#eee}}</style>
</head><body><h1>edgepipe report: {esc(str(report['recipe'].get('name', '')))}</h1>
<p>Task: {esc(task_of(report['artifacts'])['describe'])}.</p>
<p>Metrics are measured on each file itself; sizes on disk; latency is edge-runner's p50.
Ratios are against the first fp32 .tflite; the notes also compare each quantized file with the fp32
.tflite of the same model.</p>
<table><tr>{''.join(f'<th>{esc(h)}</th>' for h in head)}</tr>
{rows}</table>
{f'<h2>Where compression did not pay off</h2><ul>{ns}</ul>' if ns else ''}
{f'<h2>int8 inputs and outputs</h2><ul>{io}</ul>' if io else ''}
{f'<h2>Architecture search</h2><ul>{ss}</ul>' if ss else ''}
{f'<h2>Per layer (prune, cluster, adapt)</h2><ul>{ls}</ul>' if ls else ''}
{f'<h2>Emulated targets</h2><ul>{es}</ul>' if es else ''}
{f'<h2>Measurement warnings</h2><ul>{ws}</ul>' if ws else ''}
<h2>Accuracy against latency and size</h2>{img}
{_stage_plots(report, run_dir)}
</body></html>
"""


def render(report: dict[str, Any], folder: str | Path,
           run_dir: str | Path | None = None) -> dict[str, Path]:
    folder = Path(folder)
    png = plot_png(report["artifacts"])
    report = {**report, "plot": "plot.png" if png else None}  # beside the report files
    out = {"json": folder / "report.json", "md": folder / "report.md",
           "html": folder / "report.html"}
    atomic_write_json(out["json"], report)
    atomic_write_text(out["md"], markdown(report))
    atomic_write_text(out["html"], html_page(report, png, Path(run_dir) if run_dir else None))
    if png:
        out["png"] = folder / "plot.png"
        atomic_write_bytes(out["png"], png)
    return out
