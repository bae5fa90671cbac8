"""The web dashboard's files (``index.html``, ``app.js``, ``app.css``),
served by `tradebot.server.web` from the installed package: nothing from a CDN."""
