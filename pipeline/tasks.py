"""Tasks: what a model's outputs mean, so every stage trains and measures it in the right terms.

A task is declared (`task:` in a recipe, `--task` ad hoc) or inferred from the data and the model:

  classification  integer class labels, one unit per class      accuracy (+ top-k)   higher
  regression      float targets of the output's shape           mae, rmse, r2        mae: lower
  fidelity        no labels: each .tflite against the Keras     max_abs_diff, rel_error, cosine,
                  model's own outputs on real inputs            snr_db (+ argmax_agreement)

Each model output is a *head* with its own kind (a two-head model may be classification on one
output and regression on the other). Metric keys are plain (`mae`) for a one-output model and
`<output>/<metric>` for several (the metrics themselves: pipeline/metrics.py). The task's
*primary* metric (the first head's, or the user's
`metric: "package.module:function"`) is what gates and the report judge, in its own direction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.errors import UserError, did_you_mean
from pipeline.metrics import (DIRECTION, PRIMARY, classification_metrics, fidelity_metrics,
                              load_metric, regression_metrics, user_metric, worse_by)


class TaskSpec(BaseModel):
    """`task:` in a recipe. A bare string is shorthand for `{name: ...}`; absent: inferred."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["classification", "regression", "fidelity"] | None = Field(
        None, description="classification | regression | fidelity; null: inferred from the data")
    outputs: dict[str, Literal["classification", "regression"]] = Field(
        default_factory=dict, description="{model output: classification | regression} for "
                                          "models with several heads (others: inferred)")
    top_k: int | None = Field(None, ge=2, description="classification: also report top-k accuracy")
    loss: Literal["mse", "mae"] | dict[str, Literal["mse", "mae"]] = Field(
        "mse", description="regression loss, or {output: loss}")
    loss_weights: dict[str, float] | None = Field(None, description="{output: weight} in training")
    metric: str | None = Field(None, description="your own metric, package.module:function "
                                                 "(y_true, y_pred) -> float; runs your code")
    higher_is_better: bool | None = Field(None, description="direction of `metric` (required)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("metric")
    @classmethod
    def _metric_form(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v):
            raise ValueError(f"expected metric as package.module:function. Received: metric={v!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "TaskSpec":
        if self.metric is not None and self.higher_is_better is None:
            raise ValueError(f"metric {self.metric} needs higher_is_better: true or false")
        if self.metric is None and self.higher_is_better is not None:
            raise ValueError("higher_is_better applies to a metric: package.module:function")
        if self.top_k is not None and self.name not in (None, "classification"):
            raise ValueError(f"top_k applies to classification, not {self.name}")
        if self.name == "fidelity" and self.outputs:
            raise ValueError("outputs applies to labelled tasks; fidelity compares every output")
        return self

    @property
    def metric_name(self) -> str | None:
        return self.metric.rsplit(":", 1)[1] if self.metric else None


# ----- the resolved task ----------------------------------------------------------------------
@dataclass
class Head:
    output: str
    kind: str  # classification | regression | fidelity
    shape: tuple  # the output's shape without the batch axis
    probs: bool = False  # classification: ends in a softmax (else logits)


@dataclass
class Task:
    name: str  # classification | regression | fidelity | mixed
    heads: list[Head]
    declared: bool
    spec: TaskSpec = field(default_factory=TaskSpec)

    @property
    def multi(self) -> bool:
        return len(self.heads) > 1

    def key(self, head: Head, metric: str) -> str:
        return f"{head.output}/{metric}" if self.multi else metric

    @property
    def primary(self) -> str:
        """The metric key gates and the report judge."""
        if self.spec.metric:
            return self.spec.metric_name
        return self.key(self.heads[0], PRIMARY[self.heads[0].kind])

    @property
    def higher_is_better(self) -> bool:
        return self.spec.higher_is_better if self.spec.metric else DIRECTION[
            PRIMARY[self.heads[0].kind]]

    @property
    def labelled(self) -> bool:
        return self.name != "fidelity"

    def describe(self) -> str:
        """One phrase for logs and the report: 'regression (inferred)', ..."""
        kinds = ", ".join(f"{h.output}: {h.kind}" for h in self.heads) if self.name == "mixed" \
            else self.name
        how = "declared" if self.declared else "inferred"
        arrow = "higher is better" if self.higher_is_better else "lower is better"
        return f"{kinds} ({how}); judged by {self.primary}, {arrow}"

    def columns(self) -> list[str]:
        """Metric keys the report shows, primary first."""
        cols = [self.primary]
        for h in self.heads:
            names = {"classification": ["accuracy"] + ([f"top{self.spec.top_k}_accuracy"]
                                                       if self.spec.top_k else []),
                     "regression": ["mae", "rmse", "r2"],
                     "fidelity": ["snr_db", "cosine", "max_abs_diff"]}[h.kind]
            cols += [self.key(h, n) for n in names]
        return list(dict.fromkeys(cols))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "declared": self.declared, "primary": self.primary,
                "higher_is_better": self.higher_is_better, "columns": self.columns(),
                "describe": self.describe(),
                "heads": {h.output: h.kind for h in self.heads}}


# ----- model and data ---------------------------------------------------------------------------
def output_names(model) -> list[str]:
    """The model's output names (a graph-only SavedModel has one, unnamed: "output")."""
    return list(getattr(model, "output_names", None) or ["output"])


def input_names(model) -> list[str]:
    return list(getattr(model, "input_names", None) or ["input"])


def output_shapes(model) -> list[tuple]:
    shapes = model.output_shape
    shapes = shapes if isinstance(shapes, list) else [shapes]
    return [tuple(s[1:]) for s in shapes]


def _softmax_outputs(model) -> list[bool]:
    """Per output: does it come out of a softmax (probabilities)?"""
    out = []
    if not hasattr(model, "outputs"):  # a graph-only SavedModel: no layers to look at
        return [False] * len(output_shapes(model))
    for t in model.outputs:
        layer = t._keras_history.layer  # noqa: SLF001 (the producing layer of a symbolic tensor)
        layer = getattr(layer, "layer", layer)
        act = getattr(layer, "activation", None)
        act = getattr(act, "activation", act)
        out.append(type(layer).__name__ == "Softmax" or getattr(act, "__name__", "") == "softmax")
    return out


def per_output(y, names: list[str]) -> list:
    """Targets as a list in model output order (None when the data has no labels)."""
    if y is None:
        return [None] * len(names)
    if isinstance(y, dict):
        return [y[n] for n in names]
    return [y]


def _is_labels(y: np.ndarray) -> bool:
    """Integer class labels (also floats that are all whole numbers >= 0, as older npz files
    store them)."""
    if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        return True
    return bool(y.size) and float(y.min()) >= 0 and bool(np.all(np.mod(y, 1) == 0))


def _fmt_shape(shape) -> str:
    return str([d if d is not None else "any" for d in shape])


def _fits_regression(y: np.ndarray, shape: tuple) -> bool:
    got = tuple(y.shape[1:])
    want = tuple(shape)
    if got == () and want in ((1,), (None,)):
        return True
    return len(got) == len(want) and all(w is None or w == g for w, g in zip(want, got))


def _fits_classification(y: np.ndarray, shape: tuple) -> bool:
    want = tuple(shape[:-1])
    got = tuple(y.shape[1:])
    return len(got) == len(want) and all(w is None or w == g for w, g in zip(want, got))


def _check_targets(model, dataset) -> None:
    """One target per output, named after it: a missing or extra y_train__<output> is an error."""
    names = output_names(model)
    y = dataset.y_train
    if y is None:
        return
    if isinstance(y, dict):
        _same_names(y, names, "y_train", "output", "give one target per output (outputs: "
                    f"{', '.join(names)}), named y_train__<output> in the npz")
    elif len(names) > 1:
        raise UserError(f"the model has {len(names)} outputs ({', '.join(names)}) but the dataset "
                        f"has one target; give one per output as y_train__<output> in the npz")


def _same_names(given, names: list[str], key: str, what: str, todo: str) -> None:
    """The data's `<key>__<name>` arrays name exactly the model's inputs/outputs `names`."""
    missing = [n for n in names if n not in given]
    if missing:
        raise UserError(f"the dataset has no {key}__{missing[0]} for the model {what} "
                        f"{missing[0]!r}; {todo}")
    extra = [k for k in given if k not in names]
    if extra:
        raise UserError(f"the dataset's {key}__{extra[0]} names no model {what}"
                        f"{did_you_mean(extra[0], names)}; the model's {what}s are: "
                        f"{', '.join(names)}")


def _infer_kind(y, shape: tuple, declared: str | None, output: str, num_classes: int | None,
                what: str) -> str:
    """A head's kind: the declared one, checked against its target, or inferred from it."""
    if y is None:
        if declared not in (None, "fidelity"):
            raise UserError(f"task {declared} needs labels but the dataset has none (an x-only "
                            f"npz); give y_train (or y_train__<output>), or use task: fidelity")
        return "fidelity"
    labels = _is_labels(y)
    wide = bool(shape) and shape[-1] not in (None, 1) and _fits_classification(y, shape)
    integers = np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_
    # integer labels are classes (a too-narrow output is then an error, not a regression);
    # whole-number floats only when the output has a unit per class
    kind = declared or ("classification" if integers or (labels and wide) else "regression")
    if kind == "classification":
        if not labels:
            raise UserError(f"task classification needs integer class labels but {what} holds "
                            f"{y.dtype} values; use task: regression for float targets")
        if not shape or not _fits_classification(y, shape):
            raise UserError(f"{what} has shape {_fmt_shape(y.shape[1:])} but the model output "
                            f"{output!r} has shape {_fmt_shape(shape)}; classification needs one "
                            f"unit per class on the last axis")
        n = int(y.max()) + 1 if y.size else 0
        n = max(n, num_classes or 0)
        if shape[-1] is not None and shape[-1] < n:
            raise UserError(f"the model output {output!r} has {shape[-1]} unit"
                            f"{'s' if shape[-1] != 1 else ''} but the dataset has {n} classes; "
                            f"classification needs one softmax unit per class (also for 2 "
                            f"classes): use a model built for this data, or task: regression")
        return kind
    if kind == "regression" and not _fits_regression(y, shape):
        hint = ("; these look like class labels: use task: classification"
                if labels and shape and shape[-1] not in (None, 1)
                and _fits_classification(y, shape) else "")
        raise UserError(f"{what} has shape {_fmt_shape(y.shape[1:])} but the model output "
                        f"{output!r} has shape {_fmt_shape(shape)}; a regression target must "
                        f"have its output's shape{hint}")
    return kind


def resolve(spec: TaskSpec | str | dict | None, model, dataset) -> Task:
    """The task of `model` on `dataset`: declared (checked against both) or inferred."""
    if not isinstance(spec, TaskSpec):
        spec = TaskSpec.model_validate(spec if spec is not None else {})
    names = output_names(model)
    named = {"task.outputs": spec.outputs, "task.loss_weights": spec.loss_weights or {},
             "task.loss": spec.loss if isinstance(spec.loss, dict) else {}}
    for what, given in named.items():
        key = [k for k in given if k not in names]
        if key:
            raise UserError(f"{what} names {key[0]!r}, not an output of the model"
                            f"{did_you_mean(key[0], names)}; outputs: {', '.join(names)}")
    if spec.name == "fidelity" or dataset.y_train is None:
        if spec.name not in (None, "fidelity") or spec.outputs:
            _infer_kind(None, (), spec.name or "classification", names[0], None, "")
        heads = [Head(n, "fidelity", s) for n, s in zip(names, output_shapes(model))]
        task = Task("fidelity", heads, spec.name is not None, spec)
    else:
        _check_targets(model, dataset)
        ys = per_output(dataset.y_train, names)
        heads = []
        for n, s, y, probs in zip(names, output_shapes(model), ys, _softmax_outputs(model)):
            declared = spec.outputs.get(n) or spec.name
            what = f"y_train__{n}" if isinstance(dataset.y_train, dict) else "y_train"
            kind = _infer_kind(y, s, declared, n, dataset.num_classes if not dataset.multi_output
                               else None, what)
            heads.append(Head(n, kind, s, probs))
        kinds = {h.kind for h in heads}
        name = kinds.pop() if len(kinds) == 1 else "mixed"
        task = Task(name, heads, spec.name is not None or bool(spec.outputs), spec)
    if spec.top_k is not None and not any(h.kind == "classification" for h in task.heads):
        raise UserError(f"task.top_k applies to classification outputs; this task is {task.name}")
    if spec.metric:
        load_metric(spec.metric)
    return task


# ----- measuring ---------------------------------------------------------------------------------
def evaluate(task: Task, preds: list[np.ndarray], y, reference: list[np.ndarray] | None = None
             ) -> dict[str, Any]:
    """The task's metrics of outputs `preds` (model output order) against labels `y`; fidelity
    heads (and the user metric of a fidelity task) compare with `reference` (the Keras outputs).
    A fidelity task measured without a reference (the Keras model itself) has no metrics."""
    ys = per_output(y, [h.output for h in task.heads])
    m: dict[str, Any] = {}
    for i, (h, p) in enumerate(zip(task.heads, preds)):
        if h.kind == "classification":
            part = classification_metrics(ys[i], p, task.spec.top_k)
        elif h.kind == "regression":
            part = regression_metrics(ys[i], p)
        elif reference is not None:
            part = fidelity_metrics(reference[i], p)
        else:
            part = {}
        m.update({task.key(h, k): v for k, v in part.items()})
    if task.spec.metric:
        truth = ys[0] if task.labelled else (reference[0] if reference is not None else None)
        if truth is not None:
            m[task.primary] = user_metric(task.spec.metric, truth, preds[0])
    return m


def compare(task: Task, m: dict[str, Any], keras: dict[str, Any]) -> dict[str, Any]:
    """`keras_<primary>` and `metric_drop` (worse by, in the metric's direction) of a file's
    metrics `m` next to its Keras model's `keras`; classification keeps accuracy_drop."""
    out: dict[str, Any] = {}
    p = task.primary
    if p in keras:
        out[f"keras_{p}"] = keras[p]
        if p in m:
            out["metric_drop"] = worse_by(m[p], keras[p], task.higher_is_better)
    return out


# ----- what stages call -------------------------------------------------------------------------
def bind(spec: TaskSpec | str | dict | None, model, dataset) -> Task:
    """Resolve the task of `model` on `dataset` and keep it with the dataset: fitting, export and
    quantization read it from there (`of`)."""
    check_inputs(model, dataset)
    dataset.task = resolve(spec, model, dataset)
    return dataset.task


def of(model, dataset) -> Task:
    """The task bound to `dataset`, or the one inferred for `model` on it."""
    return getattr(dataset, "task", None) or bind(None, model, dataset)


def check_inputs(model, dataset) -> None:
    """The data's inputs fit the model's: one array for one input, x_train__<input> for several."""
    from pipeline.models import check_input

    names = input_names(model)
    if not dataset.multi_input:
        if len(names) > 1:
            raise UserError(f"the model has {len(names)} inputs ({', '.join(names)}) but the "
                            f"dataset has one; give one per input as x_train__<input> in the npz")
        check_input(model, dataset.input_shape)
        return
    shapes = dataset.input_shapes
    _same_names(shapes, names, "x_train", "input",
                f"give one array per input (inputs: {', '.join(names)})")
    wants = model.input_shape if isinstance(model.input_shape, list) else [model.input_shape]
    for n, want in zip(names, wants):
        want, got = tuple(want[1:]), shapes[n]
        if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got)):
            raise UserError(f"x_train__{n} has samples of shape {list(got)} but the model input "
                            f"{n!r} expects {_fmt_shape(want)}")


