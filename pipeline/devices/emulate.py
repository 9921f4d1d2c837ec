"""`edgepipe devices emulate build|start|stop|status`: a Raspberry Pi you can run anywhere.

A Debian bookworm root for arm64 (what Raspberry Pi OS bookworm is built on: Python 3.11,
OpenSSH 9.2), run by qemu-user through binfmt_misc, serves as a board: its own sshd, under
emulation, listens on 127.0.0.1:<port>, and `devices setup`, `deploy`, `profile` and recipes use
it like a Pi. QEMU emulates the CPU model asked for (`cortex-a72`: Pi 4, `cortex-a76`: Pi 5), so
pip resolves the real aarch64 wheels and XNNPACK runs its real ARM kernels; the timings mean
nothing, and edge-runner says so ("emulated").

Everything lives in one folder (``$EDGEPIPE_EMU_CACHE``, else ``~/.cache/edgepipe/emulated-pi``);
besides it only the binfmt registration of qemu-user-static is used::

    <arch>/root/                      the Debian root, built once (root.partial while building)
    <arch>/root/etc/edgepipe/<board>/ that board's sshd_config, host key, authorized_keys, log
    boards/<board>/                   client side: id_ed25519, known_hosts, devices.yaml, board.json

/proc and /sys are bind-mounted into the root while a board of it runs (XNNPACK reads the CPU's
caches and cores there) and unmounted when the last one stops.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from pipeline.errors import UserError, did_you_mean

BINFMT = Path("/proc/sys/fs/binfmt_misc")
MIRROR = "http://deb.debian.org/debian"
PACKAGES = "python3,python3-venv,python3-pip,openssh-server,ca-certificates"
#: Debian architecture -> qemu-user's name for it, and the CPU models offered (QEMU_CPU).
ARCHES = {
    "arm64": ("aarch64", {"cortex-a72": "emu-pi4", "cortex-a76": "emu-pi5",
                          "cortex-a53": "emu-pi3"}),
    "armhf": ("arm", {"cortex-a7": "emu-armhf", "cortex-a15": "emu-armhf-a15"}),
}
#: What each CPU model stands for (printed with the board).
LOOKS_LIKE = {"cortex-a72": "Raspberry Pi 4", "cortex-a76": "Raspberry Pi 5",
              "cortex-a53": "Raspberry Pi 3 / Zero 2 W",
              "cortex-a7": "32-bit Raspberry Pi OS (armhf)",
              "cortex-a15": "32-bit Raspberry Pi OS (armhf)"}
START_TIMEOUT = 120.0  # seconds for the emulated sshd to answer


def cache_dir() -> Path:
    env = os.environ.get("EDGEPIPE_EMU_CACHE")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgepipe" / "emulated-pi"


def root_dir(arch: str, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / arch / "root"


def built(arch: str, cache: Path | None = None) -> bool:
    return (root_dir(arch, cache) / "usr/bin/python3").exists()


def arch_of(cpu: str) -> str:
    """The Debian architecture a CPU model belongs to (a one-line error for an unknown one)."""
    for arch, (_, cpus) in ARCHES.items():
        if cpu in cpus:
            return arch
    known = [c for _, cpus in ARCHES.values() for c in cpus]
    raise UserError(f"unknown CPU model {cpu!r}{did_you_mean(cpu, known)}; choose one of: "
                    f"{', '.join(known)}")


# ------------------------------------------------------------------ what the host must have


def check_host(arch: str, *, debootstrap: bool = False) -> None:
    """Root, binfmt_misc, qemu-user-static's handler for `arch` (with the F flag, so it works
    inside a chroot), ssh-keygen, and debootstrap when building: one line naming what is missing
    and how to install it."""
    qemu = ARCHES[arch][0]
    if os.geteuid() != 0:
        raise UserError("edgepipe devices emulate needs root (it runs debootstrap, chroot and "
                        "mount); run it as root, e.g. with sudo")
    if not (BINFMT / "register").exists():
        raise UserError(f"binfmt_misc is not mounted at {BINFMT}; mount it: sudo mount -t "
                        f"binfmt_misc binfmt_misc {BINFMT}")
    handler = BINFMT / f"qemu-{qemu}"
    if not handler.exists():
        if shutil.which(f"qemu-{qemu}-static"):
            raise UserError(f"qemu-user-static is installed but no {arch} handler is registered "
                            f"in {BINFMT}; register it: sudo update-binfmts --enable qemu-{qemu}")
        raise UserError(f"qemu-user-static is not installed (no {arch} handler in {BINFMT}); "
                        "install it: sudo apt-get install qemu-user-static binfmt-support")
    text = handler.read_text()
    if not text.startswith("enabled"):
        raise UserError(f"the qemu-{qemu} binfmt handler is disabled; enable it: sudo "
                        f"update-binfmts --enable qemu-{qemu}")
    flags = next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                  if ln.startswith("flags:")), "")
    if "F" not in flags:
        raise UserError(f"the qemu-{qemu} binfmt handler lacks the F flag, so it cannot run "
                        "binaries inside a chroot; reinstall Debian's: sudo apt-get install "
                        "--reinstall qemu-user-static")
    if not shutil.which("ssh-keygen"):
        raise UserError("ssh-keygen is not installed; install it: sudo apt-get install "
                        "openssh-client")
    if debootstrap and not shutil.which("debootstrap"):
        raise UserError("debootstrap is not installed; install it: sudo apt-get install "
                        "debootstrap")


# ------------------------------------------------------------------ the root


def build(arch: str = "arm64", *, mirror: str = MIRROR, cache: Path | None = None,
          say: Callable[[str], None] = lambda m: None) -> Path:
    """The Debian bookworm root for `arch`, built once (debootstrap --foreign, then its second
    stage under emulation in a chroot) and reused. A build that did not finish leaves nothing
    that looks finished: it happens in root.partial, renamed into place at the end."""
    root = root_dir(arch, cache)
    if built(arch, cache):
        return root
    check_host(arch, debootstrap=True)
    partial = root.with_name("root.partial")
    log = root.with_name("build.log")
    if partial.exists():
        _unmount_all(partial)
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    say(f"building the {arch} Debian bookworm root in {root} (once; about 10-15 minutes; "
        f"log: {log})")
    t0 = time.monotonic()
    steps = [["debootstrap", f"--arch={arch}", "--foreign", "--variant=minbase",
              f"--include={PACKAGES}", "bookworm", str(partial), mirror],
             ["chroot", str(partial), "/debootstrap/debootstrap", "--second-stage"]]
    with open(log, "w") as out:
        for argv in steps:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, check=False, env=_plain_env())
            if proc.returncode != 0:
                _unmount_all(partial)  # debootstrap's own /proc and /sys, if it left them
                shutil.rmtree(partial, ignore_errors=True)
                raise UserError(f"building the {arch} root failed: {argv[0]} exited with "
                                f"{proc.returncode}; see {log}")
    _unmount_all(partial)
    partial.rename(root)
    say(f"built the {arch} root in {time.monotonic() - t0:.0f} s")
    return root


def _plain_env(**extra: str) -> dict[str, str]:
    """A clean environment for processes in the root (nothing of this host's shell leaks in)."""
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8", "HOME": "/root", **extra}


# ------------------------------------------------------------------ mounts


def _mounts() -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            out.append(point.encode().decode("unicode_escape"))  # \040 for spaces
    return out


def _mount_binds(root: Path) -> None:
    mounted = set(_mounts())
    for fs in ("proc", "sys"):
        target = root / fs
        if str(target) not in mounted:
            target.mkdir(exist_ok=True)
            subprocess.run(["mount", "--bind", f"/{fs}", str(target)], check=True)


def _unmount_all(root: Path) -> None:
    mounted = _mounts()
    for fs in ("sys", "proc"):
        target = str(root / fs)
        if target in mounted:
            subprocess.run(["umount", target], check=True)


# ------------------------------------------------------------------ boards


@dataclass
class Board:
    name: str
    cpu: str
    port: int
    cache: Path

    @property
    def arch(self) -> str:
        return arch_of(self.cpu)

    @property
    def root(self) -> Path:
        return root_dir(self.arch, self.cache)

    @property
    def client(self) -> Path:
        """This board's client-side folder (key, known_hosts, devices.yaml)."""
        return self.cache / "boards" / self.name

    @property
    def inside(self) -> str:
        """This board's sshd folder, as seen inside the root."""
        return f"/etc/edgepipe/{self.name}"

    @property
    def pidfile(self) -> Path:
        return self.root / f"run/edgepipe-{self.name}-sshd.pid"

    def pid(self) -> int | None:
        """The pid of this board's sshd, when it runs."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if f"{self.inside}/sshd_config".encode() in cmdline else None

    def entry(self) -> dict:
        """This board's devices.yaml entry."""
        return {"host": "127.0.0.1", "port": self.port, "user": "root",
                "identity_file": str(self.client / "id_ed25519"),
                "known_hosts": str(self.client / "known_hosts"),
                "workdir": f"~/edgepipe-{self.name}", "connect_timeout": 60,
                "tags": ["emulated", self.arch]}

    def devices_yaml(self) -> str:
        return yaml.safe_dump({"devices": {self.name: self.entry()}}, sort_keys=False)

    def describe(self) -> str:
        return (f"{self.name} on 127.0.0.1:{self.port} ({self.cpu} under QEMU, like a "
                f"{LOOKS_LIKE[self.cpu]}; its timings mean nothing)")


def load_board(name: str, cache: Path | None = None) -> Board | None:
    cache = cache or cache_dir()
    try:
        data = json.loads((cache / "boards" / name / "board.json").read_text())
    except FileNotFoundError:
        return None
    return Board(name=name, cpu=data["cpu"], port=int(data["port"]), cache=cache)


def boards(cache: Path | None = None) -> list[Board]:
    cache = cache or cache_dir()
    folder = cache / "boards"
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    return [b for b in (load_board(n, cache) for n in names) if b is not None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path, comment: str) -> None:
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f",
                        str(path)], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL)


