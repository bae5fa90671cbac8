"""
The plan in a live session, driven by a Clock on a scripted market: every
entry is gated and sized by the plan's limits, a skip is told to the clients,
the plan state survives a restart in the middle of a day, and the completion
message reports the phase and step of the new state.
"""

from decimal import Decimal

from tradebot.broker import SELL
from tradebot.plans.engine import DAILY_BREACH, DAY_ROLLOVER, PAUSED_TODAY, PHASE_PASSED, STEP_CHANGED
from tradebot.signals.strategies import Signal
from tradebot.store.planstore import thd_plan_events, thd_plan_state
from tradebot.trading import messages

from .test_loops import MONITOR_INTERVAL, SIGNAL_INTERVAL, Rig

# a SELL of EURUSD at the bid 1.08500 with its stop 0.00200 above: one lot
# loses 200 at the stop, and makes 400 at the take profit 0.00400 below
SELL_EURUSD = Signal(SELL, Decimal("0.00200"), Decimal("0.00400"))
DAY = 86400


def plan_file(tmp_path, name, body):
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\ntime_zone = "UTC"\n' + body)
    return str(path)


ONE_LOT = '[[phases]]\non_loss = "hold"\non_profit = "hold"\nsteps = [{ lot = 1 }]\n'
ONE_LOT_DAILY_1PCT = '[[phases]]\nmax_daily_loss_pct = 1\non_loss = "hold"\nsteps = [{ lot = 1 }]\n'


def lose_one_lot(rig, client):
    """A 1.00 lot SELL that closes at its stop loss: 200 lost."""
    rig.strategy.queue("EURUSD", SELL_EURUSD)
    rig.clock.advance(SIGNAL_INTERVAL)
    assert client.take()[-1] == messages.trade_placed("EURUSD")
    assert rig.broker.orders[-1].volume == Decimal("1.00")
    rig.broker.set_bid("EURUSD", "1.08700")
    rig.clock.advance(MONITOR_INTERVAL)


def test_a_daily_breach_skips_signals_until_the_next_day_even_across_a_restart(inline_store, tmp_path):
    rig = Rig(inline_store, symbols=("EURUSD",), plan=plan_file(tmp_path, "loose", ONE_LOT))
    client = rig.stream()
    client.take()
    lose_one_lot(rig, client)  # 10000 -> 9800, under a plan with no limit
    # the account moves to a plan whose daily limit (1% of the day's 10000) that loss broke
    inline_store.update_account("alice", {"plan": plan_file(tmp_path, "tight", ONE_LOT_DAILY_1PCT)})
    rig.strategy.queue("EURUSD", SELL_EURUSD)
    client.take()
    rig.clock.advance(SIGNAL_INTERVAL)
    assert client.take() == [
        messages.checking("EURUSD"),
        messages.signal(SELL, "EURUSD"),
        messages.trade_skipped("EURUSD", "the daily loss limit was reached; trading resumes next day"),
    ]
    orders = len(rig.broker.orders)
    state = inline_store.run(thd_plan_state, rig.account.id).result
    assert (state.status, state.day_start_balance) == (PAUSED_TODAY, Decimal(10000))
    [breach] = [e for e in inline_store.run(thd_plan_events, rig.account.id).result if e.kind == DAILY_BREACH]
    assert (breach.balance, breach.equity) == (Decimal(9800), Decimal(9800))

    # a restart in the middle of the day keeps the pause and the day's start
    rig.session.stopService()
    rig.session = rig.new_session()
    client = rig.stream()
    rig.strategy.queue("EURUSD", SELL_EURUSD)
    rig.clock.advance(SIGNAL_INTERVAL)
    assert client.take()[-1]["message"] == messages.TRADE_SKIPPED
    assert len(rig.broker.orders) == orders

    # the next day starts at 9800 (floor 9702): 98 of room, so 0.49 lot
    rig.clock.advance(DAY - rig.clock.seconds() % DAY)
    rig.strategy.queue("EURUSD", SELL_EURUSD)
    rig.clock.advance(SIGNAL_INTERVAL)
    assert client.take()[-1] == messages.trade_placed("EURUSD")
    assert rig.broker.orders[-1].volume == Decimal("0.49")
    state = inline_store.run(thd_plan_state, rig.account.id).result
    assert (state.day, state.day_start_balance, state.status) == ("1970-01-02", Decimal(9800), "active")
    assert (state.trading_days, state.last_trading_day) == (2, "1970-01-02")
    assert DAY_ROLLOVER in [e.kind for e in inline_store.run(thd_plan_events, rig.account.id).result]


