"""
The fake MetaTrader 5 terminal behaves as ``/work/shared/mt5_facts.md`` says the
real module does: these tests pin each behaviour the MT5 adapter relies on.
"""

import copy
import datetime
import pickle
from decimal import Decimal

import numpy as np
import pytest

from tests.fakemt5 import fake_terminal as mt5
from tests.fakemt5.fake_terminal import FakeTerminal

UTC = datetime.timezone.utc
START = datetime.datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
SERVER_START = int(START.timestamp()) + 7200


def started(**kwargs):
    """An initialized terminal with EURUSD, XAUUSD and USDJPY in Market Watch."""
    kwargs.setdefault("market_watch", ("EURUSD", "XAUUSD", "USDJPY"))
    terminal = FakeTerminal(**kwargs)
    assert terminal.initialize() is True
    return terminal


@pytest.fixture
def term():
    return started()


@pytest.fixture
def netting():
    return started(margin_mode=mt5.ACCOUNT_MARGIN_MODE_RETAIL_NETTING)


def order(term, symbol="EURUSD", side=mt5.ORDER_TYPE_BUY, volume=0.1, sl_points=300, tp_points=300, **fields):
    """A market order request at the current price with SL/TP `sl_points` /
    `tp_points` beyond the price the position would close at."""
    info = term.symbol_info(symbol)
    tick = term.symbol_info_tick(symbol)
    sign = 1 if side == mt5.ORDER_TYPE_BUY else -1
    reference = tick.bid if side == mt5.ORDER_TYPE_BUY else tick.ask
    request = {
        "action": mt5.TRADE_ACTION_DEAL, "symbol": symbol, "volume": volume, "type": side,
        "price": tick.ask if side == mt5.ORDER_TYPE_BUY else tick.bid,
        "sl": round(reference - sign * sl_points * info.point, info.digits) if sl_points else 0.0,
        "tp": round(reference + sign * tp_points * info.point, info.digits) if tp_points else 0.0,
        "deviation": 20, "magic": 234000, "comment": "bot", "type_time": mt5.ORDER_TIME_GTC,
        "type_filling": mt5.ORDER_FILLING_IOC,
    }
    request.update(fields)
    return request


def close_request(term, position, volume=None, **fields):
    """The request closing `position` (a TradePosition) at the market."""
    tick = term.symbol_info_tick(position.symbol)
    side = mt5.ORDER_TYPE_SELL if position.type == mt5.POSITION_TYPE_BUY else mt5.ORDER_TYPE_BUY
    request = {
        "action": mt5.TRADE_ACTION_DEAL, "symbol": position.symbol, "volume": volume or position.volume,
        "type": side, "position": position.ticket, "price": tick.bid if side == mt5.ORDER_TYPE_SELL else tick.ask,
        "deviation": 20, "magic": 234000, "comment": "bot close", "type_filling": mt5.ORDER_FILLING_IOC,
    }
    request.update(fields)
    return request


def send_ok(term, request):
    """order_send that must succeed; the result."""
    result = term.order_send(request)
    assert result is not None, term.last_error()
    assert result.retcode == mt5.TRADE_RETCODE_DONE, result
    return result


def realised(term, identifier):
    """Sum of profit+commission+swap+fee over the position's deals."""
    deals = term.history_deals_get(position=identifier)
    return round(sum(d.profit + d.commission + d.swap + d.fee for d in deals), 2)


# -- constants ---------------------------------------------------------------


def test_constants_have_the_real_values_on_module_and_instance(term):
    assert (mt5.TIMEFRAME_M1, mt5.TIMEFRAME_H1, mt5.TIMEFRAME_H4, mt5.TIMEFRAME_D1) == (1, 16385, 16388, 16408)
    assert (term.ORDER_FILLING_FOK, term.ORDER_FILLING_IOC, term.ORDER_FILLING_RETURN) == (0, 1, 2)
    assert (term.TRADE_ACTION_DEAL, term.TRADE_ACTION_SLTP, term.TRADE_ACTION_CLOSE_BY) == (1, 6, 10)
    assert term.TRADE_RETCODE_REQUOTE == 10004 and term.TRADE_RETCODE_FIFO_CLOSE == 10045
    assert term.RES_E_INTERNAL_FAIL_CONNECT == -10004 and term.RES_E_AUTO_TRADING_DISABLED == -8
    names = [name for name in mt5.MT5_CONSTANTS if name.startswith("TRADE_RETCODE_")]
    assert 10005 not in mt5.MT5_CONSTANTS.values() and 10037 not in mt5.MT5_CONSTANTS.values()
    assert len(names) == 40 and not hasattr(mt5, "TRADE_RETCODE_HEDGE_PROHIBITED")
    assert not any(name.startswith("SYMBOL_FILLING_") for name in dir(mt5))


# -- result structs ----------------------------------------------------------


