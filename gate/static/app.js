// The chat page: forms and rendering. The protocol lives in client.js.
import { ChatClient, NAME_RE, dmConv, explain, isRoom } from './client.js';

const $ = (id) => document.getElementById(id);
let current = null;          // the conversation on screen
let renderTimer = null;
let stickToBottom = false;   // the person just sent or opened a conversation
let pinned = true;           // the message list is scrolled to its end (kept on resizes)
const dirty = new Set();
const SHORT = { rate_limited: 'too fast', muted: 'you are muted', not_member: 'not a member',
  bad_conv: 'no such user', too_large: 'too long' };

const ui = {
  status(state) {
    const labels = { online: 'online', reconnecting: 'reconnecting…', offline: 'offline', connecting: 'connecting…' };
    $('status').dataset.state = state;
    $('status').textContent = labels[state] || state;
    const usable = (state === 'online' || state === 'reconnecting') && current !== null;
    $('text').disabled = !usable;
    $('send-btn').disabled = !usable;
  },
  welcome() {
    $('login-view').hidden = true;
    $('chat-view').hidden = false;
    $('logout').hidden = false;
    $('me').textContent = client.user;
    $('login-error').textContent = '';
    hideNotice();
    if (current === null && client.convs.has('sys')) select('sys');
    scheduleRender();
  },
  loggedOut(text) {
    current = null;
    $('chat-view').hidden = true;
    $('login-view').hidden = false;
    $('logout').hidden = true;
    $('me').textContent = '';
    $('login-error').textContent = text || '';
    if (client.user) $('user').value = client.user;
  },
  changed(convId) {
    dirty.add(convId);
    scheduleRender();
  },
  notice(text, opts = {}) {
    showNotice(text, opts);
  },
  sys(m) {
    $('sys-text').textContent = bodyText(m.body);
    $('sys-banner').hidden = false;
  },
};

const client = new ChatClient(ui);
window.zonechat = client;    // for debugging and the browser tests

// -- notices ---------------------------------------------------------------------------
function showNotice(text, { kind = 'error', action = null, onAction = null } = {}) {
  const box = $('notice');
  box.dataset.kind = kind;
  $('notice-text').textContent = text;
  box.querySelector('.action')?.remove();
  if (action) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'action';
    button.textContent = action;
    button.onclick = () => { hideNotice(); onAction(); };
    $('notice-close').before(button);
  }
  box.hidden = false;
}

function hideNotice() {
  $('notice').hidden = true;
}

// -- rendering -------------------------------------------------------------------------
function title(id) {
  if (id === 'sys') return 'System';
  if (id.startsWith('d:')) return id.slice(2).split(':').find((u) => u !== client.user) || client.user;
  if (id.startsWith('r:')) return `# ${id.slice(2)}`;
  if (id.startsWith('g:')) return `group ${id.slice(2)}`;
  return id;
}

function bodyText(body) {
  return typeof body === 'string' ? body : JSON.stringify(body);
}

function scheduleRender() {
  if (renderTimer === null) renderTimer = setTimeout(render, 0);
}

function render() {
  renderTimer = null;
  if (current !== null) client.conv(current).unread = 0;
  renderConvs();
  if (current !== null && (dirty.has(current) || dirty.has(null))) renderMessages();
  dirty.clear();
}

function renderConvs() {
  const ids = [...client.convs.keys()].sort((a, b) => (b === 'sys') - (a === 'sys'));
  const items = ids.map((id) => {
    const li = document.createElement('li');
    li.dataset.conv = id;
    li.setAttribute('aria-current', String(id === current));
    const name = document.createElement('span');
    name.textContent = title(id);
    li.append(name);
    const unread = client.conv(id).unread;
    if (unread > 0) {
      const badge = document.createElement('span');
      badge.className = 'unread';
      badge.textContent = String(unread);
      li.append(badge);
    }
    li.onclick = () => select(id);
    return li;
  });
  $('convs').replaceChildren(...items);
}

