"""
The MT5 broker against a fake terminal in this process (`DirectLink`): the
broker contract, and what real terminals do to bots (filling modes, stops
levels, requotes, lost answers, netting tickets, deals, server time, a terminal
that goes away). The worker process and the mt5linux bridge are tested in
test_mt5_links.py.
"""

from decimal import Decimal

import pytest
from twisted.internet.task import Clock

from tradebot.broker import BUY, SELL, BrokerUnavailable, BrokerURL, ClosedPosition, OrderRefused, OrderRequest
from tradebot.brokers.mt5 import codes
from tradebot.brokers.mt5.backend import MT5Backend
from tradebot.brokers.mt5.errors import OutcomeUnknown
from tradebot.brokers.mt5.links import DirectLink
from tradebot.brokers.mt5.settings import DEFAULT_MAGIC, settings_from_url
from tradebot.brokers.registry import backend_from_url

from .broker_contract import BrokerContract, fails_with, result, stops_around
from .fakemt5.fake_terminal import ACCOUNT_MARGIN_MODE_RETAIL_NETTING, FakeTerminal

PATH = "C:\\Program Files\\MetaTrader 5\\terminal64.exe"


class Harness:
    """An MT5 backend on a fake terminal, both clocks moved together."""

    symbols = ("EURUSD", "XAUUSD")

    def __init__(self, backend_options=None, warm=True, **terminal_options):
        terminal_options.setdefault("commission_per_lot", 0.0)
        self.terminal = FakeTerminal(**terminal_options)
        self.clock = Clock()
        self.clock.advance(self.terminal.now)
        options = dict(path=PATH)
        options.update(backend_options or {})
        self.backend = MT5Backend(DirectLink(self.terminal), self.clock, **options)
        self.changes = []
        self.backend.watch(lambda available, reason: self.changes.append((available, reason)))
        result(self.backend.start())
        result(self.backend.first_attempt)
        available = self.backend.available
        assert self.changes == [(available, "" if available else self.backend.down_reason)]
        self.changes.clear()
        self.broker = self.backend.broker_for("1", Decimal("10000"))
        if warm and available:  # a moving market tells the server's clock, as in the first seconds live
            result(self.broker.tick("EURUSD"))
            self.pass_time(1)
            result(self.broker.tick("EURUSD"))

    def pass_time(self, seconds):
        for _ in range(int(seconds)):
            self.terminal.advance(1)
            self.clock.advance(1)

    def order(self, symbol="EURUSD", side=BUY, volume="0.10", comment="tb-1", stop=300, take=300):
        """An order `stop`/`take` points beyond the price it would close at."""
        spec = result(self.broker.symbol(symbol))
        tick = result(self.broker.tick(symbol))
        sl, tp = stops_around(spec, tick, side, stop, take)
        return OrderRequest(symbol, side, Decimal(volume), sl, tp, comment)


@pytest.fixture
def harness():
    return Harness()


class TestMT5Contract(BrokerContract):
    """The MT5 broker keeps the broker contract on a fake terminal."""


# -- URLs ---------------------------------------------------------------------


def test_the_url_names_the_terminal_and_the_order_settings():
    settings = settings_from_url(
        BrokerURL.parse("mt5://?path=C:\\MT5\\terminal64.exe&login=5001&server=Demo&deviation=30&magic=777&call_timeout=20")
    )
    assert settings["path"] == "C:\\MT5\\terminal64.exe"
    assert (settings["login"], settings["server"], settings["deviation"], settings["magic"]) == (5001, "Demo", 30, 777)
    assert settings["call_timeout"] == 20.0
    bridge = settings_from_url(BrokerURL.parse("mt5linux://10.0.0.2:18813"))
    assert (bridge["host"], bridge["port"]) == ("10.0.0.2", 18813)
    assert settings_from_url(BrokerURL.parse("mt5linux://"))["port"] == 18812


@pytest.mark.parametrize(
    "url, complaint",
    [
        ("mt5://?login=1&password=secret", "never put the password in the URL"),
        ("mt5://?colour=red", "unknown parameter"),
        ("mt5://?deviation=-1", "deviation"),
        ("mt5://?login=abc", "login"),
        ("mt5://somehost", "path="),
        ("mt5linux://h:x", "bad port"),
    ],
)
def test_a_bad_url_is_a_clear_error(url, complaint):
    with pytest.raises(ValueError, match=complaint) as raised:
        backend_from_url(url, reactor=Clock())
    assert "secret" not in str(raised.value)


# -- connection ----------------------------------------------------------------


