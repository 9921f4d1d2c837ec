"""NetAdapt's proposal step (Yang et al., ECCV 2018) over the channel-pruning graph.

For each prunable channel group, the fewest channels to remove so that the latency model says the
network meets this iteration's target; each proposal is then pruned (`channels.plan_counts`, the
same criteria and surgery as `prune_channels`), fine-tuned and scored by the caller, who keeps the
best. Channel counts move on a fixed grid per group (`choices` of the original size), so a
latency table measured once for the original model covers every model adaptation can reach.

Groups are named by their first producer layer: a name survives surgery, a union-find root need
not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pipeline.compress.channels import apply_plan, plan_counts
from pipeline.compress.channels.graph import ChannelGraph, build_graph


def choices(size: int, round_to: int = 8, min_channels: int = 8, levels: int = 8) -> list[int]:
    """Channel counts a group of `size` may keep: multiples of `round_to` from `min_channels`
    up, and `size`; at most `levels` of them, evenly spread, largest first."""
    counts = sorted({size, *(k for k in range(round_to, size, round_to) if k >= min_channels)},
                    reverse=True)
    if len(counts) <= levels:
        return counts
    idx = sorted({round(i * (len(counts) - 1) / (levels - 1)) for i in range(levels)})
    return [counts[i] for i in idx]


def prunable(graph: ChannelGraph) -> list:
    """Groups adaptation may shrink: not frozen, made by a producer."""
    return [g for g in graph.groups() if g.producers and not g.frozen]


def grid(model, round_to: int = 8, min_channels: int = 8, levels: int = 8) -> dict[str, list[int]]:
    """{group name: the counts it may keep}, from the model's current sizes."""
    return {g.producers[0]: choices(g.size, round_to, min_channels, levels)
            for g in prunable(build_graph(model))}


@dataclass
class Proposal:
    group: str          # the group's first producer layer
    before: int
    after: int
    predicted_ms: float
    meets: bool         # reaches the iteration's target by the latency model


def proposals(model, counts_grid: dict[str, list[int]],
              latency: Callable[[ChannelGraph, dict], float], target_ms: float) -> list[Proposal]:
    """Per group, the largest count on its grid whose network the latency model puts at or under
    `target_ms` (`latency(graph, {root: count})`). Groups that cannot reach it alone propose their
    smallest count, flagged `meets=False`, when that still lowers the latency. Empty: no group
    can shrink any further."""
    graph = build_graph(model)
    now = latency(graph, {})
    out = []
    for g in prunable(graph):
        options = [k for k in counts_grid.get(g.producers[0], []) if k < g.size]
        best = None
        for k in options:  # largest first: the fewest channels removed
            ms = latency(graph, {g.root: k})
            if ms <= target_ms:
                best = Proposal(g.producers[0], g.size, k, ms, True)
                break
        if best is None and options:
            ms = latency(graph, {g.root: options[-1]})
            if ms < now:
                best = Proposal(g.producers[0], g.size, options[-1], ms, False)
        if best is not None:
            out.append(best)
    if any(p.meets for p in out):
        out = [p for p in out if p.meets]
    return out


def apply(model, proposal: Proposal, criterion: str = "l1", data=None):
    """The model with `proposal.group` cut to `proposal.after` channels (weights sliced)."""
    graph = build_graph(model)
    root = next(g.root for g in graph.groups() if g.producers[:1] == [proposal.group])
    return apply_plan(model, plan_counts(model, {root: proposal.after}, criterion, data, graph))
