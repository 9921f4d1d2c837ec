"""`edgepipe export MODEL --mode MODE`: one validated .tflite without a recipe."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.artifacts import json_text
from pipeline.cli.common import (data_option, dataset_for_model, force_option, output_path,
                                 task_option, unsafe_option)


@click.command()
@click.argument("model_path", metavar="MODEL", type=click.Path())
@click.option("--mode", default="fp32", show_default=True,
              help="fp32 | dynamic | float16 | int8 | int16x8")
@data_option
@click.option("--out", type=click.Path(dir_okay=False), help="output .tflite "
              "(default: MODEL's name + _MODE.tflite beside it)")
@click.option("--sparse", is_flag=True, help="store pruned weights sparsely")
@click.option("--io", type=click.Choice(["int8", "float32"]),
              help="int8: the file's input/output type (default: what keeps the task's metric)")
@task_option
@force_option
@unsafe_option
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
def export(model_path, mode, data, out, sparse, io, task, force, unsafe, as_json) -> None:
    """Convert a Keras model to TFLite and validate it on the test split of --data."""
    from pipeline import models, tflite

    tflite.check_mode(mode)
    dest = output_path(out, Path(model_path).with_name(
        f"{Path(model_path).stem}_{mode}{'_sparse' if sparse else ''}.tflite"), force)
    model = models.load_model(model_path, unsafe=unsafe)
    ds = dataset_for_model(data, model, task=task)
    m = tflite.export(model, dest, mode, ds, sparse=sparse, io=io)
    if as_json:
        click.echo(json_text({"path": str(dest), "quantization": mode, **m}, indent=2))
    else:
        from pipeline.stages.export import log_metric

        click.echo(f"{dest}: {log_metric(m).replace('  ', ', ')}, {m['size_bytes']} bytes "
                   f"(gzip {m['gzip_bytes']})")


commands = [export]
