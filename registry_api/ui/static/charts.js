// SVG bar charts drawn here, with no chart library: nothing to vendor, nothing from a CDN.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

// series: [{ key, color, label }]; stacked bars of buckets[i][key], one bar per bucket.
function barChart({ buckets, series, formatValue, from, to, bucketSeconds }) {
  const width = 600, height = 180, left = 64, right = 8, top = 8, bottom = 22;
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  // Buckets start on whole multiples of their width: count slots from the one holding `from`,
  // or the window's oldest, partly covered bucket would fall off the chart.
  const size = bucketSeconds * 1000;
  const origin = Math.floor(from / size) * size;
  const slots = Math.max(1, Math.ceil((to - origin) / size));
  const totals = buckets.map((b) => series.reduce((sum, s) => sum + b[s.key], 0));
  const max = niceMax(Math.max(0, ...totals));
  const plotWidth = width - left - right, plotHeight = height - top - bottom;
  for (const fraction of [0, 0.5, 1]) {
    const y = top + plotHeight * (1 - fraction);
    svg.append(svgEl("line", { x1: left, x2: width - right, y1: y, y2: y, stroke: "#e4e7ec" }));
    svg.append(svgEl("text", { x: left - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#667085" }, formatValue(max * fraction)));
  }
  const slotWidth = plotWidth / slots;
  for (const bucket of buckets) {
    const index = Math.floor((Date.parse(bucket.bucket_start) - origin) / size);
    if (index < 0 || index >= slots) continue;
    let base = 0;
    for (const s of series) {
      const value = bucket[s.key];
      if (!value) continue;
      const barHeight = (value / max) * plotHeight;
      const rect = svgEl("rect", {
        x: left + index * slotWidth + slotWidth * 0.1, width: Math.max(1, slotWidth * 0.8),
        y: top + plotHeight - (base + barHeight), height: barHeight, fill: s.color,
        "data-series": s.key, "data-bucket": bucket.bucket_start, "data-value": value,
      });
      rect.append(svgEl("title", {}, `${new Date(bucket.bucket_start).toLocaleString("en-GB", { hour12: false })}: ${formatValue(value)} ${s.label}`));
      svg.append(rect);
      base += barHeight;
    }
  }
  const label = (time) => new Date(time).toLocaleString("en-GB", { hour12: false, month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  svg.append(svgEl("text", { x: left, y: height - 6, "font-size": 11, fill: "#667085" }, label(from)));
  svg.append(svgEl("text", { x: width - right, y: height - 6, "font-size": 11, fill: "#667085", "text-anchor": "end" }, label(to)));
  return svg;
}
