// Migrate a VM to another host (admins): a dialog with the destination, mode, copy storage, bandwidth and
// auto-converge. "Check" runs the pre-checks alone (each with its outcome and fix); "Migrate" submits the
// task and follows it: percent from the task, data remaining and expected downtime from the event
// stream's migration events, Cancel while it runs, the measured downtime when done.
// Routes: GET /hosts, POST /vms/{name}/migrate/check?host=, POST /vms/{name}/migrate?host=.
import { api, enc, get, withHost } from "../lib/api.js";
import { html, useEffect, useRef, useState } from "../lib/h.js";
import { fmtBytes, fmtNumber, has, t } from "../lib/i18n.js";
import { trackTask } from "../lib/live.js";
import { atLeast, hostStore, taskStore, useStore } from "../lib/store.js";
import { cancelTask, ErrorBox, Field, fieldErrors, inputProps, isActive, TaskProgress, taskState, useLoad } from "../lib/ui.js";
import { hostState, hostStateLabel } from "./hosts.js";
import { vmHref } from "./vms.js";

const checkLabel = (s) => (has(`check.${s}`) ? t(`check.${s}`) : s);

export function Checks({ checks }) {
  if (!checks || !checks.length) return null;
  return html`<ul class="checks migrate-checks">${checks.map((c) => html`<li key=${c.name}>
    <span class=${"badge check-" + c.status}>${checkLabel(c.status)}</span> <code>${c.name}</code>
    <span lang="en">${c.detail}</span>${c.fix && html`<p class="help"><span>${t("migrate.fix")}</span> <span lang="en">${c.fix}</span></p>`}</li>`)}</ul>`;
}

function Progress({ task, vm }) {
  const ev = useStore(hostStore, (s) => s.migrations.get(task.id));
  const done = task.state === "succeeded";
  const r = done ? task.result || {} : null;
  const to = (r && r.to) || (ev && ev.to) || "";
  return html`<div class="migrate-progress" role="status">
    <p><span class=${"badge state-" + task.state}>${taskState(task.state)}</span> ${t("migrate.percent", { pct: fmtNumber(Math.round(task.percent || 0)) })}</p>
    <${TaskProgress} task=${task} />
    ${isActive(task) && ev && html`<dl class="facts">
      ${ev.data_remaining !== undefined && ev.data_remaining !== null && html`<div><dt>${t("migrate.remaining")}</dt><dd>${fmtBytes(ev.data_remaining)}</dd></div>`}
      ${ev.expected_downtime_ms !== undefined && ev.expected_downtime_ms !== null && html`<div><dt>${t("migrate.expected_downtime")}</dt><dd>${t("unit.ms", { n: fmtNumber(ev.expected_downtime_ms) })}</dd></div>`}
    </dl>`}
    ${isActive(task) && html`<div class="buttons"><button type="button" class="small secondary" onClick=${() => cancelTask(task)}>${t("action.cancel")}</button></div>`}
    ${r && html`<p>${t("migrate.done", { name: vm.name, to })}
      ${r.downtime_ms !== null && r.downtime_ms !== undefined && " " + t("migrate.downtime", { ms: fmtNumber(r.downtime_ms) })}
      ${to && html` <a href=${vmHref(vm.name, to)}>${t("migrate.open_there")}</a>`}</p>`}
    ${task.error && html`<${ErrorBox} error=${{ message: task.error, code: "failed" }} compact />`}
  </div>`;
}

