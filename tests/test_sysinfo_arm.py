"""edge_runner.sysinfo on ARM boards and under emulation: recorded /proc/cpuinfo of real Raspberry
Pi 4/5 boards (64- and 32-bit OS) and what a process inside the emulated Pi reads
(tests/fixtures/sysinfo/README.md says where each file comes from)."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from edge_runner import bench, sysinfo

FIX = pathlib.Path(__file__).parent / "fixtures" / "sysinfo"


def _root(tmp_path, cpuinfo: str, kernel_arch: str | None = None) -> str:
    root = tmp_path / "root"
    (root / "proc/sys/kernel").mkdir(parents=True)
    shutil.copy(FIX / cpuinfo, root / "proc/cpuinfo")
    if kernel_arch:
        (root / "proc/sys/kernel/arch").write_text(kernel_arch + "\n")
    return str(root)


@pytest.mark.parametrize("cpuinfo, machine, kernel, cpu, board", [
    ("pi4_arm64_cpuinfo.txt", "aarch64", "aarch64", "Cortex-A72", "Raspberry Pi 4 Model B Rev 1.4"),
    ("pi5_arm64_cpuinfo.txt", "aarch64", "aarch64", "Cortex-A76", "Raspberry Pi 5 Model B Rev 1.0"),
    # 32-bit Raspberry Pi OS: armv7l userland, and since 2023 a 64-bit kernel beneath it
    ("pi4_armhf_cpuinfo.txt", "armv7l", "aarch64", "Cortex-A72", "Raspberry Pi 4 Model B Rev 1.1"),
    ("pi4_armhf_cpuinfo.txt", "armv7l", None, "Cortex-A72", "Raspberry Pi 4 Model B Rev 1.1"),
])
def test_real_pi_is_named_by_its_cores_and_not_emulated(tmp_path, cpuinfo, machine, kernel, cpu,
                                                        board):
    info = sysinfo.collect(root=_root(tmp_path, cpuinfo, kernel), machine=machine)
    assert (info["cpu_model"], info["board"], info["emulated"]) == (cpu, board, None)


def test_big_little_cores_are_counted():
    blocks = [{"CPU implementer": "0x41", "CPU part": p} for p in
              ("0xd05", "0xd05", "0xd0b", "0xd0b", "0xd0b", "0xd05", "0xd05", "0xd05")]
    assert sysinfo._arm_cores(blocks).count("Cortex-A55") == 5
    assert sysinfo.ARM_PARTS[0xD0B] == "Cortex-A76"


def test_emulated_root_is_detected_from_kernel_and_cpuinfo(tmp_path, monkeypatch):
    """qemu-aarch64 7.2 answers uname with aarch64 but leaves the host's /proc/cpuinfo and
    /proc/sys/kernel/arch: both disagree, and the CPU line names the guest and the host."""
    monkeypatch.setenv("QEMU_CPU", "cortex-a72")
    root = FIX / "emulated_arm64"
    info = sysinfo.collect(root=str(root), machine="aarch64")
    host = sysinfo._field(sysinfo.cpuinfo_blocks(str(root)), "model name")
    assert host and "Cortex" not in host
    assert info["emulated"] == {
        "emulator": "qemu-user", "machine": "aarch64", "host_arch": "x86_64", "host_cpu": host,
        "qemu_cpu": "cortex-a72",
        "evidence": ["the kernel is x86_64 (/proc/sys/kernel/arch) but this process runs as "
                     "aarch64",
                     "/proc/cpuinfo describes an x86 CPU but this process runs as aarch64"]}
    assert info["cpu_model"] == f"cortex-a72 emulated by QEMU (aarch64) on {host}"
    # the sysfs the emulated process sees is the host's: cores and frequency, no Pi board
    assert info["board"] is None


def test_qemu_that_fakes_cpuinfo_is_still_caught_by_the_kernel_arch(tmp_path, monkeypatch):
    """QEMU >= 8 shows an ARM /proc/cpuinfo to aarch64 guests; the kernel's arch still tells."""
    monkeypatch.delenv("QEMU_CPU", raising=False)
    info = sysinfo.collect(root=_root(tmp_path, "pi4_arm64_cpuinfo.txt", "x86_64"),
                           machine="aarch64")
    assert info["emulated"]["evidence"] == [
        "the kernel is x86_64 (/proc/sys/kernel/arch) but this process runs as aarch64"]
    assert info["cpu_model"] == "QEMU's default CPU emulated by QEMU (aarch64) on x86_64"


def test_native_x86_is_not_emulated(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(FIX / "emulated_arm64", root)  # the host's own files, read natively
    assert sysinfo.emulation(str(root), "x86_64") is None


def test_bench_warns_that_emulated_timings_are_not_a_boards():
    system = {"emulated": {"evidence": ["x"]}, "cpu_model": "cortex-a76 emulated by QEMU "
              "(aarch64) on Some CPU"}
    result = {"latency_ms": {"robust_cv": 0.0, "cv": 0.0, "min": 1.0, "p50": 1.0},
              "system_before": system, "system_after": system, "repeats": 1}
    assert bench.conditions(result) == [
        "emulated CPU (cortex-a76 emulated by QEMU (aarch64) on Some CPU): these timings are "
        "the emulator's, not a board's"]
    assert sysinfo.emulated_result(result) and not sysinfo.emulated_result({})
