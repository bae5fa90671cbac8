"""
The installed package is the product. The sdist is built from the checkout and
the wheel from the sdist (``python -m build``, in an isolated build
environment); the wheel must hold every file of the
package that git tracks, so a package or data file left out fails here.
Then the wheel is installed into a fresh virtualenv outside the checkout and,
from a folder outside it, with no ``PYTHONPATH``, the installed commands run:
``tradebot --help``, ``twistd tradebot --help``, ``tradebot db upgrade`` on a
new SQLite file, the demo account, and a short end-to-end run of the installed
``twistd tradebot`` with a real websocket client.

The build and the virtualenv are made once per test run (module fixtures);
they need the package index (or pip's cache) for the build system and the
dependencies.
"""

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import pytest_twisted

from tradebot.trading import messages

from .serverproc import Servers
from .wsclient import connect, message_is

ROOT = Path(__file__).resolve().parent.parent


def _clean_env(**extra) -> dict:
    """This process's environment without anything that would find the
    checkout's code (``PYTHONPATH``) or an active virtualenv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(extra)
    return env


def _run(args, cwd, timeout=600, **kwargs):
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=kwargs.pop("env", None) or _clean_env(),
        capture_output=True, text=True, timeout=timeout, **kwargs,
    )
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def _tracked_package_files() -> set:
    """The files of the package (``tradebot/`` and the twistd plugin) that
    git tracks, as paths relative to the checkout."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "tradebot", "twisted/plugins"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the package's files are not known")
    return {name for name in listed if (ROOT / name).exists()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(wheel, sdist) built into a folder outside the checkout: the sdist
    from the checkout, then the wheel from the sdist (what ``python -m
    build`` does with no flags), so neither a stale ``build/`` folder in the
    checkout nor a file the sdist lacks can hide a missing package."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", out, ROOT], cwd=out)
    wheels = list(out.glob("*.whl"))
    sdists = list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return wheels[0], sdists[0]


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory):
    """The bin folder of a fresh virtualenv, outside the checkout, with the
    wheel installed in it (not editable)."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", venv], cwd=venv)
    _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", built[0]], cwd=venv, timeout=1200)
    return venv / "bin"


def test_the_wheel_holds_every_file_of_the_package(built):
    wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = sorted(f for f in _tracked_package_files() if f not in names)
    assert not missing, f"left out of the wheel: {missing}"
    assert "twisted/plugins/tradebot_plugin.py" in names
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
    assert not any(name.startswith("tests/") for name in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        assert "tradebot = tradebot.cli:main" in archive.read(entry_points).decode()


def test_the_sdist_holds_what_a_build_needs(built):
    _, sdist = built
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in ("setup.py", "pyproject.toml", "README.md"):
        assert needed in names
    missing = sorted(f for f in _tracked_package_files() if f not in names)
    assert not missing, f"left out of the sdist: {missing}"


def test_the_installed_commands_run_outside_the_checkout(installed, tmp_path):
    python = installed / "python"
    where = _run([python, "-c", "import tradebot, twisted.plugins.tradebot_plugin as p; print(tradebot.__file__); print(p.__file__)"], cwd=tmp_path)
    for path in where.stdout.split():
        assert not Path(path).resolve().is_relative_to(ROOT), f"{path} comes from the checkout"
        assert "site-packages" in path

    usage = _run([installed / "tradebot", "--help"], cwd=tmp_path).stdout
    for command in ("account", "db", "demo", "watch", "backtest"):
        assert command in usage
    options = _run([installed / "twistd", "tradebot", "--help"], cwd=tmp_path).stdout
    for option in ("--port", "--db", "--broker", "--admin-port"):
        assert option in options

    db = f"sqlite:///{tmp_path}/fresh.sqlite"
    upgraded = _run([installed / "tradebot", "--db", db, "db", "upgrade"], cwd=tmp_path)
    current = _run([installed / "tradebot", "--db", db, "db", "current"], cwd=tmp_path).stdout
    assert (tmp_path / "fresh.sqlite").exists(), upgraded.stdout + upgraded.stderr
    head = _run([python, "-c", "from tradebot.store.migrations import head; print(head())"], cwd=tmp_path).stdout.strip()
    assert head and head in current
    # the shipped plans are data files of the package
    plans = _run([python, "-c", "from tradebot.plans.files import load_plan; print(load_plan('default').name)"], cwd=tmp_path)
    assert plans.stdout.strip() == "default"


@pytest_twisted.ensureDeferred
async def test_the_installed_server_streams_to_a_websocket_client(installed, tmp_path):
    db = f"sqlite:///{tmp_path}/demo.sqlite"
    demo = _run([installed / "tradebot", "--db", db, "demo", "--port", "8000"], cwd=tmp_path).stdout
    token = demo.strip().splitlines()[-1]  # the token alone on the last line
    servers = Servers(tmp_path, twistd=installed / "twistd", env=_clean_env())
    try:
        server = servers.start(db, broker="paper://?seed=7&speed=30", signal_interval="1", monitor_interval="1")
        await server.listening()
        client = await connect(server.url(token))
        try:
            welcome = await client.wait_for(lambda m: m.get("message") == messages.WELCOME)
            assert welcome["status"] is True and welcome["symbols"]
            client.send({"msg": "ping"})
            checking = await client.wait_for(message_is(messages.CHECKING), timeout=30)
            assert checking["data"]["symbol"] in welcome["symbols"]
        finally:
            client.sendClose()
            await client.closed
        records = server.records()
        imported = [r for r in records if "tradebot listening on" in r.get("text", "")]
        assert imported, server.output()
        assert server.logged_errors() == []
        json.dumps(records)  # every line was JSON
    finally:
        await servers.kill_all()
