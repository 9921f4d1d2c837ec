"""Datasets: digits (embedded), npz, image folder, tfds. All end as float32 NHWC in [0, 1]."""

from __future__ import annotations

import logging
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.errors import UserError, did_you_mean

log = logging.getLogger("edgepipe")


class DatasetSpec(BaseModel):
    """`dataset:` in a recipe. A bare string is shorthand for `{name: ...}`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="digits | diabetes | npz | image_dir | tfds:NAME")
    path: str | None = Field(None, description="file (npz) or folder (image_dir)")
    input_size: tuple[int, int] | None = Field(
        None, description="resize images to [height, width]; digits default [32, 32]")
    channels: Literal[1, 3] | None = Field(None, description="1 (grayscale) or 3 (RGB)")
    val_split: float = Field(0.1, gt=0, lt=1)
    test_split: float = Field(0.2, gt=0, lt=1)
    calibration_size: int = Field(200, ge=1, description="samples drawn from train for int8 calibration")
    train_fraction: float = Field(1.0, gt=0, le=1, description="keep this fraction of training samples")
    skip_bad_images: bool = Field(False, description="image_dir: skip files that do not decode "
                                  "(with a warning and a count) instead of refusing the dataset")
    target: Literal["class", "value", "class+value"] = Field(
        "class", description="digits: the class label; its value as a float (regression); or "
                             "both, as targets of the outputs `class` and `value`")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        base = v.split(":", 1)[0]
        if base not in LOADERS:
            raise ValueError(f"unknown dataset {v!r}{did_you_mean(base, LOADERS)}; "
                             f"expected one of: {', '.join(sorted(LOADERS))}")
        return v

    @model_validator(mode="after")
    def _target_of_digits(self) -> "DatasetSpec":
        if self.target != "class" and self.name != "digits":
            raise ValueError(f"target applies to dataset digits, not {self.name}")
        if self.skip_bad_images and self.name != "image_dir":
            raise ValueError(f"skip_bad_images applies to dataset image_dir, not {self.name}")
        return self


@dataclass
class Dataset:
    """Splits of inputs and targets. A model with several inputs gets `x_*` as {input name: array}
    (npz keys `x_train__<input>`); several outputs `y_*` as {output name: array}
    (`y_train__<output>`); an x-only npz has `y_*` None (task fidelity)."""

    name: str
    x_train: Any
    y_train: Any
    x_val: Any
    y_val: Any
    x_test: Any
    y_test: Any
    num_classes: int | None  # integer labels of one output: their count; else None
    seed: int = 0
    calibration_size: int = 200
    task: Any = None  # the pipeline.tasks.Task bound to this data and model (tasks.bind)

    @property
    def multi_input(self) -> bool:
        return isinstance(self.x_train, dict)

    @property
    def multi_output(self) -> bool:
        return isinstance(self.y_train, dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One input's sample shape (the first input's, for several: see input_shapes)."""
        return next(iter(self.input_shapes.values()))

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        xs = self.x_train if self.multi_input else {"": self.x_train}
        return {k: tuple(int(d) for d in v.shape[1:]) for k, v in xs.items()}

    def calibration(self, n: int | None = None) -> Any:
        """A seeded subset of the training inputs (every input), for int8 calibration and
        activation criteria."""
        size = num_samples(self.x_train)
        n = min(n or self.calibration_size, size)
        idx = np.random.default_rng(self.seed + 1).choice(size, n, replace=False)
        return take(self.x_train, np.sort(idx))


def num_samples(a: Any) -> int:
    return len(next(iter(a.values()))) if isinstance(a, dict) else len(a)


def take(a: Any, idx) -> Any:
    """Rows `idx` of an array, of every array of a dict, or None."""
    if a is None:
        return None
    if isinstance(a, dict):
        return {k: v[idx] for k, v in a.items()}
    return a[idx]


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
    labels = d.target.astype(np.int64)
    y = {"class": labels, "value": labels.astype(np.float32)}
    return (_resize(x, spec.input_size or (32, 32), spec.channels or 1),
            y if spec.target == "class+value" else y[spec.target], None)


def _load_npz(spec: DatasetSpec):
    if not spec.path:
        raise UserError("dataset npz needs `path:` to a .npz file with x_train, y_train, x_test, "
                        "y_test (or x, y)")
    p = Path(spec.path)
    if not p.is_file():
        raise UserError(f"dataset file not found: {p}")
    return npz_arrays(_read_npz(p), p, spec)


_RESAVE = "re-create it with numpy.savez(path, x=images, y=labels)"
_ZIP_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


