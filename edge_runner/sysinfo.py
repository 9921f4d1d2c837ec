"""What the machine was doing while we measured: CPU, frequency, governor, temperature, throttling,
and whether the CPU is emulated (then the timings are the emulator's, not a board's).

Everything is read from procfs/sysfs (and `vcgencmd` on a Raspberry Pi). A value that cannot be
read is None; `collect()` never raises.
"""

from __future__ import annotations

import glob
import os
import platform
import re
import shutil
import subprocess
from typing import Optional

# Bits of `vcgencmd get_throttled` (Raspberry Pi firmware).
THROTTLE_FLAGS = {
    0: "under_voltage",
    1: "arm_frequency_capped",
    2: "throttled",
    3: "soft_temperature_limit",
    16: "under_voltage_occurred",
    17: "arm_frequency_capped_occurred",
    18: "throttled_occurred",
    19: "soft_temperature_limit_occurred",
}


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip().strip("\x00")
    except OSError:
        return None


def _read_int(path: str) -> Optional[int]:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _mhz(khz: Optional[int]) -> Optional[float]:
    return round(khz / 1000.0, 1) if khz is not None else None


#: ARM's "CPU part" numbers (implementer 0x41) of the cores found on Raspberry Pis and their kin.
ARM_PARTS = {
    0xB76: "ARM1176", 0xC07: "Cortex-A7", 0xC09: "Cortex-A9", 0xC0F: "Cortex-A15",
    0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55", 0xD07: "Cortex-A57",
    0xD08: "Cortex-A72", 0xD09: "Cortex-A73", 0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76",
    0xD0C: "Neoverse-N1", 0xD0D: "Cortex-A77", 0xD40: "Neoverse-V1", 0xD41: "Cortex-A78",
    0xD44: "Cortex-X1", 0xD46: "Cortex-A510", 0xD47: "Cortex-A710", 0xD49: "Neoverse-N2",
}


