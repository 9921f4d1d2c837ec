"""A real OpenSSH server on a loopback port, for tests: generated host and user keys, root login
by key only, a known_hosts file for the client. Not a fixture module: tests/test_devices*.py build
their fixtures from these helpers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def have_sshd() -> bool:
    return os.path.exists(SSHD) and shutil.which("ssh") is not None and shutil.which("ssh-keygen") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgepipe-test", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return path


class SSHServer:
    """`sshd -D` on 127.0.0.1:<free port> that lets in the holder of `user_key` as root."""

    def __init__(self, root: Path, user_key: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.user_key = Path(user_key)
        self.port = free_port()
        self.host_key = keygen(self.root / "host_key")
        self.authorized = self.root / "authorized_keys"
        self.authorized.write_text(Path(f"{user_key}.pub").read_text())
        self.authorized.chmod(0o600)
        self.log = self.root / "sshd.log"
        self.proc: subprocess.Popen | None = None

    def config(self) -> Path:
        cfg = self.root / "sshd_config"
        cfg.write_text(
            f"ListenAddress 127.0.0.1\nHostKey {self.host_key}\nPidFile {self.root}/sshd.pid\n"
            f"AuthorizedKeysFile {self.authorized}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nMaxStartups 50\nMaxSessions 50\nSubsystem sftp internal-sftp\n"
            "LogLevel ERROR\n")
        return cfg

    def start(self) -> "SSHServer":
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation folder
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config()), "-p", str(self.port)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not start on port {self.port}: {self.log.read_text()}")

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {Path(f'{self.host_key}.pub').read_text().strip()}\n"

    def new_host_key(self) -> None:
        """Replace the host key and restart: the board 'was re-installed' (or is an impostor)."""
        self.stop()
        for p in (self.host_key, Path(f"{self.host_key}.pub")):
            p.unlink()
        keygen(self.host_key)
        self.start()

    def entry(self, **kw) -> dict:
        """A devices.yaml entry for this server."""
        return {"host": "127.0.0.1", "port": self.port, "user": "root",
                "identity_file": str(self.user_key), **kw}

    def pids(self) -> list[int]:
        """The listener and every process below it (per-connection sshd, shells, commands)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        from pipeline.devices.emulate import descendants

        return descendants(self.proc.pid)

    def kill(self) -> None:
        """Kill sshd and everything it started, at once (a board that lost power)."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.kill()
        self.proc = None


def write_known_hosts(path: Path, *servers: SSHServer) -> Path:
    path.write_text("".join(s.known_hosts_line() for s in servers))
    return path
