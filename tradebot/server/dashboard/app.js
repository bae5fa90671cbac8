// The tradebot dashboard: the same websocket as the apps, plus the account's
// trade history from GET /api/trades (the token in an Authorization header).
// No framework, nothing from a CDN: the server serves this file.
"use strict";

const MESSAGES_KEPT = 200;
const WELCOME = "You are now receiving messages";
const ACTIVE = "active trade in progress";
const COMPLETED = "Trade completed";
const UNAVAILABLE = "broker unavailable";
const AVAILABLE = "broker available";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("tradebot-token");
let socket = null;
let retryDelay = 1;
let retryTimer = null;
const openTrades = new Map();

function money(value) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(2);
}

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.className = "status " + kind;
}

function log(message) {
  const item = document.createElement("li");
  const time = new Date().toLocaleTimeString();
  item.textContent = `${time} ${message.message}` + (message.data ? " " + JSON.stringify(message.data) : "");
  const list = $("log");
  list.insertBefore(item, list.firstChild);
  while (list.children.length > MESSAGES_KEPT) list.removeChild(list.lastChild);
}

function connect() {
  clearTimeout(retryTimer);
  if (!token) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  setStatus("connecting…", "idle");
  socket = new WebSocket(`${scheme}//${location.host}/ws/check/premium/?${encodeURIComponent(token)}`);
  let opened = false;
  socket.onopen = () => {
    opened = true;
    retryDelay = 1;
    setStatus("live", "live");
    socket.send(JSON.stringify({ msg: "ping" }));
    loadHistory();
  };
  socket.onmessage = (event) => handle(JSON.parse(event.data));
  socket.onclose = (event) => {
    socket = null;
    if (!token) return; // signed out
    if (!opened) loadHistory(); // refused at the handshake: a bad token signs out
    setStatus(`disconnected (${event.code}); reconnecting in ${retryDelay} s`, "down");
    retryTimer = setTimeout(connect, retryDelay * 1000);
    retryDelay = Math.min(retryDelay * 2, 15);
  };
}

function handle(message) {
  log(message);
  const data = message.data || {};
  switch (message.message) {
    case WELCOME:
      $("symbols").textContent = message.symbols.join(", ");
      break;
    case ACTIVE:
      openTrades.set(data.trade_id, data);
      renderOpenTrades();
      break;
    case COMPLETED:
      openTrades.delete(data.trade_id);
      renderOpenTrades();
      $("phase-step").textContent = `${data.current_phase} / ${data.current_step}`;
      $("balance").textContent = money(data.new_account_balance);
      loadHistory();
      break;
    case UNAVAILABLE:
      $("broker").textContent = "unavailable: " + data.reason;
      break;
    case AVAILABLE:
      $("broker").textContent = "ok";
      break;
  }
}

function renderOpenTrades() {
  const box = $("open-trades");
  box.replaceChildren();
  if (openTrades.size === 0) {
    const empty = document.createElement("p");
    empty.className = "empty";
    empty.textContent = "none";
    box.appendChild(empty);
    return;
  }
  for (const [id, trade] of openTrades) {
    const card = document.createElement("div");
    card.className = "card";
    card.dataset.testid = "trade-card";
    card.dataset.tradeId = id;
    const fields = [
      ["title", `#${id} ${trade.trade_type} ${trade.lot_size} ${trade.symbol}`],
      ["Open", trade.open_price], ["SL", trade.stop_loss], ["TP", trade.take_profit],
      ["Now", trade.curent_price], ["P&L", money(trade.profit)],
    ];
    for (const [label, value] of fields) {
      const cell = document.createElement("span");
      if (label === "title") {
        cell.className = "title";
        cell.textContent = value;
      } else {
        cell.textContent = `${label} ${value}`;
        if (label === "P&L") cell.className = trade.profit >= 0 ? "gain" : "loss";
      }
      card.appendChild(cell);
    }
    box.appendChild(card);
  }
}

async function loadHistory() {
  let response;
  try {
    response = await fetch("/api/trades", { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
  } catch (error) {
    return; // the websocket's reconnection covers a server that is away
  }
  if (response.status === 401) {
    signOut("that token is not valid");
    return;
  }
  if (!response.ok) return;
  const report = await response.json();
  $("account").textContent = report.account.name;
  $("symbols").textContent = report.account.symbols.join(", ");
  $("phase-step").textContent = `${report.account.phase} / ${report.account.step}`;
  $("balance").textContent = money(report.account.balance);
  renderHistory(report.trades);
  renderEquity(report.equity);
}

function renderHistory(trades) {
  const body = $("history");
  body.replaceChildren();
  for (const trade of trades.filter((t) => t.status === "closed").reverse()) {
    const row = document.createElement("tr");
    const cells = [
      trade.id, trade.symbol, trade.side, trade.lot_size, trade.open_price, trade.close_price,
      trade.close_reason, money(trade.profit), money(trade.balance_after),
      `${trade.phase_after} / ${trade.step_after}`, new Date(trade.closed_at * 1000).toLocaleString(),
    ];
    for (const value of cells) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.appendChild(cell);
    }
    row.dataset.testid = "history-row";
    row.dataset.tradeId = trade.id;
    body.appendChild(row);
  }
}

function renderEquity(points) {
  const svg = $("equity");
  svg.replaceChildren();
  if (points.length < 2) return;
  const values = points.map((p) => p.balance);
  const low = Math.min(...values), high = Math.max(...values);
  const span = high - low || 1;
  const xy = points.map((p, i) => [
    (i / (points.length - 1)) * 600,
    150 - ((p.balance - low) / span) * 140,
  ]);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#2563eb");
  line.setAttribute("stroke-width", "2");
  line.dataset.points = String(points.length);
  svg.appendChild(line);
}

function signOut(reason) {
  clearTimeout(retryTimer);
  sessionStorage.removeItem("tradebot-token");
  token = null;
  if (socket) socket.close();
  $("board").hidden = true;
  $("login").hidden = false;
  setStatus(reason, "down");
}

function start() {
  $("login").hidden = true;
  $("board").hidden = false;
  connect();
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  $("token").value = "";
  sessionStorage.setItem("tradebot-token", token);
  start();
});

if (token) start();
