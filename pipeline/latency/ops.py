"""A model as the TFLite converter runs it: fused ops, each with a signature a table can time.

The converter folds BatchNormalization into the convolution before it and fuses a following
ReLU / ReLU6 into the op (conv + bias + activation is one CONV_2D); Dropout disappears; Flatten and
Reshape are free reshapes. ZeroPadding2D stays a PAD op, but XNNPACK folds a PAD into the
convolution that reads it (MobileNetV2's pads before its stride-2 depthwise convolutions cost
nothing there), so such a pad belongs to that convolution's op (`zp`) and is timed with it, as the
runtime runs it. So a model is a list of `Op`s — conv2d, depthwise, dense, add, pooling, global
pooling, softmax, resize, a standalone activation or zero padding — and an op's latency depends
only on its signature: kind, spatial size, channels in and out, kernel, stride, padding, activation.

Channels come from the channel-pruning graph (`pipeline.compress.channels.graph`), so an op also
says which channel groups set its input and output widths: `signature(counts)` gives the op's
signature when groups keep `counts[root]` channels — what adaptation needs to look a pruned model
up in the table without building it.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

from pipeline.compress.channels.graph import ChannelGraph, Layout, build_graph
from pipeline.compress.netadapt import choices, prunable

KINDS = ("conv2d", "depthwise", "dense", "add", "maxpool", "avgpool", "gap", "gmp", "softmax",
         "resize", "act", "pad")


def key(sig: dict) -> str:
    """The table key of a signature: canonical JSON."""
    return json.dumps(sig, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass
class Op:
    """One fused op: static attributes plus the layouts that set its channel widths."""

    kind: str
    layers: list          # the Keras layers fused into it (report)
    attrs: dict           # hw, k, s, pad, act, ... (everything but channels)
    cin: Layout | None    # None: the op reads a flat vector whose width is `attrs['cin']`
    cout: Layout | None   # None: same as cin (channel-wise ops)

    def signature(self, graph: ChannelGraph, counts: dict | None = None) -> dict:
        sig = {"op": self.kind, **self.attrs}
        if self.cin is not None:
            sig["cin"] = width(graph, self.cin, counts)
        if self.cout is not None and self.kind in ("conv2d", "dense"):
            sig["cout"] = width(graph, self.cout, counts)
        return sig


def width(graph: ChannelGraph, layout: Layout, counts: dict | None) -> int:
    """Channels of a tensor when each group keeps `counts[root]` (missing: all)."""
    counts = counts or {}
    return layout.repeat * sum(counts.get(graph.find(g), size) for g, size in layout.segments)


def _act(layer) -> str | None:
    """relu / relu6 for a layer the converter fuses as an activation, else None."""
    import tf_keras as keras

    L = keras.layers
    if isinstance(layer, L.ReLU):
        if float(layer.negative_slope) == 0 and float(layer.threshold) == 0:
            mv = None if layer.max_value is None else float(layer.max_value)
            return {None: "relu", 6.0: "relu6"}.get(mv)
        return None
    if isinstance(layer, L.Activation):
        name = getattr(layer.activation, "__name__", "")
        return name if name in ("relu", "relu6") else None
    return None


def _own_act(layer) -> str | None | bool:
    """The layer's own `activation`: None (linear), relu/relu6, or False (another, unfused)."""
    name = getattr(getattr(layer, "activation", None), "__name__", "linear")
    return None if name == "linear" else (name if name in ("relu", "relu6") else False)


def _only_consumer(model, layer):
    """The single layer reading `layer`'s single output, or None."""
    nodes = layer._outbound_nodes
    return nodes[0].layer if len(nodes) == 1 and len(layer._inbound_nodes) == 1 else None


def _hw(shape) -> list:
    return [int(d) for d in shape[1:-1]]


