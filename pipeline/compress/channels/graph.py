"""Channel dependency graph: which layers must keep the same channel indices.

Every tensor of the model gets a `Layout`: its last (channel) axis described as `repeat`
repetitions of a list of segments, each segment being one channel *group*. Producers (Conv, Dense,
SeparableConv pointwise, ConvTranspose) start a new group; channel-wise layers (BatchNorm,
activations, DepthwiseConv, pooling, padding, dropout, ...) pass the layout through; Flatten
multiplies `repeat` by the spatial size; Concatenate joins segments; Add / Multiply / ... unite the
groups of their inputs (union-find). Consumers slice their input axis by the layout.

A group is *frozen* (kept whole) when anything touching it cannot follow a channel removal: an
unsupported layer, the model input or output, a protected layer. Every freeze records its reason,
so the report can say which groups were left unpruned and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tf_keras as keras

L = keras.layers


def _types(*names: str) -> tuple:
    """Layer classes by name, skipping any this tf_keras version lacks."""
    return tuple(getattr(L, n) for n in names if hasattr(L, n))


#: producers: kernel input axis, kernel output axis (weights named kernel/pointwise_kernel, bias)
CONV = _types("Conv1D", "Conv2D", "Conv3D")
CONV_T = _types("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
SEPARABLE = _types("SeparableConv1D", "SeparableConv2D")
DENSE = _types("Dense")
PRODUCERS = CONV + CONV_T + SEPARABLE + DENSE
DEPTHWISE = _types("DepthwiseConv1D", "DepthwiseConv2D")
BATCHNORM = _types("BatchNormalization")
#: weightless layers that act on each channel separately (or only move spatial positions)
STATELESS = _types(
    "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization", "Identity",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D")
MERGE = _types("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
def _elementwise_activations() -> tuple:
    out = []
    for n in ("linear", "relu", "relu6", "sigmoid", "hard_sigmoid", "tanh", "swish", "silu",
              "gelu", "elu", "selu", "softplus", "softsign", "exponential", "mish"):
        try:
            out.append(keras.activations.get(n))
        except ValueError:
            continue
    return tuple(out)


#: element-wise activations: a removed channel does not change any other channel's value
ELEMENTWISE_ACTIVATIONS = _elementwise_activations()


@dataclass(frozen=True)
class Layout:
    """The channel axis of one tensor: `repeat` x (segments of (group id, size)).

    Flatten turns (H, W, C) into H*W repetitions of the C channels, index = position * C + c.
    """

    segments: tuple = ()
    repeat: int = 1

    @property
    def width(self) -> int:
        return sum(s for _, s in self.segments)

    @property
    def length(self) -> int:
        return self.repeat * self.width


@dataclass
class Group:
    """A set of channels that must be kept or removed together, in every member layer."""

    size: int
    producers: list = field(default_factory=list)
    layers: list = field(default_factory=list)
    reasons: list = field(default_factory=list)
    root: int = -1   # its union-find root
    id: int = -1     # its index in `ChannelGraph.groups()` (report order)

    @property
    def frozen(self) -> bool:
        return bool(self.reasons)


@dataclass
class LayerUse:
    """How one (non-shared) layer touches channels: kind, input and output layouts."""

    kind: str  # producer | separable | depthwise | grouped | batchnorm | prelu | reshape | other
    inputs: list
    outputs: list

    @property
    def input(self):
        return self.inputs[0] if len(self.inputs) == 1 else None

    @property
    def output(self):
        return self.outputs[0] if len(self.outputs) == 1 else None


class ChannelGraph:
    """Union-find over channel groups, plus each tensor's and each layer's layout."""

    def __init__(self):
        self._parent: list[int] = []
        self._groups: dict[int, Group] = {}
        self.tensors: dict[tuple, Layout] = {}      # tensor key -> layout
        self.keras_tensors: dict[tuple, object] = {}
        self.consumer_inputs: list[tuple] = []      # tensor keys a producer reads
        self.layers: dict[str, LayerUse] = {}       # single-node layers
        self.nodes: dict[str, list] = {}            # layer name -> [(in layouts, out layouts)]

    # --- union-find --------------------------------------------------------------------------
    def find(self, g: int) -> int:
        while self._parent[g] != g:
            self._parent[g] = self._parent[self._parent[g]]
            g = self._parent[g]
        return g

    def group(self, g: int) -> Group:
        return self._groups[self.find(g)]

    def new_group(self, size: int, producer: str | None = None,
                  reason: str | None = None) -> Layout:
        gid = len(self._parent)
        self._parent.append(gid)
        self._groups[gid] = Group(size=int(size), producers=[producer] if producer else [],
                                  layers=[producer] if producer else [],
                                  reasons=[reason] if reason else [], root=gid)
        return Layout(((gid, int(size)),), 1)

    def _union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        ga, gb = self._groups[ra], self._groups.pop(rb)
        self._parent[rb] = ra
        ga.producers += [p for p in gb.producers if p not in ga.producers]
        ga.layers += [n for n in gb.layers if n not in ga.layers]
        ga.reasons += [r for r in gb.reasons if r not in ga.reasons]

    def unite(self, layouts: list, where: str) -> Layout:
        """Make equal-shaped layouts share groups (Add, Multiply, ...); freeze on a mismatch."""
        first = layouts[0]
        same = all(lay.repeat == first.repeat and [s for _, s in lay.segments]
                   == [s for _, s in first.segments] for lay in layouts)
        if not same:
            for lay in layouts:
                self.freeze(lay, f"'{where}' merges tensors whose channels are laid out "
                                 f"differently")
            return first
        for lay in layouts[1:]:
            for (ga, _), (gb, _) in zip(first.segments, lay.segments):
                self._union(ga, gb)
        return first

    def freeze(self, layout: Layout, reason: str) -> None:
        for g, _ in layout.segments:
            grp = self.group(g)
            if reason not in grp.reasons:
                grp.reasons.append(reason)

    def add_layer(self, layout: Layout, name: str) -> None:
        for g, _ in layout.segments:
            grp = self.group(g)
            if name not in grp.layers:
                grp.layers.append(name)

    # --- queries -----------------------------------------------------------------------------
    def groups(self) -> list[Group]:
        """The root groups in creation order, with stable ids 0..n-1."""
        out = [self._groups[r] for r in sorted(self._groups)]
        for i, g in enumerate(out):
            g.id = i
        return out

    @staticmethod
    def root_of(group: Group) -> int:
        return group.root

    def positions(self, layout: Layout, group: Group) -> list[np.ndarray]:
        """Index arrays (one per occurrence) of `group`'s channels in `layout`'s axis."""
        root = self.root_of(group)
        out, offset = [], 0
        for r in range(layout.repeat):
            for g, size in layout.segments:
                if self.find(g) == root:
                    out.append(np.arange(offset, offset + size))
                offset += size
        return out

    def keep_indices(self, layout, keeps: dict) -> np.ndarray | None:
        """Surviving indices of `layout`'s axis given `keeps` (root -> kept indices); None = all."""
        if layout is None or not any(self.find(g) in keeps for g, _ in layout.segments):
            return None
        parts, offset = [], 0
        for _ in range(layout.repeat):
            for g, size in layout.segments:
                k = keeps.get(self.find(g))
                parts.append(offset + (np.arange(size) if k is None else np.asarray(k)))
                offset += size
        return np.concatenate(parts).astype(np.int64)

    def layer_groups(self, name: str, side: str = "out") -> list[Group]:
        """Groups of a layer's outputs (side='out') or inputs (side='in'), over all its nodes."""
        seen, out = set(), []
        for ins, outs in self.nodes.get(name, []):
            for lay in (outs if side == "out" else ins):
                for g, _ in lay.segments:
                    r = self.find(g)
                    if r not in seen:
                        seen.add(r)
                        out.append(self._groups[r])
        return out


