"""`edgepipe profile MODEL.tflite`: time a .tflite with edge-runner on this host."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("model_path", metavar="MODEL.tflite", type=click.Path())
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1))
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(0))
@click.option("--min-runs", default=50, show_default=True, type=click.IntRange(1))
@click.option("--min-seconds", default=1.0, show_default=True, type=click.FloatRange(0))
@click.option("--json", "as_json", is_flag=True, help="print edge-runner's full JSON")
def profile(model_path, threads, warmup, min_runs, min_seconds, as_json) -> None:
    """Measure a .tflite's latency (p50/p90/p99, init, first inference) on this host."""
    from edge_runner.bench import benchmark
    from pipeline import tflite

    tflite.check_file(model_path)
    b = benchmark(model_path, threads=threads, warmup=warmup, min_runs=min_runs,
                  min_seconds=min_seconds)
    if as_json:
        click.echo(json.dumps(b, indent=2))
        return
    lat = b["latency_ms"]
    click.echo(f"{model_path}: p50 {lat['p50']:.3f} ms  p90 {lat['p90']:.3f}  p99 {lat['p99']:.3f}"
               f"  mean {lat['mean']:.3f} ± {lat['std']:.3f}  ({b['runs']} runs, {threads} threads,"
               f" {b['backend']})")


commands = [profile]
