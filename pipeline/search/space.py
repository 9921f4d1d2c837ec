"""The search space: specs → Keras Tuner HyperParameters → `zoo.mobilenet` options.

A space is a plain dict, already validated (pipeline/stages/nas_config.py checks the recipe's):
each hyperparameter is a fixed value, a list of choices, or a range `{min, max, step, sampling}`;
integer hyperparameters hold ints, the others floats. `blocks` and `kernel`
are searched per stage (`blocks_0`, `kernel_0`, ...), for `num_stages` stages. A fixed
hyperparameter `edgepipe/key` carries the search's identity so a worker started with another
recipe is refused by the chief.
"""

from __future__ import annotations

from typing import Any

#: The searchable names: every `zoo.mobilenet` option plus the learning rate, in build order.
NAMES = ("width", "blocks", "kernel", "expansion", "resolution", "stem_stride", "head_channels",
         "dropout", "bn_momentum", "learning_rate")
PER_STAGE = ("blocks", "kernel")
KEY = "edgepipe/key"
TUNER_PREFIX = "tuner/"  # Hyperband's own hyperparameters (epochs, initial_epoch, trial_id...)


def check_resolution(space: dict[str, Any], input_shape) -> None:
    """Resolutions must fit the data the dataset delivers (only downsizing is searched)."""
    spec = space.get("resolution")
    if spec is None:
        return
    values = spec if isinstance(spec, list) else (
        [spec["min"], spec["max"]] if isinstance(spec, dict) else [spec])
    limit = min(input_shape[:2])
    if max(values) > limit:
        raise ValueError(f"Expected resolution <= the dataset's input size "
                         f"{input_shape[0]}x{input_shape[1]}. Received: resolution={spec!r}; "
                         f"raise dataset.input_size or lower the resolutions")


def hyperparameters(space: dict[str, Any], key: str):
    """A keras_tuner.HyperParameters holding the whole space (no hypermodel needed)."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    hp.Fixed(KEY, key)
    for name in NAMES:
        spec = space.get(name)
        if spec is None:
            continue
        names = ([f"{name}_{i}" for i in range(space["num_stages"])] if name in PER_STAGE
                 else [name])
        for hp_name in names:
            _declare(hp, hp_name, spec)
    return hp


def _declare(hp, name: str, spec: Any) -> None:
    if isinstance(spec, list) and len(spec) == 1:
        spec = spec[0]
    if isinstance(spec, list):
        hp.Choice(name, spec, ordered=True)
    elif isinstance(spec, dict):
        ints = isinstance(spec["min"], int) and isinstance(spec["max"], int)
        maker = hp.Int if ints else hp.Float
        maker(name, spec["min"], spec["max"], step=spec["step"], sampling=spec["sampling"])
    else:
        hp.Fixed(name, spec)


def architecture(values: dict[str, Any], num_stages: int) -> tuple[dict[str, Any], float]:
    """(zoo.mobilenet keyword options, learning rate) of a trial's hyperparameter values."""
    opts: dict[str, Any] = {}
    for name in NAMES:
        if name in PER_STAGE:
            per = [values.get(f"{name}_{i}") for i in range(num_stages)]
            if all(v is not None for v in per):
                opts[name] = [int(v) for v in per]
        elif name in values and name != "learning_rate":
            opts[name] = values[name]
    lr = float(values.get("learning_rate", 1e-3))
    return opts, lr


def build(values: dict[str, Any], num_stages: int, input_shape, num_classes: int):
    """The trial's tf_keras model (from `zoo.mobilenet`) and its learning rate."""
    from pipeline.zoo import mobilenet

    opts, lr = architecture(values, num_stages)
    return mobilenet(tuple(input_shape), num_classes, **opts), lr


def describe(values: dict[str, Any], num_stages: int) -> str:
    """Short one-line form of a trial's architecture, for logs and error messages."""
    opts, lr = architecture(values, num_stages)
    parts = []
    for k, v in opts.items():
        if isinstance(v, list):
            v = "/".join(str(x) for x in v)
        elif isinstance(v, float):
            v = f"{v:.3g}"
        parts.append(f"{k}={v}")
    return " ".join(parts + [f"lr={lr:.2g}"])
