"""Surgery: rebuild a narrower model from its config and copy the surviving weights in.

`keep` maps each pruned group (its union-find root) to the sorted channel indices it keeps.
Producers get fewer `filters` / `units`; Reshape targets follow the new channel count; every
weight is sliced along its channel axes: a kernel's output axis by the layer's output layout, its
input axis by the input layout (consumers, including Dense rows after a Flatten); BatchNorm,
depthwise kernels and PReLU by the shared layout.
"""

from __future__ import annotations

import math

import numpy as np
import tf_keras as keras

from pipeline.compress.channels.graph import CONV_T, ChannelGraph
from pipeline.errors import UserError


def keep_count(channels: int, ratio: float, round_to: int, min_channels: int) -> int:
    """Channels kept when removing `ratio` of `channels`: nearest multiple of `round_to`,
    at least `min_channels` (and 1), at most `channels`."""
    if ratio <= 0:
        return channels
    k = int(math.floor(channels * (1.0 - ratio) / round_to + 0.5)) * round_to
    return min(channels, max(k, min_channels, 1))


def select(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` highest scores, sorted; ties keep the lower index."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]
    return np.sort(order).astype(np.int64)


def layer_keeps(graph: ChannelGraph, keep: dict, name: str):
    """(input indices, output indices) a layer keeps; None = the whole axis."""
    use = graph.layers.get(name)
    if use is None:
        return None, None
    return graph.keep_indices(use.input, keep), graph.keep_indices(use.output, keep)


def _take(a: np.ndarray, idx, axis: int) -> np.ndarray:
    return a if idx is None else np.take(a, idx, axis=axis)


def slice_weights(layer, kind: str, in_keep, out_keep) -> list[np.ndarray]:
    """The layer's weights with removed channels cut out."""
    out = []
    for var, w in zip(layer.weights, layer.get_weights()):
        short = var.name.split("/")[-1].split(":")[0]
        if kind in ("producer", "separable"):
            if short in ("kernel", "pointwise_kernel"):
                in_ax, out_ax = (-1, -2) if isinstance(layer, CONV_T) else (-2, -1)
                w = _take(_take(w, in_keep, in_ax), out_keep, out_ax)
            elif short == "depthwise_kernel":
                w = _take(w, in_keep, -2)
            elif short == "bias":
                w = _take(w, out_keep, 0)
        elif kind == "grouped":  # Conv(groups=C) kernel (kh, kw, 1, C)
            w = _take(w, out_keep, -1 if short == "kernel" else 0)
        elif kind == "depthwise":
            w = _take(w, out_keep, -2 if short == "depthwise_kernel" else 0)
        elif kind == "batchnorm":
            w = _take(w, out_keep, -1)
        elif kind == "prelu" and out_keep is not None and w.shape[-1] > 1:
            w = _take(w, out_keep, -1)
        out.append(w)
    return out


def _new_config(layer, use, graph: ChannelGraph, keep: dict) -> dict:
    cfg = layer.get_config()
    if use is None or use.output is None:
        return cfg
    out_keep = graph.keep_indices(use.output, keep)
    if out_keep is None:
        return cfg
    if use.kind in ("producer", "separable"):
        cfg["units" if "units" in cfg else "filters"] = int(len(out_keep))
    elif use.kind == "grouped":
        cfg["filters"] = cfg["groups"] = int(len(out_keep))
    elif use.kind == "reshape":
        target = list(cfg["target_shape"])
        if target[-1] != -1:
            target[-1] = int(len(out_keep))
        cfg["target_shape"] = tuple(target)
    return cfg


def apply_keep(model, graph: ChannelGraph, keep: dict):
    """A new model with the channels not in `keep` removed; weights copied and sliced."""

    def clone(layer):
        try:
            cfg = _new_config(layer, graph.layers.get(layer.name), graph, keep)
        except NotImplementedError as e:
            raise UserError(f"Layer '{layer.name}' ({type(layer).__name__}) has no get_config(): "
                            f"channel surgery rebuilds the model from its config; implement "
                            f"get_config() for this layer") from e
        return layer.__class__.from_config(cfg)

    new = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if not layer.weights:
            continue
        use = graph.layers.get(layer.name)
        in_keep, out_keep = layer_keeps(graph, keep, layer.name)
        weights = slice_weights(layer, use.kind if use else "other", in_keep, out_keep)
        target = new.get_layer(layer.name)
        try:
            target.set_weights(weights)
        except ValueError as e:  # a graph bug, not user input: say which layer
            raise RuntimeError(f"channel surgery produced wrong weight shapes for layer "
                               f"'{layer.name}' ({type(layer).__name__}): {e}") from e
    for a, b in zip(model.outputs, new.outputs):
        if tuple(a.shape) != tuple(b.shape):
            raise RuntimeError(f"channel surgery changed the output shape {tuple(a.shape)} -> "
                               f"{tuple(b.shape)}")
    return new
