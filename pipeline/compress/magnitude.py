"""Unstructured magnitude pruning and M:N (2:4) sparsity with TF-MOT.

`plan_schedule` turns a target sparsity and the real number of training steps into a TF-MOT
schedule whose pruning frequency actually fires (TF-MOT's default of every 100 steps never prunes
a model fine-tuned for 34 steps, and says nothing). `apply_pruning` wraps the chosen layers; the
wrapped model is fine-tuned by `pipeline.training.fit` with `pruning_callbacks()`, then
`strip_pruning` removes the wrappers and `require_m_by_n` checks an M:N pattern held.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from pipeline.compress import _keras as K
from pipeline.errors import UserError, did_you_mean

SCHEDULES = ("constant", "polynomial")
#: layers whose kernel m_by_n sparsity applies to (TFLite's 2:4 kernels: conv and fully connected)
M_BY_N_LAYERS = (keras.layers.Conv2D, keras.layers.Dense)
_sparsity = tfmot.sparsity.keras


@dataclass(frozen=True)
class PruningPlan:
    """A resolved schedule; steps count optimizer steps of the fine-tuning run (1-based)."""

    schedule: str
    target_sparsity: float
    initial_sparsity: float
    begin_step: int
    end_step: int
    frequency: int
    total_steps: int

    def tfmot_schedule(self):
        if self.schedule == "constant":
            return _sparsity.ConstantSparsity(self.target_sparsity, begin_step=self.begin_step,
                                              end_step=self.end_step, frequency=self.frequency)
        return _sparsity.PolynomialDecay(
            initial_sparsity=self.initial_sparsity, final_sparsity=self.target_sparsity,
            begin_step=self.begin_step, end_step=self.end_step, frequency=self.frequency)

    def to_json(self) -> dict:
        return asdict(self)


def plan_schedule(total_steps: int, target_sparsity: float, schedule: str = "polynomial", *,
                  initial_sparsity: float = 0.0, begin_step: int = 0, end_step: int | None = None,
                  frequency: int | None = None) -> PruningPlan:
    """Validate a schedule against `total_steps` training steps; fit the frequency when unset.

    TF-MOT updates masks at steps s (1..total) with (s - begin_step) % frequency == 0 and
    begin_step <= s <= end_step; a polynomial schedule reaches its target only at s == end_step.
    Defaults: pruning ends at 3/4 of the run (the rest fine-tunes with the final mask), about ten
    mask updates. A frequency given by the user that cannot fire, or cannot reach the target,
    is an error, never silently changed.
    """
    if schedule not in SCHEDULES:
        raise UserError(f'Unknown pruning schedule "{schedule}"{did_you_mean(schedule, SCHEDULES)}; '
                        f"expected one of: {', '.join(SCHEDULES)}")
    target = K.check_ratio(target_sparsity, "sparsity")
    initial = K.check_ratio(initial_sparsity, "initial_sparsity")
    total = int(total_steps)
    if total < 1:
        raise UserError(f"Expected at least 1 training step for pruning. Received: total_steps={total}"
                        " (set epochs >= 1)")
    if initial > target:
        raise UserError(f"Expected initial_sparsity <= sparsity. Received: "
                        f"initial_sparsity={initial_sparsity}, sparsity={target_sparsity}")
    if begin_step < 0:
        raise UserError(f"Expected begin_step >= 0. Received: begin_step={begin_step}")
    if end_step is not None and end_step <= begin_step:
        raise UserError(f"Expected end_step > begin_step (the schedule ends before it begins). "
                        f"Received: begin_step={begin_step}, end_step={end_step}")
    if begin_step >= total:
        raise UserError(f"begin_step={begin_step} is at or past the last of the {total} training "
                        f"steps: pruning would never run. Use begin_step < {total} or more epochs")
    if end_step is not None and end_step > total:
        raise UserError(f"end_step={end_step} is past the last of the {total} training steps: the "
                        f"target sparsity would never be reached. Use end_step <= {total} or leave it unset")
    if frequency is not None and frequency < 1:
        raise UserError(f"Expected frequency >= 1. Received: frequency={frequency}")

    if schedule == "constant":
        end = total if end_step is None else int(end_step)
        if frequency is None:
            frequency = max(1, min(100, (end - begin_step) // 10))
        first = begin_step if begin_step >= 1 else frequency  # step 0 is never seen
        if first > end:
            raise UserError(
                f"pruning frequency={frequency} never fires in the {total} training steps "
                f"(begin_step={begin_step}, end_step={end}): the model would stay dense. "
                f"Use frequency <= {end - begin_step} or leave it unset")
        return PruningPlan("constant", target, target, int(begin_step), end, int(frequency), total)

    end = int(end_step) if end_step is not None else max(begin_step + 1, (3 * total) // 4)
    span = end - begin_step
    if frequency is None:
        frequency = max(1, span // 10)
        end = begin_step + frequency * (span // frequency)  # the last update lands on end_step
    elif frequency > span:
        raise UserError(
            f"pruning frequency={frequency} is more than the {span} steps between begin_step="
            f"{begin_step} and end_step={end} ({total} training steps): the target sparsity would "
            f"never be reached. Use frequency <= {span} or leave it unset")
    elif span % frequency:
        raise UserError(
            f"Expected frequency to divide end_step - begin_step so the last mask update reaches the "
            f"target. Received: frequency={frequency}, begin_step={begin_step}, end_step={end}; "
            f"leave frequency unset to fit it automatically")
    return PruningPlan("polynomial", target, initial, int(begin_step), end, int(frequency), total)


def prunable_layers(model, m_by_n: tuple[int, int] | None = None) -> list[str]:
    """Names of the layers TF-MOT can prune (with weights to prune), in model order."""
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import (
        PruneRegistry as reg)

    out = []
    for layer in K.flat_layers(model):
        if m_by_n is not None:
            if isinstance(layer, M_BY_N_LAYERS) and not isinstance(
                    layer, (keras.layers.DepthwiseConv2D, keras.layers.Conv2DTranspose,
                            keras.layers.SeparableConv2D)):
                out.append(layer.name)
        elif reg.supports(layer) and not reg._is_rnn_layer(layer) and reg._weight_names(layer):
            out.append(layer.name)
    return out


def _check_m_by_n(m_by_n) -> tuple[int, int]:
    try:
        m, n = (int(v) for v in m_by_n)
    except (TypeError, ValueError):
        raise UserError(f"Expected m_by_n as two integers [m, n]. Received: m_by_n={m_by_n}") from None
    if not 0 < m < n:
        raise UserError(f"Expected 0 < m < n in m_by_n. Received: m_by_n={[m, n]}")
    return m, n


def apply_pruning(model, plan: PruningPlan | None = None, *, layers: Iterable[str] | None = None,
                  skip: Iterable[str] = (), skip_first: bool = False, skip_classifier: bool = False,
                  m_by_n: Sequence[int] | None = None):
    """A copy of `model` with the chosen layers wrapped by `prune_low_magnitude` (uncompiled).

    `skip_first` / `skip_classifier` leave the first / last prunable layer dense (the stem conv
    and the classifier are the usual sensitive ones).
    """
    K.require_graph_model(model, "pruning")
    mn = _check_m_by_n(m_by_n) if m_by_n is not None else None
    chosen = set(K.resolve_layers(model, prunable_layers(model, mn), layers, skip, what="pruning",
                                  skip_first=skip_first, skip_classifier=skip_classifier))
    if not chosen:
        raise UserError("No layer left to prune (check layers/skip); prunable layers: "
                        + (", ".join(prunable_layers(model, mn)) or "none"))
    if mn is not None:
        params = {"sparsity_m_by_n": mn}
    else:
        if plan is None:
            raise UserError("apply_pruning needs a PruningPlan (see plan_schedule)")
        params = {"pruning_schedule": plan.tfmot_schedule()}
    base = K.clone_with_weights(model)

    def wrap(layer):
        if layer.name in chosen:
            return _sparsity.prune_low_magnitude(layer, **params)
        return layer
    return K.map_layers(base, wrap)


def pruning_callbacks() -> list:
    """What fitting a model wrapped by `apply_pruning` needs: TF-MOT's step counter."""
    return [_sparsity.UpdatePruningStep()]


