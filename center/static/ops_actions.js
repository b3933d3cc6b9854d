// Admin actions from the operator view: broadcast, kick, mute / unmute, ban / unban and
// slow mode. A form's submit button names the action (its value); the page first asks
// "Are you sure?" with what will happen (#confirm), and only Confirm sends the request to
// the admin endpoint (center/admin.py) with the Bearer secret. The answer, or the error
// the endpoint gave, is shown in #action-result. All text goes in as textContent.

import { clock } from "./ops_format.js";

const room = (name) => (name.startsWith("r:") ? name : `r:${name}`);

// name -> {path, body(fields), ask(fields), done(fields, answer), check?(fields) -> error text}
const ACTIONS = {
  broadcast: {
    path: "/v1/broadcast", body: (f) => ({ text: f.text }),
    check: (f) => (f.text ? "" : "Write the message to broadcast."),
    ask: (f) => `Send “${f.text}” to everyone online, as system.`,
    done: (_f, a) => `Broadcast sent to everyone (message ${a.seq} of sys).`,
  },
  kick: {
    path: "/v1/kick", body: (f) => ({ user: f.user }),
    ask: (f) => `Kick ${f.user}: their connection is closed now.`,
    done: (f, a) => (a.kicked ? `Kicked ${f.user}.` : `${f.user} is not connected: nobody was kicked.`),
  },
  mute: {
    path: "/v1/mute", body: (f) => ({ user: f.user, seconds: Number(f.minutes) * 60 }),
    check: (f) => (Number(f.minutes) >= 1 ? "" : "Mute for at least one minute (Unmute lifts a mute)."),
    ask: (f) => `Mute ${f.user} for ${Number(f.minutes)} min: what they send is refused.`,
    done: (f, a) => `${f.user} is muted until ${clock(a.until)}.`,
  },
  unmute: {
    path: "/v1/mute", body: (f) => ({ user: f.user, seconds: 0 }),
    ask: (f) => `Unmute ${f.user}.`,
    done: (f) => `${f.user} is no longer muted.`,
  },
  ban: {
    path: "/v1/ban", body: (f) => (f.reason ? { user: f.user, reason: f.reason } : { user: f.user }),
    ask: (f) => `Ban ${f.user} (${f.reason || "banned by an operator"}): their session is kicked and every login refused.`,
    done: (f) => `${f.user} is banned.`,
  },
  unban: {
    path: "/v1/ban", body: (f) => ({ user: f.user, reason: "" }),
    ask: (f) => `Unban ${f.user}: they can log in again.`,
    done: (f) => `${f.user} is unbanned.`,
  },
  slow: {
    path: "/v1/room", body: (f) => ({ room: room(f.room), slow: Number(f.seconds) }),
    check: (f) => (f.seconds !== "" && Number(f.seconds) >= 0 ? "" : "Give the seconds between messages (0 turns slow mode off)."),
    ask: (f) => (Number(f.seconds) > 0
      ? `Slow mode in ${room(f.room)}: each member may send one message every ${Number(f.seconds)} s.`
      : `Turn slow mode off in ${room(f.room)}.`),
    done: (_f, a) => (a.slow ? `Slow mode in ${a.room}: ${a.slow} s between messages.` : `Slow mode is off in ${a.room}.`),
  },
};

function fieldsOf(form) {
  const fields = {};
  for (const [key, value] of new FormData(form)) fields[key] = String(value).trim();
  return fields;
}

function problem(spec, fields) {
  if ("user" in fields && !fields.user) return "Give the user's name.";
  if ("room" in fields && !fields.room) return "Give the room's name.";
  return spec.check ? spec.check(fields) : "";
}

export class Actions {
  // secret(): the Bearer secret; refused(): the secret was refused (401); changed(): an
  // action went through (the page polls again to show it in the log).
  constructor({ secret, refused, changed }) {
    this.secret = secret;
    this.refused = refused;
    this.changed = changed;
    this.pending = null;
    this.el = (id) => document.getElementById(id);
  }

  attach() {
    for (const form of document.querySelectorAll("#actions-panel form")) {
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        this.ask(form, (event.submitter && event.submitter.value) || form.dataset.form);
      });
    }
    this.el("confirm-yes").addEventListener("click", () => this.confirm());
    this.el("confirm-no").addEventListener("click", () => this.cancel());
    this.el("confirm").addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.cancel();
    });
  }

  show(text, kind) {
    const out = this.el("action-result");
    out.textContent = text;
    out.dataset.kind = kind;
    out.hidden = !text;
  }

  ask(form, name) {
    const spec = ACTIONS[name];
    const fields = fieldsOf(form);
    const why = spec ? problem(spec, fields) : `unknown action ${name}`;
    if (why) { this.show(why, "error"); return; }
    this.pending = { name, spec, fields, form };
    this.el("confirm-text").textContent = spec.ask(fields);
    this.el("confirm").dataset.action = name;
    this.el("confirm").hidden = false;
    this.show("", "info");
    this.el("confirm-yes").focus();
  }

  cancel() {
    if (this.pending === null) return;
    this.pending = null;
    this.el("confirm").hidden = true;
    this.show("Cancelled: nothing was sent.", "info");
  }

  confirm() {
    const pending = this.pending;
    if (pending === null) return;
    this.pending = null;
    this.el("confirm").hidden = true;
    this.run(pending);
  }

  async run({ name, spec, fields, form }) {
    const buttons = [...form.querySelectorAll("button")];
    buttons.forEach((b) => { b.disabled = true; });
    this.show("Sending…", "info");
    try {
      const resp = await fetch(spec.path, {
        method: "POST", cache: "no-store",
        headers: { Authorization: `Bearer ${this.secret()}`, "Content-Type": "application/json" },
        body: JSON.stringify(spec.body(fields)),
      });
      if (resp.status === 401) { this.show("", "info"); this.refused(); return; }
      const answer = await resp.json().catch(() => ({}));
      if (!resp.ok) {
        const code = answer.error || "error";
        this.show(`${name} failed (${resp.status} ${code}): ${answer.reason || "no reason given"}`, "error");
        return;
      }
      this.show(spec.done(fields, answer), "ok");
      if (name === "broadcast") form.reset();
      this.changed();
    } catch (err) {
      this.show(`${name} failed: cannot reach center's admin endpoint (${err.message}).`, "error");
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }
}
