from twisted.application.service import ServiceMaker

tradebot = ServiceMaker(
    "tradebot",
    "tradebot.server.tap",
    "The tradebot auto-trading server for MetaTrader 5 accounts.",
    "tradebot",
)
