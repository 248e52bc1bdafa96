// Teal's dashboard: plain JavaScript over the REST API and the event stream. No build step.
// Reads need no token; actions (checks, verify, switchover) send the token the operator entered,
// kept in sessionStorage only (gone when the tab closes).
"use strict";

const main = document.getElementById("main");
const state = { route: null, timers: [], stream: null, lag: [], events: [] };

// ---- helpers -------------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
const token = () => sessionStorage.getItem("teal-token") || "";
async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const problem = json || {};
    const error = new Error((problem.detail || problem.title || response.statusText) + (problem.hint ? " — " + problem.hint : ""));
    error.problem = problem;
    throw error;
  }
  return json;
}
function statusClass(status) {
  switch (status) {
    case "AVAILABLE": case "SWITCHOVER_COMPLETED": case "REPLICATING": case "COMPLETED": case "PASS": case "streaming": return "ok";
    case "PROVISIONING": case "SWITCHOVER_IN_PROGRESS": case "SYNCING": case "IN_PROGRESS": case "DELETING": return "busy";
    case "DEGRADED": case "WARN": return "warn";
    case "SWITCHOVER_FAILED": case "SWITCHOVER_STOPPED": case "INVALID_CONFIGURATION": case "STOPPED": case "ROLLED_BACK": case "FAIL": return "bad";
    default: return "";
  }
}
const badge = (text, testid) => el("span", { class: "badge " + statusClass(text), "data-testid": testid }, text || "—");
const time = (t) => t ? new Date(t).toLocaleTimeString() : "";
const fmtSeconds = (s) => s === null || s === undefined ? "—" : s < 10 ? s.toFixed(2) + " s" : s.toFixed(0) + " s";
function fmtBytes(b) {
  if (b === null || b === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return (i === 0 ? b : b.toFixed(1)) + " " + units[i];
}
function every(ms, fn) { fn(); state.timers.push(setInterval(fn, ms)); }
function leave() {
  state.timers.forEach(clearInterval); state.timers = [];
  if (state.stream) { state.stream.close(); state.stream = null; }
  state.lag = []; state.events = [];
}
function replace(id, node) { const old = document.getElementById(id); if (old) old.replaceWith(node); }
// A row replaced between a pointer's press and its release gets no click (the two land on
// different elements), so the periodic list refresh skips its turn while a pointer is down.
let pointerDown = false;
addEventListener("pointerdown", () => { pointerDown = true; }, true);
for (const end of ["pointerup", "pointercancel", "blur"]) addEventListener(end, () => { pointerDown = false; }, true);

// ---- token -----------------------------------------------------------------------------------
function showTokenState() {
  document.getElementById("token-state").textContent = token() ? "token set for this tab" : "read-only";
  document.querySelectorAll("[data-needs-token]").forEach(b => b.dispatchEvent(new Event("tokenchange")));
}
document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = document.getElementById("token");
  if (input.value.trim()) sessionStorage.setItem("teal-token", input.value.trim()); else sessionStorage.removeItem("teal-token");
  input.value = "";
  showTokenState();
});

// ---- deployments list ------------------------------------------------------------------------
function listPage() {
  main.replaceChildren(el("div", { class: "card" }, el("h2", {}, "Deployments"), el("div", { id: "deployments" }, "loading…")));
  every(2000, async () => {
    const deployments = await api("GET", "/api/deployments");
    if (pointerDown) return;
    const rows = deployments.map(d => el("tr", { class: "link", "data-testid": "deployment-row", onclick: () => { location.hash = "#/d/" + encodeURIComponent(d.name); } },
      el("td", {}, el("a", { href: "#/d/" + encodeURIComponent(d.name) }, d.name)),
      el("td", {}, badge(d.status)),
      el("td", {}, d.blue, " → ", d.green),
      el("td", {}, badge(d.replication.state)),
      el("td", {}, fmtSeconds(d.replication.lagSeconds)),
      el("td", {}, fmtBytes(d.replication.lagBytes)),
      el("td", { class: "muted" }, time(d.updatedAt))));
    replace("deployments", el("div", { id: "deployments" }, deployments.length === 0
      ? el("p", { class: "muted" }, "No deployments yet. Create one with: teal create NAME --source INSTANCE --target-engine-version 17")
      : el("table", {}, el("tr", {}, ["Name", "Status", "Blue → Green", "Replication", "Lag", "Lag bytes", "Updated"].map(h => el("th", {}, h))), rows)));
  });
}

