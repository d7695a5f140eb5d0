// Charts of layerwise's memory readings, shared by the page (app.js) and the HTML reports
// (report.js, inlined with this file and Chart.js). Input: the timeline JSON of
// layerwise/cost/timeline.py (columns phase, op, path, series by component, total, peak).
"use strict";

const LW = (() => {
  const COLOURS = {
    weights: "#4e79a7", master_weights: "#76b7b2", gradients: "#b07aa1", optimizer_states: "#edc948",
    activations: "#59a14f", temporaries: "#e15759", kv_cache: "#9c755f",
  };
  const PHASES = ["forward", "backward", "optimizer"];

  // formatting, as layerwise/report/fmt.py
  function human(n) {
    for (const [u, s] of [["TiB", 2 ** 40], ["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]]) {
      if (Math.abs(n) >= s) return (n / s).toFixed(2) + " " + u;
    }
    return Math.round(n) + " B";
  }
  function count(n) {
    for (const [u, s] of [["E", 1e18], ["P", 1e15], ["T", 1e12], ["G", 1e9], ["M", 1e6], ["K", 1e3]]) {
      if (Math.abs(n) >= s) return (n / s).toFixed(2) + u;
    }
    return String(Math.round(n));
  }
  const int = (n) => Number(n).toLocaleString("en-US");
  const bytesAxis = { ticks: { callback: (v) => human(v) } };

  function phasePeaks(t) {
    // each phase's highest moment (the stacked chart's bars)
    const best = {};
    t.total.forEach((v, i) => {
      const ph = t.phase[i];
      if (!(ph in best) || v > t.total[best[ph]]) best[ph] = i;
    });
    return PHASES.filter((p) => p in best).map((p) => best[p]);
  }

  function usedComponents(...lines) {
    return lines[0].components.filter((c) => lines.some((t) => t.series[c].some((v) => v > 0)));
  }

  function moment(t, i) {
    return `${t.phase[i]} · ${t.op[i]} · ${t.path[i] || "(model)"} · ${human(t.total[i])}`;
  }

  function phasesChart(canvas, t) {
    const idx = phasePeaks(t);
    const data = {
      labels: idx.map((i) => `${t.phase[i]} (${t.path[i] || t.op[i]})`),
      datasets: usedComponents(t).map((c) => ({
        label: c, data: idx.map((i) => t.series[c][i]), backgroundColor: COLOURS[c], stack: "bytes",
      })),
    };
    return new Chart(canvas, {
      type: "bar", data,
      options: { animation: false, maintainAspectRatio: false,
        scales: { x: { stacked: true }, y: { stacked: true, ...bytesAxis } },
        plugins: { tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${human(c.raw)}` } } } },
    });
  }

  function timelineChart(canvas, t) {
    // live bytes by component, stacked, after every moment; the peak marked with a triangle
    const datasets = usedComponents(t).map((c, k) => ({
      label: c, data: t.series[c].map((v, i) => ({ x: i, y: v })), borderColor: COLOURS[c],
      backgroundColor: COLOURS[c] + "cc", fill: k === 0 ? "origin" : "-1", pointRadius: 0, borderWidth: 1,
      stack: "bytes", stepped: true,
    }));
    datasets.push({ label: "peak", type: "scatter", data: [{ x: t.peak.index, y: t.peak.bytes }], stack: "peak",
      pointStyle: "triangle", pointRadius: 8, backgroundColor: "#000", borderColor: "#000" });
    return new Chart(canvas, {
      type: "line", data: { datasets },
      options: { animation: false, maintainAspectRatio: false, normalized: true,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        scales: { x: { type: "linear", min: 0, max: t.total.length - 1, title: { display: true, text: "moment (op) in the step" } },
                  y: { stacked: true, ...bytesAxis } },
        plugins: { tooltip: { callbacks: {
          title: (items) => moment(t, items[0].raw.x),
          label: (c) => `${c.dataset.label}: ${human(c.raw.y)}` } } } },
    });
  }

  function progress(t) {
    // x of each moment: its phase's index plus its place inside the phase, so two readings with
    // different numbers of moments (leaf steps vs aten ops) line up at the phase boundaries
    const start = {}, size = {};
    t.phase.forEach((p, i) => { if (!(p in start)) start[p] = i; size[p] = (size[p] || 0) + 1; });
    return t.phase.map((p, i) => PHASES.indexOf(p) + (i - start[p]) / size[p]);
  }

  function overlayChart(canvas, lines) {
    // analytic (solid) and measured (dashed): the total and each component, phase-aligned
    const datasets = [];
    const points = (values, xs) => {
      const out = values.map((v, i) => ({ x: xs[i], y: v, i }));
      const last = values.length - 1;
      out.push({ x: PHASES.length, y: values[last], i: last });  // the last moment lasts to the end
      return out;
    };
    for (const t of lines) {
      const xs = progress(t), dash = t.reading === "measured" ? [5, 4] : [];
      datasets.push({ label: `${t.reading} total`, data: points(t.total, xs),
        borderColor: "#222", borderDash: dash, pointRadius: 0, borderWidth: 2, stepped: true });
      for (const c of usedComponents(...lines)) {
        datasets.push({ label: `${t.reading} ${c}`, data: points(t.series[c], xs),
          borderColor: COLOURS[c], borderDash: dash, pointRadius: 0, borderWidth: 1.5, stepped: true });
      }
    }
    return new Chart(canvas, {
      type: "line", data: { datasets },
      options: { animation: false, maintainAspectRatio: false, normalized: true,
        interaction: { mode: "nearest", intersect: false },
        scales: { x: { type: "linear", min: 0, max: 3, title: { display: true, text: "forward | backward | optimizer" },
                       ticks: { stepSize: 1 } },
                  y: { ...bytesAxis } },
        plugins: { tooltip: { callbacks: {
          title: (items) => moment(lines[items[0].dataset.label.startsWith("measured") ? 1 : 0], items[0].raw.i),
          label: (c) => `${c.dataset.label}: ${human(c.raw.y)}` } } } },
    });
  }

  return { COLOURS, human, count, int, bytesAxis, phasePeaks, phasesChart, timelineChart, overlayChart };
})();
