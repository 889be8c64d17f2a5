// One agent (/ui/agents/{id}): registry fields, KPIs, hourly charts, runs and a run's LLM calls.
"use strict";

const PAGE_SIZE = 20;
const agentId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
const state = { range: "24h", offset: 0, status: "", traceId: null, agent: null, total: 0 };
const keyRequired = () => document.body.dataset.writeKeyRequired === "true";

function renderFields(agent) {
  document.title = `${agent.name} · agentmon`;
  document.getElementById("agent-name").textContent = agent.name;
  document.getElementById("agent-sub").textContent = `${agent.type} agent in project ${agent.project_id}`;
  const fields = [
    ["Agent id", agent.id], ["Type", agent.type], ["Project", agent.project_id], ["Status", agent.status],
    ["External id", agent.external_id || "\u2013"], ["Monitoring", agent.monitoring_enabled ? "on" : "off"],
    ["Created", fmt.time(agent.created_at)], ["Last used", fmt.time(agent.last_used_at)],
  ];
  document.getElementById("fields").replaceChildren(...fields.flatMap(([label, value]) =>
    [el("dt", { text: label }), el("dd", { "data-field": label.toLowerCase().replace(" ", "_"), text: value })]));
  const toggle = document.getElementById("monitoring");
  toggle.checked = agent.monitoring_enabled;
  updateToggle();
}

function updateToggle() {
  const key = document.getElementById("api-key").value;
  const toggle = document.getElementById("monitoring");
  toggle.disabled = !state.agent || (keyRequired() && !key);
  document.getElementById("toggle-note").textContent = toggle.disabled && state.agent ? "Enter the API key to change monitoring." : "";
}

async function setMonitoring(enabled) {
  const key = document.getElementById("api-key").value;
  const headers = { "content-type": "application/json" };
  if (key) headers["X-API-Key"] = key;
  const note = document.getElementById("toggle-note");
  try {
    state.agent = await api(`/agents/${encodeURIComponent(agentId)}`, {
      method: "PATCH", headers, body: JSON.stringify({ monitoring_enabled: enabled }),
    });
    renderFields(state.agent);
    note.textContent = enabled ? "Monitoring is on." : "Monitoring is off: this agent's spans are no longer stamped.";
  } catch (error) {
    document.getElementById("monitoring").checked = !enabled;
    note.textContent = error.status === 401 ? "The API key was not accepted." : `Not changed: ${error.message}`;
  }
}

function renderKpis(stats) {
  const cards = [
    ["runs", "Runs", fmt.int(stats.runs)], ["cost", "Cost", fmt.cost(stats.cost_usd)],
    ["error_rate", "Error rate", fmt.rate(stats.error_rate)], ["p95", "p95 run duration", fmt.ms(stats.p95_run_duration_ms)],
  ];
  document.getElementById("kpis").replaceChildren(...cards.map(([key, label, value]) =>
    el("div", { class: "card", "data-kpi": key }, el("div", { class: "label", text: label }), el("div", { class: "value", text: value }))));
}

function renderCharts(series, window) {
  const from = Date.parse(window.get("from")), to = Date.parse(window.get("to"));
  const common = { buckets: series.buckets, from, to, bucketSeconds: series.bucket_seconds };
  const runs = barChart({ ...common, formatValue: (v) => Number.isInteger(v) ? fmt.int(v) : v.toFixed(1), series: [
    { key: "ok_runs", color: "#6c8cf5", label: "runs" }, { key: "errors", color: "#c4320a", label: "errors" }] });
  const cost = barChart({ ...common, formatValue: (v) => v === 0 ? "$0" : "$" + (v >= 1 ? v.toFixed(2) : v.toPrecision(2)),
    series: [{ key: "cost_usd", color: "#7a5af8", label: "USD" }] });
  for (const [id, svg] of [["chart-runs", runs], ["chart-cost", cost]]) {
    const box = document.getElementById(id);
    box.querySelector("svg")?.remove();
    box.append(svg);
  }
}

function renderRuns(page) {
  state.total = page.total;
  const box = document.getElementById("runs");
  if (!page.items.length) {
    showNotice(box, "empty", el("p", { text: state.status ? "No runs with this status in the time range." :
      "No runs in this time range. Runs appear when the agent's spans reach agentmon." }));
  } else {
    const head = el("tr", {}, ["Start", "Trace", "Duration", "Status", "LLM calls", "Tokens", "Cost"].map((label, i) =>
      el("th", { class: i >= 4 || i === 2 ? "num" : null, text: label })));
    const rows = page.items.map((run) => el("tr", {
      class: "clickable" + (run.trace_id === state.traceId ? " selected" : ""), "data-trace-id": run.trace_id,
      onclick: () => loadTrace(run.trace_id),
    },
      el("td", { text: fmt.time(run.start) }), el("td", {}, el("code", { text: run.trace_id.slice(0, 16) })),
      el("td", { class: "num", "data-col": "duration", text: fmt.ms(run.duration_ms) }),
      el("td", { class: "status-" + run.status, "data-col": "status", text: run.status }),
      el("td", { class: "num", "data-col": "llm_calls", text: fmt.int(run.llm_calls) }),
      el("td", { class: "num", "data-col": "tokens", text: fmt.int(run.input_tokens + run.output_tokens) }),
      el("td", { class: "num", "data-col": "cost", text: fmt.cost(run.cost_usd) })));
    box.replaceChildren(el("table", { id: "runs-table" }, el("thead", {}, head), el("tbody", {}, rows)));
  }
  const last = Math.min(state.offset + PAGE_SIZE, page.total);
  document.getElementById("page-info").textContent = page.total ? `${state.offset + 1}\u2013${last} of ${page.total}` : "";
  document.getElementById("newer").disabled = state.offset === 0;
  document.getElementById("older").disabled = last >= page.total;
}

