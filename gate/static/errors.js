// Error replies as sentences a person can act on (protocol v1 error codes).

const EXPLAIN = {
  rate_limited: "You're sending messages too fast. Wait a moment, then try again.",
  not_member: "You're not a member of that conversation.",
  bad_conv: 'There is no such conversation (or no such user).',
  too_large: 'That message is too long.',
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
};

/** A person-readable sentence for an error reply. */
export function explain(reply) {
  if (!reply) return 'Something went wrong.';
  if (reply.code === 'muted') {
    const until = typeof reply.until === 'number' && reply.until > 0
      ? ` until ${new Date(reply.until).toLocaleTimeString()}` : '';
    return `You are muted${until}: your messages are not sent.`;
  }
  return EXPLAIN[reply.code] || reply.reason || `Error: ${reply.code}`;
}