def cpuinfo_blocks(root: str = "/") -> list:
    """/proc/cpuinfo as a list of {field: value} blocks (one per CPU, plus trailing board
    fields on a Raspberry Pi); empty when it cannot be read."""
    text = _read(os.path.join(root, "proc/cpuinfo")) or ""
    blocks, cur = [], {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if cur:
                blocks.append(cur)
            cur = {}
            continue
        cur.setdefault(key.strip(), value.strip())
    if cur:
        blocks.append(cur)
    return blocks


def _field(blocks: list, key: str) -> Optional[str]:
    return next((b[key] for b in blocks if b.get(key)), None)


def cpuinfo_isa(blocks: list) -> Optional[str]:
    """The instruction-set family /proc/cpuinfo describes: 'x86', 'arm' or None (unknown)."""
    if _field(blocks, "vendor_id") or _field(blocks, "flags"):
        return "x86"
    if _field(blocks, "CPU implementer") or _field(blocks, "CPU architecture"):
        return "arm"
    return None


def machine_isa(machine: str) -> Optional[str]:
    """`uname -m` (or /proc/sys/kernel/arch) -> 'x86', 'arm', or the name itself."""
    m = (machine or "").lower()
    if m in ("x86_64", "amd64", "x86") or re.fullmatch(r"i[3-6]86", m):
        return "x86"
    if m.startswith(("aarch64", "arm")):
        return "arm"
    return m or None


def _arm_cores(blocks: list) -> list:
    """Core names from 'CPU implementer'/'CPU part', one per CPU block that has them."""
    out = []
    for b in blocks:
        try:
            impl, part = int(b["CPU implementer"], 16), int(b["CPU part"], 16)
        except (KeyError, ValueError):
            continue
        out.append(ARM_PARTS.get(part, f"ARM part 0x{part:03x}") if impl == 0x41
                   else f"implementer 0x{impl:02x} part 0x{part:03x}")
    return out


def cpu_model(root: str = "/") -> Optional[str]:
    """The CPU (not the board): 'model name' on x86; on ARM the cores named from 'CPU part'
    ("Cortex-A72", "Cortex-A76 x4 + Cortex-A55 x4"); else 'Hardware'/'Processor'."""
    blocks = cpuinfo_blocks(root)
    cores = _arm_cores(blocks)
    if cores:
        kinds = list(dict.fromkeys(cores))
        if len(kinds) == 1:
            return kinds[0]
        return " + ".join(f"{k} x{cores.count(k)}" for k in kinds)
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        value = _field(blocks, key)
        if value:
            return value
    return None


def board_model(root: str = "/") -> Optional[str]:
    """The board: the device tree's model, else /proc/cpuinfo's 'Model' (Raspberry Pi)."""
    return (_read(os.path.join(root, "proc/device-tree/model"))
            or _field(cpuinfo_blocks(root), "Model") or None)


def emulation(root: str = "/", machine: Optional[str] = None,
              environ: Optional[dict] = None) -> Optional[dict]:
    """How this process is emulated (qemu-user running another architecture's binaries), or
    None when nothing says so.

    qemu-user answers `uname` with the guest's machine but leaves most of /proc as the host's
    kernel shows it, so the evidence is a disagreement between this process's architecture and
    the kernel's (/proc/sys/kernel/arch, Linux >= 6.1) or the CPU /proc/cpuinfo describes.
    A QEMU that fakes /proc/cpuinfo is still caught by the kernel's arch.
    """
    environ = os.environ if environ is None else environ
    machine = machine or platform.machine()
    mine = machine_isa(machine)
    blocks = cpuinfo_blocks(root)
    kernel = _read(os.path.join(root, "proc/sys/kernel/arch"))
    evidence = []
    if kernel and machine_isa(kernel) != mine:
        evidence.append(f"the kernel is {kernel} (/proc/sys/kernel/arch) but this process "
                        f"runs as {machine}")
    described = cpuinfo_isa(blocks)
    if described and described != mine:
        evidence.append(f"/proc/cpuinfo describes an {described} CPU but this process runs "
                        f"as {machine}")
    if not evidence:
        return None
    host_cpu = _field(blocks, "model name") if described == "x86" else None
    return {"emulator": "qemu-user", "machine": machine, "host_arch": kernel or described,
            "host_cpu": host_cpu,
            # what qemu-user was asked to emulate (its default, 'max', when unset)
            "qemu_cpu": environ.get("QEMU_CPU") or None,
            "evidence": evidence}


def describe_cpu(model: Optional[str], emulated: Optional[dict]) -> Optional[str]:
    """The CPU line a user reads: on an emulated machine, what is emulated and on what."""
    if not emulated:
        return model
    guest = emulated["qemu_cpu"] or "QEMU's default CPU"
    host = emulated["host_cpu"] or emulated["host_arch"] or "an unknown host"
    return f"{guest} emulated by QEMU ({emulated['machine']}) on {host}"


def cpufreq(root: str = "/") -> dict:
    """Governor and cur/min/max frequency (MHz) of cpu0, plus the current frequency of each CPU."""
    base = os.path.join(root, "sys/devices/system/cpu")
    cpu0 = os.path.join(base, "cpu0/cpufreq")
    per_cpu = {}
    for d in sorted(glob.glob(os.path.join(base, "cpu[0-9]*")),
                    key=lambda p: int(os.path.basename(p)[3:])):
        khz = _read_int(os.path.join(d, "cpufreq/scaling_cur_freq"))
        if khz is None:
            khz = _read_int(os.path.join(d, "cpufreq/cpuinfo_cur_freq"))
        if khz is not None:
            per_cpu[os.path.basename(d)] = _mhz(khz)
    cur = _read_int(os.path.join(cpu0, "scaling_cur_freq"))
    if cur is None:
        cur = _read_int(os.path.join(cpu0, "cpuinfo_cur_freq"))
    max_khz = _read_int(os.path.join(cpu0, "scaling_max_freq"))
    min_khz = _read_int(os.path.join(cpu0, "scaling_min_freq"))
    return {
        "governor": _read(os.path.join(cpu0, "scaling_governor")),
        "cur_mhz": _mhz(cur),
        "min_mhz": _mhz(min_khz if min_khz is not None
                        else _read_int(os.path.join(cpu0, "cpuinfo_min_freq"))),
        "max_mhz": _mhz(max_khz if max_khz is not None
                        else _read_int(os.path.join(cpu0, "cpuinfo_max_freq"))),
        "cur_mhz_per_cpu": per_cpu or None,
    }


def temperatures(root: str = "/") -> dict:
    """{zone type: degrees C} for every /sys/class/thermal zone that can be read."""
    zones = {}
    for zone in sorted(glob.glob(os.path.join(root, "sys/class/thermal/thermal_zone*"))):
        milli = _read_int(os.path.join(zone, "temp"))
        if milli is None:
            continue
        name = _read(os.path.join(zone, "type")) or os.path.basename(zone)
        if name in zones:
            name = f"{name}:{os.path.basename(zone)}"
        zones[name] = round(milli / 1000.0, 1)
    return zones


def decode_throttled(value: int) -> dict:
    """`get_throttled` bit field -> {flag name: bool} (see THROTTLE_FLAGS)."""
    return {name: bool(value >> bit & 1) for bit, name in THROTTLE_FLAGS.items()}


def throttling(timeout: float = 2.0) -> Optional[dict]:
    """`vcgencmd get_throttled`, decoded; None when vcgencmd is absent or fails."""
    exe = shutil.which("vcgencmd")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "get_throttled"], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = proc.stdout.strip()
    if proc.returncode != 0 or "=" not in text:
        return None
    raw = text.split("=", 1)[1].strip()
    try:
        value = int(raw, 0)
    except ValueError:
        return None
    return {"raw": raw, "any_now": bool(value & 0xF), "any_occurred": bool(value & 0xF0000),
            "flags": decode_throttled(value)}


def _cores() -> dict:
    usable = None
    if hasattr(os, "sched_getaffinity"):
        try:
            usable = len(os.sched_getaffinity(0))
        except OSError:
            usable = None
    return {"logical": os.cpu_count(), "usable": usable}


def _loadavg() -> Optional[list]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def emulated_result(result: dict) -> bool:
    """Whether a bench result was measured on an emulated CPU (its `system_before`)."""
    return bool((result.get("system_before") or {}).get("emulated"))


def collect(*, runtime: Optional[dict] = None, root: str = "/",
            machine: Optional[str] = None) -> dict:
    """A JSON-able snapshot of the machine. `runtime` is {"backend", "version"} when known.
    `emulated` is None on real hardware, else what `emulation()` found: timings taken there
    are the emulator's, not a board's."""
    temps = temperatures(root)
    machine = machine or platform.machine()
    emulated = emulation(root, machine)
    return {
        "cpu_model": describe_cpu(cpu_model(root), emulated),
        "board": board_model(root),
        "emulated": emulated,
        "cores": _cores(),
        "cpufreq": cpufreq(root),
        "temperature_c": max(temps.values()) if temps else None,
        "thermal_zones": temps or None,
        "throttling": throttling(),
        "loadavg": _loadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": machine,
        "runtime": runtime,
    }
