"""
The systemd units in ``contrib/systemd``: ``systemd-analyze verify`` accepts
them (the service alone, and with the socket and its drop-in), their
``ExecStart=`` command lines are valid ``twistd tradebot`` options, and the
server they start serves and stops cleanly on SIGTERM, on a port of its own or
on a socket handed over by systemd (``systemd-socket-activate`` standing in
for it).

Without ``systemd-analyze`` or ``systemd-socket-activate`` the tests that need
them are skipped, saying why, except under CI (the ``CI`` environment variable
set to anything), where they fail instead.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from twisted.internet import endpoints
from twisted.python.systemd import ListenFDs

from tradebot.server.tap import Options

UNITS = Path(__file__).resolve().parent.parent / "contrib" / "systemd"
SERVICE = UNITS / "tradebot.service"
SOCKET = UNITS / "tradebot.socket"
SOCKET_DROPIN = UNITS / "tradebot.service.d" / "socket.conf"

INSTALLED_TWISTD = "/opt/tradebot/venv/bin/twistd"
INSTALLED_CONFIG = "/etc/tradebot/tradebot.toml"
STATE_DB = "sqlite:////var/lib/tradebot/tradebot.sqlite"
#: The twistd next to the interpreter running the tests (the one with tradebot).
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def need(program):
    """The path of `program`; the test is skipped without it (failed under CI)."""
    path = shutil.which(program)
    if path is None:
        message = f"{program} is not installed (it comes with systemd)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def directives(path):
    """Each ``(section, key, value)`` of a unit file, in order."""
    section, found = None, []
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        assert not line.endswith("\\"), f"{path}: keep each directive on one line"
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def settings(path, section):
    """The directives of `section` as a dict (the last of a repeated key wins)."""
    return {key: value for s, key, value in directives(path) if s == section}


def exec_start(*paths):
    """The command that runs, as systemd resolves it: each file (the unit, then
    its drop-ins) may reset ``ExecStart=`` with an empty one and set it again."""
    command = None
    for path in paths:
        for section, key, value in directives(path):
            if section == "Service" and key == "ExecStart":
                command = value.split() if value else None
    assert command is not None, f"no ExecStart in {paths}"
    return command


def environment(path):
    """The ``Environment=`` variables of a unit."""
    env = {}
    for section, key, value in directives(path):
        if section == "Service" and key == "Environment":
            name, _, val = value.partition("=")
            env[name] = val
    return env


def tradebot_args(command):
    """The arguments after ``twistd ... tradebot``, checking what comes before."""
    assert command[0] == INSTALLED_TWISTD
    assert command[1:4] == ["--nodaemon", "--pidfile=", "tradebot"], command
    return command[4:]


def installed_copy(directory, *files):
    """The unit files copied into `directory` (drop-ins into their ``.d``),
    with the installed twistd replaced by the one here, which exists."""
    copies = []
    for path in files:
        target = directory / path.relative_to(UNITS)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text().replace(INSTALLED_TWISTD, TWISTD))
        copies.append(target)
    return copies


def verify(directory, *units):
    """Run ``systemd-analyze verify`` on `units`; its exit status and output.
    A unit's drop-ins are found in the ``.d`` directory next to it."""
    analyze = need("systemd-analyze")
    command = [analyze, "verify", "--man=no", "--generators=no", "--recursive-errors=no"]
    command += [str(unit) for unit in units]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    lines = (done.stdout + done.stderr).splitlines()
    # it may also complain about the host's own units: only ours count
    ours = [line for line in lines if "tradebot" in line or str(directory) in line]
    return done.returncode, ours, lines


# -- systemd-analyze verify -----------------------------------------------------


def test_service_alone_verifies(tmp_path):
    (service,) = installed_copy(tmp_path, SERVICE)
    status, ours, everything = verify(tmp_path, service)
    assert ours == []
    assert status == 0, everything


def test_service_with_socket_verifies(tmp_path):
    service, sock, _ = installed_copy(tmp_path, SERVICE, SOCKET, SOCKET_DROPIN)
    status, ours, everything = verify(tmp_path, service, sock)
    assert ours == []
    assert status == 0, everything


def test_verify_notices_a_broken_dropin(tmp_path):
    """The check above does read the drop-in: a bad one is reported."""
    service, sock, dropin = installed_copy(tmp_path, SERVICE, SOCKET, SOCKET_DROPIN)
    dropin.write_text(dropin.read_text().replace(TWISTD, str(tmp_path / "no-such-twistd")))
    status, ours, _ = verify(tmp_path, service, sock)
    assert status != 0
    assert any("no-such-twistd" in line for line in ours), ours


# -- what the units say ---------------------------------------------------------