def test_results_behave_like_c_struct_sequences(term):
    position = term.positions_get(ticket=send_ok(term, order(term)).order)[0]
    assert position.symbol == "EURUSD" and position[0] == position.ticket
    assert isinstance(position, tuple) and len(position) == 19
    as_dict = position._asdict()
    assert isinstance(as_dict, dict) and list(as_dict)[:3] == ["ticket", "time", "time_msc"]
    assert not hasattr(position, "_fields")
    assert repr(position).startswith(f"TradePosition(ticket={position.ticket}, time=")
    with pytest.raises(AttributeError):
        position.volume = 1.0
    for result in (position, term.account_info(), term.symbol_info("EURUSD"), term.symbol_info_tick("EURUSD")):
        with pytest.raises(TypeError):
            pickle.dumps(result)
        with pytest.raises(TypeError):
            copy.copy(result)


def test_symbol_info_has_the_real_fields(term):
    info = term.symbol_info("EURUSD")._asdict()
    for name in (
        "name description path visible select trade_mode trade_exemode digits point spread trade_stops_level"
        " trade_freeze_level bid ask last time filling_mode order_mode expiration_mode volume_min volume_max"
        " volume_step volume_limit trade_tick_size trade_tick_value trade_contract_size swap_long swap_short"
        " currency_base currency_profit currency_margin"
    ).split():
        assert name in info
    assert (info["digits"], info["point"], info["trade_contract_size"]) == (5, 1e-05, 100000.0)
    assert (info["filling_mode"], info["trade_exemode"], info["trade_stops_level"], info["spread"]) == (3, 2, 10, 10)
    gold = term.symbol_info("XAUUSD")
    assert (gold.digits, gold.trade_contract_size, gold.filling_mode, gold.trade_stops_level) == (2, 100.0, 2, 20)
    assert term.symbol_info("USDJPY").currency_profit == "JPY"


# -- failures and last_error -------------------------------------------------


def test_every_call_before_initialize_fails_without_ipc():
    terminal = FakeTerminal(market_watch=("EURUSD",))
    assert terminal.account_info() is None
    assert terminal.last_error() == (-10004, "No IPC connection")
    assert terminal.symbol_select("EURUSD", True) is False
    assert terminal.order_send({"action": mt5.TRADE_ACTION_DEAL}) is None
    assert terminal.positions_get() is None and terminal.last_error()[0] == mt5.RES_E_INTERNAL_FAIL_CONNECT
    assert terminal.initialize() is True and terminal.last_error() == (1, "Success")
    assert terminal.positions_get() == () and terminal.orders_get() == ()
    assert terminal.calls["positions_get"] == 2 and terminal.calls["initialize"] == 1


def test_initialize_checks_credentials_and_counts_them():
    terminal = FakeTerminal(login=1234, password="pw", server="Broker-Demo")
    assert terminal.initialize(login=1234, password="wrong", server="Broker-Demo") is False
    assert terminal.last_error()[0] == mt5.RES_E_AUTH_FAILED
    assert terminal.account_info() is None
    assert terminal.initialize(login=1234, password="pw", server="Broker-Demo") is True
    assert terminal.account_info().login == 1234
    assert terminal.login(1234, password="pw", server="Broker-Demo") is True
    assert terminal.login(1234, password="bad", server="Broker-Demo") is False
    assert terminal.last_error()[0] == -6
    assert terminal.initialize() is True
    assert terminal.login_calls == 4


def test_initialize_with_a_wrong_path_finds_no_terminal():
    terminal = FakeTerminal()
    assert terminal.initialize("C:\\Elsewhere\\terminal64.exe") is False
    assert terminal.last_error()[0] == mt5.RES_E_INTERNAL_FAIL_INIT
    assert terminal.initialize("c:\\program files\\metatrader 5\\terminal64.exe") is True


def test_shutdown_closes_the_ipc_link(term):
    assert term.shutdown() is None
    assert term.terminal_info() is None and term.last_error()[0] == -10004


def test_filters_are_keyword_only(term):
    send_ok(term, order(term))
    assert term.positions_get("EURUSD") is None
    assert term.last_error() == (-2, "Unnamed arguments not allowed")
    assert len(term.positions_get(symbol="EURUSD")) == 1
    assert term.orders_get("EURUSD") is None
    assert term.history_deals_get(0, SERVER_START + 10, "EURUSD") is None
    assert term.last_error()[0] == mt5.RES_E_INVALID_PARAMS


def test_empty_results_are_empty_tuples(term):
    assert term.positions_get(symbol="GBPUSD") == ()
    assert term.positions_get(ticket=1) == ()
    assert term.history_deals_get(position=1) == ()
    assert term.last_error() == (1, "Success")


def test_positions_get_filters_by_symbol_group_and_ticket(term):
    eur = send_ok(term, order(term))
    gold = send_ok(term, order(term, "XAUUSD"))
    assert [p.ticket for p in term.positions_get(symbol="XAUUSD")] == [gold.order]
    assert [p.ticket for p in term.positions_get(group="*USD*,!EUR*")] == [gold.order]
    assert [p.ticket for p in term.positions_get(ticket=eur.order)] == [eur.order]
    assert [p.ticket for p in term.positions_get(symbol="XAUUSD", ticket=eur.order)] == [gold.order]
    assert term.positions_total() == 2


# -- symbols -------------------------------------------------------------------