// ---- one deployment --------------------------------------------------------------------------
function deploymentPage(name) {
  main.replaceChildren(
    el("div", { id: "title" }),
    el("div", { class: "grid2" }, el("div", { id: "blue", class: "card side blue" }), el("div", { id: "green", class: "card side green" })),
    el("div", { class: "grid3" },
      el("div", {},
        el("div", { class: "card" }, el("h2", {}, "Replication lag"), el("div", { id: "lag" })),
        el("div", { class: "card", id: "switchover-card" }, el("h2", {}, "Switchover"), switchoverForm(name), el("div", { id: "switchover" }))),
      el("div", {},
        el("div", { class: "card" }, el("h2", {}, "Tasks"), el("div", { id: "tasks" })),
        el("div", { class: "card" }, el("h2", {}, "Guardrails"), el("div", { id: "checks" }, el("p", { class: "muted" }, "Enter the token to run the checks.")),
          actionButton("Run checks", "run-checks", () => runChecks(name))),
        el("div", { class: "card" }, el("h2", {}, "Verify"), el("div", { id: "verify" }, el("p", { class: "muted" }, "Not verified since the page opened.")),
          actionButton("Verify now", "verify-now", () => runVerify(name))))),
    el("div", { class: "card" }, el("h2", {}, "Events"), el("div", { id: "events", class: "timeline" })));

  let first = true;
  every(1000, async () => {
    let d;
    try { d = await api("GET", "/api/deployments/" + encodeURIComponent(name)); }
    catch (e) { replace("title", el("div", { id: "title", class: "error" }, e.message)); return; }
    const [instances, endpoints] = await Promise.all([api("GET", "/api/instances"), api("GET", "/api/endpoints")]);
    renderDeployment(d, instances, endpoints);
    if (first) { first = false; startEvents(d); if (token()) runChecks(name); }
  });
}

function renderDeployment(d, instances, endpoints) {
  replace("title", el("div", { id: "title", class: "card" },
    el("h1", {}, d.name, badge(d.status, "status"),
      // After a switchover, forward replication is stopped on purpose: not an alarm.
      d.status === "SWITCHOVER_COMPLETED" && d.replication.state === "STOPPED"
        ? el("span", { class: "badge", "data-testid": "replication-state" }, "STOPPED") : badge(d.replication.state, "replication-state")),
    el("div", { class: "muted" }, "database ", d.database, " · created ", new Date(d.createdAt).toLocaleString(), d.statusReason ? " · " + d.statusReason : ""),
    d.replication.reason ? el("div", { class: "hint" }, d.replication.reason) : null));
  const find = (n) => instances.find(i => i.name === n);
  const side = (id, label, instanceName, parameters) => {
    const i = find(instanceName);
    // After the switchover the old blue is still a writer by topology, but fenced: say that.
    const role = !(i && id === "blue" && d.status === "SWITCHOVER_COMPLETED") ? i && i.role
      : d.reversed ? "old blue, fenced; applies green's writes until `teal switchback` or `teal finish`"
      : "old blue, fenced until `teal instance unfence " + instanceName + "`";
    const routed = endpoints.filter(e => e.instance === instanceName).map(e => e.name + " (" + (e.listen || (e.pgBouncer ? "PgBouncer " + e.pgBouncer.adminHost + ":" + e.pgBouncer.adminPort : "")) + ")");
    const params = Object.entries(parameters || (i && i.parameters) || {});
    // The deployment's readers are green's (the monitor's figures follow green through its rename);
    // other readers Teal made of this instance are listed without figures.
    const figures = id === "green" ? (d.readers || []) : [];
    const readers = figures.concat(instances.filter(r => r.readerOf === instanceName && !figures.some(f => f.name === r.name))
      .map(r => ({ name: r.name, address: r.host + ":" + r.port, state: null })));
    return el("div", { id, class: "card side " + id, "data-testid": id },
      el("h3", {}, label, " · ", instanceName),
      i ? el("dl", {},
        el("dt", {}, "Engine"), el("dd", {}, i.engine, " ", i.version),
        el("dt", {}, "Address"), el("dd", {}, i.host + ":" + i.port),
        el("dt", {}, "Role"), el("dd", { "data-testid": id + "-role" }, role, i.managed ? " (managed)" : ""),
        el("dt", {}, "Endpoint"), el("dd", {}, routed.length ? routed.join(", ") : "—"),
        el("dt", {}, "Parameters"), el("dd", {}, params.length ? params.map(([k, v]) => k + "=" + v).join(", ") : "defaults"),
        el("dt", {}, "Readers"), el("dd", { "data-testid": id + "-readers" }, readers.length === 0 ? "—" : readers.map(r =>
          el("div", { "data-testid": "reader" }, r.name, " ", el("span", { class: "muted" }, r.address || ""), " ",
            r.state ? badge(r.state, "reader-state") : el("span", { class: "muted" }, "not watched"),
            r.state ? el("span", { class: "muted" }, " · ", fmtBytes(r.lagBytes), " · ", fmtSeconds(r.lagSeconds), " behind") : null))))
        : el("p", { class: "muted" }, "instance not registered"));
  };
  replace("blue", side("blue", "Blue", d.blue, null));
  replace("green", side("green", "Green", d.green, Object.keys(d.targetParameters || {}).length ? d.targetParameters : null));

  replace("tasks", el("div", { id: "tasks" }, el("table", {}, d.tasks.map(t => {
    const pct = t.status === "COMPLETED" ? 100 : (t.percent || 0);
    return el("tr", { "data-testid": "task" },
      el("td", {}, t.kind), el("td", {}, badge(t.status === "COMPLETED" ? "COMPLETED" : t.status)),
      el("td", {}, el("div", { class: "bar", title: pct.toFixed(0) + "%" }, el("div", { style: "width:" + pct + "%" }))));
  }))));

  const r = d.replication;
  if (r.observedAt && (state.lag.length === 0 || state.lag[state.lag.length - 1].at !== r.observedAt)) {
    state.lag.push({ at: r.observedAt, seconds: r.lagSeconds ?? 0, bytes: r.lagBytes ?? 0 });
    if (state.lag.length > 300) state.lag.shift();
  }
  replace("lag", el("div", { id: "lag" }, lagChart(state.lag),
    el("div", { class: "muted" }, "now: ", fmtSeconds(r.lagSeconds), " · ", fmtBytes(r.lagBytes), " behind · blue retains ", fmtBytes(r.retainedBytes), " of WAL")));
  renderSwitchover(d);
}

