// The operator view's graphs: one uPlot chart (center/static/vendor/, MIT) per <figure
// class="graph">, drawing the columns its data-series names from /v1/ops "history"
// (t in seconds, one point a second, null for a second with no data: a gap).
// Each figure's caption shows the latest value, or the one under the cursor; the figure's
// data-points / data-max say what is drawn (the browser test reads them).

import { clock, millis, num, rate } from "./ops_format.js";

const HEIGHT = 160;
const COLORS = ["#2f6fdf", "#d9822b"];
const FILLS = ["rgba(47, 111, 223, 0.10)", "rgba(217, 130, 43, 0.10)"];
const AXIS = { stroke: "#6b7385", grid: { stroke: "#eceef2", width: 1 }, ticks: { stroke: "#d9dce3", width: 1 } };
const FORMATS = { "g-ack": millis, "g-sessions": num };          // the caption's value
const TICKS = { "g-ack": (v) => `${rate(v)} ms`, "g-sessions": num };  // the y axis' labels

function yRange(_u, _min, max) {
  return [0, max > 0 ? max * 1.15 : 1];
}

// x ticks as local clock times: 12:04 on whole minutes, 12:04:30 otherwise (one row, no date)
function timeTicks(_u, ticks) {
  const whole = ticks.every((t) => t % 60 === 0);
  const opts = whole ? { hour: "2-digit", minute: "2-digit" }
    : { hour: "2-digit", minute: "2-digit", second: "2-digit" };
  return ticks.map((t) => new Date(t * 1000).toLocaleTimeString([], { ...opts, hour12: false }));
}

// The first series is the graph's line, filled; a second one (a part of the first, like
// the zones' refusals among all errors) is dashed over it. Sparse series (the ack p99:
// none in a second without sends) show their points, a lone second being no line.
function seriesOf(names, sparse) {
  return names.map((name, i) => ({
    label: name, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false,
    fill: i === 0 ? FILLS[0] : undefined, dash: i === 0 ? undefined : [5, 4],
    points: sparse ? { show: true, size: 4, fill: COLORS[i % COLORS.length] } : { show: false },
  }));
}

function options(names, width, ticks, sparse, onCursor) {
  return {
    width, height: HEIGHT,
    padding: [10, 34, 0, 4],              // room for the last time label at the right edge
    legend: { show: false },
    cursor: { drag: { x: false, y: false }, points: { size: 6 } },
    scales: { x: { time: true }, y: { range: yRange } },
    axes: [{ ...AXIS, space: 70, values: timeTicks },
           { ...AXIS, size: 60, values: (_u, splits) => splits.map((v) => ticks(v)) }],
    series: [{}, ...seriesOf(names, sparse)],
    hooks: { setCursor: [onCursor] },
  };
}

function lastKnown(column) {
  for (let i = column.length - 1; i >= 0; i -= 1) if (column[i] !== null) return i;
  return -1;
}

class Graph {
  constructor(fig) {
    this.fig = fig;
    this.names = fig.dataset.series.split(" ");
    this.format = FORMATS[fig.id] || rate;
    this.box = fig.querySelector(".plot");
    this.value = fig.querySelector(".value");
    this.plot = null;
  }

  width() {
    return Math.max(this.box.clientWidth, 240);
  }

  update(history) {
    const t = history.t || [];
    const data = [t, ...this.names.map((name) => history[name] || t.map(() => null))];
    if (this.plot === null) {
      const opts = options(this.names, this.width(), TICKS[this.fig.id] || rate, "sparse" in this.fig.dataset,
                           () => this.caption());
      this.plot = new window.uPlot(opts, data, this.box);
    } else {
      this.plot.setData(data);
    }
    const first = data[1];
    const known = first.filter((v) => v !== null);
    this.fig.dataset.points = String(known.length);
    this.fig.dataset.max = String(known.length ? Math.max(...known) : 0);
    this.caption();
  }

  caption() {
    if (this.plot === null) return;
    const [t, first] = this.plot.data;
    const hovered = this.plot.cursor.idx;
    const idx = hovered === null || hovered === undefined ? lastKnown(first) : hovered;
    if (idx < 0 || idx >= t.length) { this.value.textContent = "no data yet"; return; }
    const shown = this.plot.data.slice(1).map((column) => this.format(column[idx])).join(" · ");
    const when = hovered === null || hovered === undefined ? "now" : `at ${clock(t[idx] * 1000)}`;
    this.value.textContent = `${shown} ${when}`;
  }

  resize() {
    if (this.plot !== null) this.plot.setSize({ width: this.width(), height: HEIGHT });
  }
}

export class Graphs {
  constructor(root) {
    this.graphs = [...root.querySelectorAll("figure.graph")].map((fig) => new Graph(fig));
    window.addEventListener("resize", () => this.graphs.forEach((g) => g.resize()));
  }

  update(history) {
    if (typeof window.uPlot !== "function") return;     // the vendored script did not load
    for (const graph of this.graphs) graph.update(history || {});
  }
}
