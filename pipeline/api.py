"""edgepipe from Python: everything a user may call, in one place (what the CLI does, as functions).

Names here are the public API; everything else in `pipeline` may change between versions.
Importing this module imports TensorFlow and TF-MOT (the CLI does not import it).

Recipes and runs
    load_recipe(path) -> Recipe          parse_recipe(text, source) -> Recipe
        a validated recipe; RecipeError (one line, file:line and key) when it is not.
    run(recipe, run_dir, *, from_stage=None, force=False) -> [StageRecord]
        run or resume the recipe's stages in run_dir; each record lists the artifacts
        (`Artifact`: path, format, quantization, metrics) the stage made.
    status(run_dir, recipe=None) -> [{stage, state, seconds, artifacts}]

Data and models
    load_dataset(spec, seed=0) -> Dataset   spec: "digits", {"name": "npz", "path": ...}, a
        DatasetSpec; the Dataset holds x/y train, val and test arrays and `calibration(n)`.
    load_model(path, unsafe=False) / save_model(model, path) / model_from_spec(spec, shape, classes)
    accuracy(model, x, y) -> float

Fitting (the one fitting path every stage uses)
    fit(model, dataset, FitConfig(...), seed=0, callbacks=()) -> {epochs_run, best_val_accuracy}

Whole compressions (what the stages run): (model, dataset, Config(...), seed) -> result
    prune_model(model, ds, PruneConfig(method="magnitude"|"m_by_n"|"channels", ...))
        -> (pruned plain model, metrics)
    cluster_model(model, ds, ClusterConfig(clusters=16, ...)) -> (clustered model, metrics)
    lowrank_model(model, ds, LowRankConfig(ratio=..., ...)) -> (factorized model, metrics)
    qat_model(model, ds, QuantizeConfig(mode="qat", ...)) -> (QAT model, metrics)
    quantize_model(model, ds, QuantizeConfig(mode="ptq_int8"|...), dest) -> metrics of the
        validated .tflite written to dest
    distill(teacher, student, ds, DistillConfig(student=..., ...)) -> training summary
        (the student is trained in place); `Distiller` is the Keras model it trains
    export(model, path, mode, ds) -> metrics of the validated .tflite ("fp32", "int8", ...)

Algorithms (compress/: apply, strip, measure; no files, no fitting)
    prune_channels(model, ratio, criterion="l1", round_to=8, ...) -> smaller model
    apply_pruning / strip_pruning / pruning_callbacks / plan_schedule / sparsity_report
    apply_clustering / strip_clustering / unique_values_report
    quantize_aware(model, preserve="auto") -> (QAT model, QATInfo) / detect_preserve
    factorize(model, rank|ratio|energy=...) -> (model, report) / count_macs

Errors a user can cause raise `UserError` (and its subclasses RecipeError, GateError,
ExportError, DeviceError) with one line that says what is wrong and what to do.
"""

from pipeline.compress import (apply_clustering, apply_pruning, channel_report, count_macs,
                               detect_preserve, factorize, overall_sparsity, plan_schedule,
                               prune_channels, pruning_callbacks, quantize_aware, sparsity_report,
                               strip_clustering, strip_pruning, unique_values_report)
from pipeline.compress.distiller import Distiller
from pipeline.data import Dataset, DatasetSpec, load_dataset
from pipeline.engine import run, status
from pipeline.errors import DeviceError, ExportError, GateError, RecipeError, UserError
from pipeline.models import accuracy, load_model, save_model
from pipeline.models import from_spec as model_from_spec
from pipeline.recipe import Recipe
from pipeline.recipe import load as load_recipe
from pipeline.recipe import parse as parse_recipe
from pipeline.records import Artifact, StageRecord
from pipeline.stages.cluster import ClusterConfig, cluster_model
from pipeline.stages.distill import DistillConfig, distill
from pipeline.stages.lowrank import LowRankConfig, lowrank_model
from pipeline.stages.prune import PruneConfig, prune_model
from pipeline.stages.quantize import QuantizeConfig, qat_model, quantize_model
from pipeline.tflite import export
from pipeline.training import FitConfig, fit

__all__ = [
    # recipes and runs
    "load_recipe", "parse_recipe", "Recipe", "run", "status", "Artifact", "StageRecord",
    # data and models
    "load_dataset", "Dataset", "DatasetSpec", "load_model", "save_model", "model_from_spec",
    "accuracy",
    # fitting
    "fit", "FitConfig",
    # whole compressions
    "prune_model", "PruneConfig", "cluster_model", "ClusterConfig", "lowrank_model",
    "LowRankConfig", "qat_model", "quantize_model", "QuantizeConfig", "distill", "DistillConfig",
    "Distiller", "export",
    # algorithms
    "prune_channels", "channel_report", "apply_pruning", "strip_pruning", "pruning_callbacks",
    "plan_schedule", "sparsity_report", "overall_sparsity", "apply_clustering",
    "strip_clustering", "unique_values_report", "quantize_aware", "detect_preserve", "factorize",
    "count_macs",
    # errors
    "UserError", "RecipeError", "GateError", "ExportError", "DeviceError",
]
