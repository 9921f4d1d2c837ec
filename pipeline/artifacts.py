"""Files on disk: atomic writes, content hashes, sizes, provenance."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import platform
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: str | os.PathLike) -> str:
    """Hash of a file, or of a folder's files (names and contents, in sorted order)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(str(f.relative_to(p)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def sizes(path: str | os.PathLike) -> dict[str, int]:
    """Raw and gzip (level 9) size in bytes of a file or a folder's files."""
    p = Path(path)
    files = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())
    raw = sum(f.stat().st_size for f in files)
    gz = sum(len(gzip.compress(f.read_bytes(), compresslevel=9, mtime=0)) for f in files)
    return {"size_bytes": raw, "gzip_bytes": gz}


def _create_new(parent: Path, prefix: str, suffix: str, create) -> tuple[Path, Any]:
    """`create(path)` at a fresh random name in `parent` (raising FileExistsError if taken);
    returns the path and what `create` returned.

    Unlike tempfile.mkstemp/mkdtemp (always 0600/0700), what `create` makes with mode 0o666/0o777
    gets the process umask applied by the kernel, so a run folder is as readable as any file the
    user writes (a web server or colleague can open the report). No umask is read or changed.
    """
    for _ in range(100):
        p = parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            return p, create(p)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name {prefix}*{suffix} in {parent}")


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new empty folder `parent/<prefix><random>` with the umask's mode (mkdtemp's is 0700)."""
    return _create_new(Path(parent), prefix, "", lambda p: os.mkdir(p, 0o777))[0]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename: readers see old or new, never half.
    The file's mode is 0o666 less the umask, as for any plain open()."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    tmp, fd = _create_new(path.parent, f".{path.name}.", ".tmp",
                          lambda p: os.open(p, flags, 0o666))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path to write a file or folder into; on success it replaces `path`.

    On error nothing is left at `path` (nor the temp). Used for outputs written by libraries that
    want a file name (model.save, converters), so a failed write never looks finished.
    """
    path = Path(path)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # deepest first
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    tmp = tmp_dir / path.name
    try:
        yield tmp
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        for d in made:  # folders made for the output go too
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def library_versions() -> dict[str, str]:
    """Versions that change what a stage computes; part of every fingerprint and manifest."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("tensorflow", "tf-keras", "tensorflow-model-optimization", "keras-tuner",
                 "ai-edge-litert", "numpy", "edgepipe"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out
