"""Low-rank factorization: truncated SVD of Dense kernels and 1x1 Conv2D into two plain layers.

W (in x out) ~= (U_r sqrt(S_r)) (sqrt(S_r) V_r^T): a bias-free linear layer of `r` units named
`<name>_lr`, then the original layer (same name, bias and activation) with `r` inputs. The new
model is rebuilt from an edited config, so it holds only stock Dense/Conv2D layers and saves and
loads as an ordinary Keras model. A layer is factorized only when it saves parameters.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pipeline.compress import _keras as K
from pipeline.errors import UserError

SUFFIX = "_lr"


@dataclass
class FactorizedLayer:
    name: str
    kind: str  # "dense" | "conv1x1"
    fan_in: int
    fan_out: int
    full_rank: int
    rank: int
    energy: float  # fraction of the squared singular values kept
    params_before: int
    params_after: int
    factorized: bool  # False when the rank would not save parameters (layer kept as is)

    def to_json(self) -> dict:
        return asdict(self)


def _kind(layer) -> str | None:
    if type(layer) is keras.layers.Dense:
        return "dense"
    if (type(layer) is keras.layers.Conv2D and tuple(layer.kernel_size) == (1, 1)
            and layer.groups == 1 and layer.data_format == "channels_last"):
        return "conv1x1"
    return None


def factorizable_layers(model) -> list[str]:
    """Top-level Dense layers and 1x1 Conv2D (groups=1, channels_last), in model order."""
    return [layer.name for layer in model.layers if _kind(layer)]


def choose_rank(singular_values: np.ndarray, *, rank: int | None = None,
                ratio: float | None = None, energy: float | None = None) -> int:
    """Rank from exactly one of: a fixed `rank`, a `ratio` of the full rank, an `energy` threshold."""
    s = np.asarray(singular_values, dtype=np.float64)
    full = len(s)
    if rank is not None:
        return min(int(rank), full)
    if ratio is not None:
        return max(1, min(full, math.ceil(ratio * full)))
    cum = np.cumsum(s ** 2) / max(float(np.sum(s ** 2)), 1e-30)
    return int(min(full, np.searchsorted(cum, energy - 1e-9) + 1))


def _check(rank, ratio, energy) -> None:
    given = [n for n, v in (("rank", rank), ("ratio", ratio), ("energy", energy)) if v is not None]
    if len(given) != 1:
        raise UserError("Expected exactly one of rank, ratio, energy for low-rank factorization. "
                        f"Received: {', '.join(given) or 'none'}")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, (int, np.integer))
                             or rank <= 0):
        raise UserError(f"Expected rank > 0. Received: rank={rank}")
    if ratio is not None:
        K.check_ratio(ratio, "ratio", low_open=True, high_closed=True)
    if energy is not None:
        K.check_ratio(energy, "energy", low_open=True, high_closed=True)


def _split(u: np.ndarray, s: np.ndarray, vt: np.ndarray, r: int):
    """The two factors of the rank-r truncation, each carrying sqrt of the singular values."""
    root = np.sqrt(s[:r])
    return (u[:, :r] * root).astype(np.float32), (root[:, None] * vt[:r]).astype(np.float32)


def _first_layer_config(layer, kind: str, r: int, name: str) -> dict:
    if kind == "dense":
        new = keras.layers.Dense(r, use_bias=False, name=name, dtype=layer.dtype_policy.name)
    else:
        new = keras.layers.Conv2D(r, 1, strides=layer.strides, padding=layer.padding,
                                  use_bias=False, name=name, dtype=layer.dtype_policy.name)
    return keras.layers.serialize(new)


def factorize(model, *, rank: int | None = None, ratio: float | None = None,
              energy: float | None = None, layers: Iterable[str] | None = None,
              skip: Iterable[str] = ()):
    """Factorize the chosen layers; returns (new model, report dict).

    The report has `layers` (a FactorizedLayer dict per candidate) and params and MACs before
    and after. The new model is uncompiled.
    """
    K.require_graph_model(model, "low-rank factorization")
    _check(rank, ratio, energy)
    chosen = K.resolve_layers(model, factorizable_layers(model), layers, skip, what="low-rank")
    config = copy.deepcopy(model.get_config())
    sequential = isinstance(model, keras.Sequential)
    taken = {entry["config"]["name"] for entry in config["layers"]}
    weights: dict[str, list[np.ndarray]] = {}
    report: list[FactorizedLayer] = []
    for name in chosen:
        layer = model.get_layer(name)
        kind = _kind(layer)
        if len(layer._inbound_nodes) != 1:
            continue  # a shared layer: its calls would need one factorization each
        w = layer.kernel.numpy()
        fan_in, fan_out = w.shape[-2], w.shape[-1]
        w2 = w.reshape(fan_in, fan_out)
        u, s, vt = np.linalg.svd(w2.astype(np.float64), full_matrices=False)
        r = choose_rank(s, rank=rank, ratio=ratio, energy=energy)
        kept = float(np.sum(s[:r] ** 2) / max(float(np.sum(s ** 2)), 1e-30))
        before = fan_in * fan_out
        after = r * (fan_in + fan_out)
        do = after < before
        report.append(FactorizedLayer(name, kind, fan_in, fan_out, len(s), r, round(kept, 6),
                                      before, after if do else before, do))
        if not do:
            continue
        a, b = _split(u, s, vt, r)
        first = name + SUFFIX
        while first in taken:
            first += "_"
        taken.add(first)
        bias = [layer.bias.numpy()] if layer.use_bias else []
        if kind == "dense":
            weights[first], weights[name] = [a], [b] + bias
        else:
            weights[first], weights[name] = [a[None, None]], [b[None, None]] + bias
        _rewire(config, sequential, name, _first_layer_config(layer, kind, r, first), kind)
    new = (keras.Sequential.from_config(config) if sequential
           else keras.Model.from_config(config))
    for layer in new.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
        elif layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return new, {
        "layers": [f.to_json() for f in report],
        "params_before": int(model.count_params()), "params_after": int(new.count_params()),
        "macs_before": count_macs(model), "macs_after": count_macs(new),
    }


def _rewire(config: dict, sequential: bool, name: str, first: dict, kind: str) -> None:
    """Insert `first` before layer `name` in the config; `name` now reads from `first`."""
    idx = next(i for i, e in enumerate(config["layers"]) if e["config"]["name"] == name)
    entry = config["layers"][idx]
    entry.pop("build_config", None)  # its input width changed
    if kind == "conv1x1":
        entry["config"]["strides"] = (1, 1)  # the first 1x1 conv did the striding
    if not sequential:
        first["name"] = first["config"]["name"]
        first["inbound_nodes"] = entry["inbound_nodes"]
        entry["inbound_nodes"] = [[[first["name"], 0, 0, {}]]]
    config["layers"].insert(idx, first)


def _node_macs(layer, out_shape, in_shape) -> int:
    spatial = int(np.prod([d or 1 for d in out_shape[1:-1]])) if len(out_shape) > 2 else 1
    if isinstance(layer, keras.layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        cin = in_shape[-1]
        mid = cin * layer.depth_multiplier
        return spatial * (kh * kw * mid + mid * layer.filters)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return spatial * kh * kw * int(in_shape[-1]) * layer.depth_multiplier
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv1D)):
        k = int(np.prod(layer.kernel_size))
        return spatial * k * (int(in_shape[-1]) // layer.groups) * layer.filters
    if isinstance(layer, keras.layers.Dense):
        return spatial * int(in_shape[-1]) * layer.units
    return 0


def count_macs(model) -> int:
    """Multiply-accumulates of one inference (batch 1) in Dense and convolution layers."""
    total = 0
    for layer in K.flat_layers(model):
        for node in layer._inbound_nodes:
            outs = tf.nest.flatten(node.outputs)
            ins = tf.nest.flatten(node.input_tensors)
            if outs and ins:
                total += _node_macs(layer, outs[0].shape, ins[0].shape)
    return int(total)
