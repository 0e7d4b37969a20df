// Time-series charts of the metrics history (GET /api/v1/host/metrics, /api/v1/vms/{name}/metrics),
// drawn with uPlot (vendored, loaded on the first chart). Each chart also says its latest values in text.
import { currentLang, fmtBytes, fmtPercent, fmtRate, fmtTime, t } from "./i18n.js";
import { html, useEffect, useRef } from "./h.js";

let uplot = null;
function loadUplot() {
  if (!uplot) {
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = "/static/vendor/uplot.css";
    document.head.append(link);
    uplot = import("../../vendor/uplot.js").then((m) => m.default);
  }
  return uplot;
}

const COLORS = ["#1f5fa8", "#b4490c", "#2a7d3f", "#7a3fa0"];
export const UNIT_FORMAT = { percent: (v) => fmtPercent(v, 0), bytes: (v) => fmtBytes(v, 0), "bytes/s": (v) => fmtRate(v),
  count: (v) => String(Math.round(v)) };

/** The series called `names` of a metrics document as uPlot data: [timestamps, values...]. */
export function seriesData(doc, names) {
  const by = Object.fromEntries((doc.series || []).map((s) => [s.name, s]));
  return [doc.timestamps || [], ...names.map((n) => (by[n] ? by[n].values : []))];
}

export function lastValue(doc, name) {
  const s = (doc.series || []).find((x) => x.name === name);
  if (!s) return null;
  for (let i = s.values.length - 1; i >= 0; i--) if (s.values[i] !== null) return s.values[i];
  return null;
}

/** A line chart: `doc` a metrics document, `lines` [{name, label}], `unit` percent | bytes | bytes/s. */
export function Chart({ doc, lines, unit, title, id, max }) {
  const box = useRef(null);
  const plot = useRef(null);
  const fmt = UNIT_FORMAT[unit] || String;
  const data = doc ? seriesData(doc, lines.map((l) => l.name)) : null;
  const points = data ? data[0].length : 0;
  useEffect(() => {
    let alive = true;
    let ro = null;
    if (!data || !points) return undefined;
    loadUplot().then((UPlot) => {
      if (!alive || !box.current) return;
      const width = Math.max(200, box.current.clientWidth);
      const opts = {
        width, height: 160, legend: { show: false }, cursor: { y: false },
        scales: { x: { time: true, range: (u, lo, hi) => (hi - lo < 60 ? [hi - 300, hi + 10] : [lo, hi]) }, y: max ? { range: [0, max] } : { range: (u, lo, hi) => [0, Math.max(hi * 1.1, 1)] } },
        axes: [
          { values: (u, ticks) => ticks.map((v) => fmtTime(v, { date: (u.scales.x.max - u.scales.x.min) > 86400 })),
            stroke: "#4a5260", grid: { stroke: "#e4e8ee" } },
          { values: (u, ticks) => ticks.map(fmt), size: 86, stroke: "#4a5260", grid: { stroke: "#e4e8ee" } },
        ],
        series: [{}, ...lines.map((l, i) => ({ label: l.label, stroke: COLORS[i % COLORS.length], width: 2,
          fill: i === 0 ? "rgba(31,95,168,0.08)" : undefined, spanGaps: false }))],
      };
      if (plot.current) plot.current.destroy();
      plot.current = new UPlot(opts, data, box.current);
      ro = new ResizeObserver(() => {
        if (plot.current && box.current) plot.current.setSize({ width: Math.max(200, box.current.clientWidth), height: 160 });
      });
      ro.observe(box.current);
    });
    return () => { alive = false; if (ro) ro.disconnect(); };
  }, [doc, currentLang()]);
  useEffect(() => () => { if (plot.current) plot.current.destroy(); plot.current = null; }, []);
  const latest = doc ? lines.map((l) => `${l.label}: ${lastValue(doc, l.name) === null ? "—" : fmt(lastValue(doc, l.name))}`).join(" · ") : "";
  return html`<figure class="chart" aria-labelledby=${id}>
    <figcaption id=${id}><span class="chart-title">${title}</span>
      ${points > 0 && html`<span class="chart-latest">${t("chart.latest")} ${latest}</span>`}</figcaption>
    ${points > 0 ? html`<div class="chart-box" ref=${box} role="img" aria-label=${t("chart.aria", { title, latest, points })}></div>`
      : html`<p class="muted">${t("chart.no_data")}</p>`}
    ${points > 0 && html`<ul class="chart-legend">${lines.map((l, i) => html`<li key=${l.name}><span class=${"swatch c" + i}></span>${l.label}</li>`)}</ul>`}
  </figure>`;
}
