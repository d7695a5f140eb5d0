// layerwise serve: the page. Every number comes from the JSON API (the CLI's --json); this file
// only gathers the form, asks, and draws. State lives in the URL query, so a link reproduces it.
"use strict";

const { human, count, int } = LW;

const $ = (id) => document.getElementById(id);
// read by the browser tests: the charts, the last answers, and whether an update is under way
const state = window.layerwise = { charts: {}, last: {}, updates: 0, pending: 0, scheduled: false, errors: 0, flags: null };

function verdictLine(v) {
  const head = v.fits
    ? `fits on ${v.gpu} (${human(v.memory_bytes)}) with ${human(v.spare_bytes)} to spare`
    : `does not fit on ${v.gpu} (${human(v.memory_bytes)}): ${human(-v.spare_bytes)} short`;
  const ctx = v.max_seq === null ? "" : `; longest context ${int(v.max_seq)}`;
  return `${head}; largest batch ${int(v.max_batch)}${ctx}`;
}

// ---- the form -----------------------------------------------------------------------------------
function choicesOf(help) {
  const m = /([\w.-]+(?:\|[\w.-]+)+)/.exec(help || "");
  return m ? m[1].split("|") : null;
}

function buildWorkload(flags) {
  const box = $("workload");
  for (const [name, f] of Object.entries(flags)) {
    if (!f.workload && name !== "input") continue;  // every workload flag, and a bare block's input
    const label = document.createElement("label");
    label.textContent = f.flag.replace(/^--/, "");
    label.title = f.help;
    const choices = choicesOf(f.help);
    let el;
    if (f.type === "bool") {
      el = document.createElement("input");
      el.type = "checkbox";
      el.checked = !!f.default;
    } else if (choices) {
      el = document.createElement("select");
      const opts = f.default === null ? ["", ...choices] : choices;
      for (const c of opts) el.add(new Option(c === "" ? "(default)" : c, c));
      el.value = f.default === null ? "" : String(f.default);
    } else {
      el = document.createElement("input");
      el.type = f.type === "integer" || f.type === "float" ? "number" : "text";
      if (f.type === "float") el.step = "any";
      el.value = f.default === null ? "" : String(f.default);
      if (f.default === null) el.placeholder = "default";
    }
    el.name = name;
    el.id = "w-" + name;
    el.dataset.kind = f.type;
    el.dataset.default = el.type === "checkbox" ? String(el.checked) : el.value;
    label.appendChild(el);
    box.appendChild(label);
  }
}

function controls() {
  return [...document.querySelectorAll("#form [name]")].filter((el) => el.type !== "radio");
}

function valueOf(el) {
  if (el.type === "checkbox") return el.checked;
  const v = el.value.trim();
  if (v === "") return null;
  if (el.dataset.kind === "integer") return Number.isInteger(Number(v)) ? Number(v) : v;
  if (el.dataset.kind === "float") return Number.isNaN(Number(v)) ? v : Number(v);
  return v;
}

function workloadValues() {
  const out = {};
  for (const el of document.querySelectorAll("#workload [name]")) {
    const v = valueOf(el);
    if (v !== null && !(el.type === "checkbox" && !v)) out[el.name] = v;
  }
  return out;
}

function modelText() {
  const source = document.querySelector("input[name=source]:checked").value;
  return source === "text" ? $("spec").value : $("preset").value;
}

// ---- the URL ------------------------------------------------------------------------------------
function toURL() {
  const q = new URLSearchParams();
  const source = document.querySelector("input[name=source]:checked").value;
  if (source !== "preset") q.set("source", source);
  for (const el of controls()) {
    const v = el.type === "checkbox" ? String(el.checked) : el.value;
    if (v !== (el.dataset.default ?? "")) q.set(el.name, v);
  }
  const url = location.pathname + (q.toString() ? "?" + q : "");
  history.replaceState(null, "", url);
  $("permalink").href = url;
}

function fromURL() {
  const q = new URLSearchParams(location.search);
  if (q.get("source")) document.querySelector(`input[name=source][value=${q.get("source") === "text" ? "text" : "preset"}]`).checked = true;
  for (const el of controls()) {
    if (!q.has(el.name)) continue;
    if (el.type === "checkbox") el.checked = q.get(el.name) === "true";
    else el.value = q.get(el.name);
  }
}

// ---- asking -------------------------------------------------------------------------------------
const SWITCHES = new Set(["timeline"]);  // API-only parts of /api/memory's answer

async function post(endpoint, workload) {
  // each endpoint gets the keys it takes (a workload flag that does not change summary's answer is
  // not sent to it, rather than refused)
  const keys = state.flags[endpoint];
  const mine = Object.fromEntries(Object.entries(workload).filter(([k]) => k in keys || SWITCHES.has(k)));
  const resp = await fetch("api/" + endpoint, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model: modelText(), workload: mine }),
  });
  const data = await resp.json();
  if (!resp.ok) throw Object.assign(new Error(data.error), { field: data.field, endpoint });
  return data;
}

