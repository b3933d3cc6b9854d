// zonechat-client: a browser and Node client of zonechat protocol v1 over WebSocket, with
// JSON text frames. An ES module with no dependencies and no build step (README.md).
//
//   import { ZonechatClient, dmConv } from './zonechat.js';
//   const chat = new ZonechatClient({ url: 'ws://127.0.0.1:7701/ws' });   // Node: { WebSocket }
//   chat.on('msg', (m) => show(m));                 // in seq order, once each
//   await chat.connect();
//   await chat.login({ user: 'alice', password: 'secret-pw' });
//   const ack = await chat.send(dmConv('alice', 'bob'), 'hi');
//
// What it keeps (the rules of client/client.py, docs/protocol.md §7): a send stays unacked
// until its ack or its refusal and is resent with the same cid after any doubt (a reconnect,
// a timeout, `unavailable`), so it is stored once; seqs are tracked per conversation, a
// duplicate is dropped, a hole in a DM or group is filled with `sync` before what follows
// it is delivered; after a drop it reconnects with backoff, logs in with its token, resends,
// rejoins its rooms and syncs what the time away left out. After `kicked{moving}` (its gate
// is draining) it reconnects to one of the gates the kick names, at random, after a random
// wait within the kick's `retry_ms` (`movingPlan`); that gate is its address from then on.
//
// The extensions of issue 15 (README.md): `edit`/`recall` are sends (same cid rules, resent
// the same way); their `msg` events (kind "edit"/"recall", `ref` the target) are ordinary
// seq'd messages. `typing`, `read`, `presence` and `digest` pushes are events; a digest moves
// a passive room's seen seq to its `to_seq`; `focus` makes a passive room active again. The
// presence list and a room's mode are restored after a reconnect.

export const PROTOCOL_VERSION = 1;
export const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
export const SYNC_PAGE = 500;            // the protocol's largest sync
export const LIVE_KEEP = 1000;           // rooms and sys keep their newest 1,000 messages
const OWN_MAX = 32;                      // own acked seqs kept above `last` before giving up pushes
const RECONNECT_KICKS = new Set(['shutdown', 'idle', 'slow', 'moving']);
const MOVE_WAIT_MAX_MS = 30000;          // the most a moving kick's retry_ms may ask
const MOVE_WAIT_DEFAULT_MS = 1000;       // when the kick carries no usable retry_ms
const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[^\s/:@?#[\]]+):\d{1,5}$/;   // "host:port", "[v6]:port"
const FATAL_LOGIN = new Set(['auth_failed', 'bad_request']);
const SEND_TYPES = new Set(['send', 'edit', 'recall']);   // what a SendBook entry may be
const OPEN = 1;                          // WebSocket.OPEN, the same in browsers and `ws`

export const DEFAULTS = Object.freeze({
  url: null,               // ws://host:ws_port/ws
  WebSocket: null,         // the WebSocket class; default: the global one (browsers)
  reconnect: true,         // reconnect after a drop that is not a logout, close() or a stop kick
  autoRecv: true,          // tell the server what was delivered (one `recv` per DM/group, batched)
  fillLive: true,          // after a reconnect also sync the holes of rooms and sys
  timeoutMs: 15000,        // a request's reply (the gate answers within 10 s)
  pingMs: 20000,           // keepalive while logged in
  backoffMinMs: 250,
  backoffMaxMs: 5000,
  recvDelayMs: 100,        // `recv` batching
  fillWaitMs: 3000,        // before syncing a hole, how long own acks in flight may close it
  retryMs: 1000,           // resend after a timeout (unavailable: its retry_ms)
  maxUnacked: 200,         // sends waiting for their ack; past it send() refuses (queue_full)
  maxInflight: 240,        // requests waiting for a reply (the gate allows 256)
  maxHeld: 1000,           // pushes held behind one conversation's hole; past it the newest is re-synced
  typingMs: 2200,          // typing(): at most one per conversation per this many ms (the server allows one per 2 s)
  typingWaitMs: 2000,      // how long a `typing` may be refused before it counts as accepted
});

export const COUNTERS = Object.freeze(['dups', 'gaps', 'missed', 'out_of_order', 'filled', 'lost',
  'fill_failed', 'bad_frames', 'late_replies', 'reconnects', 'resent']);

export const isDurable = (conv) => typeof conv === 'string' && (conv.startsWith('d:') || conv.startsWith('g:'));
export const isRoom = (conv) => typeof conv === 'string' && conv.startsWith('r:');

/** The DM of two users: `d:<a>:<b>` with a < b (names are ASCII, so this is byte order). */
export function dmConv(a, b) {
  if (a === b || !NAME_RE.test(a) || !NAME_RE.test(b)) throw new TypeError(`no DM between ${a} and ${b}`);
  return a < b ? `d:${a}:${b}` : `d:${b}:${a}`;
}

/** An error reply (`reply` is the body) or a failure of the client (`reply` null). */
export class ZonechatError extends Error {
  constructor(code, reason = '', reply = null) {
    super(reason ? `${code}: ${reason}` : code);
    this.name = 'ZonechatError';
    this.code = code;
    this.reason = reason;
    this.reply = reply;
    this.retryMs = reply && typeof reply.retry_ms === 'number' ? reply.retry_ms : undefined;
    this.until = reply && typeof reply.until === 'number' ? reply.until : undefined;
  }

  static fromReply(reply) {
    return new ZonechatError(String(reply.code), String(reply.reason ?? ''), reply);
  }
}

function randomHex(bytes) {
  const buf = new Uint8Array(bytes);
  if (globalThis.crypto && globalThis.crypto.getRandomValues) globalThis.crypto.getRandomValues(buf);
  else for (let i = 0; i < bytes; i += 1) buf[i] = Math.floor(Math.random() * 256);
  return [...buf].map((b) => b.toString(16).padStart(2, '0')).join('');
}

const clamp = (n, lo, hi) => Math.min(hi, Math.max(lo, n));

/** Where to go after `kicked{moving}` from the gate at `currentUrl`: `{waitMs, urls}`, the
 * WebSocket addresses (`gates[].ws`, "host:port") in random order with the current URL's
 * scheme and path, the draining gate's own URL left out and put last (tried only when no
 * other lets us in: a page's origin may not be allowed there), and a random wait within
 * `retry_ms`. */
export function movingPlan(body, currentUrl, random = Math.random) {
  const here = new URL(currentUrl);
  const urls = [];
  for (const g of Array.isArray(body.gates) ? body.gates : []) {
    if (!g || typeof g.ws !== 'string' || !HOST_PORT.test(g.ws)) continue;
    const url = new URL(`${here.protocol}//${g.ws}${here.pathname}${here.search}`).href;
    if (url !== here.href && !urls.includes(url)) urls.push(url);
  }
  for (let i = urls.length - 1; i > 0; i -= 1) {       // Fisher-Yates
    const j = Math.floor(random() * (i + 1));
    [urls[i], urls[j]] = [urls[j], urls[i]];
  }
  const retry = body.retry_ms;
  const waitMax = typeof retry === 'number' && retry >= 0 ? Math.min(retry, MOVE_WAIT_MAX_MS) : MOVE_WAIT_DEFAULT_MS;
  return { waitMs: random() * waitMax, urls: [...urls, here.href] };
}

// -- events ------------------------------------------------------------------------------
class Emitter {
  constructor() {
    this.listeners = new Map();
  }

  /** Call `fn` for every event `type`; returns a function that removes it. */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this.listeners.get(type)?.delete(fn);
  }

  emit(type, ...args) {
    for (const fn of [...(this.listeners.get(type) || [])]) {
      try {
        fn(...args);
      } catch (err) {             // the app's bug must not break the client
        console.error(`zonechat: a '${type}' listener failed`, err);
      }
    }
  }
}

