"""Profile (and verify) models on several boards at once.

One thread and one SSH connection per board; on a board the models run one after another (two
benchmarks on one board would disturb each other). A board that fails — unreachable, killed
mid-run, wrong answers — is reported in `errors` and loses no other board's results.
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from edge_runner.sysinfo import emulated_result
from pipeline.devices import remote
from pipeline.devices.deploy import deploy_golden, deploy_model
from pipeline.devices.inventory import Device
from pipeline.devices.setup import ensure_ready
from pipeline.devices.transport import SSH, Deadline
from pipeline.errors import DeviceError, UserError

log = logging.getLogger("edgepipe")


class VerificationError(DeviceError):
    """The model ran on the board but its outputs differ from the golden ones."""

    def __init__(self, msg: str, result: dict):
        super().__init__(msg)
        self.result = result


@dataclass
class ModelJob:
    """One model to profile; with `golden`, its outputs are checked on the board first."""

    path: Path
    golden: Path | None = None
    atol: float | None = None
    mode: str | None = None


@dataclass
class Options:
    threads: int | None = None  # None: each device's own `threads`
    warmup: int = 10
    min_runs: int = 50
    min_seconds: float = 1.0
    max_seconds: float | None = None
    repeats: int = 1
    accept_new: bool = False
    command_timeout: float | None = 600.0
    deadline: float | None = None  # seconds for the whole job, all boards

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:  # 0 must not become the board's own
            raise UserError(f"Expected threads >= 1 (or None: each device's own). "
                            f"Received: threads={self.threads}")


@dataclass
class FleetResult:
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    #: The exception behind each error (not part of the JSON), e.g. to tell wrong answers apart.
    exceptions: dict[str, BaseException] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict:
        return {"results": self.results, "errors": self.errors}

    def raise_for_errors(self) -> None:
        if self.errors:
            n, total = len(self.errors), len(self.errors) + len(self.results)
            detail = "; ".join(self.errors.values())
            raise DeviceError(f"{n} of {total} device(s) failed: {detail}")


def run_on_devices(devices: Sequence[Device], fn: Callable[[Device], Any],
                   max_workers: int = 16) -> FleetResult:
    """`fn(device)` for every device in parallel threads; failures are collected per device."""

    def one(d: Device):
        try:
            return d.name, fn(d), None
        except UserError as e:
            return d.name, None, e
        except Exception as e:  # noqa: BLE001 — recorded per board, never swallowed
            log.debug("device %s failed", d.name, exc_info=True)
            return d.name, None, e

    out = FleetResult()
    if not devices:
        return out
    with ThreadPoolExecutor(max_workers=min(max_workers, len(devices)),
                            thread_name_prefix="edgepipe-device") as pool:
        for name, res, err in pool.map(one, devices):
            if err is None:
                out.results[name] = res
            else:
                out.exceptions[name] = err
                out.errors[name] = (str(err) if isinstance(err, UserError)
                                    else f'Device "{name}": {type(err).__name__}: {err}')
    return out


def profile_model(ssh: SSH, job: ModelJob, opts: Options) -> dict:
    """Deploy, verify (with a golden) and benchmark one model on a connected board."""
    d = ssh.device
    threads = d.threads if opts.threads is None else opts.threads
    t0 = time.monotonic()
    dep = deploy_model(ssh, job.path)
    t_deploy = time.monotonic()
    ver = None
    if job.golden is not None:
        g = deploy_golden(ssh, job.golden)
        ver = remote.verify(ssh, dep["remote_path"], g["remote_path"], threads=threads,
                            atol=job.atol, mode=job.mode)
        ver["golden_sha256"] = g["sha256"]
        if not ver.get("passed"):
            reasons = "; ".join(ver.get("reasons") or ["outputs differ"])
            raise VerificationError(f"Device {d.label}: {Path(job.path).name} computes wrong "
                                    f"answers on the device (verification failed: {reasons})", ver)
    t_verify = time.monotonic()
    b = remote.bench(ssh, dep["remote_path"], threads=threads, warmup=opts.warmup,
                     min_runs=opts.min_runs, min_seconds=opts.min_seconds,
                     max_seconds=opts.max_seconds, repeats=opts.repeats)
    t_end = time.monotonic()
    if b.get("model", {}).get("sha256") not in (None, dep["sha256"]):
        raise DeviceError(f"Device {d.label}: benchmarked file hash {b['model']['sha256'][:12]} "
                          f"differs from the deployed {dep['sha256'][:12]}")
    return {"device": d.name, "model": str(job.path), "sha256": dep["sha256"],
            "remote_path": dep["remote_path"], "threads": threads, "deploy": dep, "verify": ver,
            "latency_ms": b["latency_ms"], "emulated": emulated_result(b), "bench": b,
            "seconds": {"deploy": round(t_deploy - t0, 4), "verify": round(t_verify - t_deploy, 4),
                        "bench": round(t_end - t_verify, 4), "total": round(t_end - t0, 4)}}


@contextlib.contextmanager
def ready_board(device: Device, *, accept_new: bool, command_timeout: float | None,
                deadline: Deadline, say: Callable[[str], None] = lambda m: None) -> Iterator[SSH]:
    """One SSH connection to a board that is set up (its runner refreshed when it differs from
    this host's): what every job on a board starts with."""
    with SSH(device, accept_new=accept_new, command_timeout=command_timeout,
             deadline=deadline) as ssh:
        ensure_ready(ssh, say)
        yield ssh


def profile_device(device: Device, jobs: Sequence[ModelJob], opts: Options,
                   deadline: Deadline | None = None,
                   say: Callable[[str], None] = lambda m: None) -> dict:
    """Every job on one board, over one SSH connection."""
    t0 = time.monotonic()
    with ready_board(device, accept_new=opts.accept_new, command_timeout=opts.command_timeout,
                     deadline=deadline or Deadline(opts.deadline), say=say) as ssh:
        models = {}
        for job in jobs:
            r = profile_model(ssh, job, opts)
            say(f"[{device.name}] {Path(job.path).name}: p50 {r['latency_ms']['p50']:.3f} ms "
                f"({'copied' if r['deploy']['copied'] else 'already there'})"
                + ("  EMULATED CPU: not a board's latency" if r["emulated"] else ""))
            models[str(job.path)] = r
        return {"device": device.name, "address": device.address, "models": models,
                "seconds": round(time.monotonic() - t0, 4),
                "transport_seconds": round(ssh.transport_seconds, 4)}


def profile_fleet(devices: Sequence[Device], jobs: Sequence[ModelJob], opts: Options,
                  say: Callable[[str], None] = lambda m: None) -> FleetResult:
    """Profile every job on every device, boards in parallel; one shared job deadline."""
    deadline = Deadline(opts.deadline)
    return run_on_devices(devices, lambda d: profile_device(d, jobs, opts, deadline, say))
