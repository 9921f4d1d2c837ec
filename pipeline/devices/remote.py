"""`edge-runner` on a board, over SSH: info, bench, verify, and a probe for boards not set up yet."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from functools import lru_cache

from pipeline.devices.runner import read_state, remote_runner, runner_files
from pipeline.devices.transport import SSH, Result
from pipeline.errors import DeviceError

# Before setup there is no venv and maybe no numpy: run edge_runner.sysinfo (stdlib only) from a
# zip sent on stdin, with the board's own python. Nothing is left on the board.
_PROBE = """
import base64, json, os, sys, tempfile
fd, path = tempfile.mkstemp(suffix=".zip")
with os.fdopen(fd, "wb") as f:
    f.write(base64.b64decode(DATA))
try:
    sys.path.insert(0, path)
    from edge_runner import sysinfo
    out = sysinfo.collect()
finally:
    os.unlink(path)
try:
    from importlib import metadata
except ImportError:
    metadata = None
found = {}
for dist in ("tflite-runtime", "ai-edge-litert", "numpy"):
    try:
        found[dist] = metadata.version(dist) if metadata else None
    except Exception:
        found[dist] = None
out["packages"] = found
print(json.dumps(out, allow_nan=False))
"""


@lru_cache(maxsize=1)
def _probe_script() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in runner_files().items():
            z.writestr(name, data)
    return f"DATA = {base64.b64encode(buf.getvalue()).decode()!r}\n{_PROBE}".encode()


def _json(ssh: SSH, r: Result, what: str) -> dict:
    """The JSON object a command printed. Lines before it (a chatty login script) are skipped."""
    text = r.text
    if not text.lstrip().startswith("{") and "\n{" in text:
        text = text[text.index("\n{") + 1:]
    try:
        out = json.loads(text)
    except json.JSONDecodeError:
        tail = (r.text.strip() or r.err.strip())[-200:]
        raise DeviceError(f"Device {ssh.device.label}: {what} printed no JSON: {tail!r}") from None
    if not isinstance(out, dict):
        raise DeviceError(f"Device {ssh.device.label}: {what} printed JSON that is not an object")
    return out


def info(ssh: SSH) -> dict:
    """`edge-runner info --json` with the board's venv and runner."""
    r = ssh.run(remote_runner(ssh.device, "info", "--json"), what='"edge-runner info"')
    return _json(ssh, r, "edge-runner info")


def probe(ssh: SSH) -> dict:
    """System facts with the board's plain python (no venv, no numpy needed)."""
    d = ssh.device
    r = ssh.run([d.python, "-"], what=f"probing with {d.python}", stdin=_probe_script())
    return _json(ssh, r, "the system probe")


def check(ssh: SSH) -> dict:
    """Reachability, Python, runtime, CPU, cores, governor, frequency, temperature, throttling."""
    state = read_state(ssh)  # the first command: proves the board is reachable
    facts = info(ssh) if state else probe(ssh)
    freq = facts.get("cpufreq") or {}
    runtime = facts.get("runtime")
    if not state:
        pk = facts.get("packages") or {}
        rt = ssh.device.runtime
        runtime = {"backend": rt, "version": pk.get(rt)} if pk.get(rt) else None
    return {
        "device": ssh.device.name,
        "address": ssh.device.address,
        "reachable": True,
        "setup": bool(state),
        "python": facts.get("python"),
        "runtime": runtime,
        "edge_runner": facts.get("edge_runner"),
        "cpu_model": facts.get("cpu_model"),
        "board": facts.get("board"),
        "emulated": facts.get("emulated"),
        "cores": (facts.get("cores") or {}).get("logical"),
        "governor": freq.get("governor"),
        "cur_mhz": freq.get("cur_mhz"),
        "max_mhz": freq.get("max_mhz"),
        "temperature_c": facts.get("temperature_c"),
        "throttling": facts.get("throttling"),
        "machine": facts.get("machine"),
        "info": facts,
    }


def _bench_args(threads: int, warmup: int, min_runs: int, min_seconds: float,
                max_seconds: float | None, repeats: int) -> list[str]:
    args = ["--json", "--threads", str(threads), "--warmup", str(warmup), "--min-runs",
            str(min_runs), "--min-seconds", str(min_seconds), "--repeats", str(repeats)]
    return args + (["--max-seconds", str(max_seconds)] if max_seconds is not None else [])


def bench(ssh: SSH, remote_model: str, *, threads: int, warmup: int = 10, min_runs: int = 50,
          min_seconds: float = 1.0, max_seconds: float | None = None, repeats: int = 1,
          timeout: float | None = None) -> dict:
    """`edge-runner bench MODEL --json` on the board."""
    args = ["bench", remote_model, *_bench_args(threads, warmup, min_runs, min_seconds,
                                                max_seconds, repeats)]
    r = ssh.run(remote_runner(ssh.device, *args), what='"edge-runner bench"', timeout=timeout)
    return _json(ssh, r, "edge-runner bench")


def bench_many(ssh: SSH, remote_models: list[str], *, threads: int, warmup: int = 10,
               min_runs: int = 50, min_seconds: float = 1.0, max_seconds: float | None = None,
               repeats: int = 1, timeout: float | None = None) -> list[dict]:
    """`edge-runner bench M1 M2 ... --json`: several models timed by one remote command."""
    if len(remote_models) == 1:
        return [bench(ssh, remote_models[0], threads=threads, warmup=warmup, min_runs=min_runs,
                      min_seconds=min_seconds, max_seconds=max_seconds, repeats=repeats,
                      timeout=timeout)]
    args = ["bench", *remote_models, *_bench_args(threads, warmup, min_runs, min_seconds,
                                                  max_seconds, repeats)]
    r = ssh.run(remote_runner(ssh.device, *args), what=f'"edge-runner bench" of '
                f'{len(remote_models)} models', timeout=timeout)
    out = _json(ssh, r, "edge-runner bench").get("results")
    if not isinstance(out, list) or len(out) != len(remote_models):
        raise DeviceError(f"Device {ssh.device.label}: edge-runner bench of {len(remote_models)} "
                          f"models printed {len(out) if isinstance(out, list) else 'no'} results "
                          f"(an edge-runner older than one bench per model?)")
    return out


def verify(ssh: SSH, remote_model: str, remote_golden: str, *, threads: int = 1,
           atol: float | None = None, mode: str | None = None,
           timeout: float | None = None) -> dict:
    """`edge-runner verify MODEL GOLDEN --json`; returns its result (`passed` False on mismatch)."""
    args = ["verify", remote_model, remote_golden, "--json", "--threads", str(threads)]
    if atol is not None:
        args += ["--atol", repr(float(atol))]
    if mode is not None:
        args += ["--mode", mode]
    r = ssh.run(remote_runner(ssh.device, *args), what='"edge-runner verify"', timeout=timeout,
                check=False)
    if r.returncode not in (0, 1):  # 1 is "ran, outputs differ"; anything else is a failure
        tail = " | ".join(x.strip() for x in r.err.strip().splitlines()[-3:] if x.strip())
        raise DeviceError(f"Device {ssh.device.label}: edge-runner verify failed with exit code "
                          f"{r.returncode}: {tail or 'no message'}")
    return _json(ssh, r, "edge-runner verify")
