"""The device inventory: `devices.yaml` → validated `Device` objects.

```yaml
defaults:                  # optional, merged under every device
  known_hosts: ~/.ssh/known_hosts
devices:
  pi4:
    host: 192.168.1.20     # or an alias from ~/.ssh/config: the ssh client resolves the rest
    port: 22
    user: pi
    identity_file: ~/.ssh/id_ed25519
    python: python3        # the board's interpreter that makes the venv
    workdir: ~/edgepipe    # absolute, or relative to the home folder
    runtime: tflite-runtime   # or ai-edge-litert
    threads: 4
    tags: [lab, arm64]
    pip_args: [--no-index, --find-links, /home/pi/wheels]   # optional (offline boards)
```

`devices:` may also be a list of entries that each carry a `name:` (`- name: pi4`, `host: ...`).

Where the file is: the recipe's `devices:` path, `--devices PATH`, or
`$XDG_CONFIG_HOME/edgepipe/devices.yaml` (default `~/.config/edgepipe/devices.yaml`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import UserError, did_you_mean, first_error, pydantic_message
from pipeline.yamlfile import check_size, read_text, yaml_line

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RUNTIMES = ("tflite-runtime", "ai-edge-litert")


class Device(BaseModel):
    """One board reachable over SSH."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    host: str
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    identity_file: str | None = None
    python: str = "python3"
    workdir: str = "~/edgepipe"
    runtime: Literal["tflite-runtime", "ai-edge-litert"] = "tflite-runtime"
    threads: int = Field(default=1, ge=1, le=256)
    tags: tuple[str, ...] = ()
    #: Extra `pip install` arguments for setup (an index mirror, `--no-index --find-links DIR`).
    pip_args: tuple[str, ...] = ()
    #: UserKnownHostsFile; None keeps the ssh client's own (~/.ssh/known_hosts).
    known_hosts: str | None = None
    #: `ssh -F FILE` instead of ~/.ssh/config and /etc/ssh/ssh_config (None: the usual ones).
    ssh_config: str | None = None
    connect_timeout: float = Field(default=10.0, gt=0)
    #: Reuse one SSH connection for all commands of a job (ControlMaster).
    multiplex: bool = True

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not v or v.startswith("-") or any(c.isspace() for c in v):
            raise ValueError(f"Expected a host name, address or ssh alias. Received: host={v!r}")
        return v

    @field_validator("user")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        if v is not None and (not v or v.startswith("-") or "@" in v or any(c.isspace() for c in v)):
            raise ValueError(f"Expected a user name. Received: user={v!r}")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for t in v:
            if not NAME_RE.match(t):
                raise ValueError(f"Expected tags of letters, digits, '_', '.', '-'. Received: tag={t!r}")
        return v

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v: str) -> str:
        if not v or (v.startswith("~") and v != "~" and not v.startswith("~/")):
            raise ValueError("Expected workdir absolute, relative to the home folder, or starting "
                             f"with ~/. Received: workdir={v!r}")
        return v

    # ----- derived -------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """What ssh is given as destination: `user@host` or the bare host/alias."""
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def label(self) -> str:
        """'pi4 (pi@10.0.0.2:22)' for messages."""
        return f'"{self.name}" ({self.address}{":" + str(self.port) if self.port else ""})'

    @property
    def remote_workdir(self) -> str:
        """Workdir as the remote shell sees it: `~/x` becomes `x` (commands start in home)."""
        w = self.workdir
        if w == "~":
            return "."
        if w.startswith("~/"):
            w = w[2:] or "."
        return w.rstrip("/") or "/"

    def remote(self, *parts: str) -> str:
        """A path under the workdir."""
        return "/".join([self.remote_workdir, *parts])

    @property
    def venv_python(self) -> str:
        return self.remote("venv", "bin", "python")


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: dict[str, Any] = {}
    #: {name: fields} or [{name: ..., fields}, ...]
    devices: dict[str, dict[str, Any] | None] | list[dict[str, Any]] = {}


