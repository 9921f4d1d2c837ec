"""Model builders. Each takes (input_shape, num_classes, **options) and returns a tf_keras model
(`num_classes`: a regressor's output units; unused by the autoencoder).

`mobilenet` is the searchable MobileNetV2-style family the `nas` stage explores: width multiplier,
blocks per stage, kernel size, expansion ratio, dropout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import tf_keras as keras

# tf_keras is imported inside the builders: validating a recipe must not load TensorFlow.


def _make_divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_trunk(x, filters: Sequence[int], dense: int):
    """Conv-BN-ReLU-pool blocks, flatten, a ReLU dense layer (small_cnn's and two_head_cnn's)."""
    from tf_keras import layers

    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    return layers.Dense(dense, activation="relu", name="fc")(x)


def small_cnn(input_shape, num_classes, filters: Sequence[int] = (16, 32), dense: int = 64,
              dropout: float = 0.2) -> keras.Model:
    """Conv-BN-ReLU blocks with max pooling, then a dense head: the default recipe's model."""
    import tf_keras as keras
    from tf_keras import layers

    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = _conv_trunk(inputs, filters, dense)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


#: (base channels, stride of the first block) per stage of the `mobilenet` family.
MOBILENET_STAGES = ((16, 1), (24, 2), (32, 2), (64, 2), (96, 1))


def _inverted_residual(x, out_ch: int, stride: int, expansion: int, kernel: int, name: str,
                       bn=None):
    from tf_keras import layers

    bn = bn or layers.BatchNormalization
    in_ch = x.shape[-1]
    y = x
    if expansion != 1:
        y = layers.Conv2D(in_ch * expansion, 1, use_bias=False, name=f"{name}_expand")(y)
        y = bn(name=f"{name}_expand_bn")(y)
        y = layers.ReLU(6.0, name=f"{name}_expand_relu")(y)
    y = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                               name=f"{name}_dw")(y)
    y = bn(name=f"{name}_dw_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu")(y)
    y = layers.Conv2D(out_ch, 1, use_bias=False, name=f"{name}_project")(y)
    y = bn(name=f"{name}_project_bn")(y)
    if stride == 1 and in_ch == out_ch:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def mobilenet(input_shape, num_classes, width: float = 1.0,
              blocks: Sequence[int] = (1, 2, 2, 2, 1), kernel: int | Sequence[int] = 3,
              expansion: int = 6, stem_stride: int = 2, head_channels: int = 256,
              dropout: float = 0.2, resolution: int | Sequence[int] | None = None,
              bn_momentum: float = 0.99) -> keras.Model:
    """MobileNetV2-style network: stem, inverted-residual stages, 1x1 head, pooling, classifier.

    `blocks` gives blocks per stage (0 drops a stage; up to 5 stages), `kernel` the depthwise
    kernel size (one value or one per stage), `width` scales every channel count.
    `resolution` (one side or [height, width]) puts a bilinear Resizing layer after the input, so
    the network computes at that size while taking the data at its own size (searched by `nas`).
    `bn_momentum` 0.9 suits short trainings on small data (the moving statistics catch up).
    """
    import tf_keras as keras
    from tf_keras import layers

    if not 0 < width <= 4:
        raise ValueError(f"Expected width in (0, 4]. Received: width={width}")
    if len(blocks) > len(MOBILENET_STAGES):
        raise ValueError(f"Expected at most {len(MOBILENET_STAGES)} stages. "
                         f"Received: blocks={list(blocks)}")
    kernels = [kernel] * len(blocks) if isinstance(kernel, int) else list(kernel)
    if len(kernels) != len(blocks):
        raise ValueError(f"Expected one kernel per stage ({len(blocks)}). Received: kernel={kernel}")
    if not 0 < bn_momentum < 1:
        raise ValueError(f"Expected bn_momentum in (0, 1). Received: bn_momentum={bn_momentum}")

    def bn(name):
        return layers.BatchNormalization(momentum=bn_momentum, name=name)

    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = inputs
    if resolution is not None:
        size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"Expected resolution as one side or [height, width] >= 1. "
                             f"Received: resolution={resolution}")
        if size != tuple(input_shape[:2]):
            x = layers.Resizing(*size, interpolation="bilinear", name="resize")(x)
    x = layers.Conv2D(_make_divisible(32 * width), 3, strides=stem_stride, padding="same",
                      use_bias=False, name="stem")(x)
    x = bn(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    for s, (n, k) in enumerate(zip(blocks, kernels)):
        ch, stride = MOBILENET_STAGES[s]
        for b in range(n):
            x = _inverted_residual(x, _make_divisible(ch * width), stride if b == 0 else 1,
                                   1 if s == 0 else expansion, k, name=f"s{s}b{b}", bn=bn)
    x = layers.Conv2D(_make_divisible(head_channels * max(1.0, width)), 1, use_bias=False,
                      name="head")(x)
    x = bn(name="head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="mobilenet")


def mlp(input_shape, num_classes, hidden: Sequence[int] = (64, 32), output: str = "linear",
        dropout: float = 0.0) -> keras.Model:
    """Dense layers on vector inputs (tabular features): a regressor with `output: linear`
    (`num_classes` outputs; 1 for a scalar target) or a classifier with `output: softmax`."""
    import tf_keras as keras
    from tf_keras import layers

    if output not in ("linear", "softmax"):
        raise ValueError(f"Expected output linear or softmax. Received: output={output!r}")
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
    for i, units in enumerate(hidden):
        x = layers.Dense(units, activation="relu", name=f"fc{i}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"dropout{i}")(x)
    outputs = layers.Dense(num_classes or 1, activation=None if output == "linear" else output,
                           name="output")(x)
    return keras.Model(inputs, outputs, name="mlp")


def two_head_cnn(input_shape, num_classes, filters: Sequence[int] = (16, 32),
                 dense: int = 64) -> keras.Model:
    """small_cnn's trunk with two heads: `class` (softmax over num_classes) and `value` (one
    linear unit), for data with targets y__class and y__value."""
    import tf_keras as keras
    from tf_keras import layers

    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = _conv_trunk(inputs, filters, dense)
    cls = layers.Dense(num_classes or 10, activation="softmax", name="class")(x)
    value = layers.Dense(1, name="value")(x)
    return keras.Model(inputs, [cls, value], name="two_head_cnn")


def autoencoder(input_shape, num_classes=None, filters: Sequence[int] = (16, 8)) -> keras.Model:
    """Convolutional autoencoder: strided conv encoder, upsampling decoder, sigmoid output
    of the input's shape (height and width divisible by 2**len(filters)). `num_classes` is
    unused: it reconstructs its input (task fidelity)."""
    import tf_keras as keras
    from tf_keras import layers

    h, w, c = input_shape
    if h % 2 ** len(filters) or w % 2 ** len(filters):
        raise ValueError(f"Expected height and width divisible by {2 ** len(filters)}. "
                         f"Received: input_shape={list(input_shape)}")
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = inputs
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 3, strides=2, padding="same", activation="relu", name=f"enc{i}")(x)
    for i, f in enumerate(reversed(filters)):  # upsample + conv: TF-MOT QATs it (not
        x = layers.UpSampling2D(2, name=f"up{i}")(x)  # Conv2DTranspose)
        x = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"dec{i}")(x)
    outputs = layers.Conv2D(c, 3, padding="same", activation="sigmoid", name="reconstruction")(x)
    return keras.Model(inputs, outputs, name="autoencoder")


BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "small_cnn": small_cnn, "mobilenet": mobilenet, "mlp": mlp, "two_head_cnn": two_head_cnn,
    "autoencoder": autoencoder}
