"""
Shutdown. ``twistd tradebot`` stopped by SIGTERM (as ``systemctl stop`` does)
while an order is on its way to the broker: the server stops accepting
connections, closes its clients with 1001, waits for the order's answer and
records the fill, exits cleanly, and a restart watches the open trade again
without sending a new order. The server is a real process; the MT5 account
trades on a fake terminal served from this test process, which holds the
order's answer back until the test has seen the server stop listening.

Then the parts on their own: a handshake that completes while the server
closes its connections, and a session stopped in the middle of its work
(driven by a Clock on the scripted market).
"""

import signal
from decimal import Decimal

import pytest
import pytest_twisted
from twisted.internet import defer, endpoints, error, protocol, reactor

from tradebot.broker import BUY
from tradebot.loops import STOP_WAIT
from tradebot.store import records
from tradebot.trading import messages

from .test_crashes import (  # noqa: F401 (fixtures)
    PING,
    add_account,
    check_completed,
    close_at_take_profit,
    completions,
    mt5_url,
    orders_sent,
    position_with,
    servers,
    stored,
    terminal,
    truth,
)
from .test_e2e import add_account as add_paper_account
from .test_e2e import start_server
from .test_loops import Rig, buy_xauusd
from .test_mt5_links import fake_environment
from .wsclient import connect, message_is


async def refused(port):
    """True if a TCP connection to 127.0.0.1:`port` is refused."""
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    try:
        connection = await endpoint.connect(protocol.Factory.forProtocol(protocol.Protocol))
    except error.ConnectionRefusedError:
        return True
    connection.transport.abortConnection()
    return False


@pytest_twisted.ensureDeferred
async def test_sigterm_with_an_order_under_way_closes_clients_records_the_fill_and_the_restart_resumes_it(
    db_url, capsys, terminal, servers
):
    token = add_account(db_url, capsys, "mia", "--broker-url", mt5_url())
    env = fake_environment(terminal.address)
    terminal.server.hold("order_send")  # the terminal takes its time over the order
    order_sent = terminal.server.next_call("order_send")

    first = servers.start(db_url, env=env)
    await first.listening()
    client = await connect(first.url(token))
    client.send(PING)
    await order_sent.addTimeout(60, reactor)
    terminal.mover.stop()
    first.signal("TERM")

    assert await client.closed == 1001
    # stopping: nothing new is accepted, while the server waits for the order
    assert await refused(first.port)
    assert first.running
    terminal.server.release()
    assert await first.end() in ((None, signal.SIGTERM), (0, None)), first.output()
    assert first.logged_errors() == []
    assert first.records()[-1]["text"] == "Server Shut Down."

    # the fill came back during the shutdown and was recorded
    _, trades, _ = stored(db_url, "mia")
    [trade] = [t for t in trades.values() if t.status != records.REFUSED]
    assert trade.status == records.OPEN, first.output()
    assert orders_sent(terminal) == [trade.comment]
    assert position_with(terminal, trade.comment).identifier == trade.ticket

    await terminal.server.idle()
    second = servers.start(db_url, env=env)
    await second.listening()
    again = await connect(second.url(token))
    again.send(PING)
    report = await again.wait_for(message_is(messages.ACTIVE_TRADE), timeout=30)
    assert report["data"]["trade_id"] == trade.id
    close_at_take_profit(terminal, trade.comment)
    done = await again.wait_for(message_is(messages.TRADE_COMPLETED, trade_id=trade.id), timeout=30)
    again.sendClose()
    await again.closed
    second.signal("TERM")
    assert await second.end() in ((None, signal.SIGTERM), (0, None)), second.output()
    assert second.logged_errors() == []

    account, trades, _ = stored(db_url, "mia")
    # still the one order: the restart watched the trade, it sent nothing new for it
    assert orders_sent(terminal) == sorted(t.comment for t in trades.values() if t.ticket is not None)
    assert orders_sent(terminal).count(trade.comment) == 1
    profit, close_price = truth(terminal, trades[trade.id].ticket)
    check_completed(account, trades[trade.id], done, profit, close_price)
    assert len(completions(client.received + again.received, trade.id)) == 1


@pytest_twisted.ensureDeferred
async def test_a_handshake_that_completes_while_the_server_closes_its_connections_is_refused(db_url, capsys):
    # a connection accepted just before the port closed may finish its
    # handshake after the others were closed with 1001: it is refused, not
    # opened to be dropped without a close code when the reactor stops
    token = add_paper_account(db_url, capsys)
    service, url = await start_server(db_url)
    try:
        before = await connect(url + "?" + token)
        await service.factory.close_all()
        assert await before.closed == 1001
        with pytest.raises(ConnectionError, match="503"):
            await connect(url + "?" + token)
    finally:
        await service.stopService()


def test_a_session_stopped_while_it_sizes_an_order_waits_for_that_work_and_sends_no_order(inline_store):
    rig = Rig(inline_store)
    buy_xauusd(rig)
    balance = defer.Deferred()
    rig.broker.balance = lambda: balance  # the lot is sized on a balance still on its way
    client = rig.stream()
    assert client.take()[-1] == messages.signal(BUY, "XAUUSD")

    stopped = rig.session.stopService()
    assert not stopped.called  # the work under way is waited for
    balance.callback(Decimal("10000"))
    assert stopped.called
    assert rig.broker.orders == [] and rig.trades() == []  # a stopping session starts no trade


def test_a_stopping_session_gives_up_on_work_that_never_ends(inline_store):
    rig = Rig(inline_store)
    buy_xauusd(rig)
    rig.broker.balance = lambda: defer.Deferred()  # no answer, ever
    rig.stream()
    stopped = rig.session.stopService()
    rig.clock.advance(STOP_WAIT - 0.1)
    assert not stopped.called
    rig.clock.advance(0.1)
    assert stopped.called