def _trust_host_cas(root: Path) -> None:
    """The board trusts the certificate authorities this host added to Debian's
    (/usr/local/share/ca-certificates: e.g. a network's TLS-inspecting proxy), appended to its
    bundle as update-ca-certificates does; without them pip on the board cannot reach PyPI where
    this host can."""
    bundle = root / "etc/ssl/certs/ca-certificates.crt"
    stock = bundle.with_name("ca-certificates.crt.debian")
    if not stock.exists():
        shutil.copy2(bundle, stock)
    added = sorted(Path("/usr/local/share/ca-certificates").rglob("*.crt"))
    bundle.write_bytes(stock.read_bytes() + b"".join(
        p.read_bytes().rstrip(b"\n") + b"\n" for p in added))


def _configure(b: Board) -> None:
    """Keys, sshd_config, authorized_keys, known_hosts and devices.yaml of a board."""
    b.client.mkdir(parents=True, exist_ok=True)
    inside = b.root / b.inside.lstrip("/")
    inside.mkdir(parents=True, exist_ok=True)
    _keygen(b.client / "id_ed25519", f"edgepipe-{b.name}")
    _keygen(inside / "ssh_host_ed25519_key", f"root@{b.name}")
    (inside / "authorized_keys").write_text((b.client / "id_ed25519.pub").read_text())
    (inside / "sshd_config").write_text(
        f"Port {b.port}\nListenAddress 127.0.0.1\n"
        f"HostKey {b.inside}/ssh_host_ed25519_key\nPidFile /run/edgepipe-{b.name}-sshd.pid\n"
        f"AuthorizedKeysFile {b.inside}/authorized_keys\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        # every session's processes run on the same emulated CPU model as this sshd
        f"SetEnv QEMU_CPU={b.cpu}\n"
        "MaxStartups 50\nMaxSessions 50\nSubsystem sftp internal-sftp\nLogLevel ERROR\n")
    host_pub = (inside / "ssh_host_ed25519_key.pub").read_text().split()
    # the line `ssh -o StrictHostKeyChecking=accept-new` would add on first contact
    (b.client / "known_hosts").write_text(f"[127.0.0.1]:{b.port} {host_pub[0]} {host_pub[1]}\n")
    (b.client / "devices.yaml").write_text(b.devices_yaml())
    (b.client / "board.json").write_text(
        json.dumps({"cpu": b.cpu, "port": b.port}, allow_nan=False) + "\n")