def as_list(out) -> list[np.ndarray]:
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else [np.asarray(out)]


def predict(model, x, batch_size: int = 256) -> list[np.ndarray]:
    """The Keras model's outputs, a list in output order."""
    return as_list(model.predict(x, batch_size=batch_size, verbose=0))


def keras_metrics(model, dataset, task: Task | None = None) -> dict[str, Any]:
    """The task's metrics of a Keras model on the test split (fidelity: none, it is the
    reference)."""
    task = task or of(model, dataset)
    return evaluate(task, predict(model, dataset.x_test), dataset.y_test)


def reconstructs(task: Task, dataset) -> bool:
    """Every output has the (single) input's shape: an autoencoder, trained on its inputs."""
    return not dataset.multi_input and all(
        tuple(h.shape) == dataset.input_shape for h in task.heads)


def fit_targets(task: Task, dataset, model=None) -> tuple[Any, Any]:
    """(train, validation) targets to fit on: the labels; for a fidelity task, the outputs of
    `model` (the float model a compression starts from, which fidelity measures against), or
    without one (training from scratch) an autoencoder's inputs."""
    if task.labelled:
        return dataset.y_train, dataset.y_val
    if model is None and reconstructs(task, dataset):
        return dataset.x_train, dataset.x_val
    if model is None:
        raise UserError("task fidelity has no targets to train on: the dataset has no labels and "
                        "the model's outputs do not reconstruct its input; give labels "
                        "(y_train) with task regression or classification, or drop the train "
                        "stage and compress a trained model")
    names = output_names(model)

    def outs(x):
        p = predict(model, x)
        return p[0] if len(p) == 1 else dict(zip(names, p))

    return outs(dataset.x_train), outs(dataset.x_val)


