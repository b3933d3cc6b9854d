// The chat page's side of the protocol: a thin adapter over the zonechat JavaScript client
// (clients/js/zonechat.js, served at /zonechat.js), which keeps the protocol's rules: it
// reconnects by itself, logs in with its token, resends unacked messages with their cid
// (the server answers with the same ack, so nothing is stored twice), rejoins its rooms,
// drops duplicates and fills gaps with `sync`. This file keeps what the page shows: each
// conversation's messages by seq (the newest KEEP of them), its unread count, the page of
// history shown when a conversation is opened, and the outbox of sends not acked yet.
// Issue 15: an edit or recall event (a msg with kind/ref) changes the message it names and
// is not shown itself; unread counts start from welcome.unread; who is typing, the members'
// read cursors (in the core client) and the friends whose presence is watched.

import { NAME_RE, ZonechatClient, ZonechatError, dmConv, isDurable, isRoom } from './zonechat.js';
import { explain } from './errors.js';

export { NAME_RE, dmConv, explain, isDurable, isRoom };
const FIRST_PAGE = 100;      // history shown for a conversation the page has never seen
const SYNC_PAGE = 500;       // the protocol's largest sync
const KEEP = 5000;           // messages kept per conversation (the oldest go first)
const STORE_KEY = 'zonechat';
const FRIENDS_KEY = 'zonechat.friends.';   // + user name: that user's friends (localStorage)
const FRIENDS_MAX = 200;     // chat.presence_max
const TYPING_SHOW_MS = 3000; // how long "X is typing…" stays after the push
const PENDING_EVENTS = 500;  // edits/recalls kept per conversation for targets not loaded yet

/** An edit or recall event: a message of its own seq that changes message `ref`. */
export const isEvent = (m) => m.kind === 'edit' || m.kind === 'recall';

/** Apply event e to message t (a copy the page owns). A recall is final; an edit older than
 * what t already shows (a history record is current as of its sync) changes nothing. */
export function applyEvent(t, e) {
  if (t.recalled) return false;
  if (e.kind === 'recall') {
    t.recalled = true;
    t.body = null;
    return true;
  }
  const older = t.editSeq !== undefined ? e.seq <= t.editSeq : (typeof t.edited === 'number' && t.edited >= e.ts);
  if (older) return false;
  t.body = e.body;
  t.edited = e.ts || Date.now();
  t.editSeq = e.seq;
  return true;
}

/** An error reply, thrown by `call`. */
export class Refusal extends ZonechatError {
  constructor(reply) {
    super(String(reply.code), String(reply.reason ?? ''), reply);
  }
}

export class Conv {
  constructor(id) {
    this.id = id;
    this.msgs = new Map();   // seq -> msg
    this.top = 0;            // the highest seq the page knows exists
    this.unread = 0;
    this.countedTo = 0;      // seqs up to here are in `unread` already (welcome.unread)
    this.pending = new Map(); // target seq -> [events] that came before their target
    this.typing = new Map(); // user -> until (ms): "is typing…"
    this.missed = 0;         // seqs the client gave up (no longer on the server)
    this.loaded = false;     // the first page of history was read
    this.loading = false;
  }

  /** Add one message (a copy); false if that seq is already here. An edit/recall event is
   * kept for its seq and applied to its target (now, or once the target is added). */
  add(m) {
    if (!Number.isInteger(m.seq) || this.msgs.has(m.seq)) return false;
    const own = { ...m };
    this.msgs.set(m.seq, own);
    this.top = Math.max(this.top, m.seq);
    if (isEvent(own)) this.apply(own);
    else this.applyPending(own);
    if (this.msgs.size > KEEP) this.msgs.delete(Math.min(...this.msgs.keys()));
    return true;
  }

  apply(e) {
    const target = this.msgs.get(e.ref);
    if (target && !isEvent(target)) return applyEvent(target, e);
    if (!target && Number.isInteger(e.ref)) {
      const list = this.pending.get(e.ref) || [];
      list.push(e);
      this.pending.set(e.ref, list);
      if (this.pending.size > PENDING_EVENTS) this.pending.delete(this.pending.keys().next().value);
    }
    return false;
  }

  applyPending(m) {
    const list = this.pending.get(m.seq);
    if (!list) return;
    this.pending.delete(m.seq);
    for (const e of list.sort((a, b) => a.seq - b.seq)) applyEvent(m, e);
  }

