/* summary.html of zonechat loadtest: draws its charts with uPlot from the #zc-data block
   (series of tools/load/series.py). Each chart's element gets data-points (how many values
   it drew) and data-drawn="1" once drawn; a chart without data says so instead. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("zc-data").textContent);
  var COLORS = ["#2f6fdf", "#d9480f", "#2b8a3e", "#868e96"];

  function countPoints(cols) {
    var n = 0;
    for (var i = 1; i < cols.length; i++) {
      for (var j = 0; j < cols[i].length; j++) {
        if (cols[i][j] !== null && cols[i][j] !== undefined) { n++; }
      }
    }
    return n;
  }

  /* the steady window (blue) and the knee steps (purple) behind the lines */
  function shade(u) {
    var ctx = u.ctx, box = u.bbox;
    function band(a, b, color) {
      var x0 = Math.max(box.left, u.valToPos(a, "x", true));
      var x1 = Math.min(box.left + box.width, u.valToPos(b, "x", true));
      if (x1 > x0) { ctx.fillStyle = color; ctx.fillRect(x0, box.top, x1 - x0, box.height); }
    }
    ctx.save();
    (data.knee || []).forEach(function (k, i) {
      band(k[0], k[1], i % 2 ? "rgba(134,46,156,0.07)" : "rgba(134,46,156,0.14)");
    });
    if (data.steady) { band(data.steady[0], data.steady[1], "rgba(47,111,223,0.10)"); }
    ctx.restore();
  }

  function fromZero(u, lo, hi) { return [0, hi > 0 ? hi * 1.1 : 1]; }

  function chart(id, spec) {
    var el = document.getElementById(id);
    var cols = [spec.x || []].concat(spec.lines.map(function (l) { return l.values || []; }));
    var points = countPoints(cols);
    el.setAttribute("data-points", String(points));
    if (!points) { el.textContent = "nothing was recorded for this chart"; el.classList.add("empty"); return; }
    var series = [{ label: "s" }];
    spec.lines.forEach(function (l, i) {
      series.push({ label: l.label, scale: l.scale || "y", stroke: l.color || COLORS[i], width: 2,
                    dash: l.dash, points: { show: false } });
    });
    var axes = [{ label: "seconds since the run started" }, { label: spec.y, scale: "y", size: 72 }];
    var scales = { x: { time: false }, y: { range: fromZero } };
    if (spec.y2) {
      axes.push({ label: spec.y2, scale: "y2", side: 1, size: 72, grid: { show: false } });
      scales.y2 = { range: fromZero };
    }
    var width = Math.max(360, el.clientWidth || 900);
    new uPlot({ width: width, height: 260, series: series, axes: axes, scales: scales,
                hooks: { drawClear: [shade] } }, cols, el);
    el.setAttribute("data-drawn", "1");
  }

  function maxOf(values) {
    return (values || []).reduce(function (m, v) { return v !== null && v > m ? v : m; }, 0);
  }

  var thr = data.throughput || {}, lat = data.latency || {}, cpu = data.cpu || {};
  chart("chart-throughput", { x: thr.t, y: "deliveries/s out", y2: "msgs/s in", lines: [
    { label: "deliveries/s out", values: thr.out },
    { label: "msgs/s in", values: thr["in"], scale: "y2", dash: [6, 4] }] });   /* dashed: dm's lines coincide */

  var latLines = [
    { label: data.e2e_label + " p50 (ms)", values: lat.e2e_p50 },
    { label: data.e2e_label + " p99 (ms)", values: lat.e2e_p99 },
    { label: "send→ack p99 (ms)", values: lat.ack_p99 }];
  if (data.bound_ms && maxOf(lat.e2e_p99) >= data.bound_ms / 3) {
    latLines.push({ label: "bound, --p99-ms (ms)", dash: [6, 4],
                    values: (lat.t || []).map(function () { return data.bound_ms; }) });
  }
  chart("chart-latency", { x: lat.t, y: "milliseconds", lines: latLines });

  chart("chart-cpu", { x: cpu.t, y: "cores busy", y2: "load users in the game", lines: [
    { label: "cluster (cores)", values: cpu.cluster },
    { label: "load generator (cores)", values: cpu.generator },
    { label: "load users in the game", values: cpu.users, scale: "y2", color: "#868e96" }] });
}());