function messageItem(m, extra) {
  const li = document.createElement('li');
  li.className = `msg ${extra || ''}`.trim();
  if (m.from === client.user) li.classList.add('mine');
  if (m.from === 'system') li.classList.add('system');
  li.dataset.conv = m.conv;
  if (m.seq !== undefined) li.dataset.seq = String(m.seq);
  li.dataset.cid = m.cid || '';
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = m.ts ? new Date(m.ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '…';
  const from = document.createElement('span');
  from.className = 'from';
  from.textContent = m.from;
  const body = document.createElement('span');
  body.className = 'body';
  body.textContent = bodyText(m.body);
  li.append(meta, from, body);
  return li;
}

function pendingItem(e) {
  const li = messageItem({ conv: e.conv, from: client.user, body: e.body, cid: e.cid }, e.state);
  if (e.state === 'failed') {
    const why = document.createElement('span');
    why.className = 'why';
    why.textContent = `not sent: ${SHORT[e.code] || e.code}`;
    why.title = e.why;
    const retry = document.createElement('button');
    retry.type = 'button';
    retry.className = 'retry';
    retry.textContent = 'Retry';
    retry.onclick = () => client.trySend(e);
    li.append(why, retry);
  }
  return li;
}

function renderMessages() {
  const list = $('messages');
  const c = client.conv(current);
  const items = c.sorted().map((m) => messageItem(m));
  if (c.missed > 0) {
    const gap = document.createElement('li');
    gap.className = 'gap';
    gap.textContent = `${c.missed} earlier message(s) are no longer available.`;
    items.unshift(gap);
  }
  for (const e of client.outbox.values()) if (e.conv === current) items.push(pendingItem(e));
  list.replaceChildren(...items);
  if (pinned || stickToBottom) list.scrollTop = list.scrollHeight;
  stickToBottom = false;
}

function select(id) {
  current = id;
  stickToBottom = true;
  client.conv(id);
  $('conv-title').textContent = title(id);
  $('leave-btn').hidden = !isRoom(id);
  ui.status($('status').dataset.state);
  dirty.add(id);
  scheduleRender();
  client.fill(client.conv(id));
}

// -- forms -----------------------------------------------------------------------------
async function enter(register) {
  const user = $('user').value.trim();
  const password = $('password').value;
  $('login-error').textContent = '';
  if (!NAME_RE.test(user)) {
    $('login-error').textContent = explain({ code: 'bad_name' });
    return;
  }
  ui.status('connecting');
  try {
    await client.connect();
    if (register) await client.call('register', { user, password });
    await client.login({ user, password });
    $('password').value = '';
  } catch (err) {
    $('login-error').textContent = explain(err.reply || err);
    ui.status(client.loggedIn ? 'online' : 'offline');
  }
}

$('login-form').addEventListener('submit', (ev) => { ev.preventDefault(); enter(false); });
$('register-btn').addEventListener('click', () => {
  if ($('login-form').reportValidity()) enter(true);
});
$('notice-close').addEventListener('click', hideNotice);
$('messages').addEventListener('scroll', () => {
  const list = $('messages');
  pinned = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
});
$('sys-close').addEventListener('click', () => { $('sys-banner').hidden = true; });

$('logout').addEventListener('click', async () => {
  try {
    await client.logout();
  } catch {
    // offline already: forgetting the session is all there is to do
  }
  ui.loggedOut('');
  ui.status('offline');
});

$('dm-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const other = $('dm-user').value.trim();
  if (!NAME_RE.test(other) || other === client.user) {
    showNotice(other === client.user ? 'Pick someone other than yourself.' : explain({ code: 'bad_name' }));
    return;
  }
  $('dm-user').value = '';
  select(dmConv(client.user, other));
});

$('join-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const room = `r:${$('room-name').value.trim()}`;
  try {
    await client.join(room);
    $('room-name').value = '';
    select(room);
  } catch (err) {
    const reply = err.reply || err;
    showNotice(reply.code === 'unknown_type' ? 'Rooms are not available on this server yet.' : explain(reply));
  }
});

$('leave-btn').addEventListener('click', async () => {
  const room = current;
  current = null;
  $('conv-title').textContent = 'Pick a conversation';
  $('leave-btn').hidden = true;
  $('messages').replaceChildren();
  try {
    await client.leave(room);
  } catch (err) {
    showNotice(explain(err.reply || err));
  }
  scheduleRender();
});

$('send-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = $('text').value;
  if (!text.trim() || current === null) return;
  $('text').value = '';
  stickToBottom = true;
  client.send(current, text);
});

// A reload keeps the session (the token lives in this tab's sessionStorage).
const saved = JSON.parse(sessionStorage.getItem('zonechat') || 'null');
if (saved && saved.user && saved.token) {
  client.user = saved.user;
  client.token = saved.token;
  client.resume();
}
