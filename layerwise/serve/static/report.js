// The HTML reports (layerwise/report/html.py): draws the sections embedded as JSON in
// <script id="report-data">. Inlined into each report with charts.js and Chart.js, so the file
// opens anywhere with no network.
"use strict";

(() => {
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const root = document.getElementById("report");
  const charts = window.reportCharts = {};
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  function table(s) {
    const t = el("table");
    t.id = s.id || "";
    const hr = t.createTHead().insertRow();
    s.columns.forEach((c, j) => { const th = el("th", j === 0 ? "text" : "", c); hr.appendChild(th); });
    const body = t.createTBody();
    for (const row of s.rows) {
      const tr = body.insertRow();
      row.forEach((v, j) => {
        const td = tr.insertCell();
        td.textContent = v;
        if (j === 0 || !/^[-+]?[\d.,]+(%| |$)/.test(v)) td.className = "text";  // words left, numbers right
      });
    }
    return t;
  }

  function canvasBox(id) {
    const box = el("div", "box");
    const canvas = el("canvas");
    canvas.id = id;
    box.appendChild(canvas);
    return [box, canvas];
  }

  function chart(s, canvas) {
    const config = s.config;
    config.options = Object.assign({ animation: false, maintainAspectRatio: false }, config.options || {});
    if (s.bytes_axis) {
      config.options.scales = config.options.scales || {};
      config.options.scales[s.bytes_axis] = Object.assign({}, config.options.scales[s.bytes_axis] || {}, LW.bytesAxis);
    }
    return new Chart(canvas, config);
  }

  const draw = {
    text: (s) => el("p", "", s.text),
    table,
    chart: (s, canvas) => chart(s, canvas),
    phases: (s, canvas) => LW.phasesChart(canvas, s.timeline),
    timeline: (s, canvas) => LW.timelineChart(canvas, s.timeline),
    overlay: (s, canvas) => LW.overlayChart(canvas, s.lines),
  };

  document.title = data.title;
  root.appendChild(el("h1", "", data.title));
  if (data.subtitle) root.appendChild(el("p", "sub", data.subtitle));
  for (const s of data.sections) {
    if (s.heading) root.appendChild(el("h2", "", s.heading));
    if (s.kind === "text" || s.kind === "table") {
      root.appendChild(draw[s.kind](s));
      continue;
    }
    const [box, canvas] = canvasBox(s.id);
    const fig = el("figure");
    if (s.caption) fig.appendChild(el("figcaption", "", s.caption));
    fig.appendChild(box);
    root.appendChild(fig);
    charts[s.id] = draw[s.kind](s, canvas);
  }
  window.reportReady = true;
})();
