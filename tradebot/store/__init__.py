"""Persistence: the store, its schema and records, plan storage, database faults, secrets, migrations."""