function flatten(nodes, depth, out) {
  for (const node of nodes) {
    out.push([node, depth]);
    flatten(node.children, depth + 1, out);
  }
  return out;
}

async function loadTrace(traceId) {
  state.traceId = traceId;
  document.querySelectorAll("#runs-table tr[data-trace-id]").forEach((row) =>
    row.classList.toggle("selected", row.dataset.traceId === traceId));
  const box = document.getElementById("trace");
  let tree;
  try {
    tree = await api(`/traces/${traceId}`);
  } catch (error) {
    showNotice(box, "error", ...errorHelp(error));
    return;
  }
  const rows = flatten(tree.roots, 0, []);
  const start = Math.min(...rows.map(([n]) => Date.parse(n.start)));
  const end = Math.max(...rows.map(([n]) => Date.parse(n.start) + n.duration_ms));
  const span = Math.max(1, end - start);
  const head = el("tr", {}, ["Span", "Model", "Tokens in", "Tokens out", "Cost", "Duration", "Status", "Timeline"].map((label, i) =>
    el("th", { class: i >= 2 && i <= 5 ? "num" : null, text: label })));
  const body = rows.map(([node, depth]) => {
    const offset = ((Date.parse(node.start) - start) / span) * 100;
    const width = (node.duration_ms / span) * 100;
    const kind = node.status === "Error" ? "error" : node.is_llm ? "llm" : "";
    return el("tr", { class: node.is_llm ? "llm-call" : null, "data-span-id": node.span_id },
      el("td", { style: `padding-left:${10 + depth * 18}px`, "data-col": "name" }, node.name,
        node.is_run ? el("span", { class: "badge", style: "margin-left:6px", text: "run" }) : null),
      el("td", { "data-col": "model", text: node.is_llm ? node.model : "" }),
      el("td", { class: "num", "data-col": "input_tokens", text: node.is_llm ? fmt.int(node.input_tokens) : "" }),
      el("td", { class: "num", "data-col": "output_tokens", text: node.is_llm ? fmt.int(node.output_tokens) : "" }),
      el("td", { class: "num", "data-col": "cost", text: node.is_llm ? fmt.cost(node.cost_usd) : "" }),
      el("td", { class: "num", "data-col": "duration", text: fmt.ms(node.duration_ms) }),
      el("td", { class: node.status === "Error" ? "status-error" : "", "data-col": "status", text: node.status || "Unset" }),
      el("td", { class: "bar" }, el("div", { class: "wbar" }, el("span", { class: kind, style: `left:${offset}%;width:${width}%` }))));
  });
  box.replaceChildren(
    el("h2", {}, "Trace ", el("code", { text: traceId }), ` \u00b7 ${tree.llm_calls.length} LLM calls, ${tree.span_count} spans`),
    el("table", { class: "waterfall", id: "trace-table" }, el("thead", {}, head), el("tbody", {}, body)));
}

async function load() {
  const problem = document.getElementById("problem");
  const window = windowParams(state.range);
  const runParams = new URLSearchParams(window);
  runParams.set("limit", PAGE_SIZE);
  runParams.set("offset", state.offset);
  if (state.status) runParams.set("status", state.status);
  const base = `/agents/${encodeURIComponent(agentId)}`;
  try {
    const [agent, stats, series, runs] = await Promise.all([
      api(base), api(`${base}/stats?${window}`), api(`${base}/timeseries?${window}&bucket=1h`), api(`${base}/traces?${runParams}`),
    ]);
    problem.replaceChildren();
    state.agent = agent;
    renderFields(agent);
    renderKpis(stats);
    series.buckets.forEach((b) => { b.ok_runs = b.runs - b.errors; });
    renderCharts(series, window);
    renderRuns(runs);
    if (state.traceId) await loadTrace(state.traceId);
  } catch (error) {
    if (error.status === 404 && !state.agent) {
      document.getElementById("agent-name").textContent = "Agent not found";
      showNotice(problem, "error", el("p", {}, `No agent has the id ${agentId}. `, el("a", { href: "/ui", text: "See all agents" }), "."));
      document.querySelectorAll("main > section, main > h2, .pager, .controls").forEach((node) => { node.hidden = true; });
    } else {
      showNotice(problem, "error", ...errorHelp(error));
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("live-slot").replaceWith(liveIndicator());
  state.range = setupRangePicker(document.getElementById("range"), (range) => { state.range = range; state.offset = 0; load(); });
  document.getElementById("to-overview").href = `/ui?range=${state.range}`;
  const key = document.getElementById("api-key");
  key.value = sessionStorage.getItem("agentmon.apiKey") || "";
  key.addEventListener("input", () => { sessionStorage.setItem("agentmon.apiKey", key.value); updateToggle(); });
  document.getElementById("monitoring").addEventListener("change", (event) => setMonitoring(event.target.checked));
  document.getElementById("status-filter").addEventListener("change", (event) => { state.status = event.target.value; state.offset = 0; load(); });
  document.getElementById("newer").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); load(); });
  document.getElementById("older").addEventListener("click", () => { state.offset += PAGE_SIZE; load(); });
  load();
  startLive(document.getElementById("live"), load);
});