class Inventory:
    """Devices by name, with lookups by name and tag that fail with a suggestion."""

    def __init__(self, devices: dict[str, Device], path: Path | None = None):
        self.devices = devices
        self.path = path

    def __len__(self) -> int:
        return len(self.devices)

    def names(self) -> list[str]:
        return sorted(self.devices)

    def tags(self) -> list[str]:
        return sorted({t for d in self.devices.values() for t in d.tags})

    def get(self, name: str) -> Device:
        if name not in self.devices:
            where = f" in {self.path}" if self.path else ""
            known = ", ".join(self.names()) or "none"
            raise UserError(f'Unknown device "{name}"{did_you_mean(name, self.devices)}{where}; '
                            f"known devices: {known}")
        return self.devices[name]

    def by_tag(self, tag: str) -> list[Device]:
        found = [self.devices[n] for n in self.names() if tag in self.devices[n].tags]
        if not found:
            raise UserError(f'No device has tag "{tag}"{did_you_mean(tag, self.tags())}; '
                            f"known tags: {', '.join(self.tags()) or 'none'}")
        return found

    def resolve(self, targets: list[str]) -> list[Device]:
        """Names and `tag:<tag>` entries → devices, in order, each once."""
        out: dict[str, Device] = {}
        for t in targets:
            devs = self.by_tag(t[4:]) if t.startswith("tag:") else [self.get(t)]
            for d in devs:
                out.setdefault(d.name, d)
        return list(out.values())


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "edgepipe" / "devices.yaml"


def load_inventory(path: str | os.PathLike | None = None) -> Inventory:
    """Read and validate an inventory; errors name the file, line and key."""
    p = Path(path).expanduser() if path else default_path()
    if not p.is_file():
        hint = "" if path else " (the default; pass --devices PATH or create it)"
        raise UserError(f"Device inventory not found: {p}{hint}")
    text = read_text(p, "device inventory")
    try:
        check_size(yaml.compose(text), str(p))
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{p}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{p}: expected a mapping with a 'devices:' key")
    try:
        top = _File.model_validate(raw)
    except ValidationError as e:
        raise UserError(_format(p, text, e, ())) from None
    if isinstance(top.devices, list):  # the list form: every entry carries its name
        entries = []
        for i, entry in enumerate(top.devices):
            if "name" not in entry:
                raise UserError(f"{p}{_line(text, ('devices', i))}: devices[{i}]: an entry of a "
                                "devices list needs a name: key")
            entries.append((entry["name"], entry, ("devices", i)))
    else:
        entries = [(name, entry, ("devices", name)) for name, entry in top.devices.items()]
    devices: dict[str, Device] = {}
    for name, entry, where in entries:
        name = str(name)
        if not NAME_RE.match(name):
            raise UserError(f"{p}{_line(text, where)}: Expected device names of letters, "
                            f"digits, '_', '.', '-'. Received: name={name!r}")
        if name in devices:
            raise UserError(f"{p}{_line(text, where)}: device {name!r} is listed twice; "
                            "give each board its own name")
        fields = {**top.defaults, **(entry or {}), "name": name}
        try:
            devices[name] = Device.model_validate(fields)
        except ValidationError as e:
            raise UserError(_format(p, text, e, where)) from None
    return Inventory(devices, p)


def _format(p: Path, text: str, e: ValidationError, prefix: tuple) -> str:
    err = first_error(e)
    loc = prefix + tuple(err["loc"])
    allowed = list(Device.model_fields) if prefix else list(_File.model_fields)
    msg = pydantic_message(err, allowed)
    if err["type"] not in ("extra_forbidden", "missing", "value_error") and "input" in err:
        msg = f"{msg}. Received: {loc[-1]}={err['input']!r}"
    return f"{p}{_line(text, loc)}: {'.'.join(str(x) for x in loc)}: {msg}"


def _line(text: str, loc: tuple) -> str:
    """':N' for the YAML line of the key path `loc`, or '' when it cannot be found."""
    try:
        line = yaml_line(yaml.compose(text), loc, at_key=True)
    except yaml.YAMLError:
        return ""
    return f":{line}" if line else ""


__all__ = ["Device", "Inventory", "load_inventory", "default_path", "RUNTIMES"]