def test_a_symbol_outside_market_watch_has_no_tick_nor_rates(term):
    assert term.symbol_info_tick("GBPUSD") is None and term.last_error()[0] < 0
    assert term.copy_rates_from_pos("GBPUSD", mt5.TIMEFRAME_M1, 0, 10) is None
    info = term.symbol_info("GBPUSD")
    assert info is not None and info.visible is False and info.select is False
    assert term.symbol_select("GBPUSD", True) is True
    assert term.symbol_info("GBPUSD").visible is True
    tick = term.symbol_info_tick("GBPUSD")
    assert tick.bid == 1.265 and tick.ask == 1.26512


def test_unknown_symbols_are_not_found(term):
    assert term.symbol_info("NOPE") is None and term.last_error()[0] == mt5.RES_E_NOT_FOUND
    assert term.symbol_select("NOPE", True) is False
    assert term.symbol_info_tick("NOPE") is None


def test_symbols_get_lists_the_catalogue_with_group_masks(term):
    assert term.symbols_total() == 5
    assert {s.name for s in term.symbols_get()} == {"EURUSD", "GBPUSD", "USDJPY", "US500", "XAUUSD"}
    assert {s.name for s in term.symbols_get(group="*USD*,!*JPY*,!XAU*")} == {"EURUSD", "GBPUSD"}


def test_symbol_specs_can_be_added_and_overridden():
    terminal = started(
        symbols={"EURUSD": {"trade_stops_level": 0}, "EURGBP": {"currency_profit": "GBP", "bid": 0.85}},
        market_watch=("EURGBP",),
    )
    assert terminal.symbol_info("EURUSD").trade_stops_level == 0
    assert terminal.symbol_info_tick("EURGBP").bid == 0.85
    profit = terminal.order_calc_profit(mt5.ORDER_TYPE_BUY, "EURGBP", 1.0, 0.85, 0.851)
    assert profit == pytest.approx(100 * 1.265)
    with pytest.raises(ValueError):
        FakeTerminal(symbols={"EURUSD": {"not_a_field": 1}})


def test_a_symbol_with_open_positions_cannot_leave_market_watch(term):
    send_ok(term, order(term))
    assert term.symbol_select("EURUSD", False) is False
    assert term.symbol_select("USDJPY", False) is True


# -- request validation (local, -2) ------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("comment", "x" * 32),
        ("comment", "tb[1]"),
        ("comment", "a=b"),
        ("comment", "a,b"),
        ("comment", "f(x)"),
        ("magic", np.int64(7)),
        ("volume", Decimal("0.1")),
        ("volume", 1),
        ("sl", None),
        ("deviation", 20.0),
        ("type_filling", True),
        ("unknown_key", 1),
    ],
)
def test_a_bad_request_field_fails_locally(term, field, value):
    request = order(term, **{field: value})
    assert term.order_send(request) is None
    assert term.last_error() == (-2, f'Invalid "{field}" argument')
    assert term.order_check(request) is None
    assert term.positions_total() == 0


def test_a_31_character_comment_is_accepted(term):
    send_ok(term, order(term, comment="x" * 31))


def test_missing_fields_default_to_zero_so_filling_is_fok(term):
    request = order(term, "XAUUSD")
    del request["type_filling"]
    assert term.order_send(request).retcode == mt5.TRADE_RETCODE_INVALID_FILL
    request = order(term, "EURUSD")
    del request["type_filling"], request["deviation"], request["comment"]
    result = send_ok(term, request)
    assert (result.request.type_filling, result.request.comment, result.request.deviation) == (0, "", 0)


# -- server checks (retcodes) ------------------------------------------------


def test_filling_modes_follow_the_symbol_bits(term):
    assert term.order_send(order(term, type_filling=mt5.ORDER_FILLING_RETURN)).retcode == 10030
    assert term.order_send(order(term, "XAUUSD", type_filling=mt5.ORDER_FILLING_FOK)).retcode == 10030
    assert term.order_check(order(term, "XAUUSD", type_filling=mt5.ORDER_FILLING_FOK)).retcode == 10030
    assert term.order_check(order(term, "XAUUSD", type_filling=mt5.ORDER_FILLING_IOC)).retcode == 0
    send_ok(term, order(term, "XAUUSD", type_filling=mt5.ORDER_FILLING_IOC))
    send_ok(term, order(term, "EURUSD", type_filling=mt5.ORDER_FILLING_FOK))


def test_return_filling_needs_exchange_execution():
    terminal = started(symbols={"EURUSD": {"trade_exemode": mt5.SYMBOL_TRADE_EXECUTION_EXCHANGE}})
    send_ok(terminal, order(terminal, type_filling=mt5.ORDER_FILLING_RETURN))


def test_order_check_reports_ok_as_zero_with_margin(term):
    check = term.order_check(order(term))
    assert check.retcode == 0 and check.comment == "Done"
    assert check.margin == pytest.approx(0.1 * 100000 * term.symbol_info_tick("EURUSD").ask / 100, abs=0.01)
    assert check.margin_free == pytest.approx(10000 - check.margin, abs=0.01)
    assert check.request.symbol == "EURUSD" and term.positions_total() == 0


