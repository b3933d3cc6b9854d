// Plain-language numbers for the operator view: every function takes a value from
// /v1/ops (a number, or null/undefined when unknown) and answers display text.

export const DASH = "–";

const missing = (v) => v === null || v === undefined;

export function num(v) {
  if (missing(v)) return DASH;
  return Number.isInteger(v) ? v.toLocaleString("en-US") : v.toFixed(1);
}

export function rate(v) {
  if (missing(v)) return DASH;
  return v >= 100 ? Math.round(v).toLocaleString("en-US") : v.toFixed(1).replace(/\.0$/, "");
}

export function millis(v) {
  if (missing(v)) return DASH;
  return v >= 100 ? `${Math.round(v)} ms` : `${v.toFixed(1)} ms`;
}

export function percent(v) {
  return missing(v) ? DASH : `${v.toFixed(1)} %`;
}

export function bytes(v) {
  if (missing(v)) return DASH;
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = v, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value >= 100 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

// 45 s, 3 min 20 s, 15 min, 2 h 5 min, 3 d 4 h: two units at most, a zero second one left out
export function duration(seconds) {
  if (missing(seconds)) return DASH;
  const s = Math.max(0, Math.round(seconds));
  const two = (big, bigUnit, small, smallUnit) => (small ? `${big} ${bigUnit} ${small} ${smallUnit}` : `${big} ${bigUnit}`);
  if (s < 60) return `${s} s`;
  if (s < 3600) return two(Math.floor(s / 60), "min", s % 60, "s");
  if (s < 86400) return two(Math.floor(s / 3600), "h", Math.floor((s % 3600) / 60), "min");
  return two(Math.floor(s / 86400), "d", Math.floor((s % 86400) / 3600), "h");
}

export function ago(node) {
  if (missing(node.age_s)) return "no report";
  return node.stale ? `stale (${duration(node.age_s)} ago)` : `${node.age_s.toFixed(1)} s ago`;
}

// {code: count} -> "muted 1, rate_limited 3", or a dash when all are zero.
export function pairs(map) {
  const keys = Object.keys(map || {}).filter((k) => map[k]);
  return keys.length ? keys.sort().map((k) => `${k.replace(/_/g, " ")} ${map[k]}`).join(", ") : DASH;
}

export function clock(ms) {
  return new Date(ms).toLocaleTimeString();
}

// The page's copy of the history (columns: t and one per series) after one /v1/ops answer
// to `?since=<its newest t>`: the answer's rows replace it when `history_whole` (the first
// poll, or center's history started anew), else they are appended; either way only the
// last `seconds` seconds are kept, like center's own.
export function mergeHistory(kept, answer) {
  const fresh = answer.history || {};
  const names = Object.keys(fresh);
  const merged = {};
  for (const name of names) {
    merged[name] = answer.history_whole || !kept ? [...fresh[name]] : [...(kept[name] || []), ...fresh[name]];
  }
  const t = merged.t || [];
  const seconds = answer.history_seconds || 900;
  const drop = t.length ? t.findIndex((s) => s > t[t.length - 1] - seconds) : 0;
  if (drop > 0) for (const name of names) merged[name].splice(0, drop);
  return merged;
}

export function newestSecond(history) {
  const t = (history && history.t) || [];
  return t.length ? t[t.length - 1] : null;
}
