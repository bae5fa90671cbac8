"""The server: the service tree (``twistd tradebot``), its HTTP side and its operations."""
