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
    "pipeline.cli.convert",
    "pipeline.cli.profile",
    "pipeline.cli.golden",
    "pipeline.cli.devices",
    "pipeline.cli.distill",
    "pipeline.cli.prune",
    "pipeline.cli.quantize",
    "pipeline.cli.nas",
    "pipeline.cli.latency",
    "pipeline.cli.adapt",
)


def _usage_error(e: click.UsageError):
    """Click's own errors (bad option value, unknown option or command) as one line, exit 2."""
    if isinstance(e, getattr(click.exceptions, "NoArgsIsHelpError", ())):
        raise e  # a bare group (`edgepipe devices`): click prints its help
    where = e.ctx.command_path if e.ctx else "edgepipe"
    click.echo(f"error: {' '.join(e.format_message().split())} (see {where} --help)", err=True)
    raise click.exceptions.Exit(2)


class Main(click.Group):
    """Turns user errors into one line on stderr and exit code 2 (`--verbose`: traceback first);
    so too click's usage errors, of every command (they are raised inside these two methods)."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as e:
            _usage_error(e)

    def invoke(self, ctx: click.Context):
        from edge_runner.errors import RunnerError
        from pipeline.errors import UserError, os_error_message

        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            _usage_error(e)
        except (UserError, RunnerError) as e:
            _one_line(ctx, str(e))
        except OSError as e:  # disk full, read-only, permission denied: one line; others raise
            message = os_error_message(e)
            if message is None:
                raise
            _one_line(ctx, message)


def _one_line(ctx: click.Context, message: str):
    if ctx.find_root().params.get("verbose"):  # the traceback too, same exit code
        import traceback

        click.echo(traceback.format_exc().rstrip(), err=True)
    click.echo(f"error: {message}", err=True)
    ctx.exit(2)


@click.group("edgepipe", cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
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