class _Npz:
    """An open .npz whose arrays read with one clear line on error (a pickle, a cut file)."""

    def __init__(self, path: Path, npz):
        self.path, self.npz, self.files = path, npz, npz.files

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.npz[name]
        except ValueError as e:
            if "allow_pickle" in str(e):  # numpy: "Object arrays cannot be loaded when ..."
                raise UserError(f"{self.path}: array {name!r} holds Python objects (a pickle), "
                                f"which edgepipe does not load because unpickling can run code; "
                                f"save plain numeric arrays ({_RESAVE})") from None
            raise UserError(f"cannot read array {name!r} of {self.path}: truncated or corrupt "
                            f"({e}); {_RESAVE}") from None
        except _ZIP_ERRORS as e:
            raise UserError(f"cannot read array {name!r} of {self.path}: truncated or corrupt "
                            f"({type(e).__name__}: {e}); {_RESAVE}") from None


def _read_npz(p: Path) -> _Npz:
    """Open an .npz (a zip of .npy files); anything else is named for what it is (numpy calls
    any non-zip file "pickled data")."""
    with open(p, "rb") as f:
        head = f.read(6)
    if head.startswith(b"\x93NUMPY"):
        raise UserError(f"{p} is a single .npy array, not an .npz of named arrays; {_RESAVE}")
    if not head.startswith(b"PK"):
        raise UserError(f"{p} is not an .npz file (not a zip archive of arrays); {_RESAVE}")
    try:
        return _Npz(p, np.load(p, allow_pickle=False))
    except _ZIP_ERRORS as e:
        raise UserError(f"cannot read {p} as .npz: truncated or corrupt ({type(e).__name__}: "
                        f"{e}); {_RESAVE}") from None


