"""
The plan's risk gate end to end: `twistd tradebot`'s service on the paper
broker, a real database file, a real websocket client over a real socket.
"""

import pytest_twisted

from tradebot.cli import main as admin
from tradebot.store.db import SyncStore
from tradebot.store.planstore import thd_plan_state
from tradebot.trading import messages

from .test_e2e import close, start_server
from .wsclient import connect, message_is

# an overall limit of 0.01% of 10000: 1.00 of room, less than any stop of 0.01 lot risks
TIGHT = 'name = "tight"\n[[phases]]\nmax_loss_pct = 0.01\nsteps = [{ lot = 1 }]\n'


@pytest_twisted.ensureDeferred
async def test_a_signal_the_limits_leave_no_room_for_is_skipped_and_told(db_url, capsys, tmp_path):
    plan = tmp_path / "tight.toml"
    plan.write_text(TIGHT)
    assert admin(["--db", db_url, "account", "add", "alice", "--symbols", "XAUUSD,EURUSD", "--plan", str(plan)]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    service, url = await start_server(db_url)
    try:
        client = await connect(url + "?" + token)
        await client.wait_for(lambda m: True)
        client.send({"msg": "ping"})
        skipped = await client.wait_for(message_is(messages.TRADE_SKIPPED), timeout=60)
        assert skipped["status"] is False
        assert set(skipped["data"]) == {"symbol", "reason"}
        assert skipped["data"]["reason"].endswith("left under the overall loss limit")
        assert not [m for m in client.received if m["message"] == messages.TRADE_PLACED]
        store = SyncStore(db_url)
        try:
            assert store.trades("alice") == []  # no intent...
            account = store.account_by_name("alice")
            # a plan moved by nothing yet is not written: started again, it is the same
            assert store.run(thd_plan_state, account.id) is None
        finally:
            store.close()
        broker = service.backend.broker_for(str(account.id), None)
        assert broker.positions == {} and len(broker.closed) == 0  # ...and no order
        await close(client)
    finally:
        await service.stopService()
