"""The trading sessions' parts: placement, watching, delivery, plan state, market data, alerts."""
