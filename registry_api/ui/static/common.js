// Shared by the dashboard pages: API calls, formatting, the time range and the live feed.
"use strict";

const RANGES = { "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new ApiError(0, "agentmon's API cannot be reached: is `agentmon up` (or `agentmon api`) running?");
  }
  let body = null;
  try { body = await response.json(); } catch (error) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : response.statusText;
    throw new ApiError(response.status, detail);
  }
  return body;
}

// The window the pages show: the last N seconds up to now (plus a minute for clock skew).
function windowParams(range) {
  const seconds = RANGES[range] || RANGES["24h"];
  const to = new Date(Date.now() + 60_000);
  const from = new Date(to.getTime() - 60_000 - seconds * 1000);
  return new URLSearchParams({ from: from.toISOString(), to: to.toISOString() });
}

function savedRange() {
  const fromUrl = new URLSearchParams(location.search).get("range");
  if (fromUrl && RANGES[fromUrl]) return fromUrl;
  const stored = localStorage.getItem("agentmon.range");
  return stored && RANGES[stored] ? stored : "24h";
}

function setupRangePicker(select, onChange) {
  select.value = savedRange();
  select.addEventListener("change", () => {
    localStorage.setItem("agentmon.range", select.value);
    onChange(select.value);
  });
  return select.value;
}

// Formatting: the Playwright tests format the API's numbers by these same rules.
const fmt = {
  int: (n) => Number(n).toLocaleString("en-US"),
  // Fractions of a cent keep six decimals: one cheap call must not read as $0.
  cost: (usd) => "$" + Number(usd).toFixed(Math.abs(usd) < 0.01 ? 6 : 4),
  rate: (r) => (100 * r).toFixed(1) + "%",
  ms: (ms) => ms === null || ms === undefined ? "\u2013" : ms < 10 ? ms.toFixed(1) + " ms" : ms < 1000 ? ms.toFixed(0) + " ms" : (ms / 1000).toFixed(2) + " s",
  time: (iso) => iso ? new Date(iso).toLocaleString("en-GB", { hour12: false }) : "never",
};

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function showNotice(container, kind, ...content) {
  container.replaceChildren(el("div", { class: "notice " + kind, role: kind === "error" ? "alert" : "status" }, ...content));
}

function errorHelp(error) {
  if (error.status === 503 && /ClickHouse/.test(error.message)) {
    return [el("p", {}, "Stats need ClickHouse. ", error.message)];
  }
  return [el("p", {}, el("strong", { text: "Could not load the data. " }), error.message),
          el("p", { class: "muted", text: "The page retries when new spans arrive, or reload it." })];
}

// Live updates: the server sends `spans` events when stored spans change; `refresh` runs
// at most once per second however many arrive.
function startLive(indicator, refresh) {
  let pending = null, lastVersion = null;
  const source = new EventSource("/stats/events");
  source.addEventListener("open", () => { indicator.className = "live on"; indicator.querySelector(".text").textContent = "live"; });
  source.addEventListener("error", () => { indicator.className = "live off"; indicator.querySelector(".text").textContent = "reconnecting"; });
  source.addEventListener("spans", (event) => {
    const { version } = JSON.parse(event.data);
    if (lastVersion === null) { lastVersion = version; return; }
    if (version === lastVersion) return;
    lastVersion = version;
    if (pending) return;
    pending = setTimeout(async () => { pending = null; await refresh(); document.body.dataset.liveUpdates = String(Number(document.body.dataset.liveUpdates || 0) + 1); }, 300);
  });
  return source;
}

function liveIndicator() {
  return el("span", { class: "live", id: "live" }, el("span", { class: "dot" }), el("span", { class: "text", text: "connecting" }));
}
