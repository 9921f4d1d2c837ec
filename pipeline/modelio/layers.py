"""Keras 3 layer → equivalent tf_keras layer(s): the translation table, one rule per difference.

A Keras 3 layer converts when its class is in LAYERS, it comes from Keras itself, its dtype
policy is float32 and every config argument either exists in the tf_keras class (same meaning)
or holds the value that means "off" (NEUTRAL). Activations tf_keras lacks or defines differently
(relu6, hard_sigmoid, hard_silu/hard_swish, leaky_relu) become tf_keras layers computing the
Keras 3 formula. Anything else is one UserError naming the layer: never an approximation.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from pipeline.errors import UserError

#: Keras 3 layer classes whose tf_keras namesake computes the same function from the same config
LAYERS = frozenset("""
    Conv1D Conv2D Conv3D DepthwiseConv1D DepthwiseConv2D SeparableConv1D SeparableConv2D
    Conv1DTranspose Conv2DTranspose Dense BatchNormalization LayerNormalization Activation ReLU
    Softmax ELU LeakyReLU PReLU Add Subtract Multiply Average Maximum Minimum Concatenate Dot
    MaxPooling1D MaxPooling2D AveragePooling1D AveragePooling2D GlobalAveragePooling1D
    GlobalAveragePooling2D GlobalMaxPooling1D GlobalMaxPooling2D Flatten Reshape Permute
    RepeatVector ZeroPadding1D ZeroPadding2D Cropping1D Cropping2D UpSampling1D UpSampling2D
    Dropout SpatialDropout1D SpatialDropout2D GaussianNoise GaussianDropout Rescaling Resizing
    Normalization CenterCrop Embedding Identity
