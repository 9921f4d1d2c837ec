"""`edgepipe devices setup NAME`: make a board ready to run `edge-runner`.

On the board, under its workdir:

```
venv/                 python -m venv, with the runtime: tflite-runtime==2.14.0 + numpy<2,
                      or ai-edge-litert (pip-managed; nothing of edgepipe in it)
lib/edge_runner/      this project's runner package, copied (stdlib + numpy + interpreter only)
bin/edge-runner       wrapper: PYTHONPATH=lib venv/bin/python -m edge_runner "$@"
setup.json            what was installed, with the runner's content hash
models/  golden/      filled by deploy, by content hash
```

No TensorFlow and no `pipeline` ever go to the board.
"""

from __future__ import annotations

import json
from typing import Callable

from pipeline.devices.remote import info
from pipeline.devices.runner import install_runner, read_state, runner_package
from pipeline.devices.transport import SSH, RemoteCommandError
from pipeline.errors import DeviceError

MIN_PYTHON = (3, 9)
REQUIREMENTS = {
    "tflite-runtime": ["tflite-runtime==2.14.0", "numpy<2"],  # 2.14 wheels are built on numpy 1
    "ai-edge-litert": ["ai-edge-litert", "numpy"],
}
#: What `edge-runner info` calls each runtime (its backend names).
BACKEND_OF = {"tflite-runtime": "tflite-runtime", "ai-edge-litert": "litert"}

def python_version(ssh: SSH, python: str) -> tuple[int, ...]:
    r = ssh.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                what=f"{python} --version", check=False)
    if r.returncode != 0:
        raise DeviceError(f"Device {ssh.device.label}: cannot run {python!r} "
                          f"(exit {r.returncode}); set `python:` in the inventory to the board's "
                          "Python 3 interpreter")
    return tuple(int(x) for x in r.text.strip().split("."))


def ensure_ready(ssh: SSH, log: Callable[[str], None] = lambda m: None) -> dict:
    """Fail clearly if the board was never set up; refresh its runner if it differs from ours."""
    state = read_state(ssh)
    if state is None:
        raise DeviceError(f"Device {ssh.device.label} is not set up; run: "
                          f"edgepipe devices setup {ssh.device.name}")
    _, digest = runner_package()
    if state.get("edge_runner_sha256") != digest:
        log(f"[{ssh.device.name}] edge_runner differs from this host's; copying it")
        install_runner(ssh)
        state["edge_runner_sha256"] = digest
        ssh.put(json.dumps(state, indent=2).encode(), ssh.device.remote("setup.json"))
    return state


def installed(ssh: SSH) -> dict[str, str | None]:
    """Versions of the runtimes and numpy in the board's venv (None: not installed)."""
    script = ("import json\nfrom importlib import metadata\nout = {}\n"
              "for n in ('tflite-runtime', 'ai-edge-litert', 'numpy'):\n"
              "    try:\n        out[n] = metadata.version(n)\n"
              "    except metadata.PackageNotFoundError:\n        out[n] = None\n"
              "print(json.dumps(out))")
    r = ssh.run([ssh.device.venv_python, "-c", script], what="listing the venv's packages")
    return json.loads(r.text)


def satisfied(runtime: str, have: dict[str, str | None]) -> bool:
    """Whether REQUIREMENTS[runtime] hold for the installed versions (so pip can be skipped)."""
    numpy = have.get("numpy")
    if not numpy or not have.get(runtime):
        return False
    if runtime == "tflite-runtime":
        return have[runtime] == "2.14.0" and int(numpy.split(".")[0]) < 2
    return True


def setup_device(ssh: SSH, *, reinstall: bool = False,
                 log: Callable[[str], None] = lambda m: None) -> dict:
    """Make the venv, install the runtime (pip is skipped when it is there already, unless
    `reinstall`) and the runner, and check they run. Idempotent."""
    d = ssh.device
    ver = python_version(ssh, d.python)
    if ver < MIN_PYTHON:
        raise DeviceError(f"Device {d.label}: Python {'.'.join(map(str, ver))} is too old; "
                          f"edge-runner needs Python >= {'.'.join(map(str, MIN_PYTHON))}")
    log(f"[{d.name}] python {'.'.join(map(str, ver))}")
    if ssh.exists(d.venv_python):
        log(f"[{d.name}] venv exists: {d.remote('venv')}")
    else:
        log(f"[{d.name}] creating venv {d.remote('venv')}")
        ssh.run(["mkdir", "-p", d.remote_workdir], what="mkdir workdir")
        try:
            ssh.run([d.python, "-m", "venv", d.remote("venv")], what="python -m venv")
        except RemoteCommandError as e:
            raise DeviceError(f"{e}. On Debian/Raspberry Pi OS install python3-venv "
                              "(sudo apt install python3-venv)") from None
    reqs = REQUIREMENTS[d.runtime]
    have = installed(ssh)
    if not reinstall and satisfied(d.runtime, have):
        log(f"[{d.name}] runtime already installed: {d.runtime} {have.get(d.runtime)}, "
            f"numpy {have.get('numpy')}")
    else:
        log(f"[{d.name}] pip install {' '.join(reqs)}")
        ssh.run([d.venv_python, "-m", "pip", "install", "--disable-pip-version-check",
                 "--no-input", "-q", *d.pip_args, *reqs], what="pip install " + " ".join(reqs))
    digest = install_runner(ssh)
    log(f"[{d.name}] edge_runner copied ({digest[:12]})")
    board = info(ssh)
    want = BACKEND_OF[d.runtime]
    got = (board.get("runtime") or {}).get("backend")
    if got != want:
        raise DeviceError(f"Device {d.label}: edge-runner picked runtime {got!r} after installing "
                          f"{d.runtime!r}; check the venv at {d.remote('venv')}")
    state = {"runtime": d.runtime, "requirements": reqs, "python": ".".join(map(str, ver)),
             "edge_runner_sha256": digest,
             "runtime_version": (board.get("runtime") or {}).get("version")}
    ssh.put(json.dumps(state, indent=2).encode(), d.remote("setup.json"))
    return {**state, "info": board}
