"""Options and helpers the ad-hoc commands share."""

from __future__ import annotations

from pathlib import Path

import click


def load_data(data: str, size: tuple[int, int] | None = None, channels: int | None = None,
              seed: int = 0):
    """Load `data` (digits | a .npz file | an image folder | tfds:NAME), images resized to
    `size` with `channels` when given."""
    from pipeline.data import load_dataset

    return load_dataset(data_spec(data, size, channels), seed=seed)


def data_spec(data: str, size: tuple[int, int] | None = None, channels: int | None = None):
    """The DatasetSpec `load_data` loads (what a worker process is given to load the same)."""
    from pipeline.data import DatasetSpec

    p = Path(data)
    if data.endswith(".npz"):
        spec = {"name": "npz", "path": data}
    elif p.is_dir():
        spec = {"name": "image_dir", "path": data}
    else:
        spec = {"name": data}
    return validated(DatasetSpec, {**spec, "input_size": size, "channels": channels},
                     {k: "--data" for k in DatasetSpec.model_fields})


def validated(cls, settings: dict, options: dict[str, str]):
    """`cls(**settings)` (a pydantic model: a stage config, a dataset spec); a bad value is one
    UserError naming the option that set it (`options`: field -> option; default --field-name)."""
    from pydantic import ValidationError

    from pipeline.errors import UserError, pydantic_message

    try:
        return cls(**settings)
    except ValidationError as e:
        err = e.errors()[0]
        if not err["loc"]:  # a check across options
            raise UserError(pydantic_message(err)) from None
        key = str(err["loc"][0])
        raise UserError(f"{options.get(key, '--' + key.replace('_', '-'))}: "
                        f"{pydantic_message(err)}") from None


def config_from_options(cls, options: dict, names: dict[str, str]):
    """A stage config from the options the user gave (None, (), False: not given, so the stage's
    defaults apply), validated as `validated` does."""
    given = {k: v for k, v in options.items() if v is not None and v != () and v is not False}
    return validated(cls, given, names)


def dataset_for_model(data: str, model, seed: int = 0, task: str | None = None):
    """`load_data` shaped for a Keras `model`, with the task (`--task`, else inferred) bound to
    it and checked against its inputs and outputs (pipeline/tasks.py)."""
    from pipeline import modelio, tasks
    from pipeline.data import load_dataset

    ds = load_dataset(data_spec_for_model(data, model), seed=seed)
    tasks.bind(task, model, ds)
    modelio.check(model, ds.x_test)  # a Keras 3 file's tf_keras rebuild, before anything trains
    return ds


def data_spec_for_model(data: str, model):
    """`data_spec` with the images sized as `model` takes them."""
    shape = model.input_shape[1:] if not isinstance(model.input_shape, list) else ()
    size = tuple(shape[:2]) if len(shape) == 3 and None not in shape[:2] else None
    channels = shape[-1] if len(shape) == 3 and shape[-1] in (1, 3) else None
    return data_spec(data, size, channels)


data_option = click.option("--data", default="digits", show_default=True,
                           help="dataset: digits | FILE.npz | IMAGE_FOLDER | tfds:NAME")
force_option = click.option("--force", is_flag=True,
                            help="overwrite the output file if it exists (without --force an "
                                 "existing output is refused: give --out for another name)")


def output_path(out: str | None, default: Path, force: bool) -> Path:
    """Where a command writes: --out, else `default`; an existing file only with --force."""
    dest = Path(out) if out else default
    if dest.exists() and not force:
        from pipeline.errors import UserError

        raise UserError(f"{dest} exists; give --out for another file, or --force to overwrite it")
    return dest


def keras_output_path(out: str | None, default: Path, force: bool) -> Path:
    """output_path for a Keras model: its Keras 3 copy (NAME_keras3.keras) is checked too."""
    from pipeline.modelio.save import keras3_sibling

    dest = output_path(out, default, force)
    output_path(str(keras3_sibling(dest)), dest, force)
    return dest


def save_keras(model, dest: Path, x) -> dict:
    """Write `model` as tf_keras `dest` and its Keras 3 copy beside it; metrics of the copy."""
    from pipeline import models
    from pipeline.modelio.save import write_keras3_copy

    models.save_model(model, dest)
    return write_keras3_copy(model, dest, x)


def keras3_note(m: dict) -> str:
    """'; Keras 3: NAME' or '; no Keras 3 copy: why', for a command's one-line summary."""
    if m.get("keras3_file"):
        return f"; Keras 3: {m['keras3_file']} (max|diff| {m['keras3_max_abs_diff']:.1e})"
    return f"; no Keras 3 copy: {m.get('keras3_error')}"


task_option = click.option("--task", type=click.Choice(["classification", "regression",
                                                          "fidelity"]),
                           help="what the model's outputs mean (default: inferred from --data)")
unsafe_option = click.option("--unsafe", is_flag=True,
                             help="allow model files (.keras, .h5, SavedModel) that carry Python code "
                                  "(Lambda layers): it runs when the file is loaded")
