"""Talking to a board: the OpenSSH client in a subprocess.

Users' `~/.ssh/config`, agents and jump hosts work because this is the real `ssh`. Every command
runs with `BatchMode=yes` (never a password prompt), a connect timeout, a per-command timeout and,
optionally, a whole-job `Deadline`. A time limit holds on both ends: here (the ssh client is
killed) and on the board, where the command runs under `timeout` with a slightly longer limit, so
a command whose ssh client was killed does not keep the board busy. Host keys are checked
strictly: an unknown host is refused unless `accept_new` (StrictHostKeyChecking=accept-new) and a
changed key is always refused.

Remote commands are built from argument lists with `shlex.quote`, never by pasting strings.
Files go up through ssh's stdin into a temp name, then `mv` into place: the local path never
reaches any shell or glob, the remote one is quoted, and a file is either whole or absent. With
`multiplex` (ControlMaster) all commands of one `SSH` object share one connection.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Sequence

from pipeline.devices.inventory import Device
from pipeline.errors import DeviceError

q = shlex.quote

#: The board's own limit is this much longer than the local one, so the local (clearer) error
#: normally wins; a command that ignores SIGTERM gets SIGKILL this much later.
REMOTE_GRACE_S = 2
REMOTE_KILL_AFTER_S = 5


class RemoteCommandError(DeviceError):
    """The command ran on the board and exited non-zero."""

    def __init__(self, msg: str, result: "Result"):
        super().__init__(msg)
        self.result = result


class Deadline:
    """A whole-job time limit shared by every command of a job (None: no limit)."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.end = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        return None if self.end is None else self.end - time.monotonic()

    def bound(self, timeout: float | None) -> tuple[float | None, bool]:
        """The timeout to use for the next command and whether the deadline (not it) set it."""
        rem = self.remaining()
        if rem is None:
            return timeout, False
        if timeout is None or rem < timeout:
            return max(rem, 0.0), True
        return timeout, False


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes
    seconds: float

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")


# ssh's own failures (exit code 255) → one clear line. Order matters: first match wins.
_SSH_FAILURES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed"), "changed"),
    (re.compile(r"No \S+ host key is known for|Host key verification failed"), "unknown"),
    (re.compile(r"Could not resolve hostname"), "resolve"),
    (re.compile(r"Connection refused"), "refused"),
    (re.compile(r"[Cc]onnection timed out|Operation timed out|timed out during banner"), "timeout"),
    (re.compile(r"No route to host|Network is unreachable"), "unreachable"),
    (re.compile(r"Permission denied|Too many authentication failures"), "auth"),
    (re.compile(r"closed by remote host|Connection closed by|Connection reset|Broken pipe|"
                r"read from master failed|Timeout, server .* not responding|"
                r"kex_exchange_identification|Connection to .* closed"), "lost"),
]