def test_connecting_does_not_log_in_again_to_the_account_already_on():
    harness = Harness(backend_options={"login": 51234567, "password": "demo-pass"})
    assert harness.backend.available and harness.terminal.login_calls == 0
    assert harness.terminal.calls["initialize"] == 1


def test_connecting_logs_in_when_the_terminal_is_on_another_account(monkeypatch):
    from twisted.logger import formatEvent, globalLogPublisher

    lines = []

    def observer(event):
        lines.append(formatEvent(event))

    harness = Harness(login=777)  # the terminal is on 777
    assert harness.terminal.login_calls == 0
    # the same terminal, asked for account 778 with a password from the environment
    monkeypatch.setenv("TRADEBOT_MT5_PASSWORD", "demo-pass")
    other = MT5Backend(DirectLink(harness.terminal), harness.clock, path=PATH, login=778)
    globalLogPublisher.addObserver(observer)
    try:
        other.start()
    finally:
        globalLogPublisher.removeObserver(observer)
    assert not other.available  # 778 is not an account this terminal can log in to
    assert harness.terminal.login_calls == 1
    assert "Authorization failed" in other.down_reason
    assert lines and not any("demo-pass" in line for line in lines + [other.down_reason, other.url])


def test_the_worker_never_gets_the_password_in_its_environment(monkeypatch):
    from tradebot.brokers.mt5.links import WorkerLink

    monkeypatch.setenv("TRADEBOT_MT5_PASSWORD", "demo-pass")
    monkeypatch.setenv("TRADEBOT_MT5_PASSWORD_778", "demo-pass")
    assert not [name for name in WorkerLink(Clock()).env if "PASSWORD" in name]
    assert "TRADEBOT_MT5_PASSWORD" not in WorkerLink(Clock(), env={"TRADEBOT_MT5_PASSWORD": "x"}).env


def test_a_login_without_a_password_says_where_the_password_comes_from(monkeypatch):
    monkeypatch.delenv("TRADEBOT_MT5_PASSWORD", raising=False)
    harness = Harness(backend_options={"login": 999})
    assert not harness.backend.available
    assert "TRADEBOT_MT5_PASSWORD_<login>" in harness.backend.down_reason
    assert "999" not in harness.backend.down_reason  # logged and shown: never the login itself


def test_algo_trading_off_is_said_at_connection_and_orders_are_refused_readably():
    terminal_harness = Harness()
    terminal_harness.terminal.set_algo_trading(False)
    refused = fails_with(terminal_harness.broker.open_position(terminal_harness.order()), OrderRefused)
    assert refused.code == 10027 and "Algo Trading" in refused.reason


def test_a_terminal_that_goes_away_is_reconnected_with_back_off_and_watchers_hear_once(harness):
    harness.terminal.disappear()
    fails_with(harness.broker.balance(), BrokerUnavailable)
    assert [available for available, _ in harness.changes] == [False]
    assert "No IPC connection" in harness.changes[0][1]
    # while it is gone, calls fail at once without reaching the terminal
    before = sum(harness.terminal.calls.values())
    fails_with(harness.broker.tick("EURUSD"), BrokerUnavailable)
    assert sum(harness.terminal.calls.values()) == before
    refused = fails_with(harness.broker.open_position(OrderRequest("EURUSD", BUY, Decimal("0.1"), Decimal(1), Decimal(2), "tb-5")), OrderRefused)
    assert refused.reason.startswith("broker unavailable")
    attempts = []
    for _ in range(40):
        harness.clock.advance(1)
        attempts.append(harness.terminal.calls["initialize"])
    # back-off: 1, 2, 4, 8, 16 s between attempts
    assert attempts[-1] - attempts[0] <= 6
    harness.terminal.come_back()
    harness.clock.advance(60)
    assert harness.backend.available
    assert [available for available, _ in harness.changes] == [False, True]
    assert result(harness.broker.balance()) == Decimal("10000")


def test_a_lost_broker_link_pauses_orders_and_comes_back(harness):
    harness.terminal.set_connected(False)
    harness.clock.advance(harness.backend.heartbeat)
    assert not harness.backend.available and harness.changes[-1][0] is False
    refused = fails_with(harness.broker.open_position(harness.order()), OrderRefused)
    assert "no connection to the broker" in refused.reason
    assert harness.terminal.calls["order_send"] == 0
    harness.terminal.set_connected(True)
    harness.clock.advance(harness.backend.heartbeat)
    assert harness.backend.available and harness.changes[-1] == (True, "")


# -- orders --------------------------------------------------------------------


