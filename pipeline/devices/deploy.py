"""Put files on a board by content hash: `<workdir>/models/<sha256>.tflite`, skipped if present.

A local file name never reaches the board (the remote name is its hash), so any name works, and
the same model deployed twice, or by two runs, is copied once.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

from pipeline.artifacts import sha256_file
from pipeline.devices.transport import SSH, q
from pipeline.errors import UserError
from pipeline.tflite import check_file


def deploy_file(ssh: SSH, path: str | os.PathLike, folder: str, suffix: str) -> dict:
    """Copy `path` to `<workdir>/<folder>/<sha256><suffix>` unless it is there already."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"File not found: {p}")
    t0 = time.monotonic()
    sha = sha256_file(p)
    remote = ssh.device.remote(folder, f"{sha}{suffix}")
    present = ssh.exists(remote)
    if not present:
        ssh.put(p, remote)
    return {"device": ssh.device.name, "local_path": str(p), "sha256": sha, "remote_path": remote,
            "size_bytes": p.stat().st_size, "copied": not present,
            "seconds": round(time.monotonic() - t0, 4)}


def deploy_model(ssh: SSH, model: str | os.PathLike) -> dict:
    """Deploy a .tflite; returns {sha256, remote_path, copied, size_bytes, seconds, ...}."""
    check_file(model)
    return deploy_file(ssh, model, "models", ".tflite")


def deploy_golden(ssh: SSH, golden: str | os.PathLike) -> dict:
    """Deploy a golden .npz written by `edge_runner.golden.write_golden`."""
    return deploy_file(ssh, golden, "golden", ".npz")


def deploy_batch(ssh: SSH, paths: list, folder: str = "models", suffix: str = ".tflite") -> list[dict]:
    """Deploy many files in two round trips: one listing of what the board has, one tar of the
    rest through stdin (unpacked into a temp folder, then moved into place). Returns one
    {sha256, remote_path, copied, ...} per path, in order."""
    t0 = time.monotonic()
    files = []
    for path in paths:
        p = check_file(path) if suffix == ".tflite" else Path(path)
        files.append((p, sha256_file(p)))
    remote_dir = ssh.device.remote(folder)
    listing = ssh.run_sh(f"ls -1 {q(remote_dir)} 2>/dev/null; true", what=f"listing {folder}")
    present = set(listing.text.split())
    todo = {sha: p for p, sha in files if f"{sha}{suffix}" not in present}
    if todo:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for sha, p in sorted(todo.items()):
                tar.add(str(p), arcname=f"{sha}{suffix}")
        d = q(remote_dir)
        ssh.run_sh(f"mkdir -p {d} && tmp=$(mktemp -d {d}/.batch-XXXXXX) && "
                   f"tar -xzf - -C \"$tmp\" && mv -f \"$tmp\"/* {d}/ && rmdir \"$tmp\"",
                   what=f"copying {len(todo)} files to {remote_dir}", stdin=buf.getvalue())
    seconds = round(time.monotonic() - t0, 4)
    return [{"device": ssh.device.name, "local_path": str(p), "sha256": sha,
             "remote_path": ssh.device.remote(folder, f"{sha}{suffix}"),
             "size_bytes": p.stat().st_size, "copied": sha in todo, "seconds": seconds}
            for p, sha in files]