// -- one WebSocket -----------------------------------------------------------------------
/** One connection: JSON text frames, rid matching, bounded waiters. A new one per reconnect. */
class Link {
  constructor(url, WS, hooks, opts, counters) {
    this.hooks = hooks;
    this.opts = opts;
    this.counters = counters;
    this.waiters = new Map();       // rid -> {resolve, reject, timer}
    this.rid = 0;
    this.alive = true;
    this.ws = new WS(url);
    this.ready = new Promise((resolve, reject) => {
      this.ws.onopen = () => resolve(this);
      this.ws.onerror = () => reject(new ZonechatError('connect_failed', `cannot reach ${url}`));
    });
    this.ready.catch(() => {});     // nobody may be waiting for it
    this.ws.onmessage = (ev) => this.onFrame(ev.data);
    this.ws.onclose = () => this.lost('connection closed');
  }

  get open() {
    return this.alive && this.ws.readyState === OPEN;
  }

  write(body) {
    if (!this.open) throw new ZonechatError('disconnected', 'not connected');
    this.ws.send(JSON.stringify(body));
  }

  request(t, fields, timeoutMs = this.opts.timeoutMs) {
    return this.ask(t, fields, timeoutMs, (resolve, reject) => reject(new ZonechatError('timeout', `no reply to ${t}`)));
  }

  /** A request that is not answered when accepted (`typing`): resolves to null after waitMs
   * without a reply, to the reply (an error) if one comes first. */
  fire(t, fields, waitMs) {
    return this.ask(t, fields, waitMs, (resolve) => resolve(null));
  }

  /** Write ``t`` with a fresh rid and wait for its reply; ``expired(resolve, reject)`` after waitMs. */
  ask(t, fields, waitMs, expired) {
    return new Promise((resolve, reject) => {
      if (this.waiters.size >= this.opts.maxInflight) {
        reject(new ZonechatError('queue_full', `${this.waiters.size} requests are waiting for replies`));
        return;
      }
      const rid = ++this.rid;
      try {
        this.write({ ...fields, t, rid });
      } catch (err) {
        reject(err);
        return;
      }
      const timer = setTimeout(() => {
        this.waiters.delete(rid);
        expired(resolve, reject);
      }, waitMs);
      this.waiters.set(rid, { resolve, reject, timer });
    });
  }

  onFrame(data) {
    if (!this.alive) return;
    const body = typeof data === 'string' ? parse(data) : null;
    if (body === null) {
      this.counters.bad_frames += 1;
      return;
    }
    this.hooks.onBody(body, this);   // side effects first, then the waiting request
    if (typeof body.rid !== 'number') return;
    const waiter = this.waiters.get(body.rid);
    if (!waiter) {
      this.counters.late_replies += 1;
      return;
    }
    this.waiters.delete(body.rid);
    clearTimeout(waiter.timer);
    waiter.resolve(body);
  }

  /** The connection is over (idempotent): fail the waiting requests, tell the client once. */
  lost(reason) {
    if (!this.alive) return;
    this.alive = false;
    for (const w of this.waiters.values()) {
      clearTimeout(w.timer);
      w.reject(new ZonechatError('disconnected', reason));
    }
    this.waiters.clear();
    this.hooks.onLost(this);
  }

  close(reason = 'closed') {
    this.lost(reason);
    try {
      this.ws.close();
    } catch {
      // closing a socket that never opened
    }
  }
}

function parse(text) {
  try {
    const body = JSON.parse(text);
    return body && typeof body === 'object' && typeof body.t === 'string' ? body : null;
  } catch {
    return null;
  }
}

// -- sends without ack -------------------------------------------------------------------
/** Sends without ack by (conv, cid), in the order sent: what a reconnect resends. */
class SendBook {
  constructor(max) {
    this.max = max;
    this.pending = new Map();
  }

  static key(conv, cid) {
    return `${conv}\n${cid}`;
  }

  get(conv, cid) {
    return this.pending.get(SendBook.key(conv, cid));
  }

