"""
The broker worker: a process that owns one MetaTrader5 module, and with it one
terminal, and makes one API call at a time for the server.

The native module holds the GIL for the whole of each call, and a call can
block for a minute; in its own process it can only stall itself, and the
server kills and replaces it when it does. The server writes one JSON request
per line on stdin and reads one JSON answer per line on stdout (see
`tradebot.brokers.mt5.wire`). Anything else the module prints goes to stderr, which the
server logs. End of input means shut down.

Run as ``python -m tradebot.brokers.mt5.worker``; the module imported is
``MetaTrader5``, whichever one the Python path finds first.
"""

import os
import sys


def main() -> int:
    """Serve requests from stdin until it closes; the exit status."""
    # Keep the real stdout for answers and send every stray print to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", newline="\n")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr

    from tradebot.brokers.mt5.wire import perform_json

    try:
        import MetaTrader5 as module
    except ImportError as e:
        print(f"tradebot mt5 worker: cannot import MetaTrader5: {e}", file=sys.stderr, flush=True)
        return 2
    for line in sys.stdin:
        if line.strip():
            answers.write(perform_json(module, line) + "\n")
            answers.flush()
    try:
        module.shutdown()
    finally:
        answers.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