@pytest.mark.parametrize("symbol, filling", [("XAUUSD", codes.ORDER_FILLING_IOC), ("EURUSD", codes.ORDER_FILLING_FOK)])
def test_the_filling_mode_comes_from_the_symbol_and_order_check_and_is_kept(harness, symbol, filling):
    # XAUUSD allows IOC only (a missing type_filling would mean FOK: 10030)
    first = result(harness.broker.open_position(harness.order(symbol, comment="tb-1")))
    assert harness.terminal.calls["order_check"] == 1
    result(harness.broker.open_position(harness.order(symbol, comment="tb-2")))
    assert harness.terminal.calls["order_check"] == 1  # proven once per symbol
    deals = harness.terminal.history_deals_get(position=first.ticket)
    orders = harness.terminal.history_orders_get(ticket=deals[0].order)
    assert orders[0].type_filling == filling


def test_a_symbol_that_allows_no_filling_mode_here_is_refused_readably():
    harness = Harness(symbols={"EURUSD": {"filling_mode": 0}})  # RETURN only, not under market execution
    refused = fails_with(harness.broker.open_position(harness.order()), OrderRefused)
    assert refused.code == codes.INVALID_FILL and "filling mode" in refused.reason
    assert harness.terminal.calls["order_send"] == 0


def test_the_symbol_is_selected_before_use_and_stops_are_pushed_to_the_stops_level():
    harness = Harness(warm=False)
    assert not harness.terminal.symbol_info("EURUSD").visible
    spec = result(harness.broker.symbol("EURUSD"))
    assert harness.terminal.symbol_info("EURUSD").visible
    tick = result(harness.broker.tick("EURUSD"))
    # 3 points away: inside the stops level of 10 points
    sl, tp = stops_around(spec, tick, BUY, 3, 3)
    position = result(harness.broker.open_position(OrderRequest("EURUSD", BUY, Decimal("0.10"), sl, tp, "tb-1")))
    distance = (spec.stops_level + 1) * spec.point  # a point beyond the level
    assert position.stop_loss == tick.bid - distance and position.take_profit == tick.bid + distance


def test_a_requote_is_retried_with_a_fresh_price_and_one_order_results(harness):
    harness.terminal.queue_retcode(codes.REQUOTE, times=2)
    position = result(harness.broker.open_position(harness.order()))
    assert harness.terminal.calls["order_send"] == 3
    assert len(harness.terminal.positions_get()) == 1 and position.comment == "tb-1"


def test_too_many_requests_backs_off_before_trying_again(harness):
    harness.terminal.queue_retcode(codes.TOO_MANY_REQUESTS)
    d = harness.broker.open_position(harness.order())
    assert not d.called and harness.terminal.calls["order_send"] == 1
    harness.clock.advance(1)
    assert result(d).volume == Decimal("0.10") and harness.terminal.calls["order_send"] == 2


@pytest.mark.parametrize(
    "retcode, words",
    [(10019, "not enough money"), (10018, "market closed"), (10017, "disabled"), (10006, "rejected")],
)
def test_a_refusal_is_reported_with_a_readable_reason_and_opens_nothing(harness, retcode, words):
    harness.terminal.queue_retcode(retcode)
    refused = fails_with(harness.broker.open_position(harness.order()), OrderRefused)
    assert refused.code == retcode and words in refused.reason
    assert harness.terminal.positions_get() == ()
    assert harness.terminal.calls["order_send"] == 1


def test_a_disabled_symbol_is_refused_without_sending():
    harness = Harness(warm=False)
    harness.terminal.set_trade_mode("EURUSD", 3)  # close only
    refused = fails_with(harness.broker.open_position(harness.order()), OrderRefused)
    assert refused.code == 10044 and harness.terminal.calls["order_send"] == 0


@pytest.mark.parametrize("fill", [True, False])
def test_a_lost_answer_is_looked_up_never_resent(harness, fill):
    harness.terminal.queue_none(fill=fill)
    d = harness.broker.open_position(harness.order(comment="tb-8"))
    assert harness.terminal.calls["order_send"] == 1
    if fill:
        position = result(d)
        assert position.comment == "tb-8" and len(harness.terminal.positions_get()) == 1
    else:
        fails_with(d, OutcomeUnknown)
        assert harness.terminal.positions_get() == ()
        assert result(harness.broker.find_by_comment("tb-8")) is None