def build_graph(model) -> ChannelGraph:
    """Walk a built Sequential/functional tf_keras model and return its channel graph."""
    graph = ChannelGraph()
    node_count: dict[str, int] = {}
    for depth in model._nodes_by_depth:
        for node in model._nodes_by_depth[depth]:
            node_count[node.layer.name] = node_count.get(node.layer.name, 0) + 1
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            _visit(graph, node, shared=node_count[node.layer.name] > 1)
    for t in model.outputs:
        graph.freeze(graph.tensors[_key(t)], "reaches the model output")
    return graph


def _key(t) -> tuple:
    h = t._keras_history
    return (h.layer.name, h.node_index, h.tensor_index)


def _channels(t):
    shape = t.shape
    return None if shape.rank is None or shape.rank == 0 else shape[-1]


def _visit(graph: ChannelGraph, node, shared: bool) -> None:
    layer = node.layer
    in_keys = [_key(t) for t in node.keras_inputs]
    ins = [graph.tensors[k] for k in in_keys]
    out_ts = [t for t in _flatten(node.outputs)]
    outs = None
    if isinstance(layer, L.InputLayer) or node.is_input:
        outs = [graph.new_group(_channels(t) or 0, reason="model input") for t in out_ts]
    elif shared and (layer.weights or isinstance(layer, L.Reshape)):
        why = f"layer '{layer.name}' is shared (called more than once)"
    else:
        handler = _HANDLERS.get(type(layer))
        why = None
        if handler is None:
            why = f"unsupported layer '{layer.name}' ({type(layer).__name__})"
        elif len(out_ts) != 1 or not ins:
            why = (f"layer '{layer.name}' ({type(layer).__name__}) with {len(ins)} inputs, "
                   f"{len(out_ts)} outputs")
        elif getattr(layer, "data_format", "channels_last") == "channels_first":
            why = f"layer '{layer.name}' uses data_format='channels_first'"
        else:
            result = handler(graph, layer, node, ins, out_ts[0])
            if isinstance(result, str):
                why = result
            else:
                kind, out = result
                if out.length != (_channels(out_ts[0]) or -1):
                    why = f"layer '{layer.name}' ({type(layer).__name__}) changes its channel axis"
                else:
                    outs = [out]
                    if not shared:
                        graph.layers[layer.name] = LayerUse(kind, ins, outs)
                    if kind in ("producer", "separable"):
                        graph.consumer_inputs.append(in_keys[0])
    if outs is None:  # cannot follow channel removal through this layer: freeze around it
        for lay in ins:
            graph.freeze(lay, why)
        maker = layer.name if layer.weights else None  # listed among the skipped groups
        outs = [graph.new_group(_channels(t) or 0, producer=maker, reason=why) for t in out_ts]
        graph.layers.setdefault(layer.name, LayerUse("other", ins, outs))
    for lay in ins + outs:
        if layer.weights:
            graph.add_layer(lay, layer.name)
    graph.nodes.setdefault(layer.name, []).append((ins, outs))
    for t, lay in zip(out_ts, outs):
        graph.tensors[_key(t)] = lay
        graph.keras_tensors[_key(t)] = t