def strip_pruning(model):
    """The model with pruning wrappers removed (weights keep their zeros)."""
    return _sparsity.strip_pruning(model)


def require_m_by_n(model, m_by_n: Sequence[int], layers: Iterable[str]) -> None:
    """Raise UserError naming the `layers` of a stripped model that break the M:N pattern."""
    mn = _check_m_by_n(m_by_n)
    report = m_by_n_report(model, mn)
    bad = [n for n in layers if not report.get(n)]
    if bad:
        raise UserError(f"{mn[0]}:{mn[1]} sparsity check failed after stripping for layer(s): "
                        f"{', '.join(bad)}")


def is_m_by_n(kernel: np.ndarray, m_by_n: Sequence[int] = (2, 4)) -> bool:
    """True when every run of n weights along the input channel (TFLite's last axis) has at most
    n - m nonzeros. Conv2D kernels are [h, w, in, out] (TFLite [out, h, w, in]); Dense [in, out]."""
    m, n = m_by_n
    w = np.asarray(kernel)
    if w.ndim == 4:
        w = np.transpose(w, (3, 0, 1, 2))
    elif w.ndim == 2:
        w = w.T
    else:
        raise ValueError(f"Expected a rank 2 or 4 kernel. Received: shape={w.shape}")
    rows = w.reshape(-1, w.shape[-1])
    pad = (-rows.shape[1]) % n
    rows = np.pad(rows, ((0, 0), (0, pad)))
    nonzero = np.count_nonzero(rows.reshape(rows.shape[0], -1, n), axis=-1)
    return bool((nonzero <= n - m).all())


def m_by_n_report(model, m_by_n: Sequence[int] = (2, 4)) -> dict[str, bool]:
    """{layer: kernel follows m_by_n} for the Conv2D/Dense layers of a stripped model."""
    mn = _check_m_by_n(m_by_n)
    names = set(prunable_layers(model, mn))
    return {layer.name: is_m_by_n(layer.kernel.numpy(), mn)
            for layer in K.flat_layers(model) if layer.name in names}


def sparsity_report(model) -> dict[str, float]:
    """{layer: fraction of exact zeros in its kernel(s)} for every layer with a kernel.

    Works on stripped and on wrapped models (names are the inner layers'). Biases are excluded.
    """
    out = {}
    for layer in K.flat_layers(model):
        ks = [np.asarray(k.numpy()) for k in K.kernels(layer)]
        size = sum(k.size for k in ks)
        if size:
            zeros = sum(int(k.size - np.count_nonzero(k)) for k in ks)
            out[K.inner_name(layer)] = round(zeros / size, 6)
    return out


def overall_sparsity(model) -> float:
    """Fraction of exact zeros over all kernels of the model."""
    total = zeros = 0
    for layer in K.flat_layers(model):
        for k in K.kernels(layer):
            a = np.asarray(k.numpy())
            total += a.size
            zeros += a.size - np.count_nonzero(a)
    return zeros / total if total else 0.0
