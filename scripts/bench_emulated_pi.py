#!/usr/bin/env python
"""How far ARM's kernels (XNNPACK on an emulated Cortex-A72 / Cortex-A76) land from the x86 host's
outputs, per model, quantization and CPU model: the numbers behind `edge-runner verify`'s
tolerances. Also times the emulated Pi's build, start and setup.

The boards are `edgepipe devices emulate` boards (Debian bookworm arm64 under qemu-user, their
own sshd, tflite-runtime 2.14 from PyPI's aarch64 wheels). The outputs are computed by the real
ARM code paths (QEMU emulates the instructions exactly); the timings of the emulated board mean
nothing and are not reported.

    sudo python scripts/bench_emulated_pi.py [--out benchmarks/emulated_pi.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edge_runner.verify import QUANT_STEPS  # noqa: E402

import pipeline  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from pipeline.devices import emulate, remote  # noqa: E402
from pipeline.devices.deploy import deploy_golden, deploy_model  # noqa: E402
from pipeline.devices.golden import host_golden  # noqa: E402
from pipeline.devices.inventory import Device  # noqa: E402
from pipeline.devices.setup import setup_device  # noqa: E402
from pipeline.devices.transport import SSH  # noqa: E402

BOARDS = {"emu-pi4": "cortex-a72", "emu-pi5": "cortex-a76"}


def digits_cnn(folder: Path) -> tuple[dict[str, Path], np.ndarray]:
    """A small CNN trained on digits (8x8x1 -> 10 softmax), fp32 and int8; 64 test inputs."""
    import tf_keras as keras
    from sklearn.datasets import load_digits

    from pipeline import tflite

    d = load_digits()
    x = (d.images[..., None] / 16.0).astype(np.float32)
    y = d.target
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.layers.Input((8, 8, 1)),
                          keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
                          keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
                          keras.layers.GlobalAveragePooling2D(),
                          keras.layers.Dense(10, activation="softmax")])
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(x[:1400], y[:1400], epochs=20, batch_size=64, verbose=0)
    out = {}
    for mode in ("fp32", "int8"):
        out[mode] = folder / f"digits_cnn_{mode}.tflite"
        out[mode].write_bytes(tflite.convert(m, mode, x[:200]))
    return out, x[1400:1464]


def mobilenet_features(folder: Path) -> tuple[dict[str, Path], np.ndarray]:
    """MobileNetV2 (alpha 0.35, 96x96, random weights) up to its 1280 pooled features: depthwise
    convolutions, ReLU6 and long accumulations; fp32 and int8. 8 random inputs."""
    import tf_keras as keras

    from pipeline import tflite

    keras.utils.set_random_seed(0)
    m = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None,
                                       include_top=False, pooling="avg")
    rng = np.random.default_rng(0)
    calib = rng.uniform(-1, 1, (32, 96, 96, 3)).astype(np.float32)
    out = {}
    for mode in ("fp32", "int8"):
        out[mode] = folder / f"mobilenetv2_035_96_features_{mode}.tflite"
        out[mode].write_bytes(tflite.convert(m, mode, calib))
    return out, rng.uniform(-1, 1, (8, 96, 96, 3)).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "emulated_pi.md"))
    args = ap.parse_args()
    timings = {}
    t0 = time.monotonic()
    emulate.build("arm64", say=print)
    timings["build (0 when cached)"] = time.monotonic() - t0
    devices, started = {}, []
    for name, cpu in BOARDS.items():
        running = (emulate.load_board(name) or emulate.Board(name, cpu, 0, Path())).pid()
        t0 = time.monotonic()
        b = emulate.start(name, cpu=cpu, say=print)
        if not running:
            started.append(name)
            timings[f"start {name} ({cpu})"] = time.monotonic() - t0
        # one install serves both CPU models (what QEMU emulates is not in the files)
        devices[name] = Device(name=name, **{**b.entry(), "workdir": "~/edgepipe-emu-pi4"})
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            models = {"digits small CNN (trained)": digits_cnn(folder),
                      "MobileNetV2 0.35 96x96 features (random weights)": mobilenet_features(folder)}
            goldens = {}
            for label, (files, x) in models.items():
                for mode, path in files.items():
                    goldens[(label, mode)] = host_golden(path, x, folder / f"{path.stem}.npz", mode)
            for name, d in devices.items():
                with SSH(d, command_timeout=1800) as ssh:
                    t0 = time.monotonic()
                    setup_device(ssh, log=print)
                    timings[f"devices setup {name} (pip skipped when installed)"] = time.monotonic() - t0
                    for label, (files, _) in models.items():
                        for mode, path in files.items():
                            dep = deploy_model(ssh, path)
                            g = deploy_golden(ssh, goldens[(label, mode)])
                            v = remote.verify(ssh, dep["remote_path"], g["remote_path"], mode=mode)
                            rows.append((label, mode, BOARDS[name], v))
                            print(label, mode, name, v["max_abs_diff"], v["tolerance"], v["passed"])
    finally:
        for name in started:
            emulate.stop(name, say=print)
    write(args.out, rows, timings)


NOTES = ("The random-weight MobileNetV2's pooled features are close to zero (its int8 output "
         "step is the tolerance / 3 above), so its rows only show that the ARM kernels run; the "
         "trained digits CNN carries the differences. Its int8 file lands exactly 3 output steps "
         "from the host's, the limit of the default tolerance, on both CPU models: a quantized "
         "softmax moves several output steps when one of its input logits rounds one step "
         "differently, and ARM's and x86's int8 kernels requantize differently. The tolerance "
         "was not widened for this; bounding a quantized softmax by one step of its logits is "
         "the principled rule still to make.")


def write(out: str, rows: list, timings: dict) -> None:
    lines = ["## Emulated Raspberry Pi: ARM kernels against the x86 host (issue 16)", "",
             "Command: `sudo python scripts/bench_emulated_pi.py` (boards from `edgepipe devices "
             "emulate`: Debian bookworm arm64 under qemu-user 7.2, tflite-runtime 2.14.0 from "
             "PyPI's aarch64 wheel, XNNPACK on). Golden outputs are the host's (x86-64, "
             "ai-edge-litert) for the same file on the same inputs; `edge-runner verify` on the "
             "emulated board with the default tolerance of each mode. For int8, steps = max abs "
             "difference / the output's quantization scale. QEMU executes the ARM instructions "
             "exactly, so these differences are the ARM kernels', not the emulator's; its "
             "timings mean nothing and are not shown.", "",
             "| model | mode | CPU model | max abs diff | int8 steps | mean abs diff | argmax "
             "agreement | tolerance | diff / tolerance | verify |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, mode, cpu, v in rows:
        steps = (f"{v['max_abs_diff'] / (v['tolerance'] / QUANT_STEPS['int8']):.2f}"
                 if mode == "int8" and v["tolerance"] else "—")
        agree = "—" if v["argmax_agreement"] is None else f"{v['argmax_agreement']:.4f}"
        lines.append(f"| {label} | {mode} | {cpu} | {v['max_abs_diff']:.3g} | {steps} | "
                     f"{v['mean_abs_diff']:.3g} | {agree} | {v['tolerance']:.3g} | "
                     f"{v['max_abs_diff'] / v['tolerance']:.3f} | "
                     f"{'pass' if v['passed'] else 'FAIL'} |")
    lines += ["", NOTES]
    lines += ["", "Time on this machine (2 cores, shared):", ""]
    lines += [f"- {k}: {v:.0f} s" for k, v in timings.items()]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
