// The protocol side of the chat page: protocol v1 over one WebSocket with JSON text
// frames. Requests are matched to replies by rid; after a drop the client reconnects by
// itself, logs in with its token, resends unacked messages with their cid (the server
// answers with the same ack, so nothing is stored twice), rejoins its rooms and fills
// every gap with `sync`. Each conversation keeps its messages by seq: a message is shown
// once, whatever mix of live pushes, offline replay and sync brought it.

import { explain } from './errors.js';

export { explain };
export const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
const PING_MS = 20000;
const REQUEST_MS = 15000;
const BACKOFF_MIN = 250;
const BACKOFF_MAX = 4000;
const FIRST_PAGE = 100;      // history shown for a conversation the page has never seen
const SYNC_PAGE = 500;       // the protocol's largest sync
const FILL_DELAY = 300;      // let acks in flight land before calling a seq hole a gap
const STOP_KICKS = new Set(['session_replaced', 'admin', 'banned']);

export class Refusal extends Error {
  constructor(reply) {
    super(reply.reason || reply.code);
    this.code = reply.code;
    this.reply = reply;
  }
}

export const dmConv = (a, b) => (a < b ? `d:${a}:${b}` : `d:${b}:${a}`);
export const isDurable = (id) => id.startsWith('d:') || id.startsWith('g:');
export const isRoom = (id) => id.startsWith('r:');

export class Conv {
  constructor(id) {
    this.id = id;
    this.msgs = new Map();   // seq -> msg
    this.last = 0;           // every seq up to here is in msgs (or given up as missed)
    this.top = 0;            // the highest seq the server said exists
    this.fresh = true;       // no baseline yet
    this.filling = false;
    this.unread = 0;
    this.missed = 0;
    this.recvSent = 0;
  }

  /** Add one message; false if that seq is already here. */
  add(m) {
    if (this.msgs.has(m.seq)) return false;
    if (this.fresh) {
      this.fresh = false;
      this.last = Math.max(0, m.seq - FIRST_PAGE);
    }
    this.msgs.set(m.seq, m);
    this.top = Math.max(this.top, m.seq);
    while (this.msgs.has(this.last + 1)) this.last += 1;
    return true;
  }

  sorted() {
    return [...this.msgs.keys()].sort((a, b) => a - b).map((seq) => this.msgs.get(seq));
  }
}

export class ChatClient {
  /** ui: {status(state), changed(convId), notice(text, opts), welcome(), loggedOut(text)} */
  constructor(ui) {
    this.ui = ui;
    this.ws = null;
    this.user = null;
    this.token = null;
    this.loggedIn = false;
    this.wantOnline = false;
    this.backoff = BACKOFF_MIN;
    this.rid = 0;
    this.waiters = new Map();
    this.convs = new Map();
    this.rooms = new Set();
    this.outbox = new Map();  // cid -> {cid, conv, body, state, why}
    this.pinger = null;
    this.recvTimer = null;
  }

  conv(id) {
    let c = this.convs.get(id);
    if (!c) {
      c = new Conv(id);
      this.convs.set(id, c);
    }
    return c;
  }