@pytest.mark.parametrize(
    "side, sl_points, tp_points, retcode",
    [
        (mt5.ORDER_TYPE_BUY, 9, 300, 10016),  # SL closer than stops_level (10)
        (mt5.ORDER_TYPE_BUY, 300, 9, 10016),
        (mt5.ORDER_TYPE_BUY, -50, 300, 10016),  # SL on the wrong side
        (mt5.ORDER_TYPE_SELL, 9, 300, 10016),
        (mt5.ORDER_TYPE_SELL, 300, -50, 10016),
        (mt5.ORDER_TYPE_BUY, 10, 10, 10009),  # exactly stops_level away
        (mt5.ORDER_TYPE_SELL, 10, 10, 10009),
        (mt5.ORDER_TYPE_BUY, 0, 0, 10009),  # no stops
    ],
)
def test_stops_must_be_far_enough_on_the_right_side(term, side, sl_points, tp_points, retcode):
    assert term.order_send(order(term, side=side, sl_points=sl_points, tp_points=tp_points)).retcode == retcode


def test_buy_stops_are_measured_from_the_bid(term):
    tick = term.symbol_info_tick("EURUSD")
    # 5 points below the ASK is 5 points ABOVE the bid (spread 10): invalid for a BUY.
    request = order(term, sl=round(tick.ask - 0.00005, 5), tp=0.0)
    assert term.order_send(request).retcode == mt5.TRADE_RETCODE_INVALID_STOPS


@pytest.mark.parametrize("volume", [0.001, 0.015, 100.01, 1000.0])
def test_a_bad_volume_gets_10014(term, volume):
    result = term.order_send(order(term, volume=volume))
    assert result.retcode == mt5.TRADE_RETCODE_INVALID_VOLUME and result.order == 0 and result.deal == 0
    assert term.positions_total() == 0 and term.account_info().balance == 10000.0


def test_an_unrounded_price_gets_10015(term):
    assert term.order_send(order(term, sl=1.0800001)).retcode == mt5.TRADE_RETCODE_INVALID_PRICE


def test_a_stale_price_beyond_deviation_is_requoted(term):
    request = order(term, deviation=5)
    term.set_price("EURUSD", term.symbol_info_tick("EURUSD").bid + 0.0001)
    result = term.order_send(request)
    assert result.retcode == mt5.TRADE_RETCODE_REQUOTE
    assert (result.bid, result.ask) == (1.0851, 1.0852)
    send_ok(term, order(term, deviation=5))


def test_queued_requotes_answer_the_next_sends(term):
    term.queue_retcode(mt5.TRADE_RETCODE_REQUOTE, times=2)
    assert term.order_send(order(term)).retcode == 10004
    assert term.order_send(order(term)).retcode == 10004
    assert term.positions_total() == 0
    send_ok(term, order(term))
    assert term.calls["order_send"] == 3


def test_algo_trading_off_gives_10027(term):
    term.set_algo_trading(False)
    assert term.terminal_info().trade_allowed is False
    assert term.order_send(order(term)).retcode == mt5.TRADE_RETCODE_CLIENT_DISABLES_AT
    assert term.order_check(order(term)).retcode == 10027


def test_python_trading_disabled_fails_order_send_with_minus_8(term):
    term.set_tradeapi_disabled(True)
    assert term.terminal_info().tradeapi_disabled is True
    assert term.order_send(order(term)) is None
    assert term.last_error()[0] == mt5.RES_E_AUTO_TRADING_DISABLED
    assert term.positions_total() == 0


def test_a_dropped_broker_link_gives_10031_and_a_stale_tick(term):
    before = term.symbol_info_tick("EURUSD")
    term.set_connected(False)
    term.advance(30)
    assert term.terminal_info().connected is False
    assert term.symbol_info_tick("EURUSD") == before
    assert term.order_send(order(term)).retcode == mt5.TRADE_RETCODE_CONNECTION
    term.set_connected(True)
    assert term.symbol_info_tick("EURUSD").time == before.time + 30


def test_a_closed_market_gives_10018_and_no_ticks(term):
    term.set_market_closed("EURUSD", True)
    before = term.symbol_info_tick("EURUSD")
    term.advance(5)
    assert term.symbol_info_tick("EURUSD") == before
    assert term.order_send(order(term)).retcode == mt5.TRADE_RETCODE_MARKET_CLOSED
    term.set_market_closed("EURUSD", False)
    send_ok(term, order(term))


@pytest.mark.parametrize(
    "mode, side, retcode",
    [
        (mt5.SYMBOL_TRADE_MODE_DISABLED, mt5.ORDER_TYPE_BUY, 10017),
        (mt5.SYMBOL_TRADE_MODE_LONGONLY, mt5.ORDER_TYPE_SELL, 10042),
        (mt5.SYMBOL_TRADE_MODE_LONGONLY, mt5.ORDER_TYPE_BUY, 10009),
        (mt5.SYMBOL_TRADE_MODE_SHORTONLY, mt5.ORDER_TYPE_BUY, 10043),
        (mt5.SYMBOL_TRADE_MODE_CLOSEONLY, mt5.ORDER_TYPE_BUY, 10044),
    ],
)
def test_symbol_trade_modes(mode, side, retcode):
    terminal = started(symbols={"EURUSD": {"trade_mode": mode}})
    assert terminal.order_send(order(terminal, side=side)).retcode == retcode


