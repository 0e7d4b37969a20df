// VM metrics charts (GET /vms/{name}/metrics?since=) and the XML tab (GET /vms/{name}/xml; admins replace
// it with PUT /vms/{name}/xml, the server's schema errors shown under the editor, the diff on success).
import { api, enc, get, withHost } from "../lib/api.js";
import { Chart } from "../lib/chart.js";
import { html, useEffect, useState } from "../lib/h.js";
import { t } from "../lib/i18n.js";
import { atLeast } from "../lib/store.js";
import { ErrorBox, Loading, notify, Section, useLoad } from "../lib/ui.js";

const RANGES = [["1h", "range.1h"], ["6h", "range.6h"], ["24h", "range.24h"], ["7d", "range.7d"]];

export function VmMetrics({ vm }) {
  const [range, setRange] = useState("1h");
  const m = useLoad(() => get(withHost(`/vms/${enc(vm.name)}/metrics?since=${range}`, vm.host)), [vm.name, range]);
  useEffect(() => {
    const timer = setInterval(() => m.reload(), 20000);
    return () => clearInterval(timer);
  }, [m.reload]);
  const doc = m.data;
  return html`<${Section} id="vm-metrics" title=${t("vm.tab.metrics")} actions=${html`<label for="range" class="sr-only">${t("range.label")}</label>
      <select id="range" value=${range} onChange=${(e) => setRange(e.target.value)}>${RANGES.map(([v, k]) => html`<option value=${v}>${t(k)}</option>`)}</select>`}>
    ${m.loading && !doc && html`<${Loading} />`}
    <${ErrorBox} error=${m.error} />
    ${doc && html`<div class="charts">
      <${Chart} id="vc-cpu" doc=${doc} unit="percent" max=${100} title=${t("metric.cpu")} lines=${[{ name: "cpu_percent", label: t("metric.cpu_percent") }]} />
      <${Chart} id="vc-mem" doc=${doc} unit="bytes" title=${t("metric.memory")} lines=${[{ name: "memory_used_bytes", label: t("metric.memory_used") }, { name: "memory_total_bytes", label: t("metric.memory_total") }]} />
      <${Chart} id="vc-disk" doc=${doc} unit="bytes/s" title=${t("metric.disk")} lines=${[{ name: "disk_read_bytes_per_second", label: t("metric.read") }, { name: "disk_write_bytes_per_second", label: t("metric.write") }]} />
      <${Chart} id="vc-net" doc=${doc} unit="bytes/s" title=${t("metric.net")} lines=${[{ name: "net_receive_bytes_per_second", label: t("metric.receive") }, { name: "net_transmit_bytes_per_second", label: t("metric.transmit") }]} />
    </div>`}
  <//>`;
}

export function VmXml({ vm, me, reload }) {
  const [inactive, setInactive] = useState(false);
  const x = useLoad(() => get(withHost(`/vms/${enc(vm.name)}/xml?inactive=${inactive}`, vm.host)), [vm.name, inactive]);
  const [text, setText] = useState(null);
  const [error, setError] = useState(null);
  const [result, setResult] = useState(null);
  const [busy, setBusy] = useState(false);
  const admin = atLeast(me, "admin");
  useEffect(() => { setText(null); }, [x.data]);
  const value = text !== null ? text : (x.data ? x.data.xml : "");
  const save = async (e) => {
    e.preventDefault();
    setBusy(true);
    try {
      const r = await api("PUT", withHost(`/vms/${enc(vm.name)}/xml`, vm.host), { xml: value });
      setResult(r); setError(null);
      notify(r.changed ? t("xml.replaced") : t("xml.unchanged"));
      x.reload(); reload();
    } catch (err) { setError(err); setResult(null); } finally { setBusy(false); }
  };
  return html`<${Section} id="vm-xml" title=${t("vm.tab.xml")} actions=${html`<div class="field check inline">
      <input type="checkbox" id="xml-inactive" checked=${inactive} onChange=${(e) => setInactive(e.target.checked)} />
      <label for="xml-inactive">${t("xml.inactive")}</label></div>`}>
    ${x.loading && !x.data && html`<${Loading} />`}
    <${ErrorBox} error=${x.error} />
    ${x.data && html`<form onSubmit=${save} class="stack">
      <label for="xml-text" class=${admin ? "" : "sr-only"}>${admin ? t("xml.edit_label") : t("vm.tab.xml")}</label>
      <textarea id="xml-text" class="xml" spellcheck="false" readonly=${!admin} value=${value}
        aria-invalid=${error ? "true" : undefined} aria-describedby=${error ? "xml-error" : undefined}
        onInput=${(e) => setText(e.target.value)} rows="24"></textarea>
      ${!admin && html`<p class="help">${t("xml.admins_only")}</p>`}
      ${admin && html`<div class="buttons"><button type="submit" disabled=${busy || text === null}>${t("xml.replace")}</button>
        <button type="button" class="secondary" disabled=${text === null} onClick=${() => setText(null)}>${t("xml.revert")}</button></div>`}
      <div id="xml-error"><${ErrorBox} error=${error} /></div>
      ${result && html`<div class="xml-result"><p>${result.changed ? t("xml.applies", { when: t("xml.when." + (result.applies === "now" ? "now" : "next")) }) : t("xml.unchanged")}</p>
        ${result.diff && html`<pre class="diff" tabindex="0" aria-label=${t("xml.diff")}>${result.diff}</pre>`}</div>`}
    </form>`}
  <//>`;
}
