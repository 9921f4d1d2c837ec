"""A Keras 3 model → an equivalent tf_keras functional model, weights copied, outputs compared.

The Keras 3 model's own graph (its functional config: layers, inbound nodes, inputs, outputs) is
replayed with tf_keras layers from `layers.make`: shared layers stay shared (one tf_keras layer
called at each of its nodes), nested models are rebuilt recursively and called as layers,
several inputs and outputs keep their order. Sequential models become functional ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.modelio import layers as L

NESTED = ("Functional", "Sequential", "Model")

#: Keras 3 arithmetic operations in a functional graph: the tf_keras merge layer for two tensors,
#: and (scale, offset) of the Rescaling layer (scale * x + offset) for a tensor and a constant
OPS = {
    "Add": ("Add", lambda c: (1.0, c)),
    "Subtract": ("Subtract", lambda c: (1.0, -c)),
    "Multiply": ("Multiply", lambda c: (c, 0.0)),
    "Divide": (None, lambda c: (1.0 / c, 0.0)),
}


def _is_tensor(v) -> bool:
    return hasattr(v, "shape") and hasattr(v, "dtype")


def _tf_keras():
    import tf_keras

    return tf_keras


def _input(k, layer):
    L.check_dtype(layer)
    cfg = layer.get_config()
    for key in ("sparse", "ragged", "optional"):
        if cfg.get(key):
            raise L._refuse(layer.name, f"a {key} input has no tf_keras equivalent here")
    shape = cfg.get("batch_shape") or (None, *layer.output.shape[1:])
    return k.Input(batch_shape=tuple(shape), dtype=cfg.get("dtype") or "float32", name=layer.name)


class _Builder:
    """One rebuild: Keras 3 layer → its tf_keras twin (made once, so shared layers stay shared)."""

    def __init__(self):
        self.k = _tf_keras()
        self.twins: dict[int, tuple[Any, Any]] = {}  # id(k3 layer) → (tf layer, post)
        self.pairs: list[tuple[Any, Any]] = []  # (k3 layer, tf layer) whose weights to copy

    def twin(self, layer):
        if id(layer) not in self.twins:
            if type(layer).__name__ in NESTED:
                tf_layer, post = self.model(layer), None
            else:
                tf_layer, post = L.make(self.k, layer)
                if tf_layer is not None and layer.weights:
                    self.pairs.append((layer, tf_layer))
            self.twins[id(layer)] = (tf_layer, post)
        return self.twins[id(layer)]

    def call(self, layer, args, kwargs):
        # a recorded `training` flag is kept (tf_keras drops it for layers that ignore it);
        # Keras 3 records `mask=None` for layers after a masking-aware one
        kwargs = {key: v for key, v in kwargs.items() if not (key == "mask" and v is None)}
        extra = sorted(set(kwargs) - {"training"})
        if extra:
            raise L._refuse(layer.name, f"a call with keyword arguments {extra} is not supported")
        if type(layer).__module__.startswith("keras.src.ops."):
            return self.op(layer, args)
        tf_layer, post = self.twin(layer)
        out = tf_layer(*args, **kwargs) if tf_layer is not None else args[0]
        return post(out) if post is not None else out

    def op(self, op, args):
        """A Keras 3 operation in the graph (`x + 3.0`, `x * y`): elementwise arithmetic only."""
        kind = type(op).__name__
        if kind not in OPS or len(args) != 2:
            raise L._refuse(op.name, f"the operation {type(op).__module__}.{kind} has no tf_keras "
                                     f"layer equivalent")
        a, b = args
        if _is_tensor(a) and _is_tensor(b):
            if kind == "Divide":
                raise L._refuse(op.name, "dividing one tensor by another has no tf_keras layer")
            return getattr(self.k.layers, OPS[kind][0])(name=op.name)([a, b])
        if not _is_tensor(a):
            if kind in ("Subtract", "Divide"):
                raise L._refuse(op.name, f"a constant {kind.lower()}d by a tensor has no tf_keras "
                                         f"layer equivalent")
            a, b = b, a
        scale, offset = OPS[kind][1](float(b))
        return self.k.layers.Rescaling(scale, offset=offset, name=op.name)(a)

    # ------------------------------------------------------------------------------------------
    def model(self, m):
        if type(m).__name__ == "Sequential":
            return self.sequential(m)
        if type(m).__name__ != "Functional":
            raise L._refuse(m.name, f"a subclassed model ({type(m).__name__}) has no layer graph "
                                    f"to rebuild; build it as a functional or Sequential model")
        return self.functional(m)

    def sequential(self, m):
        if not getattr(m, "inputs", None):
            raise UserError(f"model {m.name!r}: a Sequential model without an input shape cannot "
                            f"be rebuilt; start it with keras.Input(shape=...) and save it again")
        in_layer = m.inputs[0]._keras_history[0]
        x = inp = _input(self.k, in_layer)
        for layer in m.layers:
            x = self.call(layer, (x,), {})
        return self.k.Model(inp, x, name=m.name)

    def functional(self, m):
        config = m.get_config()
        by_name = {op.name: op for op in m.operations}  # layers and ops (`x + 3.0`)
        tensors: dict[tuple[str, int], Any] = {}
        for spec in config["layers"]:
            if spec["class_name"] == "InputLayer":
                tensors[(spec["name"], 0)] = [_input(self.k, by_name[spec["name"]])]
        specs = [(spec["name"], spec["inbound_nodes"]) for spec in config["layers"]
                 if spec["class_name"] != "InputLayer"]
        replay(m.name, specs, tensors, lambda name, a, kw: self.call(by_name[name], a, kw))
        ins = [_ref(r, tensors) for r in _refs(config["input_layers"])]
        outs = [_ref(r, tensors) for r in _refs(config["output_layers"])]
        return self.k.Model(ins if len(ins) > 1 else ins[0], outs if len(outs) > 1 else outs[0],
                            name=m.name)

    def copy_weights(self) -> None:
        for k3_layer, tf_layer in self.pairs:
            src = [np.asarray(w) for w in k3_layer.get_weights()]
            dst = tf_layer.get_weights()
            if [a.shape for a in src] != [b.shape for b in dst]:
                raise L._refuse(k3_layer.name, f"its weights {[a.shape for a in src]} do not map "
                                               f"onto tf_keras' {[b.shape for b in dst]}")
            tf_layer.set_weights(src)


def replay(model_name: str, specs, tensors: dict, call, first=lambda name: 0) -> None:
    """Call each layer at each of its nodes once the node's input tensors exist.

    specs: [(layer name, [{"args": [...], "kwargs": {...}}, ...])] with inputs as serialized
    Keras tensors (`__keras_tensor__` with keras_history [layer, node, index]); tensors:
    (layer, node) → output list, holding the model's inputs; call(name, args, kwargs) → outputs.
    Shared layers can need a later layer's output, hence the rounds. `first(name)`: the index
    the config gives a layer's first node (tf_keras counts a nested model's nodes from 1).
    """
    todo = [(name, first(name) + i, node) for name, nodes in specs
            for i, node in enumerate(nodes)]
    while todo:
        left = []
        for name, i, node in todo:
            try:
                args = _resolve(node.get("args", []), tensors)
                kwargs = _resolve(node.get("kwargs", {}), tensors)
            except KeyError:  # an input made by a node not replayed yet
                left.append((name, i, node))
                continue
            out = call(name, args, kwargs)
            tensors[(name, i)] = out if isinstance(out, (list, tuple)) else [out]
        if len(left) == len(todo):
            raise UserError(f"model {model_name!r}: its layer graph has nodes whose inputs are "
                            f"never made ({left[0][0]}); the file is inconsistent")
        todo = left


def _refs(spec):
    """input_layers/output_layers: [name, node, index] or a list of them (dicts refused)."""
    if isinstance(spec, dict):
        raise UserError("a model with named (dict) inputs or outputs is not supported; use lists")
    return [spec] if spec and isinstance(spec[0], str) else list(spec)


def _ref(ref, tensors):
    name, node, index = ref
    return tensors[(name, node)][index]


def _resolve(obj, tensors):
    """Replace serialized Keras tensors (`__keras_tensor__`) in a node's args with ours."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            return _ref(obj["config"]["keras_history"], tensors)
        return {key: _resolve(v, tensors) for key, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_resolve(v, tensors) for v in obj]
    return obj


def rebuild(k3_model):
    """The tf_keras twin of a Keras 3 model, with the Keras 3 model's weights."""
    b = _Builder()
    model = b.model(k3_model)
    b.copy_weights()
    return model


def max_difference(k3_model, tf_model, inputs) -> float:
    """Largest absolute difference between the two models' outputs on `inputs`."""
    a = k3_model(inputs, training=False)
    b = tf_model(inputs, training=False)
    a = a if isinstance(a, (list, tuple)) else [a]
    b = b if isinstance(b, (list, tuple)) else [b]
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))
