"""
The admin command, ``tradebot``: manage accounts and their tokens, list trades,
set up a demo account and watch a websocket.

    tradebot [--db URL] [--broker URL] COMMAND ...

A new database is created by the first command; one with an older schema is
refused until ``tradebot db upgrade``.

Every command checks its arguments before it opens the database: a refused
command prints one ``tradebot: error: ...`` line on stderr, exits with 2 and
writes nothing. A token is printed only by ``account add``, ``account
rotate-token``, ``demo`` and ``admin-token``, alone on the last line (``demo``
also prints it inside the client URL), and never logged; so is a webhook
secret, by ``account set --webhook``.

A broker password is read from standard input (``--broker-password-stdin``),
never from the command line, and stored only encrypted under the key in
``$TRADEBOT_SECRET_KEY`` (``tradebot secret-key`` makes one).

The package: `checks` (arguments), `parser`, `accounts` (the account
commands, trades, demo, the admin token, the secret key), `show` (tables and
the plan state), `watch`, `command` (the commands by name, `main`).
"""

from tradebot.cli.command import main  # noqa: F401 (the console script: tradebot.cli:main)
