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


def _create_new(parent: Path, prefix: str, suffix: str, create, shown_as: Path
                ) -> tuple[Path, Any]:
    """`create(path)` at a fresh random name in `parent` (raising FileExistsError if taken);
    returns the path and what `create` returned. Any other OSError names `shown_as`, the final
    path the temporary one stands for: the user never asked for `.name.1a2b3c4d.tmp`.

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
        except OSError as e:
            e.filename = str(shown_as)
            raise
    raise FileExistsError(f"no free temporary name {prefix}*{suffix} in {parent}")


#: every temporary file or folder this module makes is `.<name>.<random>.tmp` beside its final
#: name; `clean_temps` removes what a killed process left behind
TEMP_GLOB = ".*.tmp"


def make_temp_dir(parent: str | os.PathLike, name: str) -> Path:
    """A new empty folder `parent/.<name>.<random>.tmp` with the umask's mode (mkdtemp's is
    0700), for a folder that will be renamed to `parent/<name>`."""
    return _create_new(Path(parent), f".{name}.", ".tmp", lambda p: os.mkdir(p, 0o777),
                       Path(parent) / name)[0]


def clean_temps(folder: str | os.PathLike) -> None:
    """Remove the temporary files and folders (TEMP_GLOB) a killed writer left in `folder`."""
    for p in Path(folder).glob(TEMP_GLOB):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename: readers see old or new, never half.
    The file's mode is 0o666 less the umask, as for any plain open()."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    tmp, fd = _create_new(path.parent, f".{path.name}.", ".tmp",
                          lambda p: os.open(p, flags, 0o666), path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _name_the_file(e, path)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any, shown_as: str | os.PathLike | None = None
                      ) -> None:
    """`obj` as standard JSON (json_text); errors name the file as `shown_as` (default `path`)."""
    text = json_text(obj, where=str(shown_as or path), indent=2, sort_keys=True)
    atomic_write_text(path, text + "\n")


def json_text(obj: Any, *, where: str = "JSON output", **dumps_kw: Any) -> str:
    """Standard JSON (RFC 8259: no NaN or Infinity, which most readers refuse). A non-finite
    number is an error naming its key, never written: a metric that is not a number means a
    measurement went wrong (most often a training that diverged), and null would hide it."""
    try:
        return json.dumps(obj, allow_nan=False, default=_json_default, **dumps_kw)
    except ValueError:
        key, value = _non_finite(obj) or ("?", "?")
        from pipeline.errors import UserError

        raise UserError(f"{where}: {key} is {value}, which JSON cannot hold; a measurement came "
                        f"out as not-a-number (did training diverge? try a lower "
                        f"learning_rate)") from None


def _non_finite(obj: Any, key: str = "") -> tuple[str, str] | None:
    """(dotted key, value) of the first NaN/inf number inside `obj`, or None."""
    import math

    import numpy as np

    if isinstance(obj, (float, np.floating)) and not math.isfinite(obj):
        return key or "value", str(float(obj))
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "f" and not np.isfinite(obj).all():
        return key or "value", str(float(obj[~np.isfinite(obj)].flat[0]))
    items = (obj.items() if isinstance(obj, dict) else
             enumerate(obj) if isinstance(obj, (list, tuple)) else ())
    for k, v in items:
        found = _non_finite(v, f"{key}.{k}" if key else str(k))
        if found:
            return found
    return None


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _name_the_file(e: BaseException, path: Path) -> None:
    """An OSError without a file name (a full disk while a library writes to an open file) gets
    the name of the output it was writing, so the user is told which file failed."""
    if isinstance(e, OSError) and not e.filename:
        e.filename = str(path)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path to write a file or folder into; on success it replaces `path`.

    On error nothing is left at `path` (nor the temp). Used for outputs written by libraries that
    want a file name (model.save, converters), so a failed write never looks finished.
    """
    path = Path(path)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # deepest first
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = make_temp_dir(path.parent, path.name)
    tmp = tmp_dir / path.name
    try:
        yield tmp
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        for d in made:  # folders made for the output go too
            with contextlib.suppress(OSError):
                d.rmdir()
        _name_the_file(e, path)
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
