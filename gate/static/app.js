// The chat page: forms and rendering. The protocol lives in client.js, the wording of
// errors in errors.js.
import { ChatClient, NAME_RE, dmConv, explain, isRoom } from './client.js';
import { compose, deadline, detail, sentence } from './errors.js';

const $ = (id) => document.getElementById(id);
let current = null;          // the conversation on screen
let renderTimer = null;
let stickToBottom = false;   // the person just sent or opened a conversation
let pinned = true;           // the message list is scrolled to its end (kept on resizes)
let editing = null;          // {conv, seq}: the send box edits that own message
let typingTimer = null;      // hides "X is typing…" when it runs out
let friendsDirty = false;
const dirty = new Set();
const SHORT = { rate_limited: 'too fast', muted: 'you are muted', not_member: 'not a member',
  bad_conv: 'no such user', too_large: 'too long' };
const MEMBERS_MS = 10000;    // how often an open room's member count is asked again
const LINES_PER_ROOM = 20;   // "You joined / left" lines kept per room
const LINE_ROOMS = 100;      // rooms with such lines kept (least recently noted dropped)

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
    $('drawer-btn').hidden = false;
    $('me').textContent = client.user;
    $('me').title = client.user;
    $('login-error').textContent = '';
    notices.hide();
    if (current === null && client.convs.has('sys')) select('sys');
    scheduleRender();
  },
  loggedOut(text) {
    current = null;
    endEdit();
    renderTyping();
    $('friends').replaceChildren();
    $('my-status').value = '';
    $('appear-offline').checked = false;
    members.watch(null);
    roomLines.clear();
    notices.hide();
    drawer.set(false);
    $('chat-view').hidden = true;
    $('login-view').hidden = false;
    $('logout').hidden = true;
    $('drawer-btn').hidden = true;
    $('me').textContent = '';
    $('me').title = '';
    $('login-error').textContent = text || '';
    if (client.user) $('user').value = client.user;
  },
  changed(convId) {
    dirty.add(convId);
    scheduleRender();
  },
  notice(text, opts = {}) {
    notices.text(text, opts);
  },
  sys(m) {
    $('sys-text').textContent = bodyText(m.body);
    $('sys-banner').hidden = false;
  },
  typing(convId) {
    if (convId === current) renderTyping();
  },
  friends() {
    friendsDirty = true;
    scheduleRender();
  },
};

// client.js hands the page an error only as a sentence; this subclass also tells the
// notices which reply it was (its `until`, `retry_ms`) and which sends were accepted, so a
// notice can count down and go away once it stops being true.
class PageClient extends ChatClient {
  constructor(handlers) {
    super(handlers);
    this.sends = 0;          // sends asked so far, in order
  }

  async request(t, fields = {}) {
    const n = t === 'send' ? ++this.sends : 0;
    const reply = await super.request(t, fields);
    if (reply.t === 'error') notices.heard(reply, n ? this.sends : null);
    else if (n && reply.t === 'ack') notices.accepted(n);
    return reply;
  }
}

const notices = makeNotices();
const members = makeMembers();
const roomLines = makeRoomLines();
const drawer = makeDrawer();
const client = new PageClient(ui);
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
    button.onclick = () => { notices.hide(); onAction(); };
    $('notice-close').before(button);
  }
  box.hidden = false;
}

/** One notice at a time. An error reply's notice shows the server's reason first, counts
 * down the time it carries, and goes when it stops being true: a mute that ended, or a
 * send asked after the refusal arrived that was accepted (an unmute sends no push). */
function makeNotices() {
  let shown = null;          // {reply, end, clearAfter, timer} of the error on screen
  let heard = null;          // the newest error reply, until the client announces it

  const stop = () => { if (shown) clearInterval(shown.timer); };
  const hide = () => { stop(); shown = null; $('notice').hidden = true; };
  const paint = () => {
    const now = Date.now();
    if (shown.end && shown.end <= now) {
      if (shown.reply.code === 'muted') { hide(); return; }
      stop();                // the reason stays, the countdown is over
    }
    $('notice-text').textContent = compose(sentence(shown.reply), detail(shown.reply, shown.end, now));
  };
  const showReply = (entry) => {
    hide();
    showNotice('');
    shown = { ...entry, timer: entry.end ? setInterval(paint, 1000) : null };
    paint();
  };
  return {
    hide,
    /** clearAfter: sends asked when a send's refusal arrived (null for other requests). */
    heard(reply, clearAfter) { heard = { reply, end: deadline(reply), clearAfter }; },
    reply(reply) { showReply({ reply, end: deadline(reply), clearAfter: null }); },
    accepted(n) { if (shown && shown.clearAfter !== null && n > shown.clearAfter) hide(); },
    text(text, opts = {}) {
      const own = heard && sentence(heard.reply).replace(/[.!?]$/, '');
      if (own && !opts.action && text.startsWith(own)) showReply(heard);
      else { hide(); showNotice(text, opts); }
      heard = null;
    },
  };
}

