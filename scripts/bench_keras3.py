"""Keras 3 files in and out: conversion time and max output difference for keras.applications.

    python scripts/bench_keras3.py [--size 224] [--models MobileNetV2,MobileNetV3Small,...]

Each model (weights=None, 1000 classes) is built and saved as `.keras` by Keras 3 in a process of
its own (TF_USE_LEGACY_KERAS unset, as a user has it), with its outputs on 8 seeded random images
(pixels 0..255). edgepipe then loads the file (Keras 3 safe-mode load + tf_keras rebuild + weight
copy, timed apart) and compares the tf_keras model's outputs with the Keras 3 process's; and
writes it back as a Keras 3 file (timed), whose outputs are compared in another Keras 3 process.
Writes benchmarks/keras3.md and reassembles BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["MobileNetV2", "MobileNetV3Small", "EfficientNetB0", "ResNet50"]

KERAS3_SAVE = """
import json, sys, numpy as np, keras
name, size, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3))
x = np.random.default_rng(0).uniform(0, 255, (8, size, size, 3)).astype("float32")
model.save(out)
np.savez(out + ".npz", x=x, y=model.predict(x, verbose=0))
"""

KERAS3_CHECK = """
import sys, numpy as np, keras
model = keras.saving.load_model(sys.argv[1])
ref = np.load(sys.argv[2])
print(float(np.max(np.abs(model.predict(ref["x"], verbose=0) - ref["y"]))))
"""


def keras3(code: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update(PYTHONPATH="", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""


def measure(name: str, size: int, tmp: Path) -> dict:
    import keras
    import numpy as np

    from pipeline.modelio.rebuild import rebuild
    from pipeline.modelio.save import save_keras3

    path = tmp / f"{name}.keras"
    keras3(KERAS3_SAVE, name, str(size), str(path))
    ref = np.load(str(path) + ".npz")
    t0 = time.perf_counter()
    original = keras.saving.load_model(path, compile=False, safe_mode=True)
    t1 = time.perf_counter()
    model = rebuild(original)
    t2 = time.perf_counter()
    diff_in = float(np.max(np.abs(model.predict(ref["x"], verbose=0) - ref["y"])))
    out = tmp / f"{name}_keras3.keras"
    t3 = time.perf_counter()
    save_keras3(model, out, ref["x"])
    t4 = time.perf_counter()
    diff_out = float(keras3(KERAS3_CHECK, str(out), str(path) + ".npz"))
    return {"model": name, "params": int(model.count_params()), "layers": len(model.layers),
            "keras3_load_s": t1 - t0, "rebuild_s": t2 - t1, "diff_in": diff_in,
            "keras3_out_s": t4 - t3, "diff_out": diff_out}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows.append(measure(name, args.size, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    cmd = "python scripts/bench_keras3.py" + (f" --size {args.size}" if args.size != 224 else "")
    lines = [
        "## Keras 3 files in and out (keras.applications, weights=None)", "",
        f"Command: `{cmd}`. Each model saved as `.keras` by Keras {keras_version()} in its own "
        f"process, {args.size}x{args.size}x3 input, 1000 classes; outputs compared on 8 seeded "
        f"random images (pixels 0..255). *In*: Keras 3 safe-mode load, then edgepipe's tf_keras "
        f"rebuild with weights copied; max |diff| of the tf_keras model against the Keras 3 "
        f"process. *Out*: the tf_keras model written back as a Keras 3 `.keras` (with its own "
        f"1e-5 check), loaded in another Keras 3 process; max |diff| against the original. "
        f"Times are wall-clock on a shared 2-core machine (noisy; a single run).", "",
        "| model | params | tf_keras layers | Keras 3 load (s) | rebuild (s) | max abs diff in "
        "| write Keras 3 (s) | max abs diff out |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params']:,} | {r['layers']} | {r['keras3_load_s']:.1f} "
                     f"| {r['rebuild_s']:.1f} | {r['diff_in']:.1e} | {r['keras3_out_s']:.1f} "
                     f"| {r['diff_out']:.1e} |")
    (ROOT / "benchmarks").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "keras3.md").write_text("\n".join(lines) + "\n")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_benchmarks_md.py")], check=True)


def keras_version() -> str:
    import keras

    return keras.__version__


if __name__ == "__main__":
    main()
