"""`edgepipe`: thin click commands over the public API. Importing this module stays light."""

from __future__ import annotations

import importlib
import logging
import sys

import click

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before anything imports TensorFlow)

#: One line per command module; each defines `commands` (a list of click commands/groups).
COMMAND_MODULES = (
    "pipeline.cli.run",
    "pipeline.cli.export",
    "pipeline.cli.profile",
    "pipeline.cli.devices",
    "pipeline.cli.distill",
    "pipeline.cli.prune",
    "pipeline.cli.quantize",
    "pipeline.cli.nas",
)


class Main(click.Group):
    """Turns user errors into one line on stderr and exit code 2 (`--verbose`: traceback first)."""

    def invoke(self, ctx: click.Context):
        from edge_runner.errors import RunnerError
        from pipeline.errors import UserError

        try:
            return super().invoke(ctx)
        except (UserError, RunnerError) as e:
            if ctx.find_root().params.get("verbose"):  # the traceback too, same exit code
                import traceback

                click.echo(traceback.format_exc().rstrip(), err=True)
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="show tracebacks and library logs")
@click.version_option(pipeline.__version__, prog_name="edgepipe")
def main(verbose: bool) -> None:
    """Shrink Keras models onto edge boards: train, prune, quantize, distill, search, export,
    verify and profile — from declarative recipes or ad hoc."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    if not verbose:
        for noisy in ("tensorflow", "absl", "h5py", "matplotlib"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


for _name in COMMAND_MODULES:
    for _cmd in importlib.import_module(_name).commands:
        main.add_command(_cmd)
