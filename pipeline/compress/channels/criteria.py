"""Channel importance: one score per channel of a group; the lowest scores are removed.

Weight criteria look at the group's producers (L1 / L2 norm of each output filter) or its
BatchNorm layers (|gamma|, network slimming). Activation criteria run calibration data through the
model and look at the tensors the group's consumers read (mean |activation|, or 1 - APoZ, the
average percentage of zeros). A group with several sources (residual producers, several BNs) sums
the sources' scores, each divided by its mean so that no source dominates by scale.
"""

from __future__ import annotations

import numpy as np
import tf_keras as keras

from pipeline.compress.channels.graph import CONV_T, ChannelGraph, Group

WEIGHT_CRITERIA = ("l1", "l2", "bn_scale")
ACTIVATION_CRITERIA = ("mean_activation", "apoz")
CRITERIA = WEIGHT_CRITERIA + ACTIVATION_CRITERIA


def _normalized_sum(parts: list[np.ndarray]) -> np.ndarray:
    total = np.zeros_like(parts[0], dtype=np.float64)
    for p in parts:
        p = np.asarray(p, dtype=np.float64)
        m = p.mean()
        total += p / m if m > 0 else p
    return total


def _filter_norms(layer, order: int) -> np.ndarray:
    """Norm of each output filter of a producer's kernel."""
    kernel = getattr(layer, "pointwise_kernel", None)
    kernel = (layer.kernel if kernel is None else kernel).numpy()
    out_axis = kernel.ndim - 2 if isinstance(layer, CONV_T) else kernel.ndim - 1
    k = np.moveaxis(kernel, out_axis, -1).reshape(-1, kernel.shape[out_axis])
    return np.abs(k).sum(0) if order == 1 else np.sqrt((k.astype(np.float64) ** 2).sum(0))


def bn_scales(model, graph: ChannelGraph) -> list:
    """(|gamma|, layout) of every BatchNorm with a scale, for the bn_scale criterion."""
    return [(np.abs(model.get_layer(name).gamma.numpy()), use.output)
            for name, use in graph.layers.items()
            if use.kind == "batchnorm" and model.get_layer(name).gamma is not None]


def weight_scores(model, graph: ChannelGraph, group: Group, criterion: str,
                  bn: list | None = None) -> tuple[np.ndarray, str]:
    """Scores for `group` and the criterion actually used (bn_scale falls back to l1 without BN).

    `bn`: `bn_scales(model, graph)`, computed once per model (bn_scale only).
    """
    if criterion == "bn_scale":
        parts = []
        for gamma, layout in (bn if bn is not None else bn_scales(model, graph)):
            parts += [gamma[idx] for idx in graph.positions(layout, group)]
        if parts:
            return _normalized_sum(parts), "bn_scale"
        criterion = "l1"
        used = "l1 (no BatchNormalization scale in group)"
    else:
        used = criterion
    order = 1 if criterion == "l1" else 2
    parts = [_filter_norms(model.get_layer(p), order) for p in group.producers]
    return _normalized_sum(parts), used


def activation_stats(model, graph: ChannelGraph, groups: list[Group], data, batch_size: int = 16):
    """Per-channel mean |x| and zero fraction of the tensors the given groups' consumers read.

    Returns {tensor key: (mean_abs, zero_frac)} over each tensor's channel axis.
    """
    roots = {graph.root_of(g) for g in groups}
    keys = []
    for k in dict.fromkeys(graph.consumer_inputs):
        if any(graph.find(g) in roots for g, _ in graph.tensors[k].segments):
            keys.append(k)
    if not keys:
        return {}
    probe = keras.Model(model.inputs, [graph.keras_tensors[k] for k in keys])
    inputs = data if isinstance(data, (list, tuple)) else [data]
    n = len(inputs[0])
    sums = [None] * len(keys)
    zeros = [None] * len(keys)
    rows = [0] * len(keys)
    for start in range(0, n, batch_size):
        batch = [x[start:start + batch_size] for x in inputs]
        outs = probe(batch if len(batch) > 1 else batch[0], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for i, (k, y) in enumerate(zip(keys, outs)):
            y = np.asarray(y).reshape(-1, graph.tensors[k].length)
            s, z = np.abs(y).sum(0, dtype=np.float64), (y <= 0).sum(0)
            sums[i] = s if sums[i] is None else sums[i] + s
            zeros[i] = z if zeros[i] is None else zeros[i] + z
            rows[i] += y.shape[0]
    return {k: (sums[i] / rows[i], zeros[i] / rows[i]) for i, k in enumerate(keys)}


def activation_scores(graph: ChannelGraph, group: Group, criterion: str, stats: dict):
    """Scores for `group` from `activation_stats`; None when no consumer reads the group."""
    parts = []
    for k, (mean_abs, zero_frac) in stats.items():
        value = mean_abs if criterion == "mean_activation" else 1.0 - zero_frac
        parts += [value[idx] for idx in graph.positions(graph.tensors[k], group)]
    return _normalized_sum(parts) if parts else None
