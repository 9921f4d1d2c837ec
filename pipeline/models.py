"""Models in and out: recipe specs, safe loading, saving, counting, accuracy."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.errors import UserError, did_you_mean

APPLICATION_PREFIX = "keras.applications."


class ModelSpec(BaseModel):
    """`model:` in a recipe: exactly one of `zoo`, `application`, `path`.

    A bare string is shorthand: a zoo name, `keras.applications.NAME`, or a model file path.
    """

    model_config = ConfigDict(extra="forbid")

    zoo: str | None = Field(None, description="builder in pipeline.zoo: small_cnn | mobilenet | "
                                              "mlp | two_head_cnn | autoencoder")
    application: str | None = Field(None, description="keras.applications NAME (weights=None)")
    path: str | None = Field(None, description=".keras, .h5 or SavedModel folder")
    options: dict[str, Any] = Field(default_factory=dict, description="builder keyword arguments")
    unsafe: bool = Field(False, description="allow loading .keras files that carry Lambda code")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v.startswith(APPLICATION_PREFIX):
                return {"application": v[len(APPLICATION_PREFIX):]}
            if v.endswith((".keras", ".h5")) or "/" in v:
                return {"path": v}
            return {"zoo": v}
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSpec":
        given = [k for k in ("zoo", "application", "path") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of zoo, application, path; got {given or 'none'}")
        if self.zoo:
            from pipeline.zoo import BUILDERS

            if self.zoo not in BUILDERS:
                raise ValueError(f"unknown zoo model {self.zoo!r}{did_you_mean(self.zoo, BUILDERS)}"
                                 f"; expected one of: {', '.join(BUILDERS)}")
            _check_options(BUILDERS[self.zoo], self.options, f"zoo model {self.zoo}")
        return self


def _check_options(fn, options: dict[str, Any], what: str) -> None:
    params = [p for p in inspect.signature(fn).parameters if p not in ("input_shape", "num_classes")]
    for k in options:
        if k not in params:
            raise ValueError(f"unknown option {k!r} for {what}{did_you_mean(k, params)}; "
                             f"expected: {', '.join(params)}")


def from_spec(spec: ModelSpec | str | dict, input_shape, num_classes: int, seed: int = 0):
    """Build (zoo, keras.applications) or load (path) the model a spec names."""
    import tf_keras as keras

    if not isinstance(spec, ModelSpec):
        spec = ModelSpec.model_validate(spec)
    if spec.path:
        return load_model(spec.path, unsafe=spec.unsafe)
    keras.utils.set_random_seed(seed)
    if spec.zoo:
        from pipeline.zoo import BUILDERS

        try:
            return BUILDERS[spec.zoo](tuple(input_shape), num_classes, **spec.options)
        except ValueError as e:
            raise UserError(f"zoo model {spec.zoo}: {e}") from None
    names = [n for n in dir(keras.applications) if n[0].isupper()]
    if spec.application not in names:
        raise UserError(f"unknown keras.applications model {spec.application!r}"
                        f"{did_you_mean(spec.application, names)}")
    fn = getattr(keras.applications, spec.application)
    options = {"weights": None, "input_shape": tuple(input_shape), "classes": num_classes,
               **spec.options}
    if options["weights"] is not None:
        raise UserError("keras.applications weights cannot be downloaded here; use weights: null "
                        "(random init) and the train stage, or a model file path")
    try:
        return fn(**options)
    except (ValueError, TypeError) as e:
        raise UserError(f"keras.applications.{spec.application}: {e}") from None


def load_model(path: str | Path, unsafe: bool = False):
    """Load a .keras, .h5 or SavedModel, uncompiled, whichever Keras wrote it (see modelio).

    `unsafe` allows files that carry Python code (Lambda layers), in every format."""
    from pipeline import modelio

    return modelio.load(path, unsafe=unsafe)


def save_model(model, path: str | Path) -> None:
    """Save atomically as `.keras`, without optimizer state (artifacts are for inference and
    fine-tuning; optimizer slots would double the file and skew its measured size)."""
    import tf_keras as keras

    from pipeline.artifacts import atomic_output

    if getattr(model, "optimizer", None) is not None:
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        model = clone
    with atomic_output(path) as tmp:
        model.save(tmp)


def count_params(model) -> tuple[int, int]:
    """(params, nonzero params) over all weights, trainable or not."""
    total = nonzero = 0
    for w in model.weights:
        a = np.asarray(w.numpy())
        total += a.size
        nonzero += int(np.count_nonzero(a))
    return total, nonzero


def describe(model, path: str | Path | None = None) -> dict[str, Any]:
    """params, nonzero_params and (given a file) raw and gzip sizes."""
    from pipeline.artifacts import sizes

    params, nonzero = count_params(model)
    shapes = model.input_shape if isinstance(model.input_shape, list) else [model.input_shape]
    out: dict[str, Any] = {"params": params, "nonzero_params": nonzero,
                           "input_shape": list(shapes[0][1:])}
    if path is not None:
        out.update(sizes(path))
    return out


def predict(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return model.predict(x, batch_size=batch_size, verbose=0)


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of `x` whose argmax prediction is the label `y`."""
    return float(np.mean(np.argmax(predict(model, x), axis=-1) == y))


def check_input(model, input_shape) -> None:
    """Fail with one line when the data's sample shape does not fit the model's input."""
    want = tuple(model.input_shape[1:])
    got = tuple(input_shape)
    if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got)):
        raise UserError(f"dataset samples have shape {list(got)} but the model expects "
                        f"{[d if d is not None else 'any' for d in want]}; set dataset.input_size/"
                        f"channels to match, or use a model built for this data")