function lagChart(points) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart"); svg.setAttribute("viewBox", "0 0 600 160"); svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("data-testid", "lag-chart");
  const max = Math.max(1, ...points.map(p => p.seconds));
  const line = (y, label) => {
    const l = document.createElementNS(ns, "line");
    l.setAttribute("x1", 0); l.setAttribute("x2", 600); l.setAttribute("y1", y); l.setAttribute("y2", y); l.setAttribute("stroke", "#e2e8ea");
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", 4); t.setAttribute("y", y - 3); t.setAttribute("font-size", 11); t.setAttribute("fill", "#6b7a80"); t.textContent = label;
    svg.append(l, t);
  };
  line(12, max.toFixed(1) + " s"); line(80, (max / 2).toFixed(1) + " s"); line(150, "0 s");
  if (points.length > 1) {
    const step = 600 / Math.max(60, points.length - 1);
    const start = 600 - step * (points.length - 1);
    const path = points.map((p, i) => (start + i * step).toFixed(1) + "," + (150 - (p.seconds / max) * 138).toFixed(1)).join(" ");
    const poly = document.createElementNS(ns, "polyline");
    poly.setAttribute("points", path); poly.setAttribute("fill", "none"); poly.setAttribute("stroke", "#0f7c80"); poly.setAttribute("stroke-width", 2);
    svg.append(poly);
  }
  return svg;
}

// ---- guardrails and verify (need the token) --------------------------------------------------
function actionButton(label, testid, action) {
  const button = el("button", { type: "button", "data-testid": testid, "data-needs-token": "1" }, label);
  const sync = () => { button.disabled = !token(); button.title = token() ? "" : "enter the API token first"; };
  button.addEventListener("tokenchange", sync);
  button.addEventListener("click", async () => { button.disabled = true; try { await action(); } finally { sync(); } });
  sync();
  return button;
}

async function runChecks(name) {
  const target = document.getElementById("checks");
  try {
    const report = await api("POST", "/api/deployments/" + encodeURIComponent(name) + "/check", {});
    replace("checks", el("div", { id: "checks", "data-testid": "checks" }, report.results.map(c =>
      el("div", { class: "check " + c.outcome.toLowerCase() },
        el("span", { class: "mark" }, c.outcome === "PASS" ? "✓" : c.outcome === "WARN" ? "!" : "✗"),
        el("div", {}, el("strong", {}, c.name), " ", c.message, c.hint ? el("div", { class: "hint" }, c.hint) : null)))));
  } catch (e) {
    if (target) target.replaceChildren(el("div", { class: "error" }, e.message));
  }
}

async function runVerify(name) {
  replace("verify", el("div", { id: "verify", class: "muted" }, "comparing blue and green…"));
  try {
    const report = await api("POST", "/api/deployments/" + encodeURIComponent(name) + "/verify");
    const ok = report.tables.every(t => t.matches);
    replace("verify", el("div", { id: "verify", "data-testid": "verify-result" },
      el("div", { class: "result" }, badge(ok ? "PASS" : "FAIL"), " ", report.tables.length, " tables, ", report.rowsPerSide, " rows per side at ", report.position),
      el("table", {}, el("tr", {}, ["Table", "Blue rows", "Green rows", ""].map(h => el("th", {}, h))),
        report.tables.map(t => el("tr", {}, el("td", {}, t.table), el("td", {}, t.blueRows), el("td", {}, t.greenRows), el("td", {}, t.matches ? "equal" : (t.problem || "differs")))))));
  } catch (e) {
    replace("verify", el("div", { id: "verify", class: "error" }, e.message));
  }
}