// -- rooms: member counts and the person's own joins and leaves ---------------------------
/** The count comes with `joined.members`, then from `room_info` every MEMBERS_MS while the
 * room is on screen, one request at a time. The protocol pushes nothing when other people
 * join or leave a room, so the count is as fresh as its last answer and only the person's
 * own joins and leaves get a line. */
function makeMembers() {
  let timer = null;
  let asking = false;
  const show = (room, n) => {
    if (room !== current || typeof n !== 'number') return;
    $('conv-members').textContent = n === 1 ? '1 member' : `${n} members`;
    $('conv-members').hidden = false;
  };
  const ask = async (room) => {
    if (asking || !client.loggedIn || room !== current) return;
    asking = true;
    try {
      show(room, (await client.call('room_info', { room })).members);
    } catch {
      // an older server or a dropped connection: the last count stays
    } finally {
      asking = false;
    }
  };
  return {
    watch(room, count) {
      clearInterval(timer);
      timer = null;
      $('conv-members').hidden = true;
      if (!room) return;
      if (typeof count === 'number') show(room, count);
      else ask(room);
      timer = setInterval(() => ask(room), MEMBERS_MS);
    },
  };
}

/** "You joined / You left" lines per room, each placed after the room's seq at that time. */
function makeRoomLines() {
  const lines = new Map();   // room -> [{kind, after, ts}], oldest first
  return {
    note(room, kind, after) {
      const list = lines.get(room) || [];
      lines.delete(room);
      list.push({ kind, after, ts: Date.now() });
      if (list.length > LINES_PER_ROOM) list.shift();
      lines.set(room, list);
      if (lines.size > LINE_ROOMS) lines.delete(lines.keys().next().value);
    },
    of: (room) => lines.get(room) || [],
    clear: () => lines.clear(),
  };
}

// -- the drawer: below 700 px the sidebar slides over the conversation ---------------------
function makeDrawer() {
  const set = (open) => {
    $('chat-view').classList.toggle('drawer-open', open);
    $('drawer-btn').setAttribute('aria-expanded', String(open));
  };
  $('drawer-btn').addEventListener('click', () => set(!$('chat-view').classList.contains('drawer-open')));
  $('shade').addEventListener('click', () => set(false));
  document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') set(false); });
  return { set };
}

// -- rendering -------------------------------------------------------------------------
function title(id) {
  if (id === 'sys') return 'System';
  if (id.startsWith('d:')) return id.slice(2).split(':').find((u) => u !== client.user) || client.user;
  if (id.startsWith('r:')) return `# ${id.slice(2)}`;
  if (id.startsWith('g:')) return `group ${id.slice(2)}`;
  return id;
}

const clock = (ts) => new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

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
  if (friendsDirty) renderFriends();
  friendsDirty = false;
}

/** "X is typing…" under the conversation while a typing push of it is fresh (~3 s). */
function renderTyping() {
  clearTimeout(typingTimer);
  typingTimer = null;
  const box = $('typing');
  const c = current === null ? null : client.convs.get(current);
  const who = c ? c.typers() : [];
  if (!who.length) {
    box.hidden = true;
    box.textContent = '';
    return;
  }
  if (who.length === 1) box.textContent = `${who[0]} is typing…`;
  else if (who.length === 2) box.textContent = `${who[0]} and ${who[1]} are typing…`;
  else box.textContent = `${who.length} people are typing…`;
  box.hidden = false;
  const next = Math.min(...c.typing.values()) - Date.now();
  typingTimer = setTimeout(renderTyping, Math.max(50, next + 20));
}

