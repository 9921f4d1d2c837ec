"""`distill`: train a small student against a frozen teacher (pipeline.compress.distiller).

teacher: null      the newest Keras model of an earlier stage (skipping the `nas` stage the
                   student comes from); before any, the recipe's `model:` when it is a file
         STAGE     an earlier stage by name ("train") or folder ("01_train"): its newest model
         PATH      a .keras / .h5 file or SavedModel folder
student: SPEC      a zoo spec, same form as the recipe's `model:` key, or a model file path
         nas       the Keras model the newest earlier `nas` stage declares as its result
                   (`Nas.model`, "best"; its trained weights are the starting point)
The student is saved alone, as an ordinary Keras model: the next stages (prune, export...) see it.
"""

from __future__ import annotations

from typing import Any, Literal, Union

import numpy as np
from pydantic import Field, ValidationError, field_validator

from pipeline import models
from pipeline.errors import UserError, did_you_mean, pydantic_message
from pipeline.models import ModelSpec
from pipeline.registry import stage_class
from pipeline.stages.base import Stage, StageResult
from pipeline.training import FitConfig, fit, optimizer


class DistillConfig(FitConfig):
    """`distill:` settings: student, teacher, temperature, alpha, feature pairs, and the
    training (FitConfig's fields)."""

    student: Union[Literal["nas"], ModelSpec] = Field(
        union_mode="left_to_right",
        description="zoo spec (like `model:`), a model file path, or `nas` (its best model)")
    teacher: str | None = Field(
        None, description="null: newest earlier model; an earlier stage name/folder; or a path")
    temperature: float = Field(4.0, gt=0, description="softmax temperature T of the KL term")
    alpha: float = Field(0.1, ge=0, le=1, description="weight of the label CE; 1-alpha: KL*T^2")
    feature_pairs: list[tuple[str, str]] = Field(
        default_factory=list, description="[teacher_layer, student_layer] feature MSE pairs")
    feature_weight: float = Field(1.0, ge=0, description="weight of the feature MSE")
    epochs: int = Field(30, ge=0)
    patience: int | None = Field(8, ge=1)

    @field_validator("student", mode="before")
    @classmethod
    def _student(cls, v: Any) -> Any:
        """One clear error for a bad spec (not one per union member)."""
        if v == "nas" or isinstance(v, ModelSpec):
            return v
        try:
            return ModelSpec.model_validate(v)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            if err["type"] == "value_error":
                raise ValueError(pydantic_message(err)) from None
            raise ValueError(f"{where + ': ' if where else ''}{err['msg']}; expected a zoo spec "
                             f"like the recipe's model:, a model file path, or nas") from None

    @field_validator("feature_pairs", mode="before")
    @classmethod
    def _pairs(cls, v: Any) -> Any:
        ok = isinstance(v, list) and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(n, str) for n in p)
            for p in v)
        if not ok:
            raise ValueError(f"expected a list of [teacher_layer, student_layer] name pairs, "
                             f"got {v!r}")
        return v


def distill(teacher, student, dataset, cfg: DistillConfig, seed: int = 0,
            prefix: str = "distill", callbacks=()) -> dict[str, Any]:
    """Fit `student` (in place) against `teacher` on `dataset`; returns a training summary.

    Classifiers: the KD loss of pipeline.compress.distiller. Regression (and fidelity) models
    with one output: MSE to the blend alpha * labels + (1 - alpha) * teacher outputs, which has
    the gradient of alpha * MSE(labels) + (1 - alpha) * MSE(teacher) (fidelity: teacher only).
    """
    from pipeline import tasks
    from pipeline.compress.distiller import Distiller

    task = tasks.of(teacher, dataset)  # the student must match the teacher
    if task.name != "classification" or task.multi:
        return _distill_outputs(teacher, student, dataset, cfg, task, seed, prefix, callbacks)
    d = Distiller(teacher, student, temperature=cfg.temperature, alpha=cfg.alpha,
                  feature_pairs=cfg.feature_pairs, feature_weight=cfg.feature_weight)
    d.compile(optimizer=optimizer(cfg.optimizer, cfg.learning_rate))
    return fit(d, dataset, cfg, seed=seed, compile=False, prefix=prefix, callbacks=callbacks)


def _distill_outputs(teacher, student, dataset, cfg: DistillConfig, task, seed, prefix,
                     callbacks) -> dict[str, Any]:
    from pipeline import tasks

    if task.multi or task.name == "mixed":
        raise UserError(f"distill: a model with {len(task.heads)} outputs cannot be distilled "
                        f"yet; distill handles one-output classifiers and regressors")
    if cfg.feature_pairs:
        raise UserError(f"distill: feature_pairs apply to classification; this task is "
                        f"{task.name}: drop feature_pairs")
    if tasks.output_shapes(student) != tasks.output_shapes(teacher):
        raise UserError(f"distill: the student's output shape {tasks.output_shapes(student)[0]} "
                        f"differs from the teacher's {tasks.output_shapes(teacher)[0]}; give a "
                        f"student built for the same targets")

    def blend(x, y):
        t = tasks.predict(teacher, x)[0].reshape((len(x),) + tasks.output_shapes(teacher)[0])
        if y is None or not task.labelled:
            return t
        return cfg.alpha * np.asarray(y, np.float32).reshape(t.shape) + (1 - cfg.alpha) * t

    targets = (blend(dataset.x_train, dataset.y_train), blend(dataset.x_val, dataset.y_val))
    return fit(student, dataset, cfg, seed=seed, prefix=prefix, callbacks=callbacks,
               targets=targets)


