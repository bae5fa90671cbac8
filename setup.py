"""Packaging for tradebot: the package, the admin command and the twistd plugin."""

from setuptools import setup

setup(
    name="tradebot",
    version="0.1.0",
    description="A self-hosted auto-trading server for MetaTrader 5 accounts, streamed over websockets.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=[
        "tradebot",
        "tradebot.migrations",
        "tradebot.migrations.versions",
        "tradebot.dashboard",
        "tradebot.mt5",
        "tradebot.plans",
        "twisted.plugins",
    ],
    package_data={"tradebot.plans": ["*.toml"], "tradebot.dashboard": ["*.html", "*.js", "*.css"]},
    include_package_data=True,
    install_requires=[
        "twisted[tls] >= 23.10",
        "autobahn[twisted] >= 23.1",
        "treq >= 23.11",
        "attrs >= 23.1",
        "SQLAlchemy >= 2.0",
        "alembic >= 1.12",
        "cryptography >= 3.4",
        "prometheus-client >= 0.17",
        "numpy >= 1.24",
        "matplotlib >= 3.5",
        'tomli >= 2.0; python_version < "3.11"',
    ],
    extras_require={
        # pywin32: Twisted's spawnProcess on Windows needs it to start the broker worker
        "mt5": ['MetaTrader5 >= 5.0.45; sys_platform == "win32"', 'pywin32; sys_platform == "win32"'],
        # the rpyc of the mt5linux server next to the terminal: 5.x for mt5linux 0.x, 6.x for 1.x
        "mt5linux": ["rpyc >= 5.2"],
        "test": ["pytest >= 7", "pytest-twisted >= 1.14", "rpyc >= 6.0", "psycopg[binary] >= 3.1", "playwright >= 1.40"],
        "postgres": ["psycopg[binary] >= 3.1"],
    },
    entry_points={"console_scripts": ["tradebot = tradebot.cli:main"]},
)
