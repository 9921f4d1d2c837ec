"""`edgepipe devices list|check|setup` and `edgepipe deploy`: edge boards over SSH.

`edgepipe profile MODEL --device NAME | --tag TAG` lives in `pipeline/cli/profile.py` and uses the
options and helpers defined here.
"""

from __future__ import annotations

import time

import click

from pipeline.artifacts import json_text

devices_option = click.option(
    "--devices", "devices_path", type=click.Path(dir_okay=False), default=None,
    help="device inventory (default: $XDG_CONFIG_HOME/edgepipe/devices.yaml)")
accept_new_option = click.option(
    "--accept-new", is_flag=True,
    help="trust a board's host key on first contact (a changed key is still refused)")
timeout_option = click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
    help="seconds allowed for each remote command")
deadline_option = click.option(
    "--deadline", type=click.FloatRange(min=0, min_open=True), default=None,
    help="seconds allowed for the whole job, all boards")
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON")


def select_devices(devices_path, names=(), tags=(), *, all_if_none: bool = False):
    """Devices named or tagged on the command line, in order, each once."""
    from pipeline.devices import load_inventory
    from pipeline.errors import UserError

    inv = load_inventory(devices_path)
    targets = [*names, *(f"tag:{t}" for t in tags)]
    if not targets:
        if all_if_none:
            return inv.resolve(inv.names())
        raise UserError("Expected --device NAME or --tag TAG")
    return inv.resolve(targets)


def _say(msg: str) -> None:
    click.echo(msg, err=True)


def _ssh(device, accept_new: bool, timeout: float, deadline=None):
    from pipeline.devices.transport import SSH, Deadline

    return SSH(device, accept_new=accept_new, command_timeout=timeout,
               deadline=deadline or Deadline(None))


@click.group("devices")
def devices() -> None:
    """Edge boards reachable over SSH (the inventory is devices.yaml)."""


@devices.command("list")
@devices_option
@json_option
def list_cmd(devices_path, as_json) -> None:
    """Show the boards of the inventory."""
    from pipeline.devices import load_inventory

    inv = load_inventory(devices_path)
    rows = [inv.devices[n].model_dump(mode="json") for n in inv.names()]
    if as_json:
        click.echo(json_text({"inventory": str(inv.path), "devices": rows}, indent=2))
        return
    click.echo(f"{len(rows)} device(s) in {inv.path}")
    for d in rows:
        where = d["host"] + (f":{d['port']}" if d["port"] else "")
        who = f"{d['user']}@" if d["user"] else ""
        click.echo(f"  {d['name']:<14} {who}{where:<24} {d['runtime']:<15} threads {d['threads']}"
                   f"  workdir {d['workdir']}" + (f"  tags {','.join(d['tags'])}" if d["tags"] else ""))


@devices.command("check")
@click.argument("names", nargs=-1)
@click.option("--tag", "tags", multiple=True, help="every board with this tag (repeatable)")
@devices_option
@accept_new_option
@timeout_option
@json_option
def check_cmd(names, tags, devices_path, accept_new, timeout, as_json) -> None:
    """Reach boards and report Python, runtime, CPU, cores, governor, MHz, temperature,
    throttling (all boards when no NAME or --tag is given)."""
    from pipeline.devices import remote
    from pipeline.devices.fleet import run_on_devices

    devs = select_devices(devices_path, names, tags, all_if_none=True)

    def one(d):
        with _ssh(d, accept_new, timeout) as ssh:
            return remote.check(ssh)

    res = run_on_devices(devs, one)
    if as_json:
        click.echo(json_text({"devices": res.results, "errors": res.errors}, indent=2))
    else:
        for d in devs:
            if d.name in res.errors:
                click.echo(f"{d.name:<14} FAILED  {res.errors[d.name]}")
                continue
            c = res.results[d.name]
            rt = c["runtime"] or {}
            thr = c["throttling"]
            throttled = "n/a" if thr is None else ("yes" if thr.get("any_now") else "no")
            click.echo(
                f"{d.name:<14} ok  python {c['python']}  runtime "
                f"{(rt.get('backend') or 'none')} {rt.get('version') or ''}".rstrip()
                + f"  {'set up' if c['setup'] else 'NOT SET UP'}\n"
                f"{'':<18}cpu {c['cpu_model'] or 'n/a'} x{c['cores']}  governor "
                f"{c['governor'] or 'n/a'}  {_num(c['cur_mhz'], 'MHz', 0)}  "
                f"{_num(c['temperature_c'], 'C', 1)}  throttled {throttled}")
            if c.get("emulated"):
                click.echo(f"{'':<18}EMULATED: {'; '.join(c['emulated']['evidence'])}; its "
                           "timings are the emulator's, not a board's")
    res.raise_for_errors()