def test_close_only_still_allows_closing(term):
    position = term.positions_get(ticket=send_ok(term, order(term)).order)[0]
    term.set_trade_mode("EURUSD", mt5.SYMBOL_TRADE_MODE_CLOSEONLY)
    assert term.symbol_info("EURUSD").trade_mode == mt5.SYMBOL_TRADE_MODE_CLOSEONLY
    assert term.order_send(order(term)).retcode == mt5.TRADE_RETCODE_CLOSE_ONLY
    send_ok(term, close_request(term, position))


def test_not_enough_free_margin_gives_10019(term):
    assert term.order_send(order(term, volume=95.0)).retcode == mt5.TRADE_RETCODE_NO_MONEY
    assert term.order_check(order(term, volume=95.0)).retcode == mt5.TRADE_RETCODE_NO_MONEY


def test_the_freeze_level_blocks_closing_near_a_stop():
    terminal = started(symbols={"EURUSD": {"trade_freeze_level": 20}})
    position = terminal.positions_get(ticket=send_ok(terminal, order(terminal, sl_points=30, tp_points=300)).order)[0]
    terminal.set_price("EURUSD", round(position.sl + 0.00010, 5))
    assert terminal.order_send(close_request(terminal, position)).retcode == mt5.TRADE_RETCODE_FROZEN
    terminal.set_price("EURUSD", round(position.sl + 0.00050, 5))
    send_ok(terminal, close_request(terminal, position))


# -- execution ---------------------------------------------------------------


def test_a_buy_fills_at_the_ask_and_a_sell_at_the_bid(term):
    tick = term.symbol_info_tick("EURUSD")
    buy = send_ok(term, order(term))
    sell = send_ok(term, order(term, side=mt5.ORDER_TYPE_SELL))
    assert (buy.price, sell.price) == (tick.ask, tick.bid)
    position = term.positions_get(ticket=buy.order)[0]
    assert position.identifier == buy.order and position.price_open == tick.ask
    assert position.comment == "bot" and position.magic == 234000 and position.reason == 3
    assert (buy.order, buy.deal, sell.order, sell.deal) == (50000001, 60000002, 50000002, 60000003)


def test_sltp_modifies_a_position(term):
    result = send_ok(term, order(term))
    position = term.positions_get(ticket=result.order)[0]
    modify = {"action": mt5.TRADE_ACTION_SLTP, "symbol": "EURUSD", "position": position.ticket,
              "sl": round(position.sl - 0.001, 5), "tp": 0.0}
    send_ok(term, modify)
    changed = term.positions_get(ticket=position.ticket)[0]
    assert (changed.sl, changed.tp) == (modify["sl"], 0.0)
    assert term.order_send(modify).retcode == mt5.TRADE_RETCODE_NO_CHANGES
    too_close = dict(modify, sl=round(changed.price_current - 0.00005, 5))
    assert term.order_send(too_close).retcode == mt5.TRADE_RETCODE_INVALID_STOPS
    assert term.order_send(dict(modify, position=1)).retcode == mt5.TRADE_RETCODE_POSITION_CLOSED


def test_hedging_keeps_opposite_positions_and_closes_by_ticket(term):
    buy = send_ok(term, order(term, volume=0.3))
    sell = send_ok(term, order(term, side=mt5.ORDER_TYPE_SELL, volume=0.1))
    assert {p.ticket for p in term.positions_get(symbol="EURUSD")} == {buy.order, sell.order}
    position = term.positions_get(ticket=buy.order)[0]
    assert term.order_send(close_request(term, position, volume=0.4)).retcode == 10038
    partial = send_ok(term, close_request(term, position, volume=0.1))
    assert term.positions_get(ticket=buy.order)[0].volume == 0.2
    out = term.history_deals_get(ticket=partial.order)[0]
    assert (out.entry, out.position_id, out.volume, out.reason) == (mt5.DEAL_ENTRY_OUT, buy.order, 0.1, 3)
    send_ok(term, close_request(term, term.positions_get(ticket=buy.order)[0]))
    assert [p.ticket for p in term.positions_get()] == [sell.order]


def test_hedging_close_by_closes_both_at_the_opposite_open_price(term):
    buy = send_ok(term, order(term, volume=0.2))
    term.set_price("EURUSD", 1.0860)
    sell = send_ok(term, order(term, side=mt5.ORDER_TYPE_SELL, volume=0.1))
    request = {"action": mt5.TRADE_ACTION_CLOSE_BY, "symbol": "EURUSD", "position": buy.order,
               "position_by": sell.order}
    result = send_ok(term, request)
    deals = term.history_deals_get(ticket=result.order)
    assert [d.entry for d in deals] == [mt5.DEAL_ENTRY_OUT_BY] * 2
    assert [d.position_id for d in deals] == [buy.order, sell.order]
    assert deals[0].price == deals[1].price == 1.086 and deals[0].profit == pytest.approx(9.0)
    assert [(p.ticket, p.volume) for p in term.positions_get()] == [(buy.order, 0.1)]


def test_fifo_close_forces_the_oldest_first():
    terminal = started(fifo_close=True)
    first = send_ok(terminal, order(terminal))
    second = send_ok(terminal, order(terminal))
    newer = terminal.positions_get(ticket=second.order)[0]
    assert terminal.order_send(close_request(terminal, newer)).retcode == mt5.TRADE_RETCODE_FIFO_CLOSE
    send_ok(terminal, close_request(terminal, terminal.positions_get(ticket=first.order)[0]))
    send_ok(terminal, close_request(terminal, newer))


