"""Quantization-aware training with TF-MOT: coverage check, scheme choice, annotation.

Coverage follows TF-MOT's own default 8-bit registry (`Default8BitQuantizeRegistry.supports`)
plus what its layout transforms handle (SeparableConv, BatchNormalization folded into a
preceding Conv2D/DepthwiseConv2D/linear Dense). Everything else (Rescaling, Multiply, Conv1D,
LayerNormalization, Lambda, TFOpLambda, ...) is reported by name. TF-MOT quantizes no model
nested in another: a nested model (a keras.applications base in a transfer-learning model) is
flattened first into one functional graph of the same layers and weights (`flatten_nested`).

The scheme is chosen from the weights: a sparse model (pruned) gets
`Default8BitPrunePreserveQuantizeScheme` (PQAT) so the int8 kernels keep their zeros; a clustered
one gets `Default8BitClusterPreserveQuantizeScheme` (CQAT, sparsity preserved too when sparse).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from pipeline.compress import _keras as K
from pipeline.errors import UserError, did_you_mean

PRESERVE = ("auto", "none", "sparsity", "clusters", "clusters+sparsity")
#: a model counts as clustered when every kernel of at least this many weights holds at most
#: CLUSTERED_MAX_UNIQUE distinct nonzero values, each shared by two weights or more on average
#: (a pruned kernel with few nonzeros left has few distinct values without being clustered)
CLUSTERED_MIN_SIZE = 512
CLUSTERED_MAX_UNIQUE = 256

_qk = tfmot.quantization.keras
_BN_FOLD_INPUTS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
_TRANSFORMED = (keras.layers.SeparableConv2D, keras.layers.SeparableConv1D)


def _registry():
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit.default_8bit_quantize_registry import (  # noqa: E501
        Default8BitQuantizeRegistry)
    return Default8BitQuantizeRegistry()


def _inbound_names(model) -> dict[str, list[str]]:
    """{layer: names of the layers feeding it} in *this* model (from its config: layer objects
    shared with other models, as TF-MOT's clone-based wrappers leave them, have nodes there too)."""
    config = model.get_config()
    if isinstance(model, keras.Sequential):
        names = [e["config"]["name"] for e in config["layers"]]
        return {b: [a] for a, b in zip(names, names[1:])}
    out = {}
    for entry in config["layers"]:
        nodes = entry.get("inbound_nodes") or []
        out[entry["name"]] = ([n[0] for n in nodes[0]] if len(nodes) == 1 else [])
    return out


def _supported(layer, registry, model, inbound: dict[str, list[str]]) -> bool:
    if isinstance(layer, keras.layers.InputLayer) or registry.supports(layer):
        return True
    if isinstance(layer, _TRANSFORMED):
        return True
    if isinstance(layer, keras.layers.BatchNormalization):
        src = inbound.get(layer.name, [])
        if len(src) == 1 and isinstance(model.get_layer(src[0]), keras.layers.Reshape):
            src = inbound.get(src[0], [])
        if len(src) == 1:
            prev = model.get_layer(src[0])
            if isinstance(prev, _BN_FOLD_INPUTS):
                act = getattr(prev.activation, "__name__", "")
                return not isinstance(prev, keras.layers.Dense) or act == "linear"
    return False


def unsupported_layers(model) -> list[tuple[str, str]]:
    """[(layer name, class name)] of the layers TF-MOT's default 8-bit QAT cannot quantize
    (nested models' layers included: QAT flattens them)."""
    K.require_graph_model(model, "quantization-aware training")
    model = K.flatten_nested(model)
    reg = _registry()
    inbound = _inbound_names(model)
    out = []
    for layer in model.layers:
        if not _supported(layer, reg, model, inbound):
            out.append((layer.name, type(layer).__name__))
    return out


def detect_preserve(model) -> str:
    """'sparsity', 'clusters', 'clusters+sparsity' or 'none', from the kernel weights."""
    ks = [np.asarray(k.numpy()) for layer in K.flat_layers(model) for k in K.kernels(layer)]
    sparse = K.is_sparse(model)
    shared = []  # per big kernel with nonzeros: do its values repeat like cluster centroids?
    for k in ks:
        nz = k[k != 0]
        if k.size >= CLUSTERED_MIN_SIZE and nz.size:
            unique = len(np.unique(nz))
            shared.append(unique <= CLUSTERED_MAX_UNIQUE and 2 * unique <= nz.size)
    clustered = bool(shared) and all(shared)
    if clustered:
        return "clusters+sparsity" if sparse else "clusters"
    return "sparsity" if sparse else "none"


def make_scheme(preserve: str):
    """The TF-MOT QuantizeScheme for 'none' | 'sparsity' | 'clusters' | 'clusters+sparsity'."""
    if preserve == "none":
        return _qk.default_8bit.Default8BitQuantizeScheme()
    if preserve == "sparsity":
        return _qk.collab_opts.Default8BitPrunePreserveQuantizeScheme()
    if preserve in ("clusters", "clusters+sparsity"):
        # Not re-exported by tfmot 0.8.1's public API; this is its defining module.
        from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve.default_8bit_cluster_preserve_quantize_scheme import (  # noqa: E501
            Default8BitClusterPreserveQuantizeScheme)
        return Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=preserve.endswith("sparsity"))
    raise UserError(f'Unknown preserve "{preserve}"{did_you_mean(preserve, PRESERVE)}; '
                    f"expected one of: {', '.join(PRESERVE)}")


