"""A SavedModel without a layer graph (`model.export()`, `tf.saved_model.save`): graph only.

It converts to TFLite (`TFLiteConverter.from_saved_model`) in every post-training mode and runs
for reference outputs; stages that change layers refuse it (`require_layers`). Loading uses
`tf.saved_model.load`, which restores TensorFlow graphs and runs no Python from the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import UserError

#: what works on a graph-only SavedModel, for the refusal message
GRAPH_ONLY_STAGES = "export, post-training quantization, golden, verify and profile"


class GraphModel:
    """The serving signature of a SavedModel, shaped like the bits of a Keras model edgepipe
    reads: input_shape, output_shape, weights, predict()."""

    def __init__(self, path: Path, loaded, fn):
        self.path, self._loaded, self._fn = path, loaded, fn
        (self._in_name, spec), = fn.structured_input_signature[1].items()
        self.input_shape = tuple(spec.shape.as_list())
        outs = fn.structured_outputs
        if len(outs) != 1:
            raise UserError(f"{path}: a SavedModel with {len(outs)} outputs cannot be exported "
                            f"from its graph; give the model as a .keras file")
        (self._out_name, out), = outs.items()
        self.output_shape = tuple(out.shape.as_list())
        self.name = path.name

    @classmethod
    def load(cls, path: Path) -> "GraphModel":
        import tensorflow as tf
        from google.protobuf.message import DecodeError

        try:
            loaded = tf.saved_model.load(str(path))
        except (OSError, ValueError, DecodeError, tf.errors.OpError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot load SavedModel {path}: {first}") from None
        fn = loaded.signatures.get("serving_default")
        if fn is None:
            raise UserError(f"{path}: the SavedModel has no serving_default signature to "
                            f"convert; save it with model.export() or a serving signature")
        if len(fn.structured_input_signature[1]) != 1:
            raise UserError(f"{path}: a SavedModel with "
                            f"{len(fn.structured_input_signature[1])} inputs cannot be exported "
                            f"from its graph; give the model as a .keras file")
        return cls(path, loaded, fn)

    @property
    def weights(self):
        return list(self._loaded.variables) if hasattr(self._loaded, "variables") else []

    def __call__(self, x, training=False):
        return self._fn(**{self._in_name: np.asarray(x, dtype=np.float32)})[self._out_name]

    def predict(self, x: np.ndarray, batch_size: int = 256, verbose=0) -> np.ndarray:
        return np.concatenate([np.asarray(self(x[i: i + batch_size]))
                               for i in range(0, len(x), batch_size)])

    def tflite_converter(self):
        import tensorflow as tf

        return tf.lite.TFLiteConverter.from_saved_model(str(self.path))


def require_layers(model, what: str) -> None:
    """One UserError when `what` (a stage that changes layers) is given a graph-only model."""
    if isinstance(model, GraphModel):
        raise UserError(f"{what} needs a Keras model with layers (.keras, .h5, or a SavedModel "
                        f"saved by tf_keras); {model.path} is a SavedModel without a layer graph "
                        f"(model.export / tf.saved_model.save), which supports only "
                        f"{GRAPH_ONLY_STAGES}")
