"""Golden outputs for on-device verification, computed on the host from the same .tflite."""

from __future__ import annotations

import os
from pathlib import Path



def golden_arrays(model: str | os.PathLike, inputs, samples: int | None = None) -> tuple:
    """(inputs, outputs) of a golden for `model`: the first `samples` of `inputs` (an array, or
    {input name: array} for a model with several) fitted to the .tflite's own input spec (size,
    channel axis, flattening, dtype and quantization; see edge_runner.tensors), and the outputs
    this host gets for them. Each is one array for a one-input (one-output) model, else
    {name: array}."""
    from edge_runner.backends import load
    from edge_runner.errors import RunnerError
    from edge_runner.tensors import fit

    runner = load(model)
    names = runner.input_names
    if not isinstance(inputs, dict):
        if len(names) != 1:
            raise RunnerError(f"{Path(model).name} has {len(names)} inputs ({', '.join(names)}) "
                              f"but the data has one; give data with one array per input")
        inputs = {names[0]: inputs}
    missing = [n for n in names if n not in inputs]
    if missing:
        raise RunnerError(f"{Path(model).name} has an input named {missing[0]!r} that the data "
                          f"does not have (it has {', '.join(map(str, inputs))}); name the data's "
                          f"inputs after the model's: {', '.join(names)}")
    fitted = {n: fit(inputs[n][:samples], runner.input_details[i], n) for i, n in enumerate(names)}
    outputs = runner.predict_named(fitted)
    one = len(fitted) == 1
    return (fitted[names[0]] if one else fitted,
            outputs[runner.output_names[0]] if len(outputs) == 1 else outputs)


def host_golden(model: str | os.PathLike, inputs, out: str | os.PathLike,
                quantization: str | None = None, samples: int | None = None) -> Path:
    """Run (the first `samples` of) `inputs` through `model` here (edge_runner) and write `out`
    (.npz, the layout of edge_runner.golden) for `edge-runner verify` on a board. A board that
    disagrees computes wrong answers for the same file."""
    from edge_runner.golden import write_golden

    x, y = golden_arrays(model, inputs, samples)
    write_golden(out, x, y, quantization)
    return Path(out)


__all__ = ["golden_arrays", "host_golden"]