def _flatten(x):
    if isinstance(x, (list, tuple)):
        return [y for item in x for y in _flatten(item)]
    if isinstance(x, dict):
        return [y for item in x.values() for y in _flatten(item)]
    return [x]


# --- handlers: (graph, layer, node, input layouts, output tensor) -> (kind, layout) | why
def _activation_ok(layer) -> bool:
    act = getattr(layer, "activation", None)
    return act is None or act in ELEMENTWISE_ACTIVATIONS


def _producer(graph, layer, node, ins, out_t):
    groups = getattr(layer, "groups", 1)
    if groups != 1:
        if groups == ins[0].length == layer.filters and _activation_ok(layer):
            return "grouped", ins[0]  # depthwise written as Conv2D(groups=C): channel-wise
        return f"grouped convolution '{layer.name}' (groups={groups})"
    kind = "producer"
    if isinstance(layer, SEPARABLE):
        kind = "separable"
        if layer.depth_multiplier != 1:
            graph.freeze(ins[0], f"'{layer.name}' has depth_multiplier={layer.depth_multiplier}")
    out = graph.new_group(_channels(out_t), producer=layer.name)
    if not _activation_ok(layer):
        graph.freeze(out, f"activation of '{layer.name}' mixes channels")
    return kind, out


def _depthwise(graph, layer, node, ins, out_t):
    if layer.depth_multiplier != 1:
        return f"'{layer.name}' has depth_multiplier={layer.depth_multiplier}"
    if not _activation_ok(layer):
        return f"activation of '{layer.name}' mixes channels"
    return "depthwise", ins[0]


def _batchnorm(graph, layer, node, ins, out_t):
    rank = node.keras_inputs[0].shape.rank
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    axes = [a % rank for a in axes]
    if axes != [rank - 1]:
        return f"BatchNormalization '{layer.name}' normalizes axis {layer.axis}, not channels"
    return "batchnorm", ins[0]


def _stateless(graph, layer, node, ins, out_t):
    return "other", ins[0]


def _activation(graph, layer, node, ins, out_t):
    if not _activation_ok(layer):
        return f"activation '{layer.name}' mixes channels"
    return "other", ins[0]


