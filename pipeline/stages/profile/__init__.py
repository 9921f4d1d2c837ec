"""`profile`: time every .tflite of the run with edge-runner, at each thread count."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, PositiveFloat, field_validator

from edge_runner.sysinfo import emulated_result
from pipeline import gates
from pipeline.stages.base import Stage, StageConfig, StageResult
from pipeline.stages.profile.targets import check_target, limit_for, unknown_limit_key


class ProfileConfig(StageConfig):
    targets: list[str] = Field(["host"], min_length=1, description="where to time: host, a "
                               "device of the recipe's devices.yaml, tag:<tag> (boards over SSH)")
    threads: list[Annotated[int, Field(ge=1)]] = Field(
        [1], min_length=1, description="thread counts; the first is the one gates and the "
        "report's main column use")
    warmup: int = Field(10, ge=0, description="untimed runs first")
    min_runs: int = Field(50, ge=1)
    min_seconds: float = Field(1.0, ge=0)
    max_latency_ms: PositiveFloat | dict[str, PositiveFloat] | None = Field(
        None, description="overrides gates.max_latency_ms; a number for every target or "
        "{target: ms} per target (host, a device, tag:<tag>)")
    # Board targets (pipeline/devices): outputs are verified on the board before it is timed.
    verify: bool = Field(True, description="boards: check outputs against the host's on real inputs")
    verify_samples: int = Field(16, ge=1, description="boards: test inputs used to verify")
    allow_failed_targets: bool = Field(False, description="boards: an unreachable board is "
                                       "reported instead of failing the stage (wrong answers "
                                       "always fail)")
    accept_new: bool = Field(False, description="boards: trust unknown host keys on first use")
    timeout_s: float = Field(600, gt=0, description="boards: seconds for each remote command")
    deadline_s: float | None = Field(None, gt=0, description="boards: seconds for all of them")

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        return [check_target(t) for t in v]

    @field_validator("max_latency_ms")
    @classmethod
    def _limit_keys(cls, v, info):
        """Keys must be targets; one that may be a board of a tag target waits for the inventory
        (checked when the stage starts)."""
        targets = info.data.get("targets")
        why = unknown_limit_key(v, targets) if isinstance(v, dict) and targets else None
        if why:
            raise ValueError(why)
        return v


def latency_key(target: str, threads: int, first: bool) -> str:
    """`host` for the first thread count, `host@2t` for the others."""
    return target if first else f"{target}@{threads}t"


def summarize(bench: dict) -> dict:
    lat = bench["latency_ms"]
    return {**{k: lat[k] for k in ("p50", "p90", "p99", "mean", "std", "min", "cv")},
            "robust_cv": lat.get("robust_cv"),  # None from a board's older edge-runner
            "threads": bench["threads"], "runs": bench["runs"], "init_ms": bench["init_ms"],
            "first_inference_ms": bench["first_inference_ms"], "backend": bench["backend"],
            "emulated": emulated_result(bench), "warnings": bench.get("warnings", [])}


class Profile(Stage):
    name = "profile"
    Config = ProfileConfig
    help = "time every .tflite of the run with edge-runner (host) at each thread count"
    needs = {"tflite": ".tflite to time"}

    @classmethod
    def input_paths(cls, cfg: ProfileConfig, recipe) -> list[str]:
        """The device inventory, when boards are targets: editing a board re-profiles."""
        if any(t != "host" for t in cfg.targets):
            from pipeline.devices.inventory import default_path

            return [str(recipe.devices or default_path())]
        return []

    def run(self, ctx, cfg: ProfileConfig) -> StageResult:
        from edge_runner.bench import benchmark

        from pipeline.stages.profile.boards import board_devices, profile_boards

        devices = board_devices(ctx, cfg)  # unknown boards and limit keys fail before any timing
        latency: dict[str, dict] = {}
        breaches: list[str] = []

        def record(target: str, tags, path: str, t: int, first: bool, s: dict,
                   note: str = "") -> None:
            """One measurement, host's or a board's: the table, the log, the gate (on the
            first thread count)."""
            latency.setdefault(path, {})[latency_key(target, t, first)] = s
            if s["emulated"]:
                note += "  (EMULATED CPU: not a board's latency)"
            ctx.log("[profile] %-40s %s %dt  p50 %.3f ms  p90 %.3f ms  cv %.3f%s", path, target, t,
                    s["p50"], s["p90"], s["cv"], note)
            for w in s["warnings"]:
                ctx.log("[profile] %-40s %s %dt  warning: %s", path, target, t, w)
            if first:
                limit = limit_for(cfg.max_latency_ms, target, tags,
                                  fallback=ctx.recipe.gates.max_latency_ms)
                if s["emulated"] and limit is not None:
                    ctx.log("[profile] %-40s %s: emulated CPU, max_latency_ms %g not applied",
                            path, target, limit)
                breaches.extend(gates.check_latency(limit, f"{path} on {target}", s["p50"],
                                                    s["emulated"]))

        for art in ctx.tflite_artifacts() if "host" in cfg.targets else []:
            for i, t in enumerate(cfg.threads):
                b = benchmark(ctx.path(art), threads=t, warmup=cfg.warmup, min_runs=cfg.min_runs,
                              min_seconds=cfg.min_seconds)
                record("host", (), art.path, t, i == 0, summarize(b))
        rows, errors = profile_boards(ctx, cfg, devices)
        for d, path, t, r in rows:
            s = {**summarize(r["bench"]), "backend_version": r["bench"].get("backend_version"),
                 "sha256": r["sha256"]}
            if r.get("verify"):
                v = r["verify"]
                keys = ("passed", "max_abs_diff", "argmax_agreement", "tolerance")
                s["verify"] = {**{k: v.get(k) for k in (*keys, "mode", "n", "worst_output")},
                               "outputs": {name: {k: o.get(k) for k in keys}
                                           for name, o in (v.get("outputs") or {}).items()}}
            record(d.name, d.tags, path, t, t == cfg.threads[0], s,
                   "  verified" if s.get("verify") else "")
        gates.raise_breaches(breaches)
        return StageResult([], {"latency_ms": latency, **({"target_errors": errors} if errors else {})})
