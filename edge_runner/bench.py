"""Latency of one .tflite, measured the way a careful benchmark does.

Create the interpreter and allocate (init_ms), time the first inference, run warm-up inferences,
then time `invoke()` alone with `perf_counter_ns` until both `min_runs` and `min_seconds` are met
(or `max_seconds` is hit), optionally several repeats with a cool-down between them. Inputs are
seeded random data of the right dtype and shape, or the first sample(s) of a golden file (real
inputs, for models whose time depends on them), set once before timing. The machine's state
(frequency, governor, temperature, throttling) is recorded before and after.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import resource
import sys
import time
from typing import Optional

from edge_runner import sysinfo
from edge_runner.backends import check_model_file, load
from edge_runner.errors import RunnerError


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _percentile(sorted_ms: list, q: float) -> float:
    """Linear-interpolated percentile of an ascending list (numpy's default method)."""
    k = (len(sorted_ms) - 1) * q / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(sorted_ms) - 1)
    return sorted_ms[lo] + (sorted_ms[hi] - sorted_ms[lo]) * (k - lo)


def latency_stats(times_ms: list) -> dict:
    """mean/std/min/max/p50/p90/p99 in ms and cv = std/mean (sample std, ddof=1)."""
    n = len(times_ms)
    ordered = sorted(times_ms)
    mean = sum(ordered) / n
    std = math.sqrt(sum((t - mean) ** 2 for t in ordered) / (n - 1)) if n > 1 else 0.0
    p50 = _percentile(ordered, 50)
    mad = _percentile(sorted(abs(t - p50) for t in ordered), 50)
    return {
        "mean": mean, "std": std, "min": ordered[0], "max": ordered[-1],
        "p50": p50, "p90": _percentile(ordered, 90),
        "p99": _percentile(ordered, 99), "cv": std / mean if mean > 0 else 0.0,
        # 1.4826 * MAD / median: the cv the middle of the distribution would have if it were
        # normal; unlike cv, a few outliers do not move it
        "robust_cv": 1.4826 * mad / p50 if p50 > 0 else 0.0,
    }


#: thresholds of `conditions` (a benchmark past one of them says so in its "warnings")
NOISY = 0.05             # robust cv (1.4826 MAD / median) of the timed runs
REPEAT_SPREAD = 0.05     # (max - min) / median of the repeats' p50
FREQ_CHANGE = 0.05       # relative change of cpu0's frequency between before and after
HOT_C = 80.0             # Raspberry Pi firmware starts soft throttling here


def conditions(result: dict) -> list:
    """Plain warnings about what makes this measurement less trustworthy (empty when none):
    an emulated CPU, a noisy timing loop, repeats that disagree, a governor that scales
    frequency, a frequency that moved, throttling or under-voltage, a CPU near its thermal limit."""
    out = []
    lat, before, after = result["latency_ms"], result["system_before"], result["system_after"]
    if before.get("emulated"):
        out.append(f"emulated CPU ({before['cpu_model']}): these timings are the emulator's, "
                   "not a board's")
    if lat["robust_cv"] > NOISY:  # the bulk of the runs spreads, not just a few outliers
        out.append(f"noisy: robust cv {100 * lat['robust_cv']:.1f}% > {100 * NOISY:.0f}% (cv "
                   f"{100 * lat['cv']:.0f}%; other load on the machine?); min {lat['min']:.4g} "
                   f"ms vs p50 {lat['p50']:.4g} ms")
    if result["repeats"] > 1 and result["p50_spread"] > REPEAT_SPREAD:
        out.append(f"repeats disagree: p50 spread {100 * result['p50_spread']:.1f}% > "
                   f"{100 * REPEAT_SPREAD:.0f}%")
    governor = (after.get("cpufreq") or {}).get("governor")
    if governor and governor != "performance":
        out.append(f"CPU governor is {governor!r}, not 'performance': the frequency may change "
                   "during the run")
    f0 = (before.get("cpufreq") or {}).get("cur_mhz")
    f1 = (after.get("cpufreq") or {}).get("cur_mhz")
    if f0 and f1 and abs(f1 - f0) / f0 > FREQ_CHANGE:
        out.append(f"CPU frequency moved during the run: {f0:g} -> {f1:g} MHz")
    def flags(s: dict) -> set:
        return {k for k, on in ((s.get("throttling") or {}).get("flags") or {}).items() if on}

    # "*_occurred" bits are sticky since boot: only those that appeared during this run count
    now = {k for k in flags(before) | flags(after) if not k.endswith("_occurred")}
    new = {k for k in flags(after) - flags(before) if k.endswith("_occurred")}
    if now | new:
        out.append("throttling/under-voltage flagged by the firmware during the run: "
                   + ", ".join(sorted(now | new)))
    temp = after.get("temperature_c")
    if temp is not None and temp >= HOT_C:
        out.append(f"CPU at {temp:.1f} C after the run (>= {HOT_C:g} C: thermal throttling "
                   "likely); add --cooldown or cooling")
    return out


def _peak_rss_kb() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024) if sys.platform == "darwin" else int(peak)  # bytes on macOS