  // -- the socket ----------------------------------------------------------------------
  connect() {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) return this.opening;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/ws`);
    this.ws = ws;
    this.opening = new Promise((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Refusal({ code: 'disconnected', reason: 'cannot reach the server' }));
    });
    ws.onmessage = (ev) => this.onFrame(ws, ev.data);
    ws.onclose = () => this.onClosed(ws);
    return this.opening;
  }

  onClosed(ws) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.loggedIn = false;
    clearInterval(this.pinger);
    for (const w of this.waiters.values()) w.reject(new Refusal({ code: 'disconnected', reason: 'connection lost' }));
    this.waiters.clear();
    if (!this.wantOnline) {
      this.ui.status('offline');
      return;
    }
    this.ui.status('reconnecting');
    const delay = this.backoff * (0.5 + Math.random() / 2);
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX);
    setTimeout(() => this.reconnect(), delay);
  }

  async reconnect() {
    if (!this.wantOnline || this.ws) return;
    try {
      await this.connect();
      await this.login({ user: this.user, token: this.token });
    } catch (err) {
      if (err.code === 'auth_failed') {
        this.wantOnline = false;
        this.forget();
        this.ui.loggedOut('Your session has expired. Please log in again.');
      }
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.close();
    }
  }

  request(t, fields = {}) {
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
        reject(new Refusal({ code: 'disconnected', reason: 'not connected' }));
        return;
      }
      const rid = ++this.rid;
      const timer = setTimeout(() => {
        this.waiters.delete(rid);
        reject(new Refusal({ code: 'timeout', reason: 'no answer from the server' }));
      }, REQUEST_MS);
      const done = (fn) => (value) => { clearTimeout(timer); fn(value); };
      this.waiters.set(rid, { resolve: done(resolve), reject: done(reject) });
      this.ws.send(JSON.stringify({ t, rid, ...fields }));
    });
  }

  /** A request whose error reply is thrown as a Refusal. */
  async call(t, fields = {}) {
    const reply = await this.request(t, fields);
    if (reply.t === 'error') throw new Refusal(reply);
    return reply;
  }

  onFrame(ws, data) {
    if (ws !== this.ws || typeof data !== 'string') return;
    let body;
    try {
      body = JSON.parse(data);
    } catch {
      return;
    }
    const waiter = typeof body.rid === 'number' ? this.waiters.get(body.rid) : undefined;
    if (waiter) {
      this.waiters.delete(body.rid);
      waiter.resolve(body);
      return;
    }
    if (body.t === 'msg') this.onMsg(body, true);
    else if (body.t === 'ack') this.settleAck(body);
    else if (body.t === 'kicked') this.onKicked(body.reason);
    else if (body.t === 'error') this.ui.notice(explain(body));
  }

  // -- session -------------------------------------------------------------------------
  async login(creds) {
    const welcome = await this.call('login', { ...creds, v: 1 });
    if (this.user !== welcome.user) this.reset();
    this.user = welcome.user;
    this.token = welcome.token;
    this.loggedIn = true;
    this.wantOnline = true;
    this.backoff = BACKOFF_MIN;
    sessionStorage.setItem('zonechat', JSON.stringify({ user: this.user, token: this.token }));
    clearInterval(this.pinger);
    this.pinger = setInterval(() => this.request('ping').catch(() => {}), PING_MS);
    this.noteConvs(welcome.convs || {});
    this.ui.status('online');
    this.ui.welcome();
    this.catchUp();
    return welcome;
  }

  noteConvs(convs) {
    for (const [id, last] of Object.entries(convs)) {
      const c = this.conv(id);
      if (c.fresh) {
        c.fresh = false;
        c.last = Math.max(0, last - FIRST_PAGE);
      }
      c.top = Math.max(c.top, last);
      this.ui.changed(id);
    }
  }

  async catchUp() {
    for (const e of this.outbox.values()) if (e.state === 'pending') this.trySend(e);
    for (const room of this.rooms) this.join(room).catch(() => {});
    try {
      await this.call('ping');      // answered after the offline replay
    } catch {
      return;
    }
    for (const c of this.convs.values()) if (c.top > c.last) this.fill(c);
  }

  reset() {
    this.convs.clear();
    this.rooms.clear();
    this.outbox.clear();
  }

  forget() {
    this.token = null;
    sessionStorage.removeItem('zonechat');
  }

  async logout() {
    this.wantOnline = false;
    try {
      await this.call('logout');
    } finally {
      this.forget();
      this.reset();
      if (this.ws) this.ws.close();
    }
  }

  onKicked(reason) {
    if (!STOP_KICKS.has(reason)) return;   // shutdown, idle, slow: the reconnect follows
    this.wantOnline = false;
    const text = reason === 'session_replaced'
      ? 'You logged in somewhere else, so this page went offline.'
      : 'An operator disconnected you.';
    this.ui.notice(text, { action: 'Reconnect here', onAction: () => this.resume() });
  }

  resume() {
    this.wantOnline = true;
    this.backoff = BACKOFF_MIN;
    this.reconnect();
  }

  // -- messages ------------------------------------------------------------------------
  onMsg(m, live) {
    if (typeof m.conv !== 'string' || typeof m.seq !== 'number') return;
    const c = this.conv(m.conv);
    if (m.from === this.user && this.outbox.has(m.cid)) this.outbox.delete(m.cid);
    if (!c.add(m)) return;
    if (live && m.conv === 'sys') this.ui.sys(m);
    if (live) c.unread += 1;
    this.noteRecv(c);
    if (c.top > c.last) setTimeout(() => this.fill(c), FILL_DELAY);
    this.ui.changed(c.id);
  }

  noteRecv(c) {
    if (!isDurable(c.id) || c.last <= c.recvSent) return;
    if (this.recvTimer) return;
    this.recvTimer = setTimeout(() => {
      this.recvTimer = null;
      if (!this.loggedIn) return;
      for (const conv of this.convs.values()) {
        if (isDurable(conv.id) && conv.last > conv.recvSent) {
          conv.recvSent = conv.last;
          this.ws.send(JSON.stringify({ t: 'recv', conv: conv.id, seq: conv.last }));
        }
      }
    }, 250);
  }

  /** Sync the holes of one conversation until `last` reaches `top`. */
  async fill(c) {
    if (c.filling || !this.loggedIn || c.top <= c.last) return;
    if (isRoom(c.id) && !this.rooms.has(c.id)) return;
    c.filling = true;
    try {
      while (this.loggedIn && c.top > c.last) {
        const before = c.last;
        const h = await this.call('sync', { conv: c.id, after: c.last, limit: Math.min(SYNC_PAGE, c.top - c.last) });
        for (const m of h.msgs || []) c.add(m);
        if (typeof h.last_seq === 'number') c.top = Math.max(c.top, h.last_seq);
        if (c.last === before) this.giveUpHole(c);
      }
    } catch (err) {
      if (err.code !== 'disconnected') this.ui.notice(explain(err.reply || err));
    } finally {
      c.filling = false;
      this.noteRecv(c);
      this.ui.changed(c.id);
    }
  }

  giveUpHole(c) {
    const above = [...c.msgs.keys()].filter((seq) => seq > c.last);
    const next = above.length ? Math.min(...above) : c.top + 1;
    c.missed += next - c.last - 1;
    c.last = next - 1;
    while (c.msgs.has(c.last + 1)) c.last += 1;
  }

  send(convId, body) {
    const cid = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
    const e = { cid, conv: convId, body, state: 'pending', why: '' };
    this.outbox.set(cid, e);
    this.ui.changed(convId);
    this.trySend(e);
  }

  async trySend(e) {
    if (!this.loggedIn || e.inflight) return;
    e.inflight = true;
    e.state = 'pending';
    let reply;
    try {
      reply = await this.request('send', { conv: e.conv, cid: e.cid, body: e.body });
    } catch (err) {
      e.inflight = false;
      if (err.code === 'timeout') setTimeout(() => this.trySend(e), 1000);
      return;                      // disconnected: resent after the next login
    }
    e.inflight = false;
    if (reply.t === 'ack') {
      this.settleAck(reply);
    } else if (reply.code === 'unavailable') {
      setTimeout(() => this.trySend(e), reply.retry_ms || 1000);
    } else {
      e.state = 'failed';
      e.code = reply.code;
      e.why = explain(reply);
      this.ui.notice(e.why);
      this.ui.changed(e.conv);
    }
  }

  settleAck(ack) {
    const e = this.outbox.get(ack.cid);
    if (!e || e.conv !== ack.conv) return;
    this.outbox.delete(ack.cid);
    const c = this.conv(ack.conv);
    c.add({ t: 'msg', conv: ack.conv, seq: ack.seq, from: this.user, ts: ack.ts, body: e.body, cid: ack.cid });
    this.noteRecv(c);
    if (c.top > c.last) setTimeout(() => this.fill(c), FILL_DELAY);
    this.ui.changed(ack.conv);
  }

  async join(room) {
    const joined = await this.call('join', { room });
    this.rooms.add(room);
    const c = this.conv(room);
    const recent = joined.recent || [];
    if (c.fresh) {
      c.fresh = false;
      c.last = Math.max(0, joined.last_seq - recent.length);
    }
    for (const m of recent) c.add(m);
    c.top = Math.max(c.top, joined.last_seq || 0);
    this.ui.changed(room);
    if (c.top > c.last) this.fill(c);
    return joined;
  }

  async leave(room) {
    this.rooms.delete(room);
    this.convs.delete(room);
    await this.call('leave', { room });
  }
}
