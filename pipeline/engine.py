"""Runs a recipe's stages in order, each at most once per fingerprint, each committed atomically.

A stage's fingerprint hashes its settings, the recipe's data/model/seed/gates, the library
versions, the previous stage's fingerprint, and the content hashes of every artifact the earlier
stages made (what it may read). A stage folder counts as done only when it holds a manifest with
that fingerprint and its own artifacts are intact: the stage runs in a temp folder, writes
`metrics.json` and then `manifest.json`, and the folder is renamed into place. A run killed at any
point leaves temp folders (cleaned next time) but nothing that looks finished.

Bad input fails before anything is written: the data and model are checked first. A run writes
only into a new or empty folder or one it made before (RUN_MARKER), and there only its stage
folders, recipe.yaml, the report files, .lock and temp names (artifacts.TEMP_GLOB).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator, Iterator

from pipeline.artifacts import (atomic_write_bytes, atomic_write_json, atomic_write_text,
                                clean_temps, library_versions, make_temp_dir, sha256_json,
                                sha256_path)
from pipeline.context import StageContext
from pipeline.errors import UserError, did_you_mean
from pipeline.recipe import Recipe
from pipeline.records import Artifact, StageRecord
from pipeline.registry import has_needed, how_to_make, stage_class

log = logging.getLogger("edgepipe")

MANIFEST = "manifest.json"
METRICS = "metrics.json"


@dataclass
class StagePlan:
    index: int
    name: str
    dir_name: str
    fingerprint: str


def stage_dir_name(index: int, name: str) -> str:
    return f"{index + 1:02d}_{name}"


def _inputs_hash(recipe: Recipe) -> str:
    """Content hash of the files the recipe reads (a model path, a dataset file or folder)."""
    parts = {}
    for key, path in (("model", recipe.model.path), ("dataset", recipe.dataset.path)):
        if path and Path(path).exists():
            parts[key] = sha256_path(path)
    return sha256_json(parts)


def _stage_inputs(recipe: Recipe, i: int) -> str:
    """Content hash of files a stage's settings name (a teacher model, devices.yaml, ...)."""
    entry = recipe.stages[i]
    paths = stage_class(entry.name).input_paths(entry.config, recipe)
    return sha256_json({str(p): sha256_path(p) for p in paths if p and Path(p).exists()})