def test_the_lot_is_cut_to_the_headroom_and_a_target_moves_the_phase(inline_store, tmp_path):
    two_phases = (
        '[[phases]]\ntarget_pct = 1\nmax_daily_loss_pct = 1\nsteps = [{ lot = 1 }, { lot = 2 }]\n'
        '[[phases]]\nsteps = [{ lot = 0.1 }]\n'
    )
    rig = Rig(inline_store, symbols=("EURUSD",), plan=plan_file(tmp_path, "two", two_phases))
    rig.strategy.queue("EURUSD", SELL_EURUSD)
    client = rig.stream()
    assert client.take()[-1] == messages.trade_placed("EURUSD")
    [order] = rig.broker.orders
    assert order.volume == Decimal("0.50")  # 1.00 cut: 100 of room at 200 a lot
    assert rig.trades()[0].phase == 1
    rig.broker.set_bid("EURUSD", "1.08090")  # the ask 1.08100 reaches the take profit: +200
    rig.clock.advance(MONITOR_INTERVAL)
    completed = client.take()[0]["data"]
    # the ladder alone would say phase 1 step 2; the target (10100) passes the phase
    assert (completed["current_phase"], completed["current_step"]) == (2, 1)
    assert completed["new_account_balance"] == 10200.0
    account = inline_store.account_by_name("alice").result
    assert (account.phase, account.step) == (2, 1)
    state = inline_store.run(thd_plan_state, account.id).result
    assert (state.phase, state.phase_start_balance, state.trading_days) == (2, Decimal(10200), 0)
    events = inline_store.run(thd_plan_events, account.id).result
    assert [(e.kind, e.balance) for e in events] == [(STEP_CHANGED, Decimal(10200)), (PHASE_PASSED, Decimal(10200))]


def test_a_lot_that_cannot_fit_the_minimum_volume_is_skipped(inline_store, tmp_path):
    tiny = '[[phases]]\nmax_loss_pct = 0.01\nsteps = [{ lot = 1 }]\n'  # 1.00 of room: 0.01 lot loses 2
    rig = Rig(inline_store, symbols=("EURUSD",), plan=plan_file(tmp_path, "tiny", tiny))
    rig.strategy.queue("EURUSD", SELL_EURUSD)
    client = rig.stream()
    assert client.take()[-1] == messages.trade_skipped(
        "EURUSD", "0.01 lot would lose more than the 1.00 left under the overall loss limit"
    )
    assert rig.broker.orders == [] and rig.trades() == []


def test_the_day_rolls_over_with_no_trade_and_no_signal(inline_store, tmp_path):
    rig = Rig(inline_store, symbols=("EURUSD",), plan=plan_file(tmp_path, "tight", ONE_LOT_DAILY_1PCT))
    rig.stream()
    rig.clock.advance(DAY)  # one signal check a minute finds nothing all day
    state = inline_store.run(thd_plan_state, rig.account.id).result
    assert state.day == "1970-01-02"
    [event] = inline_store.run(thd_plan_events, rig.account.id).result
    assert (event.kind, event.at, event.balance) == (DAY_ROLLOVER, float(DAY), Decimal(10000))


TIGHT_CLOSING = ONE_LOT_DAILY_1PCT + "close_on_breach = true\n"