def test_a_close_is_an_opposite_deal_naming_the_position_with_the_symbols_filling(harness):
    # XAUUSD allows IOC only: a close without the opening's filling would be refused (10030)
    position = result(harness.broker.open_position(harness.order("XAUUSD", comment="tb-4")))
    closed = result(harness.broker.close_position(position.ticket))
    assert closed.reason == "expert" and closed.ticket == position.ticket
    out = [d for d in harness.terminal.history_deals_get(position=position.ticket) if d.entry == 1]
    assert len(out) == 1 and out[0].type == codes.ORDER_TYPE_SELL and out[0].magic == DEFAULT_MAGIC + 1
    assert harness.terminal.positions_get() == ()


def test_a_requoted_close_is_retried_and_closes_once(harness):
    position = result(harness.broker.open_position(harness.order()))
    harness.terminal.queue_retcode(codes.REQUOTE, times=2)
    sent = harness.terminal.calls["order_send"]
    closed = result(harness.broker.close_position(position.ticket))
    assert harness.terminal.calls["order_send"] == sent + 3
    assert closed.reason == "expert" and harness.terminal.positions_get() == ()


@pytest.mark.parametrize("fill", [True, False])
def test_a_close_whose_answer_is_lost_is_never_resent(harness, fill):
    position = result(harness.broker.open_position(harness.order()))
    harness.terminal.queue_none(fill=fill)
    sent = harness.terminal.calls["order_send"]
    fails_with(harness.broker.close_position(position.ticket), OutcomeUnknown)
    assert harness.terminal.calls["order_send"] == sent + 1
    if fill:  # the monitor's lookup finds the close
        assert result(harness.broker.closed_position(position.ticket)).reason == "expert"
    else:
        assert result(harness.broker.position(position.ticket)) is not None


def test_a_timeout_retcode_that_did_fill_is_found_by_magic_and_comment(harness):
    harness.terminal.queue_retcode(codes.TIMEOUT, fill=True)
    position = result(harness.broker.open_position(harness.order(comment="tb-3")))
    assert harness.terminal.calls["order_send"] == 1
    raw = harness.terminal.positions_get()[0]
    assert (raw.magic, raw.comment, raw.identifier) == (DEFAULT_MAGIC + 1, "tb-3", position.ticket)


def test_another_accounts_orders_are_not_found_by_comment(harness):
    other = harness.backend.broker_for("2", Decimal(0))
    result(other.open_position(harness.order(comment="tb-4")))
    assert result(harness.broker.find_by_comment("tb-4")) is None
    assert result(other.find_by_comment("tb-4")).comment == "tb-4"


# -- positions and results -------------------------------------------------------


def test_a_result_sums_profit_commission_swap_and_fee_over_all_deals():
    harness = Harness(commission_per_lot=3.5, fee_per_deal=0.25)
    position = result(harness.broker.open_position(harness.order("EURUSD", volume="0.50")))
    harness.terminal.charge_swap(position.ticket, -1.10)
    harness.terminal.close_by_hand(position.ticket)
    closed = result(harness.broker.closed_position(position.ticket))
    deals = harness.terminal.history_deals_get(position=position.ticket)
    expected = sum(Decimal(repr(d.profit + d.commission + d.swap + d.fee)) for d in deals)
    assert closed.profit == expected.quantize(Decimal("0.01"))
    assert any(d.commission for d in deals if d.entry == 0)  # the entry's commission counts too
    assert result(harness.broker.balance()) == Decimal("10000") + closed.profit
    assert closed.reason == "manual"


@pytest.mark.parametrize("how, reason", [("close_by_hand", "manual"), ("stop_out", "stop_out")])
def test_a_position_closed_outside_the_server_gets_its_real_cause(harness, how, reason):
    position = result(harness.broker.open_position(harness.order()))
    getattr(harness.terminal, how)(position.ticket)
    closed = result(harness.broker.closed_position(position.ticket))
    assert closed.reason == reason and closed.comment == "tb-1"


def test_sl_and_tp_closes_are_told_apart_and_the_rewritten_exit_comment_is_ignored(harness):
    position = result(harness.broker.open_position(harness.order(stop=50, take=5000)))
    harness.terminal.set_price("EURUSD", float(position.stop_loss) - 0.0002)
    closed = result(harness.broker.closed_position(position.ticket))
    assert (closed.reason, closed.close_price, closed.comment) == ("sl", position.stop_loss, "tb-1")
    second = result(harness.broker.open_position(harness.order(stop=5000, take=50, comment="tb-2")))
    harness.terminal.set_price("EURUSD", float(second.take_profit) + 0.0002)
    assert result(harness.broker.closed_position(second.ticket)).reason == "tp"


