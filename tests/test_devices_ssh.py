"""Edge boards against a REAL OpenSSH server on loopback (Debian's openssh-server, as root).

The "board" is the tflite-runtime 2.14 venv of the `board_python` fixture (no TensorFlow): each
board's workdir links it as `venv`, so `devices setup` finds the runtime installed and does the
rest (runner copy, checks, setup.json) for real. Board workdirs hold spaces, quotes, `$()` and `;`.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.devices import load_inventory
from pipeline.devices.fleet import ModelJob, Options, profile_device, profile_fleet
from pipeline.devices.golden import host_golden
from pipeline.devices.runner import read_state, runner_package
from pipeline.devices.setup import setup_device
from pipeline.devices.transport import SSH
from pipeline.errors import DeviceError
from tests.conftest import require
from tests.ssh_server import SSHServer, free_port, have_sshd, keygen, write_known_hosts
from tests.tiny_tflite import mlp

pytestmark = pytest.mark.ssh

FAST = dict(warmup=1, min_runs=5, min_seconds=0.0)
MARK = f"PWNED_{os.getpid()}"
NASTY_DIR = f"board $(touch {MARK}_d); x'y\"z"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, board_python):
    """Two sshd 'boards' (a, b), a spare one (c) that tests may kill, their inventory."""
    require(have_sshd(), "openssh-server (/usr/sbin/sshd) and openssh-client are needed")
    require(os.geteuid() == 0, "sshd on loopback runs as root here")
    root = tmp_path_factory.mktemp("lab")
    user_key = keygen(root / "user_key")
    servers = {n: SSHServer(root / f"sshd-{n}", user_key).start() for n in "abc"}
    known = write_known_hosts(root / "known_hosts", *servers.values())
    venv = Path(board_python).parent.parent
    devices = {}
    for n, s in servers.items():
        work = root / f"{NASTY_DIR} {n}"
        work.mkdir()
        (work / "venv").symlink_to(venv)
        devices[n] = s.entry(python=board_python, workdir=str(work), tags=["lab"] if n != "c" else [])
    inv = root / "devices.yaml"
    ssh_config = root / "ssh_config"  # hermetic: no ~/.ssh/config, no /etc/ssh/ssh_config
    ssh_config.write_text("")
    inv.write_text(yaml.safe_dump({"defaults": {"known_hosts": str(known), "connect_timeout": 3,
                                                "ssh_config": str(ssh_config)},
                                   "devices": devices}))
    yield {"root": root, "servers": servers, "inv": inv, "known": known, "key": user_key,
           "devices": load_inventory(inv)}
    for s in servers.values():
        s.stop()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny .tflite files (8x8x1 -> 10) and a golden for the first, from real digits."""
    from sklearn.datasets import load_digits

    d = tmp_path_factory.mktemp("models")
    out = []
    for i, widths in enumerate([(16, 10), (256, 64, 10)]):
        p = d / f"model {i}.tflite"
        p.write_bytes(mlp((1, 8, 8, 1), widths, seed=i))
        out.append(p)
    x = (load_digits().images[:16, :, :, None] / 16.0).astype(np.float32)
    golden = host_golden(out[0], x, d / "golden.npz")
    return {"small": out[0], "big": out[1], "golden": golden, "x": x}