def breach_with_a_trade_open(inline_store, tmp_path, tight_plan, lose_close=False, refuse_closes=False):
    """A 1.00 lot SELL opened under a plan with no limit, 110 down (the ask
    1.08610); then the account is moved to `tight_plan`, whose daily limit
    (1% of 10000) that floating loss breaks, and the server restarted (a
    session reads its plan when it starts); one monitor tick measures it."""
    rig = Rig(inline_store, symbols=("EURUSD",), plan=plan_file(tmp_path, "loose", ONE_LOT))
    client = rig.stream()
    rig.strategy.queue("EURUSD", SELL_EURUSD)
    rig.clock.advance(SIGNAL_INTERVAL)
    assert client.take()[-1] == messages.trade_placed("EURUSD")
    [position] = rig.broker.positions.values()
    rig.broker.set_bid("EURUSD", "1.08600")
    rig.clock.advance(MONITOR_INTERVAL)
    assert client.take()[-1]["data"]["profit"] == -110.0
    inline_store.update_account("alice", {"plan": plan_file(tmp_path, "tight", tight_plan)})
    rig.session.stopService()
    rig.account = inline_store.account_by_name("alice").result
    rig.session = rig.new_session()
    client = rig.stream()
    rig.broker.lose_next_close = lose_close
    rig.broker.refuse_closes = refuse_closes
    assert rig.broker.positions and rig.broker.closes == []
    rig.clock.advance(MONITOR_INTERVAL)
    return rig, client, position


def completions(messages_):
    return [m for m in messages_ if m["message"] == messages.TRADE_COMPLETED]


def test_a_breach_with_close_on_breach_closes_the_open_trade_and_reports_it_once(inline_store, tmp_path):
    rig, client, position = breach_with_a_trade_open(inline_store, tmp_path, TIGHT_CLOSING)
    assert rig.broker.closes == [position.ticket] and not rig.broker.positions
    [completed] = completions(client.take())
    assert completed["data"]["profit"] == -110.0 and completed["data"]["close_price"] == 1.0861
    assert completed["data"]["new_account_balance"] == 9890.0
    [(record, trade)] = inline_store.trades("alice").result
    assert (trade.close_reason, trade.profit, trade.balance_after) == ("expert", Decimal("-110"), Decimal("9890"))
    # a day of signals later: no new trade, no second close, no second report
    for _ in range(3):
        rig.strategy.queue("EURUSD", SELL_EURUSD)
        rig.clock.advance(SIGNAL_INTERVAL)
    later = client.take()
    assert completions(later) == [] and later[-1]["message"] == messages.TRADE_SKIPPED
    assert len(rig.broker.orders) == 1 and rig.broker.closes == [position.ticket]
    assert inline_store.run(thd_plan_state, rig.account.id).result.status == PAUSED_TODAY


def test_a_breach_without_close_on_breach_leaves_the_trade_open(inline_store, tmp_path):
    rig, client, position = breach_with_a_trade_open(inline_store, tmp_path, ONE_LOT_DAILY_1PCT)
    rig.clock.advance(SIGNAL_INTERVAL)
    assert inline_store.run(thd_plan_state, rig.account.id).result.status == PAUSED_TODAY
    assert rig.broker.closes == [] and position.ticket in rig.broker.positions
    assert completions(client.take()) == []


def test_a_close_whose_answer_is_lost_is_completed_once_by_the_monitor(inline_store, tmp_path):
    rig, client, position = breach_with_a_trade_open(inline_store, tmp_path, TIGHT_CLOSING, lose_close=True)
    assert rig.broker.closes == [position.ticket] and not rig.broker.positions
    rig.clock.advance(MONITOR_INTERVAL)
    rig.clock.advance(SIGNAL_INTERVAL)
    [completed] = completions(client.take())
    assert completed["data"]["profit"] == -110.0
    assert rig.broker.closes == [position.ticket]
    [(_, trade)] = inline_store.trades("alice").result
    assert (trade.close_reason, trade.balance_after) == ("expert", Decimal("9890"))


def test_a_close_refused_for_a_passing_reason_is_asked_again_with_back_off_until_the_position_is_gone(
    inline_store, tmp_path
):
    rig, client, position = breach_with_a_trade_open(inline_store, tmp_path, TIGHT_CLOSING, refuse_closes=True)
    assert rig.broker.closes == [position.ticket]  # the first try at the breach: market closed
    closing = rig.session.closing[rig.trades()[0].id]
    assert (closing.attempts, closing.last_error) == (1, "market closed")
    asked_at = []
    for second in range(1, 16):
        before = len(rig.broker.closes)
        rig.clock.advance(MONITOR_INTERVAL)
        if len(rig.broker.closes) > before:
            asked_at.append(second)
    assert asked_at == [1, 3, 7, 15]  # after 1, 2, 4, 8 s
    assert position.ticket in rig.broker.positions and client.take()[-1]["message"] == messages.ACTIVE_TRADE
    rig.broker.refuse_closes = False  # the market opens again
    while position.ticket in rig.broker.positions:
        rig.clock.advance(MONITOR_INTERVAL)
    [completed] = completions(client.take())
    assert completed["data"]["new_account_balance"] == 10000.0 + completed["data"]["profit"]
    assert rig.session.closing == {}
    rig.clock.advance(60)
    assert rig.broker.closes.count(position.ticket) == len(asked_at) + 2  # never after it closed


