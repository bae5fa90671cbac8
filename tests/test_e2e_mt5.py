"""
End to end on MetaTrader 5: the plugin's service with a paper account and an
account trading through its own terminal, the MT5 broker worker as a real
process importing the fake MetaTrader5 module, a FakeTerminal served from this
test, real websocket clients.
"""

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from tradebot.cli import main as admin
from tradebot.store import records
from tradebot.store.db import SyncStore
from tradebot.trading import messages

from .test_e2e import start_server
from .test_mt5_links import PATH, Terminal, fake_environment, wait_until
from .wsclient import connect, message_is


@pytest.fixture
def terminal(monkeypatch):
    """A fake terminal whose market moves half an hour every half second,
    reachable by the worker processes the server starts. (Whole half hours
    keep its clock a whole number of half hours off the real one, as a broker's
    server clock is: the broker measures that offset.)"""
    terminal = Terminal()
    for key, value in fake_environment(terminal.address).items():
        monkeypatch.setenv(key, value)
    terminal.mover = mover = task.LoopingCall(terminal.fake.advance, 1800)
    mover.start(0.5)
    yield terminal
    if mover.running:
        mover.stop()
    pytest_twisted.blockon(terminal.stop())


def add(db_url, capsys, name, *extra):
    assert admin(["--db", db_url, "account", "add", name, "--symbols", "EURUSD,XAUUSD", *extra]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def mt5_url(call_timeout=30):
    return f"mt5://?path={PATH}&heartbeat=0.3&call_timeout={call_timeout}"


@pytest_twisted.ensureDeferred
async def test_a_whole_cycle_on_an_mt5_terminal_through_the_worker(db_url, capsys, terminal):
    token = add(db_url, capsys, "mia", "--broker-url", mt5_url())
    service, url = await start_server(db_url, signal_interval="0.3", monitor_interval="0.2")
    try:
        client = await connect(url + "?" + token)
        assert (await client.wait_for(lambda m: True))["symbols"] == ["EURUSD", "XAUUSD"]
        client.send({"msg": "ping"})
        placed = await client.wait_for(message_is(messages.TRADE_PLACED), timeout=60)
        symbol = placed["data"]["symbol"]
        done = await client.wait_for(message_is(messages.TRADE_COMPLETED, symbol=symbol), timeout=90)
        store = SyncStore(db_url)
        trades = [t for _, t in store.trades("mia")]
        store.close()
        [trade] = [t for t in trades if t.id == done["data"]["trade_id"]]
        assert trade.status == records.CLOSED and trade.comment == f"tb-{trade.id}"
        deals = terminal.fake.history_deals_get(position=trade.ticket)
        assert {d.comment for d in deals if d.entry == 0} == {trade.comment}
        realised = sum(d.profit + d.commission + d.swap + d.fee for d in deals)
        assert done["data"]["profit"] == round(realised, 2) == float(trade.profit)
        assert done["data"]["new_account_balance"] == terminal.fake.account_info().balance
        assert trade.close_reason in ("sl", "tp")
        # one order per trade, never resent
        comments = [o.comment for o in terminal.fake.history_orders_get(0, 2**40) if o.comment.startswith("tb-")]
        assert sorted(comments) == sorted(t.comment for t in trades if t.ticket is not None)
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_hung_worker_never_stalls_another_accounts_stream(db_url, capsys, terminal):
    paper_token = add(db_url, capsys, "pat")
    mt5_token = add(db_url, capsys, "mia", "--broker-url", mt5_url(call_timeout=1.5))
    service, url = await start_server(db_url, signal_interval="0.3", monitor_interval="0.2")
    try:
        pat = await connect(url + "?" + paper_token)
        mia = await connect(url + "?" + mt5_token)
        for client in (pat, mia):
            client.send({"msg": "ping"})
        # both stream; pat has an open paper trade reported every 0.2 s
        await pat.wait_for(message_is(messages.ACTIVE_TRADE), timeout=60)
        await mia.wait_for(message_is(messages.CHECKING), timeout=60)

        terminal.server.hold()  # the terminal stops answering: the worker hangs
        went_away = await mia.wait_for(message_is(messages.BROKER_UNAVAILABLE), timeout=30)
        assert "no answer from the terminal within 1.5 s" in went_away["data"]["reason"]
        hang_started = len(pat.received)
        arrivals = []
        pat.onMessage_original = pat.onMessage

        def timed(payload, binary):
            arrivals.append(reactor.seconds())
            pat.onMessage_original(payload, binary)

        pat.onMessage = timed
        # let the worker be killed and replaced (and hang again) twice
        for _ in range(2):
            before = service.backends.backends[1].link.generation
            await wait_until(lambda: service.backends.backends[1].link.generation > before)
        terminal.server.release()
        await mia.wait_for(message_is(messages.BROKER_AVAILABLE), timeout=30)
        pat.onMessage = pat.onMessage_original

        # pat's stream went on at its pace all along
        assert len(pat.received) > hang_started and len(arrivals) >= 10
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
        assert max(gaps) < 1.0, gaps
        # mia heard once that the broker went away, and once that it is back
        texts = [m["message"] for m in mia.received]
        assert texts.count(messages.BROKER_UNAVAILABLE) == 1 and texts.count(messages.BROKER_AVAILABLE) == 1
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_restart_settles_what_happened_at_the_terminal_while_the_server_was_down(db_url, capsys, terminal):
    token = add(db_url, capsys, "mia", "--broker-url", mt5_url())
    service, url = await start_server(db_url, signal_interval="0.3", monitor_interval="0.2")
    try:
        client = await connect(url + "?" + token)
        client.send({"msg": "ping"})
        placed = await client.wait_for(message_is(messages.TRADE_PLACED), timeout=60)
        # the market holds still until the trader's close below, so the trade
        # cannot meet its stop or target first
        terminal.mover.stop()
        client.sendClose()
        await client.closed
    finally:
        await service.stopService()
    store = SyncStore(db_url)
    [trade] = [t for _, t in store.trades("mia") if t.status == records.OPEN]
    account_id = store.account_by_name("mia").id
    store.close()
    assert trade.symbol == placed["data"]["symbol"]

    # while the server is down: the trader closes the trade by hand, and an order
    # of this account's that the store never heard of is filled
    terminal.fake.close_by_hand(trade.ticket)
    assert terminal.fake.initialize()  # the fake has one IPC link; the stopped worker shut it
    terminal.fake.symbol_select("XAUUSD", True)
    tick = terminal.fake.symbol_info_tick("XAUUSD")
    orphan = terminal.fake.order_send({
        "action": 1, "symbol": "XAUUSD", "volume": 0.01, "type": 0, "price": tick.ask,
        "sl": round(tick.bid - 30, 2), "tp": round(tick.bid + 30, 2), "deviation": 50,
        "magic": 234000 + account_id, "comment": "tb-9999", "type_filling": 1,
    })
    assert orphan.retcode == 10009
    terminal.mover.start(0.5)

    service, url = await start_server(db_url, signal_interval="0.3", monitor_interval="0.2")
    try:
        client = await connect(url + "?" + token)
        client.send({"msg": "ping"})
        done = await client.wait_for(message_is(messages.TRADE_COMPLETED, trade_id=trade.id), timeout=30)
        deals = terminal.fake.history_deals_get(position=trade.ticket)
        assert done["data"]["profit"] == round(sum(d.profit + d.commission + d.swap + d.fee for d in deals), 2)
        adopted = await client.wait_for(
            lambda m: m["message"] == messages.ACTIVE_TRADE and m["data"]["trade_id"] != trade.id, timeout=30
        )
        assert adopted["data"]["symbol"] == "XAUUSD" and adopted["data"]["lot_size"] == 0.01
    finally:
        await service.stopService()
    store = SyncStore(db_url)
    trades = {t.id: t for _, t in store.trades("mia")}
    store.close()
    assert trades[trade.id].close_reason == "manual" and trades[trade.id].status == records.CLOSED
    [copy] = [t for t in trades.values() if t.ticket == orphan.order]
    assert copy.comment == "tb-9999" and copy.status in (records.OPEN, records.CLOSED)
    # nothing was ever sent twice: one order per trade, and the orphan's own
    assert terminal.fake.initialize()
    comments = [o.comment for o in terminal.fake.history_orders_get(0, 2**40) if o.comment.startswith("tb-")]
    assert sorted(comments) == sorted(t.comment for t in trades.values() if t.ticket is not None)