@pytest.fixture(scope="module")
def ready(lab):
    """Boards a and b set up (as `edgepipe devices setup a b` does)."""
    r = CliRunner().invoke(main, ["devices", "setup", "a", "b", "--devices", str(lab["inv"]), "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["devices"]


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_check_before_setup_uses_a_stdlib_probe(lab):
    r = _cli("devices", "check", "c", "--devices", lab["inv"], "--json")
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)["devices"]["c"]
    assert (c["reachable"], c["setup"]) == (True, False)
    assert c["python"].startswith("3.") and c["cores"] == os.cpu_count()
    assert c["runtime"] == {"backend": "tflite-runtime", "version": "2.14.0"}  # the linked venv
    assert "cpufreq" in c["info"] and "temperature_c" in c
    r = _cli("devices", "check", "c", "--devices", lab["inv"])
    assert r.exit_code == 0 and "runtime tflite-runtime 2.14.0  NOT SET UP" in r.output


def test_setup_installs_runner_and_is_idempotent(lab, ready):
    a = ready["a"]
    assert a["runtime"] == "tflite-runtime" and a["runtime_version"] == "2.14.0"
    assert a["requirements"] == ["tflite-runtime==2.14.0", "numpy<2"]
    assert a["edge_runner_sha256"] == runner_package()[1]
    assert a["info"]["runtime"]["backend"] == "tflite-runtime"
    work = Path(lab["devices"].get("a").workdir)
    assert (work / "lib" / "edge_runner" / "bench.py").is_file()
    assert not any("tensorflow" in p.name for p in (work / "lib").iterdir())
    with SSH(lab["devices"].get("a")) as ssh:
        again = setup_device(ssh)  # nothing to install, nothing breaks
        assert again["edge_runner_sha256"] == a["edge_runner_sha256"]
        assert read_state(ssh)["runtime_version"] == "2.14.0"
        # The bin/edge-runner wrapper works for a user logged in on the board.
        out = ssh.run([lab["devices"].get("a").remote("bin", "edge-runner"), "info", "--json"])
        assert json.loads(out.text)["runtime"]["backend"] == "tflite-runtime"


def test_deploy_by_content_hash_skips_second_time(lab, ready, models):
    import hashlib

    sha = hashlib.sha256(models["small"].read_bytes()).hexdigest()
    on_board = Path(lab["devices"].get("a").workdir) / "models" / f"{sha}.tflite"
    on_board.unlink(missing_ok=True)  # an earlier test may have deployed it: this one copies
    r1 = _cli("deploy", models["small"], "--device", "a", "--devices", lab["inv"], "--json")
    r2 = _cli("deploy", models["small"], "--device", "a", "--devices", lab["inv"], "--json")
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
    d1, d2 = (json.loads(r.stdout)["devices"]["a"] for r in (r1, r2))
    assert d1["remote_path"] == d2["remote_path"]
    assert d1["remote_path"].endswith(f"/models/{d1['sha256']}.tflite")
    assert Path(d1["remote_path"]).read_bytes() == models["small"].read_bytes()
    assert d1["remote_path"] == str(on_board) and d1["sha256"] == sha
    assert (d1["copied"], d2["copied"]) == (True, False)


def test_profile_cli_json(lab, ready, models):
    r = _cli("profile", models["big"], "--device", "a", "--devices", lab["inv"], "--threads", 2,
             "--warmup", 1, "--min-runs", 5, "--min-seconds", 0)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    p = out["devices"]["a"]
    assert out["errors"] == {} and out["sha256"] == p["sha256"] == p["bench"]["model"]["sha256"]
    lat = p["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] and lat["mean"] > 0
    b = p["bench"]
    assert (b["backend"], b["backend_version"], b["threads"], b["runs"]) == ("tflite-runtime", "2.14.0", 2, 5)
    assert b["init_ms"] > 0 and b["first_inference_ms"] > 0 and b["peak_rss_kb"] > 0
    assert "governor" in b["system_before"]["cpufreq"] and "throttling" in b["system_after"]
    assert p["seconds"]["total"] >= p["seconds"]["bench"] > 0


def test_verify_on_device_and_wrong_golden_fails(lab, ready, models, tmp_path):
    r = _cli("profile", models["small"], "--device", "a", "--devices", lab["inv"],
             "--golden", models["golden"], *sum(([f"--{k.replace('_', '-')}", v] for k, v in FAST.items()), []))
    assert r.exit_code == 0, r.output
    v = json.loads(r.stdout)["devices"]["a"]["verify"]
    assert v["passed"] is True and v["n"] == 16 and v["max_abs_diff"] < 1e-5
    assert v["argmax_agreement"] == 1.0 and v["backend"] == "tflite-runtime"
    # A golden that does not match (another model's answers): the profile fails.
    from edge_runner.golden import write_golden

    x = models["x"]
    wrong = write_golden(tmp_path / "wrong.npz", x, np.roll(np.load(models["golden"])["outputs"], 1, axis=1))
    r = _cli("profile", models["small"], "--device", "a", "--devices", lab["inv"], "--golden", wrong,
             "--min-runs", 5, "--min-seconds", 0)
    assert r.exit_code == 2
    out = json.loads(r.stdout)
    assert out["devices"] == {} and "a" in out["errors"]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and re.fullmatch(
        r'error: 1 of 1 device\(s\) failed: Device "a" \(root@127\.0\.0\.1:\d+\): model 0\.tflite '
        r"computes wrong answers on the device \(verification failed: max abs difference "
        r"[0-9.]+ > tolerance 0\.0001; argmax agreement 0\.0000 < 1\.0\)", errors[0]), r.stderr


def test_fleet_of_two_boards_in_parallel(lab, ready, models):
    devs = load_inventory(lab["inv"]).by_tag("lab")
    assert [d.name for d in devs] == ["a", "b"]
    spans = {}

    def timed(d):
        t0 = time.monotonic()
        r = profile_device(d, [ModelJob(models["small"]), ModelJob(models["big"])],
                           Options(min_seconds=0.2, min_runs=5, warmup=1))
        spans[d.name] = (t0, time.monotonic())
        return r

    from pipeline.devices.fleet import run_on_devices

    res = run_on_devices(devs, timed)
    assert res.errors == {}
    assert set(res.results) == {"a", "b"}
    for name in "ab":
        ms = res.results[name]["models"]
        assert set(ms) == {str(models["small"]), str(models["big"])}
        assert all(m["latency_ms"]["p50"] > 0 for m in ms.values())
    (a0, a1), (b0, b1) = spans["a"], spans["b"]
    assert a0 < b1 and b0 < a1  # the two boards' jobs overlapped in time


def test_sshd_killed_mid_run_keeps_other_boards(lab, ready, models):
    c = lab["servers"]["c"]
    inv = lab["devices"]
    with SSH(inv.get("c")) as ssh:  # set up c quickly (the linked venv already has the runtime)
        setup_device(ssh)

    def kill_when_benchmark_runs():
        end = time.monotonic() + 60
        while time.monotonic() < end:
            for pid in c.pids():
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"edge_runner\x00bench" in cmd:
                    c.kill()
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_benchmark_runs, daemon=True)
    killer.start()
    t0 = time.monotonic()
    res = profile_fleet([inv.get("a"), inv.get("c")], [ModelJob(models["small"])],
                        Options(min_seconds=2.0, min_runs=5, warmup=1, command_timeout=30))
    took = time.monotonic() - t0
    killer.join(5)
    assert set(res.results) == {"a"} and res.results["a"]["models"][str(models["small"])]["latency_ms"]["p50"] > 0
    assert list(res.errors) == ["c"]
    # the parenthesis is ssh's own last line (or 'ssh exited with code 255 and no message')
    assert re.fullmatch(rf'Device "c" \(root@127\.0\.0\.1:{c.port}\): connection lost during '
                        r'"edge-runner bench" \([^\n]+\)', res.errors["c"]), res.errors["c"]
    assert took < 25  # well inside the 30 s command timeout: the loss is noticed at once
    c.start()  # back for the next test


def _pids_running(marker: str) -> list[int]:
    """Processes on this machine (the boards' machine) whose command line holds `marker`."""
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                if marker.encode() in Path(f"/proc/{d}/cmdline").read_bytes():
                    found.append(int(d))
            except OSError:
                continue
    return found


def test_timed_out_command_is_stopped_on_the_board_too(lab):
    """Killing the local ssh client leaves the remote command running; the board's own limit
    (2 s longer than the local one) must stop it, so it does not spoil the next benchmark."""
    d = lab["devices"].get("a")
    marker = f"edgepipe-orphan-{uuid.uuid4().hex}"
    t0 = time.monotonic()
    try:
        with pytest.raises(DeviceError) as e, SSH(d) as ssh:
            ssh.run([d.python, "-c", "import time; time.sleep(300)", marker], timeout=2)
        took = time.monotonic() - t0
        assert str(e.value) == (f'Device "a" (root@127.0.0.1:{d.port}): "{Path(d.python).name} -c '
                                'import time; time.sleep(300) …" did not finish within 2s '
                                "(the per-command timeout)")
        assert 2 <= took < 6
        end = time.monotonic() + 10
        while _pids_running(marker) and time.monotonic() < end:
            time.sleep(0.1)
        assert _pids_running(marker) == [], "the command kept running on the board"
        assert time.monotonic() - t0 < 8  # 2 s + the 2 s grace + slack
    finally:
        for pid in _pids_running(marker):  # only ours: the marker is unique
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def test_changed_host_key_is_refused_even_with_accept_new(lab):
    c = lab["servers"]["c"]
    c.new_host_key()
    for accept_new in (False, True):
        with pytest.raises(DeviceError) as e, SSH(lab["devices"].get("c"), accept_new=accept_new) as ssh:
            ssh.run(["true"])
        assert str(e.value) == (
            f'Device "c" (root@127.0.0.1:{c.port}): host key has CHANGED since it was trusted; '
            f"refusing to connect (possible man-in-the-middle). If the board was re-installed, "
            f"remove the old key with: ssh-keygen -R '[127.0.0.1]:{c.port}' -f {lab['known']}")


def test_unknown_host_refused_unless_accept_new(lab, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    d = lab["devices"].get("a").model_copy(update={"known_hosts": str(kh)})
    with pytest.raises(DeviceError) as e, SSH(d) as ssh:
        ssh.run(["true"])
    assert str(e.value) == (f'Device "a" (root@127.0.0.1:{d.port}): unknown host (its key is not '
                            f"in {kh}); run with --accept-new to trust it on first use, or add its "
                            "key with ssh-keyscan")
    with SSH(d, accept_new=True) as ssh:
        assert ssh.run(["echo", "ok"]).text == "ok\n"
    assert kh.read_text().strip()  # trusted from now on (the line may be hashed)
    with SSH(d) as ssh:
        assert ssh.run(["true"]).returncode == 0


def test_unreachable_host_fails_within_connect_timeout(lab, tmp_path):
    import socket

    closed = lab["devices"].get("a").model_copy(update={"port": free_port()})
    t0 = time.monotonic()
    with pytest.raises(DeviceError) as e, SSH(closed) as ssh:
        ssh.run(["true"])
    assert time.monotonic() - t0 < 3
    assert str(e.value) == (f'Device "a" (root@127.0.0.1:{closed.port}): connection refused; is '
                            "sshd running there and is the port right?")
    with socket.socket() as silent:  # accepts TCP, never says a word: a hung board
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        mute = closed.model_copy(update={"port": silent.getsockname()[1], "connect_timeout": 1})
        t0 = time.monotonic()
        with pytest.raises(DeviceError) as e, SSH(mute) as ssh:
            ssh.run(["true"])
        assert time.monotonic() - t0 < 5
    assert str(e.value) == (f'Device "a" (root@127.0.0.1:{mute.port}): unreachable (no answer '
                            "within the 1s connect timeout)")


def test_hostile_file_name_deploys_and_only_the_benchmark_runs(lab, ready, models, tmp_path):
    name = f"m '\"$(touch {MARK}_a)\"; touch {MARK}_b ; `touch {MARK}_c`.tflite"
    hostile = tmp_path / name
    hostile.write_bytes(models["small"].read_bytes())
    r = _cli("profile", hostile, "--device", "b", "--devices", lab["inv"], "--min-runs", 5,
             "--min-seconds", 0, "--warmup", 1)
    assert r.exit_code == 0, r.output
    p = json.loads(r.stdout)["devices"]["b"]
    assert p["model"] == str(hostile) and p["latency_ms"]["p50"] > 0
    assert Path(p["remote_path"]).parent.parent.name.startswith("board $(touch")
    places = [Path.home(), Path.cwd(), tmp_path, lab["root"], *lab["root"].iterdir()]
    assert not [p for d in places if d.is_dir() for p in d.glob(f"{MARK}*")]


def test_check_and_profile_report_unreachable_board_without_losing_others(lab, ready, models, tmp_path):
    inv = yaml.safe_load(lab["inv"].read_text())
    inv["devices"]["gone"] = {**inv["devices"]["a"], "port": free_port(), "tags": ["lab"]}
    p = tmp_path / "devices.yaml"
    p.write_text(yaml.safe_dump(inv))
    r = _cli("profile", models["small"], "--tag", "lab", "--devices", p, "--min-runs", 5,
             "--min-seconds", 0, "--warmup", 1)
    assert r.exit_code == 2
    out = json.loads(r.stdout)
    assert set(out["devices"]) == {"a", "b"} and set(out["errors"]) == {"gone"}
    gone = (f'Device "gone" (root@127.0.0.1:{inv["devices"]["gone"]["port"]}): connection '
            "refused; is sshd running there and is the port right?")
    assert out["errors"]["gone"] == gone
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")] == [
        f"error: 1 of 3 device(s) failed: {gone}"]


@pytest.mark.slow
def test_recipe_profile_stage_on_boards_with_verification_and_gates(lab, ready, tmp_path):
    """`profile: {targets: [host, a, tag:lab]}`: a latency column per board, outputs verified on
    the board against the host's, per-target max_latency_ms gates. (No training: the zoo model
    is exported as built; verification compares the same file on host and board.)"""
    import hashlib

    from pipeline import engine, recipe
    from pipeline.errors import GateError

    head = ("name: boards\nseed: 0\ndataset: {name: digits, input_size: [8, 8], channels: 1}\n"
            "model: {zoo: small_cnn, options: {filters: [4], dense: 16, dropout: 0.0}}\n"
            f"devices: {lab['inv']}\nstages:\n  - export: {{modes: [int8]}}\n")
    fast = "min_runs: 5, min_seconds: 0.0, warmup: 1, verify_samples: 8"
    text = head + (f"  - profile: {{{fast}, targets: [host, a, tag:lab], "
                   "max_latency_ms: {host: 1000, tag:lab: 1000}}\n")
    run_dir = tmp_path / "run"
    records = engine.run(recipe.parse(text), run_dir, recipe_text=text)
    lat = records[-1].metrics["latency_ms"]
    assert set(lat) == {"01_export/model_int8.tflite"}
    for path, per_target in lat.items():
        assert set(per_target) == {"host", "a", "b"}
        for name in "ab":
            s = per_target[name]
            assert s["p50"] > 0 and (s["backend"], s["backend_version"]) == ("tflite-runtime", "2.14.0")
            assert s["verify"]["passed"] is True and s["verify"]["n"] == 8
            v = s["verify"]  # one output here: it is the worst one, and listed by its name
            assert list(v["outputs"]) == [v["worst_output"]]
            assert v["outputs"][v["worst_output"]] == {
                k: v[k] for k in ("passed", "max_abs_diff", "argmax_agreement", "tolerance")}
            assert s["sha256"] == hashlib.sha256((run_dir / path).read_bytes()).hexdigest()
    assert lat["01_export/model_int8.tflite"]["a"]["verify"]["mode"] == "int8"
    assert [p.name for p in (records[-1].dir / "golden").iterdir()] == ["01_export__model_int8.tflite.npz"]

    tight = head + f"  - profile: {{{fast}, targets: [b], max_latency_ms: {{b: 0.000001}}}}\n"
    with pytest.raises(GateError) as e:
        engine.run(recipe.parse(tight), run_dir, recipe_text=tight)
    assert re.fullmatch(r"gate failed: 01_export/model_int8\.tflite on b: p50 latency [0-9.]+ ms "
                        r"> max_latency_ms 1e-06", str(e.value)), str(e.value)


@pytest.mark.slow
def test_multi_input_multi_output_model_verified_on_the_board(lab, ready, tmp_path):
    """A two-input, two-output tf_keras model converted with pipeline.tflite (fp32, and int8 with
    calibration for both inputs), a named golden from the host, and each output checked on the
    board against its own tolerance; a golden wrong in one head fails naming that head."""
    from edge_runner.golden import read_golden, write_golden
    from pipeline import tflite
    from tests.helpers import multi_io_data, multi_io_model

    model, data = multi_io_model(), multi_io_data(16)
    for mode in ("fp32", "int8"):
        path = tmp_path / f"multi {mode}.tflite"
        path.write_bytes(tflite.convert(model, mode, data if mode == "int8" else None))
        g = host_golden(path, data, tmp_path / f"golden {mode}.npz", mode)
        r = _cli("profile", path, "--device", "a", "--devices", lab["inv"], "--golden", g,
                 *sum(([f"--{k.replace('_', '-')}", v] for k, v in FAST.items()), []))
        assert r.exit_code == 0, r.output
        v = json.loads(r.stdout)["devices"]["a"]["verify"]
        assert v["passed"] is True and v["backend"] == "tflite-runtime" and v["mode"] == mode
        assert set(v["outputs"]) == {"klass", "value"} and v["n"] == 16
        assert v["outputs"]["klass"]["argmax_agreement"] == 1.0
        assert v["outputs"]["value"]["argmax_agreement"] is None
    gold = read_golden(g)
    wrong = write_golden(tmp_path / "wrong.npz", gold["inputs"],
                         {**gold["outputs"], "value": gold["outputs"]["value"] + 1.0}, "int8")
    r = _cli("profile", path, "--device", "a", "--devices", lab["inv"], "--golden", wrong,
             "--min-runs", 5, "--min-seconds", 0)
    assert r.exit_code == 2 and "a" in json.loads(r.stdout)["errors"]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and re.fullmatch(
        r'error: 1 of 1 device\(s\) failed: Device "a" \(root@127\.0\.0\.1:\d+\): multi '
        r"int8\.tflite computes wrong answers on the device \(verification failed: output "
        r"'value': max abs difference [0-9.e+-]+ > tolerance [0-9.e+-]+\)", errors[0]), r.stderr


def test_latency_table_on_a_board_in_batches_resumes_after_the_board_dies(lab, ready, tmp_path,
                                                                           monkeypatch):
    """Ops go up as one tar per batch and are timed by one edge-runner command; a board lost
    after the first batch fails the command, the table keeps that batch, a re-run does the rest."""
    import tf_keras as keras

    from pipeline import models as M
    from pipeline.devices import transport
    from pipeline.latency.measure import BoardTarget

    x = keras.Input((4,))
    y = keras.layers.Dense(16, activation="relu", name="fc")(x)
    M.save_model(keras.Model(x, keras.layers.Dense(10, name="out")(y)), tmp_path / "m.keras")
    b = lab["servers"]["b"]
    commands, timed, killed = [], [], []
    run_sh = transport.SSH.run_sh
    monkeypatch.setattr(transport.SSH, "run_sh",
                        lambda self, cmd, **kw: commands.append(kw["what"]) or run_sh(self, cmd, **kw))
    time_files = BoardTarget.time

    def time_then_die(self, paths):
        out = time_files(self, paths)
        timed.append(len(paths))
        if len(timed) == 1:
            b.kill()
            killed.append(time.monotonic())
        return out

    monkeypatch.setattr(BoardTarget, "time", time_then_die)
    args = ["latency", "table", tmp_path / "m.keras", "--target", "b", "--devices", lab["inv"],
            "--table", tmp_path / "t.json", "--batch", 2, "--rounds", 1, "--min-seconds", 0,
            "--timeout", 20]
    r = _cli(*args)
    assert r.exit_code == 2 and time.monotonic() - killed[0] < 20, r.output  # within --timeout
    assert r.output.splitlines()[-1] == (f'error: Device "b" (root@127.0.0.1:{b.port}): '
                                         "connection refused; is sshd running there and is the "
                                         "port right?")
    table = json.loads((tmp_path / "t.json").read_text())
    assert len(table["entries"]) == 2 and table["identity"]["target"] == "b"
    assert table["identity"]["runtime"] == "tflite-runtime"
    copies = [c for c in commands if c.startswith("copying")]
    assert copies == [f"copying 2 files to {lab['devices'].get('b').remote('models')}"]
    assert '"edge-runner bench" of 2 models' in commands

    b.start()
    commands.clear()
    r = _cli(*args)
    assert r.exit_code == 0, r.output
    assert "(2 measured now, 4 in the table)" in r.output
    assert sum(c.startswith("copying") for c in commands) == 2  # the 2 ops left, then the model
    assert not any(c.startswith("checking") for c in commands)  # no per-file round trips


@pytest.mark.slow
def test_recipe_exports_a_two_input_two_output_model_and_verifies_it_on_the_board(lab, ready,
                                                                                  tmp_path):
    """The export stage of a recipe on a two-input, two-head model (npz with x_*__<input> and
    y_*__<output>): its fp32 and int8 files are verified on the board, every head by name."""
    from pipeline import engine, recipe
    from tests.helpers import multi_io_data, multi_io_model

    model_path = tmp_path / "two.keras"
    multi_io_model().save(model_path)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 64), ("test", 24)):
        x = multi_io_data(n, seed=n)
        arrays.update({f"x_{split}__image": x["image"], f"x_{split}__meta": x["meta"],
                       f"y_{split}__klass": rng.integers(0, 4, n),
                       f"y_{split}__value": rng.normal(size=(n, 2)).astype(np.float32)})
    np.savez(tmp_path / "two.npz", **arrays)
    text = (f"name: two\nseed: 0\ndataset: {{name: npz, path: {tmp_path / 'two.npz'}, "
            f"calibration_size: 32}}\nmodel: {{path: {model_path}}}\n"
            "task: {outputs: {klass: classification, value: regression}}\n"
            f"devices: {lab['inv']}\nstages:\n  - export: {{modes: [fp32, int8]}}\n"
            "  - profile: {min_runs: 5, min_seconds: 0.0, warmup: 1, verify_samples: 8, "
            "targets: [a]}\n")
    records = engine.run(recipe.parse(text), tmp_path / "run", recipe_text=text)
    lat = records[-1].metrics["latency_ms"]
    assert set(lat) == {"01_export/model_fp32.tflite", "01_export/model_int8.tflite"}
    for path, per_target in lat.items():
        v = per_target["a"]["verify"]
        assert v["passed"] is True and v["n"] == 8 and set(v["outputs"]) == {"klass", "value"}
        assert v["mode"] == path.rsplit("_", 1)[1].removesuffix(".tflite")
        assert v["outputs"]["klass"]["argmax_agreement"] == 1.0
        assert v["outputs"]["value"]["argmax_agreement"] is None
        with np.load(records[-1].dir / "golden" / (path.replace("/", "__") + ".npz")) as g:
            assert sorted(g.files) == ["inputs__image", "inputs__meta", "outputs__klass",
                                       "outputs__value", "quantization"]
