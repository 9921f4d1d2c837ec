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
import re
from typing import Callable

from pipeline.artifacts import json_text
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


def python_version(ssh: SSH, python: str) -> tuple[tuple[int, ...], str]:
    """(version, wheel platform) of the board's Python: the platform is `uname -m`, except that
    a 32-bit Python on a 64-bit ARM kernel (32-bit Raspberry Pi OS since 2023) is "armv7l",
    as pip sees it."""
    r = ssh.run([python, "-c", "import platform, struct, sys; print('%d.%d.%d' % "
                 "sys.version_info[:3], platform.machine(), 8 * struct.calcsize('P'))"],
                what=f"{python} --version", check=False)
    if r.returncode != 0:
        raise DeviceError(f"Device {ssh.device.label}: cannot run {python!r} "
                          f"(exit {r.returncode}); set `python:` in the inventory to the board's "
                          "Python 3 interpreter")
    version, machine, bits = r.text.split()[-3:]
    if bits == "32" and machine.startswith(("aarch64", "arm64", "armv8")):
        machine = "armv7l"
    return tuple(int(x) for x in version.split(".")), machine


#: What pip prints when the index cannot be reached (as against: it has no matching wheel).
_UNREACHABLE = (r"CERTIFICATE_VERIFY_FAILED|SSLError|NewConnectionError|Temporary failure in name "
                r"resolution|Network is unreachable|ProxyError|Read timed out")


#: Measured on Debian bookworm armhf, Python 3.11, PyPI only (an emulated 32-bit board).
ARM32 = ("PyPI has tflite-runtime 2.14.0 for 32-bit ARM but neither numpy<2 nor ai-edge-litert: "
         "add piwheels as 32-bit Raspberry Pi OS does (pip_args: [--extra-index-url, "
         "https://www.piwheels.org/simple]) or install the 64-bit OS (arm64)")


def pip_install(ssh: SSH, reqs: list[str], version: tuple[int, ...], machine: str) -> None:
    """pip install `reqs` into the board's venv, wheels only (numpy built from source takes an
    hour on a Pi, if it builds at all); an index it cannot reach, or one without a wheel for the
    board, is one line saying which."""
    d = ssh.device
    try:
        ssh.run([d.venv_python, "-m", "pip", "install", "--disable-pip-version-check",
                 "--no-input", "-q", "--only-binary=:all:", *d.pip_args, *reqs],
                what="pip install " + " ".join(reqs))
    except RemoteCommandError as e:
        unreachable = re.search(_UNREACHABLE, e.result.err)
        if unreachable:  # pip then also says "no matching distribution": not the cause
            raise DeviceError(f"Device {d.label}: pip on the board cannot reach the package "
                              f"index ({unreachable.group(0)}); check the board's network, "
                              "proxy and CA certificates, or set pip_args to an index it can "
                              "reach") from None
        found = re.search(r"No matching distribution found for (\S+)", e.result.err)
        if not found:
            raise
        other = next(r for r in REQUIREMENTS if r != d.runtime)
        advice = ARM32 if machine.startswith("arm") else f"set `runtime: {other}` for it in the inventory"
        raise DeviceError(f"Device {d.label}: pip finds no {found.group(1)} wheel for this board "
                          f"(Python {'.'.join(map(str, version))} on {machine}); {advice}") from None


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
        ssh.put(json_text(state, indent=2).encode(), ssh.device.remote("setup.json"))
    return state


def installed(ssh: SSH) -> dict[str, str | None]:
    """Versions of the runtimes and numpy in the board's venv (None: not installed)."""
    script = ("import json\nfrom importlib import metadata\nout = {}\n"
              "for n in ('tflite-runtime', 'ai-edge-litert', 'numpy'):\n"
              "    try:\n        out[n] = metadata.version(n)\n"
              "    except metadata.PackageNotFoundError:\n        out[n] = None\n"
              "print(json.dumps(out, allow_nan=False))")
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
    ver, machine = python_version(ssh, d.python)
    if ver < MIN_PYTHON:
        raise DeviceError(f"Device {d.label}: Python {'.'.join(map(str, ver))} is too old; "
                          f"edge-runner needs Python >= {'.'.join(map(str, MIN_PYTHON))}")
    log(f"[{d.name}] python {'.'.join(map(str, ver))} on {machine}")
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
        pip_install(ssh, reqs, ver, machine)
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
    ssh.put(json_text(state, indent=2).encode(), d.remote("setup.json"))
    return {**state, "info": board}
