// The JavaScript client against a running zonechat cluster, under Node with the `ws` package.
//
//   ZONECHAT_WS_URLS=ws://127.0.0.1:7701/ws,ws://127.0.0.1:7711/ws node test/run.mjs
//
// Two gates' WebSocket addresses (the first one twice is allowed). Prints one JSON report on
// stdout, {ok, node, tests: [{name, ok, ms, error?}]}, and exits 0 only when every test
// passed. Run by tests/integration/test_js_client.py against the `cluster` fixture.
//
//   node test/run.mjs --unit                  the client alone against a fake socket (no cluster)
//   node test/run.mjs --extensions            the issue-15 extensions against a cluster that has them
//   node test/run.mjs --all                   all three groups; test names pick single tests
//
// Without a flag only the base checks run (tests/integration/test_js_client.py expects exactly
// those names).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';

import { ZonechatClient, dmConv, isRoom } from '../zonechat.js';

const URLS = (process.env.ZONECHAT_WS_URLS || '').split(',').filter(Boolean);
const PASSWORD = 'password123';
const TEST_MS = Number(process.env.ZONECHAT_TEST_MS || 45000);   // each test's bound
const WAIT_MS = 15000;                                            // any one thing awaited

const fresh = (prefix) => `${prefix}${randomBytes(6).toString('hex')}`;
const gate = (i) => URLS[i % URLS.length];

