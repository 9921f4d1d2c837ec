"""`profile`: time every .tflite of the run with edge-runner, at each thread count."""

from __future__ import annotations

from pydantic import Field, field_validator

from pipeline import gates
from pipeline.stages.base import Stage, StageConfig, StageResult


class ProfileConfig(StageConfig):
    targets: list[str] = Field(["host"], min_length=1, description="where to time: host")
    threads: list[int] = Field([1], min_length=1, description="thread counts; the first is the "
                               "one gates and the report's main column use")
    warmup: int = Field(10, ge=0, description="untimed runs first")
    min_runs: int = Field(50, ge=1)
    min_seconds: float = Field(1.0, ge=0)
    max_latency_ms: float | None = Field(None, gt=0, description="overrides gates.max_latency_ms")

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        for t in v:
            if t != "host":
                raise ValueError(f"unknown target {t!r}; expected: host")
        return v


def latency_key(target: str, threads: int, first: bool) -> str:
    """`host` for the first thread count, `host@2t` for the others."""
    return target if first else f"{target}@{threads}t"


def summarize(bench: dict) -> dict:
    lat = bench["latency_ms"]
    return {**{k: lat[k] for k in ("p50", "p90", "p99", "mean", "std", "min", "cv")},
            "threads": bench["threads"], "runs": bench["runs"], "init_ms": bench["init_ms"],
            "first_inference_ms": bench["first_inference_ms"], "backend": bench["backend"]}


class Profile(Stage):
    name = "profile"
    Config = ProfileConfig
    help = "time every .tflite of the run with edge-runner (host) at each thread count"

    def run(self, ctx, cfg: ProfileConfig) -> StageResult:
        from edge_runner.bench import benchmark

        limit = cfg.max_latency_ms or ctx.recipe.gates.max_latency_ms
        latency: dict[str, dict] = {}
        breaches: list[str] = []
        for art in ctx.tflite_artifacts():
            for i, t in enumerate(cfg.threads):
                b = benchmark(ctx.path(art), threads=t, warmup=cfg.warmup, min_runs=cfg.min_runs,
                              min_seconds=cfg.min_seconds)
                s = summarize(b)
                latency.setdefault(art.path, {})[latency_key("host", t, i == 0)] = s
                ctx.log("[profile] %-40s host %dt  p50 %.3f ms  p90 %.3f ms  cv %.3f",
                        art.path, t, s["p50"], s["p90"], s["cv"])
                if i == 0:
                    breaches += gates.check_latency(limit, f"{art.path} on host", s["p50"])
        gates.raise_breaches(breaches)
        return StageResult([], {"latency_ms": latency})
