"""`edgepipe devices emulate build|start|stop|status`: an emulated Raspberry Pi on this machine."""

from __future__ import annotations

import click

#: Every CPU model a board can emulate (see pipeline/devices/emulate.py's ARCHES).
CPUS = ("cortex-a72", "cortex-a76", "cortex-a53", "cortex-a7", "cortex-a15")


def _say(msg: str) -> None:
    click.echo(msg, err=True)


@click.group("emulate")
def emulate() -> None:
    """A Raspberry Pi-like board under QEMU (Debian bookworm, its own sshd on 127.0.0.1):
    rehearse setup, deploy, verify and profile without a board. Needs root; the root filesystem
    is built once into ~/.cache/edgepipe/emulated-pi. Its timings mean nothing."""


@emulate.command("build")
@click.option("--arch", type=click.Choice(["arm64", "armhf"]), default="arm64", show_default=True)
@click.option("--mirror", default=None, help="Debian mirror (default: deb.debian.org)")
def build_cmd(arch, mirror) -> None:
    """Build (once) the Debian bookworm root the boards of ARCH run in; prints its folder."""
    from pipeline.devices import emulate as emu

    click.echo(str(emu.build(arch, mirror=mirror or emu.MIRROR, say=_say)))


@emulate.command("start")
@click.argument("name", required=False)
@click.option("--cpu", type=click.Choice(CPUS), default="cortex-a72", show_default=True,
              help="QEMU CPU model: cortex-a72 (Pi 4), cortex-a76 (Pi 5), cortex-a53 (Pi 3), "
              "cortex-a7/a15 (32-bit armhf)")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="loopback port (default: the board's previous one, else a free one)")
@click.option("--mirror", default=None, help="Debian mirror for the first build")
def start_cmd(name, cpu, port, mirror) -> None:
    """Start board NAME (default emu-pi4 / emu-pi5 / ... by --cpu) and print its devices.yaml
    entry. Builds the root first when needed; a running board is left as it is."""
    from pipeline.devices import emulate as emu

    b = emu.start(name, cpu=cpu, port=port, mirror=mirror or emu.MIRROR, say=_say)
    _say(f"devices.yaml entry (also in {b.client / 'devices.yaml'}):")
    click.echo(b.devices_yaml(), nl=False)


@emulate.command("stop")
@click.argument("names", nargs=-1)
def stop_cmd(names) -> None:
    """Stop boards NAMES (default: every running one). Stopping a stopped board is harmless."""
    from pipeline.devices import emulate as emu

    targets = names or [b.name for b in emu.boards() if b.pid() is not None]
    if not targets:
        _say("no emulated board is running; nothing to stop")
    for n in targets:
        emu.stop(n, say=_say)


@emulate.command("status")
def status_cmd() -> None:
    """The emulated boards made here: running or not, port, CPU model."""
    from pipeline.devices import emulate as emu

    bs = emu.boards()
    if not bs:
        click.echo(f"no emulated board yet in {emu.cache_dir()}; start one: edgepipe devices "
                   "emulate start")
    for b in bs:
        pid = b.pid()
        click.echo(f"{b.name:<14} {'running' if pid else 'stopped':<8} 127.0.0.1:{b.port:<6} "
                   f"{b.cpu:<11} {emu.LOOKS_LIKE[b.cpu]}" + (f"  pid {pid}" if pid else ""))
