// Error replies as sentences a person can act on (protocol v1 error codes). The server's
// `reason` comes first; the canned phrase below is only the fallback for a reply without
// one. Where the reply carries a time (`until` of `muted`, `retry_ms`), the sentence says
// how long is left.

const EXPLAIN = {
  rate_limited: "You're sending messages too fast. Wait a moment, then try again.",
  not_member: "You're not a member of that conversation.",
  bad_conv: 'There is no such conversation (or no such user).',
  too_large: 'That message is too long.',
  muted: 'You are muted: your messages are not sent.',
  unavailable: 'The server is busy right now; trying again shortly.',
  auth_failed: 'Wrong user name or password.',
  auth_required: 'Please log in first.',
  user_exists: 'That user name is already taken.',
  bad_name: 'User names use letters, digits, "_", "." and "-" (1 to 32).',
  weak_password: 'Passwords need at least 8 characters.',
  unknown_type: 'The server does not support that yet.',
  disconnected: 'Not connected to the server.',
  timeout: 'The server did not answer in time.',
  no_such_user: 'There is no such user.',
  blocked: 'That user does not take your messages.',
  filtered: 'Your message contains words this server does not allow.',
  too_many_rooms: 'You are in too many rooms. Leave one first.',
  too_many_connections: 'Too many connections from your address. Try again later.',
  not_found: 'That message is no longer there.',
  not_sender: 'You can only change your own messages.',
  too_late: 'That message is too old to change now.',
  bad_request: 'The server did not understand that request.',
};

// unit, its size in ms, and from how much on it is used (under 2 hours: minutes, and so on)
const UNITS = [['day', 86400000, 172800000], ['hour', 3600000, 7200000], ['minute', 60000, 60000],
  ['second', 1000, 0]];

/** "9 minutes", "1 second", "3 more hours" (with more = 'more '), rounded up. */
export function amount(ms, more = '') {
  const [unit, size] = UNITS.find(([, , from]) => ms >= from);
  const n = Math.max(1, Math.ceil(ms / size));
  return `${n} ${more}${unit}${n === 1 ? '' : 's'}`;
}

/** When what the reply says stops being true (ms since the epoch), or 0 if it carries no time. */
export function deadline(reply, now = Date.now()) {
  if (reply.code === 'muted') return typeof reply.until === 'number' && reply.until > 0 ? reply.until : 0;
  return typeof reply.retry_ms === 'number' && reply.retry_ms > 0 ? now + reply.retry_ms : 0;
}

/** The reply's own words (its reason, as a sentence), else the canned phrase for its code. */
export function sentence(reply) {
  const reason = typeof reply.reason === 'string' ? reply.reason.trim() : '';
  if (!reason) return EXPLAIN[reply.code] || `Error: ${reply.code}`;
  const text = reason[0].toUpperCase() + reason.slice(1);
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

/** "muted for 9 more minutes" / "retry in 2 seconds" while `end` is ahead, else ''. */
export function detail(reply, end, now = Date.now()) {
  if (!end || end <= now) return '';
  return reply.code === 'muted' ? `muted for ${amount(end - now, 'more ')}` : `retry in ${amount(end - now)}`;
}

/** One sentence from the reason and the detail: "You are muted" + "muted for 9 more minutes"
 * reads "You are muted for 9 more minutes."; otherwise "Reason: detail." */
export function compose(text, extra) {
  if (!extra) return text;
  const base = text.replace(/[.!?]$/, '');
  const [first, ...rest] = extra.split(' ');
  const last = base.split(/\s+/).pop().toLowerCase();
  return last === first ? `${base} ${rest.join(' ')}.` : `${base}: ${extra}.`;
}

/** A person-readable sentence for an error reply, as of now. */
export function explain(reply, now = Date.now()) {
  if (!reply) return 'Something went wrong.';
  return compose(sentence(reply), detail(reply, deadline(reply, now), now));
}
