"""
Packaging for tradebot: the package, its data files, the admin command and the
twistd plugin. `pyproject.toml` names the build system; `python -m build` (or
`pip wheel .`) makes one wheel and one sdist.

Every package under ``tradebot/`` is found, not listed, so a new one cannot be
left out; ``tests/test_package.py`` checks that the wheel holds every file of
the package tracked in git, and that the installed wheel runs outside the
checkout.
"""

from setuptools import find_packages, setup

setup(
    name="tradebot",
    version="0.1.0",
    description="A self-hosted auto-trading server for MetaTrader 5 accounts, streamed over websockets.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    # twisted/plugins is no package of ours (no __init__.py): the plugin module
    # is installed into Twisted's plugin folder
    packages=find_packages(include=["tradebot", "tradebot.*"]) + ["twisted.plugins"],
    package_data={
        "tradebot.plans": ["*.toml"],
        "tradebot.server.dashboard": ["*.html", "*.js", "*.css"],
        "tradebot.store.migrations": ["script.py.mako"],
    },
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
        # build: tests/test_package.py builds the wheel and the sdist as a user would
        "test": [
            "pytest >= 7", "pytest-twisted >= 1.14", "rpyc >= 6.0", "psycopg[binary] >= 3.1", "playwright >= 1.40",
            "build >= 1.0",
        ],
        "postgres": ["psycopg[binary] >= 3.1"],
    },
    entry_points={"console_scripts": ["tradebot = tradebot.cli:main"]},
)
