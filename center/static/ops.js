// The operator view: asks for the cluster secret (kept in this tab's sessionStorage), then
// polls GET /v1/ops once a second with Authorization: Bearer (after the first answer with
// ?since=<the newest second it has>, so only new history rows come) and draws what it answers:
// summary cards, the graphs of the last 15 minutes (ops_graphs.js), a table per role and
// the processes, the last admin actions; the forms send admin actions (ops_actions.js).
// Every value goes into the page as text (textContent), never as HTML.

import { Actions } from "./ops_actions.js";
import { Graphs } from "./ops_graphs.js";
import {
  DASH, ago, bytes, clock, duration, mergeHistory, millis, newestSecond, num, pairs, percent, rate,
} from "./ops_format.js";

const KEY = "zonechat.ops.secret";
const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);
let generation = 0;          // a new secret or a 401 stops the previous polling loop
let timer = null;
let inflight = false, again = false;
let history = null;          // the graphs' columns, topped up from each answer (?since=)
const graphs = new Graphs(document);

function setStatus(state, text) {
  const el = $("status");
  el.dataset.state = state;
  el.textContent = text || state;
}

function notice(text, kind = "error") {
  $("notice-text").textContent = text;
  $("notice").dataset.kind = kind;
  $("notice").hidden = !text;
}

function row(node, cells) {
  const tr = document.createElement("tr");
  if (node.node) tr.dataset.node = node.node;
  if (node.stale) tr.classList.add("stale");
  for (const [key, value] of cells) {
    const td = document.createElement("td");
    td.dataset.k = key;
    td.textContent = value;
    tr.appendChild(td);
  }
  return tr;
}

function gateRow(g) {
  const dropped = g.age_s === null ? DASH : num((g.live_dropped || 0) + (g.held_dropped || 0));
  return row(g, [
    ["node", g.node], ["sessions", num(g.sessions)], ["users", num(g.users)],
    ["rooms", num(g.rooms)], ["in_per_s", rate(g.in_per_s)], ["out_per_s", rate(g.out_per_s)],
    ["deliveries_per_s", rate(g.deliveries_per_s)], ["errors_per_s", rate(g.errors_per_s)],
    ["ack_p99_ms", millis(g.ack_p99_ms)], ["dropped", dropped], ["kicks", pairs(g.kicks)],
    ["age", ago(g)],
  ]);
}

function zoneRow(z) {
  return row(z, [
    ["node", z.node], ["slots", num(z.slots)], ["stored_per_s", rate(z.stored_per_s)],
    ["stored", num(z.stored)], ["errors_per_s", rate(z.errors_per_s)], ["errors", pairs(z.errors)],
    ["queue", num(z.queue)], ["age", ago(z)],
  ]);
}

function procRow(role, n) {
  return row(n, [
    ["node", n.node], ["role", role], ["cpu", percent(n.cpu_pct)], ["rss", bytes(n.rss)],
    ["fds", num(n.fds)], ["uptime", duration(n.uptime_s)], ["restarts", num(n.restarts)],
    ["bus_drops", num(n.bus_drops)], ["age", role === "center" ? "this node" : ago(n)],
  ]);
}

function fill(tableId, rows, empty) {
  const body = $(tableId).querySelector("tbody");
  if (rows.length) {
    body.replaceChildren(...rows);
    return;
  }
  const td = document.createElement("td");
  td.className = "empty";
  td.colSpan = $(tableId).querySelectorAll("th").length;
  td.textContent = empty;
  const tr = document.createElement("tr");
  tr.appendChild(td);
  body.replaceChildren(tr);
}

function actionRow(a) {
  return row({}, [
    ["at", clock(a.at)], ["action", a.what || a.action], ["about", a.about || ""], ["args", a.args],
  ]);
}

