// The operator view: asks for the cluster secret (kept in this tab's sessionStorage), then
// polls GET /v1/ops once a second with Authorization: Bearer and draws what it answers.
// Every value goes into the page as text (textContent), never as HTML.

const KEY = "zonechat.ops.secret";
const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);
let generation = 0;          // a new secret or a 401 stops the previous polling loop

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

function num(v) {
  if (v === null || v === undefined) return "–";
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

function pairs(map) {
  const keys = Object.keys(map || {}).filter((k) => map[k]);
  return keys.length ? keys.sort().map((k) => `${k} ${map[k]}`).join(", ") : "–";
}

function age(node) {
  if (node.age_s === null || node.age_s === undefined) return "no report";
  return `${node.age_s.toFixed(1)} s ago`;
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
  const drops = `live ${num(g.live_dropped)} · held ${num(g.held_dropped)} · bus ${num(g.bus_drops)}`;
  return row(g, [
    ["node", g.node], ["sessions", num(g.sessions)], ["users", num(g.users)],
    ["rooms", num(g.rooms)], ["in_per_s", num(g.in_per_s)], ["out_per_s", num(g.out_per_s)],
    ["frames_in", num(g.frames_in)], ["frames_out", num(g.frames_out)],
    ["drops", g.age_s === null ? "–" : drops], ["kicks", pairs(g.kicks)], ["age", age(g)],
  ]);
}

function zoneRow(z) {
  return row(z, [
    ["node", z.node], ["slots", num(z.slots)], ["stored_per_s", num(z.stored_per_s)],
    ["stored", num(z.stored)], ["errors", pairs(z.errors)], ["queue", num(z.queue)],
    ["bus_drops", num(z.bus_drops)], ["age", age(z)],
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
    ["at", new Date(a.at).toLocaleTimeString()], ["action", a.action], ["args", a.args],
  ]);
}

function renderSummary(d) {
  const c = d.center || {};
  const counters = c.counters || {};
  $("c-online").textContent = num(c.online);
  $("c-rooms").textContent = num(c.rooms);
  $("c-dlv").textContent = `${num(counters.dlv || 0)} / ${num(counters.rdlv || 0)}`;
  $("c-drops").textContent = num(c.bus_drops);
  const r = d.redis || {};
  $("redis-used").textContent = r.used_memory_human || (r.error ? "unavailable" : "–");
  $("redis-more").textContent = r.used_memory_peak_human
    ? `peak ${r.used_memory_peak_human} · ${num(r.used_memory)} bytes` : (r.error || "");
}

function render(d) {
  renderSummary(d);
  fill("gates", (d.gates || []).map(gateRow), "no gates configured");
  fill("zones", (d.zones || []).map(zoneRow), "no zones configured");
  fill("actions", (d.actions || []).map(actionRow), "no admin actions since center started");
  $("updated").textContent = `updated ${new Date(d.at).toLocaleTimeString()}`;
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

async function poll(gen) {
  if (gen !== generation) return;
  try {
    const resp = await fetch("/v1/ops", {
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
  if (gen === generation) setTimeout(() => poll(gen), POLL_MS);
}

function start() {
  generation += 1;
  $("auth-view").hidden = true;
  $("ops-view").hidden = false;
  $("forget").hidden = false;
  setStatus("offline", "connecting");
  poll(generation);
}

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
