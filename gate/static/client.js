// The chat page's side of the protocol: a thin adapter over the zonechat JavaScript client
// (clients/js/zonechat.js, served at /zonechat.js), which keeps the protocol's rules: it
// reconnects by itself, logs in with its token, resends unacked messages with their cid
// (the server answers with the same ack, so nothing is stored twice), rejoins its rooms,
// drops duplicates and fills gaps with `sync`. This file keeps what the page shows: each
// conversation's messages by seq (the newest KEEP of them), its unread count, the page of
// history shown when a conversation is opened, and the outbox of sends not acked yet.

import { NAME_RE, ZonechatClient, ZonechatError, dmConv, isDurable, isRoom } from './zonechat.js';
import { explain } from './errors.js';

export { NAME_RE, dmConv, explain, isDurable, isRoom };
const FIRST_PAGE = 100;      // history shown for a conversation the page has never seen
const SYNC_PAGE = 500;       // the protocol's largest sync
const KEEP = 5000;           // messages kept per conversation (the oldest go first)
const STORE_KEY = 'zonechat';

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
    this.missed = 0;         // seqs the client gave up (no longer on the server)
    this.loaded = false;     // the first page of history was read
    this.loading = false;
  }

  /** Add one message; false if that seq is already here. */
  add(m) {
    if (!Number.isInteger(m.seq) || this.msgs.has(m.seq)) return false;
    this.msgs.set(m.seq, m);
    this.top = Math.max(this.top, m.seq);
    if (this.msgs.size > KEEP) this.msgs.delete(Math.min(...this.msgs.keys()));
    return true;
  }

  sorted() {
    return [...this.msgs.keys()].sort((a, b) => a - b).map((seq) => this.msgs.get(seq));
  }
}

function pageUrl() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.host}/ws`;
}

export class ChatClient {
  /** ui: {status(state), changed(convId), notice(text, opts), welcome(), loggedOut(text), sys(m)} */
  constructor(ui) {
    this.ui = ui;
    this.user = null;
    this.token = null;
    this.convs = new Map();
    this.outbox = new Map();  // cid -> {cid, conv, body, state, why, code}
    this.core = new ZonechatClient({ url: pageUrl() });
    this.core.on('state', (ev) => this.onState(ev));
    this.core.on('welcome', (w) => this.onWelcome(w));
    this.core.on('msg', (m, info) => this.onMsg(m, info));
    this.core.on('gap', (g) => this.onGap(g));
    this.core.on('kicked', (k) => this.onKicked(k));
    this.core.on('error', (err, info) => this.onError(err, info));
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
    for (const [id, last] of Object.entries(welcome.convs || {})) {
      const c = this.conv(id);
      if (Number.isInteger(last)) c.top = Math.max(c.top, last);
      this.ui.changed(id);
    }
    this.ui.welcome();
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
    if (via === 'push') {
      if (m.conv === 'sys') this.ui.sys(m);
      c.unread += 1;
    }
    this.ui.changed(c.id);
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