class SSH:
    """Commands and file copies on one device. Use as a context manager (closes the shared
    connection); safe to use from one thread at a time."""

    def __init__(self, device: Device, *, accept_new: bool = False,
                 command_timeout: float | None = 600.0, deadline: Deadline | None = None,
                 ssh_bin: str = "ssh"):
        self.device = device
        self.accept_new = accept_new
        self.command_timeout = command_timeout
        self.deadline = deadline or Deadline(None)
        self.ssh_bin = ssh_bin
        self._control_dir: str | None = None
        self.transport_seconds = 0.0  # time spent in put()/exists(), for benchmarks

    # ----- argv ----------------------------------------------------------------------------------
    def ssh_options(self) -> list[str]:
        d = self.device
        strict = "accept-new" if self.accept_new else "yes"
        opts = ["-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={strict}",
                "-o", f"ConnectTimeout={max(1, math.ceil(d.connect_timeout))}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                "-o", "LogLevel=ERROR", "-o", "ClearAllForwardings=yes", "-T"]
        if d.ssh_config:
            opts = ["-F", os.path.expanduser(d.ssh_config), *opts]
        if d.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={_ssh_opt_path(d.known_hosts)}"]
        if d.port:
            opts += ["-p", str(d.port)]
        if d.identity_file:
            opts += ["-i", os.path.expanduser(d.identity_file), "-o", "IdentitiesOnly=yes"]
        if d.multiplex:
            if self._control_dir is None:
                base = "/tmp" if os.path.isdir("/tmp") else None  # short: sockets have a length limit
                self._control_dir = tempfile.mkdtemp(prefix="edgepipe-ssh-", dir=base)
            opts += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_dir}/%C",
                     "-o", "ControlPersist=60"]
        return opts

    def argv(self, command: str) -> list[str]:
        return [self.ssh_bin, *self.ssh_options(), "--", self.device.address, command]

    # ----- running -------------------------------------------------------------------------------
    def run(self, args: Sequence[str], *, what: str | None = None, timeout: float | None = None,
            stdin: bytes | IO[bytes] | None = None, check: bool = True) -> Result:
        """Run one program on the board; every argument is quoted."""
        return self.run_sh(shlex.join([str(a) for a in args]), what=what or _what(args),
                           timeout=timeout, stdin=stdin, check=check)

    def run_sh(self, command: str, *, what: str, timeout: float | None = None,
               stdin: bytes | IO[bytes] | None = None, check: bool = True) -> Result:
        """Run a shell command line built by the caller from `q()`-quoted parts."""
        limit, by_deadline = self.deadline.bound(timeout if timeout is not None else self.command_timeout)
        if by_deadline and limit <= 0:
            raise DeviceError(f"Device {self.device.label}: job deadline of "
                              f"{self.deadline.seconds:g}s exceeded before {what}")
        argv = self.argv(command if limit is None else bounded(command, limit))
        kw: dict = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "timeout": limit}
        if isinstance(stdin, (bytes, bytearray)):
            kw["input"] = bytes(stdin)
        else:
            kw["stdin"] = stdin if stdin is not None else subprocess.DEVNULL
        t0 = time.monotonic()
        try:
            p = subprocess.run(argv, **kw)
        except subprocess.TimeoutExpired:
            raise self._timed_out(what, limit, by_deadline) from None
        except FileNotFoundError:
            raise DeviceError(f"OpenSSH client not found: {self.ssh_bin!r}; install openssh-client") from None
        res = Result(argv, p.returncode, p.stdout, p.stderr, time.monotonic() - t0)
        # The board's `timeout` fired first (124: stopped by SIGTERM; 137: SIGKILL). Only when
        # the time was up here too: a command may exit 124 itself, and 137 is also what the OOM
        # killer gives. (This machine's clock stopping, e.g. a suspended laptop, is the case.)
        if limit is not None and p.returncode in (124, 137) and res.seconds >= limit:
            raise self._timed_out(what, limit, by_deadline)
        if p.returncode == 255:
            failure = self._ssh_failure(res.err, what)
            if failure:
                raise DeviceError(failure)
            if not res.err.strip():  # e.g. a multiplexed session whose master connection died
                raise DeviceError(f"Device {self.device.label}: connection lost during {what} "
                                  "(ssh exited with code 255 and no message)")
        if check and p.returncode != 0:
            tail = " | ".join(line.strip() for line in res.err.strip().splitlines()[-3:] if line.strip())
            raise RemoteCommandError(f"Device {self.device.label}: {what} failed with exit code "
                                     f"{p.returncode}{': ' + tail if tail else ''}", res)
        return res

    def _timed_out(self, what: str, limit: float, by_deadline: bool) -> DeviceError:
        if by_deadline:
            return DeviceError(f"Device {self.device.label}: job deadline of "
                               f"{self.deadline.seconds:g}s exceeded during {what}")
        return DeviceError(f"Device {self.device.label}: {what} did not finish within "
                           f"{limit:g}s (the per-command timeout)")

    def _ssh_failure(self, stderr: str, what: str) -> str | None:
        d, label = self.device, self.device.label
        kh = d.known_hosts or "~/.ssh/known_hosts"
        host = f"[{d.host}]:{d.port}" if d.port and d.port != 22 else d.host
        for pattern, kind in _SSH_FAILURES:
            if not pattern.search(stderr):
                continue
            if kind == "changed":
                return (f"Device {label}: host key has CHANGED since it was trusted; refusing to "
                        f"connect (possible man-in-the-middle). If the board was re-installed, "
                        f"remove the old key with: ssh-keygen -R '{host}' -f {kh}")
            if kind == "unknown":
                return (f"Device {label}: unknown host (its key is not in {kh}); run with "
                        f"--accept-new to trust it on first use, or add its key with ssh-keyscan")
            if kind == "resolve":
                return f"Device {label}: cannot resolve host {d.host!r}; check host in the inventory or ~/.ssh/config"
            if kind == "refused":
                return f"Device {label}: connection refused; is sshd running there and is the port right?"
            if kind in ("timeout", "unreachable"):
                return (f"Device {label}: unreachable (no answer within the "
                        f"{d.connect_timeout:g}s connect timeout)")
            if kind == "auth":
                return (f"Device {label}: SSH authentication failed (BatchMode, keys only); check "
                        f"user and identity_file, or load the key into ssh-agent")
            return f"Device {label}: connection lost during {what} ({_last_line(stderr)})"
        if stderr.lstrip().startswith(("ssh:", "mux_client", "kex_", "Bad ", "command-line")):
            return f"Device {label}: ssh failed during {what}: {_last_line(stderr)}"
        return None

    # ----- files ---------------------------------------------------------------------------------
    def exists(self, remote_path: str) -> bool:
        t0 = time.monotonic()
        try:
            return self.run(["test", "-f", remote_path], what=f"checking {remote_path}",
                            check=False).returncode == 0
        finally:
            self.transport_seconds += time.monotonic() - t0

    def put(self, source: str | os.PathLike | bytes, remote_path: str, *, mode: str | None = None) -> None:
        """Copy a local file (or bytes) to `remote_path`, atomically (temp name, then mv)."""
        parent = remote_path.rsplit("/", 1)[0] if "/" in remote_path else "."
        tmp = f"{remote_path}.tmp-{uuid.uuid4().hex[:8]}"
        cmd = f"mkdir -p {q(parent)} && cat > {q(tmp)}"
        if mode:
            cmd += f" && chmod {q(mode)} {q(tmp)}"
        cmd += f" && mv -f {q(tmp)} {q(remote_path)} || {{ rm -f {q(tmp)}; exit 1; }}"
        what = f"copying to {remote_path}"
        t0 = time.monotonic()
        try:
            if isinstance(source, (bytes, bytearray)):
                self.run_sh(cmd, what=what, stdin=bytes(source))
            else:
                with open(source, "rb") as f:
                    self.run_sh(cmd, what=what, stdin=f)
        finally:
            self.transport_seconds += time.monotonic() - t0

    # ----- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        """End the shared connection (if any) and remove its socket folder."""
        cdir, self._control_dir = self._control_dir, None
        if cdir is None:
            return
        argv = [self.ssh_bin, "-o", f"ControlPath={cdir}/%C", "-O", "exit"]
        if self.device.ssh_config:
            argv[1:1] = ["-F", os.path.expanduser(self.device.ssh_config)]
        if self.device.port:
            argv += ["-p", str(self.device.port)]
        if any(Path(cdir).iterdir()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run([*argv, "--", self.device.address], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
        shutil.rmtree(cdir, ignore_errors=True)

    def __enter__(self) -> "SSH":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bounded(command: str, seconds: float) -> str:
    """`command` (a POSIX shell line) run on the board under `timeout`, with a limit
    REMOTE_GRACE_S longer than `seconds`: SIGTERM to its whole process group, SIGKILL
    REMOTE_KILL_AFTER_S later. A board without a `timeout` that takes `-k` (no coreutils, old
    busybox) runs the command without a limit of its own. Exit codes, stdin and stdout are the
    command's own (timeout's 124/137 when it fired)."""
    limit = math.ceil(seconds) + REMOTE_GRACE_S
    # Not `exec timeout`: with -k, timeout SIGKILLs its own process group, itself included, and
    # ssh reports a signal death as exit code 255; the shell staying behind turns it into 137.
    return (f"edgepipe_cmd={q(command)}; "
            "if command -v timeout >/dev/null 2>&1 && "
            "timeout -k 1 9 true </dev/null >/dev/null 2>&1; "
            f'then timeout -k {REMOTE_KILL_AFTER_S} {limit} sh -c "$edgepipe_cmd"; '
            'else exec sh -c "$edgepipe_cmd"; fi; exit $?')


def _what(args: Sequence[str]) -> str:
    shown = [Path(str(a)).name if i == 0 else str(a) for i, a in enumerate(args[:3])]
    return '"' + " ".join(shown) + (" …" if len(args) > 3 else "") + '"'


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _ssh_opt_path(path: str) -> str:
    p = os.path.expanduser(path)
    return f'"{p}"' if any(c.isspace() for c in p) else p
