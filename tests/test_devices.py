"""Devices without a network: inventory, ssh command lines, quoting, timeouts, error texts, fleet.

The transport tests run a stand-in `ssh` that executes the remote command with `sh -c`, so what
the remote shell would see is checked for real. tests/test_devices_ssh.py uses a real sshd.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.devices import Device, default_path, load_inventory
from pipeline.devices.fleet import run_on_devices
from pipeline.devices.transport import SSH, Deadline, RemoteCommandError, bounded
from pipeline.errors import DeviceError, UserError

INVENTORY = """\
defaults:
  known_hosts: /tmp/kh
devices:
  pi4:
    host: 10.0.0.2
    port: 2222
    user: pi
    identity_file: ~/.ssh/id_pi
    threads: 4
    tags: [lab, arm64]
  pi5:
    host: pi5-alias
    runtime: ai-edge-litert
    tags: [lab]
  jetson:
    host: 10.0.0.9
    workdir: /opt/edge
"""


@pytest.fixture
def inv_path(tmp_path) -> Path:
    p = tmp_path / "devices.yaml"
    p.write_text(INVENTORY)
    return p


def test_inventory_fields_defaults_and_alias(inv_path):
    inv = load_inventory(inv_path)
    assert inv.names() == ["jetson", "pi4", "pi5"]
    pi4, pi5 = inv.get("pi4"), inv.get("pi5")
    assert (pi4.address, pi4.port, pi4.threads, pi4.tags) == ("pi@10.0.0.2", 2222, 4, ("lab", "arm64"))
    assert pi4.known_hosts == "/tmp/kh" and pi5.known_hosts == "/tmp/kh"  # from defaults
    # An ~/.ssh/config alias: host only, the ssh client resolves user, port, key, jump hosts.
    assert (pi5.address, pi5.port, pi5.user, pi5.identity_file) == ("pi5-alias", None, None, None)
    assert pi5.runtime == "ai-edge-litert" and pi4.runtime == "tflite-runtime"
    assert [d.name for d in inv.resolve(["tag:lab", "pi4", "jetson"])] == ["pi4", "pi5", "jetson"]


def test_inventory_list_form_and_the_readme_example(tmp_path):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("```yaml\ndevices:", 1)[1].split("```", 1)[0]
    p = tmp_path / "devices.yaml"
    p.write_text("devices:" + block)
    pi4 = load_inventory(p).get("pi4")
    assert (pi4.address, pi4.port, pi4.threads, pi4.tags) == ("pi@pi4.local", 22, 4, ("lab",))
    assert pi4.runtime == "tflite-runtime"
    p.write_text("devices:\n  - name: a\n    host: h\n  - host: g\n")
    with pytest.raises(UserError) as e:
        load_inventory(p)
    assert str(e.value) == f"{p}:4: devices[1]: an entry of a devices list needs a name: key"
    p.write_text("devices:\n  - name: a\n    host: h\n  - name: a\n    host: g\n")
    with pytest.raises(UserError) as e:
        load_inventory(p)
    assert str(e.value) == f"{p}:4: device 'a' is listed twice; give each board its own name"
    p.write_text("devices:\n  - name: a\n    host: h\n    prot: 22\n")
    with pytest.raises(UserError) as e:
        load_inventory(p)
    assert str(e.value) == f'{p}:4: devices.0.prot: unknown key (did you mean "port"?)'


def test_workdir_as_the_remote_shell_sees_it():
    d = Device(host="h")
    assert d.remote_workdir == "edgepipe"  # ~/edgepipe: commands start in the home folder
    assert d.venv_python == "edgepipe/venv/bin/python"
    assert Device(host="h", workdir="~").remote_workdir == "."
    assert Device(host="h", workdir="/opt/e p/").remote("models", "x") == "/opt/e p/models/x"
    with pytest.raises(ValueError) as e:
        Device(host="h", workdir="~bob/x")
    assert [x["msg"] for x in e.value.errors()] == [
        "Value error, Expected workdir absolute, relative to the home folder, or starting with ~/. "
        "Received: workdir='~bob/x'"]


def test_unknown_device_and_tag_suggest(inv_path):
    inv = load_inventory(inv_path)
    with pytest.raises(UserError) as e:
        inv.get("pi44")
    assert str(e.value) == (f'Unknown device "pi44" (did you mean "pi4"?) in {inv_path}; '
                            "known devices: jetson, pi4, pi5")
    with pytest.raises(UserError, match=r'^No device has tag "labb" \(did you mean "lab"\?\); '
                                        r"known tags: arm64, lab$"):
        inv.resolve(["tag:labb"])


@pytest.mark.parametrize("text, message", [
    ("devices:\n  pi4:\n    host: h\n    prot: 22\n",
     ':4: devices.pi4.prot: unknown key (did you mean "port"?)'),
    ("devices:\n  pi4:\n    host: h\n    port: 70000\n",
     ":4: devices.pi4.port: Input should be less than or equal to 65535. Received: port=70000"),
    ("devices:\n  pi4:\n    host: h\n    runtime: tflite\n",
     ":4: devices.pi4.runtime: Input should be 'tflite-runtime' or 'ai-edge-litert'. "
     "Received: runtime='tflite'"),
    ("devices:\n  pi 4:\n    host: h\n", ":2: Expected device names of letters, digits, '_', '.', '-'. "
     "Received: name='pi 4'"),
    ("devices:\n  pi4:\n    host: -oProxyCommand=x\n",
     ":3: devices.pi4.host: Expected a host name, address or ssh alias. "
     "Received: host='-oProxyCommand=x'"),
    # a typo of a required key names the typo, not the missing key
    ("devices:\n  - name: pi\n    hots: 1.2.3.4\n",
     ':3: devices.0.hots: unknown key (did you mean "host"?)'),
    ("devices:\n  pi:\n    port: 22\n", ":2: devices.pi.host: required key is missing"),
])
def test_inventory_errors_name_file_line_and_key(tmp_path, text, message):
    p = tmp_path / "d.yaml"
    p.write_text(text)
    with pytest.raises(UserError) as e:
        load_inventory(p)
    assert str(e.value) == f"{p}{message}"


def test_default_inventory_path_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert default_path() == tmp_path / "cfg" / "edgepipe" / "devices.yaml"
    with pytest.raises(UserError) as e:
        load_inventory()
    assert str(e.value) == (f"Device inventory not found: {tmp_path}/cfg/edgepipe/devices.yaml "
                            "(the default; pass --devices PATH or create it)")
    default_path().parent.mkdir(parents=True)
    default_path().write_text(INVENTORY)
    assert load_inventory().names() == ["jetson", "pi4", "pi5"]


def test_ssh_options_batchmode_strict_keys_timeouts(inv_path):
    pi4 = load_inventory(inv_path).get("pi4").model_copy(update={"multiplex": False})
    argv = SSH(pi4).argv("true")
    line = " ".join(argv)
    for opt in ("BatchMode=yes", "StrictHostKeyChecking=yes", "ConnectTimeout=10",
                "UserKnownHostsFile=/tmp/kh", "IdentitiesOnly=yes"):
        assert f"-o {opt}" in line
    assert argv[-3:] == ["--", "pi@10.0.0.2", "true"]  # as given: run_sh adds the board's time limit
    assert ["-p", "2222"] == argv[argv.index("-p"):argv.index("-p") + 2]
    assert os.path.expanduser("~/.ssh/id_pi") in argv
    assert "StrictHostKeyChecking=accept-new" in SSH(pi4, accept_new=True).argv("true")
    assert SSH(pi4.model_copy(update={"ssh_config": "/x/cfg"})).argv("true")[1:3] == ["-F", "/x/cfg"]
    alias = load_inventory(inv_path).get("pi5").model_copy(update={"known_hosts": None})
    a = SSH(alias).argv("true")
    assert "-p" not in a and "-i" not in a and a[-2] == "pi5-alias"
    assert not any(x.startswith("UserKnownHostsFile") for x in a)


@pytest.fixture
def fake_ssh(tmp_path) -> str:
    """An `ssh` that runs its last argument with sh -c here (what sshd does on the board)."""
    p = tmp_path / "fake-ssh"
    p.write_text('#!/bin/bash\nfor last; do :; done\ncd "$FAKE_HOME" && exec sh -c "$last"\n')
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return str(p)


def _fake(fake_ssh, tmp_path, monkeypatch, **kw) -> SSH:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("FAKE_HOME", str(home))
    return SSH(Device(name="b", host="board", multiplex=False, **kw), ssh_bin=fake_ssh)


NASTY = ["a b", "it's", 'say "hi"', "$(touch PWNED)", "`touch PWNED2`", "; touch PWNED3", "*",
         "$HOME", "\\n", "-n"]


def test_every_remote_argument_is_quoted(fake_ssh, tmp_path, monkeypatch):
    ssh = _fake(fake_ssh, tmp_path, monkeypatch)
    r = ssh.run(["printf", "%s\\n", *NASTY])
    assert r.text.splitlines() == NASTY
    home = tmp_path / "home"
    assert sorted(os.listdir(home)) == []  # nothing was executed, nothing globbed


def test_put_is_atomic_and_paths_are_quoted(fake_ssh, tmp_path, monkeypatch):
    ssh = _fake(fake_ssh, tmp_path, monkeypatch)
    local = tmp_path / "x $(touch PWNED) 'q'.bin"
    local.write_bytes(b"\x00\x01data")
    target = "dir with space/$(touch PWNED)/f;g.bin"
    ssh.put(local, target)
    home = tmp_path / "home"
    assert (home / target).read_bytes() == b"\x00\x01data"
    assert ssh.exists(target) and not ssh.exists(target + "x")
    assert sorted(p.name for p in (home / "dir with space" / "$(touch PWNED)").iterdir()) == ["f;g.bin"]
    assert not (home / "PWNED").exists()


def test_command_failure_timeout_and_deadline_messages(fake_ssh, tmp_path, monkeypatch):
    ssh = _fake(fake_ssh, tmp_path, monkeypatch)
    with pytest.raises(RemoteCommandError) as e:
        ssh.run(["sh", "-c", "echo boom >&2; exit 3"], what="the job")
    assert str(e.value) == 'Device "b" (board): the job failed with exit code 3: boom'
    t = time.monotonic()
    with pytest.raises(DeviceError) as e:
        ssh.run(["sleep", "10"], timeout=0.5)
    assert time.monotonic() - t < 5
    assert str(e.value) == 'Device "b" (board): "sleep 10" did not finish within 0.5s (the per-command timeout)'
    ssh.deadline = Deadline(0.5)
    with pytest.raises(DeviceError, match=r'^Device "b" \(board\): job deadline of 0\.5s exceeded during "sleep 10"$'):
        ssh.run(["sleep", "10"])
    with pytest.raises(DeviceError, match=r'^Device "b" \(board\): job deadline of 0\.5s exceeded before "true"$'):
        ssh.run(["true"])


def test_time_limit_is_enforced_on_the_board_too(fake_ssh, tmp_path, monkeypatch):
    ssh = _fake(fake_ssh, tmp_path, monkeypatch)
    args = ["printf", "%s\\n", *NASTY]
    r = ssh.run(args, timeout=7)
    assert r.text.splitlines() == NASTY and os.listdir(tmp_path / "home") == []
    assert r.argv[:-1] == ssh.argv("x")[:-1]
    assert r.argv[-1] == bounded(shlex.join(args), 7) == (
        f"edgepipe_cmd={shlex.quote(shlex.join(args))}; if command -v timeout >/dev/null 2>&1 && "
        "timeout -k 1 9 true </dev/null >/dev/null 2>&1; "
        'then timeout -k 5 9 sh -c "$edgepipe_cmd"; else exec sh -c "$edgepipe_cmd"; fi; exit $?')
    assert ssh.run(["true"]).argv[-1].startswith("edgepipe_cmd=true; ")  # command_timeout=600
    assert "timeout -k 5 602 sh -c" in ssh.run(["true"]).argv[-1]
    ssh.deadline = Deadline(30)  # the deadline is the tighter limit
    assert "timeout -k 5 32 sh -c" in ssh.run(["true"]).argv[-1]
    # stdin (bytes and files), exit codes and stderr pass through the wrapper.
    assert ssh.run(["cat"], stdin=b"\x00bytes").stdout == b"\x00bytes"
    (tmp_path / "in.bin").write_bytes(b"file\n")
    with open(tmp_path / "in.bin", "rb") as f:
        assert ssh.run(["wc", "-c"], stdin=f).text.strip() == "5"
    with pytest.raises(RemoteCommandError, match=r'^Device "b" \(board\): "sh -c echo boom >&2; '
                                                 r'exit 3" failed with exit code 3: boom$'):
        ssh.run(["sh", "-c", "echo boom >&2; exit 3"])
    # No limit at all: the command goes as it is.
    free = SSH(ssh.device, ssh_bin=fake_ssh, command_timeout=None)
    assert free.run(args).argv[-1] == shlex.join(args)


def test_board_timeout_firing_first_gives_the_same_message(fake_ssh, tmp_path, monkeypatch):
    from pipeline.devices import transport

    ssh = _fake(fake_ssh, tmp_path, monkeypatch)
    # A command that exits 124 or 137 itself, well within its limit, is an ordinary failure
    # (137 is also the OOM killer's SIGKILL).
    for code in (124, 137):
        with pytest.raises(RemoteCommandError, match=rf'^Device "b" \(board\): "x" failed with exit code {code}$'):
            ssh.run_sh(f"exit {code}", what='"x"', timeout=5)

    class Clock:  # readings in order; the last one repeats: the command "took" 100 s
        def __init__(self, *readings):
            self.readings = list(readings)

        def monotonic(self):
            return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]

    monkeypatch.setattr(transport, "time", Clock(0.0, 100.0))
    with pytest.raises(DeviceError) as e:  # 124 once the time was up: the board's `timeout`
        ssh.run_sh("exit 124", what='"edge-runner bench"', timeout=5, check=False)
    assert type(e.value) is DeviceError
    assert str(e.value) == ('Device "b" (board): "edge-runner bench" did not finish within 5s '
                            "(the per-command timeout)")
    monkeypatch.setattr(transport, "time", Clock(0.0, 0.0, 0.0, 100.0))  # Deadline, bound, t0
    ssh.deadline = Deadline(60)
    with pytest.raises(DeviceError, match=r'^Device "b" \(board\): job deadline of 60s exceeded during "x"$'):
        ssh.run_sh("exit 137", what='"x"')
    monkeypatch.setattr(transport, "time", time)
    free = SSH(ssh.device, ssh_bin=fake_ssh, command_timeout=None)  # no limit: 124 is just a code
    with pytest.raises(RemoteCommandError, match=r'^Device "b" \(board\): "x" failed with exit code 124$'):
        free.run_sh("exit 124", what='"x"')


@pytest.mark.parametrize("board_timeout", [None, "busybox-1.30"])
def test_board_without_a_usable_timeout_runs_the_command_unbounded(fake_ssh, tmp_path, monkeypatch,
                                                                  board_timeout):
    ssh = _fake(fake_ssh, tmp_path, monkeypatch)
    bin_dir = tmp_path / "board-bin"  # the board's PATH: a shell and a few tools, no coreutils timeout
    bin_dir.mkdir()
    for tool in ("sh", "printf", "cat", "mkdir", "mv", "rm", "test"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    if board_timeout:  # an old busybox: `timeout [-t SECS] [-s SIG] PROG ARGS`, no -k
        fake = bin_dir / "timeout"
        fake.write_text("#!/bin/sh\necho 'timeout: invalid option -- k' >&2; exit 1\n")
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert ssh.run(["printf", "%s\\n", *NASTY], timeout=5).text.splitlines() == NASTY
    ssh.put(b"data", "d/$(x) 'f'.bin")
    assert (tmp_path / "home" / "d" / "$(x) 'f'.bin").read_bytes() == b"data"
    with pytest.raises(RemoteCommandError,
                       match=r'^Device "b" \(board\): "x" failed with exit code 3: boom$'):
        ssh.run_sh("echo boom >&2; exit 3", what='"x"', timeout=5)


@pytest.mark.parametrize("stderr, message", [
    ("No ED25519 host key is known for [127.0.0.1]:2 and you have requested strict checking.\n"
     "Host key verification failed.",
     'Device "b" (board): unknown host (its key is not in ~/.ssh/known_hosts); run with '
     "--accept-new to trust it on first use, or add its key with ssh-keyscan"),
    ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.",
     'Device "b" (board): host key has CHANGED since it was trusted; refusing to connect '
     "(possible man-in-the-middle). If the board was re-installed, remove the old key with: "
     "ssh-keygen -R 'board' -f ~/.ssh/known_hosts"),
    ("ssh: connect to host board port 22: Connection refused",
     'Device "b" (board): connection refused; is sshd running there and is the port right?'),
    ("ssh: connect to host board port 22: Connection timed out",
     'Device "b" (board): unreachable (no answer within the 10s connect timeout)'),
    ("root@board: Permission denied (publickey).",
     'Device "b" (board): SSH authentication failed (BatchMode, keys only); check user and '
     "identity_file, or load the key into ssh-agent"),
    ("Connection to board closed by remote host.",
     'Device "b" (board): connection lost during "true" (Connection to board closed by remote host.)'),
])
def test_ssh_failures_become_one_clear_line(fake_ssh, tmp_path, monkeypatch, stderr, message):
    ssh = _fake(fake_ssh, tmp_path, monkeypatch)
    monkeypatch.setenv("FAKE_ERR", stderr)
    with pytest.raises(DeviceError) as e:
        ssh.run_sh('printf "%s\\n" "$FAKE_ERR" >&2; exit 255', what='"true"')
    assert str(e.value) == message


def test_fleet_keeps_other_boards_results():
    devs = [Device(name=n, host=n) for n in ("a", "b", "c")]

    def fn(d):
        if d.name == "b":
            raise DeviceError('Device "b": connection lost')
        if d.name == "c":
            raise KeyError("oops")
        time.sleep(0.05)
        return {"ok": d.name}

    res = run_on_devices(devs, fn)
    assert res.results == {"a": {"ok": "a"}}
    assert res.errors == {"b": 'Device "b": connection lost', "c": "Device \"c\": KeyError: 'oops'"}
    with pytest.raises(DeviceError, match=r'^2 of 3 device\(s\) failed: Device "b": connection lost; '
                                          r'Device "c": KeyError: \'oops\'$'):
        res.raise_for_errors()


def test_cli_list_and_unknown_device(inv_path, tmp_path):
    r = CliRunner().invoke(main, ["devices", "list", "--devices", str(inv_path), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["devices"]
    assert [d["name"] for d in rows] == ["jetson", "pi4", "pi5"]
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(32))
    r = CliRunner().invoke(main, ["profile", str(model), "--device", "pi44", "--devices", str(inv_path)])
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1] == (
        f'error: Unknown device "pi44" (did you mean "pi4"?) in {inv_path}; known devices: '
        "jetson, pi4, pi5")
    r = CliRunner().invoke(main, ["deploy", str(model), "--devices", str(inv_path)])
    assert (r.exit_code, r.stderr) == (2, "error: Expected --device NAME or --tag TAG\n")


def test_remote_command_lines_are_quoted_joins():
    from pipeline.devices.runner import remote_runner

    d = Device(host="h", workdir="/w $(x)/ 'q'")
    argv = remote_runner(d, "bench", "/w $(x)/ 'q'/models/abc.tflite", "--json")
    assert shlex.split(shlex.join(argv)) == argv
    assert argv[:3] == ["env", "PYTHONPATH=/w $(x)/ 'q'/lib", "/w $(x)/ 'q'/venv/bin/python"]


def test_json_output_survives_login_chatter():
    from pipeline.devices.remote import _json
    from pipeline.devices.transport import Result

    ssh = SSH(Device(name="b", host="board", multiplex=False))
    r = Result([], 0, b'Welcome to Raspberry Pi OS\n{\n  "runtime": 1\n}\n', b"", 0.0)
    assert _json(ssh, r, "x") == {"runtime": 1}
    with pytest.raises(DeviceError) as e:
        _json(ssh, Result([], 0, b"", b"Traceback ...\nImportError: numpy", 0.0), '"edge-runner info"')
    assert str(e.value) == ('Device "b" (board): "edge-runner info" printed no JSON: '
                            "'Traceback ...\\nImportError: numpy'")


def _fake_python(tmp_path, version_line: str, pip_error: str = "") -> str:
    """A board 'python3' for the fake ssh: version/platform, venv, pip that finds no wheel."""
    p = tmp_path / "python3"
    p.write_text(
        "#!/bin/sh\ncase \"$*\" in\n"
        '  *"-m venv"*) mkdir -p "$3/bin" && cp "$0" "$3/bin/python" ;;\n'
        f'  *"-m pip"*) echo "{pip_error}" >&2; exit 1 ;;\n'
        f'  *calcsize*) echo "{version_line}" ;;\n'
        """  *metadata*) echo '{"tflite-runtime": null, "ai-edge-litert": null, "numpy": null}' ;;\n"""
        "esac\n")
    p.chmod(0o755)
    return str(p)


NO_WHEEL = "ERROR: No matching distribution found for tflite-runtime==2.14.0"


def test_setup_on_32bit_arm_says_which_runtimes_have_wheels(fake_ssh, tmp_path, monkeypatch):
    """32-bit Raspberry Pi OS: a 32-bit Python on a 64-bit kernel (uname says aarch64). What
    PyPI has for it was measured on an emulated armhf board (Debian bookworm, Python 3.11)."""
    from pipeline.devices.setup import setup_device

    py = _fake_python(tmp_path, "3.11.2 aarch64 32",
                      "ERROR: No matching distribution found for numpy<2")
    ssh = _fake(fake_ssh, tmp_path, monkeypatch, python=py)
    with pytest.raises(DeviceError) as e:
        setup_device(ssh)
    assert str(e.value) == (
        'Device "b" (board): pip finds no numpy<2 wheel for this board (Python 3.11.2 on '
        "armv7l); PyPI has tflite-runtime 2.14.0 for 32-bit ARM but neither numpy<2 nor "
        "ai-edge-litert: add piwheels as 32-bit Raspberry Pi OS does (pip_args: "
        "[--extra-index-url, https://www.piwheels.org/simple]) or install the 64-bit OS (arm64)")


def test_setup_when_the_index_cannot_be_reached_says_so(fake_ssh, tmp_path, monkeypatch):
    """pip also prints "No matching distribution" then: that is not the cause to report."""
    from pipeline.devices.setup import setup_device

    err = ("Could not fetch URL https://pypi.org/simple/numpy/: There was a problem confirming the "
           "ssl certificate: (Caused by SSLError(SSLCertVerificationError(1, "
           "'[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed')))\n" + NO_WHEEL)
    ssh = _fake(fake_ssh, tmp_path, monkeypatch,
                python=_fake_python(tmp_path, "3.11.2 aarch64 64", err))
    with pytest.raises(DeviceError) as e:
        setup_device(ssh)
    assert str(e.value) == (
        'Device "b" (board): pip on the board cannot reach the package index '
        "(SSLError); check the board's network, proxy and CA certificates, or "
        "set pip_args to an index it can reach")


def test_setup_without_a_wheel_for_the_runtime_is_one_line(fake_ssh, tmp_path, monkeypatch):
    from pipeline.devices.setup import setup_device

    ssh = _fake(fake_ssh, tmp_path, monkeypatch,
                python=_fake_python(tmp_path, "3.13.1 aarch64 64", NO_WHEEL))
    with pytest.raises(DeviceError) as e:
        setup_device(ssh)
    assert str(e.value) == (
        'Device "b" (board): pip finds no tflite-runtime==2.14.0 wheel for this board (Python '
        "3.13.1 on aarch64); set `runtime: ai-edge-litert` for it in the inventory")
