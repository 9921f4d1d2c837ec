"""`edgepipe convert MODEL --to keras3|tf_keras`: a model file made elsewhere, in the other Keras."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.common import force_option, load_data, output_path, unsafe_option

SUFFIX = {"keras3": "_keras3.keras", "tf_keras": "_tf_keras.keras"}


def _inputs(model, data: str | None, seed: int = 0):
    """Inputs to compare the two models on: --data's test split, else seeded uniform [0, 1)."""
    import numpy as np

    if data:
        shape = model.input_shape[1:]
        ds = load_data(data, tuple(shape[:2]) if len(shape) == 3 else None,
                       shape[-1] if len(shape) == 3 else None, seed)
        return ds.x_test[:64], f"{min(64, len(ds.x_test))} test inputs of {data}"
    rng = np.random.default_rng(seed)
    shapes = model.input_shape if isinstance(model.input_shape, list) else [model.input_shape]
    x = [rng.random((16, *s[1:]), dtype=np.float32) for s in shapes]
    return (x if len(x) > 1 else x[0]), "16 random inputs in [0, 1)"


@click.command()
@click.argument("model_path", metavar="MODEL", type=click.Path())
@click.option("--to", "target", required=True, type=click.Choice(list(SUFFIX)),
              help="keras3: a Keras 3 .keras file (keras.saving.load_model); tf_keras: a tf_keras "
                   ".keras file (TF-MOT, tf_keras.models.load_model)")
@click.option("--out", type=click.Path(dir_okay=False),
              help="output .keras (default: MODEL's name + _keras3.keras or _tf_keras.keras)")
@click.option("--data", default=None, help="compare outputs on this data's test inputs "
              "(digits | FILE.npz | IMAGE_FOLDER); default: random inputs")
@force_option
@unsafe_option
def convert(model_path, target, out, data, force, unsafe) -> None:
    """Write MODEL (.keras, .h5 or SavedModel, from either Keras) as a .keras file of the other
    Keras, after checking that both give the same outputs (max |diff| <= 1e-5)."""
    from pipeline import models, modelio
    from pipeline.modelio.graph import require_layers
    from pipeline.modelio.rebuild import max_difference
    from pipeline.modelio.save import MAX_DIFF, save_keras3

    dest = output_path(out, Path(model_path).with_name(Path(model_path).stem + SUFFIX[target]),
                       force)
    model = models.load_model(model_path, unsafe=unsafe)
    require_layers(model, "convert")
    x, what = _inputs(model, data)
    if target == "keras3":
        diff = save_keras3(model, dest, x)
    else:
        bridge = modelio.bridge_of(model)
        diff = max_difference(bridge.keras3_model, model, x) if bridge else 0.0
        if not diff <= MAX_DIFF:
            from pipeline.errors import UserError

            raise UserError(f"the tf_keras rebuild of {model_path} differs from it by {diff:.3g} "
                            f"on {what} (more than {MAX_DIFF:g}); nothing written")
        models.save_model(model, dest)
    click.echo(f"{dest}: {target} model, max|diff| {diff:.1e} against {model_path} on {what}")


commands = [convert]
