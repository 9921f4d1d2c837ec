"""What the machine was doing while we measured: CPU, frequency, governor, temperature, throttling.

Everything is read from procfs/sysfs (and `vcgencmd` on a Raspberry Pi). A value that cannot be
read is None; `collect()` never raises.
"""

from __future__ import annotations

import glob
import os
import platform
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


def cpu_model(root: str = "/") -> Optional[str]:
    """'model name' from /proc/cpuinfo (x86), else 'Model'/'Hardware' (Raspberry Pi / ARM)."""
    text = _read(os.path.join(root, "proc/cpuinfo"))
    if not text:
        return None
    fields: dict = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip(), value.strip())
    for key in ("model name", "Model", "Hardware", "Processor", "cpu model"):
        if key in fields:
            return fields[key]
    return None


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


def collect(*, runtime: Optional[dict] = None, root: str = "/") -> dict:
    """A JSON-able snapshot of the machine. `runtime` is {"backend", "version"} when known."""
    temps = temperatures(root)
    board = _read(os.path.join(root, "proc/device-tree/model"))
    return {
        "cpu_model": cpu_model(root),
        "board": board or None,
        "cores": _cores(),
        "cpufreq": cpufreq(root),
        "temperature_c": max(temps.values()) if temps else None,
        "thermal_zones": temps or None,
        "throttling": throttling(),
        "loadavg": _loadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "runtime": runtime,
    }