def _keras_of(record) -> list:
    arts = [a for a in record.artifacts if a.format == "keras"]
    if not arts:
        raise UserError(f"distill: stage {record.dir.name} made no Keras model to use")
    return arts


def resolve_student(ctx, cfg: DistillConfig):
    """(student model, where it came from, the nas record it came from or None)."""
    ds = ctx.dataset()
    if cfg.student != "nas":
        spec = cfg.student
        where = spec.path or (f"zoo:{spec.zoo}" if spec.zoo else f"keras.applications.{spec.application}")
        from pipeline.tasks import output_units

        return models.from_spec(spec, input_shape=ds.input_shape, num_classes=output_units(ds),
                                seed=ctx.seed), where, None
    nas = [r for r in ctx.previous if r.name == "nas"]
    if not nas:
        raise UserError("distill: student: nas needs an earlier nas stage in the recipe; "
                        "add one before distill, or give a zoo spec or a model path")
    name = stage_class("nas").model
    best = [a for a in _keras_of(nas[-1]) if a.name == name]
    if not best:
        names = [a.name for a in nas[-1].artifacts]
        raise UserError(f"distill: stage {nas[-1].dir.name} has no Keras model named \"{name}\" "
                        f"(it made: {', '.join(names) or 'nothing'})")
    return models.load_model(ctx.path(best[-1]), unsafe=True), best[-1].path, nas[-1]


def resolve_teacher(ctx, cfg: DistillConfig, skip=None):
    """(teacher model, where it came from). See the module doc for the forms of `teacher:`."""
    t = cfg.teacher
    if t is None:
        for r in reversed(ctx.previous):
            keras_arts = [a for a in r.artifacts if a.format == "keras"]
            if r is not skip and keras_arts:
                return models.load_model(ctx.path(keras_arts[-1]), unsafe=True), keras_arts[-1].path
        if ctx.recipe.model.path:
            spec = ctx.recipe.model
            return models.load_model(spec.path, unsafe=spec.unsafe), spec.path
        raise UserError("distill: no trained teacher: put a train stage before distill, or set "
                        "teacher: PATH (or the recipe's model: to a trained model file)")
    stages = {r.dir.name: r for r in ctx.previous} | {r.name: r for r in ctx.previous}
    if t in stages:
        arts = _keras_of(stages[t])
        return models.load_model(ctx.path(arts[-1]), unsafe=True), arts[-1].path
    if t.endswith((".keras", ".h5", ".hdf5")) or "/" in t:
        return models.load_model(t), t
    raise UserError(f"distill: teacher {t!r} is neither an earlier stage nor a model file"
                    f"{did_you_mean(t, list(stages))}; earlier stages: "
                    f"{', '.join(r.dir.name for r in ctx.previous) or 'none'}")


class Distill(Stage):
    name = "distill"
    Config = DistillConfig
    uses_model = True  # the teacher, unless teacher: PATH
    trains = True
    help = "train a small student against the frozen teacher (KD loss); saves the student"
    makes = ("keras",)

    @classmethod
    def input_paths(cls, cfg: DistillConfig, recipe) -> list[str]:
        """Teacher and student files named by path: editing one re-runs the stage."""
        paths = [cfg.teacher] if cfg.teacher and (
            cfg.teacher.endswith((".keras", ".h5", ".hdf5")) or "/" in cfg.teacher) else []
        if isinstance(cfg.student, ModelSpec) and cfg.student.path:
            paths.append(cfg.student.path)
        return paths

    def run(self, ctx, cfg: DistillConfig) -> StageResult:
        ds = ctx.dataset()
        student, s_from, nas_record = resolve_student(ctx, cfg)
        teacher, t_from = resolve_teacher(ctx, cfg, skip=nas_record)
        from pipeline import modelio
        from pipeline.modelio.graph import require_layers

        require_layers(teacher, "distill (its teacher)")
        for model in (teacher, student):  # either may be a Keras 3 file, rebuilt in tf_keras
            modelio.check(model, ds.x_test)
        from pipeline import tasks

        ctx.bind_task(teacher)
        t_m = {f"teacher_{k}": v for k, v in tasks.keras_metrics(teacher, ds).items()}
        t_params, _ = models.count_params(teacher)
        summary = distill(teacher, student, ds, cfg, seed=ctx.seed)
        s_params, _ = models.count_params(student)
        metrics = {**summary, "teacher": t_from, "student_from": s_from, **t_m,
                   "teacher_params": t_params, "compression": round(t_params / max(1, s_params), 3)}
        art = ctx.save_model(student, "model", metrics=metrics)
        p = art.metrics["task"]["primary"]
        ctx.log("[distill] student %s, %d params (teacher %d, %.1fx fewer)",
                tasks.headline({**art.metrics, f"{p}_before": t_m.get(f"teacher_{p}")})
                .replace("before", "teacher"), s_params, t_params, metrics["compression"])
        return StageResult([art], {**t_m, **({p: art.metrics[p]} if p in art.metrics else {}),
                                   "compression": metrics["compression"], **summary})