def test_times_are_utc_whatever_the_server_clock(harness):
    tick = result(harness.broker.tick("EURUSD"))
    assert harness.backend.offset == 7200
    assert abs(tick.time - harness.terminal.now) < 2
    position = result(harness.broker.open_position(harness.order()))
    assert abs(position.opened_at - harness.terminal.now) < 2
    candles = result(harness.broker.candles("EURUSD", 10))
    assert harness.terminal.now - 11 * 60 <= candles.time[0] and candles.time[-1] < harness.terminal.now


def test_deals_that_reach_the_history_late_leave_the_position_open_until_they_do(harness):
    position = result(harness.broker.open_position(harness.order()))
    harness.terminal.queue_delay_deals(2)
    harness.terminal.close_by_hand(position.ticket)
    assert result(harness.broker.position(position.ticket)) is None
    assert result(harness.broker.closed_position(position.ticket)) is None  # not yet
    harness.terminal.queue_delay_deals(0)
    closed = None
    for _ in range(3):
        closed = result(harness.broker.closed_position(position.ticket))
        if closed is not None:
            break
    assert isinstance(closed, ClosedPosition)


def test_netting_keeps_the_identifier_when_a_reversal_changes_the_ticket():
    harness = Harness(margin_mode=ACCOUNT_MARGIN_MODE_RETAIL_NETTING)
    assert not harness.backend.hedging
    position = result(harness.broker.open_position(harness.order("EURUSD", BUY, "0.10")))
    # a reversal from elsewhere (the trader in the terminal): SELL 0.30 nets to SELL 0.20
    tick = harness.terminal.symbol_info_tick("EURUSD")
    harness.terminal.order_send({
        "action": 1, "symbol": "EURUSD", "volume": 0.3, "type": 1, "price": tick.bid,
        "deviation": 20, "magic": DEFAULT_MAGIC + 1, "comment": "tb-1", "type_filling": 0,
    })
    raw = harness.terminal.positions_get()[0]
    assert raw.ticket != position.ticket and raw.identifier == position.ticket
    now = result(harness.broker.position(position.ticket))
    assert now is not None and now.side == SELL and now.volume == Decimal("0.2")


def test_a_bad_request_field_is_a_refusal_not_an_unknown_outcome(harness):
    # the terminal refuses a comment it cannot carry before anything is sent
    request = harness.order()
    object.__setattr__(request, "comment", "tb-1 (retry)")
    refused = fails_with(harness.broker.open_position(request), OrderRefused)
    assert refused.code == -2 and "comment" in refused.reason
    assert harness.terminal.positions_get() == ()


def test_two_urls_naming_one_terminal_share_one_backend(logged_errors):
    from tradebot.store.records import Account
    from tradebot.trading.backends import Backends

    clock = Clock()
    built = []

    def make(url):
        backend = backend_from_url(url, reactor=clock)
        built.append(backend)
        backend.link = DirectLink(FakeTerminal())
        return backend

    backends = Backends(object(), clock, make=make)

    def account(id, url):
        return Account(id, f"a{id}", ("EURUSD",), "default", 1, 1, Decimal(0), 1, False, False, 0.0, broker=url)

    first, _ = backends.broker_for(account(1, "mt5://?path=C:\\MT5\\terminal64.exe&login=5"))
    second, _ = backends.broker_for(account(2, "mt5://?login=5&path=c:/mt5/TERMINAL64.exe"))
    other, _ = backends.broker_for(account(3, "mt5://?path=C:\\MT5-b\\terminal64.exe"))
    assert first.backend is second.backend is not other.backend
    assert (first.magic, second.magic) == (DEFAULT_MAGIC + 1, DEFAULT_MAGIC + 2)
    bridge_a, _ = backends.broker_for(account(4, "mt5linux://127.0.0.1:18812"))
    bridge_b, _ = backends.broker_for(account(5, "mt5linux://127.0.0.1:18812?deviation=5"))
    assert bridge_a.backend is bridge_b.backend
    assert len(backends.backends) == 4  # the default and three terminals


def test_placed_but_not_yet_done_is_looked_up_not_taken_for_a_refusal(harness):
    harness.terminal.queue_retcode(codes.PLACED, fill=True)
    position = result(harness.broker.open_position(harness.order(comment="tb-6")))
    assert position.comment == "tb-6" and harness.terminal.calls["order_send"] == 1


