"""Compression algorithms on tf_keras models. They know nothing of files, recipes or stages."""

from pipeline.compress.channels import channel_report, prune_channels, prune_channels_detailed
from pipeline.compress.clustering import cluster, strip_clustering, unique_values_report
from pipeline.compress.lowrank import count_macs, factorize, lowrank_finetune
from pipeline.compress.magnitude import (PruningPlan, apply_pruning, m_by_n_report, overall_sparsity,
                                         plan_schedule, prune_m_by_n, prune_magnitude,
                                         sparsity_report, strip_pruning)
from pipeline.compress.quantize import (QATInfo, detect_preserve, qat_finetune, quantize_aware,
                                        unsupported_layers)

__all__ = [
    "PruningPlan", "plan_schedule", "apply_pruning", "prune_magnitude", "prune_m_by_n",
    "strip_pruning", "sparsity_report", "overall_sparsity", "m_by_n_report",
    "QATInfo", "quantize_aware", "qat_finetune", "unsupported_layers", "detect_preserve",
    "cluster", "strip_clustering", "unique_values_report",
    "factorize", "lowrank_finetune", "count_macs",
    "prune_channels", "prune_channels_detailed", "channel_report",
]