def model_ops(model) -> tuple[list[Op], ChannelGraph, list[str]]:
    """(fused ops in order, the channel graph, layers not modelled: ignored by the table)."""
    import tf_keras as keras

    L = keras.layers
    graph = build_graph(model)
    ops: list[Op] = []
    skipped: list[str] = []
    fused: set[str] = set()
    prepad: dict[str, object] = {}  # convolution name -> the ZeroPadding2D it reads

    def use(name):
        return graph.layers.get(name)

    def tail(layer, act):
        """Absorb a following BatchNormalization and activation the converter fuses."""
        names, cur = [layer.name], layer
        nxt = _only_consumer(model, cur)
        if isinstance(nxt, L.BatchNormalization) and layer.__class__ is not L.Dense:
            names.append(nxt.name)
            cur, nxt = nxt, _only_consumer(model, nxt)
        if act is None and nxt is not None and _act(nxt):
            act = _act(nxt)
            names.append(nxt.name)
        fused.update(names)
        return names, act

    def conv(layer, shape_in, act):
        """(fused layers, hw/kernel/stride/padding/act) of a convolution, with the
        ZeroPadding2D it reads and the BatchNormalization and activation after it."""
        names, act = tail(layer, act)
        attrs = {"hw": _hw(shape_in), "k": list(layer.kernel_size), "s": list(layer.strides),
                 "pad": layer.padding, "act": act}
        zp = prepad.pop(layer.name, None)
        if zp is not None:
            names = [zp.name] + names
            attrs.update(hw=_hw(zp.input_shape), zp=[list(p) for p in zp.padding])
        return names, attrs

    for layer in model.layers:
        if layer.name in fused or isinstance(layer, L.InputLayer):
            continue
        u = use(layer.name)
        shape_in = layer.input_shape if not isinstance(layer.input_shape, list) else layer.input_shape[0]
        if isinstance(layer, L.ZeroPadding2D):
            nxt = _only_consumer(model, layer)
            if isinstance(nxt, (L.Conv2D, L.DepthwiseConv2D)) and not isinstance(
                    nxt, L.Conv2DTranspose):
                prepad[nxt.name] = layer  # timed with that convolution (see the docstring)
                continue
        if isinstance(layer, L.DepthwiseConv2D) or (
                isinstance(layer, L.Conv2D) and getattr(layer, "groups", 1) != 1):
            own = _own_act(layer)
            names, attrs = conv(layer, shape_in, own if own is not False else None)
            ops.append(Op("depthwise", names, attrs, u.input if u else None, None))
        elif isinstance(layer, L.Conv2D) and not isinstance(layer, L.Conv2DTranspose):
            own = _own_act(layer)
            names, attrs = conv(layer, shape_in, own if own is not False else None)
            ops.append(Op("conv2d", names, {**attrs, "dil": list(layer.dilation_rate)},
                          u.input if u else None, u.output if u else None))
        elif isinstance(layer, L.Dense) and len(shape_in) == 2:
            own = _own_act(layer)
            names, act = tail(layer, own if own is not False else None)
            ops.append(Op("dense", names, {"act": act}, u.input if u else None,
                          u.output if u else None))
            if own is False and layer.activation.__name__ == "softmax":
                ops.append(Op("softmax", [layer.name], {}, u.output if u else None, None))
        elif isinstance(layer, L.Add):
            names, act = tail(layer, None)
            ops.append(Op("add", names, {"hw": _hw(shape_in), "n": len(layer.input_shape),
                                         "act": act}, u.output if u else None, None))
        elif isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D)):
            kind = "maxpool" if isinstance(layer, L.MaxPooling2D) else "avgpool"
            ops.append(Op(kind, [layer.name], {"hw": _hw(shape_in), "k": list(layer.pool_size),
                                               "s": list(layer.strides), "pad": layer.padding},
                          u.input if u else None, None))
        elif isinstance(layer, (L.GlobalAveragePooling2D, L.GlobalMaxPooling2D)):
            kind = "gap" if isinstance(layer, L.GlobalAveragePooling2D) else "gmp"
            ops.append(Op(kind, [layer.name], {"hw": _hw(shape_in)}, u.input if u else None, None))
        elif isinstance(layer, L.Softmax) or (
                isinstance(layer, L.Activation) and _own_act(layer) is False
                and layer.activation.__name__ == "softmax"):  # MobileNet's `predictions`
            ops.append(Op("softmax", [layer.name], {"hw": _hw(shape_in)} if len(shape_in) > 2
                          else {}, u.input if u else None, None))
        elif isinstance(layer, L.Resizing):
            ops.append(Op("resize", [layer.name], {"hw": _hw(shape_in),
                                                   "to": [layer.height, layer.width]},
                          u.input if u else None, None))
        elif isinstance(layer, L.ZeroPadding2D):
            ops.append(Op("pad", [layer.name], {"hw": _hw(shape_in),
                                                "p": [list(p) for p in layer.padding]},
                          u.input if u else None, None))
        elif _act(layer):
            ops.append(Op("act", [layer.name], {"hw": _hw(shape_in), "act": _act(layer)},
                          u.input if u else None, None))
        elif isinstance(layer, (L.Dropout, L.Flatten, L.Reshape)):
            continue  # removed or a free reshape in the .tflite
        else:
            skipped.append(f"{layer.name} ({type(layer).__name__})")
    missing = [op for op in ops if op.cin is None]
    if missing:  # a shared layer: the graph has no single layout for it
        raise ValueError(f"no channel layout for {missing[0].layers[0]}")
    return ops, graph, skipped


