"""The whole board path on an emulated Raspberry Pi: Debian bookworm arm64 under qemu-user, its
own OpenSSH server on loopback (`edgepipe devices emulate`), Python 3.11, pip resolving the real
aarch64 wheels, XNNPACK's ARM kernels on a Cortex-A72 (Pi 4) and a Cortex-A76 (Pi 5).

Needs root, binfmt_misc, qemu-user-static and the root built once
(`edgepipe devices emulate build`, which .ci/run does): outside CI these tests skip saying what
is missing; under CI=true they fail. The boards are started here and stopped at the end.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.devices import emulate
from pipeline.errors import UserError
from tests.conftest import require
from tests.tiny_tflite import mlp

pytestmark = pytest.mark.emulated_pi

BOARDS = {"pytest-pi4": "cortex-a72", "pytest-pi5": "cortex-a76"}
FAST = "min_runs: 3, min_seconds: 0.0, warmup: 1, verify_samples: 16"


def missing() -> str | None:
    """Why the emulated Pi cannot run on this machine (None: it can)."""
    try:
        emulate.check_host("arm64")
    except UserError as e:
        return str(e)
    if not emulate.built("arm64"):
        return ("its root is not built; build it once (as root, ~12 min): edgepipe devices "
                "emulate build")
    return None


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    """Both boards running, their workdirs emptied (setup installs for real), an inventory."""
    why = missing()
    require(why is None, f"emulated Pi: {why}")
    folder = tmp_path_factory.mktemp("emu")
    boards = {}
    try:
        for name, cpu in BOARDS.items():
            b = boards[name] = emulate.start(name, cpu=cpu)
            shutil.rmtree(b.root / "root" / f"edgepipe-{name}", ignore_errors=True)
        entries = {n: b.entry() for n, b in boards.items()}
        # one install serves both CPU models (what QEMU emulates is not in the files)
        entries["pytest-pi5"]["workdir"] = entries["pytest-pi4"]["workdir"]
        # the same board, set up with the other runtime in its own workdir
        entries["pytest-litert"] = {**entries["pytest-pi4"], "runtime": "ai-edge-litert",
                                    "workdir": "~/edgepipe-pytest-litert"}
        shutil.rmtree(boards["pytest-pi4"].root / "root/edgepipe-pytest-litert",
                      ignore_errors=True)
        inv = folder / "devices.yaml"
        inv.write_text(yaml.safe_dump({"devices": entries}))
        yield {"inv": inv, "boards": boards, "dir": folder}
    finally:
        for name in boards:
            emulate.stop(name)


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_second_start_is_harmless_and_prints_the_entry(emu):
    r = _cli("devices", "emulate", "start", "pytest-pi4", "--cpu", "cortex-a72")
    assert r.exit_code == 0, r.output
    b = emu["boards"]["pytest-pi4"]
    assert r.stderr.splitlines()[0] == f"pytest-pi4 is already running: {b.describe()}"
    assert yaml.safe_load(r.stdout) == {"devices": {"pytest-pi4": b.entry()}}
    r = _cli("devices", "emulate", "start", "pytest-pi4", "--cpu", "cortex-a76")
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1] == (
        "error: pytest-pi4 is running as cortex-a72 on port "
        f"{b.port}; stop it first: edgepipe devices emulate stop pytest-pi4")


def test_check_says_emulated_and_which_cpu(emu):
    r = _cli("devices", "check", *BOARDS, "--devices", emu["inv"], "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)["devices"]
    for name, cpu in BOARDS.items():
        c = out[name]
        assert c["machine"] == "aarch64" and c["python"] == "3.11.2"
        e = c["emulated"]
        assert (e["emulator"], e["machine"], e["host_arch"], e["qemu_cpu"]) == (
            "qemu-user", "aarch64", "x86_64", cpu)
        assert c["cpu_model"].startswith(f"{cpu} emulated by QEMU (aarch64) on ")
    r = _cli("devices", "check", "pytest-pi5", "--devices", emu["inv"])
    lines = r.output.splitlines()
    assert "cpu cortex-a76 emulated by QEMU (aarch64) on " in lines[1]
    assert lines[2].strip().startswith("EMULATED: the kernel is x86_64 (/proc/sys/kernel/arch) "
                                       "but this process runs as aarch64")
    assert lines[2].endswith("its timings are the emulator's, not a board's")


@pytest.fixture(scope="module")
def ready(emu):
    """`devices setup` on pytest-pi4 (pip installs), then on pytest-pi5 (same workdir: found)."""
    out = {}
    for name in BOARDS:
        r = _cli("devices", "setup", name, "--devices", emu["inv"], "--json")
        assert r.exit_code == 0, r.output
        out.update(json.loads(r.stdout)["devices"])
    return out


def test_setup_installs_tflite_runtime_214_wheels_on_aarch64(ready):
    for name in BOARDS:
        r = ready[name]
        assert (r["runtime"], r["runtime_version"], r["python"]) == (
            "tflite-runtime", "2.14.0", "3.11.2")
        assert r["info"]["machine"] == "aarch64" and r["info"]["emulated"]
        assert r["requirements"] == ["tflite-runtime==2.14.0", "numpy<2"]


def test_setup_ai_edge_litert_on_aarch64(emu):
    """ai-edge-litert 2.3 has a cp311 manylinux_2_27_aarch64 wheel: it installs and runs."""
    r = _cli("devices", "setup", "pytest-litert", "--devices", emu["inv"], "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)["devices"]["pytest-litert"]
    assert got["runtime"] == "ai-edge-litert" and got["info"]["runtime"]["backend"] == "litert"
    assert got["info"]["emulated"]["qemu_cpu"] == "cortex-a72"


def test_deploy_profile_and_verify_say_emulated(emu, ready, tmp_path):
    from sklearn.datasets import load_digits

    from pipeline.devices.golden import host_golden

    model = tmp_path / "m.tflite"
    model.write_bytes(mlp((1, 8, 8, 1), (32, 10), seed=3))
    x = (load_digits().images[:16, :, :, None] / 16.0).astype(np.float32)
    golden = host_golden(model, x, tmp_path / "g.npz")
    r = _cli("deploy", model, "--device", "pytest-pi5", "--devices", emu["inv"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("pytest-pi5: edgepipe-pytest-pi4/models/")  # the shared workdir
    r = _cli("profile", model, "--device", "pytest-pi5", "--golden", golden, "--devices",
             emu["inv"], "--min-runs", 3, "--min-seconds", 0, "--warmup", 1)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)["devices"]["pytest-pi5"]
    assert d["emulated"] is True and d["verify"]["passed"] is True
    assert d["bench"]["warnings"][0].startswith("emulated CPU (cortex-a76 emulated by QEMU")
    assert "EMULATED CPU: not a board's latency" in r.stderr


@pytest.mark.slow
def test_recipe_fp32_and_int8_on_host_and_both_emulated_cpus(emu, ready, tmp_path):
    """`profile: {targets: [host, pytest-pi4, pytest-pi5]}`: each file is verified on each
    emulated CPU against the host's outputs on real digits; the boards' latencies are marked
    emulated and a latency gate no board could meet is not applied to them."""
    from pipeline import engine, recipe

    text = ("name: emu\nseed: 0\ndataset: {name: digits, input_size: [8, 8], channels: 1}\n"
            "model: {zoo: small_cnn, options: {filters: [8], dense: 16, dropout: 0.0}}\n"
            f"devices: {emu['inv']}\nstages:\n  - train: {{epochs: 2, batch_size: 64}}\n"
            "  - export: {modes: [fp32, int8]}\n"
            f"  - profile: {{{FAST}, targets: [host, pytest-pi4, pytest-pi5], "
            "max_latency_ms: {host: 1000, pytest-pi4: 0.000001, pytest-pi5: 0.000001}}\n"
            "  - report: {}\n")
    run_dir = tmp_path / "run"
    records = engine.run(recipe.parse(text), run_dir, recipe_text=text)
    lat = next(r for r in records if r.name == "profile").metrics["latency_ms"]
    assert set(lat) == {"02_export/model_fp32.tflite", "02_export/model_int8.tflite"}
    for path, per_target in lat.items():
        assert per_target["host"]["emulated"] is False
        for name in BOARDS:
            s = per_target[name]
            assert s["emulated"] is True and s["verify"]["passed"] is True, (path, name, s)
            assert s["verify"]["n"] == 16
    md = (next(r for r in records if r.name == "report").dir / "report.md").read_text()
    assert "p50 ms (pytest-pi4, EMULATED) | p50 ms (pytest-pi5, EMULATED)" in md
    assert "- pytest-pi5: the CPU was emulated (QEMU on the host)" in md
