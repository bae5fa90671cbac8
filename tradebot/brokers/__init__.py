"""The brokers: the registry by URL, the paper broker and MetaTrader 5."""