def before(model, dataset, task: Task) -> dict[str, Any]:
    """The task's metrics of the model a compression starts from, keyed `<metric>_before`."""
    return {f"{k}_before": v for k, v in keras_metrics(model, dataset, task).items()}


def headline(metrics: dict[str, Any]) -> str:
    """'mae 43.12 (before 41.20)' from a model's metrics (they carry their task)."""
    task = metrics.get("task") or {"primary": "accuracy"}
    p = task["primary"]
    if p not in metrics:
        return f"task {task.get('name', '?')}: measured on each .tflite against this model"
    ref = metrics.get(f"{p}_before")
    return f"test {p} {metrics[p]:.4g}" + (f" (before {ref:.4g})" if ref is not None else "")


def output_units(dataset) -> int | None:
    """What a zoo builder's `num_classes` means for this data: the class count of integer labels,
    else the size of one float target (1 for a scalar), None for x-only data."""
    if dataset.num_classes is not None or dataset.y_train is None:
        return dataset.num_classes
    y = dataset.y_train
    if isinstance(y, dict):
        return None
    return int(np.prod(y.shape[1:])) if y.ndim > 1 else 1


def student_units(dataset, teacher) -> int | None:
    """`num_classes` for a student of `teacher`: the data's (`output_units`), or for x-only data
    the size of the teacher's one output, so the student can match what it is distilled from."""
    units = output_units(dataset)
    if units is None and len(teacher.outputs) == 1:
        units = int(np.prod(teacher.outputs[0].shape[1:]))
    return units


def require_classification(spec: TaskSpec | None, dataset, what: str) -> None:
    """`what` (nas) searches classifiers only: one line when the task is another."""
    name = spec.name if spec is not None and spec.name else None
    if name is None:
        y = dataset.y_train
        name = ("fidelity" if y is None else "several outputs" if isinstance(y, dict)
                else "classification" if _is_labels(y) and y.ndim == 1 else "regression")
    if name != "classification":
        raise UserError(f"{what} searches classifiers only; this run's task is {name}: drop the "
                        f"{what} stage (prune, quantize and distill work for every task)")