def test_python_api_trading_disabled_is_a_readable_refusal_then_the_broker_is_unavailable(harness):
    harness.terminal.set_tradeapi_disabled(True)
    refused = fails_with(harness.broker.open_position(harness.order()), OrderRefused)
    assert refused.code == -8 and "Python API is disabled" in refused.reason
    harness.clock.advance(harness.backend.heartbeat)
    assert not harness.backend.available and harness.changes == [(False, harness.backend.down_reason)]
    assert "Python API is disabled" in harness.backend.down_reason
    harness.terminal.set_tradeapi_disabled(False)
    harness.clock.advance(harness.backend.heartbeat)
    assert harness.backend.available and harness.changes[-1] == (True, "")


def test_algo_trading_off_at_connection_makes_the_broker_unavailable_with_the_reason():
    terminal = FakeTerminal()
    terminal.set_algo_trading(False)
    clock = Clock()
    clock.advance(terminal.now)
    backend = MT5Backend(DirectLink(terminal), clock, path=PATH)
    backend.start()
    assert backend.settled and not backend.available
    assert "Algo Trading button" in backend.down_reason
    terminal.set_algo_trading(True)
    clock.advance(backend.heartbeat)
    assert backend.available


def test_a_netting_account_never_trades_into_a_position_that_is_not_the_trades():
    harness = Harness(margin_mode=ACCOUNT_MARGIN_MODE_RETAIL_NETTING)
    result(harness.broker.tick("EURUSD"))  # in Market Watch
    tick = harness.terminal.symbol_info_tick("EURUSD")
    harness.terminal.order_send({  # a person's trade in the terminal
        "action": 1, "symbol": "EURUSD", "volume": 0.1, "type": 1, "price": tick.bid,
        "deviation": 20, "magic": 0, "comment": "by hand", "type_filling": 0,
    })
    refused = fails_with(harness.broker.open_position(harness.order("EURUSD", BUY)), OrderRefused)
    assert "netting account" in refused.reason and "a person" in refused.reason
    assert len(harness.terminal.positions_get()) == 1
    # another symbol is free
    assert result(harness.broker.open_position(harness.order("XAUUSD", BUY, comment="tb-2"))).symbol == "XAUUSD"


def test_the_offset_is_not_measured_from_a_stale_tick():
    harness = Harness(warm=False)
    harness.clock.advance(21 * 60)  # the terminal's last tick is 21 minutes old
    result(harness.broker.tick("EURUSD"))
    assert harness.backend.offset is None
    # the fill's time is not guessed: the order's outcome stays open...
    fails_with(harness.broker.open_position(harness.order(comment="tb-5")), BrokerUnavailable)
    harness.terminal.advance(21 * 60)  # ...until a fresh tick
    result(harness.broker.tick("EURUSD"))
    assert harness.backend.offset == 7200
    found = result(harness.broker.find_by_comment("tb-5"))
    assert found.comment == "tb-5" and abs(found.opened_at - (harness.terminal.now - 21 * 60)) < 2


def test_an_older_order_with_the_same_comment_is_another_trades():
    harness = Harness()
    old = result(harness.broker.open_position(harness.order(comment="tb-1")))
    harness.terminal.close_by_hand(old.ticket)
    harness.pass_time(600)
    # a database started afresh reuses tb-1; its trade was recorded just now
    assert result(harness.broker.find_by_comment("tb-1", since=harness.clock.seconds())) is None
    assert result(harness.broker.find_by_comment("tb-1", since=harness.clock.seconds() - 900)).ticket == old.ticket


def test_nothing_is_concluded_about_an_order_while_the_broker_link_is_down(harness):
    harness.terminal.set_connected(False)
    harness.clock.advance(harness.backend.heartbeat)
    fails_with(harness.broker.find_by_comment("tb-1"), BrokerUnavailable)


def test_a_terminal_on_no_account_is_logged_in_once_with_the_accounts_password(monkeypatch):
    monkeypatch.setenv("TRADEBOT_MT5_PASSWORD", "wrong")
    monkeypatch.setenv("TRADEBOT_MT5_PASSWORD_51234567", "demo-pass")  # the account's own wins
    harness = Harness(logged_in=False, backend_options={"login": 51234567, "server": "FakeBroker-Demo"})
    assert harness.backend.available
    assert harness.terminal.login_calls == 1 and harness.terminal.calls["login"] == 1
    # a reconnection finds the terminal on the account: no second login
    harness.terminal.disappear()
    fails_with(harness.broker.balance(), BrokerUnavailable)
    harness.terminal.come_back()
    harness.clock.advance(5)
    assert harness.backend.available and harness.terminal.login_calls == 1