def test_netting_adds_at_the_average_price(netting):
    first = send_ok(netting, order(netting, volume=0.1))
    netting.set_price("EURUSD", 1.0860)
    second = send_ok(netting, order(netting, volume=0.1))
    (position,) = netting.positions_get(symbol="EURUSD")
    assert position.ticket == first.order and position.volume == 0.2
    assert position.price_open == round((1.0851 + 1.0861) / 2, 5)
    assert second.order != position.ticket and netting.history_deals_get(ticket=second.order)[0].entry == 0


def test_netting_reversal_changes_the_ticket_but_not_the_identifier(netting):
    opened = send_ok(netting, order(netting, volume=0.1))
    reversed_ = send_ok(netting, order(netting, side=mt5.ORDER_TYPE_SELL, volume=0.3))
    (position,) = netting.positions_get(symbol="EURUSD")
    assert position.ticket == reversed_.order != opened.order
    assert position.identifier == opened.order
    assert (position.type, position.volume) == (mt5.POSITION_TYPE_SELL, 0.2)
    deals = netting.history_deals_get(position=opened.order)
    assert [(d.entry, d.volume) for d in deals] == [(mt5.DEAL_ENTRY_IN, 0.1), (mt5.DEAL_ENTRY_INOUT, 0.3)]
    assert netting.positions_get(ticket=opened.order) == ()
    send_ok(netting, order(netting, volume=0.2, sl_points=0, tp_points=0))
    assert netting.positions_total() == 0
    assert [d.entry for d in netting.history_deals_get(position=opened.order)] == [0, 2, 1]


def test_netting_needs_no_ticket_to_reduce(netting):
    send_ok(netting, order(netting, volume=0.3))
    send_ok(netting, order(netting, side=mt5.ORDER_TYPE_SELL, volume=0.1, sl_points=0, tp_points=0))
    assert netting.positions_get()[0].volume == 0.2


# -- stops, closes and results -------------------------------------------------


def test_a_stop_loss_fills_at_its_level_with_reason_sl(term):
    result = send_ok(term, order(term, sl_points=100, comment="tb-7"))
    position = term.positions_get(ticket=result.order)[0]
    term.set_price("EURUSD", round(position.sl - 0.0005, 5))  # a gap through the stop
    assert term.positions_get(ticket=result.order) == ()
    entry, exit_ = term.history_deals_get(position=result.order)
    assert (exit_.entry, exit_.reason, exit_.price) == (mt5.DEAL_ENTRY_OUT, mt5.DEAL_REASON_SL, position.sl)
    assert exit_.comment == f"[sl {position.sl:.5f}]" and entry.comment == "tb-7"
    assert exit_.profit == pytest.approx((position.sl - position.price_open) * 100000 * 0.1, abs=0.005)
    opening, closing = term.history_orders_get(position=result.order)
    assert opening.comment == "tb-7" and closing.reason == mt5.ORDER_REASON_SL


def test_a_take_profit_fills_at_its_level_as_the_market_moves(term):
    result = send_ok(term, order(term, "XAUUSD", side=mt5.ORDER_TYPE_SELL, sl_points=2000, tp_points=300))
    position = term.positions_get(ticket=result.order)[0]
    for _ in range(100000):
        if not term.positions_get(ticket=result.order):
            break
        term.advance(1)
    exit_ = term.history_deals_get(position=result.order)[-1]
    assert exit_.reason in (mt5.DEAL_REASON_TP, mt5.DEAL_REASON_SL)
    level = position.tp if exit_.reason == mt5.DEAL_REASON_TP else position.sl
    tag = "tp" if exit_.reason == mt5.DEAL_REASON_TP else "sl"
    assert exit_.price == level and exit_.comment == f"[{tag} {level:.2f}]"
    assert exit_.type == mt5.DEAL_TYPE_BUY and exit_.magic == 234000


def test_seeded_markets_repeat():
    one, two = started(seed=5), started(seed=5)
    one.advance(100)
    two.advance(100)
    assert one.symbol_info_tick("XAUUSD") == two.symbol_info_tick("XAUUSD")


def test_commission_is_charged_on_in_and_out(term):
    result = send_ok(term, order(term, volume=0.2))
    assert term.account_info().balance == 10000 - 0.7
    send_ok(term, close_request(term, term.positions_get(ticket=result.order)[0]))
    commissions = [d.commission for d in term.history_deals_get(position=result.order)]
    assert commissions == [-0.7, -0.7]


def test_the_realised_result_of_a_position_is_its_balance_change():
    terminal = started(commission_per_lot=7.0, fee_per_deal=0.25)
    result = send_ok(terminal, order(terminal, volume=0.3))
    terminal.advance(120)
    terminal.charge_swap(result.order, -1.23)
    position = terminal.positions_get(ticket=result.order)[0]
    assert position.swap == -1.23
    send_ok(terminal, close_request(terminal, position, volume=0.1))
    terminal.advance(60)
    send_ok(terminal, close_request(terminal, terminal.positions_get(ticket=result.order)[0]))
    deals = terminal.history_deals_get(position=result.order)
    assert [d.entry for d in deals] == [0, 1, 1]
    assert sum(d.swap for d in deals) == pytest.approx(-1.23)
    assert all(d.fee == -0.25 for d in deals)
    assert terminal.account_info().balance == pytest.approx(10000 + realised(terminal, result.order), abs=1e-9)


