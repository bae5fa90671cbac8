"""
How the admin command shows things: tables of accounts and trades, amounts
to cents, an account's plan state with its headroom and history, its
broker's name as the server's logs give it.
"""

import json
import time
from decimal import Decimal
from typing import Iterable, List, Optional, Sequence


def plain(value) -> str:
    """`value` as table text: a Decimal in plain notation (never with an
    exponent), None as ``-``, a bool as yes/no."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        text = format(value, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text or "0"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A text table: a header line, a rule, then one line per row, columns
    padded to their widest cell."""
    cells = [list(headers)] + [[plain(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


ACCOUNT_HEADERS = (
    "name", "symbols", "plan", "phase", "step", "balance", "max open", "always-on", "revoked",
)


TRADE_HEADERS = (
    "id", "account", "symbol", "side", "status", "lot", "open price", "SL", "TP",
    "close price", "profit", "result", "phase/step",
)


def account_row(account) -> list:
    """The cells of one account in `account list`."""
    return [
        account.name,
        ",".join(account.symbols),
        account.plan,
        account.phase,
        account.step,
        _cents(account.balance),
        account.max_open_trades,
        account.always_on,
        account.revoked,
    ]


def _cents(value: Optional[Decimal]) -> Optional[str]:
    return None if value is None else format(value.quantize(Decimal("0.01")), "f")


def _prices(*values: Optional[Decimal]) -> List[Optional[str]]:
    """Prices of one trade with the same number of decimals (the store keeps
    1.08620 as 1.0862; its stop at 1.08639 shows the symbol has five)."""
    present = [v for v in values if v is not None]
    places = max((max(0, -v.as_tuple().exponent) for v in present), default=0)
    unit = Decimal(1).scaleb(-places)
    return [None if v is None else format(v.quantize(unit), "f") for v in values]


def trade_row(name: str, trade) -> list:
    """The cells of one trade in `trades` and `account show`: prices with
    the trade's decimals, the profit in cents."""
    return [
        trade.id,
        name,
        trade.symbol,
        trade.side,
        trade.status,
        trade.lot_size,
        *_prices(trade.open_price, trade.stop_loss, trade.take_profit, trade.close_price),
        _cents(trade.profit),
        trade.result,
        f"{trade.phase}/{trade.step}",
    ]


def _print_token(intro: str, token: str) -> None:
    print(intro)
    print(token)


def _broker_name(store, url) -> str:
    """What the server's logs, /health and /metrics call the account's broker."""
    from tradebot.broker import BrokerURL
    from tradebot.store import serverkeys

    if url is None:
        return "the server's broker (paper, or its own name)"
    parsed = BrokerURL.parse(url)
    if parsed.scheme not in ("mt5", "mt5linux"):
        return parsed.scheme
    from tradebot.brokers.mt5.settings import settings_from_url, terminal_identity

    try:
        settings = settings_from_url(parsed)
    except ValueError as e:
        return f"(its URL is refused: {e})"
    return settings["name"] or serverkeys.broker_name(terminal_identity(settings), serverkeys.broker_name_key(store))


PLAN_EVENT_HEADERS = ("time (UTC)", "event", "phase", "step", "balance", "equity", "detail")


def _show_plan(store, account) -> None:
    """Print the account's plan state: status, the day and its starting
    balance, the headroom left under each limit at the stored balance, the
    target, and the history of plan events."""
    from tradebot.plans.engine import PlanEngine
    from tradebot.plans.files import load_plan
    from tradebot.plans.plan import PlanError
    from tradebot.store.planstore import thd_pending_plan_changes, thd_plan_events, thd_plan_state

    for _, changes in store.run(thd_pending_plan_changes, account.id):
        print(f"{'plan change:':17}queued, not applied yet: {json.dumps(changes)}")
    state = store.run(thd_plan_state, account.id)
    if state is None:
        print(f"{'plan state:':17}none yet (it starts at the account's first signal check)")
        return
    try:
        engine = PlanEngine(load_plan(account.plan))
    except PlanError as e:
        print(f"{'plan state:':17}its plan does not load: {e}")
        return
    plan = engine.plan
    phase = plan.phase_at(state.phase)
    room = engine.headroom(state, account.balance, account.balance)
    target = engine.target(state)

    buffer = engine.buffer(state)
    kept = f"; {_cents(buffer)} kept back" if buffer else ""

    def limit(left, floor):
        return "no limit" if left is None else f"{_cents(left)} (equity floor {_cents(floor)}{kept})"

    fields = [
        ("plan status", f"{state.status}, phase {state.phase} ({phase.name}) step {state.step}"),
        ("trading day", f"{state.day} (starts {plan.day_reset_hour:02d}:00 {plan.time_zone})"),
        ("day start", f"{_cents(state.day_start_balance)} (equity {_cents(state.day_start_equity)})"),
        ("initial capital", _cents(state.initial_capital)),
        ("phase start", f"{_cents(state.phase_start_balance)} (the broker balance standing for the initial capital)"),
        ("daily headroom", limit(room.daily, engine.daily_floor(state))),
        ("total headroom", limit(room.overall, engine.overall_floor(state))),
        ("target", "none" if target is None else _cents(target)),
        ("trading days", f"{state.trading_days} (at least {phase.min_trading_days} before the target counts)"),
    ]
    for label, value in fields:
        print(f"{label + ':':17}{value}")
    events = store.run(thd_plan_events, account.id)
    if not events:
        print("plan events: none")
        return
    print("plan events:")
    rows = [
        [time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.at)), e.kind, e.phase, e.step,
         _cents(e.balance), _cents(e.equity), e.detail]
        for e in events
    ]
    print(table(PLAN_EVENT_HEADERS, rows))
