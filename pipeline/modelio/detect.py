"""Which Keras wrote a model file, its layer config, and whether loading it would run Python.

Read without loading anything: the `.keras` zip's metadata.json and config.json, the `.h5`
attributes `keras_version` and `model_config`, a SavedModel's keras_metadata.pb. Nothing here
imports Keras; a SavedModel's metadata is parsed with tf_keras' protobuf class only.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pipeline.errors import UserError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclass(frozen=True)
class ModelFile:
    """A model file as found on disk.

    kind: "keras" (.keras zip), "h5", "savedmodel" (a folder with saved_model.pb).
    keras: major version of the Keras that wrote it (2 = tf_keras / Keras 2, 3 = Keras 3), or None
    for a SavedModel with no layer graph (model.export(), tf.saved_model.save): graph only.
    configs: the layer configs the file carries (JSON objects), for the safety scan.
    """

    path: Path
    kind: str
    keras: int | None
    configs: tuple[Any, ...] = ()

    @property
    def graph_only(self) -> bool:
        return self.kind == "savedmodel" and self.keras is None


def _major(version: Any) -> int:
    if isinstance(version, bytes):
        version = version.decode()
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 2  # tf.keras before 2.x wrote e.g. "2.x-tf"; anything unparsable is not Keras 3


def _bad(p: Path, why: str) -> UserError:
    return UserError(f"cannot load model {p}: {why}")


def _read_keras_zip(p: Path) -> ModelFile:
    try:
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
            if "config.json" not in names:
                raise _bad(p, "not a Keras .keras archive (no config.json inside)")
            meta = json.loads(z.read("metadata.json")) if "metadata.json" in names else {}
            config = json.loads(z.read("config.json"))
    except (zipfile.BadZipFile, EOFError) as e:
        raise _bad(p, f"not a valid .keras archive (truncated or not a zip file: {e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _bad(p, "its config.json is not valid JSON") from None
    return ModelFile(p, "keras", _major(meta.get("keras_version", "2")), (config,))


def _read_h5(p: Path) -> ModelFile:
    import h5py

    try:
        with h5py.File(p, "r") as f:
            attrs = dict(f.attrs)
    except OSError as e:  # h5py: truncated file, not HDF5 at all
        raise _bad(p, f"not a readable HDF5 file ({str(e).splitlines()[0]})") from None
    raw = attrs.get("model_config")
    if raw is None:
        raise _bad(p, "the HDF5 file holds no model config (a weights-only file? load it into "
                      "the model it was saved from and save the whole model)")
    if isinstance(raw, bytes):
        raw = raw.decode()
    try:
        config = json.loads(raw)
    except json.JSONDecodeError:
        raise _bad(p, "its model_config attribute is not valid JSON") from None
    return ModelFile(p, "h5", _major(attrs.get("keras_version", "2")), (config,))


def _read_savedmodel(p: Path) -> ModelFile:
    meta = p / "keras_metadata.pb"
    if not meta.is_file():
        return ModelFile(p, "savedmodel", None)
    return ModelFile(p, "savedmodel", 2, tuple(_savedmodel_nodes(p, meta)))


def _savedmodel_nodes(p: Path, meta: Path) -> Iterator[Any]:
    from google.protobuf.message import DecodeError
    from tf_keras.protobuf import saved_metadata_pb2

    sm = saved_metadata_pb2.SavedMetadata()
    try:
        sm.ParseFromString(meta.read_bytes())
    except DecodeError:
        raise _bad(p, "its keras_metadata.pb is corrupt") from None
    for node in sm.nodes:
        try:
            yield json.loads(node.metadata)
        except json.JSONDecodeError:
            raise _bad(p, "its keras_metadata.pb holds invalid JSON") from None


def inspect_file(path: str | Path) -> ModelFile:
    """What `path` is, or one UserError: missing, wrong kind, truncated, unreadable."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"model file not found: {p}")
    if p.is_dir():
        if not (p / "saved_model.pb").is_file():
            raise UserError(f"{p} is a folder but not a SavedModel (no saved_model.pb)")
        return _read_savedmodel(p)
    if p.suffix not in KERAS_SUFFIXES:
        raise UserError(f"cannot load {p}: expected a .keras or .h5 file or a SavedModel folder")
    return _read_keras_zip(p) if p.suffix == ".keras" else _read_h5(p)


# --------------------------------------------------------------------------------------------
#: class names whose config carries Python code: Keras 2's Lambda (marshalled bytecode in
#: `function`), Keras 3's Lambda and "__lambda__" (a serialized lambda anywhere in a config)
CODE_CLASSES = ("Lambda", "__lambda__")


def _walk(obj: Any) -> Iterator[dict]:
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def code_carriers(mf: ModelFile) -> list[str]:
    """Names of the layers (or objects) in the file whose loading would run Python code."""
    found = []
    for obj in (d for c in mf.configs for d in _walk(c)):
        if obj.get("class_name") in CODE_CLASSES or obj.get("function_type") == "lambda":
            cfg = obj.get("config")
            name = cfg.get("name") if isinstance(cfg, dict) else None
            found.append(name or obj.get("name") or obj.get("class_name") or "function")
    return list(dict.fromkeys(found))


def check_safe(mf: ModelFile, unsafe: bool) -> None:
    """Refuse a file that would run Python code when loaded, unless the user said it is trusted.

    Done here, before any Keras sees the file: tf_keras runs an `.h5` or SavedModel Lambda's
    marshalled code when it deserializes it (its safe_mode only covers `.keras`).
    """
    if unsafe:
        return
    names = code_carriers(mf)
    if names:
        raise UserError(f"{mf.path} carries Python code (Lambda layer {names[0]!r}) that would "
                        f"run when it is loaded, and is refused; load it only if you trust it: "
                        f"pass --unsafe (recipe: unsafe: true)")