def timed_runs(invoke, *, min_runs: int, min_seconds: float,
               max_seconds: Optional[float], expected_ms: float) -> list:
    """Time `invoke()` until min_runs and min_seconds are both met, or max_seconds passes.

    Durations (ns) go into a preallocated list sized from `expected_ms`, so the loop does no
    list growth; only the clock, the call and one store are inside it.
    """
    clock = time.perf_counter_ns
    min_ns = int(min_seconds * 1e9)
    max_ns = int(max_seconds * 1e9) if max_seconds is not None else None
    per_ms = 1000.0 / max(expected_ms, 1e-4)
    target = max(min_runs, int(min_seconds * per_ms) + 1)
    if max_seconds is not None:
        target = min(target, int(max_seconds * per_ms) + 1)
    cap = min(target, 1 << 20) + 16  # grows by doubling if the guess was short
    buf = [0] * cap
    n = 0
    start = clock()
    while True:
        t0 = clock()
        invoke()
        t1 = clock()
        if n == cap:  # rare: the model got faster than the warm-up said
            buf.extend([0] * cap)
            cap *= 2
        buf[n] = t1 - t0
        n += 1
        elapsed = t1 - start
        if max_ns is not None and elapsed >= max_ns:
            break
        if n >= min_runs and elapsed >= min_ns:
            break
    return buf[:n]


def _check_args(threads, warmup, min_runs, min_seconds, max_seconds, cooldown_s, repeats):
    def bad(name, value, what):
        raise RunnerError(f"Expected {name} {what}. Received: {name}={value!r}")

    for name, value in (("threads", threads), ("min_runs", min_runs), ("repeats", repeats)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            bad(name, value, ">= 1 (an integer)")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        bad("warmup", warmup, ">= 0 (an integer)")
    for name, value in (("min_seconds", min_seconds), ("cooldown_s", cooldown_s)):
        if not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
            bad(name, value, ">= 0 seconds")
    if max_seconds is not None and (not isinstance(max_seconds, (int, float))
                                    or not max_seconds > 0 or math.isinf(max_seconds)):
        bad("max_seconds", max_seconds, "> 0 seconds (or None)")


def _set_inputs(runner, golden: Optional[str], seed: int) -> dict:
    """Random inputs, or a golden's first sample(s) (as many as the model's batch); says which."""
    if golden is None:
        runner.fill_random_inputs(seed)
        return {"from": "random", "seed": seed}
    from edge_runner.golden import inputs_for, read_golden

    path = os.fspath(golden)
    xs = inputs_for(runner, read_golden(path)["inputs"], path)
    batch = int(runner.input_details[0]["shape"][0])
    if any(len(x) < batch for x in xs.values()):
        raise RunnerError(f"Golden file {path} has fewer samples than the model's batch of "
                          f"{batch}.")
    runner.set_inputs({k: x[:batch] for k, x in xs.items()})
    return {"from": os.path.abspath(path)}


def benchmark(model_path, *, threads: int = 1, warmup: int = 10, min_runs: int = 50,
              min_seconds: float = 1.0, max_seconds: Optional[float] = None,
              cooldown_s: float = 0.0, repeats: int = 1, backend: Optional[str] = None,
              xnnpack: bool = True, seed: int = 0, golden: Optional[str] = None) -> dict:
    """Benchmark one .tflite; returns a JSON-able dict (latencies in ms, see module doc).

    `max_seconds` caps each repeat's timed loop (it wins over `min_runs`/`min_seconds`).
    `golden`: a golden .npz whose first inputs are timed instead of random ones.
    """
    _check_args(threads, warmup, min_runs, min_seconds, max_seconds, cooldown_s, repeats)
    path = check_model_file(model_path)
    model = {"path": os.path.abspath(path), "sha256": sha256_file(path),
             "size_bytes": os.path.getsize(path)}
    system_before = sysinfo.collect()

    runner = load(path, threads=threads, backend=backend, xnnpack=xnnpack)
    runtime = {"backend": runner.backend, "version": runner.backend_version}
    system_before["runtime"] = runtime
    inputs = _set_inputs(runner, golden, seed)
    invoke = runner.interpreter.invoke  # the raw bound method: no wrapper in the timed loop
    clock = time.perf_counter_ns

    t0 = clock()
    invoke()
    first_ms = (clock() - t0) / 1e6
    t0 = clock()
    for _ in range(warmup):
        invoke()
    warm_ms = (clock() - t0) / 1e6 / warmup if warmup else first_ms

    all_ms: list = []
    per_repeat = []
    for r in range(repeats):
        if r and cooldown_s:
            time.sleep(cooldown_s)
        ns = timed_runs(invoke, min_runs=min_runs, min_seconds=min_seconds,
                        max_seconds=max_seconds, expected_ms=warm_ms)
        ms = [t / 1e6 for t in ns]
        stats = latency_stats(ms)
        per_repeat.append({"runs": len(ms), "p50": stats["p50"], "mean": stats["mean"],
                           "cv": stats["cv"]})
        all_ms.extend(ms)

    p50s = [rep["p50"] for rep in per_repeat]
    p50_spread = (max(p50s) - min(p50s)) / latency_stats(p50s)["p50"] if repeats > 1 else 0.0
    result = {
        "model": model,
        "backend": runner.backend,
        "backend_version": runner.backend_version,
        "threads": threads,
        "xnnpack": xnnpack,
        "io": runner.describe(),
        "inputs": inputs,
        "warmup": warmup,
        "runs": len(all_ms),
        "repeats": repeats,
        "cooldown_s": cooldown_s,
        "min_runs": min_runs,
        "min_seconds": min_seconds,
        "max_seconds": max_seconds,
        "init_ms": runner.init_ms,
        "first_inference_ms": first_ms,
        "latency_ms": latency_stats(all_ms),
        "per_repeat": per_repeat,
        "p50_spread": p50_spread,
        "peak_rss_kb": _peak_rss_kb(),
        "python": platform.python_version(),
        "system_before": system_before,
        "system_after": sysinfo.collect(runtime=runtime),
    }
    result["warnings"] = conditions(result)
    return result