function renderSummary(d) {
  const c = d.center || {};
  const now = d.now || {};
  $("c-online").textContent = num(c.online);
  $("c-rooms").textContent = num(c.rooms);
  $("c-msgs").textContent = rate(now.msgs_per_s);
  $("c-deliveries").textContent = rate(now.deliveries_per_s);
  $("c-ack").textContent = millis(now.ack_p99_ms);
  $("c-errors").textContent = rate(now.errors_per_s);
  const r = d.redis || {};
  $("redis-used").textContent = r.used_memory_human || (r.error ? "unavailable" : DASH);
  $("redis-more").textContent = r.used_memory_peak_human ? `peak ${r.used_memory_peak_human}` : (r.error || "");
}

function renderHistory(d) {
  history = mergeHistory(history, d);
  const t = history.t || [];
  const span = t.length ? t[t.length - 1] - t[0] + 1 : 0;
  const total = d.history_seconds || 900;
  $("history-span").textContent = span >= total
    ? "one point a second"
    : `one point a second · ${duration(span)} kept so far (since center started), up to ${duration(total)}`;
  graphs.update(history);
}

function procRows(d) {
  const rows = [procRow("center", { ...(d.center || {}), age_s: 0, stale: false })];
  for (const role of ["gate", "zone", "dc", "login"]) {
    for (const n of d[`${role}s`] || []) rows.push(procRow(role, n));
  }
  return rows;
}

function render(d) {
  renderSummary(d);
  renderHistory(d);
  fill("gates", (d.gates || []).map(gateRow), "no gates configured");
  fill("zones", (d.zones || []).map(zoneRow), "no zones configured");
  fill("procs", procRows(d), "no nodes");
  fill("actions", (d.actions || []).map(actionRow), "no admin actions since center started");
  $("updated").textContent = `updated ${clock(d.at)}`;
}

function showAuth(message) {
  $("auth-view").hidden = false;
  $("ops-view").hidden = true;
  $("forget").hidden = true;
  setStatus("offline");
  if (message) notice(message);
  $("secret").focus();
}

function refused() {
  generation += 1;
  sessionStorage.removeItem(KEY);
  showAuth("The admin secret was refused (401 unauthorized). Enter the cluster secret again (zonechat admin secret prints it).");
}

async function fetchOps(gen) {
  try {
    const since = newestSecond(history);
    const resp = await fetch(since === null ? "/v1/ops" : `/v1/ops?since=${since}`, {
      headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` }, cache: "no-store",
    });
    if (resp.status === 401) { refused(); return; }
    if (!resp.ok) throw new Error(`the admin endpoint answered ${resp.status}`);
    const data = await resp.json();
    if (gen !== generation) return;
    render(data);
    setStatus("live");
    notice("");
  } catch (err) {
    setStatus("error", "retrying");
    notice(`Cannot reach center's admin endpoint: ${err.message}. Retrying every second.`);
  }
}

// One request at a time: a poll asked for while one is on its way (after an action)
// runs as soon as that one is back.
async function poll(gen) {
  if (gen !== generation || !sessionStorage.getItem(KEY)) return;
  if (inflight) { again = true; return; }
  inflight = true;
  clearTimeout(timer);
  try {
    await fetchOps(gen);
  } finally {
    inflight = false;
  }
  const next = again ? 0 : POLL_MS;
  again = false;
  if (sessionStorage.getItem(KEY)) timer = setTimeout(() => poll(generation), next);
}

function start() {
  generation += 1;
  $("auth-view").hidden = true;
  $("ops-view").hidden = false;
  $("forget").hidden = false;
  setStatus("offline", "connecting");
  poll(generation);
}

new Actions({
  secret: () => sessionStorage.getItem(KEY),
  refused,
  changed: () => poll(generation),
}).attach();

$("auth-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("secret").value);
  $("secret").value = "";
  notice("");
  start();
});

$("forget").addEventListener("click", () => {
  generation += 1;
  sessionStorage.removeItem(KEY);
  notice("");
  showAuth();
});

if (sessionStorage.getItem(KEY)) start(); else showAuth();
