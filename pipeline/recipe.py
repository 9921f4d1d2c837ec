"""Recipes: YAML → validated objects. Every error names the file:line and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.data import DatasetSpec
from pipeline.errors import RecipeError, pydantic_message
from pipeline.models import ModelSpec
from pipeline.tasks import TaskSpec
from pipeline.config import StageConfig
from pipeline.registry import STAGES, has_needed, how_to_make, stage_class, unknown_stage
from pipeline.yamlfile import check_size, read_text, yaml_line


class Gates(BaseModel):
    """Budgets the run must meet; a breach fails the stage that measured it."""

    model_config = ConfigDict(extra="forbid")

    min_accuracy: float | None = Field(None, ge=0, le=1, description="each .tflite's test accuracy (fraction)")
    max_accuracy_drop: float | None = Field(
        None, ge=0, le=1, description="a .tflite's accuracy below its Keras model's (fraction)")
    min_metric: float | None = Field(
        None, description="the worst acceptable value of the task's metric on each .tflite: a "
                          "floor when higher is better (accuracy, r2, snr_db), a ceiling when "
                          "lower is better (mae, rmse)")
    max_metric_drop: float | None = Field(
        None, ge=0, description="how much worse than its Keras model's a .tflite's metric may "
                                "be, in the metric's own direction")
    max_latency_ms: float | None = Field(None, gt=0, description="p50 latency of each .tflite")
    max_size_kb: float | None = Field(None, gt=0, description="raw size of each .tflite")


class StageEntry(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    config: StageConfig

    def settings(self, exclude_unset: bool = False) -> dict[str, Any]:
        return self.config.model_dump(mode="json", exclude_unset=exclude_unset)


class Recipe(BaseModel):
    """A validated recipe: name, seed, dataset, model, stages (each a name and its Config),
    gates, devices. Made by `load` / `parse`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="run name; runs/<name>/ by default")
    seed: int = 0
    dataset: DatasetSpec
    model: ModelSpec
    task: TaskSpec | None = Field(None, description="classification | regression | fidelity "
                                  "(+ metric, top_k, loss); null: inferred from data and model")
    stages: list[StageEntry] = Field(min_length=1)
    gates: Gates = Field(default_factory=Gates)
    devices: str | None = Field(None, description="devices.yaml for profile targets")

    @field_validator("name")
    @classmethod
    def _plain_folder_name(cls, v: str) -> str:
        if set(v) == {"."}:  # "." and ".." name the current and parent folders, not a run's
            raise ValueError(f"{v!r} is not a folder name of its own; use letters, digits, "
                             f"'_', '-' and '.'")
        return v

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_list(cls, v: Any) -> Any:
        if not isinstance(v, list):
            raise ValueError("stages must be a list of {stage_name: settings}")
        return [e if isinstance(e, StageEntry) else _parse_stage(e) for e in v]

    def to_json(self, exclude_unset: bool = False) -> dict[str, Any]:
        """Every setting, defaults included (fingerprints, reports); `exclude_unset`: only the
        ones the recipe gave."""
        d = self.model_dump(mode="json", exclude={"stages"}, exclude_unset=exclude_unset)
        d["stages"] = [{s.name: s.settings(exclude_unset)} for s in self.stages]
        return d

    def to_yaml(self) -> str:
        """Recipe text that `parse` turns back into an equal recipe. Only the settings the
        recipe gave: validators read `model_fields_set` (quantize rejects `epochs` outside qat,
        prune rejects `begin_step` for channels), so a dump of every default does not parse."""
        return yaml.safe_dump(self.to_json(exclude_unset=True), sort_keys=False)


def _parse_stage(entry: Any) -> StageEntry:
    """One `- name: {settings}` entry. Raises ValueError (bad entry) or ValidationError."""
    if isinstance(entry, str):
        entry = {entry: None}
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ValueError(f"each stage is one `name: {{settings}}` mapping; got {entry!r}")
    (name, settings), = entry.items()
    if name not in STAGES:
        raise ValueError(unknown_stage(name))
    return StageEntry(name=name, config=stage_class(name).Config.model_validate(settings or {}))


