"""edge_runner as it goes to a board: the bundle of its sources, how it is unpacked there,
the argv that calls it, and the board's setup record (setup.json).

Used by `setup` (installs it), `remote` (calls it, probes with it) and `fleet`; imports neither,
so they do not import each other through it.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from functools import lru_cache
from pathlib import Path

from pipeline.devices.inventory import Device
from pipeline.devices.transport import SSH, q

# Runs on the board with the venv's python: unpack the runner (a tar.gz on stdin) next to the old
# one, then swap, so a failed copy leaves the previous runner working.
_UNPACK = r"""
import io, os, shutil, sys, tarfile
lib = sys.argv[1]
os.makedirs(lib, exist_ok=True)
new, old, dst = (os.path.join(lib, n) for n in (".edge_runner.new", ".edge_runner.old", "edge_runner"))
for p in (new, old):
    shutil.rmtree(p, ignore_errors=True)
with tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read()), mode="r:gz") as t:
    for m in t.getmembers():
        if not m.isfile() or m.name.startswith("/") or ".." in m.name.split("/"):
            sys.exit("refusing tar member " + repr(m.name))
    kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    t.extractall(new, **kw)
if os.path.exists(dst):
    os.rename(dst, old)
os.rename(os.path.join(new, "edge_runner"), dst)
shutil.rmtree(new, ignore_errors=True)
shutil.rmtree(old, ignore_errors=True)
"""

_WRAPPER = """#!/bin/sh
# edge-runner on this board, as installed by `edgepipe devices setup`.
here=$(cd "$(dirname "$0")/.." && pwd)
PYTHONPATH="$here/lib${PYTHONPATH:+:$PYTHONPATH}" exec "$here/venv/bin/python" -m edge_runner "$@"
"""


def runner_files() -> dict[str, bytes]:
    """The edge_runner package as {relative path: bytes} (sources only, sorted)."""
    import edge_runner

    root = Path(edge_runner.__file__).parent
    return {f"edge_runner/{p.relative_to(root).as_posix()}": p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in (".py", ".typed")
            and "__pycache__" not in p.parts}


@lru_cache(maxsize=1)
def runner_package() -> tuple[bytes, str]:
    """(deterministic tar.gz of edge_runner, sha256 of its files)."""
    files = runner_files()
    h = hashlib.sha256()
    buf = io.BytesIO()
    import gzip

    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in files.items():
            h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), h.hexdigest()


def remote_runner(device: Device, *args: str) -> list[str]:
    """argv that runs `edge-runner ARGS` on the board with the set-up venv and runner."""
    return ["env", f"PYTHONPATH={device.remote('lib')}", device.venv_python, "-m", "edge_runner",
            *args]


def install_runner(ssh: SSH) -> str:
    """Copy edge_runner into <workdir>/lib (and the bin/edge-runner wrapper); returns its hash."""
    d = ssh.device
    tarball, digest = runner_package()
    ssh.run_sh(f"{q(d.venv_python)} -c {q(_UNPACK)} {q(d.remote('lib'))}",
               what="unpacking edge_runner", stdin=tarball)
    ssh.put(_WRAPPER.encode(), d.remote("bin", "edge-runner"), mode="755")
    return digest


def read_state(ssh: SSH) -> dict | None:
    """The board's setup.json, or None when the board was never set up."""
    r = ssh.run(["cat", ssh.device.remote("setup.json")], what="reading setup.json", check=False)
    if r.returncode != 0:
        return None
    try:
        return json.loads(r.text)
    except json.JSONDecodeError:
        return None