/** Poll pred every 20 ms until it is true; throws after ms naming what did not happen. */
async function until(pred, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** `until` for an async predicate, asked again every 50 ms. */
async function untilAsync(pred, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A client that records every message event; closed by the test's cleanup. */
function client(url, opened, options = {}) {
  const c = new ZonechatClient({ url, WebSocket, ...options });
  c.got = [];
  c.states = [];
  c.on('msg', (m, info) => c.got.push({ ...m, via: info.via }));
  c.on('state', ({ state }) => c.states.push(state));
  opened.push(c);
  return c;
}

async function user(url, opened, name = fresh('js')) {
  const c = client(url, opened);
  await c.connect();
  await c.register(name, PASSWORD);
  await c.login({ user: name, password: PASSWORD });
  return c;
}

const bodiesIn = (c, conv) => c.got.filter((m) => m.conv === conv).map((m) => m.body);
const seqsIn = (c, conv) => c.got.filter((m) => m.conv === conv).map((m) => m.seq);

/** Stop a client hearing its socket (frames are read and dropped), counting the msgs dropped. */
function deafen(c) {
  const ws = c.socket;
  const hear = ws.onmessage;
  const dropped = [];
  ws.onmessage = (ev) => {
    const body = JSON.parse(ev.data);
    if (body.t === 'msg') dropped.push(body);
  };
  return { dropped, restore: () => { ws.onmessage = hear; }, ws };
}

const TESTS = {
  async register_and_login(opened) {
    const name = fresh('jsreg');
    const c = client(gate(0), opened);
    await c.connect();
    assert.equal((await c.register(name, PASSWORD)).t, 'ok');
    await assert.rejects(c.register(name, PASSWORD), { code: 'user_exists' });
    const wrong = client(gate(1), opened);
    await wrong.connect();
    await assert.rejects(wrong.login({ user: name, password: 'not-the-password' }), { code: 'auth_failed' });
    const welcome = await c.login({ user: name, password: PASSWORD });
    assert.equal(welcome.user, name);
    assert.equal(c.state, 'online');
    assert.ok(typeof welcome.token === 'string' && welcome.token.length > 0);
    const again = client(gate(1), opened);
    await again.connect();
    assert.equal((await again.login({ user: name, token: welcome.token })).user, name);
    await until(() => c.state === 'offline', 'the first session to be replaced');
  },

  async dm_across_gates_once_in_order(opened) {
    const a = await user(gate(0), opened);
    const b = await user(gate(1), opened);
    const conv = dmConv(a.user, b.user);
    const acks = await Promise.all([1, 2, 3, 4, 5].map((i) => a.send(conv, `m${i}`)));
    assert.deepEqual(acks.map((ack) => ack.seq), [1, 2, 3, 4, 5]);
    await a.send(conv, 'fence');
    await until(() => bodiesIn(b, conv).includes('fence'), 'the fence at b');
    assert.deepEqual(bodiesIn(b, conv), ['m1', 'm2', 'm3', 'm4', 'm5', 'fence']);
    assert.deepEqual(seqsIn(b, conv), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(bodiesIn(a, conv), []);          // no push of one's own messages
    await b.send(conv, 'back');
    await until(() => bodiesIn(a, conv).includes('back'), 'the answer at a');
    assert.deepEqual(seqsIn(a, conv), [7]);
  },

  async resend_after_a_forced_reconnect(opened) {
    const a = await user(gate(0), opened);
    const b = await user(gate(1), opened);
    const conv = dmConv(a.user, b.user);
    const deaf = deafen(a);                            // a never sees its ack
    const sent = a.send(conv, 'once');
    await until(() => bodiesIn(b, conv).includes('once'), 'the message at b');
    const stored = b.got.find((m) => m.body === 'once');
    assert.equal(a.unacked.length, 1);
    const { cid } = a.unacked[0];
    deaf.ws.terminate();                               // the socket goes under the client
    await until(() => a.state === 'reconnecting', 'a reconnecting');
    const queued = a.send(conv, 'typed while down');
    const ack = await sent;
    assert.equal(ack.cid, cid);
    assert.equal(ack.seq, stored.seq);                 // the original ack
    assert.equal(ack.ts, stored.ts);
    assert.equal((await queued).seq, stored.seq + 1);
    assert.ok(a.counters.resent >= 1 && a.counters.reconnects >= 1, JSON.stringify(a.counters));
    await a.send(conv, 'fence');
    await until(() => bodiesIn(b, conv).includes('fence'), 'the fence at b');
    assert.deepEqual(bodiesIn(b, conv), ['once', 'typed while down', 'fence']);
    const history = await b.sync(conv, 0);
    assert.deepEqual(history.msgs.map((m) => m.body), ['once', 'typed while down', 'fence']);
  },

  async dm_gap_filled_by_sync(opened) {
    const a = await user(gate(0), opened);
    const b = await user(gate(1), opened);
    const conv = dmConv(a.user, b.user);
    await a.send(conv, 'g0');
    await until(() => bodiesIn(b, conv).includes('g0'), 'g0 at b');
    const deaf = deafen(b);
    for (const text of ['g1', 'g2', 'g3']) await a.send(conv, text);
    await until(() => deaf.dropped.length === 3, 'b to drop three pushes');
    deaf.restore();
    await a.send(conv, 'g4');                          // arrives after a hole of three
    await until(() => bodiesIn(b, conv).includes('g4'), 'g4 at b');
    assert.deepEqual(bodiesIn(b, conv), ['g0', 'g1', 'g2', 'g3', 'g4']);
    assert.deepEqual(b.got.filter((m) => m.conv === conv).map((m) => m.via), ['push', 'sync', 'sync', 'sync', 'push']);
    assert.equal(b.counters.filled, 3);
    assert.equal(b.counters.gaps, 1);
    assert.equal(b.counters.lost, 0);
  },

  async missed_while_away_come_in_order_after_the_reconnect(opened) {
    const a = await user(gate(0), opened);
    const b = await user(gate(1), opened);
    const conv = dmConv(a.user, b.user);
    await a.send(conv, 'before');
    await until(() => bodiesIn(b, conv).includes('before'), 'before at b');
    const deaf = deafen(b);                            // b hears nothing, moves no cursor
    for (const text of ['away 1', 'away 2', 'away 3']) await a.send(conv, text);
    await until(() => deaf.dropped.length === 3, 'b to drop three pushes');
    deaf.ws.terminate();
    await until(() => bodiesIn(b, conv).includes('away 3') && b.state === 'online', 'the replay at b');
    await a.send(conv, 'after');
    await until(() => bodiesIn(b, conv).includes('after'), 'after at b');
    assert.deepEqual(bodiesIn(b, conv), ['before', 'away 1', 'away 2', 'away 3', 'after']);
    assert.deepEqual(seqsIn(b, conv), [1, 2, 3, 4, 5]);
    assert.ok(b.counters.reconnects >= 1);
  },

  async group_gap_filled_by_sync(opened) {
    const a = await user(gate(0), opened);
    const b = await user(gate(1), opened);
    const group = `g:${fresh('jsgroup')}`;
    await a.call('group_create', { group, members: [b.user] });
    await a.send(group, 'hello group');
    await until(() => bodiesIn(b, group).includes('hello group'), 'the group message at b');
    const deaf = deafen(b);
    await a.send(group, 'unheard 1');
    await a.send(group, 'unheard 2');
    await until(() => deaf.dropped.length === 2, 'b to drop two pushes');
    deaf.restore();
    await a.send(group, 'heard');
    await until(() => bodiesIn(b, group).includes('heard'), 'the last group message at b');
    assert.deepEqual(bodiesIn(b, group), ['hello group', 'unheard 1', 'unheard 2', 'heard']);
    assert.deepEqual(seqsIn(b, group), [1, 2, 3, 4]);
    assert.equal(b.counters.filled, 2);
  },

  async session_replaced_stops_until_resume(opened) {
    const first = await user(gate(0), opened);
    const kicks = [];
    first.on('kicked', (k) => kicks.push(k));
    const second = client(gate(1), opened);
    await second.connect();
    await second.login({ user: first.user, token: first.token });
    await until(() => first.state === 'offline', 'the first session to go offline');
    assert.deepEqual(kicks, [{ reason: 'session_replaced', reconnect: false }]);
    assert.equal(first.reconnectTimer, null);          // no reconnect is coming
    first.resume();                                    // "use this device again"
    await until(() => first.state === 'online' && second.state === 'offline', 'the first session back');
    const ack = await first.send(dmConv(first.user, fresh('nobody')), 'x').catch((err) => err);
    assert.equal(ack.code, 'bad_conv');                // online for real: the server answers
  },

  async room_join_and_message(opened) {
    const a = await user(gate(0), opened);
    const b = await user(gate(1), opened);
    const room = `r:${fresh('jsroom')}`;
    assert.equal((await a.join(room)).members, 1);
    const joined = await b.join(room);
    assert.equal(joined.members, 2);
    assert.equal(joined.last_seq, 0);
    const ack = await a.send(room, { text: 'hello room', x: 1 });
    await until(() => b.got.some((m) => m.conv === room), 'the room message at b');
    const got = b.got.find((m) => m.conv === room);
    assert.equal(got.from, a.user);
    assert.equal(got.seq, ack.seq);
    assert.deepEqual(got.body, { text: 'hello room', x: 1 });
    await b.leave(room);
    let members = 0;                                   // the count of every gate, in a moment
    await untilAsync(async () => (members = (await a.call('room_info', { room })).members) === 1,
      'the room to count one member');
    assert.equal(members, 1);
  },

  async logout_ends_the_session(opened) {
    const a = await user(gate(0), opened);
    const pending = a.send('sys', 'not allowed');
    await assert.rejects(pending, { code: 'not_member' });
    assert.equal((await a.logout()).t, 'ok');
    await until(() => a.state === 'offline', 'a offline');
    assert.equal(a.token, null);
    assert.equal(a.socket, null);
    await assert.rejects(a.ping(), { code: 'disconnected' });
  },
};


// -- the client against a fake socket (--unit) -------------------------------------------
/** A scripted server: every socket the client opens is one of its `sockets`; requests are
 * answered by `handlers[t](ws, body)` (login, ping, join and sync have defaults); a handler
 * returning undefined answers nothing. ws.push(body) is a frame to the client. */
class FakeServer {
  constructor() {
    this.sockets = [];
    this.frames = [];
    this.logins = 0;
    this.handlers = {};
    const server = this;
    this.WS = class FakeSocket {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        server.sockets.push(this);
        setTimeout(() => { this.readyState = 1; this.onopen?.(); }, 0);
      }

      send(text) {
        const body = JSON.parse(text);
        server.frames.push(body);
        server.answer(this, body);
      }

      push(body) {
        if (this.readyState === 1) this.onmessage?.({ data: JSON.stringify(body) });
      }

      close() {
        if (this.readyState === 3) return;
        this.readyState = 3;
        setTimeout(() => this.onclose?.(), 0);
      }
    };
  }

  get ws() {
    return this.sockets[this.sockets.length - 1];
  }

  sent(t) {
    return this.frames.filter((f) => f.t === t);
  }

  answer(ws, body) {
    const own = this.handlers[body.t];
    let reply;
    if (own) reply = own(ws, body);
    else if (body.t === 'login') {
      this.logins += 1;
      reply = { t: 'welcome', user: body.user, token: `${body.user}.tok`, expires: 0, convs: this.convs || {}, ts: Date.now() };
    } else if (body.t === 'ping') reply = { t: 'pong' };
    else if (body.t === 'join') reply = { t: 'joined', room: body.room, members: 1, last_seq: 0, recent: [] };
    else if (body.t === 'sync') reply = { t: 'history', conv: body.conv, msgs: [] };
    if (reply) setTimeout(() => ws.push({ ...reply, rid: body.rid }), 0);
  }
}

const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

async function fakeUser(opened, options = {}) {
  const server = new FakeServer();
  const c = client('ws://fake.invalid/ws', opened, { WebSocket: server.WS, backoffMinMs: 5, backoffMaxMs: 20, ...options });
  c.events = [];
  for (const type of ['read', 'typing', 'presence', 'digest', 'gap', 'error']) {
    c.on(type, (ev, info) => c.events.push({ type, ev, info }));
  }
  await c.connect();
  await c.login({ user: 'ann', password: PASSWORD });
  return { c, server };
}

const eventsOf = (c, type) => c.events.filter((e) => e.type === type);

const UNIT_TESTS = {
  async unit_edit_and_recall_resent_with_their_cid(opened) {
    const { c, server } = await fakeUser(opened);
    const conv = dmConv('ann', 'bob');
    let answer = false;
    const ack = (ws, body) => (answer ? { t: 'ack', conv: body.conv, cid: body.cid, seq: 7, ts: 123 } : undefined);
    server.handlers.edit = ack;
    server.handlers.recall = ack;
    const edited = c.edit(conv, 3, 'new words');
    await until(() => server.sent('edit').length === 1, 'the edit on the wire');
    const [first] = server.sent('edit');
    assert.deepEqual({ conv: first.conv, seq: first.seq, body: first.body }, { conv, seq: 3, body: 'new words' });
    assert.deepEqual(c.unacked.map((u) => [u.t, u.seq, u.cid]), [['edit', 3, first.cid]]);
    answer = true;
    server.ws.close();                                  // no ack: the reconnect sends it again
    const got = await edited;
    assert.equal(got.seq, 7);
    const again = server.sent('edit');
    assert.equal(again.length, 2);
    assert.equal(again[1].cid, first.cid);
    assert.equal(again[1].seq, 3);
    assert.equal(c.counters.resent, 1);
    const rec = await c.recall(conv, 4);
    assert.equal(rec.t, 'ack');
    const [recall] = server.sent('recall');
    assert.equal(recall.seq, 4);
    assert.ok(!('body' in recall), JSON.stringify(recall));
    server.handlers.edit = () => ({ t: 'error', code: 'too_late', reason: 'past the edit window' });
    await assert.rejects(c.edit(conv, 1, 'late'), { code: 'too_late' });
    await assert.rejects(c.recall(conv, 'x'), { code: 'bad_request' });
    assert.deepEqual(c.unacked, []);
  },

  async unit_edit_and_recall_msgs_are_tracked_like_any(opened) {
    const { c, server } = await fakeUser(opened);
    const conv = dmConv('ann', 'bob');
    server.handlers.sync = (ws, body) => ({ t: 'history', conv: body.conv, msgs: [
      { t: 'msg', conv, seq: 2, from: 'bob', ts: 2, cid: 'b2', body: 'two', edited: 5 },
      { t: 'msg', conv, seq: 3, from: 'bob', ts: 3, cid: 'b3', body: null, recalled: true },
    ].filter((m) => m.seq > body.after), read: { ann: 1, bob: 4 } });
    const m = (seq, extra = {}) => ({ t: 'msg', conv, seq, from: 'bob', ts: seq, cid: `b${seq}`, body: `m${seq}`, ...extra });
    server.ws.push(m(1));
    server.ws.push(m(4, { kind: 'edit', ref: 2, body: 'two!' }));      // 2 and 3 come by sync
    server.ws.push(m(5, { kind: 'recall', ref: 3, body: null }));
    await until(() => c.got.length === 5, 'five messages');
    assert.deepEqual(c.got.map((x) => [x.seq, x.kind ?? null, x.ref ?? null, x.via]),
      [[1, null, null, 'push'], [2, null, null, 'sync'], [3, null, null, 'sync'], [4, 'edit', 2, 'push'], [5, 'recall', 3, 'push']]);
    assert.equal(c.lastSeen(conv), 5);
    server.ws.push(m(5, { kind: 'recall', ref: 3, body: null }));
    await tick(20);
    assert.equal(c.got.length, 5);
    assert.equal(c.counters.dups, 1);
    await until(() => server.sent('recv').some((r) => r.seq === 5), 'the recv of 5');
  },

  async unit_read_typing_presence_pushes_reach_the_app(opened) {
    const { c, server } = await fakeUser(opened);
    const conv = dmConv('ann', 'bob');
    server.ws.push({ t: 'read', conv, user: 'bob', seq: 4 });
    server.ws.push({ t: 'read', conv, user: 'bob', seq: 3 });          // older: dropped
    server.ws.push({ t: 'typing', conv, user: 'bob' });
    server.ws.push({ t: 'presence', user: 'bob', status: 'online', text: 'at lunch' });
    server.ws.push({ t: 'presence', user: 'bob', status: 'offline' });  // no text: it stays
    await until(() => c.events.length === 4, 'four events');
    assert.deepEqual(eventsOf(c, 'read').map((e) => e.ev), [{ conv, user: 'bob', seq: 4 }]);
    assert.equal(c.readSeq(conv, 'bob'), 4);
    assert.deepEqual(eventsOf(c, 'typing').map((e) => e.ev), [{ conv, user: 'bob' }]);
    assert.deepEqual(eventsOf(c, 'presence').map((e) => [e.ev, e.info.via]),
      [[{ user: 'bob', status: 'online', text: 'at lunch' }, 'push'], [{ user: 'bob', status: 'offline', text: 'at lunch' }, 'push']]);
    server.handlers.sync = (ws, body) => ({ t: 'history', conv: body.conv, msgs: [], read: { ann: 0, bob: 9 } });
    await c.sync(conv, 0);
    assert.equal(c.readSeq(conv, 'bob'), 9);
    assert.deepEqual(eventsOf(c, 'error'), []);
  },

  async unit_typing_at_most_once_per_two_seconds(opened) {
    const { c, server } = await fakeUser(opened, { typingWaitMs: 50 });
    const conv = dmConv('ann', 'bob');
    assert.equal(await c.typing(conv), true);           // no answer: accepted
    assert.equal(await c.typing(conv), false);          // within 2 s: not sent
    assert.equal(server.sent('typing').length, 1);
    assert.ok(!('body' in server.sent('typing')[0]));
    server.handlers.typing = () => ({ t: 'error', code: 'not_member', reason: 'not in that room' });
    await assert.rejects(c.typing('r:elsewhere'), { code: 'not_member' });
    assert.equal(server.sent('typing').length, 2);
    assert.deepEqual(eventsOf(c, 'error'), []);         // a refused typing is no push error
    c.typingSent.set(conv, Date.now() - c.opts.typingMs);
    server.handlers.typing = undefined;
    assert.equal(await c.typing(conv), true);
  },

  async unit_presence_sub_status_and_resubscribe(opened) {
    const { c, server } = await fakeUser(opened);
    server.handlers.presence_sub = (ws, body) => ({ t: 'presence',
      users: Object.fromEntries(body.users.map((u) => [u, u === 'bob' ? 'online' : 'offline'])),
      texts: body.users.includes('bob') ? { bob: 'here' } : {} });
    server.handlers.set_status = () => ({ t: 'ok' });
    const reply = await c.presenceSub(['bob', 'cat', 'bob']);
    assert.deepEqual(server.sent('presence_sub')[0].users, ['bob', 'cat']);
    assert.deepEqual(reply.users, { bob: 'online', cat: 'offline' });
    assert.deepEqual(Object.fromEntries(c.presence), { bob: { status: 'online', text: 'here' }, cat: { status: 'offline', text: '' } });
    assert.deepEqual(eventsOf(c, 'presence').map((e) => e.info.via), ['sub', 'sub']);
    assert.equal(eventsOf(c, 'presence').length, 2);      // the reply is no push
    assert.equal((await c.setStatus({ text: 'busy', hidden: false })).t, 'ok');
    assert.deepEqual(server.sent('set_status').map(({ text, hidden }) => ({ text, hidden })), [{ text: 'busy', hidden: false }]);
    await c.setStatus({ hidden: true });
    assert.ok(!('text' in server.sent('set_status')[1]));
    server.ws.close();                                    // a new session: the list is sent again
    await until(() => server.sent('presence_sub').length === 2, 'presence_sub after the reconnect');
    assert.deepEqual(server.sent('presence_sub')[1].users, ['bob', 'cat']);
    await c.presenceSub([]);
    assert.deepEqual([...c.presence.keys()], []);
  },

  async unit_passive_room_digest_and_focus(opened) {
    const { c, server } = await fakeUser(opened);
    const room = 'r:hall';
    server.handlers.join = (ws, body) => ({ t: 'joined', room: body.room, members: 3, last_seq: 3, recent: [] });
    await c.join(room, { mode: 'passive' });
    assert.equal(server.sent('join')[0].mode, 'passive');
    assert.equal(c.lastSeen(room), 3);
    const recent = [{ t: 'msg', conv: room, seq: 9, from: 'bob', ts: 9, body: 'nine' }];
    server.ws.push({ t: 'digest', conv: room, from_seq: 4, to_seq: 9, count: 6, recent });
    await until(() => eventsOf(c, 'digest').length === 1, 'the digest');
    assert.equal(c.lastSeen(room), 9);
    assert.deepEqual(c.got, []);                          // a digest is no msg event
    server.ws.push({ t: 'digest', conv: room, from_seq: 4, to_seq: 9, count: 6, recent });   // again: dropped
    server.ws.push({ t: 'digest', conv: room, from_seq: 12, to_seq: 12, count: 1, recent: [] });
    await until(() => c.lastSeen(room) === 12, 'the third digest');
    assert.equal(eventsOf(c, 'digest').length, 2);
    assert.deepEqual(eventsOf(c, 'gap').map((e) => [e.ev.first, e.ev.last]), [[10, 11]]);
    server.ws.close();                                    // the rejoin keeps the mode
    await until(() => server.sent('join').length === 2 && c.state === 'online', 'the rejoin');
    await tick(20);
    assert.equal(server.sent('join')[1].mode, 'passive');
    assert.equal(c.lastSeen(room), 12);
    assert.equal(c.got.length, 0);
    const m = (seq) => ({ t: 'msg', conv: room, seq, from: 'bob', ts: seq, body: `m${seq}` });
    server.handlers.focus = (ws, body) => {
      setTimeout(() => ws.push(m(16)), 0);               // a live one before the answer: held
      return { t: 'history', conv: body.room, msgs: [m(13), m(14), m(15)], last_seq: 15 };
    };
    const h = await c.focus(room);
    assert.deepEqual(server.sent('focus').map((f) => [f.room, f.after]), [[room, undefined]]);
    assert.equal(h.last_seq, 15);
    await until(() => c.got.length === 4, 'four messages after the focus');
    assert.deepEqual(c.got.map((x) => [x.seq, x.via]), [[13, 'focus'], [14, 'focus'], [15, 'focus'], [16, 'push']]);
    server.ws.close();                                    // active now: rejoined without a mode
    await until(() => server.sent('join').length === 3, 'the second rejoin');
    assert.ok(!('mode' in server.sent('join')[2]));
  },
};

// -- the issue-15 extensions against a cluster (--extensions) ----------------------------
function watch(c, ...types) {
  c.events = c.events || [];
  for (const type of types) c.on(type, (ev, info) => c.events.push({ type, ev, info }));
  return c;
}

const EXTENSION_TESTS = {
  async ext_edit_and_recall_across_gates(opened) {
    const a = await user(gate(0), opened);
    const b = await user(gate(1), opened);
    const conv = dmConv(a.user, b.user);
    const sent = await a.send(conv, 'first words');
    await until(() => bodiesIn(b, conv).includes('first words'), 'the message at b');
    const edit = await a.edit(conv, sent.seq, 'better words');
    assert.equal(edit.seq, sent.seq + 1);
    await until(() => b.got.some((m) => m.kind === 'edit'), 'the edit at b');
    const ev = b.got.find((m) => m.kind === 'edit');
    assert.deepEqual([ev.seq, ev.ref, ev.body, ev.from], [edit.seq, sent.seq, 'better words', a.user]);
    let history = await b.sync(conv, 0);
    assert.equal(history.msgs[0].body, 'better words');
    assert.equal(typeof history.msgs[0].edited, 'number');
    const recall = await a.recall(conv, sent.seq);
    await until(() => b.got.some((m) => m.kind === 'recall'), 'the recall at b');
    const rev = b.got.find((m) => m.kind === 'recall');
    assert.deepEqual([rev.seq, rev.ref, rev.body], [recall.seq, sent.seq, null]);
    history = await b.sync(conv, 0);
    assert.equal(history.msgs[0].body, null);
    assert.equal(history.msgs[0].recalled, true);
    await assert.rejects(a.edit(conv, sent.seq, 'again'), { code: 'not_found' });
    const theirs = await b.send(conv, 'mine');
    await assert.rejects(a.recall(conv, theirs.seq), { code: 'not_sender' });
    assert.deepEqual(seqsIn(b, conv), [1, 2, 3]);
  },

  async ext_unread_and_read_receipts(opened) {
    const a = watch(await user(gate(0), opened), 'read');
    const name = fresh('jsrd');
    const reg = client(gate(1), opened);
    await reg.connect();
    await reg.register(name, PASSWORD);
    const conv = dmConv(a.user, name);
    for (const text of ['u1', 'u2', 'u3']) await a.send(conv, text);
    const b = client(gate(1), opened);
    await b.connect();
    const welcome = await b.login({ user: name, password: PASSWORD });
    assert.equal(welcome.unread[conv], 3);
    assert.equal(welcome.read[conv], 0);
    await until(() => bodiesIn(b, conv).length === 3, 'the offline replay at b');
    await until(() => a.readSeq(conv, name) === 3, 'the read push at a');
    assert.deepEqual(a.events.filter((e) => e.type === 'read').pop().ev, { conv, user: name, seq: 3 });
    const history = await a.sync(conv, 0);
    assert.equal(history.read[name], 3);
  },

  async ext_typing_reaches_the_other(opened) {
    const a = await user(gate(0), opened);
    const b = watch(await user(gate(1), opened), 'typing');
    const conv = dmConv(a.user, b.user);
    assert.equal(await a.typing(conv), true);
    assert.equal(await a.typing(conv), false);
    await until(() => b.events.some((e) => e.type === 'typing'), 'the typing push at b');
    assert.deepEqual(b.events.find((e) => e.type === 'typing').ev, { conv, user: a.user });
    await assert.rejects(a.typing(`r:${fresh('nojoin')}`), { code: 'not_member' });
  },

  async ext_presence_online_offline_status(opened) {
    const a = watch(await user(gate(0), opened), 'presence');
    const name = fresh('jspr');
    const reg = client(gate(1), opened);
    await reg.connect();
    await reg.register(name, PASSWORD);
    reg.close();
    const reply = await a.presenceSub([name]);
    assert.equal(reply.users[name], 'offline');
    const b = client(gate(1), opened);
    await b.connect();
    await b.login({ user: name, password: PASSWORD });
    await until(() => a.presence.get(name)?.status === 'online', `${name} online at a`);
    await b.setStatus({ text: 'brb' });
    await until(() => a.presence.get(name)?.text === 'brb', 'the status text at a');
    await b.setStatus({ hidden: true });
    await until(() => a.presence.get(name)?.status === 'offline', 'hidden shows offline');
    await b.setStatus({ hidden: false });
    await until(() => a.presence.get(name)?.status === 'online', 'visible again');
    await b.logout();
    await until(() => a.presence.get(name)?.status === 'offline', `${name} offline at a`);
  },

  async ext_passive_room_digest_then_focus(opened) {
    const a = await user(gate(0), opened);
    const b = watch(await user(gate(1), opened), 'digest');
    const room = `r:${fresh('jspass')}`;
    await a.join(room);
    const joined = await b.join(room, { mode: 'passive' });
    for (const text of ['p1', 'p2', 'p3']) await a.send(room, text);
    await until(() => b.lastSeen(room) === joined.last_seq + 3, 'digests up to the third');
    const digests = b.events.filter((e) => e.type === 'digest').map((e) => e.ev);
    assert.equal(digests[0].from_seq, joined.last_seq + 1);
    assert.ok(digests.every((d) => d.recent.length <= 5));
    assert.deepEqual(b.got.filter((m) => isRoom(m.conv)), []);
    const history = await b.focus(room, 0);
    assert.deepEqual(history.msgs.map((m) => m.body), ['p1', 'p2', 'p3']);
    await a.send(room, 'live');
    await until(() => bodiesIn(b, room).includes('live'), 'a live message after focus');
  },
};

async function runOne(name, fn) {
  const opened = [];
  const started = Date.now();
  let timer;
  try {
    const bound = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`over ${TEST_MS} ms`)), TEST_MS); });
    await Promise.race([fn(opened), bound]);
    return { name, ok: true, ms: Date.now() - started };
  } catch (err) {
    return { name, ok: false, ms: Date.now() - started, error: String(err && err.stack ? err.stack : err) };
  } finally {
    clearTimeout(timer);
    for (const c of opened) c.close();
  }
}