  /** t: 'send', or 'edit'/'recall' of message `seq` (the same cid space, the same resends). */
  add(conv, cid, body, t = 'send', seq = undefined) {
    if (this.pending.size >= this.max) {
      throw new ZonechatError('queue_full', `${this.pending.size} sends are waiting for their ack`);
    }
    const p = { t, conv, cid, body, seq, inflight: false, attempts: 0, timer: null };
    p.promise = new Promise((resolve, reject) => { p.resolve = resolve; p.reject = reject; });
    p.promise.catch(() => {});        // a refusal nobody awaits must not crash Node
    this.pending.set(SendBook.key(conv, cid), p);
    return p;
  }

  has(p) {
    return this.pending.get(SendBook.key(p.conv, p.cid)) === p;
  }

  /** Take p out of the book and settle its promise (an ack resolves, an error rejects). */
  end(p, ack, err) {
    if (!this.has(p)) return;
    this.pending.delete(SendBook.key(p.conv, p.cid));
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(ack);
  }

  acked(ack) {
    const p = this.get(ack.conv, ack.cid);
    if (p) this.end(p, ack);
  }

  to(conv) {
    return [...this.pending.values()].filter((p) => p.conv === conv);
  }

  /** Resolves once the sends to conv now pending are settled, or after ms. */
  settled(conv, ms) {
    const waits = this.to(conv).map((p) => p.promise.catch(() => {}));
    if (!waits.length) return Promise.resolve();
    let timer;
    const late = new Promise((resolve) => { timer = setTimeout(resolve, ms); });
    return Promise.race([Promise.all(waits), late]).finally(() => clearTimeout(timer));
  }

  rejectAll(err) {
    for (const p of [...this.pending.values()]) this.end(p, null, err);
  }
}

// -- seqs per conversation ---------------------------------------------------------------
class ConvState {
  constructor(conv) {
    this.conv = conv;
    this.durable = isDurable(conv);
    this.last = null;          // every seq up to here was delivered (or given up); null: no base yet
    this.top = 0;              // the highest seq pushed
    this.own = new Set();      // own acked seqs above `last`
    this.held = new Map();     // seq -> {m, via}: pushes waiting behind a hole
    this.target = 0;           // the seq a fill must reach
    this.gap = false;
    this.filling = false;
  }
}

/** The bookkeeping of client/tracking.py: no I/O; `hooks` deliver, start fills, report gaps.
 *
 * `last` starts at the first push (seq - 1), a join's last_seq, or welcome.convs once the
 * offline replay is over. A push at or below `last` (or held, or own) is a duplicate. A DM
 * or group push past `last + 1` is held and the hole synced; a room/sys hole in live pushes
 * is counted and reported (`gap`), unless an own send is unacked or a fill is on. */
class Tracker {
  constructor(hooks, counters, opts) {
    this.hooks = hooks;       // {deliver(st, m, via), startFill(st), sending(conv), gap(st, first, last)}
    this.counters = counters;
    this.maxHeld = opts.maxHeld;
    this.fillLive = opts.fillLive;
    this.convs = new Map();
    this.sinceWelcome = new Set();
  }

  state(conv) {
    let st = this.convs.get(conv);
    if (!st) {
      st = new ConvState(conv);
      this.convs.set(conv, st);
    }
    return st;
  }

  lastSeen(conv) {
    const st = this.convs.get(conv);
    return st ? st.last : null;
  }

  /** Track a `msg` push; false if it has no usable conv/seq (the caller passes it on). */
  onMsg(m, via = 'push') {
    const { conv, seq } = m;
    if (typeof conv !== 'string' || !Number.isInteger(seq)) return false;
    const st = this.state(conv);
    this.sinceWelcome.add(conv);
    if (st.last === null) st.last = (st.own.size ? Math.min(seq, ...st.own) : seq) - 1;
    this.absorb(st);
    if (seq <= st.last || st.held.has(seq) || st.own.has(seq)) {
      this.counters.dups += 1;
      return true;
    }
    if (seq < st.top) this.counters.out_of_order += 1;
    st.top = Math.max(st.top, seq);
    if (seq === st.last + 1) {
      this.advance(st, m, via);
    } else if (st.durable || st.filling || this.hooks.sending(conv)) {
      this.hold(st, m, via);
      this.wantFill(st, 0, !st.filling);
    } else {
      this.skip(st, seq);
      this.advance(st, m, via);
    }
    return true;
  }

  /** Held pushes are bounded: past maxHeld the newest is dropped and the fill syncs it. */
  hold(st, m, via) {
    st.held.set(m.seq, { m, via });
    if (st.held.size <= this.maxHeld) return;
    const drop = Math.max(...st.held.keys());
    st.held.delete(drop);
    st.target = Math.max(st.target, drop);
  }

  onAck(conv, seq) {
    if (typeof conv !== 'string' || !Number.isInteger(seq)) return;
    const st = this.state(conv);
    if (st.last === null || seq > st.last) st.own.add(seq);
    if (st.last === null && st.own.size > OWN_MAX) st.last = Math.min(...st.own) - 1;
    this.absorb(st);
    if (st.own.size <= OWN_MAX) return;
    if (st.durable) {               // the pushes below our sends never came
      this.wantFill(st, Math.max(...st.own), true);
    } else {
      const low = Math.min(...st.own);
      this.skip(st, low);
      st.last = low - 1;
      this.absorb(st);
    }
  }

  /** A `joined` reply. On a rejoin deliver what `recent` adds and sync (or count) the rest. */
  onJoin(joined, passive = false) {
    const st = this.state(joined.conv);
    const lastSeq = Number.isInteger(joined.last_seq) ? joined.last_seq : 0;
    if (passive && st.last !== null) {   // a passive room wants digests, not what it missed
      if (lastSeq > st.last) st.last = lastSeq;
      st.top = Math.max(st.top, lastSeq);
      this.absorb(st);
      return;
    }
    if (st.last === null) {
      st.last = lastSeq;           // the app has `recent` in the reply
      this.absorb(st);
      return;
    }
    if (lastSeq > st.last && this.fillLive) this.wantFill(st, lastSeq);
    for (const m of joined.recent || []) {
      if (m && Number.isInteger(m.seq) && m.seq > st.last) this.onMsg(m, 'join');
    }
    if (lastSeq > st.last && !st.filling) {
      this.skip(st, lastSeq + 1);
      st.last = lastSeq;
      this.absorb(st);
    }
  }

