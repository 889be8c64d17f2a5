// The agent usage overview (/ui): GET /stats/agents, sorted and searched in the page.
"use strict";

const COLUMNS = [
  { key: "name", label: "Agent", sort: (a) => a.name.toLowerCase() },
  { key: "type", label: "Type", sort: (a) => a.type },
  { key: "project_id", label: "Project", sort: (a) => a.project_id },
  { key: "status", label: "Status", sort: (a) => a.status + (a.monitoring_enabled ? "" : "~") },
  { key: "runs", label: "Runs", num: true, show: (a) => fmt.int(a.runs) },
  { key: "llm_calls", label: "LLM calls", num: true, show: (a) => fmt.int(a.llm_calls) },
  { key: "tokens", label: "Tokens", num: true, sort: (a) => a.input_tokens + a.output_tokens,
    show: (a) => fmt.int(a.input_tokens + a.output_tokens) },
  { key: "cost_usd", label: "Cost", num: true, show: (a) => fmt.cost(a.cost_usd) },
  { key: "error_rate", label: "Error rate", num: true, show: (a) => fmt.rate(a.error_rate) },
  { key: "p95_run_duration_ms", label: "p95", num: true, sort: (a) => a.p95_run_duration_ms ?? -1,
    show: (a) => fmt.ms(a.p95_run_duration_ms) },
  { key: "last_seen", label: "Last seen", sort: (a) => a.last_seen || "", show: (a) => fmt.time(a.last_seen) },
];

const state = { range: "24h", items: null, error: null, sortKey: "runs", descending: true, search: "" };

function cell(agent, column) {
  if (column.key === "name") {
    return el("td", { "data-col": "name" }, el("a", { href: `/ui/agents/${encodeURIComponent(agent.agent_id)}?range=${state.range}`, text: agent.name }));
  }
  if (column.key === "status") {
    const label = agent.monitoring_enabled ? agent.status : `${agent.status}, monitoring off`;
    return el("td", { "data-col": "status" }, el("span", { class: "badge " + (agent.monitoring_enabled ? agent.status : "off"), text: label }));
  }
  const text = column.show ? column.show(agent) : agent[column.key];
  return el("td", { class: column.num ? "num" : null, "data-col": column.key }, text);
}

function sortedItems() {
  const column = COLUMNS.find((c) => c.key === state.sortKey);
  const value = column.sort || ((a) => a[column.key]);
  const needle = state.search.trim().toLowerCase();
  const items = state.items.filter((a) => !needle || a.name.toLowerCase().includes(needle)
    || a.agent_id.includes(needle) || a.type.includes(needle) || a.project_id.toLowerCase().includes(needle));
  items.sort((a, b) => {
    const x = value(a), y = value(b);
    const order = x < y ? -1 : x > y ? 1 : a.name.localeCompare(b.name);
    return state.descending ? -order : order;
  });
  return items;
}

function render() {
  const content = document.getElementById("content");
  if (state.error) { showNotice(content, "error", ...errorHelp(state.error)); return; }
  if (state.items === null) return;
  if (state.items.length === 0) {
    const host = location.hostname || "localhost";
    showNotice(content, "empty",
      el("h2", { text: "No agents yet" }),
      el("p", {}, "Agents appear here by themselves when their traces reach agentmon. Point your agents (or LiteLLM) at it:"),
      el("pre", { text: `export OTEL_EXPORTER_OTLP_ENDPOINT=http://${host}:4317   # OTLP/gRPC\n# or, over HTTP:\nexport OTEL_EXPORTER_OTLP_ENDPOINT=http://${host}:4318\nexport OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` }),
      el("p", {}, "Or register one by hand: ", el("code", { text: "POST /agents/register" }), ". This page updates as soon as spans arrive."));
    document.getElementById("count").textContent = "";
    return;
  }
  const items = sortedItems();
  const head = el("tr", {}, COLUMNS.map((column) => el("th", {
    class: ["sortable", column.num ? "num" : "", column.key === state.sortKey ? (state.descending ? "sorted-desc" : "sorted-asc") : ""].join(" "),
    "data-sort": column.key,
    onclick: () => {
      if (state.sortKey === column.key) state.descending = !state.descending;
      else { state.sortKey = column.key; state.descending = !!column.num; }
      render();
    },
  }, column.label)), el("th", {}, ""));
  const rows = items.map((agent) => el("tr", { "data-agent-id": agent.agent_id },
    COLUMNS.map((column) => cell(agent, column)),
    el("td", {}, el("a", { class: "details", href: `/ui/agents/${encodeURIComponent(agent.agent_id)}?range=${state.range}`, text: "Details" }))));
  const table = el("table", { id: "agents" }, el("thead", {}, head), el("tbody", {}, rows));
  content.replaceChildren(items.length ? table : el("p", { class: "muted", text: `No agent matches "${state.search}".` }));
  document.getElementById("count").textContent = `${items.length} of ${state.items.length} agents`;
}

async function load() {
  try {
    const body = await api("/stats/agents?" + windowParams(state.range));
    state.items = body.items;
    state.error = null;
  } catch (error) {
    state.error = error;
  }
  render();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("live-slot").replaceWith(liveIndicator());
  state.range = setupRangePicker(document.getElementById("range"), (range) => { state.range = range; load(); });
  const search = document.getElementById("search");
  search.addEventListener("input", () => { state.search = search.value; render(); });
  load();
  startLive(document.getElementById("live"), load);
});
