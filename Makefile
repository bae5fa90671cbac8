# The quick start: `make run` (a demo server) and `make test` (the whole suite).
# Each sets up the virtualenv in .venv first; only Python 3.9+ is needed.
# tradebot is installed into it as a user installs it (`pip install .`, not
# editable), again whenever a file of the package changes. The tests run the
# checkout's code whatever is installed (tests/conftest.py); for development,
# `pip install -e '.[test]'` in a virtualenv of your own works as well.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DB ?= sqlite:///tradebot.sqlite
PORT ?= 8000
# The demo runs the paper market 30x faster than real time and checks for
# signals every 3 s, so a whole trade cycle shows within a minute.
DEMO_BROKER ?= paper://?seed=7&speed=30
DEMO_SIGNAL_INTERVAL ?= 3

.PHONY: run test bench clean

# what the installed package is built from
PACKAGE_FILES := setup.py pyproject.toml README.md \
	$(shell find tradebot twisted/plugins -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -name dropin.cache)

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	touch $@

# build/ is removed first: setuptools would otherwise carry files deleted
# from the checkout over from an earlier build into the new one
$(VENV)/.installed: $(VENV)/.created $(PACKAGE_FILES)
	rm -rf build
	$(BIN)/pip install --quiet .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	rm -rf build
	$(BIN)/pip install --quiet '.[test]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/tradebot --db '$(DB)' demo --port $(PORT)
	$(BIN)/twistd --nodaemon --pidfile= tradebot --db '$(DB)' --port tcp:$(PORT) \
	    --broker '$(DEMO_BROKER)' --signal-interval $(DEMO_SIGNAL_INTERVAL) --monitor-interval 1

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest

bench: $(VENV)/.test-installed
	$(BIN)/python bench/close_latency.py
	$(BIN)/python bench/idle_memory.py
	$(BIN)/python bench/fanout_cpu.py
	$(BIN)/python bench/mt5_worker.py
	$(BIN)/python bench/slow_clients.py
	$(BIN)/python bench/backtest.py
	$(BIN)/python bench/api_trades.py

clean:
	rm -rf $(VENV) build *.egg-info
