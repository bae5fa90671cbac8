"""
One MetaTrader5 API call, made where the module lives, answered in builtin
values that cross a pipe or a socket as JSON.

`perform` runs in the broker worker process and, sent as source, on the Windows
Python behind an mt5linux bridge; so this module imports nothing of tradebot's
and keeps to what Python 3.6 understands.

The answer is a dict:

- ``{"value": v}``: the call's result, with struct-sequences turned into dicts
  (their ``_asdict()``), tuples of them into lists, and numpy record arrays
  (rates, ticks) into a dict of column lists;
- ``{"value": None or False, "error": [code, message]}``: the call failed and
  ``last_error()`` says why, read at once since it is process-global;
- ``{"raised": "TypeError: ..."}``: the call raised instead of answering.
"""

import json

#: The API functions a caller may name; anything else is refused unread.
CALLS = frozenset(
    """initialize login shutdown version last_error account_info terminal_info
    symbol_info symbol_info_tick symbol_select symbols_get symbols_total
    copy_rates_from copy_rates_from_pos copy_rates_range copy_ticks_from
    copy_ticks_range positions_get positions_total orders_get orders_total
    history_orders_get history_orders_total history_deals_get history_deals_total
    order_check order_send order_calc_margin order_calc_profit""".split()
)


def to_builtin(value):
    """`value` as JSON-ready builtins: struct-sequences as dicts, sequences as
    lists, record arrays as a dict of columns."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    as_dict = getattr(value, "_asdict", None)
    if as_dict is not None:
        return {key: to_builtin(item) for key, item in as_dict().items()}
    dtype = getattr(value, "dtype", None)
    if dtype is not None:
        if dtype.names:
            return {name: value[name].tolist() for name in dtype.names}
        return value.tolist()
    if isinstance(value, dict):
        return {str(key): to_builtin(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_builtin(item) for item in value]
    item = getattr(value, "item", None)  # a numpy scalar
    if item is not None:
        return item()
    return str(value)


def perform(module, name, args, kwargs):
    """Call ``module.<name>(*args, **kwargs)`` and describe the outcome as
    builtins (see the module docstring)."""
    if name not in CALLS:
        return {"raised": "ValueError: not a MetaTrader5 API call: %r" % (name,)}
    try:
        value = getattr(module, name)(*args, **kwargs)
    except Exception as e:  # the answer must cross back whatever happened
        return {"raised": "%s: %s" % (type(e).__name__, e)}
    if value is None or value is False:
        error = module.last_error()
        return {"value": value, "error": [int(error[0]), str(error[1])]}
    return {"value": to_builtin(value)}


def perform_json(module, line):
    """`perform` for one JSON request ``{"id", "name", "args", "kwargs"}``,
    answered as one JSON line carrying the same id."""
    request = json.loads(line)
    answer = perform(module, request["name"], request.get("args", []), request.get("kwargs", {}))
    answer["id"] = request.get("id")
    return json.dumps(answer)
