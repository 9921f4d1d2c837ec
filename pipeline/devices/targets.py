"""Board targets of the `profile` stage: `targets: [host, pi4, tag:lab]`.

For every board (in parallel, one thread and one SSH connection each): deploy each .tflite of the
run by hash, check its outputs against golden outputs the host computed from the same file on real
inputs of the recipe's dataset, and time it at each thread count. Latency lands in the stage's
`latency_ms[<artifact path>][<device>]` (`<device>@<n>t` for the extra thread counts), which the
report shows as one column per device.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from pipeline.errors import UserError, did_you_mean

_TARGET = re.compile(r"^(host|tag:[A-Za-z0-9][A-Za-z0-9_.-]*|[A-Za-z0-9][A-Za-z0-9_.-]*)$")


def check_target(t: str) -> str:
    if not _TARGET.match(t):
        raise ValueError(f"Expected a target: host, a device name or tag:<tag>. Received: {t!r}")
    return t


def limit_for(limits: float | dict[str, float] | None, name: str, tags: tuple[str, ...] = (),
              fallback: float | None = None) -> float | None:
    """The max_latency_ms that applies to a target: its own, else one of its tags', else a number
    that applies to all, else the recipe's gate."""
    if isinstance(limits, dict):
        if name in limits:
            return limits[name]
        found = [limits[f"tag:{t}"] for t in tags if f"tag:{t}" in limits]
        return min(found) if found else fallback
    return limits if limits is not None else fallback


def unknown_limit_key(limits: dict[str, float], targets: list[str],
                      names: list[str] | None = None) -> str | None:
    """Why a key of a per-target max_latency_ms names no target (None: every key does).
    `names`: the boards the targets resolve to (from the inventory); without them a plain name
    may still be a board of a `tag:` target, so it passes until the inventory is read."""
    allowed = [*targets, *(names or [])]
    tagged = names is None and any(t.startswith("tag:") for t in targets)
    for k in limits:
        if k not in allowed and not (tagged and k != "host" and not k.startswith("tag:")):
            return (f"{k!r} is not one of the targets{did_you_mean(k, allowed)}; targets: "
                    f"{', '.join(allowed)}")
    return None


def check_limit_keys(limits: dict[str, float], targets: list[str], names: list[str]) -> None:
    why = unknown_limit_key(limits, targets, names)
    if why:
        raise UserError(f"profile.max_latency_ms: {why}")


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


def profile_devices(ctx, cfg, summarize: Callable[[dict], dict], latency_key: Callable,
                    limits_fallback: float | None, devices: list | None = None
                    ) -> tuple[dict, list[str], dict[str, str]]:
    """Profile the run's .tflite files on the board targets of `cfg` (`devices`: from
    `board_devices`, resolved here when not given).

    Returns (latency {artifact path: {key: summary}}, gate breaches, errors {device: message}).
    Wrong answers on a board always raise; other board failures raise unless
    `cfg.allow_failed_targets` (then they are returned in `errors`).
    """
    from pipeline.devices.fleet import ModelJob, Options, VerificationError, profile_model, run_on_devices
    from pipeline.devices.golden import host_golden
    from pipeline.devices.setup import ensure_ready
    from pipeline.devices.transport import SSH, Deadline

    if devices is None:
        devices = board_devices(ctx, cfg)
    if not devices:
        return {}, [], {}

    arts = ctx.tflite_artifacts()
    goldens: dict[str, Path | None] = {a.path: None for a in arts}
    if cfg.verify and arts:
        x = ctx.dataset().x_test[: cfg.verify_samples]
        gdir = ctx.out_dir / "golden"
        gdir.mkdir(parents=True, exist_ok=True)
        for a in arts:
            goldens[a.path] = host_golden(ctx.path(a), x, gdir / (a.path.replace("/", "__") + ".npz"),
                                          _mode(a.quantization))
    deadline = Deadline(cfg.deadline_s)

    def on_board(d) -> dict:
        out: dict[tuple[str, int], dict] = {}
        with SSH(d, accept_new=cfg.accept_new, command_timeout=cfg.timeout_s, deadline=deadline) as ssh:
            ensure_ready(ssh, lambda m: ctx.log("%s", m))
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

    latency: dict[str, dict] = {}
    breaches: list[str] = []
    for d in devices:
        for (path, t), r in (res.results.get(d.name) or {}).items():
            first = t == cfg.threads[0]
            s = {**summarize(r["bench"]), "backend_version": r["bench"].get("backend_version"),
                 "sha256": r["sha256"]}
            if r.get("verify"):
                v = r["verify"]
                s["verify"] = {k: v.get(k) for k in ("passed", "max_abs_diff", "argmax_agreement",
                                                     "tolerance", "mode", "n")}
            latency.setdefault(path, {})[latency_key(d.name, t, first)] = s
            ctx.log("[profile] %-40s %s %dt  p50 %.3f ms  p90 %.3f ms%s", path, d.name, t,
                    s["p50"], s["p90"], "  verified" if s.get("verify") else "")
            for w in s["warnings"]:
                ctx.log("[profile] %-40s %s %dt  warning: %s", path, d.name, t, w)
            if first:
                from pipeline import gates

                limit = limit_for(cfg.max_latency_ms, d.name, d.tags, limits_fallback)
                breaches += gates.check_latency(limit, f"{path} on {d.name}", s["p50"])
    for name, msg in res.errors.items():
        ctx.log("[profile] %s: %s", name, msg)
    return latency, breaches, dict(res.errors)


__all__ = ["board_devices", "check_target", "limit_for", "profile_devices"]