def _num(v, unit: str, nd: int) -> str:
    return "n/a" if v is None else f"{v:.{nd}f} {unit}"


@devices.command("setup")
@click.argument("names", nargs=-1, required=True)
@devices_option
@accept_new_option
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=1800.0,
              show_default=True, help="seconds allowed for each remote command (pip is slow)")
@click.option("--reinstall", is_flag=True, help="run pip even when the runtime is installed")
@json_option
def setup_cmd(names, devices_path, accept_new, timeout, reinstall, as_json) -> None:
    """Make a venv in the board's workdir, install its runtime and copy edge_runner there."""
    from pipeline.devices.fleet import run_on_devices
    from pipeline.devices.setup import setup_device

    devs = select_devices(devices_path, names)

    def one(d):
        with _ssh(d, accept_new, timeout) as ssh:
            return setup_device(ssh, reinstall=reinstall, log=_say)

    res = run_on_devices(devs, one)
    if as_json:
        click.echo(json_text({"devices": res.results, "errors": res.errors}, indent=2))
    else:
        for name, r in res.results.items():
            rt = r["info"].get("runtime") or {}
            click.echo(f"{name}: ready — {rt.get('backend')} {rt.get('version')}, python "
                       f"{r['python']}, edge_runner {r['edge_runner_sha256'][:12]}")
    res.raise_for_errors()


@click.command("deploy")
@click.argument("model_path", metavar="MODEL.tflite", type=click.Path(exists=True, dir_okay=False))
@click.option("--device", "names", multiple=True, help="board name (repeatable)")
@click.option("--tag", "tags", multiple=True, help="every board with this tag (repeatable)")
@devices_option
@accept_new_option
@timeout_option
@json_option
def deploy_cmd(model_path, names, tags, devices_path, accept_new, timeout, as_json) -> None:
    """Copy a .tflite to boards by content hash (skipped where it is already)."""
    from pipeline.devices.deploy import deploy_model
    from pipeline.devices.fleet import run_on_devices
    from pipeline.devices.setup import ensure_ready

    devs = select_devices(devices_path, names, tags)

    def one(d):
        with _ssh(d, accept_new, timeout) as ssh:
            ensure_ready(ssh, _say)
            return deploy_model(ssh, model_path)

    res = run_on_devices(devs, one)
    if as_json:
        click.echo(json_text({"devices": res.results, "errors": res.errors}, indent=2))
    else:
        for name, r in res.results.items():
            state = "copied" if r["copied"] else "already there"
            click.echo(f"{name}: {r['remote_path']} ({state}, {r['seconds']:.2f} s)")
    res.raise_for_errors()


def profile_on_devices(model_path, names, tags, devices_path, *, golden, threads, warmup,
                       min_runs, min_seconds, accept_new, timeout, deadline) -> None:
    """`edgepipe profile MODEL --device/--tag`: JSON on stdout, progress on stderr."""
    from pathlib import Path

    from pipeline.devices.fleet import ModelJob, Options, profile_fleet

    devs = select_devices(devices_path, names, tags)
    opts = Options(threads=threads, warmup=warmup, min_runs=min_runs, min_seconds=min_seconds,
                   accept_new=accept_new, command_timeout=timeout, deadline=deadline)
    job = ModelJob(Path(model_path), golden=Path(golden) if golden else None)
    t0 = time.monotonic()
    res = profile_fleet(devs, [job], opts, say=_say)
    out = {"model": str(model_path), "devices": {}, "errors": res.errors,
           "seconds": round(time.monotonic() - t0, 4)}
    for name, r in res.results.items():
        out["devices"][name] = r["models"][str(job.path)]
    if out["devices"]:
        out["sha256"] = next(iter(out["devices"].values()))["sha256"]
    click.echo(json_text(out, indent=2))
    res.raise_for_errors()


from pipeline.cli.emulate import emulate  # noqa: E402  (a subgroup: `devices emulate`)

devices.add_command(emulate)
commands = [devices, deploy_cmd]
