"""Values in and out of a .tflite's tensors: quantize, dequantize, and fit data to an input's
own spec: shape (resize, channel axis, flatten) and dtype.

The host uses it to write golden inputs for any .tflite (also one made elsewhere), the board to
feed a golden whose inputs were stored in another layout. Data comes as edgepipe's datasets give
it: float images in [0, 1], NHWC (or NHW), or samples already of the tensor's shape.

=========================  =================================================================
tensor (batch excluded)    what a batch of images (N, h, w[, c]) becomes
=========================  =================================================================
``[H, W, C]`` (C 1 or 3)   resized to H x W (bilinear), channels repeated (1->3) or averaged
``[H, W]``                 resized, channel axis dropped (grayscale)
``[D]``                    an H x W x C image flattened row-major (H = W; C 1 or 3, the data's
                           own channel count first), e.g. ``[784]`` = 28 x 28 x 1
=========================  =================================================================

Dtype: floats are quantized with the tensor's scale/zero-point when it has them; an integer
tensor without them takes pixel values (uint8 ``round(255 x)``, int8 that minus 128).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from edge_runner.errors import RunnerError

QUANTIZED_DTYPES = (np.int8, np.uint8, np.int16)
_PIXEL_OFFSET = {np.dtype(np.uint8): 0, np.dtype(np.int8): -128}


def scale_zero_point(detail) -> tuple:
    """(scale, zero_point) of a tensor; scale 0.0 when it is not quantized."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return float(scale), int(zero_point)


def quantize(x: np.ndarray, detail) -> np.ndarray:
    """Float array -> the tensor's dtype, with its scale/zero-point when it is int8/uint8/int16."""
    dtype = np.dtype(detail["dtype"])
    x = np.asarray(x)
    if x.dtype == dtype:
        return x
    scale, zero_point = scale_zero_point(detail)
    if dtype.type in QUANTIZED_DTYPES and scale > 0 and np.issubdtype(x.dtype, np.floating):
        info = np.iinfo(dtype)
        q = np.round(x.astype(np.float64) / scale) + zero_point
        return np.clip(q, info.min, info.max).astype(dtype)
    return x.astype(dtype)


def dequantize(q: np.ndarray, detail) -> np.ndarray:
    """A tensor's values as float32, undoing its scale/zero-point when it is quantized."""
    scale, zero_point = scale_zero_point(detail)
    if np.dtype(detail["dtype"]).type in QUANTIZED_DTYPES and scale > 0:
        return ((q.astype(np.float32) - zero_point) * np.float32(scale)).astype(np.float32)
    if np.issubdtype(q.dtype, np.floating):
        return q.astype(np.float32, copy=False)
    return q


def _square(n: int) -> Optional[int]:
    side = math.isqrt(n) if n > 0 else 0
    return side if side and side * side == n else None


def image_layout(shape, channels: Optional[int] = None) -> Optional[tuple]:
    """(H, W, C) of the image a tensor of `shape` (batch excluded) takes, or None if not an image.
    `channels`: the data's channel count, preferred for a flat `[D]` input."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 3 and shape[-1] in (1, 3):
        return shape
    if len(shape) == 2:
        return (*shape, 1)
    if len(shape) == 1:
        for c in dict.fromkeys((channels or 1, 1, 3)):
            side = _square(shape[0] // c) if shape[0] % c == 0 else None
            if side:
                return side, side, c
    return None


def resize_bilinear(x: np.ndarray, size: tuple) -> np.ndarray:
    """(N, h, w, c) -> (N, H, W, c), bilinear with half-pixel centres (tf.image.resize's
    default, without antialiasing), in numpy."""
    h, w = x.shape[1:3]
    out_h, out_w = size
    if (h, w) == (out_h, out_w):
        return x

    def axis(n_in: int, n_out: int):
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, wy = axis(h, out_h)
    x0, x1, wx = axis(w, out_w)
    x = x.astype(np.float32, copy=False)
    rows = x[:, y0] * (1 - wy)[None, :, None, None] + x[:, y1] * wy[None, :, None, None]
    return rows[:, :, x0] * (1 - wx)[None, None, :, None] + rows[:, :, x1] * wx[None, None, :, None]


def _squeezed(shape: tuple) -> tuple:
    return tuple(d for d in shape if d != 1)


def fit_shape(x: np.ndarray, target: tuple, name: str = "input") -> np.ndarray:
    """Samples `x` (N, ...) reshaped/resized to `target` (the tensor's shape without batch)."""
    n, src = x.shape[0], tuple(x.shape[1:])
    target = tuple(int(d) for d in target)
    if src == target:
        return x
    if math.prod(src) == math.prod(target) and (
            len(src) == 1 or len(target) == 1 or _squeezed(src) == _squeezed(target)):
        return x.reshape(n, *target)  # flatten, unflatten, add or drop a size-1 axis
    image = None
    if x.ndim == 3:
        image = x[..., None]
    elif x.ndim == 4 and src[-1] in (1, 3):
        image = x
    layout = image_layout(target, image.shape[-1] if image is not None else None)
    if image is None or layout is None or not np.issubdtype(x.dtype, np.floating):
        raise RunnerError(
            f'Input "{name}": the data\'s samples have shape {list(src)} but the model expects '
            f"{list(target)}; give float images (any size, 1 or 3 channels, channel axis "
            f"optional) or samples of exactly that shape")
    height, width, channels = layout
    if channels == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    elif channels == 1 and image.shape[-1] == 3:
        image = image.mean(axis=-1, keepdims=True)
    return resize_bilinear(image, (height, width)).reshape(n, *target)


def fit_dtype(x: np.ndarray, detail, name: str = "input") -> np.ndarray:
    """Samples `x` in the tensor's dtype (see the module doc for integer tensors)."""
    dtype = np.dtype(detail["dtype"])
    if x.dtype == dtype:
        return x
    if dtype.kind in "iu" and np.issubdtype(x.dtype, np.floating):
        scale, _ = scale_zero_point(detail)
        if scale > 0:
            return quantize(x, detail)
        if dtype in _PIXEL_OFFSET:
            info = np.iinfo(dtype)
            q = np.round(x.astype(np.float64) * 255.0) + _PIXEL_OFFSET[dtype]
            return np.clip(q, info.min, info.max).astype(dtype)
    if dtype.kind in "iu" and x.dtype.kind in "iu" and not (
            np.can_cast(x.dtype, dtype) or _within(x, dtype)):
        raise RunnerError(f'Input "{name}": the data is {x.dtype.name} but the model takes '
                          f"{dtype.name}; give floats in [0, 1] (or values of that dtype)")
    return x.astype(dtype)


def _within(x: np.ndarray, dtype: np.dtype) -> bool:
    info = np.iinfo(dtype)
    return x.size == 0 or (int(x.min()) >= info.min and int(x.max()) <= info.max)


def fit(x, detail, name: str = "input") -> np.ndarray:
    """Samples `x` (N, ...) as the input tensor `detail` (an interpreter input detail) takes
    them: its shape without the batch axis, then its dtype. RunnerError when they cannot fit."""
    x = np.asarray(x)
    if x.ndim < 1:
        raise RunnerError(f'Input "{name}": expected a batch of samples (N, ...). '
                          f"Received: a scalar")
    return fit_dtype(fit_shape(x, detail["shape"][1:], name), detail, name)