  forget(conv) {
    this.convs.delete(conv);
  }

  /** A passive room's `digest`: seen up to `to_seq` (a from_seq past last + 1 is a gap).
   * False for a digest that brings nothing new (the caller does not pass it on). */
  onDigest(d) {
    const { conv, to_seq: to } = d;
    if (typeof conv !== 'string' || !Number.isInteger(to)) return false;
    const st = this.state(conv);
    this.sinceWelcome.add(conv);
    if (st.last !== null && to <= st.last) {
      this.counters.dups += 1;
      return false;
    }
    if (st.last === null) st.last = (Number.isInteger(d.from_seq) ? d.from_seq : to + 1) - 1;
    if (Number.isInteger(d.from_seq)) this.skip(st, d.from_seq);
    for (const seq of [...st.held.keys()]) if (seq <= to) st.held.delete(seq);
    for (const seq of [...st.own]) if (seq <= to) st.own.delete(seq);
    st.last = to;
    st.top = Math.max(st.top, to);
    this.absorb(st);
    return true;
  }

  /** The `history` answer of a `focus`: deliver what is above `last` (via 'focus'), then
   * `last` is the answer's last_seq (a history bounded below it counts as missed). */
  onFocus(st, history) {
    const msgs = (history.msgs || []).filter((m) => m && Number.isInteger(m.seq)).sort((a, b) => a.seq - b.seq);
    const lastSeq = Number.isInteger(history.last_seq) ? history.last_seq : null;
    if (st.last === null) st.last = msgs.length ? msgs[0].seq - 1 : (lastSeq ?? 0);
    for (const m of msgs) {
      if (m.seq <= st.last) continue;
      const held = st.held.get(m.seq);
      st.held.delete(m.seq);
      this.skip(st, m.seq);
      this.advance(st, held ? held.m : m, held ? held.via : 'focus');
    }
    if (lastSeq !== null && lastSeq > st.last) {
      this.skip(st, lastSeq + 1);
      st.last = lastSeq;
    }
    st.top = Math.max(st.top, st.last);
    this.absorb(st);
  }

  /** A new session: the conversations known before it (for catchUp). */
  onWelcome() {
    this.sinceWelcome = new Set();
    return new Set([...this.convs.values()].filter((st) => st.last !== null).map((st) => st.conv));
  }

  /** After the offline replay: fill what it left out, set the base of the rest; the DMs/groups. */
  catchUp(welcomeConvs, known) {
    this.refillHeld();
    const durable = [];
    for (const [conv, lastSeq] of Object.entries(welcomeConvs)) {
      if (!Number.isInteger(lastSeq) || !(isDurable(conv) || conv === 'sys')) continue;
      if (isDurable(conv)) durable.push(conv);
      const st = this.state(conv);
      const seen = known.has(conv) || this.sinceWelcome.has(conv);
      if (st.last === null) {
        st.last = lastSeq;          // read up to there elsewhere: its history is not wanted
        this.absorb(st);
      } else if (lastSeq > st.last && seen && (st.durable || this.fillLive)) {
        this.wantFill(st, lastSeq);
      }
    }
    return durable;
  }

  // -- filling ---------------------------------------------------------------------------
  wantFill(st, target = 0, gap = false) {
    st.target = Math.max(st.target, target);
    st.gap = st.gap || gap;
    if (!st.filling) {
      st.filling = true;
      this.hooks.startFill(st);
    }
  }

  /** Restart the fills a dropped connection interrupted. */
  refillHeld() {
    for (const st of this.convs.values()) if (st.held.size && !st.filling) this.wantFill(st);
  }

  /** The seq the conversation must reach (0: nothing to sync). Live holes in pushes are not synced. */
  fillNeed(st) {
    if (st.last === null) return 0;
    if (!st.durable) return st.target;
    return Math.max(st.target, st.held.size ? Math.min(...st.held.keys()) - 1 : 0);
  }

  /** Where the next sync starts; rooms and sys only have their newest LIVE_KEEP. */
  syncFrom(st, need) {
    if (!st.durable && need - st.last > LIVE_KEEP) {
      this.skip(st, need - LIVE_KEEP + 1);
      st.last = need - LIVE_KEEP;
      this.absorb(st);
    }
    return st.last;
  }

  /** Take a `history` page of a fill; false (and fill_failed) if it brought nothing new. */
  synced(st, msgs) {
    if (st.gap) {
      this.counters.gaps += 1;
      st.gap = false;
    }
    const before = st.last;
    for (const m of msgs) {
      if (!m || !Number.isInteger(m.seq) || m.seq <= st.last) continue;
      const held = st.held.get(m.seq);
      st.held.delete(m.seq);
      if (!held && !st.own.has(m.seq)) this.counters.filled += 1;
      this.skip(st, m.seq);
      this.advance(st, m, held ? held.via : 'sync');
    }
    if (st.last !== before) return true;
    this.counters.fill_failed += 1;
    return false;
  }

  /** The fill is over: release what is held, counting the holes left as given up. */
  endFill(st, keepHeld = false) {
    st.filling = false;
    st.target = 0;
    st.gap = false;
    if (keepHeld) return;
    for (const seq of [...st.held.keys()].sort((a, b) => a - b)) {
      const held = st.held.get(seq);
      if (held && seq > st.last) {
        this.skip(st, seq);
        st.held.delete(seq);
        this.advance(st, held.m, held.via);
      }
    }
    st.held.clear();
  }

  // -- moving `last` ---------------------------------------------------------------------
  absorb(st) {
    while (st.last !== null) {
      const next = st.last + 1;
      if (st.own.has(next)) {
        st.own.delete(next);
        st.last = next;
      } else if (st.held.has(next)) {
        const held = st.held.get(next);
        st.held.delete(next);
        this.take(st, held.m, held.via);
      } else {
        return;
      }
    }
  }

  advance(st, m, via) {
    this.take(st, m, via);
    this.absorb(st);
  }

