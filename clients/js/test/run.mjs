// The JavaScript client against a running zonechat cluster, under Node with the `ws` package.
//
//   ZONECHAT_WS_URLS=ws://127.0.0.1:7701/ws,ws://127.0.0.1:7711/ws node test/run.mjs
//
// Two gates' WebSocket addresses (the first one twice is allowed). Prints one JSON report on
// stdout, {ok, node, tests: [{name, ok, ms, error?}]}, and exits 0 only when every test
// passed. Run by tests/integration/test_js_client.py against the `cluster` fixture.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';

import { ZonechatClient, dmConv } from '../zonechat.js';

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
  const only = process.argv.slice(2);
  const tests = [];
  if (!URLS.length) {
    tests.push({ name: 'setup', ok: false, ms: 0, error: 'ZONECHAT_WS_URLS is not set' });
  } else {
    for (const [name, fn] of Object.entries(TESTS)) {
      if (!only.length || only.includes(name)) tests.push(await runOne(name, fn));
    }
  }
  const ok = tests.length > 0 && tests.every((t) => t.ok);
  process.stdout.write(`${JSON.stringify({ ok, node: process.version, urls: URLS, tests })}\n`);
  process.exit(ok ? 0 : 1);
}

main();
