"""The whole board path on an emulated Raspberry Pi: Debian bookworm arm64 under qemu-user, its
own OpenSSH server on loopback (`edgepipe devices emulate`), Python 3.11, pip resolving the real
aarch64 wheels, XNNPACK's ARM kernels on a Cortex-A72 (Pi 4) and a Cortex-A76 (Pi 5).

Needs root, binfmt_misc, qemu-user-static and the root built once
(`edgepipe devices emulate build`, which .ci/run does): outside CI these tests skip saying what
is missing; under CI=true they fail. The boards are started here and stopped at the end.
"""

from __future__ import annotations

import json
import os
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

# Names of this test session's own: two sessions on one machine (CI and a developer) share the
# cached root but never a board, a port or a workdir.
TAG = os.getpid()
PI4, PI5, LITERT = f"pytest-pi4-{TAG}", f"pytest-pi5-{TAG}", f"pytest-litert-{TAG}"
BOARDS = {PI4: "cortex-a72", PI5: "cortex-a76"}
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
            boards[name] = emulate.start(name, cpu=cpu)
        entries = {n: b.entry() for n, b in boards.items()}
        # one install serves both CPU models (what QEMU emulates is not in the files)
        entries[PI5]["workdir"] = entries[PI4]["workdir"]
        # the same board, set up with the other runtime in its own workdir
        entries[LITERT] = {**entries[PI4], "runtime": "ai-edge-litert",
                           "workdir": f"~/edgepipe-{LITERT}"}
        inv = folder / "devices.yaml"
        inv.write_text(yaml.safe_dump({"devices": entries}))
        yield {"inv": inv, "boards": boards, "dir": folder}
    finally:
        for name, b in boards.items():  # the boards, their keys and workdirs: nothing is left
            emulate.stop(name)
            for p in (b.client, b.root / b.inside.lstrip("/"), b.root / "root" / f"edgepipe-{name}",
                      b.root / "root" / f"edgepipe-{LITERT}"):
                shutil.rmtree(p, ignore_errors=True)


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_second_start_is_harmless_and_prints_the_entry(emu):
    r = _cli("devices", "emulate", "start", PI4, "--cpu", "cortex-a72")
    assert r.exit_code == 0, r.output
    b = emu["boards"][PI4]
    assert r.stderr.splitlines()[0] == f"{PI4} is already running: {b.describe()}"
    assert yaml.safe_load(r.stdout) == {"devices": {PI4: b.entry()}}
    r = _cli("devices", "emulate", "start", PI4, "--cpu", "cortex-a76")
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1] == (
        f"error: {PI4} is running as cortex-a72 on port "
        f"{b.port}; stop it first: edgepipe devices emulate stop {PI4}")


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
    r = _cli("devices", "check", PI5, "--devices", emu["inv"])
    lines = r.output.splitlines()
    assert "cpu cortex-a76 emulated by QEMU (aarch64) on " in lines[1]
    assert lines[2].strip().startswith("EMULATED: the kernel is x86_64 (/proc/sys/kernel/arch) "
                                       "but this process runs as aarch64")
    assert lines[2].endswith("its timings are the emulator's, not a board's")


@pytest.fixture(scope="module")
def ready(emu):
    """`devices setup` on the Pi 4 (pip installs), then on the Pi 5 (same workdir: found)."""
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
    r = _cli("devices", "setup", LITERT, "--devices", emu["inv"], "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)["devices"][LITERT]
    assert got["runtime"] == "ai-edge-litert" and got["info"]["runtime"]["backend"] == "litert"
    assert got["info"]["emulated"]["qemu_cpu"] == "cortex-a72"


def test_deploy_profile_and_verify_say_emulated(emu, ready, tmp_path):
    from sklearn.datasets import load_digits

    from pipeline.devices.golden import host_golden

    model = tmp_path / "m.tflite"
    model.write_bytes(mlp((1, 8, 8, 1), (32, 10), seed=3))
    x = (load_digits().images[:16, :, :, None] / 16.0).astype(np.float32)
    golden = host_golden(model, x, tmp_path / "g.npz")
    r = _cli("deploy", model, "--device", PI5, "--devices", emu["inv"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"{PI5}: edgepipe-{PI4}/models/")  # the shared workdir
    r = _cli("profile", model, "--device", PI5, "--golden", golden, "--devices",
             emu["inv"], "--min-runs", 3, "--min-seconds", 0, "--warmup", 1)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)["devices"][PI5]
    assert d["emulated"] is True and d["verify"]["passed"] is True
    assert d["bench"]["warnings"][0].startswith("emulated CPU (cortex-a76 emulated by QEMU")
    assert "EMULATED CPU: not a board's latency" in r.stderr


@pytest.mark.slow
def test_recipe_fp32_and_int8_on_host_and_both_emulated_cpus(emu, ready, tmp_path):
    """`profile: {targets: [host, <pi4>, <pi5>]}`: each file is verified on each
    emulated CPU against the host's outputs on real digits; the boards' latencies are marked
    emulated and a latency gate no board could meet is not applied to them."""
    from pipeline import engine, recipe

    text = ("name: emu\nseed: 0\ndataset: {name: digits, input_size: [8, 8], channels: 1}\n"
            "model: {zoo: small_cnn, options: {filters: [8], dense: 16, dropout: 0.0}}\n"
            f"devices: {emu['inv']}\nstages:\n  - train: {{epochs: 2, batch_size: 64}}\n"
            "  - export: {modes: [fp32, int8]}\n"
            f"  - profile: {{{FAST}, targets: [host, {PI4}, {PI5}], "
            f"max_latency_ms: {{host: 1000, {PI4}: 0.000001, {PI5}: 0.000001}}}}\n"
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
    assert f"p50 ms ({PI4}, EMULATED) | p50 ms ({PI5}, EMULATED)" in md
    assert f"- {PI5}: the CPU was emulated (QEMU on the host)" in md
