"""
A stand-in for the ``MetaTrader5`` package, for a process the tests start (the
broker worker, an rpyc server standing in for mt5linux): put this folder first
on its ``PYTHONPATH`` and ``import MetaTrader5`` finds it.

Like the real module, it is a thin client of a terminal in another process: it
sends each API call to the `FakeTerminal` a test serves with
`tests.fakemt5.terminal_server` at ``$FAKE_MT5_TERMINAL`` (``host:port``) and
blocks until the answer comes, for up to ``$FAKE_MT5_IPC_TIMEOUT`` seconds
(default 60), after which the call fails with ``(-10005, 'IPC timeout')``.
Results come back as struct-sequences (attribute and index access,
``_asdict()``, no ``_fields``, no pickling) and numpy record arrays, failures
as None or False with `last_error()` set, exactly as the real module's.
"""

import datetime as _datetime
import json as _json
import os as _os
import socket as _socket

import fake_terminal as _fake
import numpy as _np

globals().update(_fake.MT5_CONSTANTS)

_connection = None
_last_error = (1, "Success")


class _Struct(tuple):
    """A struct-sequence: a tuple whose items are also attributes."""

    __slots__ = ()
    _names = ()

    def __new__(cls, fields):
        return super().__new__(cls, [fields[name] for name in cls._names])

    def __getattr__(self, name):
        try:
            return self[type(self)._names.index(name)]
        except ValueError:
            raise AttributeError(name) from None

    def _asdict(self):
        return dict(zip(type(self)._names, self))

    def __reduce_ex__(self, protocol):
        raise TypeError(f"cannot pickle '{type(self).__name__}' object")

    def __repr__(self):
        inner = ", ".join(f"{k}={v!r}" for k, v in self._asdict().items())
        return f"{type(self).__name__}({inner})"


_struct_types = {}


def _struct(name, fields):
    kind = _struct_types.get((name, tuple(fields)))
    if kind is None:
        kind = _struct_types[(name, tuple(fields))] = type(name, (_Struct,), {"__slots__": (), "_names": tuple(fields)})
    return kind({k: _decode(v) for k, v in fields.items()})


def _decode(value):
    if isinstance(value, dict):
        if "__struct__" in value:
            return _struct(value["__struct__"], value["fields"])
        if "__tuple__" in value:
            return tuple(_decode(v) for v in value["__tuple__"])
        if "__records__" in value:
            dtype = _np.dtype([tuple(d) for d in value["__records__"]["descr"]])
            return _np.array([tuple(r) for r in value["__records__"]["rows"]], dtype=dtype)
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _encode(value):
    if isinstance(value, _datetime.datetime):
        return value.timestamp()  # as the real module: a naive datetime is local time
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, _np.generic):  # crosses as its own type name, for the terminal to judge
        return {"__numpy__": type(value).__name__, "value": value.item()}
    return value


def _call(name, *args, **kwargs):
    global _connection, _last_error
    try:
        if _connection is None:
            host, port = _os.environ["FAKE_MT5_TERMINAL"].rsplit(":", 1)
            sock = _socket.create_connection((host, int(port)))
            sock.settimeout(float(_os.environ.get("FAKE_MT5_IPC_TIMEOUT", "60")))
            _connection = sock.makefile("rwb")
        request = {"name": name, "args": _encode(list(args)), "kwargs": _encode(kwargs)}
        _connection.write(_json.dumps(request).encode() + b"\n")
        _connection.flush()
        line = _connection.readline()
        if not line:
            raise ConnectionError("the terminal closed the pipe")
    except _socket.timeout:
        _connection = None
        _last_error = (-10005, "IPC timeout")
        return None
    except (OSError, KeyError):
        _connection = None
        _last_error = (-10004, "No IPC connection")
        return None
    answer = _json.loads(line)
    _last_error = tuple(answer["last_error"])
    if "raised" in answer:
        raise TypeError(answer["raised"])
    return _decode(answer["value"])


def last_error():
    """The (code, message) of the last call, kept in this process."""
    return _last_error


def _make(name):
    def call(*args, **kwargs):
        return _call(name, *args, **kwargs)

    call.__name__ = name
    return call


for _name in """initialize login shutdown version account_info terminal_info symbol_info
        symbol_info_tick symbol_select symbols_get symbols_total copy_rates_from
        copy_rates_from_pos copy_rates_range positions_get positions_total orders_get
        orders_total history_orders_get history_orders_total history_deals_get
        history_deals_total order_check order_send order_calc_margin order_calc_profit""".split():
    globals()[_name] = _make(_name)
