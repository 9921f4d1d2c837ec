"""`edgepipe golden`: golden outputs of a .tflite, for `edge-runner verify` on a board."""

from __future__ import annotations


import click

from pipeline.artifacts import json_text
from pipeline.cli.common import data_option, force_option, load_data, output_path


@click.command()
@click.argument("model_path", metavar="MODEL.tflite")
@data_option
@click.option("--samples", type=click.IntRange(min=1), default=16, show_default=True,
              help="test inputs to record")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="golden .npz (default: MODEL's name + _golden.npz beside it)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the data splits")
@force_option
@click.option("--json", "as_json", is_flag=True, help="print what was written as JSON")
def golden(model_path, data, samples, out, seed, force, as_json) -> None:
    """Run real test inputs through MODEL.tflite on this host and write inputs and outputs to an
    .npz; `edge-runner verify MODEL.tflite GOLDEN.npz` on a board then checks that the board
    computes the same answers."""
    from edge_runner.backends import load
    from edge_runner.tensors import image_layout
    from pipeline import tflite
    from pipeline.devices.golden import host_golden

    path = tflite.check_file(model_path)
    spec = load(path).describe()["inputs"]
    # images come at the size and channels of the model's (first) input; what is left (channel
    # axis, flattening, dtype) edge_runner.tensors.fit does
    layout = image_layout(spec[0]["shape"][1:])
    ds = load_data(data, layout[:2] if layout else None, layout[2] if layout else None, seed)
    x = ds.x_test  # an array, or {input name: array} for a model with several inputs
    n = min(samples, len(next(iter(x.values())) if isinstance(x, dict) else x))
    target = output_path(out, path.with_name(path.stem + "_golden.npz"), force)
    try:
        # written atomically: nothing half-written on failure
        host_golden(path, x, target, samples=n)
    except OSError as e:
        from pipeline.errors import UserError

        raise UserError(f"cannot write {target}: {e.strerror or e}; give --out in a folder "
                        f"that exists and is writable") from None
    if as_json:
        click.echo(json_text({"model": str(path), "golden": str(target), "samples": n}))
    else:
        click.echo(f"{target}: {n} test inputs of {data} and {path.name}'s outputs on this "
                   f"host; check a board with: edge-runner verify {path.name} {target.name}")


commands = [golden]
