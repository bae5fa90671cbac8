"""The money-management plans shipped with tradebot, as TOML files."""
