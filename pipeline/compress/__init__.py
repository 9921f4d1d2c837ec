"""Compression algorithms on tf_keras models. They know nothing of files, recipes or stages.

Each algorithm applies, strips and measures; fine-tuning a wrapped model is `pipeline.training.fit`
(the stages, and `pipeline.api`, put the two together).
"""

from pipeline.compress.channels import channel_report, prune_channels, prune_channels_detailed
from pipeline.compress.clustering import apply_clustering, strip_clustering, unique_values_report
from pipeline.compress.lowrank import count_macs, factorize
from pipeline.compress.magnitude import (PruningPlan, apply_pruning, m_by_n_report, overall_sparsity,
                                         plan_schedule, pruning_callbacks, require_m_by_n,
                                         sparsity_report, strip_pruning)
from pipeline.compress.quantize import QATInfo, detect_preserve, quantize_aware, unsupported_layers

__all__ = [
    "PruningPlan", "plan_schedule", "apply_pruning", "pruning_callbacks", "strip_pruning",
    "require_m_by_n", "sparsity_report", "overall_sparsity", "m_by_n_report",
    "QATInfo", "quantize_aware", "unsupported_layers", "detect_preserve",
    "apply_clustering", "strip_clustering", "unique_values_report",
    "factorize", "count_macs",
    "prune_channels", "prune_channels_detailed", "channel_report",
]
