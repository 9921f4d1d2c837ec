"""`edgepipe prune MODEL --method magnitude|m_by_n|channels`: one pruned model without a recipe."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.artifacts import json_text
from pipeline.cli.common import (config_from_options, data_option, dataset_for_model,
                                 force_option, keras3_note, keras_output_path, save_keras,
                                 task_option, unsafe_option)


def _m_by_n(text: str | None):
    if text is None:
        return None
    m, sep, n = text.partition(":")
    if not sep or not m.isdigit() or not n.isdigit():
        raise click.BadParameter(f"expected M:N like 2:4, got {text!r}", param_hint="--m-by-n")
    return int(m), int(n)


def _per_layer(items) -> dict[str, float] | None:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise click.BadParameter(f"expected LAYER=RATIO, got {item!r}", param_hint="--per-layer")
    return out or None


@click.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True))
@click.option("--method", default=None, help="magnitude (default) | m_by_n | channels")
@click.option("--sparsity", type=float, help="magnitude: target sparsity in [0, 1) (default 0.5)")
@click.option("--schedule", help="magnitude: polynomial (default) | constant")
@click.option("--frequency", type=int, help="magnitude: steps between mask updates "
              "(default: fitted to the training steps)")
@click.option("--begin-step", type=int)
@click.option("--end-step", type=int)
@click.option("--m-by-n", "m_by_n", metavar="M:N", help="m_by_n: m zeros in n weights (2:4)")
@click.option("--layer", "layers", multiple=True, help="magnitude/m_by_n: prune only this layer")
@click.option("--skip", multiple=True, help="magnitude/m_by_n: leave this layer dense")
@click.option("--skip-first", is_flag=True, help="leave the first prunable layer dense")
@click.option("--skip-classifier", is_flag=True, help="leave the classifier dense")
@click.option("--ratio", type=float, help="channels: fraction of channels removed (default 0.5)")
@click.option("--criterion", help="channels: l1 | l2 | bn_scale | mean_activation | apoz")
@click.option("--round-to", type=int, help="channels: kept counts rounded to a multiple (8)")
@click.option("--min-channels", type=int)
@click.option("--protect", multiple=True, help="channels: keep this layer's channels")
@click.option("--per-layer", multiple=True, metavar="LAYER=RATIO", help="channels: ratio override")
@click.option("--steps", type=int, help="iterative prune -> fine-tune rounds (1)")
@click.option("--epochs", type=int, help="fine-tuning epochs per round (2)")
@click.option("--batch-size", type=int)
@click.option("--learning-rate", type=float)
@data_option
@click.option("--out", type=click.Path(dir_okay=False),
              help="pruned .keras (default: MODEL's name + _pruned.keras beside it)")
@click.option("--seed", default=0, show_default=True, type=int)
@task_option
@force_option
@unsafe_option
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
def prune(model_path, method, sparsity, schedule, frequency, begin_step, end_step, m_by_n, layers,
          skip, skip_first, skip_classifier, ratio, criterion, round_to, min_channels, protect,
          per_layer, steps, epochs, batch_size, learning_rate, data, out, seed, task, force,
          unsafe, as_json) -> None:
    """Prune a Keras model (TF-MOT magnitude or M:N, or whole channels) and fine-tune it."""
    from pipeline import models, tasks
    from pipeline.stages.prune import PruneConfig, prune_model

    cfg = config_from_options(PruneConfig, dict(
        method=method, sparsity=sparsity, schedule=schedule, frequency=frequency,
        begin_step=begin_step, end_step=end_step, m_by_n=_m_by_n(m_by_n), layers=list(layers) or None,
        skip=list(skip) or None, skip_first=skip_first, skip_classifier=skip_classifier,
        ratio=ratio, criterion=criterion, round_to=round_to, min_channels=min_channels,
        protect=list(protect) or None, per_layer=_per_layer(per_layer), steps=steps,
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate),
        {"m_by_n": "--m-by-n", "layers": "--layer", "per_layer": "--per-layer", "method": "--method"})
    from pipeline.modelio.graph import require_layers

    dest = keras_output_path(out, Path(model_path).with_name(
        f"{Path(model_path).stem}_pruned.keras"), force)
    model = models.load_model(model_path, unsafe=unsafe)
    require_layers(model, "prune")
    ds = dataset_for_model(data, model, seed=seed, task=task)
    new, m = prune_model(model, ds, cfg, seed=seed)
    m.update(save_keras(new, dest, ds.x_test))
    m.update(models.describe(new, dest), path=str(dest), **tasks.keras_metrics(new, ds),
             task=ds.task.to_json())
    if as_json:
        click.echo(json_text(m, indent=2))
        return
    what = (f"sparsity {m['overall_sparsity']:.3f}" if "overall_sparsity" in m else
            f"params {m['params_before']} -> {m['params_after']}")
    click.echo(f"{dest}: {cfg.method} pruning, {what}, "
               f"{tasks.headline(m).removeprefix('test ')}, "
               f"{m['size_bytes']} bytes (gzip {m['gzip_bytes']}){keras3_note(m)}")


commands = [prune]
