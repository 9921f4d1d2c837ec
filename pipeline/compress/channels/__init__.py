"""Structured channel pruning: remove whole filters / units and rebuild a narrower model.

    model = prune_channels(model, 0.5)                       # -> tf_keras.Model
    model, report = prune_channels_detailed(model, 0.5, criterion="bn_scale")

`graph` finds the groups of layers that must keep the same channel indices, `criteria` scores the
channels of each group, `surgery` rebuilds the model and copies the surviving weights. Groups that
cannot be pruned safely (unsupported layers, the model input/output, protected layers) are left
whole and listed in `report["skipped"]` with the reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Real

import numpy as np
import tf_keras as keras

from pipeline.compress.channels import criteria as _criteria
from pipeline.compress.channels.graph import ChannelGraph, Group, build_graph
from pipeline.compress.channels.surgery import apply_keep, keep_count, layer_keeps, select
from pipeline.errors import UserError, did_you_mean

CRITERIA = _criteria.CRITERIA

__all__ = ["CRITERIA", "ChannelPlan", "apply_plan", "channel_report", "plan_channels",
           "plan_counts", "prune_channels", "prune_channels_detailed"]


@dataclass
class ChannelPlan:
    """What to keep: the graph, kept indices per pruned group root, and per-group notes."""

    graph: ChannelGraph
    keep: dict                      # group root -> sorted kept channel indices
    rows: list = field(default_factory=list)     # pruned/prunable groups (report)
    skipped: list = field(default_factory=list)  # frozen groups with producers (report)

    def layer_keeps(self, name: str):
        """(input indices, output indices) layer `name` keeps; None = the whole axis."""
        return layer_keeps(self.graph, self.keep, name)


def _check_model(model) -> None:
    if not isinstance(model, keras.Model):
        raise UserError(f"Expected a tf_keras Model. Received: model={type(model).__name__}")
    if isinstance(model, keras.Sequential) and not model.built:
        raise UserError(f"Channel pruning needs a built model; call "
                        f"{model.name}.build(input_shape) or give its first layer an input_shape")
    if not getattr(model, "_is_graph_network", False):
        raise UserError(f"Channel pruning needs a Sequential or functional model; "
                        f"'{model.name}' is a subclassed {type(model).__name__}: rebuild it with "
                        f"keras.Sequential or the functional API")


def _check_ratio(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value < 1:
        raise UserError(f"Expected {name} in [0, 1). Received: {name}={value!r}")
    return float(value)


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"Expected {name} to be a positive integer. Received: {name}={value!r}")
    return int(value)


def _check_names(model, names, what: str) -> None:
    known = [layer.name for layer in model.layers]
    for name in names:
        if name not in known:
            raise UserError(f'Unknown layer "{name}" in {what}{did_you_mean(name, known)}')


def _check_data(model, data, criterion: str):
    if data is None:
        raise UserError(f'criterion="{criterion}" needs calibration data: pass data=<numpy batch '
                        f"of model inputs>")
    inputs = list(data) if isinstance(data, (list, tuple)) else [data]
    if len(inputs) != len(model.inputs):
        raise UserError(f"Expected data for {len(model.inputs)} model input(s). "
                        f"Received: {len(inputs)} array(s)")
    out = []
    for x, t in zip(inputs, model.inputs):
        x = np.asarray(x, dtype=np.float32)
        want = tuple(t.shape[1:])
        if x.ndim != len(want) + 1 or len(x) == 0 or any(
                w is not None and w != s for w, s in zip(want, x.shape[1:])):
            raise UserError(f"Expected data of shape (N, {', '.join(map(str, want))}). "
                            f"Received: data.shape={x.shape}")
        out.append(x)
    return out if len(out) > 1 else out[0]


def _group_ratios(graph: ChannelGraph, ratio: float, per_layer: dict) -> dict:
    """group root -> ratio; per-layer ratios name any layer of the group (conflicts are errors)."""
    chosen: dict[int, tuple[str, float]] = {}
    for name, r in per_layer.items():
        for g in graph.layer_groups(name, "out"):
            root = graph.root_of(g)
            if root in chosen and chosen[root][1] != r:
                other, r0 = chosen[root]
                raise UserError(f"Layers '{other}' (ratio {r0}) and '{name}' (ratio {r}) share "
                                f"channels (one group): give them the same ratio in per_layer")
            chosen[root] = (name, r)
    return {g.root: chosen[g.root][1] if g.root in chosen else ratio for g in graph.groups()}


def plan_channels(model, ratio, criterion="l1", round_to=8, data=None, protect=(),
                  per_layer=None, min_channels=8) -> ChannelPlan:
    """Validate the arguments, build the channel graph, score channels and choose what to keep."""
    _check_model(model)
    ratio = _check_ratio(ratio, "ratio")
    if criterion not in CRITERIA:
        raise UserError(f'Unknown criterion "{criterion}"{did_you_mean(criterion, CRITERIA)}. '
                        f"Expected one of: {', '.join(CRITERIA)}")
    round_to = _check_positive_int(round_to, "round_to")
    min_channels = _check_positive_int(min_channels, "min_channels")
    protect = (protect,) if isinstance(protect, str) else tuple(protect or ())
    _check_names(model, protect, "protect")
    per_layer = dict(per_layer or {})
    _check_names(model, per_layer, "per_layer")
    per_layer = {n: _check_ratio(r, f"per_layer['{n}']") for n, r in per_layer.items()}
    if criterion in _criteria.ACTIVATION_CRITERIA:
        data = _check_data(model, data, criterion)

    graph = build_graph(model)
    for name in protect:
        for ins, outs in graph.nodes.get(name, []):
            for lay in ins + outs:
                graph.freeze(lay, f"protected layer '{name}'")
    ratios = _group_ratios(graph, ratio, per_layer)
    groups = graph.groups()
    todo = [g for g in groups if not g.frozen and g.producers
            and keep_count(g.size, ratios[graph.root_of(g)], round_to, min_channels) < g.size]
    stats = bn = None
    if criterion in _criteria.ACTIVATION_CRITERIA and todo:
        stats = _criteria.activation_stats(model, graph, todo, data)
    if criterion == "bn_scale" and todo:
        bn = _criteria.bn_scales(model, graph)

    plan = ChannelPlan(graph, {})
    for g in groups:
        if not g.producers:
            continue
        root = graph.root_of(g)
        row = {"group": g.id, "producers": list(g.producers), "layers": list(g.layers),
               "channels_before": g.size}
        if g.frozen:
            plan.skipped.append({**row, "reasons": list(g.reasons)})
            continue
        r = ratios[root]
        k = keep_count(g.size, r, round_to, min_channels)
        used = None
        if k < g.size:
            scores, used = _scores(model, graph, g, criterion, stats, bn)
            plan.keep[root] = select(scores, k)
        plan.rows.append({**row, "ratio": r, "channels_after": k, "criterion": used})
    return plan


def plan_counts(model, counts: dict, criterion: str = "l1", data=None,
                graph: ChannelGraph | None = None) -> ChannelPlan:
    """Keep `counts[root]` channels of each listed group (its highest-scoring ones), where root
    is a group's union-find root in `graph` (default: `build_graph(model)`); for callers that
    choose counts per group themselves, e.g. latency-driven adaptation."""
    _check_model(model)
    if criterion not in CRITERIA:
        raise UserError(f'Unknown criterion "{criterion}"{did_you_mean(criterion, CRITERIA)}. '
                        f"Expected one of: {', '.join(CRITERIA)}")
    graph = graph or build_graph(model)
    groups = {g.root: g for g in graph.groups()}
    todo = [groups[r] for r, k in counts.items() if k < groups[r].size]
    for g in todo:
        if g.frozen or not g.producers:
            raise ValueError(f"group {g.id} ({', '.join(g.layers)}) cannot be pruned")
    stats = bn = None
    if criterion in _criteria.ACTIVATION_CRITERIA and todo:
        stats = _criteria.activation_stats(model, graph, todo, _check_data(model, data, criterion))
    if criterion == "bn_scale" and todo:
        bn = _criteria.bn_scales(model, graph)
    plan = ChannelPlan(graph, {})
    for g in todo:
        scores, used = _scores(model, graph, g, criterion, stats, bn)
        plan.keep[g.root] = select(scores, counts[g.root])
        plan.rows.append({"group": g.id, "producers": list(g.producers), "layers": list(g.layers),
                          "channels_before": g.size, "channels_after": counts[g.root],
                          "criterion": used})
    return plan


def _scores(model, graph: ChannelGraph, group: Group, criterion: str, stats, bn):
    """(channel scores, criterion used): activation criteria fall back to l1 for a group no
    consumer reads; bn_scale falls back to l1 for a group without BatchNorm."""
    if stats is not None:
        scores = _criteria.activation_scores(graph, group, criterion, stats)
        if scores is not None:
            return scores, criterion
        scores, _ = _criteria.weight_scores(model, graph, group, "l1")
        return scores, "l1 (no consumer reads the group's activations)"
    return _criteria.weight_scores(model, graph, group, criterion, bn)


def apply_plan(model, plan: ChannelPlan):
    """The narrower model the plan describes (weights sliced from `model`)."""
    return apply_keep(model, plan.graph, plan.keep)


def prune_channels_detailed(model, ratio, criterion="l1", round_to=8, data=None, protect=(),
                            per_layer=None, min_channels=8):
    """Like `prune_channels`, and also return a JSON-ready report.

    report: criterion, ratio, round_to, min_channels, params_before/after, groups (pruned or
    prunable groups: producers, layers, channels before/after, ratio, criterion used), skipped
    (groups left whole, with reasons), layers (`channel_report`).
    """
    plan = plan_channels(model, ratio, criterion, round_to, data, protect, per_layer, min_channels)
    new = apply_plan(model, plan)
    report = {
        "criterion": criterion, "ratio": float(ratio), "per_layer": dict(per_layer or {}),
        "round_to": int(round_to), "min_channels": int(min_channels),
        "params_before": int(model.count_params()), "params_after": int(new.count_params()),
        "groups": plan.rows, "skipped": plan.skipped, "layers": channel_report(model, new),
    }
    return new, report


def prune_channels(model, ratio, criterion="l1", round_to=8, data=None, protect=(),
                   per_layer=None, min_channels=8):
    """Remove `ratio` of the channels of every prunable group; returns a new tf_keras.Model.

    ratio: in [0, 1), global; per_layer: {layer name: ratio} overrides it for that layer's group.
    criterion: "l1" | "l2" | "bn_scale" | "mean_activation" | "apoz" (the last two need `data`,
    a numpy batch of calibration inputs). Kept counts are rounded to a multiple of `round_to`,
    never below `min_channels` nor above the original. `protect`: layer names whose weights stay
    whole (their input and output channels are kept). The model output is never pruned.
    The returned model is not compiled.
    """
    return prune_channels_detailed(model, ratio, criterion, round_to, data, protect, per_layer,
                                   min_channels)[0]


def _channels(layer, attr: str):
    try:
        shape = getattr(layer, attr)
    except (AttributeError, RuntimeError):  # a shared layer has no single shape
        return None
    shape = shape[0] if isinstance(shape, list) else shape
    return None if shape is None or len(shape) == 0 else shape[-1]


def channel_report(before, after) -> list[dict]:
    """Per layer with weights: channels in/out and params, before and after (matched by name)."""
    rows = []
    names = {layer.name for layer in after.layers}
    for layer in before.layers:
        if not layer.weights or layer.name not in names:
            continue
        new = after.get_layer(layer.name)
        rows.append({
            "layer": layer.name, "type": type(layer).__name__,
            "in_before": _channels(layer, "input_shape"), "in_after": _channels(new, "input_shape"),
            "out_before": _channels(layer, "output_shape"),
            "out_after": _channels(new, "output_shape"),
            "params_before": int(layer.count_params()), "params_after": int(new.count_params()),
        })
    return rows
