"""Keras 3 files out: a tf_keras model → the same model in Keras 3, saved as a Keras 3 `.keras`.

The mirror of rebuild.py: the tf_keras functional graph is replayed with Keras 3 layers of the
same class and config (LAYERS), weights copied, and the Keras 3 model's outputs are compared
with the tf_keras model's on real inputs before the file is written (max |diff| <= 1e-5).
tf_keras' `x + 3.0` / `x * c` (TFOpLambda, as in its MobileNetV3) become Keras 3 Rescaling
layers. A layer with no faithful Keras 3 twin is one UserError naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.modelio import layers as L
from pipeline.modelio.rebuild import NESTED, _refs, _ref, replay

#: the largest output difference a Keras 3 file may show against the tf_keras model it came from
MAX_DIFF = 1e-5

#: tf_keras-only arguments and the value under which they change nothing
NEUTRAL_TF: dict[str, Any] = {
    "groups": 1, "renorm": False, "renorm_clipping": None, "renorm_momentum": 0.99,
    "fused": None, "virtual_batch_size": None, "adjustment": None, "dynamic": False,
    "ragged": False, "sparse": False, "crop_to_aspect_ratio": False,
}

#: tf_keras activations whose Keras 3 namesake computes something else
DIFFERENT_ACTIVATIONS = {"hard_sigmoid": "tf_keras' hard_sigmoid is 0.2x+0.5, Keras 3's "
                                         "relu6(x+3)/6"}

#: TFOpLambda functions with one tensor and a constant → (scale, offset) of a Rescaling layer
TF_OPS = {
    "__operators__.add": lambda c: (1.0, c), "math.add": lambda c: (1.0, c),
    "math.subtract": lambda c: (1.0, -c), "math.multiply": lambda c: (c, 0.0),
    "math.truediv": lambda c: (1.0 / c, 0.0),
}


def _refuse(name: str, why: str) -> UserError:
    return L.ConversionError(f"layer {name!r}: {why}; the model cannot be written as a Keras 3 file "
                     f"(its tf_keras .keras and .tflite files are unaffected)")


def _sub_object(keras, kind: str, name: str, key: str, value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    cls = getattr(getattr(keras, f"{kind}s"), value.get("class_name", ""), None)
    if cls is None:
        if kind == "initializer":  # weights are copied; only a reset would use it
            return None
        raise _refuse(name, f"{key} {value.get('class_name')!r} has no Keras 3 equivalent")
    cfg = {a: b for a, b in (value.get("config") or {}).items() if a in L._accepted(cls)}
    return {"class_name": value["class_name"], "config": cfg}


def _name(name: str) -> str:
    """Keras 3 refuses "/" in names (tf_keras' MobileNetV3 has "Conv/BatchNorm")."""
    return name.replace("/", "_")


def _plain(value):
    """A tf_keras config with its ListWrapper/DictWrapper values as plain lists and dicts."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListWrapper":
        return [_plain(v) for v in value]
    return value


def _twin(keras, layer):
    """The Keras 3 layer for tf_keras `layer` (same class, same config)."""
    cls_name = type(layer).__name__
    if cls_name not in L.LAYERS or not type(layer).__module__.startswith("tf_keras."):
        raise _refuse(layer.name, f"{cls_name} has no Keras 3 equivalent here")
    policy = getattr(getattr(layer, "dtype_policy", None), "name", "float32")
    if policy != "float32":
        raise _refuse(layer.name, f"dtype policy {policy!r} is not float32")
    k3_cls = getattr(keras.layers, cls_name)
    accepted = L._accepted(k3_cls)
    config = {}
    for key, value in _plain(layer.get_config()).items():
        if cls_name == "BatchNormalization" and key == "axis" and len(value) == 1:
            value = value[0]  # tf_keras keeps [3]; Keras 3 takes one int
        if key == "activation" and value in DIFFERENT_ACTIVATIONS:
            raise _refuse(layer.name, f"activation {value!r}: {DIFFERENT_ACTIVATIONS[value]}")
        if key.endswith(("_initializer", "_regularizer", "_constraint")) and key in accepted:
            sub = _sub_object(keras, key.rsplit("_", 1)[1], layer.name, key, value)
            if sub is not None:
                config[key] = sub
        elif key.endswith("_initializer") or (key.endswith(("_regularizer", "_constraint"))
                                               and value is None and key not in accepted):
            continue  # tf_keras lists some its layer never uses (SeparableConv2D's kernel_*)
        elif cls_name == "LeakyReLU" and key == "alpha":
            config["negative_slope"] = value
        elif key == "name":
            config[key] = _name(value)
        elif key in accepted:
            config[key] = value
        elif key not in NEUTRAL_TF or NEUTRAL_TF[key] != value:
            raise _refuse(layer.name, f"{cls_name} argument {key}={value!r} has no Keras 3 "
                                      f"equivalent")
    return k3_cls.from_config(config)


class _Builder:
    def __init__(self):
        import keras

        self.keras = keras
        self.twins: dict[int, Any] = {}
        self.pairs: list[tuple[Any, Any]] = []

    def twin(self, layer):
        if id(layer) not in self.twins:
            if type(layer).__name__ in NESTED:
                self.twins[id(layer)] = self.model(layer)
            else:
                self.twins[id(layer)] = _twin(self.keras, layer)
                if layer.weights:
                    self.pairs.append((layer, self.twins[id(layer)]))
        return self.twins[id(layer)]

    def call(self, layer, args, kwargs):
        if type(layer).__name__ == "TFOpLambda":
            return self.tf_op(layer, args, kwargs)
        kwargs = {k: v for k, v in kwargs.items() if not (k == "mask" and v is None)}
        extra = sorted(set(kwargs) - {"training"})
        if extra:
            raise _refuse(layer.name, f"a call with keyword arguments {extra} is not supported")
        return self.twin(layer)(*args, **kwargs)

    def tf_op(self, layer, args, kwargs):
        """`x + c`, `x * c` ... on one tensor (tf_keras records the constant as `y`)."""
        fn = getattr(layer, "symbol", "")
        const = kwargs.get("y")
        if fn not in TF_OPS or len(args) != 1 or not isinstance(const, (int, float)):
            raise _refuse(layer.name, f"the TensorFlow op {fn or type(layer).__name__} has no "
                                      f"Keras 3 layer equivalent")
        scale, offset = TF_OPS[fn](float(const))
        return self.keras.layers.Rescaling(scale, offset=offset, name=_name(layer.name))(args[0])

    def input(self, layer):
        shape = layer.get_config()["batch_input_shape"]
        return self.keras.Input(batch_shape=tuple(shape), dtype=layer.dtype or "float32",
                                name=_name(layer.name))

    def model(self, m):
        if type(m).__name__ == "Sequential":
            if not getattr(m, "inputs", None):
                raise _refuse(m.name, "a Sequential model without an input shape")
            x = inp = self.input(m.inputs[0]._keras_history.layer)
            for layer in m.layers:
                x = self.call(layer, (x,), {})
            return self.keras.Model(inp, x, name=_name(m.name))
        if not getattr(m, "_is_graph_network", False):
            raise _refuse(m.name, f"a subclassed model ({type(m).__name__}) has no layer graph")
        config = m.get_config()
        by_name = {layer.name: layer for layer in m.layers}
        tensors: dict = {}
        specs = []
        for spec in config["layers"]:
            if spec["class_name"] == "InputLayer":
                tensors[(spec["name"], 0)] = [self.input(by_name[spec["name"]])]
            else:
                specs.append((spec["name"], [_node(n) for n in spec["inbound_nodes"]]))
        from tf_keras.src.engine.functional import _should_skip_first_node

        replay(m.name, specs, tensors, lambda name, a, kw: self.call(by_name[name], a, kw),
               first=lambda name: int(_should_skip_first_node(by_name[name])))
        ins = [_ref(r, tensors) for r in _refs(config["input_layers"])]
        outs = [_ref(r, tensors) for r in _refs(config["output_layers"])]
        return self.keras.Model(ins if len(ins) > 1 else ins[0],
                                outs if len(outs) > 1 else outs[0], name=_name(m.name))


def _node(node) -> dict:
    """A tf_keras inbound node ([[layer, node, index, kwargs], ...]) in Keras 3's form."""
    if node and isinstance(node[0], str):  # TFOpLambda: one [layer, node, index, kwargs]
        node = [node]
    refs = [{"class_name": "__keras_tensor__", "config": {"keras_history": r[:3]}} for r in node]
    kwargs: dict = {}
    for r in node:
        kwargs.update(r[3] if len(r) > 3 and r[3] else {})
    kwargs.pop("name", None)
    return {"args": [refs[0]] if len(refs) == 1 else [refs], "kwargs": kwargs}


def to_keras3(model):
    """The Keras 3 twin of a tf_keras model, with its weights."""
    b = _Builder()
    k3 = b.model(model)
    for tf_layer, k3_layer in b.pairs:
        src = tf_layer.get_weights()
        if [a.shape for a in src] != [tuple(w.shape) for w in k3_layer.weights]:
            raise _refuse(tf_layer.name, "its weights do not map onto the Keras 3 layer's")
        k3_layer.set_weights(src)
    return k3


def save_keras3(model, path: str | Path, x: np.ndarray) -> float:
    """Write `model` (tf_keras) as a Keras 3 `.keras` file at `path`, atomically, after checking
    on inputs `x` that the Keras 3 model gives the same outputs; returns the max |diff|."""
    from pipeline.artifacts import atomic_output
    from pipeline.modelio.rebuild import max_difference

    k3 = to_keras3(model)
    x = [np.asarray(a[:64], dtype=np.float32) for a in x] if isinstance(x, list) else \
        np.asarray(x[:64], dtype=np.float32)
    diff = max_difference(k3, model, x)
    if not diff <= MAX_DIFF:
        raise L.ConversionError(f"the Keras 3 copy of {Path(path).name} differs from the tf_keras model "
                        f"by {diff:.3g} (more than {MAX_DIFF:g}); it is not written")
    with atomic_output(path) as tmp:
        k3.save(tmp)
    return diff


def keras3_sibling(path: str | Path) -> Path:
    """Where the Keras 3 copy of the tf_keras model file `path` goes: NAME_keras3.keras."""
    p = Path(path)
    return p.with_name(f"{p.stem}_keras3.keras")


def write_keras3_copy(model, path: str | Path, x: np.ndarray) -> dict[str, Any]:
    """Save the Keras 3 copy of `model` (saved in tf_keras at `path`) beside it; metrics say
    where, with the max output difference, or (nothing written) why not."""
    import logging

    dest = keras3_sibling(path)
    try:
        diff = save_keras3(model, dest, x)
    except L.ConversionError as e:  # the model has no faithful Keras 3 twin: said, not fatal
        logging.getLogger("edgepipe").info("[model] no Keras 3 copy of %s: %s", Path(path).name, e)
        return {"keras3_file": None, "keras3_error": str(e)}
    return {"keras3_file": dest.name, "keras3_max_abs_diff": diff}