def _prelu(graph, layer, node, ins, out_t):
    return "prelu", ins[0]


def _rescaling(graph, layer, node, ins, out_t):
    if np.ndim(layer.scale) or np.ndim(layer.offset):
        return f"Rescaling '{layer.name}' has per-channel scale/offset"
    return "other", ins[0]


def _flatten_layer(graph, layer, node, ins, out_t):
    dims = node.keras_inputs[0].shape[1:-1]
    if any(d is None for d in dims):
        return f"Flatten '{layer.name}' has an unknown spatial size"
    return "other", Layout(ins[0].segments, ins[0].repeat * int(np.prod(dims, dtype=np.int64)))


def _reshape(graph, layer, node, ins, out_t):
    src, dst = node.keras_inputs[0].shape, out_t.shape
    if src[-1] is not None and src[-1] == dst[-1]:
        return "reshape", ins[0]  # channels stay innermost: same layout
    if dst.rank == 2 and dst[-1] is not None and ins[0].width and dst[-1] % ins[0].width == 0:
        return "reshape", Layout(ins[0].segments, dst[-1] // ins[0].width)  # flatten-like
    return f"Reshape '{layer.name}' moves channels to another axis"


def _merge(graph, layer, node, ins, out_t):
    c = _channels(out_t)
    full = [lay for lay, t in zip(ins, node.keras_inputs) if _channels(t) == c]
    if not full:
        return f"'{layer.name}' broadcasts every input"
    return "other", graph.unite(full, layer.name)  # size-1 broadcast inputs stay independent


def _concatenate(graph, layer, node, ins, out_t):
    rank = out_t.shape.rank
    if layer.axis % rank != rank - 1:
        return "other", graph.unite(ins, layer.name)  # along a spatial axis: same channels
    if any(lay.repeat != 1 for lay in ins):
        return f"Concatenate '{layer.name}' joins flattened tensors"
    return "other", Layout(tuple(s for lay in ins for s in lay.segments), 1)


#: TFOpLambda functions (`x + 3.0`, `tf.nn.relu(x)`, ...) that act on each element alone
ELEMENTWISE_OPS = frozenset((
    "__operators__.add", "math.add", "math.subtract", "math.multiply", "math.truediv",
    "math.divide", "math.negative", "math.maximum", "math.minimum", "math.abs", "math.square",
    "math.sigmoid", "math.tanh", "math.exp", "math.softplus", "math.pow", "nn.relu", "nn.relu6",
    "nn.elu", "nn.selu", "nn.gelu", "nn.silu", "nn.swish", "nn.leaky_relu", "nn.sigmoid",
    "nn.tanh", "clip_by_value", "identity"))


def _tf_op(graph, layer, node, ins, out_t):
    if layer.symbol not in ELEMENTWISE_OPS:
        return f"unsupported layer '{layer.name}' ({type(layer).__name__})"
    tensors = {id(t) for t in node.keras_inputs}
    others = [a for a in _flatten([node.call_args, list(node.call_kwargs.values())])
              if a is not None and not isinstance(a, str) and id(a) not in tensors]
    if any(np.ndim(a) != 0 for a in others):
        return f"'{layer.name}' applies a non-scalar constant to the channels"
    if len(ins) == 1:
        return "other", ins[0]
    return _merge(graph, layer, node, ins, out_t)


_HANDLERS = {}
for _cls in PRODUCERS:
    _HANDLERS[_cls] = _producer
for _cls in DEPTHWISE:
    _HANDLERS[_cls] = _depthwise
for _cls in BATCHNORM:
    _HANDLERS[_cls] = _batchnorm
for _cls in STATELESS:
    _HANDLERS[_cls] = _stateless
for _cls in MERGE:
    _HANDLERS[_cls] = _merge
try:  # what functional code like `x + 3.0` or `tf.nn.relu(x)` turns into
    from tf_keras.src.layers.core.tf_op_layer import TFOpLambda
    _HANDLERS[TFOpLambda] = _tf_op
except ImportError:  # another tf_keras layout: such ops stay unsupported (groups frozen)
    pass
_HANDLERS.update({L.Activation: _activation, L.PReLU: _prelu, L.Rescaling: _rescaling,
                  L.Flatten: _flatten_layer, L.Reshape: _reshape, L.Concatenate: _concatenate})
