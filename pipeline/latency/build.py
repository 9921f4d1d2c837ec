"""Fill a latency table: convert each missing op to a tiny .tflite, time them on the target in
batches, save the table after every batch (so a run stopped by a dead board resumes where it was).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.latency import ops as O
from pipeline.latency.table import Table


def convert(model, mode: str) -> bytes:
    """The model as a .tflite in `mode`; int8 is calibrated on random inputs (latency only)."""
    import tensorflow as tf

    from pipeline.tflite import MODES as CONVERTERS

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "int8":
        rng = np.random.default_rng(0)
        shapes = [tuple(d or 1 for d in t.shape[1:]) for t in model.inputs]

        def data():
            for _ in range(8):
                yield [rng.uniform(-1, 1, (1, *s)).astype(np.float32) for s in shapes]

        conv = CONVERTERS["int8"](conv, np.zeros((1, 1), np.float32))
        conv.representative_dataset = data
        conv.inference_input_type = conv.inference_output_type = tf.float32
    else:
        conv = CONVERTERS[mode](conv, None)
    return conv.convert()


def fill(table: Table, sigs: list[dict], target, *, batch: int = 32,
         say: Callable[[str], None] = lambda m: None) -> int:
    """Time the signatures the table lacks; returns how many were measured."""
    import tf_keras as keras

    keys = [O.key(s) for s in sigs]
    todo = table.missing(keys)
    by_key = dict(zip(keys, sigs))
    mode = table.identity["mode"]
    done = 0
    with tempfile.TemporaryDirectory(prefix="edgepipe-latency-") as tmp:
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            paths = []
            for i, k in enumerate(chunk):
                keras.backend.clear_session()
                p = Path(tmp) / f"op{start + i}.tflite"
                p.write_bytes(convert(O.build(by_key[k]), mode))
                paths.append(p)
            for k, r in zip(chunk, target.time(paths)):
                table.entries[k] = r
            table.save()
            done += len(chunk)
            say(f"[latency] {target.name}: {len(table.entries)} ops in the table "
                f"({done}/{len(todo)} measured now)")
    return done


def measure_model(table: Table, model, target, name: str) -> dict:
    """Time the whole model on the target and keep it as a sample for the predictor."""
    return measure_models(table, [(name, model)], target)[0]


def measure_models(table: Table, named: list[tuple[str, object]], target) -> list[dict]:
    """Time whole models on the target as one batch (one upload to a board) and keep each as a
    sample for the predictor. Clears the tf_keras session after converting each model (as `fill`
    does): build the models before, use them only through their names after."""
    import tf_keras as keras

    with tempfile.TemporaryDirectory(prefix="edgepipe-latency-") as tmp:
        paths, keys = [], []
        for i, (_, model) in enumerate(named):
            p = Path(tmp) / f"model{i}.tflite"
            p.write_bytes(convert(model, table.identity["mode"]))
            paths.append(p)
            keys.append([O.key(s) for s in O.signatures(model)])
            keras.backend.clear_session()
        timed = target.time(paths)
    return [add_sample(table, k, name, r) for (name, _), k, r in zip(named, keys, timed)]


def add_sample(table: Table, keys: list[str], name: str, timed: dict) -> dict:
    """Keep `timed` (a target's result for a whole model made of the ops `keys`) as a sample."""
    from pipeline.artifacts import sha256_json

    sample = {"name": name, "sha256": sha256_json(keys), "ops": keys, "ms": timed["ms"],
              "min_ms": timed["min_ms"]}
    table.add_model(sample)
    table.save()
    return sample


def calibrate_chains(table: Table, target) -> list[dict]:
    """Time the weight chains (`pipeline.latency.weight_chains`) per op and whole: the samples
    the predictor's cache term is learned from."""
    from pipeline.latency import weight_chains

    named = list(weight_chains())
    for _, model in named:
        fill(table, O.signatures(model), target)
    return measure_models(table, named, target)
