"""
The MetaTrader 5 broker.

- `codes`: the module's return codes and what each means for an order.
- `wire`: one API call turned into builtin values, run wherever the module is.
- `worker`: the process that owns the native module (``mt5://``).
- `links`: how the server reaches the module: the worker process, the
  mt5linux bridge (``mt5linux://``), or in-process for tests.
- `backend`: the broker interface on top of a link.
"""
