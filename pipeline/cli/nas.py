"""`edgepipe nas RECIPE --chief | --worker`: one architecture search across several machines.

    chief:   edgepipe nas RECIPE --chief --address 0.0.0.0:8000 --token-file TOKEN [--workers N]
             runs the recipe like `edgepipe run`; its nas stage serves the search and waits
    worker:  edgepipe nas RECIPE --worker --address CHIEF_HOST:8000 --token-file TOKEN [--id NAME]
             runs trials for the chief until it says stop (same recipe on every machine)

On one machine, `edgepipe run RECIPE --workers N` does both. Workers time candidates on their
own host, so use identical machines. The chief listens on loopback (127.0.0.1:8000) unless
given another --address, and then only with a shared token (--token-file or
$EDGEPIPE_NAS_TOKEN, never a command-line value): every call of a worker carries it, and the
chief refuses a call without it. The token authenticates; it does not encrypt (keep the search
on a network you trust not to listen in).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import click

ENV_IP, ENV_PORT, ENV_ID = "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"


def _env_address() -> str | None:
    if os.environ.get(ENV_IP) and os.environ.get(ENV_PORT):
        return f"{os.environ[ENV_IP]}:{os.environ[ENV_PORT]}"
    return None


def pick_stage(recipe, which: str | None) -> int:
    """Index of the recipe's nas stage named by `which` (name, folder, 1-based index)."""
    from pipeline.engine import stage_dir_name
    from pipeline.errors import UserError, did_you_mean

    found = [i for i, s in enumerate(recipe.stages) if s.name == "nas"]
    dirs = {stage_dir_name(i, "nas"): i for i in found}
    if not found:
        raise UserError("this recipe has no nas stage; add `- nas: {...}` to its stages")
    if which is None:
        if len(found) > 1:
            raise UserError(f"this recipe has {len(found)} nas stages; pick one with --stage "
                            f"({', '.join(dirs)})")
        return found[0]
    if which in dirs:
        return dirs[which]
    if which.isdigit() and int(which) - 1 in found:
        return int(which) - 1
    if which == "nas" and len(found) == 1:
        return found[0]
    raise UserError(f"--stage: no nas stage {which!r}{did_you_mean(which, list(dirs))}; "
                    f"nas stages: {', '.join(dirs)}")


@click.command()
@click.argument("recipe_file", metavar="RECIPE", type=click.Path(dir_okay=False))
@click.option("--chief", "role", flag_value="chief", help="serve the search (and run the recipe)")
@click.option("--worker", "role", flag_value="worker", help="run trials for a chief")
@click.option("--address", metavar="HOST:PORT",
              help="chief: where to listen (default 127.0.0.1:8000, this machine only; any "
                   "other address needs a token); worker: the chief (default from "
                   "KERASTUNER_ORACLE_IP/PORT)")
@click.option("--token-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="the search's shared secret (first line; default $EDGEPIPE_NAS_TOKEN): the "
                   "chief refuses workers without it")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
              help="chief: also start N workers on this host")
@click.option("--id", "tuner_id", help="worker name (default KERASTUNER_TUNER_ID or "
              "tuner-HOST-PID); a restarted worker with the same name takes back its trial")
@click.option("--out", type=click.Path(file_okay=False), help="run folder (default runs/<name>)")
@click.option("--stage", "which", metavar="STAGE", help="the nas stage (name, folder or index) "
              "when the recipe has several")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="worker: seconds the chief may stay unreachable before the worker gives "
                   "up; chief: a worker silent for this + 3 heartbeats (30 s) loses its trial "
                   "to the others")
@click.option("--threads", type=click.IntRange(1), help="worker: TensorFlow threads")
def nas(recipe_file: str, role: str | None, address: str | None, token_file: str | None,
        workers: int, tuner_id: str | None, out: str | None, which: str | None, timeout: float,
        threads: int | None) -> None:
    """Distributed architecture search: one chief and any number of workers.

    \b
      chief:  edgepipe nas RECIPE --chief --address 0.0.0.0:8000 --token-file T [--workers N]
      worker: edgepipe nas RECIPE --worker --address CHIEF_HOST:8000 --token-file T [--id NAME]

    Every machine runs the same recipe; the chief runs the whole recipe, its nas stage
    serving the search. On one machine: edgepipe run RECIPE --workers N.
    """
    from pipeline import recipe as recipes

    if role is None:
        raise click.UsageError("give --chief or --worker (one machine: edgepipe run RECIPE "
                               "--workers N)")
    from pipeline.search.distribute import read_token

    r = recipes.load(recipe_file)
    index = pick_stage(r, which)
    run_dir = Path(out or Path("runs") / r.name)
    token = read_token(token_file)
    if role == "chief":
        _chief(r, recipe_file, run_dir, address or _env_address() or "127.0.0.1:8000", workers,
               timeout, token)
    else:
        if workers:
            raise click.UsageError("--workers is for the chief")
        addr = address or _env_address()
        if not addr:
            raise click.UsageError("a worker needs the chief's --address HOST:PORT (or "
                                   "KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT)")
        name = tuner_id or os.environ.get(ENV_ID) or f"tuner-{socket.gethostname()}-{os.getpid()}"
        if "chief" in name:
            raise click.BadParameter("a worker's name must not contain 'chief' (keras-tuner "
                                     "reserves it)", param_hint="--id")
        _worker(r, index, run_dir, addr, name, timeout, threads, token)


def _chief(r, recipe_file: str, run_dir: Path, address: str, workers: int, timeout: float,
           token: str | None):
    from pipeline import engine
    from pipeline.search.distribute import TOKEN_ENV, is_loopback, parse_address
    from pipeline.stages.nas import Distribution
    from pipeline.yamlfile import read_text

    host, port = parse_address(address)
    if token is None and not is_loopback(host):  # before the run starts, not at its nas stage
        raise click.UsageError(f"--address {address} is beyond this machine: give the search a "
                               f"shared token with --token-file FILE or ${TOKEN_ENV}")
    records = engine.run(r, run_dir, recipe_text=read_text(recipe_file, "recipe"),
                         options={"nas": Distribution(workers=workers, bind=address,
                                                      timeout=timeout, token=token)})
    click.echo(f"done: {len(records)} stages in {run_dir}")


def _worker(r, index: int, run_dir: Path, address: str, name: str, timeout: float,
            threads: int | None, token: str | None):
    from pipeline.search.distribute import parse_address

    parse_address(address)
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from pipeline.search import run_worker
    from pipeline.data import load_dataset
    from pipeline.stages.nas import check_data, project_dir, search_spec

    cfg = r.stages[index].config
    ds = load_dataset(r.dataset, seed=r.seed)
    check_data(cfg, ds.input_shape)
    spec = search_spec(r, cfg)
    project = project_dir(run_dir, spec.key)
    project.mkdir(parents=True, exist_ok=True)
    ran = run_worker(spec, ds, project, address, name, timeout=timeout, token=token)
    click.echo(f"worker {name}: ran {len(ran)} trials ({', '.join(ran) or 'none'}); the chief "
               f"said stop")


commands = [nas]