/** The friends with a presence dot (online / offline / not known yet) and their status text. */
function renderFriends() {
  const items = client.friends.map((name) => {
    const { status, text } = client.presenceOf(name);
    const li = document.createElement('li');
    li.dataset.user = name;
    li.dataset.status = status;
    const dot = document.createElement('span');
    dot.className = 'dot';
    dot.title = status;
    const who = document.createElement('span');
    who.className = 'name';
    who.textContent = name;
    const note = document.createElement('span');
    note.className = 'status-text';
    note.textContent = text || '';
    const drop = document.createElement('button');
    drop.type = 'button';
    drop.className = 'unfriend';
    drop.textContent = '×';
    drop.setAttribute('aria-label', `Remove ${name} from friends`);
    drop.onclick = (ev) => { ev.stopPropagation(); client.removeFriend(name); };
    const label = document.createElement('span');
    label.className = 'who';
    label.append(who, note);
    li.append(dot, label, drop);
    li.title = `${name}: ${status}${text ? ` — ${text}` : ''}`;
    li.onclick = () => { if (name !== client.user) select(dmConv(client.user, name)); };
    return li;
  });
  $('friends').replaceChildren(...items);
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
  meta.textContent = m.ts ? clock(m.ts) : '…';
  const from = document.createElement('span');
  from.className = 'from';
  from.textContent = m.from;
  const body = document.createElement('span');
  body.className = 'body';
  body.textContent = m.recalled ? 'message removed' : bodyText(m.body);
  li.append(meta, ' ', from, ' ', body);    // the spaces let a long body start on its own line
  if (m.recalled) {
    li.classList.add('recalled');
    return li;
  }
  if (m.edited) {
    const mark = document.createElement('span');
    mark.className = 'edited';
    mark.textContent = 'edited';
    if (typeof m.edited === 'number') mark.title = `edited ${clock(m.edited)}`;
    li.append(' ', mark);
  }
  if (m.from !== client.user || !Number.isInteger(m.seq) || m.conv === 'sys') return li;
  if (m.conv.startsWith('d:')) {
    const read = m.seq <= client.readBy(m.conv);
    const tick = document.createElement('span');
    tick.className = read ? 'tick read' : 'tick';
    tick.textContent = read ? '✓✓' : '✓';
    tick.title = read ? 'read' : 'sent';
    tick.setAttribute('aria-label', tick.title);
    li.append(' ', tick);
  }
  li.append(actions(m));
  return li;
}

/** Edit and Remove buttons of an own message (shown on hover or focus). */
function actions(m) {
  const box = document.createElement('span');
  box.className = 'actions';
  const edit = document.createElement('button');
  edit.type = 'button';
  edit.className = 'act edit-btn';
  edit.textContent = 'Edit';
  edit.onclick = () => startEdit(m);
  const recall = document.createElement('button');
  recall.type = 'button';
  recall.className = 'act recall-btn';
  recall.textContent = 'Remove';
  recall.title = 'Remove for everyone';
  recall.onclick = () => {
    if (editing && editing.conv === m.conv && editing.seq === m.seq) endEdit(true);
    client.change(m.conv, m.seq);
  };
  box.append(edit, recall);
  return box;
}

function startEdit(m) {
  editing = { conv: m.conv, seq: m.seq };
  $('text').value = bodyText(m.body);
  $('edit-bar').hidden = false;
  $('send-btn').textContent = 'Save';
  $('text').focus();
}

function endEdit(clear = false) {
  if (editing && clear) $('text').value = '';
  editing = null;
  $('edit-bar').hidden = true;
  $('send-btn').textContent = 'Send';
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

function lineItem(room, line) {
  const li = document.createElement('li');
  li.className = 'line';
  li.dataset.kind = line.kind;
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = clock(line.ts);
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = `You ${line.kind === 'join' ? 'joined' : 'left'} ${title(room)}`;
  li.append(meta, ' ', text);
  return li;
}

/** A conversation's rows, oldest first, as {ts, li}: its messages, the person's own join
 * and leave lines (after the seq the room had then), then the sends still in the outbox. */
function rows(id) {
  const out = [];
  const lines = roomLines.of(id);
  let k = 0;
  for (const m of client.conv(id).sorted()) {
    for (; k < lines.length && lines[k].after < m.seq; k += 1) out.push({ ts: lines[k].ts, li: lineItem(id, lines[k]) });
    out.push({ ts: m.ts, li: messageItem(m) });
  }
  for (; k < lines.length; k += 1) out.push({ ts: lines[k].ts, li: lineItem(id, lines[k]) });
  for (const e of client.outbox.values()) if (e.conv === id) out.push({ ts: Date.now(), li: pendingItem(e) });
  return out;
}

const dayKey = (d) => d.getFullYear() * 10000 + d.getMonth() * 100 + d.getDate();

/** "Today", "Yesterday", or the date ("Mon 1 Dec", with the year when it is not this one). */
function dayLabel(ts, now = new Date()) {
  const d = new Date(ts);
  if (dayKey(d) === dayKey(now)) return 'Today';
  if (dayKey(d) === dayKey(new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1))) return 'Yesterday';
  const opts = { weekday: 'short', day: 'numeric', month: 'short' };
  if (d.getFullYear() !== now.getFullYear()) opts.year = 'numeric';
  return d.toLocaleDateString([], opts);
}

