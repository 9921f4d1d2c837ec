"""Latency measured on a target, per op and per model, and a predictor built on it.

    with target_session("host", Timing()) as sessions:       # one per board of a tag
        for s in sessions:
            table = s.table(path)                              # refused if another target's
            fill(table, all_signatures(model), s.target)        # every channel count adapt may pick
            measure_model(table, model, s.target, "mine")       # a sample for the correction
    Predictor.fit(table).predict(model)                        # ms

`ops` turns a model into fused ops and signatures, `table` stores them per target, `measure` times
files with edge-runner (host, or a board in batches), `build` fills a table, `predict` learns the
whole-model correction.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from pipeline.latency.measure import Timing
from pipeline.latency.table import Table, default_path

__all__ = ["Session", "Timing", "random_member", "target_session", "weight_chains"]


@dataclass
class Session:
    """One target ready to time files, and where its table lives."""

    target: object
    table_path: Path | None

    def table(self) -> Table:
        ident = self.target.identity
        path = self.table_path or default_path(ident["target"], ident["threads"], ident["mode"])
        return Table.open(path, ident)


@contextlib.contextmanager
def target_session(target: str, timing: Timing, mode: str = "fp32", *,
                   table: str | Path | None = None, devices: str | None = None,
                   accept_new: bool = False, timeout: float = 600.0,
                   say: Callable[[str], None] = lambda m: None) -> Iterator[list[Session]]:
    """Sessions for `host`, a board, or every board of `tag:<tag>` (opened one after another:
    use the returned list inside the `with`)."""
    from pipeline.errors import UserError
    from pipeline.latency.measure import board_devices, open_target

    if target == "host":
        with open_target("host", timing, mode) as t:
            yield [Session(t, Path(table) if table else None)]
        return
    boards = board_devices(target, devices)
    if table and len(boards) > 1:
        raise UserError(f"--table names one file but {target} is {len(boards)} boards; leave "
                        f"--table out (each board gets its own table)")
    with contextlib.ExitStack() as stack:
        sessions = [Session(stack.enter_context(open_target(
            b.name, timing, mode, device=b, accept_new=accept_new, timeout=timeout, say=say)),
            Path(table) if table else None) for b in boards]
        yield sessions


def random_member(rng: np.random.Generator, input_shape, num_classes: int):
    """A random member of the nas stage's default `mobilenet` space (latency work: untrained)."""
    from pipeline.search.space import architecture
    from pipeline.stages.nas_config import SearchSpace
    from pipeline.zoo import mobilenet

    space = SearchSpace().plain()
    values = {}
    for name, spec in space.items():
        per = [f"{name}_{i}" for i in range(space["num_stages"])] if name in ("blocks", "kernel") \
            else [name]
        for hp in per:
            if isinstance(spec, list):
                values[hp] = spec[int(rng.integers(len(spec)))]
            elif isinstance(spec, dict):
                lo, hi, step = spec["min"], spec["max"], spec["step"]
                if isinstance(lo, int) and isinstance(hi, int):
                    values[hp] = int(rng.integers(lo, hi + 1))
                elif step:
                    values[hp] = float(lo + step * rng.integers(0, round((hi - lo) / step) + 1))
                else:
                    values[hp] = float(rng.uniform(lo, hi))
            elif spec is not None and name != "num_stages":
                values[hp] = spec
    opts, _ = architecture(values, space["num_stages"])
    return mobilenet(tuple(input_shape), num_classes, **opts), opts


#: weight_chains: (narrow, wide) channels of the 1x1 convolutions at 4x4, and the pair counts.
#: 128 <-> 960 is 0.94 MiB of fp32 weights per pair (under a 512 KiB L2 per op, like most ops of
#: a MobileNet); 48 <-> 240 (0.09 MiB per pair) gives the small end, where a board's cache is.
CHAINS = [(48, 240, 2), (48, 240, 4), (48, 240, 8)] + [(128, 960, n) for n in range(1, 19)]


def weight_chains():
    """(name, model): chains of 1x1 convolutions, every op with its own weights, from 0.2 to 17
    MiB of fp32 weights in all. The table times two ops per width; whole, they show where the
    target stops keeping a model's weights in cache (the predictor's cache term)."""
    import tf_keras as keras

    L = keras.layers
    for c, e, n in CHAINS:
        x = keras.Input((4, 4, c))
        y = x
        for _ in range(n):
            y = L.Conv2D(c, 1, activation="relu")(L.Conv2D(e, 1, activation="relu")(y))
        yield f"weight chain {c}<->{e} x{n}", keras.Model(x, y)