def test_equity_counts_a_position_opened_by_hand_that_is_not_the_programs():
    harness = Harness()
    result(harness.broker.tick("EURUSD"))  # in Market Watch
    tick = harness.terminal.symbol_info_tick("EURUSD")
    harness.terminal.order_send({  # a person's trade in the terminal
        "action": 1, "symbol": "EURUSD", "volume": 1.0, "type": 0, "price": tick.ask,
        "deviation": 20, "magic": 0, "comment": "by hand", "type_filling": 0,
    })
    harness.pass_time(30)
    [by_hand] = harness.terminal.positions_get()
    assert result(harness.broker.open_positions()) == []  # not the program's...
    balance = result(harness.broker.balance())
    assert by_hand.profit != 0
    assert result(harness.broker.equity()) == balance + Decimal(str(round(by_hand.profit, 2)))  # ...but counted


# -- as real terminals behave (issue 14): each fake behaviour, then the adapter's answer -------


def test_a_close_filled_in_part_closes_the_rest_and_sums_every_exit_deal(harness):
    position = result(harness.broker.open_position(harness.order(volume="0.10", comment="tb-p")))
    harness.terminal.queue_partial(0.04, times=2)  # 0.04, then 0.04 of the 0.06 left, then the rest
    closed = result(harness.broker.close_position(position.ticket))
    assert harness.terminal.positions_get() == ()
    deals = harness.terminal.history_deals_get(position=position.ticket)
    exits = [d for d in deals if d.entry == 1]
    assert [d.volume for d in exits] == [0.04, 0.04, 0.02]
    assert closed.volume == Decimal("0.10") and closed.reason == "expert"
    assert closed.profit == sum(Decimal(str(d.profit + d.commission + d.swap + d.fee)) for d in deals)


def test_a_close_refused_for_a_passing_reason_says_so_and_changes_nothing(harness):
    position = result(harness.broker.open_position(harness.order(comment="tb-m")))
    harness.terminal.set_market_closed("EURUSD", True)  # a session break
    refused = fails_with(harness.broker.close_position(position.ticket), OrderRefused)
    assert refused.code == codes.MARKET_CLOSED and codes.passing(refused.code)
    assert result(harness.broker.position(position.ticket)) is not None
    harness.terminal.set_market_closed("EURUSD", False)
    assert result(harness.broker.close_position(position.ticket)).reason == "expert"


def test_the_offset_is_kept_when_a_closed_markets_tick_is_exactly_half_an_hour_old(harness):
    assert harness.backend.offset == 7200
    for name in ("EURUSD", "XAUUSD", "GBPUSD", "USDJPY", "US500"):
        harness.terminal.set_market_closed(name, True)
    harness.pass_time(1800)  # the last tick is exactly 30 minutes old
    result(harness.broker.tick("EURUSD"))
    harness.pass_time(1)
    result(harness.broker.tick("EURUSD"))
    assert harness.backend.offset == 7200  # not 5400


def test_a_stale_tick_is_only_a_guess_until_a_fill_or_a_moving_tick_proves_the_offset():
    harness = Harness(warm=False)
    harness.terminal.set_market_closed("XAUUSD", True)
    harness.pass_time(3600)  # XAUUSD's last tick is an hour old
    result(harness.broker.tick("XAUUSD"))
    harness.pass_time(1)
    result(harness.broker.tick("XAUUSD"))
    # nothing better known (a restart on a still market): a guess, an hour off
    assert (harness.backend.offset, harness.backend.offset_sure) == (3600, False)
    position = result(harness.broker.open_position(harness.order("EURUSD", comment="tb-f")))
    assert (harness.backend.offset, harness.backend.offset_sure) == (7200, True)  # the fill's own time
    assert abs(position.opened_at - harness.terminal.now) < 2
    result(harness.broker.tick("XAUUSD"))  # the stale tick again: the sure value stays
    assert harness.backend.offset == 7200


def test_a_filling_mode_the_server_refuses_on_sending_moves_to_the_next_and_is_remembered(harness):
    # EURUSD allows FOK and IOC; the server takes IOC only, though order_check passes FOK
    harness.terminal.set_send_refuses_filling("EURUSD", codes.ORDER_FILLING_FOK)
    first = result(harness.broker.open_position(harness.order(comment="tb-1")))
    sent = harness.terminal.calls["order_send"]
    second = result(harness.broker.open_position(harness.order(comment="tb-2")))
    assert harness.terminal.calls["order_send"] == sent + 1  # IOC at once
    fillings = [o.type_filling for o in harness.terminal.history_orders_get(0, 2**40)]
    assert fillings[-2:] == [codes.ORDER_FILLING_IOC, codes.ORDER_FILLING_IOC]
    assert result(harness.broker.close_position(first.ticket)).reason == "expert"
    assert result(harness.broker.close_position(second.ticket)).reason == "expert"


