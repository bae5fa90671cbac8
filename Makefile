# The quick start: `make run` (a demo server) and `make test` (the whole suite).
# Each sets up its own virtualenv in .venv first; only Python 3.9+ is needed.

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

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e . --config-settings editable_mode=compat
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=compat
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

clean:
	rm -rf $(VENV) build *.egg-info