/** The rows' items with a date separator before the first row of every day. */
function withDays(list) {
  const items = [];
  let day = null;
  for (const { ts, li } of list) {
    const when = typeof ts === 'number' ? ts : Date.now();
    if (dayKey(new Date(when)) !== day) {
      day = dayKey(new Date(when));
      const sep = document.createElement('li');
      sep.className = 'day';
      sep.setAttribute('role', 'separator');
      sep.textContent = dayLabel(when);
      items.push(sep);
    }
    items.push(li);
  }
  return items;
}

function renderMessages(id = current) {
  const list = $('messages');
  const c = client.conv(id);
  const items = withDays(rows(id));
  if (c.missed > 0) {
    const gap = document.createElement('li');
    gap.className = 'gap';
    gap.textContent = `${c.missed} earlier message(s) are no longer available.`;
    items.unshift(gap);
  }
  list.replaceChildren(...items);
  if (pinned || stickToBottom) list.scrollTop = list.scrollHeight;
  stickToBottom = false;
}

/** Show conversation id; `count` is a room's member count when the caller has one. */
function select(id, count) {
  if (editing && editing.conv !== id) endEdit(true);
  current = id;
  stickToBottom = true;
  client.conv(id);
  drawer.set(false);
  $('conv-title').textContent = title(id);
  $('leave-btn').hidden = !isRoom(id);
  members.watch(isRoom(id) ? id : null, count);
  ui.status($('status').dataset.state);
  dirty.add(id);
  scheduleRender();
  renderTyping();
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
$('notice-close').addEventListener('click', () => notices.hide());
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
    notices.text(other === client.user ? 'Pick someone other than yourself.' : explain({ code: 'bad_name' }));
    return;
  }
  $('dm-user').value = '';
  select(dmConv(client.user, other));
});

$('join-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const room = `r:${$('room-name').value.trim()}`;
  const already = client.rooms.has(room);
  try {
    const joined = await client.join(room);
    $('room-name').value = '';
    if (!already) roomLines.note(room, 'join', joined.last_seq || 0);
    select(room, joined.members);
  } catch (err) {
    const reply = err.reply || err;
    if (reply.code === 'unknown_type') notices.text('Rooms are not available on this server yet.');
    else showError(reply);
  }
});

/** The room stays on screen, ending with "You left", until another conversation is picked. */
$('leave-btn').addEventListener('click', async () => {
  const room = current;
  roomLines.note(room, 'leave', client.conv(room).top);
  renderMessages(room);
  endEdit(true);
  current = null;
  renderTyping();
  members.watch(null);
  $('conv-title').textContent = `${title(room)} (left)`;
  $('leave-btn').hidden = true;
  ui.status($('status').dataset.state);
  try {
    await client.leave(room);
  } catch (err) {
    showError(err.reply || err);
  }
  scheduleRender();
});

function showError(reply) {
  if (typeof reply.code === 'string') notices.reply(reply);
  else notices.text(explain(null));
}

$('send-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = $('text').value;
  if (!text.trim() || current === null) return;
  $('text').value = '';
  if (editing && editing.conv === current) {
    const { conv, seq } = editing;
    endEdit();
    client.change(conv, seq, text);
    return;
  }
  stickToBottom = true;
  client.send(current, text);
});

// "typing…" to the others while the person types: the client sends one per 2 s at most; a
// keystroke in between asks for one more at the end of those 2 s (if the text is still there).
let typingLater = null;
function typed() {
  if (current === null || editing || !$('text').value.trim()) return;
  const conv = current;
  client.typing(conv).then((sent) => {
    if (sent !== false || typingLater !== null || !client.loggedIn || client.typingWait(conv) === 0) return;
    typingLater = setTimeout(() => {
      typingLater = null;
      if (current === conv) typed();
    }, client.typingWait(conv) + 20);
  });
}
$('text').addEventListener('input', typed);
$('text').addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape' && editing) endEdit(true);
});
$('edit-cancel').addEventListener('click', () => endEdit(true));

$('friend-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = $('friend-name').value.trim();
  if (!NAME_RE.test(name) || name === client.user) {
    notices.text(name === client.user ? 'Pick someone other than yourself.' : explain({ code: 'bad_name' }));
    return;
  }
  // clear the field only if it still holds this name (another may have been typed meanwhile)
  if (await client.addFriend(name) && $('friend-name').value.trim() === name) $('friend-name').value = '';
});

$('status-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (await client.setStatus({ text: $('my-status').value.trim() })) $('my-status').blur();
});

$('appear-offline').addEventListener('change', async () => {
  const box = $('appear-offline');
  if (!(await client.setStatus({ hidden: box.checked }))) box.checked = !box.checked;
});

// A reload keeps the session (the token lives in this tab's sessionStorage).
const saved = JSON.parse(sessionStorage.getItem('zonechat') || 'null');
if (saved && saved.user && saved.token) {
  client.user = saved.user;
  client.token = saved.token;
  client.resume();
}
