"""`edgepipe run`, `status`, `recipe check|schema`."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.artifacts import json_text


@click.command()
@click.argument("recipe_file", metavar="RECIPE", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="run folder (default runs/<name>)")
@click.option("--from", "from_stage", metavar="STAGE", help="re-run from this stage (name, "
              "folder or 1-based index) even if it is up to date")
@click.option("--force", is_flag=True, help="re-run every stage")
@click.option("--workers", type=click.IntRange(0), default=0, help="nas: search with a chief and "
              "N worker processes on this host; adapt: score each iteration's candidates on N "
              "worker processes")
@click.option("--devices", "devices_path", type=click.Path(dir_okay=False), default=None,
              help="device inventory for profile targets (instead of the recipe's devices:)")
def run(recipe_file: str, out: str | None, from_stage: str | None, force: bool,
        workers: int, devices_path: str | None) -> None:
    """Run a recipe; stages already done with the same fingerprint are skipped."""
    from pipeline import engine, recipe as recipes
    from pipeline.yamlfile import read_text

    r = recipes.load(recipe_file)
    text = read_text(recipe_file, "recipe")
    if devices_path is not None:  # the run folder's recipe.yaml says which inventory was used
        import yaml

        devices_path = str(Path(devices_path).resolve())
        r = r.model_copy(update={"devices": devices_path})
        text = yaml.safe_dump({**yaml.safe_load(text), "devices": devices_path}, sort_keys=False)
    options = {}
    if workers:
        from pipeline.errors import UserError
        from pipeline.stages.nas import Distribution

        names = {s.name for s in r.stages} & {"nas", "adapt"}
        if not names:
            raise UserError(f"--workers {workers}: {recipe_file} has no nas or adapt stage to "
                            f"distribute; drop --workers or add a nas or adapt stage")
        options.update({name: Distribution(workers=workers) for name in names})
    run_dir = Path(out or Path("runs") / r.name)
    before = {d.name: _manifest_id(d) for d in (run_dir.iterdir() if run_dir.is_dir() else ())}
    records = engine.run(r, run_dir, from_stage=from_stage, force=force, recipe_text=text,
                         options=options)
    # a stage that ran committed a new manifest file; a skipped one kept its old one
    kept = sum(1 for rec in records
               if (old := before.get(rec.dir.name)) is not None and old == _manifest_id(rec.dir))
    click.echo(f"done: {len(records)} stages ({kept} up to date, {len(records) - kept} run) "
               f"in {run_dir}")
    if (run_dir / "report.md").exists():
        click.echo(f"report: {run_dir / 'report.html'}")


def _manifest_id(stage_dir: Path) -> tuple[int, int] | None:
    """Identity of a stage's manifest file (inode, mtime), or None when there is none."""
    from pipeline.engine import MANIFEST

    try:
        st = (stage_dir / MANIFEST).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True)
def status(run_dir: str, as_json: bool) -> None:
    """Show which stages of a run folder are done, stale or missing."""
    from pipeline import engine

    _check_run_folder(Path(run_dir))
    rows = engine.status(run_dir)
    if as_json:
        click.echo(json_text(rows, indent=2))
        return
    for r in rows:
        secs = f"{r['seconds']:.1f}s" if r["seconds"] is not None else ""
        m = engine.read_manifest(Path(run_dir) / r["stage"]) or {}
        files = m.get("metrics", {}).get("files") if not r["artifacts"] else None
        n = r["artifacts"]
        what = ", ".join(files) if files else f"{n} artifact{'' if n == 1 else 's'}"  # report: files
        click.echo(f"{r['stage']:<24} {r['state']:<10} {what}  {secs}")


def _check_run_folder(p: Path) -> None:
    """A folder with neither the run marker, recipe.yaml nor a stage folder (01_train, ...) is
    not a run (folders made before the marker have the other two)."""
    import re

    from pipeline.engine import RUN_MARKER

    if p.is_dir() and not (p / RUN_MARKER).is_file() and not (p / "recipe.yaml").is_file() and not any(
            d.is_dir() and re.match(r"\d+_", d.name) for d in p.iterdir()):
        from pipeline.errors import UserError

        raise UserError(f"{p} is not an edgepipe run folder (no recipe.yaml, no stage folders); "
                        "give the folder `edgepipe run` wrote, e.g. runs/digits")


@click.group()
def recipe() -> None:
    """Validate recipes; print their JSON Schema."""


@recipe.command("check")
@click.argument("recipe_file", metavar="FILE", type=click.Path(dir_okay=False))
def recipe_check(recipe_file: str) -> None:
    """Validate a recipe without running anything."""
    from pipeline import recipe as recipes

    r = recipes.load(recipe_file)
    click.echo(f"ok: {recipe_file}: {len(r.stages)} stages: "
               f"{' -> '.join(s.name for s in r.stages)}")


@recipe.command("schema")
def recipe_schema() -> None:
    """Print the recipe JSON Schema (for editors)."""
    from pipeline import recipe as recipes

    click.echo(json_text(recipes.json_schema(), indent=2))


commands = [run, status, recipe]