def plan(recipe: Recipe) -> list[StagePlan]:
    """Each stage's folder and fingerprint, chained so a change re-runs everything after it."""
    base = {"dataset": recipe.dataset.model_dump(mode="json"),
            "model": recipe.model.model_dump(mode="json"), "seed": recipe.seed,
            **({"task": recipe.task.model_dump(mode="json")} if recipe.task else {}),
            "gates": recipe.gates.model_dump(mode="json"),
            "inputs": _inputs_hash(recipe), "versions": library_versions()}
    out, prev = [], sha256_json(base)
    for i, st in enumerate(recipe.stages):
        fp = sha256_json({"prev": prev, "stage": st.name, "index": i, "settings": st.settings(),
                          "inputs": _stage_inputs(recipe, i)})
        out.append(StagePlan(i, st.name, stage_dir_name(i, st.name), fp))
        prev = fp
    return out


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((stage_dir / MANIFEST).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def _intact(run_dir: Path, manifest: dict[str, Any]) -> bool:
    """Every artifact the manifest lists is on disk with the content hash it recorded."""
    for a in manifest.get("artifacts", []):
        p = run_dir / a["path"]
        if not p.exists() or sha256_path(p) != manifest.get("hashes", {}).get(a["path"]):
            return False
    return True


def _fingerprint(p: StagePlan, consumed: dict[str, str]) -> str:
    """What a stage's manifest must record to count as done: its plan fingerprint (settings,
    chained) and the content hashes of every artifact of the earlier stages, which it may read."""
    return sha256_json({"plan": p.fingerprint, "consumed": consumed})


def _walk(run_dir: Path, plans: list[StagePlan], start_at: int | None = None
          ) -> Generator[tuple[StagePlan, dict[str, Any] | None, bool], dict | None, None]:
    """Each stage with its manifest (or None) and whether it is done: the fingerprint it must
    have (its settings, and the content of the artifacts now before it in the run), all its
    artifacts intact, and no stage before it to run. A caller that runs a stage `send`s its new
    manifest: the stages after it then must have consumed what it made."""
    consumed: dict[str, str] = {}
    behind = False  # once a stage must run, every later one must: its inputs change
    for p in plans:
        m = read_manifest(run_dir / p.dir_name)
        done = (not behind and m is not None and (start_at is None or p.index < start_at)
                and m.get("fingerprint") == _fingerprint(p, consumed) and _intact(run_dir, m))
        behind = behind or not done
        ran = yield p, m, done
        consumed.update((ran if ran is not None else m if done else {}).get("hashes", {}))


def _advance(walk: Generator, ran: dict | None) -> tuple | None:
    try:
        return walk.send(ran)
    except StopIteration:
        return None


def _record(run_dir: Path, p: StagePlan, manifest: dict[str, Any]) -> StageRecord:
    return StageRecord(p.index, p.name, run_dir / p.dir_name,
                       [Artifact.from_json(a) for a in manifest["artifacts"]],
                       manifest.get("metrics", {}))


#: written when `run` creates a run folder: what `run` may write into (a non-empty folder
#: without it is the user's, never touched)
RUN_MARKER = ".edgepipe-run"


def _check_run_folder(run_dir: Path) -> None:
    """A run goes into a new or empty folder, or one an earlier run made (it has RUN_MARKER)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir} is a file, not a folder; give --out a new or empty folder")
    if run_dir.is_dir() and not (run_dir / RUN_MARKER).is_file() and any(run_dir.iterdir()):
        raise UserError(f"{run_dir} is not empty and is not an edgepipe run folder (it has no "
                        f"{RUN_MARKER}); nothing was changed in it; give --out a new or empty "
                        f"folder")


@contextlib.contextmanager
def _run_lock(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = run_dir / RUN_MARKER
    if not marker.is_file():
        atomic_write_text(marker, "This folder is an edgepipe run: `edgepipe run` writes into it."
                                  "\n")
    with open(run_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another edgepipe run is using {run_dir}; wait for it or use --out "
                            f"to pick another folder") from None
        yield


def _resolve_from(recipe: Recipe, from_stage: str | None) -> int | None:
    if from_stage is None:
        return None
    if from_stage.isdigit() and 1 <= int(from_stage) <= len(recipe.stages):
        return int(from_stage) - 1
    names = [s.name for s in recipe.stages]
    dirs = [stage_dir_name(i, n) for i, n in enumerate(names)]
    if from_stage in dirs:
        return dirs.index(from_stage)
    if from_stage in names:
        return names.index(from_stage)
    raise UserError(f"--from: no stage {from_stage!r} in this recipe"
                    f"{did_you_mean(from_stage, names + dirs)}; stages: {', '.join(dirs)}")


def _preflight(recipe: Recipe) -> None:
    """Input files the recipe names must exist before any stage starts."""
    for what, path in (("model file", recipe.model.path), ("dataset path", recipe.dataset.path)):
        if path and not Path(path).exists():
            raise UserError(f"{what} not found: {path}")


def _check_inputs(recipe: Recipe):
    """Load the data and build or load the recipe's model and check they fit each other (what
    the first stage to use them checks), so a bad input fails before anything is written.
    Returns the dataset (the stages share it)."""
    import tf_keras

    ctx = StageContext(run_dir=Path("."), out_dir=Path("."), stage_dir="00_check", recipe=recipe)
    ctx.load_model(layers=False)
    tf_keras.backend.clear_session()  # the first stage builds it again with the same names
    return ctx._dataset


def run(recipe: Recipe, run_dir: str | Path, *, from_stage: str | None = None,
        force: bool = False, recipe_text: str | None = None,
        options: dict[str, Any] | None = None) -> list[StageRecord]:
    """Run (or resume) the recipe in `run_dir`. Returns every stage's record.

    `options`: stage name → how that stage runs (`ctx.options`), e.g. {"nas": Distribution(...)};
    they change how a stage works, not what it makes, so they are not part of fingerprints."""
    run_dir = Path(run_dir)
    _check_run_folder(run_dir)
    _preflight(recipe)
    start_at = 0 if force else _resolve_from(recipe, from_stage)
    plans = plan(recipe)
    if all(done for _, _, done in _walk(run_dir, plans, start_at)):
        dataset = None  # nothing to run: nothing to load
    else:
        dataset = _check_inputs(recipe)
    records: list[StageRecord] = []
    with _run_lock(run_dir):
        clean_temps(run_dir)
        if recipe_text is not None:
            atomic_write_text(run_dir / "recipe.yaml", recipe_text)
        walk = _walk(run_dir, plans, start_at)
        step, changed = _advance(walk, None), False
        while step is not None:
            p, manifest, done = step
            if done:
                log.info("[%s] up to date, skipped", p.dir_name)
            else:
                if not changed:  # the run's front page no longer describes its files
                    _unpublish_report(run_dir, plans)
                changed = True
                manifest, dataset = _run_stage(run_dir, p, recipe, records, dataset,
                                               (options or {}).get(p.name))
            records.append(_record(run_dir, p, manifest))
            step = _advance(walk, None if done else manifest)
        _publish_report(run_dir, records)
    return records


def _check_needs(cls, records: list[StageRecord]) -> None:
    """A stage does not start without the artifacts it needs (the recipe checks the order; this
    holds when an earlier stage made none)."""
    made = {a.format for r in records for a in r.artifacts}
    for fmt, what in cls.needs.items():
        if not has_needed(fmt, made):
            raise UserError(f"{cls.name}: the run has no {what}; {how_to_make(fmt, cls.name)}")


def _run_stage(run_dir: Path, p: StagePlan, recipe: Recipe, records: list[StageRecord],
               dataset, options: Any) -> tuple[dict[str, Any], Any]:
    """Run one stage in a temp folder and commit it; returns its manifest and the dataset."""
    cls = stage_class(p.name)
    _check_needs(cls, records)
    final = run_dir / p.dir_name
    tmp = make_temp_dir(run_dir, p.dir_name)  # umask mode, not 0700
    ctx = StageContext(run_dir=run_dir, out_dir=tmp, stage_dir=p.dir_name, recipe=recipe,
                       previous=list(records), options=options, _dataset=dataset)
    log.info("[%s] running", p.dir_name)
    t0 = time.time()
    try:
        result = cls().run(ctx, recipe.stages[p.index].config)
        for a in result.artifacts:
            a.stage = a.stage or p.dir_name
        manifest = _commit(run_dir, tmp, final, p, recipe, records, result, time.time() - t0)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.filename and str(tmp) in str(e.filename):  # name the file where it was going
            e.filename = str(e.filename).replace(str(tmp), str(final))
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("[%s] done in %.1fs", p.dir_name, time.time() - t0)
    return manifest, ctx._dataset


def _publish_report(run_dir: Path, records: list[StageRecord]) -> None:
    """Copy the newest publishing stage's files (the report) to the run folder's top."""
    report = next((r for r in reversed(records) if stage_class(r.name).publishes), None)
    for name in (report.metrics.get("files", []) if report else []):
        src = report.dir / name
        if src.is_file():
            atomic_write_bytes(run_dir / name, src.read_bytes())


def _unpublish_report(run_dir: Path, plans: list[StagePlan]) -> None:
    """Remove the report files `_publish_report` copied to the top: a stage is about to change
    the run, and if a later one fails, a stale front page would describe files that are gone."""
    for p in plans:
        manifest = read_manifest(run_dir / p.dir_name) if stage_class(p.name).publishes else None
        for name in (manifest or {}).get("metrics", {}).get("files", []):
            (run_dir / name).unlink(missing_ok=True)


def _commit(run_dir: Path, tmp: Path, final: Path, p: StagePlan, recipe: Recipe,
            previous: list[StageRecord], result, seconds: float) -> dict[str, Any]:
    artifacts = [a.to_json() for a in result.artifacts]
    # Artifact paths point at the final folder; hash them where they are now, in tmp.
    hashes = {a["path"]: sha256_path(tmp / Path(a["path"]).relative_to(p.dir_name))
              for a in artifacts}
    consumed = {a.path: sha256_path(run_dir / a.path) for r in previous for a in r.artifacts}
    atomic_write_json(tmp / METRICS, {"stage": p.name, "metrics": result.metrics,
                                      "artifacts": artifacts}, shown_as=final / METRICS)
    manifest = {
        "fingerprint": _fingerprint(p, consumed), "stage": p.name, "index": p.index,
        "settings": recipe.stages[p.index].settings(), "artifacts": artifacts,
        "metrics": result.metrics, "hashes": hashes, "seconds": round(seconds, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "provenance": {"recipe": sha256_json(recipe.to_json()), "inputs": consumed,
                       "seed": recipe.seed, "versions": library_versions()},
    }
    atomic_write_json(tmp / MANIFEST, manifest, shown_as=final / MANIFEST)  # written last
    if final.exists():
        old = make_temp_dir(run_dir, final.name)
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, final)
    return manifest


def status(run_dir: str | Path, recipe: Recipe | None = None) -> list[dict[str, Any]]:
    """Each stage folder's state: done (fingerprint matches the recipe), stale, or missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    if recipe is None and (run_dir / "recipe.yaml").is_file():
        from pipeline.recipe import load

        recipe = load(run_dir / "recipe.yaml")
    rows = []
    if recipe is not None:
        for p, m, done in _walk(run_dir, plan(recipe)):
            state = "done" if done else "missing" if m is None else "stale"
            rows.append({"stage": p.dir_name, "state": state,
                         "seconds": m.get("seconds") if m else None,
                         "artifacts": len(m["artifacts"]) if m else 0})
    else:
        for d in sorted(x for x in run_dir.iterdir() if x.is_dir() and not x.name.startswith(".")):
            m = read_manifest(d)
            rows.append({"stage": d.name, "state": "done" if m else "incomplete",
                         "seconds": m.get("seconds") if m else None,
                         "artifacts": len(m["artifacts"]) if m else 0})
    return rows
