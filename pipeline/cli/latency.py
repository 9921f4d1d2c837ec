"""`edgepipe latency table|calibrate|predict`: per-op latency tables measured on a target, and a
whole-model latency predictor learned from models measured on that same target."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.artifacts import json_text


def _load(source: str, unsafe: bool):
    """A Keras model from a model file, or the model of a recipe (built, untrained)."""
    from pipeline import models

    if source.endswith((".yaml", ".yml")):
        from pipeline import recipe as R
        from pipeline.data import load_dataset

        rec = R.load(source)
        ds = load_dataset(rec.dataset, seed=rec.seed)
        return models.from_spec(rec.model, ds.input_shape, ds.num_classes, seed=rec.seed), Path(source).stem
    return models.load_model(source, unsafe=unsafe), Path(source).stem


def target_options(f):
    from pipeline.latency.table import MODES

    for opt in reversed([
        click.option("--target", default="host", show_default=True,
                     help="host | a device of the inventory | tag:<tag>"),
        click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1)),
        click.option("--mode", default="fp32", show_default=True, type=click.Choice(MODES),
                     help="the .tflite mode ops and models are timed in"),
        click.option("--table", "table_path", type=click.Path(dir_okay=False),
                     help="table file (default: ~/.cache/edgepipe/latency/<target>@<n>t-<mode>.json)"),
        click.option("--devices", type=click.Path(dir_okay=False), help="device inventory"),
        click.option("--accept-new", is_flag=True, help="boards: trust unknown host keys"),
        click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(min=1),
                     help="boards: seconds for each remote command (one batch of ops)"),
        click.option("--min-seconds", default=0.2, show_default=True, type=click.FloatRange(min=0),
                     help="edge-runner: timed seconds per file and pass"),
        click.option("--rounds", default=2, show_default=True, type=click.IntRange(min=1),
                     help="interleaved passes; each file keeps its fastest median and fastest invoke"),
    ]):
        f = opt(f)
    return f


def _sessions(target, threads, mode, table_path, devices, accept_new, timeout, min_seconds, rounds):
    from pipeline.latency import Timing, target_session

    timing = Timing(threads=threads, min_seconds=min_seconds, rounds=rounds)
    return target_session(target, timing, mode, table=table_path, devices=devices,
                          accept_new=accept_new, timeout=timeout, say=click.echo)


@click.group()
def latency() -> None:
    """Latency tables measured on a target, and a latency predictor."""


@latency.command()
@click.argument("source", metavar="MODEL|RECIPE", type=click.Path(exists=True))
@target_options
@click.option("--round-to", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--min-channels", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--levels", default=8, show_default=True, type=click.IntRange(min=1),
              help="channel counts per group (evenly spread multiples of --round-to)")
@click.option("--batch", default=32, show_default=True, type=click.IntRange(min=1),
              help="ops per batch: one upload and one edge-runner command each")
@click.option("--unsafe", is_flag=True, help="allow .keras models that carry Python code")
def table(source, target, threads, mode, table_path, devices, accept_new, timeout, min_seconds,
          rounds, round_to, min_channels, levels, batch, unsafe) -> None:
    """Time every op of MODEL at every channel count adaptation may choose, on TARGET."""
    from pipeline.latency.build import fill, measure_model
    from pipeline.latency.ops import all_signatures

    model, name = _load(source, unsafe)
    sigs = all_signatures(model, round_to, min_channels, levels)
    with _sessions(target, threads, mode, table_path, devices, accept_new, timeout, min_seconds,
                   rounds) as sessions:
        for s in sessions:
            t = s.table()
            n = fill(t, sigs, s.target, batch=batch, say=click.echo)
            sample = measure_model(t, model, s.target, name)
            click.echo(f"{t.path}: {len(sigs)} ops of {name} at every channel count "
                       f"({n} measured now, {len(t.entries)} in the table); {name} measured "
                       f"{sample['ms']:.4g} ms on {s.target.name}, table sum "
                       f"{t.lookup(sample['ops']):.4g} ms")


@latency.command()
@target_options
@click.option("--models", "count", default=12, show_default=True, type=click.IntRange(min=1),
              help="random members of the nas mobilenet family to measure")
@click.option("--input-shape", default="32,32,3", show_default=True, help="H,W,C")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--chains/--no-chains", default=True, show_default=True,
              help="also measure chains of weight-heavy 1x1 convolutions (0.2-17 MiB of weights): "
                   "where the target stops keeping a model's weights in cache")
def calibrate(target, threads, mode, table_path, devices, accept_new, timeout, min_seconds,
              rounds, count, input_shape, seed, chains) -> None:
    """Measure random nas-family models (and weight chains) whole and per op: the predictor's
    correction samples."""
    import numpy as np

    from pipeline.errors import UserError
    from pipeline.latency import random_member
    from pipeline.latency.build import calibrate_chains, fill, measure_model
    from pipeline.latency.ops import signatures
    from pipeline.latency.predict import Predictor

    try:
        shape = tuple(int(v) for v in input_shape.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"--input-shape: expected H,W,C like 32,32,3, got {input_shape!r}")
    rng = np.random.default_rng(seed)
    members = [random_member(rng, shape, 10) for _ in range(count)]
    with _sessions(target, threads, mode, table_path, devices, accept_new, timeout, min_seconds,
                   rounds) as sessions:
        for s in sessions:
            t = s.table()
            for i, (model, opts) in enumerate(members):
                fill(t, signatures(model), s.target)
                r = measure_model(t, model, s.target, f"mobilenet {json.dumps(opts, allow_nan=False)}")
                click.echo(f"[{i + 1}/{count}] {s.target.name}: {r['ms']:.4g} ms measured, "
                           f"table sum {t.lookup(r['ops']):.4g} ms")
            if chains:
                ratios = [c["min_ms"] / t.lookup(c["ops"], "min_ms")
                          for c in calibrate_chains(t, s.target)]
                click.echo(f"{s.target.name}: {len(ratios)} weight chains measured, whole / sum "
                           f"of ops alone {min(ratios):.2f} to {max(ratios):.2f}")
            click.echo(f"{t.path}: {len(t.models)} whole models measured; predictor: "
                       f"{Predictor.fit(t).describe()}")


@latency.command()
@click.argument("source", metavar="MODEL|RECIPE", type=click.Path(exists=True))
@target_options
@click.option("--unsafe", is_flag=True, help="allow .keras models that carry Python code")
@click.option("--json", "as_json", is_flag=True)
def predict(source, target, threads, mode, table_path, devices, accept_new, timeout, min_seconds,
            rounds, unsafe, as_json) -> None:
    """Predict MODEL's latency on TARGET from the table (missing ops are measured first)."""
    from pipeline.latency.build import fill
    from pipeline.latency.ops import key, signatures
    from pipeline.latency.predict import Predictor

    model, name = _load(source, unsafe)
    sigs = signatures(model)
    keys = [key(sig) for sig in sigs]
    out = {}
    with _sessions(target, threads, mode, table_path, devices, accept_new, timeout, min_seconds,
                   rounds) as sessions:
        for s in sessions:
            t = s.table()
            fill(t, sigs, s.target, say=click.echo)
            p = Predictor.fit(t)
            ms, err, beyond = p.predict_keys(keys), p.expected_error, p.outside(keys)
            out[s.target.name] = {"predicted_ms": ms, "expected_error": err,
                                  "extrapolated": beyond, "table": str(t.path)}
            if not as_json:
                shown = f" ± {100 * err:.1f}%" if err is not None else " (error unknown)"
                click.echo(f"{name} on {s.target.name}: predicted {ms:.4g} ms{shown} — "
                           f"{p.describe()}")
                if beyond:
                    click.echo(f"warning: {name} is {beyond}", err=True)
    if as_json:
        click.echo(json_text(out, indent=2))


commands = [latency]
