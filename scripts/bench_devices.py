#!/usr/bin/env python
"""Deploy + profile through loopback SSH: end-to-end time per model, and how much is transport.

A real sshd on 127.0.0.1 (Debian's openssh-server, run as root) and the tflite-runtime 2.14 board
venv stand in for a Raspberry Pi. For each model, interleaved, `--repeats` times:

  local   the same `edge-runner bench` command the board runs, as a local subprocess
  cold    `profile_device` (connect, check setup, copy the model, bench), model not on the board
  warm    the same with the model already there (copy skipped by content hash)
  no-mux  warm, without ControlMaster (every command opens its own SSH connection)

transport = end-to-end − local: connection set-up, round trips and the copy. The board is this
machine, so the remote and local compute are the same work.

    sudo python scripts/bench_devices.py [--repeats 5] [--out benchmarks/devices.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from pipeline.devices.fleet import ModelJob, Options, profile_device  # noqa: E402
from pipeline.devices.inventory import Device  # noqa: E402
from pipeline.devices.setup import setup_device  # noqa: E402
from pipeline.devices.transport import SSH  # noqa: E402
from tests.ssh_server import SSHServer, keygen, write_known_hosts  # noqa: E402
from tests.tiny_tflite import mlp  # noqa: E402

BENCH = dict(warmup=5, min_runs=50, min_seconds=0.0)


def make_models(d: Path) -> list[tuple[str, Path]]:
    """A tiny MLP, a 1.2 MB MLP, and zoo/Keras CNNs converted by pipeline.tflite (int8, fp32)."""
    out = [("mlp 64-16-10 (fp32)", mlp((1, 8, 8, 1), (16, 10))),
           ("mlp 64-512-512-10 (fp32)", mlp((1, 8, 8, 1), (512, 512, 10)))]
    paths = []
    for name, data in out:
        p = d / (name.split()[1] + ".tflite")
        p.write_bytes(data)
        paths.append((name, p))
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    m = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)
    conv = tf.lite.TFLiteConverter.from_keras_model(m)
    p = d / "mobilenetv2_035_96_fp32.tflite"
    p.write_bytes(conv.convert())
    paths.append(("MobileNetV2 0.35 96x96 (fp32)", p))
    m2 = keras.applications.MobileNetV2(input_shape=(160, 160, 3), alpha=1.0, weights=None, classes=10)
    p = d / "mobilenetv2_100_160_fp32.tflite"
    p.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m2).convert())
    paths.append(("MobileNetV2 1.0 160x160 (fp32)", p))
    return paths


def local_bench(python: str, model: Path, lib: str) -> float:
    env = {**os.environ, "PYTHONPATH": lib}
    t0 = time.monotonic()
    subprocess.run([python, "-m", "edge_runner", "bench", str(model), "--json", "--threads", "1",
                    "--warmup", str(BENCH["warmup"]), "--min-runs", str(BENCH["min_runs"]),
                    "--min-seconds", str(BENCH["min_seconds"]), "--repeats", "1"],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "devices.md"))
    args = ap.parse_args()

    venv = Path(os.environ.get("EDGEPIPE_BOARD_VENV") or Path.home() / ".cache/edgepipe/board-venv")
    subprocess.run(["bash", str(ROOT / "scripts/make_board_venv.sh"), str(venv)], check=True,
                   stdout=subprocess.DEVNULL)
    tmp = Path(tempfile.mkdtemp(prefix="bench-devices-"))
    server = SSHServer(tmp / "sshd", keygen(tmp / "user_key")).start()
    try:
        known = write_known_hosts(tmp / "known_hosts", server)
        work = tmp / "board"
        work.mkdir()
        (work / "venv").symlink_to(venv)
        dev = Device(name="loopback", **server.entry(python=str(venv / "bin/python"),
                                                     workdir=str(work), known_hosts=str(known)))
        with SSH(dev) as ssh:
            setup_device(ssh)
        models = make_models(tmp)
        rows = {name: {"local": [], "cold": [], "warm": [], "nomux": [], "copy": [], "bench": []}
                for name, _ in models}
        opts = Options(threads=1, **BENCH)
        for rep in range(args.repeats):
            for name, path in models:
                r = rows[name]
                r["local"].append(local_bench(str(venv / "bin/python"), path, str(work / "lib")))
                for f in (work / "models").glob("*.tflite"):
                    f.unlink()
                t0 = time.monotonic()
                res = profile_device(dev, [ModelJob(path)], opts)
                r["cold"].append(time.monotonic() - t0)
                m = res["models"][str(path)]
                assert m["deploy"]["copied"]
                r["copy"].append(m["seconds"]["deploy"])
                t0 = time.monotonic()
                res = profile_device(dev, [ModelJob(path)], opts)
                r["warm"].append(time.monotonic() - t0)
                r["bench"].append(res["models"][str(path)]["seconds"]["bench"])
                t0 = time.monotonic()
                profile_device(dev.model_copy(update={"multiplex": False}), [ModelJob(path)], opts)
                r["nomux"].append(time.monotonic() - t0)
            print(f"repeat {rep + 1}/{args.repeats} done", file=sys.stderr)
    finally:
        server.stop()

    med = statistics.median
    lines = [
        "## Devices: deploy + profile through loopback SSH",
        "",
        "A real OpenSSH server on 127.0.0.1 and the tflite-runtime 2.14 board venv stand in for a "
        "board; `edge-runner bench` runs with "
        f"{BENCH['min_runs']} timed runs, {BENCH['warmup']} warm-up, 1 thread. Medians of "
        f"{args.repeats} interleaved repeats, seconds. *local*: the same bench command as a local "
        "subprocess. *cold*: `profile_device` when the model is not on the board (connect, setup "
        "check, copy, bench). *warm*: model already there (skipped by hash). *no-mux*: warm "
        "without ControlMaster. *transport* = end-to-end − local.",
        "",
        "| model | size | local | cold | transport (cold) | copy | warm | transport (warm) | no-mux |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, path in models:
        r = {k: med(v) for k, v in rows[name].items()}
        size = path.stat().st_size
        tc, tw = r["cold"] - r["local"], r["warm"] - r["local"]
        lines.append(
            f"| {name} | {size / 1024:.0f} KB | {r['local']:.2f} | {r['cold']:.2f} | "
            f"{tc:.2f} ({100 * tc / r['cold']:.0f}%) | {r['copy']:.2f} | {r['warm']:.2f} | "
            f"{tw:.2f} ({100 * tw / r['warm']:.0f}%) | {r['nomux']:.2f} |")
    meds = {name: {k: med(v) for k, v in rows[name].items()} for name, _ in models}
    span = lambda xs: f"{min(xs):.1f}–{max(xs):.1f} s"  # noqa: E731
    lines += ["", f"Transport (connection, round trips, copy) costs {span([m['warm'] - m['local'] for m in meds.values()])} "
              f"per job when the model is already on the board and {span([m['cold'] - m['local'] for m in meds.values()])} "
              f"when it is copied; the copy itself takes {span([m['copy'] for m in meds.values()])} from "
              f"{min(p.stat().st_size for _, p in models) / 1024:.0f} KB to "
              f"{max(p.stat().st_size for _, p in models) / 1024:.0f} KB, so per-command latency, "
              "not bandwidth, dominates on loopback. One shared connection (ControlMaster) saves "
              f"{span([m['nomux'] - m['warm'] for m in meds.values()])} per warm job."]
    load = os.getloadavg()
    lines += ["", f"Machine: {os.cpu_count()} cores, load average during the run "
              f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} (shared; absolute seconds are noisy, "
              "the columns of one row were measured side by side).", "",
              "Reproduce (as root, needs openssh-server): `python scripts/bench_devices.py "
              f"--repeats {args.repeats}`", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