@dataclass
class QATInfo:
    """What `quantize_aware` did: the scheme and the layers left in float."""

    preserve: str
    scheme: str
    float_layers: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"preserve": self.preserve, "scheme": self.scheme, "float_layers": self.float_layers}


#: range variables of TF-MOT's wrappers, by the tensor they cover: the wrapped layer's output
#: (after its activation), or its output before the activation (a softmax classifier's logits)
_OUTPUT_RANGES = ("post_activation", "output")
_PRE_ACTIVATION = "pre_activation"


def calibrate_ranges(qat, model, x) -> list[str]:
    """Set the QAT model's activation ranges to what the float `model` computes on inputs `x`:
    each input's, each layer's output, and each activation's input (a classifier's logits).

    TF-MOT starts every moving-average range at [-6, 6] and moves it with decay 0.999: an output
    beyond that (a regressor's, in its target's units; a confident classifier's logits) stays
    clipped for thousands of steps and fine-tuning learns around the clip. Its input ranges
    start at [0, 0] and widen only in a training step: until then the QAT model sees all-zero
    inputs and is at chance, so fine-tuning's best-validation-epoch protocol had no real
    starting point to keep. Starting from the observed ranges fixes both; the weights' ranges
    are set too (`set_weight_ranges`). Returns the names of the layers whose activation ranges
    were set."""
    set_weight_ranges(qat)
    ref = K.clone_with_weights(model)  # layers of one graph: a stripped model's may have more
    known = {lay.name for lay in ref.layers}
    wanted = []  # (layer name, tensor of ref's graph, min variable, max variable)
    for layer in qat.layers:
        vs = {v.name.rsplit("/", 1)[-1].split(":")[0]: v for v in layer.non_trainable_weights}
        inner = getattr(layer, "layer", None)
        if inner is None:  # a QuantizeLayer: the range of the tensor that feeds it
            source = getattr(getattr(layer, "input", None), "_keras_history", None)
            if f"{layer.name}_min" in vs and source is not None and source.layer.name in known:
                wanted.append((layer.name, ref.get_layer(source.layer.name).output,
                               vs[f"{layer.name}_min"], vs[f"{layer.name}_max"]))
            continue
        if inner.name not in known:
            continue
        for kind in _OUTPUT_RANGES:
            if f"{kind}_min" in vs:
                wanted.append((inner.name, ref.get_layer(inner.name).output, vs[f"{kind}_min"],
                               vs[f"{kind}_max"]))
        if f"{_PRE_ACTIVATION}_min" in vs:
            wanted.append((inner.name, _pre_activation(ref.get_layer(inner.name)),
                           vs[f"{_PRE_ACTIVATION}_min"], vs[f"{_PRE_ACTIVATION}_max"]))
    if not wanted:
        return []
    probe = keras.Model(ref.inputs, [t for _, t, _, _ in wanted])
    outs = probe.predict(x, batch_size=256, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    for (_, _, lo, hi), out in zip(wanted, outs):
        lo.assign(min(0.0, float(np.min(out))))
        hi.assign(max(0.0, float(np.max(out))))
    return list(dict.fromkeys(name for name, _, _, _ in wanted))


def set_weight_ranges(qat) -> None:
    """Set each weight quantizer's range as a training step would: TF-MOT's LastValueQuantize
    (symmetric, per channel for convolutions) on the weights as they are. Until a training step
    they stay at [-6, 6], where a kernel of values near 0.05 rounds to a few levels.

    The base LastValueQuantizer's call, not the quantizer's own: a cluster-preserving one
    re-clusters the weights when called in training mode; on the weights as given (clustered,
    or pruned and stripped) the ranges are the same."""
    for layer in qat.layers:
        for weight, quantizer, qvars in getattr(layer, "_weight_vars", ()):  # QuantizeWrapperV2's
            if isinstance(quantizer, _qk.quantizers.LastValueQuantizer):
                _qk.quantizers.LastValueQuantizer.__call__(quantizer, weight, True, qvars)


def _pre_activation(layer):
    """`layer`'s output before its activation, as a tensor of its model's graph: a copy of the
    layer with a linear activation and the same weights, called on the same input."""
    linear = type(layer).from_config({**layer.get_config(), "activation": "linear",
                                      "name": f"{layer.name}__pre_activation"})
    out = linear(layer.input)
    linear.set_weights(layer.get_weights())
    return out


def quantize_aware(model, *, skip_unsupported: bool = False, preserve: str = "auto",
                   calibration=None):
    """Annotate and apply TF-MOT QAT; returns (qat model, QATInfo). The model is uncompiled.

    A nested model is flattened first (`flatten_nested`: the same layers, weights and outputs in
    one graph), so the QAT model holds no nested model. Unsupported layers are a UserError naming
    them, unless `skip_unsupported` (then only the supported layers are annotated and the rest
    stay float, listed in `QATInfo.float_layers`).
    `preserve="auto"` picks the collaborative scheme from the weights (see `detect_preserve`).
    `calibration` (real inputs) starts the activation ranges where the float model's are
    (`calibrate_ranges`) instead of TF-MOT's [-6, 6].
    """
    K.require_graph_model(model, "quantization-aware training")
    if preserve not in PRESERVE:
        raise UserError(f'Unknown preserve "{preserve}"{did_you_mean(preserve, PRESERVE)}; '
                        f"expected one of: {', '.join(PRESERVE)}")
    model = K.flatten_nested(model)  # TF-MOT quantizes no model nested in another
    bad = unsupported_layers(model)
    if bad and not skip_unsupported:
        names = ", ".join(f"{n} ({c})" for n, c in bad)
        raise UserError(f"QAT cannot quantize layer(s): {names}; set skip_unsupported: true to "
                        f"leave them in float, or remove them")
    chosen = detect_preserve(model) if preserve == "auto" else preserve
    scheme = make_scheme(chosen)
    skipped = {n for n, _ in bad}
    base = K.clone_with_weights(model)
    K.reserve_layer_names(base)  # the layers TF-MOT's transforms add get names of their own
    if skipped:
        def annotate(layer):
            if layer.name in skipped or isinstance(layer, keras.layers.InputLayer):
                return layer
            return _qk.quantize_annotate_layer(layer)
        annotated = keras.models.clone_model(base, clone_function=annotate)
    else:
        annotated = _qk.quantize_annotate_model(base)
    with _qk.quantize_scope():
        qat = _qk.quantize_apply(annotated, scheme)
    if calibration is not None:
        calibrate_ranges(qat, model, calibration)
    return qat, QATInfo(chosen, type(scheme).__name__, sorted(skipped))