// ---- the switchover --------------------------------------------------------------------------
function switchoverForm(name) {
  const timeout = el("input", { id: "switchover-timeout", type: "number", min: "1", value: "60", style: "width:90px" });
  const confirm = el("input", { id: "switchover-confirm", "data-testid": "switchover-confirm", placeholder: name, autocomplete: "off" });
  const button = el("button", { type: "button", class: "danger", "data-testid": "switchover-start", "data-needs-token": "1" }, "Switch over");
  const error = el("div", { id: "switchover-error", class: "error" });
  const sync = () => { button.disabled = !token() || confirm.value !== name; };
  confirm.addEventListener("input", sync);
  button.addEventListener("tokenchange", sync);
  button.addEventListener("click", async () => {
    button.disabled = true; error.textContent = "";
    try {
      await api("POST", "/api/deployments/" + encodeURIComponent(name) + "/switchover", { switchoverTimeout: Number(timeout.value) });
      confirm.value = "";
    } catch (e) { error.textContent = e.message; }
    sync();
  });
  sync();
  return el("div", {},
    el("p", { class: "muted" }, "Pauses clients at the endpoints, fences blue, waits for green to catch up, then flips every endpoint to green. Rolled back automatically if it cannot finish within the timeout."),
    el("div", { class: "actions" },
      el("label", {}, "Timeout (s)", timeout),
      el("label", {}, "Type the deployment name to confirm", confirm),
      button),
    error);
}

function renderSwitchover(d) {
  const s = d.switchover;
  if (!s) { replace("switchover", el("div", { id: "switchover", class: "muted" }, "No switchover yet.")); return; }
  const running = s.outcome === "IN_PROGRESS";
  const phases = s.phases.map(p => el("tr", {}, el("td", {}, p.step), el("td", { class: p.result }, p.result), el("td", {}, p.milliseconds.toFixed(0) + " ms")));
  if (running && s.phase) phases.push(el("tr", {}, el("td", {}, s.phase), el("td", { class: "running" }, "running…"), el("td", {})));
  replace("switchover", el("div", { id: "switchover", "data-testid": "switchover" },
    el("div", { class: "result" }, "Started ", time(s.startedAt), " · outcome ", badge(s.outcome, "switchover-outcome"), s.reason ? el("div", { class: "error" }, s.reason) : null),
    el("table", { class: "phases", "data-testid": "phases" }, el("tr", {}, ["Step", "Result", "Took"].map(h => el("th", {}, h))), phases),
    s.writePauseMilliseconds !== null && s.writePauseMilliseconds !== undefined
      ? el("div", { class: "result" }, "Write pause: ", el("span", { class: "pause", "data-testid": "write-pause" }, s.writePauseMilliseconds.toFixed(0) + " ms"),
        s.pausedAt ? el("span", { class: "muted" }, "  (" + time(s.pausedAt) + " → " + time(s.resumedAt) + ")") : null)
      : null));
}

// ---- events (server-sent) --------------------------------------------------------------------
function startEvents(d) {
  const source = new EventSource("/api/events/stream?deployment=" + encodeURIComponent(d.id) + "&backlog=100");
  state.stream = source;
  const render = () => replace("events", el("div", { id: "events", class: "timeline", "data-testid": "events" },
    state.events.slice().reverse().map(e => el("div", {}, el("span", { class: "muted" }, time(e.time)), el("span", { class: "kind" }, e.kind), el("span", {}, e.message)))));
  source.onmessage = (message) => {
    const e = JSON.parse(message.data);
    state.events.push(e);
    if (state.events.length > 500) state.events.shift();
    if (e.kind === "verified" && !document.querySelector("[data-testid=verify-result]")) {
      replace("verify", el("div", { id: "verify" }, badge(e.data.matches === "true" ? "PASS" : "FAIL"), " ", e.message, el("div", { class: "muted" }, "at ", new Date(e.time).toLocaleString())));
    }
    render();
  };
  render();
}

// ---- routing ---------------------------------------------------------------------------------
function route() {
  leave();
  const m = location.hash.match(/^#\/d\/(.+)$/);
  if (m) deploymentPage(decodeURIComponent(m[1])); else listPage();
}
window.addEventListener("hashchange", route);
api("GET", "/healthz").then(h => { document.getElementById("version").textContent = "v" + h.version; });
showTokenState();
route();