def test_a_manual_close_has_a_client_reason(term):
    result = send_ok(term, order(term))
    price = term.symbol_info_tick("EURUSD").bid
    deal = term.close_by_hand(result.order)
    exit_ = term.history_deals_get(position=result.order)[-1]
    assert (exit_.ticket, exit_.reason, exit_.price, exit_.magic) == (deal, mt5.DEAL_REASON_CLIENT, price, 0)
    other = send_ok(term, order(term))
    term.close_by_hand(other.order, reason=mt5.DEAL_REASON_MOBILE)
    assert term.history_deals_get(position=other.order)[-1].reason == mt5.DEAL_REASON_MOBILE
    with pytest.raises(ValueError):
        term.close_by_hand(other.order, reason=mt5.DEAL_REASON_SL)


def test_a_stop_out_has_reason_so(term):
    result = send_ok(term, order(term, side=mt5.ORDER_TYPE_SELL))
    term.stop_out(result.order)
    exit_ = term.history_deals_get(position=result.order)[-1]
    assert exit_.reason == mt5.DEAL_REASON_SO and exit_.comment.startswith("[so ")
    assert term.history_orders_get(position=result.order)[-1].reason == mt5.ORDER_REASON_SO


def test_usdjpy_profit_is_converted_at_the_close_rate(term):
    profit = term.order_calc_profit(mt5.ORDER_TYPE_BUY, "USDJPY", 1.0, 157.0, 157.5)
    assert profit == pytest.approx(0.5 * 100000 / 157.5)
    assert term.order_calc_profit(mt5.ORDER_TYPE_SELL, "USDJPY", 1.0, 157.0, 157.5) == pytest.approx(-profit)
    result = send_ok(term, order(term, "USDJPY", volume=1.0, sl_points=1000, tp_points=1000))
    term.set_price("USDJPY", 157.5)
    send_ok(term, close_request(term, term.positions_get(ticket=result.order)[0]))
    exit_ = term.history_deals_get(position=result.order)[-1]
    assert exit_.profit == round((157.5 - 157.012) * 100000 / 157.5, 2)
    assert term.symbol_info("USDJPY").trade_tick_value == pytest.approx(100 / 157.5)


def test_order_calc_margin_and_profit(term):
    assert term.order_calc_margin(mt5.ORDER_TYPE_BUY, "EURUSD", 1.0, 1.1) == 1100.0
    assert term.order_calc_margin(mt5.ORDER_TYPE_BUY, "USDJPY", 1.0, 157.0) == 1000.0
    assert term.order_calc_profit(mt5.ORDER_TYPE_BUY, "XAUUSD", 0.1, 2650.0, 2651.0) == pytest.approx(10.0)
    assert term.order_calc_profit(mt5.ORDER_TYPE_BUY, "NOPE", 0.1, 1.0, 1.1) is None
    assert term.order_calc_margin(mt5.ORDER_TYPE_BUY, "EURUSD", Decimal("1"), 1.1) is None


def test_account_equity_and_margin_follow_the_positions(term):
    send_ok(term, order(term, volume=1.0))
    term.set_price("EURUSD", 1.0871)
    account = term.account_info()
    assert account.profit == 200.0 and account.balance == 10000 - 3.5
    assert account.equity == account.balance + 200.0
    assert account.margin == pytest.approx(1087.2) and account.margin_free == pytest.approx(account.equity - 1087.2)
    assert account.margin_mode == mt5.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING and account.currency == "USD"


# -- time and history ----------------------------------------------------------


def test_every_epoch_is_server_time(term):
    assert term.symbol_info_tick("EURUSD").time == SERVER_START
    term.advance(90)
    assert term.symbol_info_tick("EURUSD").time_msc == (SERVER_START + 90) * 1000
    result = send_ok(term, order(term))
    position = term.positions_get(ticket=result.order)[0]
    deal = term.history_deals_get(ticket=result.order)[0]
    assert position.time == deal.time == SERVER_START + 90 == int(term.server_now)
    assert term.copy_rates_from_pos("EURUSD", mt5.TIMEFRAME_M1, 0, 1)[0]["time"] == SERVER_START + 60


def test_history_is_filtered_by_server_time_and_group(term):
    first = send_ok(term, order(term, sl_points=0, tp_points=0))
    term.advance(3600)
    second = send_ok(term, order(term, "XAUUSD", sl_points=0, tp_points=0))
    window = term.history_deals_get(SERVER_START + 1, SERVER_START + 7200)
    assert [d.order for d in window] == [second.order]
    aware = datetime.datetime.fromtimestamp(SERVER_START - 60, UTC)
    everything = term.history_deals_get(aware, datetime.datetime.fromtimestamp(SERVER_START + 86400, UTC))
    assert [d.order for d in everything] == [first.order, second.order]
    assert [d.order for d in term.history_deals_get(0, SERVER_START + 86400, group="XAU*")] == [second.order]
    assert term.history_deals_total(SERVER_START + 1, SERVER_START + 7200) == 1
    assert term.history_orders_total(0, SERVER_START + 7200) == 2
    # The UTC wall clock is two hours behind: a window in UTC misses the fill.
    assert term.history_deals_get(int(term.now) - 60, int(term.now) + 60) == ()


