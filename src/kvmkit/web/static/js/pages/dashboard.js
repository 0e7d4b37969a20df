// Dashboard: VM counts by state, host CPU / memory / storage use, KSM savings, charts of the metrics
// history, recent tasks. Routes: GET /vms (live store), /host/metrics, /host/ksm, /pools, /tasks (live store).
import { get } from "../lib/api.js";
import { Chart, lastValue } from "../lib/chart.js";
import { html, useEffect } from "../lib/h.js";
import { fmtBytes, fmtNumber, fmtPercent, t } from "../lib/i18n.js";
import { sortedTasks } from "../lib/live.js";
import { href } from "../lib/router.js";
import { atLeast, taskStore, useStore, vmStore } from "../lib/store.js";
import { ErrorBox, Loading, Section, TaskItem, useLoad } from "../lib/ui.js";
import { stateLabel, STATE_ORDER } from "./vms.js";

function Stat({ label, value, sub, id }) {
  return html`<div class="stat" role="group" aria-labelledby=${id}>
    <div class="stat-label" id=${id}>${label}</div><div class="stat-value">${value}</div>
    ${sub && html`<div class="stat-sub muted">${sub}</div>`}</div>`;
}

export function Dashboard({ me }) {
  const { vms, loaded } = useStore(vmStore);
  const { tasks } = useStore(taskStore);
  const hostAllowed = me.vm_scope !== "granted";
  const metrics = useLoad(() => (hostAllowed ? get("/host/metrics?since=1h") : null), []);
  const ksm = useLoad(() => (hostAllowed ? get("/host/ksm") : null), []);
  const pools = useLoad(() => (hostAllowed ? get("/pools") : null), []);
  useEffect(() => {
    document.title = `${t("nav.dashboard")} · kvmkit`;
    const timer = setInterval(() => { if (hostAllowed) metrics.reload(); }, 10000);
    return () => clearInterval(timer);
  }, []);
  const counts = {};
  for (const vm of vms.values()) counts[vm.state] = (counts[vm.state] || 0) + 1;
  const m = metrics.data;
  const cpu = m ? lastValue(m, "cpu_percent") : null;
  const memUsed = m ? lastValue(m, "memory_used_bytes") : null;
  const memTotal = m ? lastValue(m, "memory_total_bytes") : null;
  const running = (pools.data || []).filter((p) => p.state === "running");
  const cap = running.reduce((a, p) => a + (p.capacity || 0), 0);
  const alloc = running.reduce((a, p) => a + (p.allocation || 0), 0);
  const recent = sortedTasks(tasks).slice(0, 8);
  return html`<h1 tabindex="-1">${t("nav.dashboard")}</h1>
  <div class="stats">
    <${Stat} id="st-vms" label=${t("dash.vms_total")} value=${loaded ? fmtNumber(vms.size) : "…"}
      sub=${html`<a href=${href("vms")}>${t("dash.see_vms")}</a>`} />
    ${STATE_ORDER.filter((s) => counts[s]).map((s) => html`<${Stat} key=${s} id=${"st-" + s} label=${stateLabel(s)} value=${fmtNumber(counts[s])} />`)}
    ${hostAllowed && html`
      <${Stat} id="st-cpu" label=${t("dash.host_cpu")} value=${cpu === null ? "—" : fmtPercent(cpu)} />
      <${Stat} id="st-mem" label=${t("dash.host_memory")} value=${memUsed === null ? "—" : fmtBytes(memUsed)}
        sub=${memTotal ? t("dash.of_total", { total: fmtBytes(memTotal) }) : null} />
      <${Stat} id="st-storage" label=${t("dash.storage")} value=${pools.data ? fmtBytes(alloc) : "—"}
        sub=${cap ? t("dash.of_total_pct", { total: fmtBytes(cap), pct: fmtPercent(100 * alloc / cap) }) : null} />
      <${Stat} id="st-ksm" label=${t("dash.ksm_saved")} value=${ksm.data ? fmtBytes(ksm.data.saved_bytes || 0) : "—"}
        sub=${ksm.data ? (ksm.data.run === 1 ? t("host.ksm_running") : t("host.ksm_stopped")) : null} />`}
  </div>
  ${hostAllowed && html`<${Section} id="dash-charts" title=${t("dash.charts")}>
    ${metrics.loading && !m && html`<${Loading} />`}
    <${ErrorBox} error=${metrics.error} />
    ${m && html`<div class="charts">
      <${Chart} id="ch-cpu" doc=${m} unit="percent" max=${100} title=${t("metric.cpu")} lines=${[{ name: "cpu_percent", label: t("metric.cpu_percent") }]} />
      <${Chart} id="ch-mem" doc=${m} unit="bytes" title=${t("metric.memory")} lines=${[{ name: "memory_used_bytes", label: t("metric.memory_used") }, { name: "memory_total_bytes", label: t("metric.memory_total") }]} />
      <${Chart} id="ch-disk" doc=${m} unit="bytes/s" title=${t("metric.disk")} lines=${[{ name: "disk_read_bytes_per_second", label: t("metric.read") }, { name: "disk_write_bytes_per_second", label: t("metric.write") }]} />
      <${Chart} id="ch-vms" doc=${m} unit="count" title=${t("metric.vms_running")} lines=${[{ name: "vms_running", label: t("metric.vms_running") }]} />
    </div>`}
  <//>`}
  <${Section} id="dash-tasks" title=${t("dash.recent_tasks")} actions=${html`<a href=${href("tasks")}>${t("dash.all_tasks")}</a>`}>
    ${recent.length ? html`<ul class="tasks">${recent.map((task) => html`<${TaskItem} key=${task.id} task=${task} canCancel=${atLeast(me, "operator")} />`)}</ul>`
      : html`<p class="muted">${t("tasks.none")}</p>`}
  <//>`;
}