  /** The messages to show, oldest first (events change others and are not shown). */
  sorted() {
    return [...this.msgs.keys()].sort((a, b) => a - b).map((seq) => this.msgs.get(seq)).filter((m) => !isEvent(m));
  }

  /** Who is typing now (not `me`), soonest to stop first. */
  typers(now = Date.now()) {
    for (const [user, until] of this.typing) if (until <= now) this.typing.delete(user);
    return [...this.typing.entries()].sort((a, b) => a[1] - b[1]).map(([user]) => user);
  }
}

function pageUrl() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.host}/ws`;
}

export class ChatClient {
  /** ui: {status(state), changed(convId), notice(text, opts), welcome(), loggedOut(text), sys(m),
   * typing(convId), friends()} */
  constructor(ui) {
    this.ui = ui;
    this.user = null;
    this.token = null;
    this.convs = new Map();
    this.outbox = new Map();  // cid -> {cid, conv, body, state, why, code}
    this.friends = [];        // user names whose presence is watched, in the order added
    this.friendsOf = null;    // the user `friends` belongs to
    this.core = new ZonechatClient({ url: pageUrl() });
    this.core.on('state', (ev) => this.onState(ev));
    this.core.on('welcome', (w) => this.onWelcome(w));
    this.core.on('msg', (m, info) => this.onMsg(m, info));
    this.core.on('gap', (g) => this.onGap(g));
    this.core.on('kicked', (k) => this.onKicked(k));
    this.core.on('error', (err, info) => this.onError(err, info));
    this.core.on('read', (r) => this.ui.changed(r.conv));
    this.core.on('typing', (t) => this.onTyping(t));
    this.core.on('presence', () => this.ui.friends());
  }

  get loggedIn() {
    return this.core.online;
  }

  get rooms() {
    return this.core.rooms;
  }

  conv(id) {
    let c = this.convs.get(id);
    if (!c) {
      c = new Conv(id);
      this.convs.set(id, c);
    }
    return c;
  }

  connect() {
    return this.core.connect();
  }

  /** The reply to a request (an error reply included). A send resolves to its ack or its
   * refusal: the client resends it by itself until one of them comes. */
  request(t, fields = {}) {
    if (t !== 'send') return this.core.request(t, fields);
    return this.core.send(fields.conv, fields.body, { cid: fields.cid }).catch((err) => {
      if (err.reply) return err.reply;
      throw err;
    });
  }

  /** A request whose error reply is thrown as a Refusal. */
  async call(t, fields = {}) {
    const reply = await this.request(t, fields);
    if (reply.t === 'error') throw new Refusal(reply);
    return reply;
  }

  // -- session -------------------------------------------------------------------------
  login(creds) {
    return this.core.login(creds);
  }

  async logout() {
    try {
      await this.core.logout();
    } finally {
      this.forget();
      this.reset();
    }
  }

  /** Back online with the saved (or current) token. */
  resume() {
    this.core.resume({ user: this.user, token: this.token });
  }

  reset() {
    this.convs.clear();
    this.outbox.clear();
    this.friends = [];
    this.friendsOf = null;
    this.friendsQueue = null;
  }

  forget() {
    this.token = null;
    sessionStorage.removeItem(STORE_KEY);
  }

  onState({ state, reason }) {
    if (state === 'online' || state === 'reconnecting') this.ui.status(state);
    if (state !== 'offline') return;
    this.ui.status('offline');
    if (reason === 'auth_failed' && this.token) {
      this.forget();
      this.ui.loggedOut('Your session has expired. Please log in again.');
    }
  }

  onWelcome(welcome) {
    if (this.user !== welcome.user) this.reset();
    this.user = welcome.user;
    this.token = welcome.token;
    sessionStorage.setItem(STORE_KEY, JSON.stringify({ user: this.user, token: this.token }));
    const unread = welcome.unread && typeof welcome.unread === 'object' ? welcome.unread : null;
    const read = welcome.read && typeof welcome.read === 'object' ? welcome.read : {};
    for (const [id, last] of Object.entries(welcome.convs || {})) {
      const c = this.conv(id);
      if (Number.isInteger(last)) c.top = Math.max(c.top, last);
      if (unread && isDurable(id) && Number.isInteger(last)) this.countUnread(c, last, unread[id], read[id]);
      this.ui.changed(id);
    }
    this.loadFriends();
    this.ui.welcome();
  }

  /** welcome.unread: the messages above the read cursor, which the offline replay pushes
   * next (so those pushes are not counted again). After a reconnect only what this page did
   * not have yet is added. */
  countUnread(c, last, n, cursor) {
    const had = this.core.lastSeen(c.id);
    const add = had === null
      ? (Number.isInteger(n) ? n : 0)
      : Math.max(0, last - Math.max(had, Number.isInteger(cursor) ? cursor : 0));
    c.unread += Math.max(0, add);
    c.countedTo = Math.max(c.countedTo, last);
  }

  onKicked({ reason, reconnect }) {
    if (reconnect) return;                 // shutdown, idle, slow, moving (to another gate): it reconnects
    const text = reason === 'session_replaced'
      ? 'You logged in somewhere else, so this page went offline.'
      : 'An operator disconnected you.';
    this.ui.notice(text, { action: 'Reconnect here', onAction: () => this.resume() });
  }

  onError(err, { during } = {}) {
    if (during === 'join' || err.code === 'disconnected') return;
    this.ui.notice(explain(err.reply || err));
  }

  // -- messages ------------------------------------------------------------------------
  onMsg(m, { via } = {}) {
    if (typeof m.conv !== 'string') return;
    const c = this.conv(m.conv);
    if (!c.add(m)) return;
    if (c.typing.delete(m.from)) this.ui.typing(c.id);
    if (via === 'push' && !isEvent(m)) {
      if (m.conv === 'sys') this.ui.sys(m);
      if (m.seq > c.countedTo) c.unread += 1;
    }
    this.ui.changed(c.id);
  }

  onTyping({ conv, user }) {
    if (user === this.user) return;
    this.conv(conv).typing.set(user, Date.now() + TYPING_SHOW_MS);
    this.ui.typing(conv);
  }

  /** Tell the others of conv that the person is typing (the core sends one per 2 s):
   * resolves true if it went out, false if it was too soon (or offline), null if it cannot
   * (sys, a room not joined, refused: a refusal is not worth a notice). */
  typing(convId) {
    if (!this.loggedIn || convId === 'sys') return Promise.resolve(null);
    if (isRoom(convId) && !this.rooms.has(convId)) return Promise.resolve(null);
    return this.core.typing(convId).catch(() => null);
  }

  /** ms until typing(convId) may go out again. */
  typingWait(convId) {
    const last = this.core.typingSent.get(convId);
    return last === undefined ? 0 : Math.max(0, this.core.opts.typingMs - (Date.now() - last));
  }

  /** The other user's read cursor in a DM (0: unknown). */
  readBy(convId) {
    if (!convId.startsWith('d:')) return 0;
    const other = convId.slice(2).split(':').find((u) => u !== this.user);
    return other ? this.core.readSeq(convId, other) : 0;
  }

  onGap({ conv, count }) {
    this.conv(conv).missed += count;
    this.ui.changed(conv);
  }

  /** Read the page of history shown when a conversation is opened (once per conversation). */
  async fill(c) {
    if (c.loaded || c.loading || !this.loggedIn || c.top <= 0) return;
    if (isRoom(c.id) && !this.rooms.has(c.id)) return;
    c.loading = true;
    try {
      const top = c.top;
      for (let after = Math.max(0, top - FIRST_PAGE); after < top;) {
        const h = await this.call('sync', { conv: c.id, after, limit: Math.min(SYNC_PAGE, top - after) });
        const msgs = h.msgs || [];
        this.core.noteReads(c.id, h);
        for (const m of msgs) c.add(m);
        if (!msgs.length) break;
        after = msgs[msgs.length - 1].seq;
      }
      c.loaded = true;
    } catch (err) {
      if (err.code !== 'disconnected') this.ui.notice(explain(err.reply || err));
    } finally {
      c.loading = false;
      this.ui.changed(c.id);
    }
  }

  send(convId, body) {
    const cid = this.core.newCid();
    const e = { cid, conv: convId, body, state: 'pending', why: '' };
    this.outbox.set(cid, e);
    this.ui.changed(convId);
    this.trySend(e);
  }

  /** Send (or, for a failed one, send again) an outbox entry with its cid. */
  async trySend(e) {
    if (e.inflight) return;
    e.inflight = true;
    e.state = 'pending';
    this.ui.changed(e.conv);
    let reply;
    try {
      reply = await this.request('send', { conv: e.conv, cid: e.cid, body: e.body });
    } catch (err) {
      if (err.code === 'queue_full') {
        reply = { t: 'error', code: err.code, reason: 'too many messages are waiting to be sent' };
      } else {
        if (this.outbox.get(e.cid) === e) this.outbox.delete(e.cid);  // logged out or closed
        this.ui.changed(e.conv);
        return;
      }
    } finally {
      e.inflight = false;
    }
    if (reply.t === 'ack') this.acked(e, reply);
    else this.refused(e, reply);
  }

  acked(e, ack) {
    this.outbox.delete(e.cid);
    this.conv(ack.conv).add({ t: 'msg', conv: ack.conv, seq: ack.seq, from: this.user, ts: ack.ts, body: e.body, cid: ack.cid });
    this.ui.changed(ack.conv);
  }

  refused(e, reply) {
    e.state = 'failed';
    e.code = reply.code;
    e.why = explain(reply);
    this.ui.notice(e.why);
    this.ui.changed(e.conv);
  }

  /** Edit (body) or recall (body undefined) own message seq; a refusal is a notice. */
  async change(convId, seq, body) {
    const t = body === undefined ? 'recall' : 'edit';
    try {
      const ack = t === 'edit' ? await this.core.edit(convId, seq, body) : await this.core.recall(convId, seq);
      this.conv(ack.conv).add({ t: 'msg', conv: ack.conv, seq: ack.seq, from: this.user, ts: ack.ts, cid: ack.cid,
        kind: t, ref: seq, body: t === 'edit' ? body : null });
      this.ui.changed(ack.conv);
      return true;
    } catch (err) {
      if (err.code !== 'closed') this.ui.notice(explain(err.reply || err));
      return false;
    }
  }

  // -- friends and presence -------------------------------------------------------------
  loadFriends() {
    if (this.friendsOf === this.user) return;
    this.friendsOf = this.user;
    let list = [];
    try {
      list = JSON.parse(localStorage.getItem(FRIENDS_KEY + this.user) || '[]');
    } catch {
      list = [];
    }
    this.friends = Array.isArray(list) ? list.filter((u) => NAME_RE.test(u) && u !== this.user).slice(0, FRIENDS_MAX) : [];
    this.ui.friends();
    if (this.friends.length && this.core.watching.join('\n') !== this.friends.join('\n')) {
      this.core.presenceSub(this.friends).catch(() => {});   // an older server: no presence
    }
  }

  saveFriends() {
    try {
      localStorage.setItem(FRIENDS_KEY + this.user, JSON.stringify(this.friends));
    } catch {
      // storage full or off: the list lasts as long as the page
    }
  }

  /** Watch the new list (presence_sub replaces the whole list); kept only if accepted. */
  async setFriends(list) {
    try {
      await this.core.presenceSub(list);
    } catch (err) {
      this.ui.notice(explain(err.reply || err));
      return false;
    }
    this.friends = list;
    this.saveFriends();
    this.ui.friends();
    return true;
  }

  /** Changes of the list one after the other, each from the list the one before left. */
  changeFriends(change) {
    const user = this.user;
    const run = () => {
      if (this.user !== user) return false;
      const list = change(this.friends);
      return list === this.friends ? true : this.setFriends(list);
    };
    this.friendsQueue = (this.friendsQueue || Promise.resolve()).then(run, run);
    return this.friendsQueue;
  }

  addFriend(name) {
    return this.changeFriends((list) => (list.includes(name) ? list : [...list, name]));
  }

  removeFriend(name) {
    return this.changeFriends((list) => list.filter((u) => u !== name));
  }

  /** {status: 'online'|'offline'|'unknown', text} of a friend. */
  presenceOf(name) {
    return this.core.presence.get(name) || { status: 'unknown', text: '' };
  }

  async setStatus(fields) {
    try {
      await this.core.setStatus(fields);
      return true;
    } catch (err) {
      this.ui.notice(explain(err.reply || err));
      return false;
    }
  }

  async join(room) {
    const joined = await this.core.join(room);
    const c = this.conv(room);
    for (const m of joined.recent || []) c.add(m);
    c.top = Math.max(c.top, joined.last_seq || 0);
    c.loaded = true;
    this.ui.changed(room);
    return joined;
  }

  async leave(room) {
    this.convs.delete(room);
    await this.core.leave(room);
  }
}