def _as_images(x: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    x = x.astype(np.float32)
    if not np.isfinite(x).all():  # trained on, they give accuracy 0.0 and NaN in the metrics
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        raise UserError(f"{spec.path}: NaN or infinite input values in {int(bad.sum())} of "
                        f"{len(x)} samples (the first is sample {int(bad.argmax())}); replace or "
                        f"drop them")
    if x.ndim == 2:  # vectors (tabular features): no pixels to scale or resize
        return x
    if x.max(initial=0) > 1.5:  # 0..255 pixels
        x = x / 255.0
    return _resize(x, spec.input_size, spec.channels)


IMAGE_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # what tf.io.decode_image reads


def _image_files(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, class names): one class per sub-folder, in name order, as Keras'
    image_dataset_from_directory indexes them (hidden folders ignored, files in name order)."""
    import os

    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files, labels = [], []
    for i, name in enumerate(classes):
        found = sorted(Path(dirpath) / f for dirpath, _, names in os.walk(root / name)
                       for f in names if f.lower().endswith(IMAGE_FORMATS))
        if not found:  # a class with nothing to learn or test would be an output never trained
            raise UserError(f"image_dir {root}: class folder {name!r} has no images "
                            f"({' '.join(IMAGE_FORMATS)}); add images to it or remove it")
        files += found
        labels += [i] * len(found)
    return files, labels, classes


def _load_image_dir(spec: DatasetSpec):
    root = Path(spec.path or "")
    if not spec.path or not root.is_dir():
        raise UserError(f"dataset image_dir needs `path:` to a folder with one sub-folder per "
                        f"class; not a folder: {spec.path}")
    import tensorflow as tf

    files, labels, classes = _image_files(root)
    if not files:
        raise UserError(f"no images found under {spec.path}")
    size, channels = spec.input_size or (64, 64), spec.channels or 3
    xs, ys, skipped = [], [], []
    for f, label in zip(files, labels):
        try:
            img = tf.io.decode_image(f.read_bytes(), channels=channels, expand_animations=False)
        except tf.errors.InvalidArgumentError:  # not an image, truncated, or unknown format
            if not spec.skip_bad_images:
                raise UserError(f"image_dir {root}: cannot decode {f.relative_to(root)} (not a "
                                f"valid image); fix or remove it, or set skip_bad_images: true "
                                f"in the dataset") from None
            skipped.append(str(f.relative_to(root)))
            continue
        xs.append(tf.image.resize(img, size, method="bilinear").numpy())
        ys.append(label)
    if skipped:
        log.warning("image_dir %s: skipped %d of %d images that do not decode: %s", root,
                    len(skipped), len(files), ", ".join(skipped[:5]) + (" ..." * (len(skipped) > 5)))
    if not xs:
        raise UserError(f"image_dir {root}: none of its {len(files)} images decodes")
    missing = sorted(set(range(len(classes))) - set(ys))
    if missing:
        raise UserError(f"image_dir {root}: every image of class folder {classes[missing[0]]!r} "
                        f"was skipped as unreadable; fix its images or remove it")
    x = np.stack(xs).astype(np.float32) / 255.0
    return x, np.array(ys, dtype=np.int64), None


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


# ----- targets of any kind, several inputs and outputs (tasks: pipeline/tasks.py) -----------------
SEP = "__"  # x_train__<input name>, y_train__<output name>


def _labels(y: np.ndarray) -> np.ndarray:
    """Integer class labels as int64; any other target (floats, maps) as float32, shape kept."""
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        if y.size and y.min() < 0:  # was a TensorFlow InvalidArgumentError mid-training
            raise UserError(f"integer labels are class indices 0, 1, 2, ...; found {int(y.min())} "
                            f"(map your classes to 0..N-1, or give float targets for regression)")
        return y.astype(np.int64)
    return y.astype(np.float32)


def _named(z, prefix: str) -> dict[str, np.ndarray]:
    """{name: array} of the keys `<prefix>__<name>`."""
    return {k[len(prefix) + len(SEP):]: z[k] for k in z.files if k.startswith(prefix + SEP)}


def _part(z, prefix: str, convert: Callable) -> Any:
    """The array `prefix`, or {name: array} of `prefix__<name>` keys, or None."""
    if prefix in z.files:
        return convert(z[prefix])
    named = _named(z, prefix)
    return {k: convert(v) for k, v in named.items()} if named else None


def npz_arrays(z, p: Path, spec: DatasetSpec):
    """(x, y, test or None) from an npz's keys: x_train/y_train/x_test/y_test or x/y, each one
    array or several `<key>__<name>` arrays (one per model input or output); no y keys: x-only
    (task fidelity)."""
    images = lambda a: _as_images(a, spec)  # noqa: E731
    parts = {k: _part(z, k, images if k.startswith("x") else _labels)
             for k in ("x_train", "y_train", "x_test", "y_test", "x", "y")}
    if parts["x_train"] is not None and parts["x_test"] is not None:
        x, y, test = parts["x_train"], parts["y_train"], (parts["x_test"], parts["y_test"])
        if (y is None) != (test[1] is None):
            raise UserError(f"{p} has {'y_train' if y is not None else 'y_test'} but not "
                            f"{'y_test' if y is not None else 'y_train'}; give targets for both "
                            f"splits, or neither (x-only, task fidelity)")
    elif parts["x"] is not None:
        x, y, test = parts["x"], parts["y"], None
    else:
        raise UserError(f"{p} holds arrays {sorted(z.files)}; expected x_train, y_train, x_test, "
                        f"y_test or x, y (y optional: x-only data for task fidelity; several "
                        f"inputs/outputs as x_train__<input>, y_train__<output>)")
    _check_lengths(p, x, y)
    if test is not None:
        _check_lengths(p, *test)
    for part in (x, *(test[:1] if test is not None else ())):
        if not len(next(iter(part.values())) if isinstance(part, dict) else part):
            raise UserError(f"{p}: a split has no samples (zero rows); the dataset needs samples "
                            f"to train and test on")
    return x, y, test


def _check_lengths(p: Path, x: Any, y: Any) -> None:
    arrays = {**(x if isinstance(x, dict) else {"x": x}),
              **(y if isinstance(y, dict) else {"y": y} if y is not None else {})}
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise UserError(f"{p}: arrays of one split differ in length "
                        f"({', '.join(f'{k}: {n}' for k, n in lengths.items())}); every input "
                        f"and target needs one row per sample")


def _load_diabetes(spec: DatasetSpec):
    """scikit-learn's bundled diabetes data: 10 standardized features, disease progression a
    year later (25..346) as a float regression target."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    return d.data.astype(np.float32), d.target.astype(np.float32), None


LOADERS: dict[str, Callable] = {"digits": _load_digits, "diabetes": _load_diabetes,
                                "npz": _load_npz,
                                "image_dir": _load_image_dir, "tfds": _load_tfds}


def _split(x, y, frac, rng):
    """Stratified-enough seeded split: shuffle, then take `frac` for the second part."""
    idx = rng.permutation(num_samples(x))
    n2 = max(1, int(round(num_samples(x) * frac)))
    a, b = idx[n2:], idx[:n2]
    return take(x, a), take(y, a), take(x, b), take(y, b)


def load_dataset(spec: DatasetSpec | str | dict, seed: int = 0) -> Dataset:
    """The dataset a spec names ("digits", {"name": "npz", "path": ...}), split train / val /
    test with `seed`."""
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
        n = num_samples(xtr)
        keep = np.sort(rng.permutation(n)[: max(1, int(n * spec.train_fraction))])
        xtr, ytr = take(xtr, keep), take(ytr, keep)
    num_classes = (int(max(y.max(), yte.max())) + 1 if isinstance(y, np.ndarray)
                   and np.issubdtype(y.dtype, np.integer) else None)
    return Dataset(spec.name, xtr, ytr, xva, yva, xte, yte, num_classes, seed,
                   spec.calibration_size)
