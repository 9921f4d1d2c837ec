"""Options and helpers the ad-hoc commands share."""

from __future__ import annotations

from pathlib import Path

import click


def load_data(data: str, size: tuple[int, int] | None = None, channels: int | None = None,
              seed: int = 0):
    """Load `data` (digits | a .npz file | an image folder | tfds:NAME), images resized to
    `size` with `channels` when given."""
    from pipeline.data import DatasetSpec, load_dataset

    p = Path(data)
    if data.endswith(".npz"):
        spec = {"name": "npz", "path": data}
    elif p.is_dir():
        spec = {"name": "image_dir", "path": data}
    else:
        spec = {"name": data}
    try:
        spec = DatasetSpec(**spec, input_size=size, channels=channels)
    except ValueError as e:
        from pipeline.errors import UserError

        raise UserError(f"--data: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    return load_dataset(spec, seed=seed)


def dataset_for_model(data: str, model, seed: int = 0):
    """`load_data` shaped for a Keras `model`, checked against its input and output."""
    from pipeline.models import check_input, check_output

    shape = model.input_shape[1:]
    size = tuple(shape[:2]) if len(shape) == 3 and None not in shape[:2] else None
    channels = shape[-1] if len(shape) == 3 and shape[-1] in (1, 3) else None
    ds = load_data(data, size, channels, seed)
    check_input(model, ds.input_shape)
    check_output(model, ds.num_classes)
    from pipeline import modelio

    modelio.check(model, ds.x_test)  # a Keras 3 file's tf_keras rebuild, before anything trains
    return ds


data_option = click.option("--data", default="digits", show_default=True,
                           help="dataset: digits | FILE.npz | IMAGE_FOLDER | tfds:NAME")
unsafe_option = click.option("--unsafe", is_flag=True,
                             help="allow .keras models that carry Python code (Lambda)")