# --------------------------------------------------------------------------------------------
def _validate_stages(data: dict[str, Any]) -> list[dict]:
    """Parse `stages` entry by entry so each error carries its own location; replaces the raw
    entries in `data` with the parsed ones. Returns pydantic-style error dicts."""
    raw = data.get("stages")
    if not isinstance(raw, list):
        return []
    errors, parsed = [], []
    for i, entry in enumerate(raw):
        try:
            parsed.append(_parse_stage(entry))
        except ValidationError as e:
            name = next(iter(entry)) if isinstance(entry, dict) else entry
            errors += [{**err, "loc": ("stages", i, name, *err["loc"])} for err in e.errors()]
        except ValueError as e:
            errors.append({"type": "value_error", "loc": ("stages", i), "msg": str(e)})
    if not errors:
        data["stages"] = parsed
    return errors


def _format_error(err: dict, root: yaml.Node | None, source: str) -> str:
    loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
    line = yaml_line(root, loc)
    where = f"{source}:{line}" if line else source
    key = ".".join(str(x) for x in loc) or "recipe"
    known = _fields_at(loc[:-1]) if err["type"] == "extra_forbidden" else ()
    return f"{where}: {key}: {pydantic_message({**err, 'loc': loc}, known)}"


def _fields_at(loc: tuple) -> list[str]:
    """Known keys of the model at `loc`, for did-you-mean on unknown keys."""
    model: Any = Recipe
    if loc[:1] == ("stages",):
        if len(loc) < 3 or loc[2] not in STAGES:
            return []
        model, loc = stage_class(loc[2]).Config, loc[3:]
    for key in loc:
        fields = getattr(model, "model_fields", {})
        if key in fields:
            ann = fields[key].annotation
            model = next((a for a in getattr(ann, "__args__", (ann,)) if hasattr(a, "model_fields")), ann)
    return list(getattr(model, "model_fields", {}))


def parse(text: str, source: str = "<recipe>") -> Recipe:
    """Recipe YAML text → a validated Recipe. RecipeError names `source`:line and the key."""
    try:
        root = yaml.compose(text)
        check_size(root, source)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise RecipeError(f"{where}: YAML syntax error: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a mapping with name, dataset, model, stages")
    errors = _validate_stages(data)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        errors += [err for err in e.errors() if not errors or err["loc"][:1] != ("stages",)]
    if errors:
        # an unknown key first: a typo (`datset:`) also makes the key it meant "missing"
        errors.sort(key=lambda err: err["type"] != "extra_forbidden")
        errors = [_format_error(err, root, source) for err in errors]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RecipeError(errors[0] + more) from None
    _check_order(recipe, root, source)
    return recipe


def _check_task_gates(recipe: Recipe, task: str | None, root, source: str) -> None:
    """Gates that cannot fire for the declared task are errors, not silent no-ops."""
    g = recipe.gates
    why = None
    if task in ("regression", "fidelity") and (g.min_accuracy is not None
                                               or g.max_accuracy_drop is not None):
        key = "min_accuracy" if g.min_accuracy is not None else "max_accuracy_drop"
        why = (key, f"{key} judges classifiers; this recipe's task is {task}: use min_metric / "
                    f"max_metric_drop (its metric, in its own direction)")
    elif task == "fidelity" and g.max_metric_drop is not None:
        why = ("max_metric_drop", "a fidelity task measures each .tflite against the Keras model "
                                  "itself, which has no metric to drop from: use min_metric "
                                  "(the worst acceptable snr_db)")
    if why:
        raise RecipeError(_format_error({"loc": ("gates", why[0]), "type": "value_error",
                                         "msg": why[1]}, root, source))