  take(st, m, via) {
    st.last = m.seq;
    if (st.own.has(m.seq)) st.own.delete(m.seq);   // our own send: the app has its ack
    else this.hooks.deliver(st, m, via);
  }

  /** Count the seqs between `last` and seq as given up: lost (DM/group) or missed (room/sys). */
  skip(st, seq) {
    if (seq <= st.last + 1) return;
    this.counters[st.durable ? 'lost' : 'missed'] += seq - st.last - 1;
    if (!st.durable) this.counters.gaps += 1;
    this.hooks.gap(st, st.last + 1, seq - 1);
  }
}

// -- the client --------------------------------------------------------------------------
/** A zonechat client over one WebSocket at a time. Events (`on(type, fn)`):
 *  - `msg` (m, {via: 'push'|'sync'|'join'}): a message, per conversation in seq order, once;
 *  - `state` ({state, reason}): 'offline' | 'connecting' | 'connected' | 'online' | 'reconnecting';
 *  - `welcome` (welcome): every login, reconnects included;
 *  - `kicked` ({reason, reconnect}); `gap` ({conv, first, last, count, durable}): seqs given up;
 *  - `error` (ZonechatError, {during: 'push'|'sync'|'join'|'presence'}): not the answer to a call of yours;
 *  - `read` ({conv, user, seq}): another member's read cursor moved (small DMs and groups);
 *  - `typing` ({conv, user}): someone is typing there (show it for ~3 s);
 *  - `presence` ({user, status, text}, {via: 'sub'|'push'}): a watched user's state;
 *  - `digest` (digest): what a passive room got: {conv, from_seq, to_seq, count, recent}. */
export class ZonechatClient extends Emitter {
  constructor(options = {}) {
    super();
    this.opts = { ...DEFAULTS, ...options };
    this.WS = this.opts.WebSocket || globalThis.WebSocket;
    if (!this.WS) throw new TypeError("no WebSocket here: pass options.WebSocket (under Node: the 'ws' package's)");
    this.counters = Object.fromEntries(COUNTERS.map((k) => [k, 0]));
    this.track = this.newTracker();
    this.book = new SendBook(this.opts.maxUnacked);
    this.rooms = new Set();
    this.user = this.token = this.welcome = this.kickedReason = null;
    this.state = 'offline';
    this.link = null;
    this.online = false;             // logged in on the current link
    this.wantOnline = false;         // logged in once, not logged out, kicked for good or closed
    this.password = this.stopReason = null;
    this.backoff = this.opts.backoffMinMs;
    this.reconnectTimer = this.pinger = this.recvTimer = null;
    this.url = this.opts.url;        // the gate of now: a moving kick changes it
    this.moveTo = [];                // after kicked{moving}: the URLs to try in turn
    this.moveAttempts = 0;
    this.moveWaitMs = null;
    this.recvDirty = new Set();
    this.cidPrefix = randomHex(6);
    this.cidCount = 0;
    this.roomModes = new Map();      // room -> 'passive' (rejoined so); absent: active
    this.watching = [];              // the presence_sub list, sent again after a reconnect
    this.presence = new Map();       // user -> {status, text} of the watched users
    this.reads = new Map();          // conv -> Map(user -> seq): the members' read cursors
    this.typingSent = new Map();     // conv -> when typing() last went out (ms)
  }

  newTracker() {
    return new Tracker({
      deliver: (st, m, via) => this.deliver(st, m, via),
      startFill: (st) => { this.fill(st); },
      sending: (conv) => this.book.to(conv).length > 0,
      gap: (st, first, last) => this.emit('gap', { conv: st.conv, first, last, count: last - first + 1, durable: st.durable }),
    }, this.counters, this.opts);
  }

  /** The current WebSocket, or null (for diagnostics and tests). */
  get socket() {
    return this.link ? this.link.ws : null;
  }

  /** The sends waiting for their ack, oldest first: {conv, cid, body, attempts}. */
  get unacked() {
    return [...this.book.pending.values()].map(({ t, conv, cid, body, seq, attempts }) => (
      t === 'send' ? { conv, cid, body, attempts } : { t, conv, cid, body, seq, attempts }));
  }

  lastSeen(conv) {
    return this.track.lastSeen(conv);
  }

  /** The read cursor of `user` in conv from `read` pushes and sync answers (0: none known). */
  readSeq(conv, user) {
    return this.reads.get(conv)?.get(user) ?? 0;
  }

  noteRead(conv, user, seq) {
    if (typeof conv !== 'string' || typeof user !== 'string' || !Number.isInteger(seq)) return false;
    let map = this.reads.get(conv);
    if (!map) {
      map = new Map();
      this.reads.set(conv, map);
    }
    if ((map.get(user) ?? 0) >= seq) return false;
    map.set(user, seq);
    return true;
  }

  newCid() {
    this.cidCount += 1;
    return `${this.cidPrefix}-${this.cidCount}`;
  }

  setState(state, reason = null) {
    if (state === this.state) return;
    this.state = state;
    this.emit('state', { state, reason });
  }

  // -- connection ------------------------------------------------------------------------
  /** Open the socket (ZonechatError connect_failed if refused); resolves to this client. */
  async connect() {
    if (this.link && this.link.alive) {
      await this.link.ready;
      return this;
    }
    this.stopReason = null;
    if (this.state === 'offline') this.setState('connecting');
    await this.open();
    return this;
  }

  open() {
    const hooks = { onBody: (body, link) => this.onBody(body, link), onLost: (link) => this.onLost(link) };
    const link = new Link(this.url, this.WS, hooks, this.opts, this.counters);
    this.link = link;
    return link.ready.then(() => {
      if (this.state === 'connecting' && this.link === link) this.setState('connected');
      return link;
    });
  }

  onLost(link) {
    if (link !== this.link) return;
    this.link = null;
    this.online = false;
    clearInterval(this.pinger);
    this.pinger = null;
    if (this.wantOnline && this.opts.reconnect && this.token) {
      this.setState('reconnecting');
      const wait = this.moveWaitMs;
      this.moveWaitMs = null;
      this.scheduleReconnect(wait);
    } else {
      this.wantOnline = false;
      this.setState('offline', this.stopReason || this.kickedReason);
    }
  }