function MigrateForm({ vm, close }) {
  const hosts = useLoad(() => get("/hosts?probe=false"), []);
  const { states } = useStore(hostStore);
  const running = vm.state === "running" || vm.state === "paused";
  const [mode, setMode] = useState(running ? "live" : "offline");
  const [plan, setPlan] = useState(null);
  const [error, setError] = useState(null);
  const [errors, setErrors] = useState({});
  const [busy, setBusy] = useState(false);
  const [taskId, setTaskId] = useState(null);
  const task = useStore(taskStore, (s) => (taskId ? s.tasks.get(taskId) : null));
  const others = (hosts.data || []).filter((h) => h.name !== (vm.host || "local"));
  const body = (form) => {
    const f = new FormData(form);
    const b = { to: String(f.get("mig_to") || ""), mode, copy_storage: f.get("mig_copy") === "on" };
    if (mode === "live") {
      const bw = String(f.get("mig_bw") || "").trim();
      if (bw) b.bandwidth_mib = Number(bw);
      b.auto_converge = f.get("mig_ac") === "on";
    }
    return b;
  };
  const run = async (form, check) => {
    setBusy(true); setError(null); setErrors({});
    if (check) setPlan(null);
    const path = withHost(`/vms/${enc(vm.name)}/migrate${check ? "/check" : ""}`, vm.host);
    try {
      const answer = await api("POST", path, body(form));
      if (check) setPlan(answer);
      else { trackTask(answer); setTaskId(answer.id); }
    } catch (err) {
      setErrors(fieldErrors(err, (loc) => ({ to: "mig_to", bandwidth_mib: "mig_bw", mode: "mig_mode" })[loc[0]]));
      setError(err);
      if (err.body && Array.isArray(err.body.checks)) setPlan({ ok: false, checks: err.body.checks });
    } finally { setBusy(false); }
  };
  return html`<form onSubmit=${(e) => { e.preventDefault(); run(e.target, false); }} novalidate>
    <h2 id="mig-title">${t("migrate.title", { name: vm.name })}</h2>
    <p class="muted">${t("migrate.from", { host: vm.host || "local" })}</p>
    <div class="form-grid">
      <${Field} id="mig_to" label=${t("migrate.to")} error=${errors.mig_to} help=${hosts.data && !others.length ? t("migrate.no_hosts") : null}>
        <select ...${inputProps("mig_to", errors)} disabled=${!!taskId}>
          ${others.map((h) => html`<option key=${h.name} value=${h.name}>${h.name} (${hostStateLabel(hostState(h, states))})</option>`)}
        </select><//>
      <${Field} id="mig_mode" label=${t("migrate.mode")} error=${errors.mig_mode}>
        <select id="mig_mode" name="mig_mode" value=${mode} onChange=${(e) => setMode(e.target.value)} disabled=${!!taskId}>
          <option value="live" disabled=${!running}>${t("migrate.mode_live")}</option>
          <option value="offline">${t("migrate.mode_offline")}</option></select><//>
      <${Field} id="mig_bw" label=${t("migrate.bandwidth")} error=${errors.mig_bw} help=${t("migrate.bandwidth_help")}>
        <input ...${inputProps("mig_bw", errors)} type="number" min="1" disabled=${mode !== "live" || !!taskId} /><//>
      <div class="field check"><input type="checkbox" id="mig_copy" name="mig_copy" disabled=${!!taskId} />
        <label for="mig_copy">${t("migrate.copy_storage")}</label></div>
      <div class="field check"><input type="checkbox" id="mig_ac" name="mig_ac" disabled=${mode !== "live" || !!taskId} />
        <label for="mig_ac">${t("migrate.auto_converge")}</label></div>
    </div>
    ${plan && html`<div class="migrate-plan" role="status" aria-live="polite">
      <p><strong>${plan.ok ? t("migrate.check_ok") : t("migrate.check_refused")}</strong></p><${Checks} checks=${plan.checks} /></div>`}
    <${ErrorBox} error=${error} compact />
    ${task && html`<${Progress} task=${task} vm=${vm} />`}
    <div class="buttons">
      <button type="button" class="secondary" onClick=${close}>${t("action.close")}</button>
      ${!taskId && html`<button type="button" class="secondary" id="mig-check" disabled=${busy || !others.length}
        onClick=${(e) => run(e.target.form, true)}>${t("migrate.check")}</button>
      <button type="submit" disabled=${busy || !others.length}>${t("migrate.submit")}</button>`}
    </div>
  </form>`;
}

/** The "Migrate" button of the VM page (admins) and its dialog. */
export function MigrateButton({ vm, me }) {
  const [open, setOpen] = useState(false);
  const ref = useRef(null);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    if (open && !el.open) el.showModal();
    if (!open && el.open) el.close();
  }, [open]);
  if (!atLeast(me, "admin")) return null;
  return html`<button type="button" class="small secondary" id="vm-migrate" onClick=${() => setOpen(true)}>${t("migrate.open")}</button>
    <dialog ref=${ref} class="confirm migrate" aria-labelledby="mig-title" onCancel=${(e) => { e.preventDefault(); setOpen(false); }}>
      ${open && html`<${MigrateForm} vm=${vm} close=${() => setOpen(false)} />`}
    </dialog>`;
}