def test_stops_widened_to_the_stops_level_land_on_the_tick_grid(harness):
    # US500: point 0.01, tick size 0.25, stops level 100 points (1.00)
    spec = result(harness.broker.symbol("US500"))
    tick = result(harness.broker.tick("US500"))
    close = OrderRequest("US500", BUY, Decimal("1.0"), tick.bid - Decimal("0.50"), tick.bid + Decimal("0.50"), "tb-g")
    position = result(harness.broker.open_position(close))
    for level in (position.stop_loss, position.take_profit):
        assert level % Decimal("0.25") == 0
    assert tick.bid - position.stop_loss > Decimal("1.00") and position.take_profit - tick.bid > Decimal("1.00")
    assert spec.point == Decimal("0.01")


def test_a_stops_level_raised_during_the_day_is_read_again_after_the_refusal(harness):
    result(harness.broker.open_position(harness.order(comment="tb-1", stop=150, take=150)))
    harness.terminal.set_stops_level("EURUSD", 300)  # widened around news
    position = result(harness.broker.open_position(harness.order(comment="tb-2", stop=150, take=150)))
    tick = result(harness.broker.tick("EURUSD"))
    assert tick.bid - position.stop_loss >= Decimal("0.00300")


def test_a_symbol_setting_is_read_again_once_it_is_old(harness):
    result(harness.broker.symbol("EURUSD"))
    reads = harness.terminal.calls["symbol_info"]
    harness.pass_time(30)
    result(harness.broker.symbol("EURUSD"))
    assert harness.terminal.calls["symbol_info"] == reads
    harness.pass_time(400)
    result(harness.broker.symbol("EURUSD"))
    assert harness.terminal.calls["symbol_info"] > reads


def test_a_rewritten_comment_is_never_sent_back_and_the_position_is_still_found(harness):
    position = result(harness.broker.open_position(harness.order(comment="tb-77")))
    harness.terminal.rewrite_comment(position.ticket, "[sl 1.08000]")
    assert result(harness.broker.find_by_comment("tb-77")).ticket == position.ticket
    closed = result(harness.broker.close_position(position.ticket))  # "[...]" in a request: -2
    assert closed.reason == "expert" and harness.terminal.positions_get() == ()


def test_our_comments_stay_within_what_terminals_keep():
    OrderRequest("EURUSD", BUY, Decimal("0.1"), Decimal(1), Decimal(2), "tb-" + "9" * 13)  # 16
    with pytest.raises(ValueError):
        OrderRequest("EURUSD", BUY, Decimal("0.1"), Decimal(1), Decimal(2), "tb-" + "9" * 14)


def test_an_empty_history_answered_none_is_empty_not_an_error():
    harness = Harness(empty_as_none=True)
    assert result(harness.broker.open_positions()) == []
    assert result(harness.broker.find_by_comment("tb-404")) is None
    position = result(harness.broker.open_position(harness.order(comment="tb-1")))
    assert result(harness.broker.close_position(position.ticket)).reason == "expert"
    assert result(harness.broker.open_positions()) == []


def test_a_terminal_that_comes_back_is_shut_down_before_it_is_initialized_again():
    harness = Harness(needs_shutdown_first=True)
    harness.terminal.disappear()
    fails_with(harness.broker.balance(), BrokerUnavailable)
    harness.terminal.come_back()
    harness.clock.advance(60)
    assert harness.backend.available
    assert harness.terminal.calls["shutdown"] >= 1
    assert result(harness.broker.balance()) == Decimal("10000")


def test_a_just_selected_symbol_with_no_quote_yet_is_no_price():
    harness = Harness()
    harness.terminal.set_no_quotes("GBPUSD")
    fails_with(harness.broker.tick("GBPUSD"), BrokerUnavailable)
    refused = fails_with(
        harness.broker.open_position(OrderRequest("GBPUSD", BUY, Decimal("0.1"), Decimal("1.2"), Decimal("1.3"), "tb-q")),
        BrokerUnavailable,
    )
    assert "no quote" in str(refused)
    assert harness.terminal.calls["order_send"] == 0


def test_the_heartbeat_learns_the_servers_clock_from_a_symbol_in_use():
    harness = Harness(warm=False)
    result(harness.broker.tick("EURUSD"))  # one read: nothing to compare with yet, a guess
    assert harness.backend.offset_sure is False
    harness.pass_time(harness.backend.heartbeat)  # the market moved; the heartbeat reads it again
    assert (harness.backend.offset, harness.backend.offset_sure) == (7200, True)