# -- measured as the firms measure, live -------------------------------------------------------

DAILY_5PCT = '[[phases]]\nmax_daily_loss_pct = 5\non_loss = "hold"\non_profit = "hold"\nsteps = [{ lot = 1 }]\n'


def walk_to(rig, when):
    """Move the clock to `when` a second at a time, as the reactor's own
    clock moves (one big step would run every loop late, at its end)."""
    while rig.clock.seconds() + 1 <= when:
        rig.clock.advance(1)
    rig.clock.advance(when - rig.clock.seconds())


def open_sell(rig, client):
    rig.strategy.queue("EURUSD", SELL_EURUSD)
    rig.clock.advance(SIGNAL_INTERVAL)
    assert client.take()[-1] == messages.trade_placed("EURUSD")


def test_a_new_day_starts_from_the_balance_and_equity_read_at_the_reset_instant(inline_store, tmp_path):
    rig = Rig(inline_store, symbols=("EURUSD",), plan=plan_file(tmp_path, "daily", DAILY_5PCT))
    client = rig.stream()
    client.take()
    rig.clock.advance(DAY - 120 - rig.clock.seconds())
    open_sell(rig, client)  # SELL 1.00 at 1.08500, stop 1.08700
    rig.broker.set_bid("EURUSD", "1.08650")  # the ask 1.08660: 160 down at midnight
    walk_to(rig, DAY + 0.5)  # the reset timer reads the account at 00:00
    rig.broker.set_bid("EURUSD", "1.08700")  # 00:00:30: the stop fills, 200 lost
    walk_to(rig, DAY + 30)
    assert messages.TRADE_COMPLETED in [m["message"] for m in client.take()]
    state = inline_store.run(thd_plan_state, rig.account.id).result
    # the day began at 10,000 with equity 9,840, not at the 9,800 seen after the stop
    assert (state.day, state.day_start_balance, state.day_start_equity) == ("1970-01-02", Decimal(10000), Decimal(9840))
    [rollover] = [e for e in inline_store.run(thd_plan_events, rig.account.id).result if e.kind == DAY_ROLLOVER]
    assert rollover.at == DAY


def test_without_the_reset_reading_the_days_start_is_the_balance_less_what_closed_since(inline_store, tmp_path):
    rig = Rig(inline_store, symbols=("EURUSD",), plan=plan_file(tmp_path, "daily", DAILY_5PCT))
    client = rig.stream()
    client.take()
    rig.clock.advance(DAY - 120 - rig.clock.seconds())
    open_sell(rig, client)
    rig.session.stopService()  # the server is down over midnight
    rig.clock.advance(DAY - rig.clock.seconds() + 30)
    rig.broker.set_bid("EURUSD", "1.08700")  # 00:00:30: the stop fills while it is down
    rig.clock.advance(30)
    rig.session = rig.new_session()  # 00:01: back; the close is found and completed
    rig.clock.advance(MONITOR_INTERVAL)
    state = inline_store.run(thd_plan_state, rig.account.id).result
    assert (state.day, state.day_start_balance) == ("1970-01-02", Decimal(10000))  # 9,800 + the 200 lost since
    assert inline_store.account_by_name("alice").result.balance == Decimal(9800)


def test_equity_counts_positions_on_the_account_that_are_not_the_programs(inline_store, tmp_path):
    rig = Rig(inline_store, symbols=("EURUSD",), plan=plan_file(tmp_path, "tight", ONE_LOT_DAILY_1PCT))
    client = rig.stream()
    client.take()
    rig.broker.foreign_floating = Decimal(-150)  # a trade opened by hand, 150 down: equity 9,850
    rig.strategy.queue("EURUSD", SELL_EURUSD)
    rig.clock.advance(SIGNAL_INTERVAL)
    assert client.take()[-1] == messages.trade_skipped(
        "EURUSD", "the daily loss limit was reached; trading resumes next day"
    )
    assert rig.broker.orders == []


