"""`edgepipe profile MODEL.tflite`: time a .tflite with edge-runner on this host."""

from __future__ import annotations


import click

from pipeline.artifacts import json_text
from pipeline.cli.devices import (accept_new_option, deadline_option, devices_option,
                                  profile_on_devices, timeout_option)


@click.command()
@click.argument("model_path", metavar="MODEL.tflite", type=click.Path())
@click.option("--threads", default=None, type=click.IntRange(1),
              help="default: 1 on the host, each device's `threads` on boards")
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(0))
@click.option("--min-runs", default=50, show_default=True, type=click.IntRange(1))
@click.option("--min-seconds", default=1.0, show_default=True, type=click.FloatRange(0))
@click.option("--json", "as_json", is_flag=True, help="print edge-runner's full JSON")
@click.option("--device", "device_names", multiple=True,
              help="profile on this board over SSH instead of the host (repeatable); prints JSON")
@click.option("--tag", "device_tags", multiple=True, help="profile on every board with this tag")
@click.option("--golden", type=click.Path(exists=True, dir_okay=False), default=None,
              help="(boards) golden .npz: verify the outputs on the board before timing")
@devices_option
@accept_new_option
@timeout_option
@deadline_option
def profile(model_path, threads, warmup, min_runs, min_seconds, as_json, device_names,
            device_tags, golden, devices_path, accept_new, timeout, deadline) -> None:
    """Measure a .tflite's latency (p50/p90/p99, init, first inference) on this host, or on
    boards over SSH with --device/--tag."""
    from edge_runner.bench import benchmark
    from pipeline import tflite

    if device_names or device_tags:
        tflite.check_file(model_path)
        return profile_on_devices(model_path, device_names, device_tags, devices_path,
                                  golden=golden, threads=threads,
                                  warmup=warmup, min_runs=min_runs, min_seconds=min_seconds,
                                  accept_new=accept_new, timeout=timeout, deadline=deadline)
    threads = threads or 1
    tflite.check_file(model_path)
    b = benchmark(model_path, threads=threads, warmup=warmup, min_runs=min_runs,
                  min_seconds=min_seconds)
    if as_json:
        click.echo(json_text(b, indent=2))
        return
    lat = b["latency_ms"]
    click.echo(f"{model_path}: p50 {lat['p50']:.3f} ms  p90 {lat['p90']:.3f}  p99 {lat['p99']:.3f}"
               f"  mean {lat['mean']:.3f} ± {lat['std']:.3f}  ({b['runs']} runs, {threads} threads,"
               f" {b['backend']})")
    for w in b["warnings"]:
        click.echo(f"warning: {w}", err=True)


commands = [profile]
