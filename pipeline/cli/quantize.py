"""`edgepipe quantize MODEL --mode ptq_int8|...|qat`: one gated .tflite without a recipe."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.artifacts import json_text
from pipeline.cli.common import (config_from_options, data_option, dataset_for_model,
                                 force_option, output_path, task_option, unsafe_option)


@click.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True))
@click.option("--mode", default="ptq_int8", show_default=True,
              help="ptq_dynamic | ptq_float16 | ptq_int8 | ptq_int16x8 | qat")
@click.option("--calibration", type=int, help="int8/int16x8 calibration samples")
@click.option("--max-accuracy-drop", type=float,
              help="fail (exit 2, no file) when the .tflite is this much below the float model")
@click.option("--epochs", type=int, help="qat: fine-tuning epochs (2)")
@click.option("--batch-size", type=int, help="qat")
@click.option("--learning-rate", type=float, help="qat (1e-4)")
@click.option("--skip-unsupported", is_flag=True, help="qat: leave unsupported layers in float")
@click.option("--preserve", help="qat: auto | none | sparsity | clusters | clusters+sparsity")
@data_option
@click.option("--out", type=click.Path(dir_okay=False),
              help="output .tflite (default: MODEL's name + _MODE.tflite beside it)")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--io", type=click.Choice(["int8", "float32"]),
              help="ptq_int8/qat: the file's input/output type (default: what keeps the metric)")
@task_option
@force_option
@unsafe_option
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
def quantize(model_path, mode, calibration, max_accuracy_drop, epochs, batch_size, learning_rate,
             skip_unsupported, preserve, data, out, seed, io, task, force, unsafe, as_json) -> None:
    """Quantize a Keras model (post-training or QAT) to a validated .tflite."""
    from pipeline import models
    from pipeline.stages.quantize import QuantizeConfig, quantize_model

    cfg = config_from_options(QuantizeConfig, dict(
        mode=mode, calibration=calibration, max_accuracy_drop=max_accuracy_drop, epochs=epochs,
        batch_size=batch_size, learning_rate=learning_rate, skip_unsupported=skip_unsupported,
        preserve=preserve, io=io), {})
    from pipeline.modelio.graph import require_layers

    dest = output_path(out, Path(model_path).with_name(f"{Path(model_path).stem}_{mode}.tflite"),
                       force)
    model = models.load_model(model_path, unsafe=unsafe)
    if mode == "qat":
        require_layers(model, "quantize --mode qat")
    ds = dataset_for_model(data, model, seed=seed, task=task)
    m = quantize_model(model, ds, cfg, dest, seed=seed)
    if as_json:
        click.echo(json_text({"path": str(dest), **m}, indent=2))
        return
    from pipeline.stages.export import log_metric

    click.echo(f"{dest}: {mode} {log_metric(m).replace('keras', 'float').replace('  ', ', ')}, "
               f"{m['size_bytes']} bytes (gzip {m['gzip_bytes']})")


commands = [quantize]