def _wait_for_sshd(b: Board) -> None:
    """Until the board's sshd sends its banner (slow under emulation), or it died."""
    log = b.root / b.inside.lstrip("/") / "sshd.log"
    end = time.monotonic() + START_TIMEOUT
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
                s.settimeout(30)
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            if b.pidfile.exists() and b.pid() is None:
                break  # it wrote its pid and is gone
            time.sleep(0.2)
    tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
    raise UserError(f"{b.name}: the emulated sshd did not answer on 127.0.0.1:{b.port}"
                    f"{': ' + tail[0] if tail else ''}; see {log}")


def start(name: str | None = None, *, cpu: str = "cortex-a72", port: int | None = None,
          cache: Path | None = None, mirror: str = MIRROR,
          say: Callable[[str], None] = lambda m: None) -> Board:
    """Start (building the root first if needed) the board `name`; a running one is left alone."""
    cache = cache or cache_dir()
    arch = arch_of(cpu)
    name = name or ARCHES[arch][1][cpu]
    old = load_board(name, cache)
    if old is not None and old.pid() is not None:
        if old.cpu != cpu or (port is not None and port != old.port):
            raise UserError(f"{name} is running as {old.cpu} on port {old.port}; stop it first: "
                            f"edgepipe devices emulate stop {name}")
        say(f"{name} is already running: {old.describe()}")
        return old
    check_host(arch)
    b = Board(name=name, cpu=cpu, port=port or (old.port if old else _free_port()), cache=cache)
    build(arch, mirror=mirror, cache=cache, say=say)
    _configure(b)
    _trust_host_cas(b.root)
    _mount_binds(b.root)
    (b.root / "run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation
    log = f"{b.inside}/sshd.log"
    proc = subprocess.run(["chroot", str(b.root), "/usr/sbin/sshd", "-f",
                           f"{b.inside}/sshd_config", "-E", log],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
                          env=_plain_env(QEMU_CPU=cpu))
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"{name}: the emulated sshd did not start (exit {proc.returncode}: "
                        f"{detail}); see {b.root / log.lstrip('/')}")
    _wait_for_sshd(b)
    say(f"started {b.describe()}, pid {b.pid()}")
    return b


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (the board's connections and their commands)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def stop(name: str, *, cache: Path | None = None,
         say: Callable[[str], None] = lambda m: None) -> bool:
    """Stop the board's sshd and what runs under it; False (and said) when it was not running.
    /proc and /sys leave the root when no other board of it runs."""
    cache = cache or cache_dir()
    b = load_board(name, cache)
    pid = b.pid() if b else None
    if b is None or pid is None:
        known = [x.name for x in boards(cache)]
        hint = did_you_mean(name, known) if b is None else ""
        say(f"{name} is not running{hint}; nothing to stop")
        return False
    procs = descendants(pid)
    for p in procs:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in procs) and time.monotonic() < end:
        time.sleep(0.1)
    for p in procs:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    b.pidfile.unlink(missing_ok=True)
    if not any(o.pid() for o in boards(cache) if o.arch == b.arch):
        _unmount_all(b.root)
    say(f"stopped {name}")
    return True