def test_the_deposit_is_a_balance_deal(term):
    (deposit,) = term.history_deals_get(0, SERVER_START)
    assert (deposit.type, deposit.profit, deposit.position_id, deposit.order) == (mt5.DEAL_TYPE_BALANCE, 10000.0, 0, 0)


def test_a_naive_datetime_is_read_as_local_time(term):
    send_ok(term, order(term))
    naive = datetime.datetime(2026, 1, 5, 10, 0)
    assert term.history_deals_get(naive, naive) == term.history_deals_get(
        int(naive.timestamp()), int(naive.timestamp())
    )
    assert term.history_deals_get(1.5, 2.5) is None and term.last_error()[0] == -2


def test_history_deals_by_ticket_match_the_order_not_the_deal(term):
    result = send_ok(term, order(term))
    assert [d.ticket for d in term.history_deals_get(ticket=result.order)] == [result.deal]
    assert term.history_deals_get(ticket=result.deal) == ()
    assert [o.ticket for o in term.history_orders_get(ticket=result.order)] == [result.order]


def test_deals_can_appear_after_a_delay(term):
    term.queue_delay_deals(2)
    result = send_ok(term, order(term))
    assert term.positions_get(ticket=result.order)
    assert term.history_deals_get(position=result.order) == ()
    assert term.history_deals_get(position=result.order) == ()
    assert len(term.history_deals_get(position=result.order)) == 1


# -- bars ----------------------------------------------------------------------


def test_rates_have_the_real_dtype_and_a_forming_last_bar(term):
    rates = term.copy_rates_from_pos("EURUSD", mt5.TIMEFRAME_M1, 0, 300)
    assert rates.dtype == np.dtype([
        ("time", "<i8"), ("open", "<f8"), ("high", "<f8"), ("low", "<f8"), ("close", "<f8"),
        ("tick_volume", "<u8"), ("spread", "<i4"), ("real_volume", "<u8"),
    ])
    assert len(rates) == 300 and (np.diff(rates["time"]) == 60).all()
    assert rates[-1]["time"] == SERVER_START and rates[-1]["tick_volume"] == 1
    assert rates[-1]["close"] == term.symbol_info_tick("EURUSD").bid
    assert (rates["high"] >= rates["low"]).all() and (rates[:-1]["tick_volume"] == 60).all()
    term.advance(30)
    assert term.copy_rates_from_pos("EURUSD", mt5.TIMEFRAME_M1, 0, 1)[0]["tick_volume"] == 31
    completed = term.copy_rates_from_pos("EURUSD", mt5.TIMEFRAME_M1, 1, 10)
    assert completed[-1]["time"] == SERVER_START - 60


def test_rates_from_a_date_and_in_a_range_use_server_time(term):
    term.advance(600)
    before = term.copy_rates_from("EURUSD", mt5.TIMEFRAME_M1, SERVER_START, 5)
    assert before[-1]["time"] == SERVER_START and len(before) == 5
    window = term.copy_rates_range("EURUSD", mt5.TIMEFRAME_M5, SERVER_START, SERVER_START + 600)
    assert list(window["time"]) == [SERVER_START + 300 * i for i in range(3)]
    hourly = term.copy_rates_from_pos("EURUSD", mt5.TIMEFRAME_H1, 0, 3)
    assert hourly[-1]["time"] == SERVER_START and hourly[-1]["tick_volume"] == 601
    assert term.copy_rates_from_pos("EURUSD", 7, 0, 3) is None and term.last_error()[0] == -2
    assert term.copy_rates_from_pos("EURUSD", mt5.TIMEFRAME_M1, 5000, 3) is None


# -- the terminal going away and unknown outcomes ------------------------------


def test_a_vanished_terminal_fails_every_call_until_it_comes_back(term):
    term.disappear()
    assert term.terminal_info() is None and term.last_error() == (-10004, "No IPC connection")
    assert term.symbol_select("EURUSD", True) is False
    assert term.initialize() is False and term.last_error()[0] == mt5.RES_E_INTERNAL_FAIL_INIT
    term.come_back()
    assert term.account_info() is None and term.last_error()[0] == -10004
    assert term.initialize() is True
    assert term.account_info().balance == 10000.0


def test_a_timeout_with_fill_leaves_a_real_position(term):
    term.queue_retcode(mt5.TRADE_RETCODE_TIMEOUT, fill=True)
    result = term.order_send(order(term, comment="tb-9"))
    assert result.retcode == mt5.TRADE_RETCODE_TIMEOUT and result.order == 0 and result.deal == 0
    (position,) = term.positions_get(symbol="EURUSD")
    assert position.comment == "tb-9"
    assert [o.comment for o in term.history_orders_get(0, SERVER_START + 60)] == ["tb-9"]


def test_an_ipc_timeout_returns_none_and_may_still_fill(term):
    term.queue_none(fill=True)
    assert term.order_send(order(term)) is None
    assert term.last_error() == (-10005, "IPC timeout")
    assert term.positions_total() == 1
    term.queue_none()
    assert term.order_send(order(term)) is None
    assert term.positions_total() == 1
