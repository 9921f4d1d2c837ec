"""Small tf_keras helpers shared by the algorithms: model checks, layer selection, cloning.
Fitting is `pipeline.training`'s."""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pipeline.errors import UserError, did_you_mean

#: weights that hold a layer's "kernel" (what pruning, clustering and sparsity reports look at)
KERNEL_ATTRS = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")
#: a model counts as pruned when this fraction of its kernel weights are exact zeros
SPARSE_THRESHOLD = 0.10


def require_graph_model(model, what: str) -> None:
    """Raise UserError unless `model` is a Sequential or functional tf_keras model."""
    if not isinstance(model, keras.Model):
        raise UserError(f"Expected a tf_keras Model for {what}. Received: model={type(model).__name__}")
    if not isinstance(model, keras.Sequential) and not getattr(model, "_is_graph_network", False):
        raise UserError(
            f"{what} needs a Sequential or functional model (TF-MOT clones the layer graph); "
            f"subclassed models are not supported. Received: model={type(model).__name__}")


def reserve_layer_names(model) -> None:
    """Make the names tf_keras gives new unnamed layers skip every layer name `model` holds.

    tf_keras names an unnamed layer from a per-process counter ('conv2d', 'conv2d_1', ...) that
    knows only the layers this process named. A model loaded from a file (a Keras 3 model rebuilt
    here, a run's model.keras in a new process) already holds such names, and TF-MOT's layout
    transforms (SeparableConv2D split into DepthwiseConv2D + Conv2D) create unnamed layers and
    then wire the graph by name: a clash silently connected the split to the model's own layer.
    """
    from tf_keras.src.backend import unique_object_name  # what Layer() calls for its name

    highest: dict[str, int] = {}
    for layer in flat_layers(model):
        base, sep, num = layer.name.rpartition("_")
        if sep and num.isdigit() and not (len(num) > 1 and num.startswith("0")):
            highest[base] = max(highest.get(base, 0), int(num))
        highest.setdefault(layer.name, 0)
    for base, top in highest.items():
        while True:  # take names from the counter until the next one is past the model's
            got = unique_object_name(base, zero_based=True)
            if (0 if got == base else int(got.rpartition("_")[2])) >= top:
                break


def check_ratio(value, name: str, *, low_open: bool = False, high_closed: bool = False) -> float:
    """Keras-style range check: [0, 1) by default; (0, 1] with low_open + high_closed."""
    lo, hi = ("(" if low_open else "["), ("]" if high_closed else ")")
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    ok = (v > 0 if low_open else v >= 0) and (v <= 1 if high_closed else v < 1)
    if not ok:
        raise UserError(f"Expected {name} in {lo}0, 1{hi}. Received: {name}={value}")
    return v


def flat_layers(model) -> list:
    """All layers, nested models expanded, in model order."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(flat_layers(layer))
        else:
            out.append(layer)
    return out


def flatten_nested(model):
    """`model` as one functional graph: each nested Sequential/functional model's layers are
    called where the nested model was (the same layer objects: the same weights and outputs).
    A model without nested models is returned as it is. TF-MOT quantizes no model that holds
    another ("Quantizing a tf.keras Model inside another tf.keras Model is not supported")."""
    if not any(isinstance(layer, keras.Model) for layer in model.layers):
        return model
    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=name)
              for t, name in zip(model.inputs, model.input_names)]
    outputs = _inline(model, inputs)
    flat = keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)
    if flat.output_names != model.output_names:  # an output straight out of a nested model
        inner = [a for a, b in zip(model.output_names, flat.output_names) if a != b][0]
        raise UserError(f"output '{inner}' of '{model.name}' is a nested model's own output; "
                        f"flattening the nested model would rename it: add a layer after it "
                        f"(e.g. the classifier) inside '{model.name}'")
    return flat


def _inline(model, inputs: list) -> list:
    """Call `model`'s layers on `inputs` node by node, nested models inlined; its outputs."""
    require_graph_model(model, "flattening a nested model")
    tensors = {id(ref): t for ref, t in zip(model.inputs, inputs)}

    def new(x):
        return tensors.get(id(x), x)

    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            args, kwargs = tf.nest.map_structure(new, (node.call_args, node.call_kwargs))
            if isinstance(node.layer, keras.Model):
                outs = _inline(node.layer, tf.nest.flatten(args[0]))
            else:
                outs = tf.nest.flatten(node.layer(*args, **kwargs))
            for ref, t in zip(tf.nest.flatten(node.outputs), outs):
                tensors[id(ref)] = t
    return [tensors[id(t)] for t in model.outputs]


def kernels(layer) -> list:
    """The kernel-like variables of a layer (unwrapping TF-MOT wrappers)."""
    inner = getattr(layer, "layer", layer)
    return [getattr(inner, a) for a in KERNEL_ATTRS if getattr(inner, a, None) is not None]


def is_sparse(model) -> bool:
    """At least SPARSE_THRESHOLD of the model's kernel weights are exact zeros (it was pruned)."""
    ks = [np.asarray(k.numpy()) for layer in flat_layers(model) for k in kernels(layer)]
    total = sum(k.size for k in ks)
    return bool(total) and bool(sum(k.size - np.count_nonzero(k) for k in ks) / total
                                >= SPARSE_THRESHOLD)


def inner_name(layer) -> str:
    return getattr(layer, "layer", layer).name


def resolve_layers(model, candidates: Sequence[str], layers: Iterable[str] | None,
                   skip: Iterable[str], *, what: str, skip_first: bool = False,
                   skip_classifier: bool = False) -> list[str]:
    """Names of the layers to transform: `layers` (default: all candidates) minus `skip`.

    Unknown names are user errors with a suggestion; a name in `layers` that is not a candidate
    (no weights this transform can use) is an error listing the candidates.
    """
    all_names = [layer.name for layer in flat_layers(model)]
    for name in list(layers or []) + list(skip):
        if name not in all_names:
            raise UserError(f'Unknown layer "{name}" in {what}{did_you_mean(name, all_names)}; '
                            f"layers: {', '.join(all_names)}")
    if layers:
        bad = [n for n in layers if n not in candidates]
        if bad:
            raise UserError(f"Layer(s) {', '.join(bad)} cannot be used for {what}; "
                            f"candidates: {', '.join(candidates) or 'none'}")
        chosen = [n for n in candidates if n in set(layers)]
    else:
        chosen = list(candidates)
    skipped = set(skip)
    if skip_first and candidates:
        skipped.add(candidates[0])
    if skip_classifier and candidates:
        skipped.add(candidates[-1])
    return [n for n in chosen if n not in skipped]


def clone_with_weights(model):
    """A fresh copy (new layer objects) of a Sequential/functional model with the same weights."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def outputs_softmax(model) -> bool:
    """True when the model ends in a softmax (probabilities), False for logits."""
    last = model.layers[-1]
    last = getattr(last, "layer", last)
    if isinstance(last, keras.layers.Softmax):
        return True
    act = getattr(last, "activation", None)
    act = getattr(act, "activation", act)  # TF-MOT QAT wraps it in a QuantizeAwareActivation
    return getattr(act, "__name__", "") == "softmax"


def map_layers(model, fn: Callable):
    """clone_model with `fn(layer) -> layer`, recursing into nested models."""
    def _clone(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=_clone)
        return fn(layer)
    return keras.models.clone_model(model, clone_function=_clone)
