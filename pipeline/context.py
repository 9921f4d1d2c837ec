"""What a running stage sees: its output folder, the recipe, the data, earlier stages' artifacts."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.records import Artifact, StageRecord

if TYPE_CHECKING:  # pragma: no cover
    import tf_keras

    from pipeline.data import Dataset
    from pipeline.recipe import Recipe
    from pipeline.tasks import Task

log = logging.getLogger("edgepipe")

#: the `source` of what was made from the recipe's `model:` itself (no Keras model in the run yet)
RECIPE_MODEL = "recipe:model"
#: what a file converted from a Keras model inherits from it: the structure compression gave it
CARRIED = ("sparsity", "channels", "unique_values", "clusters")


@dataclass
class StageContext:
    run_dir: Path
    out_dir: Path  # a temp folder; the engine renames it to <run_dir>/<stage_dir> on success
    stage_dir: str  # e.g. "02_export": where out_dir will land, for artifact paths
    recipe: "Recipe"
    previous: list[StageRecord] = field(default_factory=list)
    options: Any = None  # how to run, not what to make (nas: a Distribution); not fingerprinted
    _dataset: Any = None
    _loaded_from: str | None = None  # see model_source

    # ----- inputs -----------------------------------------------------------------------------
    @property
    def seed(self) -> int:
        return self.recipe.seed

    def dataset(self) -> "Dataset":
        """The recipe's dataset, loaded once per run and shared by stages."""
        if self._dataset is None:
            from pipeline.data import load_dataset

            self._dataset = load_dataset(self.recipe.dataset, seed=self.seed)
        return self._dataset

    def artifacts(self, fmt: str | None = None) -> list[Artifact]:
        """All artifacts of earlier stages, oldest first, optionally of one format."""
        return [a for r in self.previous for a in r.artifacts if fmt is None or a.format == fmt]

    def latest_keras(self) -> Artifact | None:
        keras = self.artifacts("keras")
        return keras[-1] if keras else None

    def tflite_artifacts(self) -> list[Artifact]:
        return self.artifacts("tflite")

    def path(self, artifact: Artifact) -> Path:
        return self.run_dir / artifact.path

    def load_model(self, layers: bool = True) -> "tf_keras.Model":
        """The newest Keras model of the run; before any, the recipe's model, built or loaded
        (a Keras 3 file is rebuilt in tf_keras and compared with its original on test inputs).
        `layers=False`: a SavedModel without a layer graph will do (export, PTQ)."""
        from pipeline import modelio, models
        from pipeline.modelio.graph import require_layers

        art = self.latest_keras()
        ds = self.dataset()
        if art is not None:
            model = models.load_model(self.path(art), unsafe=True)  # our own file
            self._loaded_from = art.path
        else:
            from pipeline.tasks import output_units

            model = models.from_spec(self.recipe.model, input_shape=ds.input_shape,
                                     num_classes=output_units(ds), seed=self.seed)
            self._loaded_from = RECIPE_MODEL
        if layers:
            require_layers(model, f"the {self.stage_dir.split('_', 1)[-1]} stage")
        self.bind_task(model)
        modelio.check(model, ds.x_test)
        return model

    def bind_task(self, model) -> "Task":
        """The recipe's task (declared or inferred) of `model` on the data, checked against both
        and kept with the dataset for fitting, export and quantization (pipeline/tasks.py)."""
        from pipeline import tasks

        return tasks.bind(self.recipe.task, model, self.dataset())

    def task(self) -> "Task":
        """The task bound by load_model (or bind_task)."""
        from pipeline import tasks

        return self.dataset().task or tasks.bind(self.recipe.task, self.load_model(),
                                                 self.dataset())

    @property
    def model_source(self) -> str | None:
        """Where the model load_model() returned came from: an artifact's run path, or
        RECIPE_MODEL (the recipe's `model:`); None before load_model()."""
        return self._loaded_from

    def carried_metrics(self) -> dict[str, Any]:
        """The CARRIED metrics of the newest Keras model (what export and quantize convert),
        plus its `source` (as `model_source`): a .tflite's record of what it was made from."""
        art = self.latest_keras()
        carried = {k: v for k, v in (art.metrics if art else {}).items() if k in CARRIED}
        return {**carried, "source": self.model_source}

    def latest_keras_metrics(self) -> dict[str, Any]:
        art = self.latest_keras()
        return dict(art.metrics) if art else {}

    # ----- outputs ----------------------------------------------------------------------------
    def rel(self, name: str) -> str:
        """Run-relative path of a file this stage writes as `out_dir/name`."""
        return f"{self.stage_dir}/{name}"

    def save_model(self, model: "tf_keras.Model", name: str = "model",
                   metrics: dict[str, Any] | None = None) -> Artifact:
        """Save `model` as `<name>.keras` (tf_keras) and `<name>_keras3.keras` (Keras 3, when it
        converts; see modelio.save), measure params, sizes and test accuracy; `source` is
        the run's Keras model this stage started from (load_model), when there was one."""
        from pipeline import models
        from pipeline.modelio.save import write_keras3_copy

        fname = f"{name}.keras"
        models.save_model(model, self.out_dir / fname)
        from pipeline import tasks

        m = models.describe(model, self.out_dir / fname)
        ds = self.dataset()
        m.update(write_keras3_copy(model, self.out_dir / fname, ds.x_test))
        task = tasks.of(model, ds)
        m.update(tasks.keras_metrics(model, ds, task))
        m["task"] = task.to_json()
        if self.model_source:
            m["source"] = self.model_source
        m.update(metrics or {})
        return Artifact(name=name, path=self.rel(fname), format="keras",
                        quantization="fp32", metrics=m)

    def log(self, msg: str, *args: Any) -> None:
        log.info(msg, *args)
