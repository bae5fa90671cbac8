"""
``twistd tradebot``: the plugin is found, and its options merge the command
line, the environment, a TOML file and the defaults, refusing bad values.
"""

import os
import subprocess
import sys

import pytest
from twisted.python import usage

from tradebot.server.tap import Options


def parse(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_defaults(monkeypatch):
    monkeypatch.delenv("TRADEBOT_DB", raising=False)
    monkeypatch.delenv("TRADEBOT_BROKER", raising=False)
    options = parse()
    assert (options["port"], options["db"], options["broker"], options["strategy"]) == (
        "tcp:8000",
        "sqlite:///tradebot.sqlite",
        "paper",
        "ma_cross",
    )
    assert (options["signal-interval"], options["monitor-interval"]) == (60.0, 1.0)


def test_command_line_beats_environment_beats_file(tmp_path, monkeypatch):
    config = tmp_path / "tradebot.toml"
    config.write_text(
        'port = "tcp:9000"\ndb = "sqlite:///from-file.sqlite"\nbroker = "paper://?seed=1"\n'
        'signal-interval = 30\nstrategy = "rsi_reversal"\n'
    )
    monkeypatch.setenv("TRADEBOT_DB", "sqlite:///from-env.sqlite")
    monkeypatch.delenv("TRADEBOT_BROKER", raising=False)
    options = parse("--config", str(config), "--port", "tcp:9100")
    assert options["port"] == "tcp:9100"  # command line
    assert options["db"] == "sqlite:///from-env.sqlite"  # environment
    assert options["broker"] == "paper://?seed=1"  # file
    assert options["signal-interval"] == 30.0
    assert options["strategy"] == "rsi_reversal"
    assert options["monitor-interval"] == 1.0  # default


@pytest.mark.parametrize(
    "argv, complaint",
    [
        (["--signal-interval", "soon"], "--signal-interval must be a number"),
        (["--monitor-interval", "0"], "--monitor-interval must be more than 0"),
        (["--strategy", "astrology"], "astrology"),
        (["--broker", "ftp://x"], "unknown broker URL scheme 'ftp'"),
        (["--broker", "paper://?speed=0"], "speed"),
        (["--broker", "mt5://?login=5&password=hunter2"], "never put the password in the URL"),
        (["--broker", "mt5linux://h:p"], "bad port"),
        (["--config", "/nonexistent/tradebot.toml"], "cannot read config file"),
    ],
)
def test_bad_values_are_usage_errors(argv, complaint):
    with pytest.raises(usage.UsageError) as error:
        parse(*argv)
    assert complaint in str(error.value)


def test_the_server_broker_may_be_an_mt5_terminal():
    assert parse("--broker", "mt5://?path=C:\\MT5\\terminal64.exe&login=5")["broker"].startswith("mt5://")
    assert parse("--broker", "mt5linux://127.0.0.1:18812")["broker"] == "mt5linux://127.0.0.1:18812"


def test_a_bad_config_file_is_a_usage_error(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    with pytest.raises(usage.UsageError, match="not valid TOML"):
        parse("--config", str(broken))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('colour = "blue"\n')
    with pytest.raises(usage.UsageError, match="unknown option.*colour"):
        parse("--config", str(unknown))


def test_twistd_lists_the_plugin_and_its_options(tmp_path):
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    listing = subprocess.run([twistd, "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert "tradebot" in listing.stdout
    options = subprocess.run([twistd, "-n", "tradebot", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert options.returncode == 0, options.stderr
    for name in ("--port", "--db", "--broker", "--strategy", "--signal-interval", "--monitor-interval", "--config"):
        assert name in options.stdout


def test_the_example_config_holds_every_option_with_its_default(tmp_path):
    import tomllib
    from pathlib import Path

    from tradebot.server.tap import DEFAULTS

    example = Path(__file__).parent.parent / "contrib" / "tradebot.toml"
    with open(example, "rb") as f:
        written = tomllib.load(f)
    commented = {line.lstrip("# ").split(" ", 1)[0] for line in example.read_text().splitlines() if " = " in line}
    assert set(DEFAULTS) <= set(written) | commented  # every option is there, set or shown
    options = parse("--config", str(example))
    for name, value in written.items():
        assert options[name] == DEFAULTS[name] or float(options[name]) == float(DEFAULTS[name]), name