def test_a_second_trade_leaves_room_for_the_first_ones_stop(inline_store, tmp_path):
    rig = Rig(inline_store, plan=plan_file(tmp_path, "daily", DAILY_5PCT))
    inline_store.update_account("alice", {"max_open_trades": 2})
    rig.session.stopService()
    rig.session = rig.new_session()
    client = rig.stream()
    client.take()
    rig.strategy.queue("EURUSD", SELL_EURUSD)
    rig.strategy.queue("XAUUSD", Signal(SELL, Decimal("5.00"), Decimal("10.00")))  # 500 a lot at its stop
    rig.clock.advance(SIGNAL_INTERVAL)
    first, second = rig.broker.orders
    assert first.volume == Decimal("1.00")
    # 500 of room (5% of 10,000) from equity 9,990, less the 190 the first would
    # still lose at its stop: 300, so 0.60 lot, not 0.98
    assert (second.symbol, second.volume) == ("XAUUSD", Decimal("0.60"))


def test_a_trade_closed_at_zero_is_a_loss_to_the_client_and_a_breakeven_to_the_ladder(inline_store, tmp_path):
    two = '[[phases]]\non_loss = "next"\non_profit = "reset"\nsteps = [{ lot = 1 }, { lot = 2 }]\n'
    rig = Rig(inline_store, symbols=("EURUSD",), plan=plan_file(tmp_path, "two", two))
    client = rig.stream()
    client.take()
    open_sell(rig, client)
    rig.broker.set_bid("EURUSD", "1.08490")  # the ask is back at the entry, 1.08500
    [ticket] = rig.broker.positions
    rig.broker.close_position(ticket)  # closed by hand at zero
    rig.clock.advance(MONITOR_INTERVAL)
    [done] = [m["data"] for m in client.take() if m["message"] == messages.TRADE_COMPLETED]
    assert (done["profit"], done["result"]) == (0.0, "loss")  # the seed's contract
    assert (done["current_phase"], done["current_step"]) == (1, 1)  # on_breakeven: hold, not next


def test_the_operators_plan_change_is_applied_by_the_running_session_at_its_next_check(inline_store, tmp_path, capsys):
    from tradebot.cli import main as admin
    from tradebot.plans.engine import FAILED, PLAN_SET

    tight = '[[phases]]\nmax_loss_pct = 1\non_loss = "hold"\nsteps = [{ lot = 1 }]\n'
    rig = Rig(inline_store, symbols=("EURUSD",), plan=plan_file(tmp_path, "loose", ONE_LOT))
    client = rig.stream()
    client.take()
    lose_one_lot(rig, client)  # 200 lost under a plan with no limit...
    inline_store.update_account("alice", {"plan": plan_file(tmp_path, "tight", tight)})
    rig.clock.advance(SIGNAL_INTERVAL)  # ...then one whose 9,900 floor that loss broke: the phase fails
    assert inline_store.run(thd_plan_state, rig.account.id).result.status == FAILED
    url = str(inline_store.engine.url)
    assert admin(["--db", url, "account", "plan", "alice", "--restart", "--initial-capital", "20000",
                  "--reference-balance", "9800"]) == 0
    assert "queued: initial capital 20000, reference balance 9800, restart" in capsys.readouterr().out
    assert admin(["--db", url, "account", "show", "alice"]) == 0
    assert "queued, not applied yet" in capsys.readouterr().out
    rig.strategy.queue("EURUSD", SELL_EURUSD)
    rig.clock.advance(SIGNAL_INTERVAL)  # the session sees the change, applies it, and trades again
    assert client.take()[-1] == messages.trade_placed("EURUSD")
    state = inline_store.run(thd_plan_state, rig.account.id).result
    assert (state.status, state.initial_capital, state.phase_start_balance) == ("active", Decimal(20000), Decimal(9800))
    [event] = [e for e in inline_store.run(thd_plan_events, rig.account.id).result if e.kind == PLAN_SET]
    assert "phase restarted" in event.detail
    assert admin(["--db", url, "account", "show", "alice"]) == 0
    assert "queued, not applied yet" not in capsys.readouterr().out