  scheduleReconnect(delayMs = null) {
    if (this.reconnectTimer) return;
    const ms = delayMs ?? this.backoff * (0.5 + Math.random() / 2);
    this.backoff = Math.min(this.backoff * 2, this.opts.backoffMaxMs);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.reconnectOnce();
    }, ms);
  }

  async reconnectOnce() {
    if (!this.wantOnline || this.link) return;
    if (this.moveTo.length) {        // moving: the named gates in turn, then the old one
      this.url = this.moveTo[this.moveAttempts % this.moveTo.length];
      this.moveAttempts += 1;
    }
    try {
      await this.open();
      await this.relogin();
      this.counters.reconnects += 1;
    } catch (err) {
      if (FATAL_LOGIN.has(err.code)) this.stop(err.code);
      else if (this.link) this.link.close('reconnect failed');   // onLost tries again
      else if (this.wantOnline) this.scheduleReconnect();
    }
  }

  async relogin() {
    try {
      return await this.login({ user: this.user, token: this.token });
    } catch (err) {
      if (err.code !== 'auth_failed' || !this.password) throw err;
      return this.login({ user: this.user, password: this.password });
    }
  }

  /** No more reconnects; the socket closes; sends stay pending (resume() resends them). */
  stop(reason) {
    this.wantOnline = false;
    this.stopReason = reason;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (this.link) this.link.close(reason);
    else this.setState('offline', reason);
  }

  /** Back online after a stop (a kick, an expired token, a page reload with a saved token). */
  resume({ user, token } = {}) {
    if (user !== undefined && this.user !== null && user !== this.user) {
      this.reset(new ZonechatError('closed', 'another user logged in'));
    }
    if (user !== undefined) this.user = user;
    if (token !== undefined) this.token = token;
    if (this.online || !this.token) return;
    this.wantOnline = true;
    this.stopReason = null;
    this.backoff = this.opts.backoffMinMs;
    if (this.link) {
      this.link.close('resuming');     // onLost reconnects
    } else {
      this.setState('reconnecting');
      this.scheduleReconnect(0);
    }
  }

  /** Close for good: no reconnect; waiting sends reject with `closed`. */
  close() {
    this.stop('closed');
    clearTimeout(this.recvTimer);
    this.recvTimer = null;
    this.book.rejectAll(new ZonechatError('closed', 'the client was closed'));
  }

  // -- requests --------------------------------------------------------------------------
  /** `{t, rid, ...fields}`; resolves to the reply with that rid, an `error` reply included. */
  request(t, fields = {}, timeoutMs = undefined) {
    if (!this.link) return Promise.reject(new ZonechatError('disconnected', 'not connected'));
    return this.link.request(t, fields, timeoutMs);
  }

  /** `request`, rejecting with a ZonechatError on an error reply. */
  async call(t, fields = {}, timeoutMs = undefined) {
    const reply = await this.request(t, fields, timeoutMs);
    if (reply.t === 'error') throw ZonechatError.fromReply(reply);
    return reply;
  }

  register(user, password) {
    return this.call('register', { user, password });
  }

  /** Log in with a password or a token; resolves to `welcome`. Both are kept for reconnects. */
  async login({ user, password, token } = {}) {
    if (this.user !== null && user !== this.user) this.reset(new ZonechatError('closed', 'another user logged in'));
    this.user = user;
    const fields = { user, v: PROTOCOL_VERSION };
    if (password != null) fields.password = password;
    if (token != null) fields.token = token;
    const welcome = await this.call('login', fields);
    if (password != null) this.password = password;
    return welcome;
  }

  /** Log out: the server stores every recv first, answers ok and closes. No reconnect. */
  async logout() {
    this.wantOnline = false;
    this.stopReason = 'logout';
    try {
      this.flushRecv();
      return await this.call('logout');
    } finally {
      this.reset(new ZonechatError('closed', 'logged out'));
      this.token = this.password = null;
      this.stop('logout');
    }
  }

  /** Forget the session's state: rooms, seqs, pending sends (rejected with err). */
  reset(err) {
    this.book.rejectAll(err);
    this.track = this.newTracker();
    this.rooms.clear();
    this.roomModes.clear();
    this.recvDirty.clear();
    this.welcome = null;
    this.watching = [];
    this.presence.clear();
    this.reads.clear();
    this.typingSent.clear();
  }

  ping() {
    return this.call('ping');
  }

  /** The `history` reply; the bookkeeping is not touched (but `history.read`, the members'
   * read cursors, is kept for readSeq). */
  async sync(conv, after, limit = undefined) {
    const history = await this.call('sync', limit === undefined ? { conv, after } : { conv, after, limit });
    this.noteReads(conv, history);
    return history;
  }

  noteReads(conv, history) {
    const read = history && history.read;
    if (!read || typeof read !== 'object') return;
    for (const [user, seq] of Object.entries(read)) this.noteRead(conv, user, seq);
  }

  /** Join a room; mode 'passive': no live `msg`s, a `digest` at most once a second instead
   * (focus() makes it active). The mode is kept for the rejoin after a reconnect. */
  async join(room, { mode } = {}) {
    const joined = await this.call('join', mode ? { room, mode } : { room });
    const passive = mode === 'passive';
    const had = this.rooms.has(room);
    this.rooms.add(room);
    if (passive) this.roomModes.set(room, 'passive');
    else this.roomModes.delete(room);
    this.track.onJoin({ ...joined, conv: room }, passive && had);
    return joined;
  }

  async leave(room) {
    this.rooms.delete(room);
    this.roomModes.delete(room);
    this.track.forget(room);
    return this.call('leave', { room });
  }

  /** A passive room active again: resolves to the `history` of what came after `after`
   * (default: what its last digest covered); those above lastSeen are also `msg` events
   * (via 'focus'), then live pushes follow. */
  async focus(room, after = undefined) {
    const st = this.track.state(room);
    const track = this.track;
    const mine = !st.filling;          // hold live pushes until the answer is in
    if (mine) st.filling = true;
    try {
      const history = await this.call('focus', after === undefined ? { room } : { room, after });
      this.roomModes.delete(room);
      if (track === this.track) track.onFocus(st, history);
      return history;
    } finally {
      if (mine && track === this.track) track.endFill(st);
    }
  }

  /** "I am typing in conv": at most one per conversation per typingMs (false when skipped or
   * offline, true when sent); rejects with the refusal (not_member, rate_limited, ...). */
  async typing(conv) {
    const now = Date.now();
    if (!this.online || !this.link) return false;
    if (now - (this.typingSent.get(conv) ?? -Infinity) < this.opts.typingMs) return false;
    if (this.typingSent.size > 100) {
      for (const [c, at] of this.typingSent) if (now - at >= this.opts.typingMs) this.typingSent.delete(c);
    }
    this.typingSent.set(conv, now);
    let reply;
    try {
      reply = await this.link.fire('typing', { conv }, this.opts.typingWaitMs);
    } catch (err) {
      if (err.code === 'disconnected') return false;
      throw err;
    }
    if (reply && reply.t === 'error') throw ZonechatError.fromReply(reply);
    return true;
  }

  /** Watch these users' presence (replaces the list; [] stops). Resolves to the `presence`
   * reply {users: {name: status}, texts}; each user is also a `presence` event (via 'sub').
   * The list is sent again after every reconnect. */
  async presenceSub(users) {
    const list = [...new Set(users)];
    const reply = await this.call('presence_sub', { users: list });
    this.watching = list;
    this.onPresenceReply(reply);
    return reply;
  }

  onPresenceReply(reply) {
    const states = reply.users && typeof reply.users === 'object' ? reply.users : {};
    const texts = reply.texts && typeof reply.texts === 'object' ? reply.texts : {};
    for (const user of [...this.presence.keys()]) if (!this.watching.includes(user)) this.presence.delete(user);
    for (const [user, status] of Object.entries(states)) {
      const p = { user, status: String(status), text: typeof texts[user] === 'string' ? texts[user] : '' };
      this.presence.set(user, { status: p.status, text: p.text });
      this.emit('presence', p, { via: 'sub' });
    }
  }

  onPresencePush(body) {
    if (typeof body.user !== 'string') return;
    const before = this.presence.get(body.user);
    const text = typeof body.text === 'string' ? body.text : (body.text === null ? '' : before?.text ?? '');
    const p = { user: body.user, status: String(body.status), text };
    this.presence.set(body.user, { status: p.status, text });
    this.emit('presence', p, { via: 'push' });
  }

  async resubscribe() {
    const list = this.watching;
    if (!list.length) return;
    try {
      const reply = await this.call('presence_sub', { users: list });
      if (list === this.watching) this.onPresenceReply(reply);
    } catch (err) {
      if (err.code !== 'disconnected') this.emit('error', err, { during: 'presence' });
    }
  }

  /** Own status text (<= 64 bytes) and/or hidden (everyone sees "offline"); kept with the
   * account. Resolves to `ok`. */
  setStatus({ text, hidden } = {}) {
    const fields = {};
    if (text !== undefined) fields.text = text;
    if (hidden !== undefined) fields.hidden = Boolean(hidden);
    return this.call('set_status', fields);
  }

  /** Tell the server the user has conv up to seq (no reply); autoRecv does it by itself. */
  recv(conv, seq) {
    if (!this.link) throw new ZonechatError('disconnected', 'not connected');
    this.link.write({ t: 'recv', conv, seq });
  }

  // -- sending ---------------------------------------------------------------------------
  /** Resolves to the `ack`, rejects with the refusal. Until then the send is in `unacked`
   * and is resent with its cid after a reconnect, a timeout or `unavailable`. */
  send(conv, body, { cid } = {}) {
    return this.sendAs('send', conv, body, undefined, cid);
  }

  /** Replace the body of own message `seq` (within chat.edit_window): resolves to the ack of
   * the edit event (its own seq), like send (same cid rules, resent after any doubt). */
  edit(conv, seq, body, { cid } = {}) {
    return this.sendAs('edit', conv, body, seq, cid);
  }

  /** Remove own message `seq` (within chat.recall_window): resolves to the event's ack. */
  recall(conv, seq, { cid } = {}) {
    return this.sendAs('recall', conv, null, seq, cid);
  }

  sendAs(t, conv, body, seq, cid) {
    if (t !== 'send' && !Number.isInteger(seq)) {
      return Promise.reject(new ZonechatError('bad_request', `${t}: seq must be a message's seq`));
    }
    const id = cid ?? this.newCid();
    const known = this.book.get(conv, id);
    if (known) return known.promise;
    let p;
    try {
      p = this.book.add(conv, id, body, t, seq);
    } catch (err) {
      return Promise.reject(err);
    }
    this.writeSend(p);
    return p.promise;
  }

  /** Give up a send waiting for its ack (it rejects with `cancelled`); false if there is none. */
  cancel(conv, cid) {
    const p = this.book.get(conv, cid);
    if (p) this.book.end(p, null, new ZonechatError('cancelled', `send ${cid} cancelled`));
    return Boolean(p);
  }

  writeSend(p) {
    clearTimeout(p.timer);
    p.timer = null;
    if (!this.online || p.inflight || !this.book.has(p)) return;   // resent after the next login
    p.inflight = true;
    p.attempts += 1;
    const fields = { conv: p.conv, cid: p.cid };
    if (p.t !== 'recall') fields.body = p.body;
    if (p.t !== 'send') fields.seq = p.seq;
    this.request(SEND_TYPES.has(p.t) ? p.t : 'send', fields)
      .then((reply) => this.sendReplied(p, reply), (err) => this.sendFailed(p, err));
  }

  sendReplied(p, reply) {
    p.inflight = false;
    if (reply.t === 'ack') this.book.end(p, reply);      // onBody has settled it already
    else if (reply.code === 'unavailable') this.retrySend(p, reply.retry_ms);
    else this.book.end(p, null, ZonechatError.fromReply(reply));
  }

  sendFailed(p, err) {
    p.inflight = false;
    if (err.code !== 'disconnected') this.retrySend(p, this.opts.retryMs);   // timeout, queue_full
  }

  retrySend(p, ms) {
    if (!this.book.has(p)) return;
    const wait = clamp(typeof ms === 'number' ? ms : this.opts.retryMs, 50, this.opts.backoffMaxMs);
    p.timer = setTimeout(() => this.writeSend(p), wait);
  }

  // -- what the server sends -------------------------------------------------------------
  onBody(body, link) {
    if (link !== this.link) return;
    if (body.t === 'msg') {
      if (!this.track.onMsg(body)) this.emit('msg', body, { via: 'push' });
    } else if (body.t === 'ack') {
      this.book.acked(body);
      this.track.onAck(body.conv, body.seq);
      if (isDurable(body.conv)) this.noteRecv(body.conv);   // own messages move the cursor too
    } else if (body.t === 'welcome') {
      this.onWelcome(body);
    } else if (body.t === 'kicked') {
      this.onKicked(body);
    } else if (body.t === 'read') {
      if (this.noteRead(body.conv, body.user, body.seq)) this.emit('read', { conv: body.conv, user: body.user, seq: body.seq });
    } else if (body.t === 'typing') {
      if (typeof body.conv === 'string' && typeof body.user === 'string' && body.rid === undefined) {
        this.emit('typing', { conv: body.conv, user: body.user });
      }
    } else if (body.t === 'presence') {
      if (typeof body.rid !== 'number') this.onPresencePush(body);   // a reply: presenceSub's
    } else if (body.t === 'digest') {
      if (this.track.onDigest(body)) this.emit('digest', body);
    } else if (body.t === 'error' && body.rid === undefined) {
      this.emit('error', ZonechatError.fromReply(body), { during: 'push' });
    }
  }

  onWelcome(body) {
    this.user = body.user ?? this.user;
    this.token = body.token ?? this.token;
    this.welcome = body;
    this.online = this.wantOnline = true;
    this.backoff = this.opts.backoffMinMs;
    this.moveTo = [];
    this.moveAttempts = 0;
    this.kickedReason = this.stopReason = null;
    const known = this.track.onWelcome();
    clearInterval(this.pinger);
    this.pinger = setInterval(() => this.keepalive(), this.opts.pingMs);
    this.setState('online');
    this.emit('welcome', body);
    for (const p of this.book.pending.values()) {
      if (p.attempts) this.counters.resent += 1;
      this.writeSend(p);
    }
    for (const room of this.rooms) this.rejoin(room);
    this.resubscribe();
    const convs = body.convs && typeof body.convs === 'object' ? { ...body.convs } : {};
    this.catchUp(convs, known);
  }

  onKicked(body) {
    this.kickedReason = String(body.reason ?? 'unknown');
    const again = RECONNECT_KICKS.has(this.kickedReason) && this.opts.reconnect;
    if (again && this.kickedReason === 'moving') {
      const plan = movingPlan(body, this.url);
      this.moveTo = plan.urls;
      this.moveAttempts = 0;
      this.moveWaitMs = plan.waitMs;
    }
    if (!again) {
      this.wantOnline = false;
      this.stopReason = this.kickedReason;
    }
    this.emit('kicked', { reason: this.kickedReason, reconnect: again });
  }

  keepalive() {
    const link = this.link;
    this.request('ping').catch((err) => {
      if (err.code === 'timeout' && link === this.link) link.close('no answer to a ping');
    });
  }

  async rejoin(room) {
    const passive = this.roomModes.get(room) === 'passive';
    try {
      const joined = await this.call('join', passive ? { room, mode: 'passive' } : { room });
      if (this.rooms.has(room)) this.track.onJoin({ ...joined, conv: room }, passive);
    } catch (err) {
      if (err.code !== 'disconnected') this.emit('error', err, { during: 'join' });
    }
  }

  /** After the offline replay (a ping answers after it): fill what it left out. */
  async catchUp(convs, known) {
    const track = this.track;
    try {
      await this.call('ping');
    } catch {
      return;                 // the connection went: the next welcome catches up
    }
    if (track !== this.track) return;
    for (const conv of track.catchUp(convs, known)) this.noteRecv(conv);
  }

  deliver(st, m, via) {
    if (st.durable) this.noteRecv(st.conv);
    this.emit('msg', m, { via });
  }

  /** Let own acks in flight land (they may close the hole), then sync the rest. */
  async fill(st) {
    const track = this.track;
    let keep = false;
    try {
      await this.book.settled(st.conv, this.opts.fillWaitMs);
      track.absorb(st);
      for (let need = track.fillNeed(st); need > (st.last ?? 0); need = track.fillNeed(st)) {
        const after = track.syncFrom(st, need);
        const history = await this.sync(st.conv, after, Math.min(SYNC_PAGE, need - after));
        if (!track.synced(st, history.msgs || [])) break;
      }
    } catch (err) {
      this.counters.fill_failed += 1;
      keep = err.code === 'disconnected' && this.wantOnline;   // refilled after the next welcome
      if (err.code !== 'disconnected') this.emit('error', err, { during: 'sync' });
    } finally {
      track.endFill(st, keep);
    }
  }

  noteRecv(conv) {
    if (!this.opts.autoRecv) return;
    this.recvDirty.add(conv);
    if (!this.recvTimer) this.recvTimer = setTimeout(() => this.flushRecv(), this.opts.recvDelayMs);
  }

  flushRecv() {
    clearTimeout(this.recvTimer);
    this.recvTimer = null;
    for (const conv of [...this.recvDirty]) {
      if (!this.online) return;             // kept for the next session
      const last = this.track.lastSeen(conv);
      try {
        if (last) this.recv(conv, last);
      } catch {
        return;
      }
      this.recvDirty.delete(conv);
    }
  }
}
