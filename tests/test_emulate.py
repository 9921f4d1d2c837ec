"""`edgepipe devices emulate`: what a host without root, binfmt_misc or qemu-user-static is told,
and harmless repeats. No emulation runs here (tests/test_emulated_pi.py runs the board)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.devices import emulate, load_inventory
from pipeline.errors import UserError

ENABLED = ("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: {flags}\n"
           "offset 0\nmagic 7f454c460201010000000000000000000200b700\n")


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A root host with binfmt_misc mounted, qemu-user-static's aarch64 handler, ssh-keygen and
    debootstrap; each test takes one piece away."""
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir()
    (binfmt / "register").write_text("")
    (binfmt / "qemu-aarch64").write_text(ENABLED.format(flags="PF"))
    monkeypatch.setattr(emulate, "BINFMT", binfmt)
    monkeypatch.setattr(emulate.os, "geteuid", lambda: 0)
    tools = {"qemu-aarch64-static", "ssh-keygen", "debootstrap"}
    monkeypatch.setattr(emulate.shutil, "which", lambda n: f"/usr/bin/{n}" if n in tools else None)
    monkeypatch.setenv("EDGEPIPE_EMU_CACHE", str(tmp_path / "cache"))
    return binfmt, tools


def _error(*args) -> str:
    r = CliRunner().invoke(main, ["devices", "emulate", *args])
    assert r.exit_code == 2, r.output
    return r.output.strip().splitlines()[-1]


def test_complete_host_passes(host):
    emulate.check_host("arm64", debootstrap=True)


def test_not_root(host, monkeypatch, tmp_path):
    monkeypatch.setattr(emulate.os, "geteuid", lambda: 1000)
    assert _error("start") == ("error: edgepipe devices emulate needs root (it runs debootstrap, "
                               "chroot and mount); run it as root, e.g. with sudo")
    assert not (tmp_path / "cache").exists()  # nothing written


def test_binfmt_misc_not_mounted(host):
    (host[0] / "register").unlink()
    assert _error("start") == (
        f"error: binfmt_misc is not mounted at {host[0]}; mount it: sudo mount -t binfmt_misc "
        f"binfmt_misc {host[0]}")


def test_no_qemu_user_static(host):
    (host[0] / "qemu-aarch64").unlink()
    host[1].discard("qemu-aarch64-static")
    assert _error("start", "--cpu", "cortex-a76") == (
        f"error: qemu-user-static is not installed (no arm64 handler in {host[0]}); install it: "
        "sudo apt-get install qemu-user-static binfmt-support")


def test_qemu_installed_but_not_registered(host):
    (host[0] / "qemu-aarch64").unlink()
    assert _error("start") == (
        f"error: qemu-user-static is installed but no arm64 handler is registered in {host[0]}; "
        "register it: sudo update-binfmts --enable qemu-aarch64")


def test_handler_disabled_or_without_fix_binary_flag(host):
    (host[0] / "qemu-aarch64").write_text("disabled\n" + ENABLED.format(flags="PF")[8:])
    assert _error("start") == ("error: the qemu-aarch64 binfmt handler is disabled; enable it: "
                               "sudo update-binfmts --enable qemu-aarch64")
    (host[0] / "qemu-aarch64").write_text(ENABLED.format(flags="P"))
    assert _error("start") == (
        "error: the qemu-aarch64 binfmt handler lacks the F flag, so it cannot run binaries "
        "inside a chroot; reinstall Debian's: sudo apt-get install --reinstall qemu-user-static")


def test_no_debootstrap_for_a_build(host, tmp_path):
    host[1].discard("debootstrap")
    assert _error("build") == ("error: debootstrap is not installed; install it: sudo apt-get "
                               "install debootstrap")
    assert not (tmp_path / "cache").exists()


def test_armhf_needs_its_own_handler(host):
    with pytest.raises(UserError, match=r"^qemu-user-static is not installed \(no armhf handler in "
                                        r"\S+/binfmt_misc\); install it: sudo apt-get install "
                                        r"qemu-user-static binfmt-support$"):
        emulate.check_host("armhf")


def test_unknown_cpu_is_a_usage_error(host):
    assert _error("start", "--cpu", "cortex-a77") == (
        "error: Invalid value for '--cpu': 'cortex-a77' is not one of 'cortex-a72', 'cortex-a76', "
        "'cortex-a53', 'cortex-a7', 'cortex-a15'. (see edgepipe devices emulate start --help)")
    with pytest.raises(UserError, match=r"^unknown CPU model 'cortex-a77' \(did you mean "
                                        r"\"cortex-a7\"\?\); choose one of: cortex-a72, "
                                        r"cortex-a76, cortex-a53, cortex-a7, cortex-a15$"):
        emulate.arch_of("cortex-a77")


def test_stopping_a_board_that_is_not_running_is_harmless(host, tmp_path):
    r = CliRunner().invoke(main, ["devices", "emulate", "stop", "emu-pi4"])
    assert (r.exit_code, r.output) == (0, "emu-pi4 is not running; nothing to stop\n")
    r = CliRunner().invoke(main, ["devices", "emulate", "stop"])
    assert (r.exit_code, r.output) == (0, "no emulated board is running; nothing to stop\n")
    r = CliRunner().invoke(main, ["devices", "emulate", "status"])
    assert r.output == (f"no emulated board yet in {emulate.cache_dir()}; start one: edgepipe "
                        "devices emulate start\n")


def test_board_entry_and_known_hosts_line(host, tmp_path):
    b = emulate.Board(name="emu-pi5", cpu="cortex-a76", port=40022, cache=tmp_path / "c")
    assert b.entry() == {
        "host": "127.0.0.1", "port": 40022, "user": "root",
        "identity_file": str(tmp_path / "c/boards/emu-pi5/id_ed25519"),
        "known_hosts": str(tmp_path / "c/boards/emu-pi5/known_hosts"),
        "workdir": "~/edgepipe-emu-pi5", "connect_timeout": 60, "tags": ["emulated", "arm64"]}
    path = tmp_path / "devices.yaml"  # the printed entry is a valid inventory
    path.write_text(b.devices_yaml())
    assert load_inventory(str(path)).resolve(["emu-pi5"])[0].port == 40022
    assert b.pid() is None and b.root == tmp_path / "c/arm64/root"
