"""The stage registry: one line per stage. A recipe's stage names are looked up here."""

from pipeline.stages import export, profile, report, train
from pipeline.stages import distill
from pipeline.stages import cluster, lowrank, prune, quantize
from pipeline.stages import nas
from pipeline.stages.base import Stage

STAGES: dict[str, type[Stage]] = {s.name: s for s in (
    train.Train,
    export.Export,
    profile.Profile,
    report.Report,
    distill.Distill,
    prune.Prune,
    quantize.Quantize,
    cluster.Cluster,
    lowrank.LowRank,
    nas.Nas,
)}