def test_service_settings():
    service = settings(SERVICE, "Service")
    expected = {
        "Type": "simple",
        "DynamicUser": "yes",
        "User": "tradebot",
        "StateDirectory": "tradebot",
        "UMask": "0077",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        "KillMode": "mixed",
        "EnvironmentFile": "-/etc/tradebot/tradebot.env",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictRealtime": "yes",
        "SystemCallArchitectures": "native",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert "RestartSec" in service and "TimeoutStopSec" in service
    assert "ReadWritePaths" not in service  # the state directory is the only one
    assert environment(SERVICE)["TRADEBOT_DB"] == STATE_DB
    assert settings(SERVICE, "Install")["WantedBy"] == "multi-user.target"


def test_socket_settings():
    sock = settings(SOCKET, "Socket")
    assert sock["ListenStream"] == "8000"
    assert sock["Service"] == SERVICE.name
    assert settings(SOCKET, "Install")["WantedBy"] == "sockets.target"
    unit = settings(SOCKET_DROPIN, "Unit")
    assert unit["Requires"] == unit["After"] == SOCKET.name
    # the drop-in replaces the command rather than adding a second one
    values = [v for s, k, v in directives(SOCKET_DROPIN) if s == "Service" and k == "ExecStart"]
    assert values[0] == "" and len(values) == 2


# -- the command lines ------------------------------------------------------------


@pytest.fixture
def unit_environment(monkeypatch, tmp_path):
    """The environment the service gets (its ``Environment=``, no env file),
    and a TOML file standing in for /etc/tradebot/tradebot.toml."""
    for name in ("TRADEBOT_DB", "TRADEBOT_BROKER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment(SERVICE).items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "tradebot.toml"
    config.write_text('broker = "paper://?seed=7"\nsignal-interval = 30\n')
    return config


def parse_unit_command(command, config):
    args = [str(config) if arg == INSTALLED_CONFIG else arg for arg in tradebot_args(command)]
    assert str(config) in args, "the unit reads /etc/tradebot/tradebot.toml"
    options = Options()
    options.parseOptions(args)
    return options


def test_service_command_is_valid(unit_environment):
    options = parse_unit_command(exec_start(SERVICE), unit_environment)
    assert options["db"] == STATE_DB  # from the unit's environment
    assert options["port"] == "tcp:8000"
    assert options["broker"] == "paper://?seed=7"  # from the file
    assert options["signal-interval"] == 30.0


def test_socket_command_is_valid(unit_environment, monkeypatch):
    options = parse_unit_command(exec_start(SERVICE, SOCKET_DROPIN), unit_environment)
    assert options["db"] == STATE_DB
    assert options["broker"] == "paper://?seed=7"
    # the port names the socket tradebot.socket hands over, as systemd passes it
    name = settings(SOCKET, "Socket")["FileDescriptorName"]
    inherited = ListenFDs([3], (name,))
    monkeypatch.setattr(endpoints._SystemdParser, "_sddaemon", inherited)
    endpoint = endpoints.serverFromString(None, options["port"])
    assert isinstance(endpoint, endpoints.AdoptedStreamServerEndpoint)
    assert endpoint.fileno == 3
    # ListenStream=8000 is one dual-stack socket: AF_INET6 (an AF_INET6 socket
    # adopted as AF_INET would report truncated addresses)
    assert endpoint.addressFamily == socket.AF_INET6


# -- running them -----------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_root(port, timeout=30.0):
    """The status line of ``GET /`` on localhost:`port`, retried until it answers
    (the socket-activated server starts at this first connection)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("localhost", port), timeout=timeout) as s:
                s.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
            return answer.split(b"\r\n", 1)[0].decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def stop_cleanly(process, log):
    """SIGTERM, as ``systemctl stop`` sends it: the server shuts down, and ends
    by that signal (which systemd counts as a clean stop, not a failure)."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail("the server did not stop within 30 s of SIGTERM:\n" + log.read_text())
    output = log.read_text()
    assert process.returncode == -signal.SIGTERM, output
    assert "Server Shut Down" in output, output
    assert "Traceback" not in output and "Unhandled" not in output, output
    return output


def run_command(command, config):
    """The unit's command line, runnable here: this twistd, `config` for the
    installed TOML file."""
    args = [str(config) if arg == INSTALLED_CONFIG else arg for arg in tradebot_args(command)]
    return [TWISTD, "--nodaemon", "--pidfile=", "tradebot"] + args


def test_service_serves_and_stops_on_sigterm(tmp_path):
    port = free_port()
    config = tmp_path / "tradebot.toml"
    config.write_text(f'port = "tcp:{port}:interface=127.0.0.1"\nbroker = "paper://?seed=7"\n')
    env = {**os.environ, **environment(SERVICE), "TRADEBOT_DB": f"sqlite:///{tmp_path}/tradebot.sqlite"}
    env.pop("TRADEBOT_BROKER", None)
    log = tmp_path / "twistd.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            run_command(exec_start(SERVICE), config), cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    try:
        assert get_root(port).startswith("HTTP/1.")  # any answer: it serves
    finally:
        if process.returncode is None:
            stop_cleanly(process, log)


def test_socket_activated_service_serves_and_stops_on_sigterm(tmp_path):
    activate = need("systemd-socket-activate")
    port = free_port()
    config = tmp_path / "tradebot.toml"
    config.write_text('broker = "paper://?seed=7"\n')
    name = settings(SOCKET, "Socket")["FileDescriptorName"]
    env = dict(environment(SERVICE), TRADEBOT_DB=f"sqlite:///{tmp_path}/tradebot.sqlite")
    for passed in ("PATH", "PYTHONPATH"):
        if passed in os.environ:
            env[passed] = os.environ[passed]
    # like tradebot.socket: one stream socket on every address, named; the
    # server starts at the first connection and gets it as fd 3 (LISTEN_FDS)
    command = [activate, f"--listen={port}", f"--fdname={name}"]
    command += [f"--setenv={key}={value}" for key, value in env.items()]
    command += run_command(exec_start(SERVICE, SOCKET_DROPIN), config)
    log = tmp_path / "twistd.log"
    with log.open("w") as out:
        # systemd-socket-activate execs twistd: the same process
        process = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=out)
    try:
        assert get_root(port).startswith("HTTP/1.")  # any answer: it serves
        assert "tradebot listening on systemd:domain=INET6:name=tradebot" in log.read_text()
    finally:
        if process.returncode is None:
            output = stop_cleanly(process, log)
    assert f"Port {port} Closed" in output