async function main() {
  const args = process.argv.slice(2);
  const flags = new Set(args.filter((a) => a.startsWith('--')));
  const only = args.filter((a) => !a.startsWith('--'));
  const all = flags.has('--all');
  const groups = [                     // [tests, wanted when nothing is named, needs a cluster]
    [TESTS, all || (!flags.has('--unit') && !flags.has('--extensions')), true],
    [UNIT_TESTS, all || flags.has('--unit'), false],
    [EXTENSION_TESTS, all || flags.has('--extensions'), true],
  ];
  const chosen = [];
  for (const [group, wanted, cluster] of groups) {
    for (const [name, fn] of Object.entries(group)) {
      if (only.length ? only.includes(name) : wanted) chosen.push([name, fn, cluster]);
    }
  }
  const tests = [];
  if (!URLS.length && chosen.some(([, , cluster]) => cluster)) {
    tests.push({ name: 'setup', ok: false, ms: 0, error: 'ZONECHAT_WS_URLS is not set' });
  } else {
    for (const [name, fn] of chosen) tests.push(await runOne(name, fn));
  }
  const ok = tests.length > 0 && tests.every((t) => t.ok);
  process.stdout.write(`${JSON.stringify({ ok, node: process.version, urls: URLS, tests })}\n`);
  process.exit(ok ? 0 : 1);
}

main();
