from twisted.application.service import ServiceMaker

tradebot = ServiceMaker(
    "tradebot",
    "tradebot.tap",
    "The tradebot auto-trading server for MetaTrader 5 accounts.",
    "tradebot",
)
