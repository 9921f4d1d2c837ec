"""Timing .tflite files with edge-runner on a target: this host, or a board over SSH.

`open_target(...)` gives a `HostTarget` or a `BoardTarget` with the same two members:
`identity` (what a latency table is keyed by) and `time(paths)` (latency per file, in ms).
A board gets its files as one batch: one listing, one tar through ssh's stdin, one
`edge-runner bench F1 F2 ...` — not a round trip per file.

Timings on a shared machine are noisy: `rounds` passes over all files, interleaved, and each
file's figure is the smallest of its per-pass medians.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from pipeline.errors import UserError


@dataclass
class Timing:
    """How each file is timed (edge-runner bench settings) and how many interleaved passes."""

    threads: int = 1
    warmup: int = 5
    min_runs: int = 20
    min_seconds: float = 0.2
    rounds: int = 2


def _summary(passes: list[dict]) -> dict:
    """Per-pass edge-runner results of one file -> {ms, min_ms, runs}."""
    return {"ms": min(b["latency_ms"]["p50"] for b in passes),
            "min_ms": min(b["latency_ms"]["min"] for b in passes),
            "runs": sum(b["runs"] for b in passes)}


class HostTarget:
    name = "host"

    def __init__(self, timing: Timing, mode: str):
        from edge_runner import backends, sysinfo

        impl = backends.resolve(None)
        info = sysinfo.collect()
        self.timing = timing
        self.identity = {"target": "host", "cpu": info["cpu_model"], "machine": info["machine"],
                         "runtime": impl.name, "runtime_version": impl.version,
                         "threads": timing.threads, "mode": mode}

    def time(self, paths: list[Path]) -> list[dict]:
        from edge_runner.bench import benchmark

        t = self.timing
        passes: list[list[dict]] = [[] for _ in paths]
        for _ in range(t.rounds):
            for i, p in enumerate(paths):
                passes[i].append(benchmark(p, threads=t.threads, warmup=t.warmup,
                                           min_runs=t.min_runs, min_seconds=t.min_seconds))
        return [_summary(ps) for ps in passes]


class BoardTarget:
    def __init__(self, ssh, timing: Timing, mode: str, say: Callable[[str], None]):
        from pipeline.devices import remote
        from pipeline.devices.setup import ensure_ready

        self.ssh, self.timing, self.name = ssh, timing, ssh.device.name
        ensure_ready(ssh, say)
        info = remote.info(ssh)
        runtime = info.get("runtime") or {}
        self.identity = {"target": self.name, "cpu": info.get("cpu_model"),
                         "machine": info.get("machine"), "runtime": runtime.get("backend"),
                         "runtime_version": runtime.get("version"), "threads": timing.threads,
                         "mode": mode}

    def time(self, paths: list[Path]) -> list[dict]:
        from pipeline.devices import remote
        from pipeline.devices.deploy import deploy_batch

        t = self.timing
        deployed = deploy_batch(self.ssh, paths)
        names = [d["remote_path"] for d in deployed]
        passes: list[list[dict]] = [[] for _ in paths]
        for _ in range(t.rounds):
            for i, b in enumerate(remote.bench_many(self.ssh, names, threads=t.threads,
                                                    warmup=t.warmup, min_runs=t.min_runs,
                                                    min_seconds=t.min_seconds)):
                if b.get("model", {}).get("sha256") not in (None, deployed[i]["sha256"]):
                    raise UserError(f"Device {self.ssh.device.label}: benchmarked file "
                                    f"{names[i]} is not the one deployed")
                passes[i].append(b)
        return [_summary(ps) for ps in passes]


def board_devices(target: str, devices_path: str | None) -> list:
    """The boards a target names (a device or tag:<tag>), from the inventory."""
    from pipeline.devices import load_inventory

    return load_inventory(devices_path).resolve([target])


@contextlib.contextmanager
def open_target(target: str, timing: Timing, mode: str = "fp32", *, device=None,
                accept_new: bool = False, timeout: float = 600.0,
                say: Callable[[str], None] = lambda m: None) -> Iterator:
    """A target ready to time files: `host`, or one board (`device`, from `board_devices`)."""
    if target == "host":
        yield HostTarget(timing, mode)
        return
    from pipeline.devices.transport import SSH

    with SSH(device, accept_new=accept_new, command_timeout=timeout) as ssh:
        yield BoardTarget(ssh, timing, mode, say)