let generation = 0;
async function update() {
  toURL();
  const mine = ++generation;
  const w = workloadValues();
  const gpu = $("gpu").value, gpus = valueOf($("gpus")), mfu = valueOf($("mfu")), tokens = valueOf($("tokens"));
  const shared = w.seq !== undefined ? { seq: w.seq } : {};
  const timeW = { gpu, gpus, ...shared };
  if (mfu !== null) timeW.mfu = mfu;  // empty: the step-time model
  if (tokens !== null) timeW.tokens = Number(tokens.replace(/_/g, "")) || tokens;
  const samples = valueOf($("samples"));
  if (samples !== null) timeW.samples = Number(samples.replace(/_/g, "")) || samples;
  const planW = { gpu, gpus, ...shared };
  if (w.optimizer !== undefined) planW.optimizer = w.optimizer;
  const asks = {
    memory: post("memory", { ...w, verdict: true, timeline: true }),
    flops: post("flops", w),
    summary: post("summary", w),
    time: post("time", timeW),
    plan: post("plan", planW),
  };
  state.pending++;
  $("status").textContent = "estimating…";
  const results = {};
  const errors = [];
  for (const [k, p] of Object.entries(asks)) {
    try { results[k] = await p; } catch (e) { errors.push(e); }
  }
  state.pending--;
  if (mine !== generation) return;  // a newer request has been sent
  showErrors(errors);
  Object.assign(state.last, results);
  if (results.memory) drawMemory(results.memory);
  if (results.summary && results.flops) drawLayers(results.summary, results.flops, results.memory);
  if (results.time) drawTime(results.time);
  if (results.plan) drawPlan(results.plan);
  state.updates++;
  $("status").textContent = errors.length ? "some answers failed (below)" : `${modelName()}: up to date`;
}

function modelName() {
  return (state.last.memory && state.last.memory.timeline && state.last.memory.timeline.model) || $("preset").value;
}

function showErrors(errors) {
  document.querySelectorAll(".invalid").forEach((el) => el.classList.remove("invalid"));
  const box = $("error");
  state.errors = errors.length;
  if (!errors.length) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  const seen = new Set();
  box.textContent = errors.map((e) => e.message).filter((m) => !seen.has(m) && seen.add(m)).join("\n");
  for (const e of errors) {
    const name = (e.field || "").replace(/^workload\./, "");
    const el = document.querySelector(`#form [name="${name}"]`) || (e.field === "model" ? $("spec") : null);
    if (el) el.classList.add("invalid");
  }
}

// ---- drawing ------------------------------------------------------------------------------------
function drawMemory(m) {
  $("headline").textContent = `peak ${human(m.peak_bytes)} (${int(m.peak_bytes)} B) in ${m.peak_phase}` +
    (m.per_device ? ", per device" : "") +
    `; on a GPU, device overhead (CUDA context + allocator cache, an estimate) adds ` +
    `${human(m.verdicts.length ? m.verdicts[0].device_overhead_bytes : m.device_overhead_bytes)} apart from the tensors`;
  const ul = $("verdicts");
  ul.replaceChildren(...m.verdicts.map((v) => {
    const li = document.createElement("li");
    li.className = v.fits ? "fits" : "nofit";
    li.dataset.gpu = v.gpu;
    li.textContent = verdictLine(v);
    return li;
  }));
  drawPhases(m.timeline);
  drawTimeline(m.timeline);
}

function drawPhases(t) {
  chart("phases", (canvas) => LW.phasesChart(canvas, t), "phases-chart");
}

function drawTimeline(t) {
  chart("timeline", (canvas) => LW.timelineChart(canvas, t), "timeline-chart");
}

function chart(key, make, canvasId) {
  if (state.charts[key]) state.charts[key].destroy();
  state.charts[key] = make($(canvasId));
}

function duration(t) {
  if (t.days >= 2) return `${t.days.toFixed(1)} days`;
  if (t.hours >= 2) return `${t.hours.toFixed(1)} hours`;
  return t.seconds >= 120 ? `${(t.seconds / 60).toFixed(1)} minutes` : `${t.seconds.toFixed(1)} s`;
}

function drawTime(t) {
  const l = t.layout;
  const budget = t.tokens ? `${count(t.tokens)} tokens` : `${count(t.samples)} samples`;
  $("time").textContent = `${duration(t)} on ${t.gpus} × ${t.gpu} for ${budget}` +
    `${t.tokens_default ? " (20 × params, Chinchilla)" : ""}: ${count(t.tokens_per_second)} tokens/s, ` +
    `MFU ${(100 * t.mfu).toFixed(1)}%${t.mfu_override === null ? " (step-time model)" : " (given)"}, ` +
    `step ${t.step_seconds.toPrecision(3)} s with dp ${l.dp} × tp ${l.tp} × pp ${l.pp}, ${t.precision}; ` +
    `${count(t.flops.total)} FLOPs (6·N·D: ${count(t.flops.six_nd)})`;
}

