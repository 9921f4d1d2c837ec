"""The board half of the `profile` stage: `targets: [pi4, tag:lab]` over SSH.

For every board (in parallel, one thread and one SSH connection each): deploy each .tflite of the
run by hash, check its outputs against golden outputs the host computed from the same file on real
inputs of the recipe's dataset, and time it at each thread count. The stage summarizes, logs and
gates these measurements the same way as the host's (see `Profile.run`).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.stages.profile.targets import check_limit_keys


def board_devices(ctx, cfg) -> list:
    """The boards `cfg.targets` name, from the recipe's inventory, with the keys of a per-target
    `max_latency_ms` checked against them: call before any timing so a typo fails first."""
    wanted = [t for t in cfg.targets if t != "host"]
    if not wanted:
        return []
    from pipeline.devices import load_inventory

    devices = load_inventory(ctx.recipe.devices).resolve(wanted)
    if isinstance(cfg.max_latency_ms, dict):
        check_limit_keys(cfg.max_latency_ms, cfg.targets, [d.name for d in devices])
    return devices


def _mode(quantization: str | None) -> str | None:
    """The golden's tolerance mode, when edge-runner knows the artifact's quantization."""
    if not quantization:
        return None
    from edge_runner.errors import RunnerError
    from edge_runner.verify import normalize_mode

    try:
        return normalize_mode(quantization)
    except RunnerError:
        return None


def _goldens(ctx, cfg, arts) -> dict[str, Path | None]:
    """Golden outputs the host computes from each .tflite on `verify_samples` test inputs."""
    from pipeline.devices.golden import host_golden

    goldens: dict[str, Path | None] = {a.path: None for a in arts}
    if cfg.verify and arts:
        x = ctx.dataset().x_test
        gdir = ctx.out_dir / "golden"
        gdir.mkdir(parents=True, exist_ok=True)
        for a in arts:
            goldens[a.path] = host_golden(ctx.path(a), x, gdir / (a.path.replace("/", "__") + ".npz"),
                                          _mode(a.quantization), samples=cfg.verify_samples)
    return goldens


def profile_boards(ctx, cfg, devices: list) -> tuple[list[tuple], dict[str, str]]:
    """Run the run's .tflite files on `devices` (from `board_devices`).

    Returns ([(device, artifact path, threads, edge-runner result)], errors {device: message}),
    devices in the given order. Wrong answers on a board always raise; other board failures
    raise unless `cfg.allow_failed_targets` (then they are returned in `errors`).
    """
    from pipeline.devices.fleet import (ModelJob, Options, VerificationError, profile_model,
                                        ready_board, run_on_devices)
    from pipeline.devices.transport import Deadline

    if not devices:
        return [], {}
    arts = ctx.tflite_artifacts()
    goldens = _goldens(ctx, cfg, arts)
    deadline = Deadline(cfg.deadline_s)

    def on_board(d) -> dict:
        out: dict[tuple[str, int], dict] = {}
        with ready_board(d, accept_new=cfg.accept_new, command_timeout=cfg.timeout_s,
                         deadline=deadline, say=lambda m: ctx.log("%s", m)) as ssh:
            for a in arts:
                for i, t in enumerate(cfg.threads):
                    job = ModelJob(ctx.path(a), golden=goldens[a.path] if i == 0 else None,
                                   mode=_mode(a.quantization))
                    opts = Options(threads=t, warmup=cfg.warmup, min_runs=cfg.min_runs,
                                   min_seconds=cfg.min_seconds)
                    out[(a.path, t)] = profile_model(ssh, job, opts)
        return out

    res = run_on_devices(devices, on_board)
    wrong = [e for e in res.exceptions.values() if isinstance(e, VerificationError)]
    if wrong:
        raise wrong[0]
    if res.errors and not cfg.allow_failed_targets:
        res.raise_for_errors()
    rows = [(d, path, t, r) for d in devices
            for (path, t), r in (res.results.get(d.name) or {}).items()]
    for name, msg in res.errors.items():
        ctx.log("[profile] %s: %s", name, msg)
    return rows, dict(res.errors)