def all_signatures(model, round_to: int = 8, min_channels: int = 8, levels: int = 8) -> list[dict]:
    """Every signature the model's ops take at every channel count adaptation may choose."""
    ops, graph, _ = model_ops(model)
    options = {g.root: choices(g.size, round_to, min_channels, levels) for g in prunable(graph)}
    out, seen = [], set()
    for op in ops:
        roots = sorted({graph.find(g) for lay in (op.cin, op.cout) if lay is not None
                        for g, _ in lay.segments} & set(options))
        for combo in itertools.product(*(options[r] for r in roots)):
            sig = op.signature(graph, dict(zip(roots, combo)))
            k = key(sig)
            if k not in seen:
                seen.add(k)
                out.append(sig)
    return out


def signatures(model, counts: dict | None = None) -> list[dict]:
    """The model's op signatures (with groups at `counts`, default: as they are)."""
    ops, graph, _ = model_ops(model)
    return [op.signature(graph, counts) for op in ops]


def build(sig: dict):
    """A tiny tf_keras model that is exactly this op once converted."""
    import tf_keras as keras

    L = keras.layers
    kind, hw = sig["op"], tuple(sig.get("hw", ()))
    c = sig.get("cin")
    act = sig.get("act")

    def activate(x):
        return L.ReLU(6.0 if act == "relu6" else None)(x) if act else x

    if kind == "add":
        ins = [keras.Input((*hw, c)) for _ in range(sig.get("n", 2))]
        return keras.Model(ins, activate(L.Add()(ins)))
    x = keras.Input((*hw, c) if hw or kind not in ("dense", "softmax") else (c,))
    z = L.ZeroPadding2D([tuple(p) for p in sig["zp"]])(x) if "zp" in sig else x
    if kind == "conv2d":
        y = activate(L.Conv2D(sig["cout"], sig["k"], sig["s"], sig["pad"],
                              dilation_rate=sig.get("dil", [1, 1]))(z))
    elif kind == "depthwise":
        y = activate(L.DepthwiseConv2D(sig["k"], sig["s"], sig["pad"])(z))
    elif kind == "dense":
        y = activate(L.Dense(sig["cout"])(x))
    elif kind in ("maxpool", "avgpool"):
        cls = L.MaxPooling2D if kind == "maxpool" else L.AveragePooling2D
        y = cls(sig["k"], sig["s"], sig["pad"])(x)
    elif kind in ("gap", "gmp"):
        y = (L.GlobalAveragePooling2D if kind == "gap" else L.GlobalMaxPooling2D)()(x)
    elif kind == "softmax":
        y = L.Softmax()(x)
    elif kind == "resize":
        y = L.Resizing(*sig["to"], interpolation="bilinear")(x)
    elif kind == "act":
        y = activate(x)
    elif kind == "pad":
        y = L.ZeroPadding2D([tuple(p) for p in sig["p"]])(x)
    else:
        raise ValueError(f"unknown op kind {kind!r}")
    return keras.Model(x, y)