function drawPlan(p) {
  const cols = ["#", "DP", "TP", "PP", "EP", "ZeRO", "SP", "checkpointing", "micro-batch", "grad-accum",
    "per device + overhead", "tokens/s", "MFU"];
  table($("plan"), cols, p.setups.map((c, i) => [i + 1, c.dp, c.tp, c.pp, c.ep, c.zero, c.sequence_parallel ? "yes" : "no",
    c.checkpointing, c.micro_batch, c.grad_accum, human(c.per_device_bytes + c.device_overhead_bytes),
    count(c.tokens_per_second), (100 * c.mfu).toFixed(1) + "%"]));
  if (!p.setups.length) {
    $("plan").tBodies[0].innerHTML = `<tr><td class="text" colspan="${cols.length}">nothing fits on ${p.gpus} × ${p.gpu} ` +
      `(${p.searched} layouts searched)</td></tr>`;
  }
}

function drawLayers(s, f, m) {
  const flops = Object.fromEntries(f.per_layer.map((r) => [r.path, r]));
  const saved = (m && m.timeline && m.timeline.saved_by_path) || {};
  const savedOf = (path) => Object.entries(saved).reduce(
    (acc, [p, n]) => acc + (p === path || p.startsWith(path + ".") ? n : 0), 0);
  const cols = ["layer (path)", "type", "output shape", "params", "trainable", "forward FLOPs", "backward FLOPs", "saved activations"];
  const rows = s.layers.map((r) => {
    const fl = flops[r.path] || { forward: 0, backward: 0 };
    return [r.path, r.type, "(" + r.output_shape.join(", ") + ")", r.params, r.trainable, fl.forward, fl.backward, savedOf(r.path)];
  });
  table($("layers"), cols, rows, { text: [0, 1, 2], format: { 3: int, 4: int, 5: count, 6: count, 7: human } });
}

function table(el, cols, rows, opts = {}) {
  const text = new Set(opts.text || [0]);
  const fmt = opts.format || {};
  el.tHead.innerHTML = "";
  const hr = el.tHead.insertRow();
  cols.forEach((c, j) => {
    const th = document.createElement("th");
    th.textContent = c;
    if (text.has(j)) th.className = "text";
    if (el.classList.contains("sortable")) th.onclick = () => sortBy(el, j, rows, cols, opts);
    hr.appendChild(th);
  });
  fill(el, rows, text, fmt);
}

function fill(el, rows, text, fmt) {
  const body = el.tBodies[0];
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    r.forEach((v, j) => {
      const td = tr.insertCell();
      td.textContent = fmt[j] ? fmt[j](v) : v;
      td.dataset.value = v;
      if (text.has(j)) td.className = "text";
    });
    return tr;
  }));
}

function sortBy(el, j, rows, cols, opts) {
  const th = el.tHead.rows[0].cells[j];
  const desc = !th.classList.contains("desc");
  [...el.tHead.rows[0].cells].forEach((c) => c.classList.remove("asc", "desc"));
  th.classList.add(desc ? "desc" : "asc");
  const sorted = [...rows].sort((a, b) => {
    const x = a[j], y = b[j];
    const cmp = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return desc ? -cmp : cmp;
  });
  fill(el, sorted, new Set(opts.text || [0]), opts.format || {});
}

// ---- start --------------------------------------------------------------------------------------
let timer = null;
function soon() {
  clearTimeout(timer);
  state.scheduled = true;
  timer = setTimeout(() => { state.scheduled = false; update(); }, 200);
}

async function start() {
  const [cat, flags] = await Promise.all([fetch("api/catalogue").then((r) => r.json()), fetch("api/flags").then((r) => r.json())]);
  state.flags = flags;
  for (const p of cat.presets) $("preset").add(new Option(p, p));
  $("preset").value = cat.presets.includes("llama-2-7b") ? "llama-2-7b" : cat.presets[0];
  $("preset").dataset.default = $("preset").value;
  for (const g of cat.gpus) $("gpu").add(new Option(`${g.name} (${human(g.memory_bytes)})`, g.name));
  $("gpu").value = "h100-sxm";
  buildWorkload(flags.memory);
  for (const el of controls()) if (el.dataset.default === undefined) el.dataset.default = el.type === "checkbox" ? String(el.checked) : el.value;
  fromURL();
  $("form").addEventListener("input", soon);
  $("form").addEventListener("change", soon);
  $("spec").addEventListener("input", () => { document.querySelector("input[name=source][value=text]").checked = true; });
  $("upload").addEventListener("change", (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = () => { $("spec").value = reader.result; document.querySelector("input[name=source][value=text]").checked = true; soon(); };
    reader.readAsText(file);
  });
  await update();
}

start().catch((e) => { $("status").textContent = "failed to start: " + e.message; });
