"""
The web dashboard in a real headless Chromium (Debian's, driven by Playwright),
against ``twistd tradebot`` in its own process on the paper broker: the page
connects with a token, shows a trade opening and completing, its history and
equity curve, and reconnects by itself after the server restarts. The page's
API is checked over plain HTTP too.

Set ``TRADEBOT_SCREENSHOT=path.png`` to save a screenshot of the page.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tradebot.cli import main as admin

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _need(what: str, available: bool) -> None:
    if not available:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is needed here (CI is set)")
        pytest.skip(f"{what} is not installed")


@pytest.fixture
def browser():
    """A headless Chromium page (Playwright on Debian's chromium)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("playwright", False)
    _need(f"chromium ({CHROMIUM})", os.path.exists(CHROMIUM))
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = chromium.new_page(viewport={"width": 1100, "height": 900})
        yield page
        chromium.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``twistd tradebot`` in its own process on a fixed port, started and
    stopped by the test (SIGTERM, as systemd does)."""

    def __init__(self, db_url, port, workdir):
        self.db_url, self.port, self.workdir = db_url, port, workdir
        self.process = None

    def start(self):
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        self.process = subprocess.Popen(
            [twistd, "--nodaemon", "--pidfile=", "tradebot", "--log-format", "json",
             "--port", f"tcp:{self.port}:interface=127.0.0.1", "--db", self.db_url,
             "--broker", "paper://?seed=5&speed=120", "--signal-interval", "0.5", "--monitor-interval", "0.25"],
            cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for line in self.process.stdout:  # its own log says when it listens
            if "tradebot listening on" in line:
                return
        raise AssertionError(f"the server ended: {self.process.wait()}")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.communicate(timeout=30)
        self.process = None

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def server(db_url, capsys, tmp_path):
    assert admin(["--db", db_url, "account", "add", "dana", "--symbols", "XAUUSD,EURUSD,GBPUSD"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    server = Server(db_url, free_port(), str(tmp_path))
    server.token = token
    server.start()
    yield server
    server.stop()


def api(server, token=None):
    """(status, JSON body) of GET /api/trades with `token` as the bearer."""
    request = urllib.request.Request(server.base + "/api/trades")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_api_answers_only_a_live_bearer_token(server):
    assert api(server)[0] == 401
    assert api(server, "not-a-token")[0] == 401
    code, report = api(server, server.token)
    assert code == 200 and report["account"]["name"] == "dana"
    assert report["account"]["symbols"] == ["XAUUSD", "EURUSD", "GBPUSD"]
    with pytest.raises(urllib.error.HTTPError) as refused:  # a token in the URL is not accepted
        urllib.request.urlopen(f"{server.base}/api/trades?{server.token}", timeout=10)
    assert refused.value.code == 401


def test_the_dashboard_shows_a_trade_open_and_complete_and_survives_a_restart(server, browser):
    from playwright.sync_api import expect

    page = browser
    page.goto(server.base + "/")
    assert "tradebot" in page.title()
    page.fill("#token", server.token)
    page.click("button[type=submit]")
    assert server.token not in page.url
    expect(page.get_by_test_id("status")).to_have_text("live", timeout=15000)
    expect(page.get_by_test_id("login")).to_be_hidden()
    expect(page.get_by_test_id("symbols")).to_have_text("XAUUSD, EURUSD, GBPUSD")

    card = page.get_by_test_id("trade-card").first
    expect(card).to_be_visible(timeout=60000)  # a trade opened: its live card
    for field in ("Open ", "SL ", "TP ", "Now ", "P&L "):
        expect(card).to_contain_text(field)
    trade_id = card.get_attribute("data-trade-id")

    # that trade completed: in the history (another may have opened meanwhile)
    row = page.locator(f'[data-testid=history-row][data-trade-id="{trade_id}"]')
    expect(row).to_be_visible(timeout=90000)
    expect(page.locator(f'[data-testid=trade-card][data-trade-id="{trade_id}"]')).to_have_count(0)
    expect(page.get_by_test_id("phase-step")).not_to_have_text("–")
    expect(page.locator("#equity polyline")).to_have_count(1)
    expect(page.get_by_test_id("log")).to_contain_text("Trade completed")

    shot = os.environ.get("TRADEBOT_SCREENSHOT")
    if shot:
        page.screenshot(path=shot, full_page=True)

    # the server goes away and comes back on the same port: the page reconnects
    server.stop()
    expect(page.get_by_test_id("status")).to_contain_text("reconnecting", timeout=15000)
    server.start()
    expect(page.get_by_test_id("status")).to_have_text("live", timeout=30000)
    before = page.get_by_test_id("log").locator("li").count()
    expect(page.get_by_test_id("log").locator("li")).not_to_have_count(before, timeout=15000)


def test_a_bad_token_is_sent_back_to_the_sign_in(server, browser):
    from playwright.sync_api import expect

    page = browser
    page.goto(server.base + "/")
    page.fill("#token", "not-a-token")
    page.click("button[type=submit]")
    expect(page.locator("#board")).to_be_hidden(timeout=15000)
    expect(page.get_by_test_id("login")).to_be_visible()
    expect(page.get_by_test_id("status")).to_have_text("that token is not valid")
