"""Datasets: digits (embedded), npz, image folder, tfds. All end as float32 NHWC in [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.errors import UserError, did_you_mean


class DatasetSpec(BaseModel):
    """`dataset:` in a recipe. A bare string is shorthand for `{name: ...}`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="digits | npz | image_dir | tfds:NAME")
    path: str | None = Field(None, description="file (npz) or folder (image_dir)")
    input_size: tuple[int, int] | None = Field(
        None, description="resize images to [height, width]; digits default [32, 32]")
    channels: Literal[1, 3] | None = Field(None, description="1 (grayscale) or 3 (RGB)")
    val_split: float = Field(0.1, gt=0, lt=1)
    test_split: float = Field(0.2, gt=0, lt=1)
    calibration_size: int = Field(200, ge=1, description="samples drawn from train for int8 calibration")
    train_fraction: float = Field(1.0, gt=0, le=1, description="keep this fraction of training samples")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        base = v.split(":", 1)[0]
        if base not in LOADERS:
            raise ValueError(f"unknown dataset {v!r}{did_you_mean(base, LOADERS)}; "
                             f"expected one of: {', '.join(sorted(LOADERS))}")
        return v


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    seed: int = 0
    calibration_size: int = 200

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    def calibration(self, n: int | None = None) -> np.ndarray:
        """A seeded subset of the training inputs, for int8 calibration and activation criteria."""
        n = min(n or self.calibration_size, len(self.x_train))
        idx = np.random.default_rng(self.seed + 1).choice(len(self.x_train), n, replace=False)
        return self.x_train[np.sort(idx)]


def _resize(x: np.ndarray, size: tuple[int, int] | None, channels: int | None) -> np.ndarray:
    """NHWC float images → `size` and `channels` (bilinear, via TensorFlow)."""
    if x.ndim == 3:
        x = x[..., None]
    if channels == 3 and x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    elif channels == 1 and x.shape[-1] == 3:
        x = x.mean(axis=-1, keepdims=True)
    if size is not None and tuple(x.shape[1:3]) != tuple(size):
        import tensorflow as tf

        x = tf.image.resize(x, size, method="bilinear").numpy()
    return x.astype(np.float32)


def _load_digits(spec: DatasetSpec):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)  # 8x8, values 0..16
    return _resize(x, spec.input_size or (32, 32), spec.channels or 1), d.target.astype(np.int64), None


def _load_npz(spec: DatasetSpec):
    if not spec.path:
        raise UserError("dataset npz needs `path:` to a .npz file with x_train, y_train, x_test, "
                        "y_test (or x, y)")
    p = Path(spec.path)
    if not p.is_file():
        raise UserError(f"dataset file not found: {p}")
    try:
        z = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {p} as .npz: {e}") from None
    keys = set(z.files)
    if {"x_train", "y_train", "x_test", "y_test"} <= keys:
        xtr, xte = _as_images(z["x_train"], spec), _as_images(z["x_test"], spec)
        return xtr, z["y_train"].astype(np.int64), (xte, z["y_test"].astype(np.int64))
    if {"x", "y"} <= keys:
        return _as_images(z["x"], spec), z["y"].astype(np.int64), None
    raise UserError(f"{p} holds arrays {sorted(keys)}; expected x_train, y_train, x_test, y_test "
                    f"or x, y")


def _as_images(x: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    x = x.astype(np.float32)
    if x.max(initial=0) > 1.5:  # 0..255 pixels
        x = x / 255.0
    return _resize(x, spec.input_size, spec.channels)


def _load_image_dir(spec: DatasetSpec):
    if not spec.path or not Path(spec.path).is_dir():
        raise UserError(f"dataset image_dir needs `path:` to a folder with one sub-folder per "
                        f"class; not a folder: {spec.path}")
    import tf_keras as keras

    size = spec.input_size or (64, 64)
    mode = "grayscale" if spec.channels == 1 else "rgb"
    ds = keras.utils.image_dataset_from_directory(
        spec.path, image_size=size, color_mode=mode, batch_size=None, shuffle=False)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds]) if ds.cardinality() else ((), ())
    if not xs:
        raise UserError(f"no images found under {spec.path}")
    return np.stack(xs).astype(np.float32) / 255.0, np.array(ys, dtype=np.int64), None


def _load_tfds(spec: DatasetSpec):
    name = spec.name.split(":", 1)[1] if ":" in spec.name else ""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UserError("dataset tfds:NAME needs tensorflow-datasets: pip install "
                        "tensorflow-datasets") from None
    try:
        (xtr, ytr), (xte, yte) = tfds.as_numpy(tfds.load(
            name, split=["train", "test"], as_supervised=True, batch_size=-1))
    except Exception as e:  # tfds raises many kinds (network, not found, checksum)
        raise UserError(f"cannot load tfds:{name} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                        f"offline, download it first or use npz/image_dir") from None
    return _as_images(xtr, spec), ytr.astype(np.int64), (_as_images(xte, spec), yte.astype(np.int64))


LOADERS: dict[str, Callable] = {"digits": _load_digits, "npz": _load_npz,
                                "image_dir": _load_image_dir, "tfds": _load_tfds}


def _split(x, y, frac, rng):
    """Stratified-enough seeded split: shuffle, then take `frac` for the second part."""
    idx = rng.permutation(len(x))
    n2 = max(1, int(round(len(x) * frac)))
    a, b = idx[n2:], idx[:n2]
    return x[a], y[a], x[b], y[b]


def load_dataset(spec: DatasetSpec | str | dict, seed: int = 0) -> Dataset:
    if isinstance(spec, str):
        spec = DatasetSpec(name=spec)
    elif isinstance(spec, dict):
        spec = DatasetSpec(**spec)
    x, y, test = LOADERS[spec.name.split(":", 1)[0]](spec)
    rng = np.random.default_rng(seed)
    if test is None:
        x, y, xte, yte = _split(x, y, spec.test_split, rng)
    else:
        xte, yte = test
    xtr, ytr, xva, yva = _split(x, y, spec.val_split, rng)
    if spec.train_fraction < 1:
        keep = np.sort(rng.permutation(len(xtr))[: max(1, int(len(xtr) * spec.train_fraction))])
        xtr, ytr = xtr[keep], ytr[keep]
    num_classes = int(max(y.max(), yte.max())) + 1
    return Dataset(spec.name, xtr, ytr, xva, yva, xte, yte, num_classes, seed,
                   spec.calibration_size)