def _check_order(recipe: Recipe, root: yaml.Node | None, source: str) -> None:
    """Stage order the stages' own settings cannot see (each stage declares what it makes and
    needs, and whether it trains or works on the model): profile with no .tflite before it,
    report with nothing to report, and a stage working on the model before the recipe trains it
    (`[quantize, train]` quantized the untrained model). A recipe that never trains (an untrained
    architecture exported for size and latency) and a recipe whose `model:` is a file are fine."""
    def refuse(i: int, name: str, msg: str):
        raise RecipeError(_format_error({"loc": ("stages", i, name), "type": "value_error",
                                         "msg": msg}, root, source))

    kinds = [stage_class(st.name) for st in recipe.stages]
    first_training = next((i for i, k in enumerate(kinds) if k.trains), None)
    made: set[str] = set()
    task = recipe.task.name if recipe.task else None
    _check_task_gates(recipe, task, root, source)
    for i, (st, cls) in enumerate(zip(recipe.stages, kinds)):
        if st.name == "nas" and task not in (None, "classification"):
            refuse(i, "nas", f"nas searches classifiers only; this recipe's task is {task}: drop "
                             f"the nas stage")
        for fmt, what in cls.needs.items():
            if not has_needed(fmt, made):
                refuse(i, st.name, f"no stage before it writes a {what}; "
                                   f"{how_to_make(fmt, st.name)}")
        if (cls.uses_model and not recipe.model.path and first_training is not None
                and i < first_training and not (st.name == "distill" and st.config.teacher)):
            later = recipe.stages[first_training].name
            refuse(i, st.name, f"works on the model before the recipe trains one (the {later} "
                               f"stage at stages.{first_training}); move {st.name} after it, or "
                               f"set model: to a trained model file")
        made.update(cls.makes)


def load(path: str | Path) -> Recipe:
    """The recipe file at `path`, parsed and validated (see `parse`); its relative paths are
    relative to the file's folder."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe file not found: {p}")
    return resolve_paths(parse(read_text(p, "recipe"), str(p)), p.parent)


def _model_file(value: str) -> bool:
    """How `teacher:` and the model shorthand tell a file from a name."""
    return value.endswith((".keras", ".h5", ".hdf5")) or "/" in value


def resolve_paths(recipe: Recipe, base: Path) -> Recipe:
    """Every file path in `recipe` made relative to `base` (the recipe file's folder), not to
    the current directory: model.path, dataset.path, devices, and model paths in stage settings
    (a distill student's path, a teacher path). Absolute paths stay as they are."""
    def fix(obj, key: str) -> None:  # assigned only when given: to_yaml dumps set fields
        value = getattr(obj, key)
        if value is not None and not Path(value).is_absolute():
            setattr(obj, key, str(base / value))

    fix(recipe.model, "path")
    fix(recipe.dataset, "path")
    fix(recipe, "devices")
    for st in recipe.stages:
        for key, value in st.config:
            if isinstance(value, ModelSpec):
                fix(value, "path")
            elif key == "teacher" and isinstance(value, str) and _model_file(value):
                fix(st.config, key)
    return recipe


def json_schema() -> dict[str, Any]:
    """JSON Schema of the recipe format, for editors (stages as one-of per stage name)."""
    schema = Recipe.model_json_schema()
    defs = schema.setdefault("$defs", {})
    variants = []
    for name in STAGES:
        stage = stage_class(name)
        sub = stage.Config.model_json_schema()
        defs.update(sub.pop("$defs", {}))
        variants.append({"type": "object", "additionalProperties": False, "required": [name],
                         "properties": {name: {"anyOf": [sub, {"type": "null"}]}},
                         "description": stage.help or name})
        variants.append({"const": name})
    schema["properties"]["stages"] = {"type": "array", "minItems": 1, "items": {"oneOf": variants}}
    defs.pop("StageEntry", None)
    schema["properties"]["dataset"] = {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/DatasetSpec"}]}
    schema["properties"]["model"] = {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/ModelSpec"}]}
    schema["title"] = "edgepipe recipe"
    return schema
