"""`edgepipe adapt MODEL --max-latency-ms X | --latency-ratio R`: NetAdapt to a latency budget
measured on a target, without a recipe (the `adapt` stage's loop). `--workers N` scores each
iteration's candidates on N `edgepipe adapt-worker` processes (started by adapt itself; hidden)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.artifacts import json_text
from pipeline.cli.common import (data_option, data_spec_for_model, dataset_for_model,
                                 force_option, keras3_note, keras_output_path, output_path,
                                 save_keras, unsafe_option)


@click.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False))
@data_option
@click.option("--target", help="host (default) | a device of the inventory")
@click.option("--max-latency-ms", type=float, help="budget in ms, measured on the target")
@click.option("--latency-ratio", type=float,
              help="budget as a share of MODEL's own latency, measured side by side")
@click.option("--max-accuracy-drop", type=float, help="validation accuracy allowed to go (0.02)")
@click.option("--quantization", multiple=True, help="modes to choose from: fp32 float16 int8 qat "
              "(default: fp32 float16 int8)")
@click.option("--max-iterations", type=int)
@click.option("--short-epochs", type=int, help="fine-tuning of each proposal (1)")
@click.option("--epochs", type=int, help="final fine-tuning epochs (10)")
@click.option("--batch-size", type=int)
@click.option("--learning-rate", type=float)
@click.option("--criterion", help="channel importance: l1 | l2 | bn_scale | mean_activation | apoz")
@click.option("--round-to", type=int, help="kept channel counts are multiples of this (8)")
@click.option("--min-channels", type=int, help="no group below this many channels (8)")
@click.option("--table", type=click.Path(dir_okay=False), help="latency table file")
@click.option("--devices", type=click.Path(dir_okay=False), help="device inventory")
@click.option("--out", type=click.Path(dir_okay=False),
              help="adapted .keras (default: MODEL's name + _adapted.keras beside it); the chosen "
                   ".tflite and an <out>.adapt/ folder (checkpoints: a re-run resumes) go beside it")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
              help="score each iteration's candidates on N worker processes on this host "
                   "(the same choice as without)")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="workers: a worker silent for this + 3 heartbeats (30 s) loses its candidate "
                   "to the others")
@force_option
@unsafe_option
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
def adapt(model_path, data, target, max_latency_ms, latency_ratio, max_accuracy_drop,
          quantization, max_iterations, short_epochs, epochs, batch_size, learning_rate, criterion,
          round_to, min_channels, table, devices, out, seed, workers, timeout, force, unsafe,
          as_json) -> None:
    """Prune MODEL's channels until its latency measured on TARGET meets the budget."""
    from pipeline import models, tflite
    from pipeline.cli.prune import config_from_options
    from pipeline.stages.adapt import QUANT, AdaptConfig, adapt_model

    cfg = config_from_options(AdaptConfig, dict(
        target=target, max_latency_ms=max_latency_ms, latency_ratio=latency_ratio,
        max_accuracy_drop=max_accuracy_drop, quantization=list(quantization) or None,
        max_iterations=max_iterations, short_epochs=short_epochs, epochs=epochs,
        batch_size=batch_size, learning_rate=learning_rate, criterion=criterion,
        round_to=round_to, min_channels=min_channels, table=table), {})
    from pipeline.modelio.graph import require_layers
    from pipeline.tasks import require_classification

    dest = keras_output_path(out, Path(model_path).with_name(
        f"{Path(model_path).stem}_adapted.keras"), force)
    model = models.load_model(model_path, unsafe=unsafe)
    require_layers(model, "adapt")
    ds = dataset_for_model(data, model, seed=seed)
    require_classification(None, ds, "adapt")
    res = adapt_model(model, ds, cfg, dest.with_suffix(".adapt"), seed=seed, devices=devices,
                      say=click.echo, workers=workers, timeout=timeout,
                      data={"dataset": data_spec_for_model(data, model).model_dump(mode="json"),
                            "task": None})
    m = res["metrics"]
    m.update(save_keras(res["model"], dest, ds.x_test))
    tfl = output_path(None, dest.with_name(f"{dest.stem}_{res['mode']}.tflite"), force)
    tm = tflite.export(res["export_model"], tfl, QUANT[res["mode"]], ds)
    m.update(path=str(dest), tflite=str(tfl), test_accuracy=tm["accuracy"])
    if as_json:
        click.echo(json_text(m, indent=2))
        return
    click.echo(f"{dest}: {m['start_ms']:.4g} -> {m['final_ms']:.4g} ms on {m['target']} "
               f"(budget {m['budget']}: met), {len(m['iterations'])} iterations; {tfl} "
               f"({res['mode']}) test accuracy {tm['accuracy']:.4f}{keras3_note(m)}")


@click.command("adapt-worker", hidden=True)
@click.argument("state_dir", metavar="ADAPT_FOLDER", type=click.Path(exists=True, file_okay=False))
@click.option("--address", required=True, metavar="HOST:PORT", help="the adapt chief")
@click.option("--id", "tuner_id", required=True, help="this worker's name")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="seconds the chief may stay unreachable before the worker gives up")
def adapt_worker(state_dir, address, tuner_id, timeout) -> None:
    """Score adapt candidates for the chief at ADDRESS (started by `adapt --workers N`; the
    token comes in $EDGEPIPE_NAS_TOKEN)."""
    from pipeline.search.distribute import parse_address, read_token
    from pipeline.stages.adapt_candidates import serve

    parse_address(address)
    ran = serve(Path(state_dir), address, tuner_id, timeout, read_token(None))
    click.echo(f"worker {tuner_id}: ran {len(ran)} candidates; the chief said stop")


commands = [adapt, adapt_worker]