""".split())

#: Keras-3-only arguments and the value under which they change nothing
NEUTRAL: dict[str, Any] = {
    "quantization_config": None, "lora_rank": None, "lora_alpha": None, "rms_scaling": False,
    "data_format": "channels_last", "antialias": False, "pad_to_aspect_ratio": False,
    "fill_mode": "constant", "fill_value": 0.0, "seed": None, "invert": False,
    "synchronized": False, "optional": False, "ragged": False, "sparse": False,
    "gamma_regularizer": None, "beta_regularizer": None, "mask_zero": False,
}

#: Layer arguments every tf_keras layer takes through **kwargs
BASE_ARGS = frozenset({"name", "trainable", "dtype"})

#: activations with the same name and formula in both
SAME_ACTIVATIONS = frozenset("""linear relu sigmoid softmax tanh elu selu softplus softsign
    swish exponential gelu mish""".split())
ALIASES = {"silu": "swish", "hard_swish": "hard_silu"}


def _hard_sigmoid(k, name):
    """Keras 3: relu6(x + 3) / 6 (tf_keras' hard_sigmoid is 0.2 x + 0.5, clipped)."""
    shift = k.layers.Rescaling(1.0 / 6.0, offset=0.5, name=f"{name}_hs_affine")
    clip = k.layers.ReLU(max_value=1.0, name=f"{name}_hs_clip")
    return lambda x: clip(shift(x))


def _hard_silu(k, name):
    hs = _hard_sigmoid(k, name)
    mul = k.layers.Multiply(name=f"{name}_hs_mul")
    return lambda x: mul([x, hs(x)])


#: activation name → builder(tf_keras, layer name) of the layers that compute it
ACTIVATION_LAYERS: dict[str, Callable] = {
    "relu6": lambda k, name: k.layers.ReLU(max_value=6.0, name=f"{name}_relu6"),
    "hard_sigmoid": _hard_sigmoid,
    "hard_silu": _hard_silu,
    "leaky_relu": lambda k, name: k.layers.LeakyReLU(alpha=0.2, name=f"{name}_leaky_relu"),
}


def activation_name(layer_name: str, value: Any) -> str:
    """The activation a config names: 'relu', or a serialized function {'config': 'relu'}."""
    if value is None:
        return "linear"
    if isinstance(value, dict) and value.get("class_name") == "function" \
            and isinstance(value.get("config"), str) and value.get("module") in (
                "keras.activations", "keras.src.activations.activations", None):
        value = value["config"]
    if not isinstance(value, str):
        raise _refuse(layer_name, f"activation {value!r} is not a built-in Keras activation")
    return ALIASES.get(value, value)


def activation_fn(k, layer_name: str, act: str) -> tuple[str, Callable | None]:
    """(activation for the tf_keras layer itself, extra layers to apply after it, or None)."""
    if act in SAME_ACTIVATIONS:
        return act, None
    if act in ACTIVATION_LAYERS:
        return "linear", ACTIVATION_LAYERS[act](k, layer_name)
    raise _refuse(layer_name, f"activation {act!r} has no tf_keras equivalent")


class ConversionError(UserError):
    """A model that has no faithful twin in the other Keras (a layer, argument or dtype)."""


def _refuse(layer_name: str, why: str) -> UserError:
    return ConversionError(f"layer {layer_name!r}: {why}; edgepipe cannot convert this Keras 3 model "
                     f"faithfully to tf_keras (replace the layer with a built-in one, or give "
                     f"edgepipe a tf_keras model or a SavedModel for export only)")


def _accepted(cls) -> set[str]:
    """Constructor arguments of a tf_keras class, following **kwargs up its base classes."""
    names = set(BASE_ARGS)
    for base in cls.__mro__:
        if "__init__" not in vars(base) or base.__name__ in ("Layer", "Module", "object"):
            continue
        params = inspect.signature(base.__init__).parameters
        names |= set(params) - {"self", "kwargs", "args"}
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    return names


def _sub_object(k, kind: str, layer_name: str, key: str, value: Any) -> Any:
    """An initializer/regularizer/constraint config in tf_keras form (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if not isinstance(value, dict) or "class_name" not in value:
        raise _refuse(layer_name, f"{key}={value!r} is not a built-in Keras {kind}")
    module = getattr(k, f"{kind}s")
    name = value["class_name"]
    cls = getattr(module, name, None)
    if cls is None:
        if kind == "initializer":  # weights are copied: an initializer only matters to a reset
            return None
        raise _refuse(layer_name, f"{key} {name!r} has no tf_keras equivalent")
    cfg = {a: b for a, b in (value.get("config") or {}).items() if a in _accepted(cls)}
    return {"class_name": name, "config": cfg}


def check_dtype(layer) -> None:
    policy = getattr(getattr(layer, "dtype_policy", None), "name", "float32")
    if policy != "float32":
        raise ConversionError(f"layer {layer.name!r}: dtype policy {policy!r} (mixed precision) has no "
                        f"faithful tf_keras equivalent here; set keras.config.set_dtype_policy("
                        f"'float32'), rebuild and save the model in float32, then retry")


def make(k, layer) -> tuple[Any, Callable | None]:
    """The tf_keras layer for Keras 3 `layer`, and the activation layers to apply after it."""
    cls_name = type(layer).__name__
    if cls_name not in LAYERS or not type(layer).__module__.startswith("keras.src.layers"):
        what = "a custom class" if not type(layer).__module__.startswith("keras.") else \
            "a Keras 3 layer with no faithful tf_keras equivalent"
        raise _refuse(layer.name, f"{cls_name} is {what}")
    check_dtype(layer)
    tf_cls = getattr(k.layers, cls_name)
    accepted = _accepted(tf_cls)
    config, post = {}, None
    for key, value in layer.get_config().items():
        if key == "dtype":
            config[key] = "float32"
        elif key == "activation":
            act, post = activation_fn(k, layer.name, activation_name(layer.name, value))
            config[key] = act
        elif key.endswith(("_initializer", "_regularizer", "_constraint")) and key in accepted:
            kind = key.rsplit("_", 1)[1]
            sub = _sub_object(k, kind, layer.name, key, value)
            if sub is not None:
                config[key] = sub
        elif cls_name == "LeakyReLU" and key == "negative_slope":
            config["alpha"] = value
        elif key in accepted:
            config[key] = value
        elif key not in NEUTRAL or NEUTRAL[key] != value:
            raise _refuse(layer.name, f"{cls_name} argument {key}={value!r} has no tf_keras "
                                      f"equivalent")
    if cls_name == "Activation" and post is not None:  # the activation layers are the layer
        return None, post
    return tf_cls.from_config(config), post
