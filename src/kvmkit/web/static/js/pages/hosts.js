// Hosts: the inventory of libvirt hosts (the local one and the added ones), each row's state kept live
// from the event stream's host events; admins add a host, turn maintenance on and off, set placement
// limits, remove a host (force when it has VMs) and evacuate one (a task whose result says, per VM, where
// it went or why it stayed). Routes: GET /hosts, POST /hosts, PATCH /hosts/{name}, DELETE
// /hosts/{name}?force=, POST /hosts/{name}/maintenance {"on"}, POST /hosts/{name}/evacuate.
import { api, enc, get } from "../lib/api.js";
import { html, useEffect, useState } from "../lib/h.js";
import { fmtMiB, fmtNumber, has, t } from "../lib/i18n.js";
import { loadVms, trackTask } from "../lib/live.js";
import { atLeast, hostStore, taskStore, useStore } from "../lib/store.js";
import { confirmAction, ErrorBox, Field, fieldErrors, inputProps, Loading, notify, Section, TaskItem, useLoad } from "../lib/ui.js";

export const hostStateLabel = (s) => (has(`hosts.state.${s}`) ? t(`hosts.state.${s}`) : s);

/** The state to show: the event stream's up/down when it has one, maintenance while the host is up. */
export function hostState(row, live) {
  const now = live.get(row.name) || row.state;
  if (now === "down") return "down";
  return row.maintenance ? "maintenance" : (now === "maintenance" ? "up" : now);
}

export function HostBadge({ state }) {
  return html`<span class=${"badge host-" + state}>${hostStateLabel(state)}</span>`;
}

/** Where a 422 field location of POST /hosts points in the add form. */
function addField(loc) {
  return { name: "host_name", uri: "host_uri", ssh_key: "host_ssh_key", max_memory_mib: "host_max_memory",
    max_memory: "host_max_memory", cpu_overcommit: "host_overcommit" }[loc[0]] || null;
}

/** A 4xx without fields that names one of the form's inputs (e.g. "ssh key ... is not a file"). */
function messageField(err) {
  const m = String((err && err.message) || "");
  if (/^ssh key |--ssh-key/.test(m)) return "host_ssh_key";
  if (/is not a libvirt URI|names no QEMU driver|carries keyfile=|does not answer at/.test(m)) return "host_uri";
  if (/^a host named|^host '.+' exists/.test(m)) return "host_name";
  return null;
}

function AddHost({ reload }) {
  const [errors, setErrors] = useState({});
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const form = e.target;
    const f = new FormData(form);
    const body = { name: String(f.get("host_name") || "").trim(), uri: String(f.get("host_uri") || "").trim(),
      check: f.get("host_check") === "on" };
    const key = String(f.get("host_ssh_key") || "").trim();
    if (key) body.ssh_key = key;
    const mem = String(f.get("host_max_memory") || "").trim();
    if (mem) body.max_memory = mem;
    const over = String(f.get("host_overcommit") || "").trim();
    if (over) body.cpu_overcommit = Number(over);
    setBusy(true);
    try {
      await api("POST", "/hosts", body);
      setErrors({}); setError(null);
      notify(t("hosts.added", { name: body.name }));
      form.reset();
      reload();
      loadVms();
    } catch (err) {
      const fe = fieldErrors(err, addField);
      const named = messageField(err);
      if (named && !fe[named]) fe[named] = { local: err.message };
      setErrors(fe);
      setError(err);
      const first = Object.keys(fe).find((id) => id !== "_form");
      if (first) document.getElementById(first)?.focus();
    } finally { setBusy(false); }
  };
  return html`<${Section} id="hosts-add" title=${t("hosts.add")}>
    <form class="form-grid" onSubmit=${submit} novalidate>
      <${Field} id="host_name" label=${t("word.name")} error=${errors.host_name} help=${t("hint.name")}>
        <input ...${inputProps("host_name", errors)} required autocomplete="off" /><//>
      <${Field} id="host_uri" label=${t("hosts.uri")} error=${errors.host_uri} help=${t("hosts.uri_help")}>
        <input ...${inputProps("host_uri", errors)} required autocomplete="off" placeholder="qemu+ssh://root@host2/system" /><//>
      <${Field} id="host_ssh_key" label=${t("hosts.ssh_key")} error=${errors.host_ssh_key} help=${t("hosts.ssh_key_help")}>
        <input ...${inputProps("host_ssh_key", errors)} autocomplete="off" placeholder="/etc/kvmkit/ssh/id_ed25519" /><//>
      <${Field} id="host_max_memory" label=${t("hosts.max_memory")} error=${errors.host_max_memory} help=${t("hosts.max_memory_help")}>
        <input ...${inputProps("host_max_memory", errors)} placeholder="16G" /><//>
      <${Field} id="host_overcommit" label=${t("hosts.overcommit")} error=${errors.host_overcommit} help=${t("hosts.overcommit_help")}>
        <input ...${inputProps("host_overcommit", errors)} type="number" min="0" step="0.1" /><//>
      <div class="field check"><input type="checkbox" id="host_check" name="host_check" defaultChecked=${true} />
        <label for="host_check">${t("hosts.check")}</label></div>
      <div class="buttons wide"><button type="submit" disabled=${busy}>${busy ? t("hosts.adding") : t("action.add")}</button></div>
    </form>
    <${ErrorBox} error=${error} />
  <//>`;
}

function Limits({ hosts, reload }) {
  const [name, setName] = useState("");
  const [errors, setErrors] = useState({});
  const [error, setError] = useState(null);
  const row = hosts.find((h) => h.name === name) || hosts[0];
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const body = {};
    const mem = String(f.get("lim_memory") || "").trim();
    if (mem) body.max_memory = mem;
    const over = String(f.get("lim_overcommit") || "").trim();
    if (over) body.cpu_overcommit = Number(over);
    try {
      await api("PATCH", `/hosts/${enc(row.name)}`, body);
      setErrors({}); setError(null);
      notify(t("hosts.limits_saved", { name: row.name }));
      reload();
    } catch (err) {
      setErrors(fieldErrors(err, (loc) => ({ max_memory: "lim_memory", max_memory_mib: "lim_memory", cpu_overcommit: "lim_overcommit" })[loc[0]]));
      setError(err);
    }
  };
  if (!row) return null;
  return html`<${Section} id="hosts-limits" title=${t("hosts.limits")}>
    <form class="form-grid" onSubmit=${submit} novalidate key=${row.name}>
      <${Field} id="lim_host" label=${t("hosts.host")}>
        <select id="lim_host" value=${row.name} onChange=${(e) => setName(e.target.value)}>
          ${hosts.map((h) => html`<option key=${h.name} value=${h.name}>${h.name}</option>`)}</select><//>
      <${Field} id="lim_memory" label=${t("hosts.max_memory")} error=${errors.lim_memory} help=${t("hosts.lim_memory_help")}>
        <input ...${inputProps("lim_memory", errors)} placeholder=${row.max_memory_mib ? String(row.max_memory_mib) : "16G"} /><//>
      <${Field} id="lim_overcommit" label=${t("hosts.overcommit")} error=${errors.lim_overcommit} help=${t("hosts.lim_overcommit_help")}>
        <input ...${inputProps("lim_overcommit", errors)} type="number" min="0" step="0.1"
          placeholder=${row.cpu_overcommit ? String(row.cpu_overcommit) : ""} /><//>
      <div class="buttons wide"><button type="submit">${t("action.save")}</button></div>
    </form>
    <${ErrorBox} error=${error} />
  <//>`;
}

/** The evacuation task with its progress, then per VM: moved where (downtime) or why it stayed. */
function Evacuation({ id, me }) {
  const task = useStore(taskStore, (s) => s.tasks.get(id));
  if (!task) return null;
  const r = task.state === "succeeded" ? task.result || {} : null;
  return html`<${Section} id="hosts-evacuation" title=${t("hosts.evacuation", { name: (task.target || "").replace(/^host:/, "") })}>
    <ul class="tasks"><${TaskItem} task=${task} canCancel=${atLeast(me, "admin")} showTime=${false} /></ul>
    ${r && html`<ul class="plain evac-result">
      ${(r.moved || []).map((m) => html`<li key=${"m" + m.vm}><span class="badge check-pass">${t("hosts.moved")}</span>
        ${t("hosts.moved_to", { vm: m.vm, to: m.to, mode: m.mode })}${m.downtime_ms !== null && m.downtime_ms !== undefined
          ? " " + t("migrate.downtime", { ms: fmtNumber(m.downtime_ms) }) : ""}</li>`)}
      ${(r.not_moved || []).map((m) => html`<li key=${"n" + m.vm}><span class="badge check-fail">${t("hosts.not_moved")}</span>
        <strong>${m.vm}</strong> <span lang="en">${m.reason}</span></li>`)}
      ${!(r.moved || []).length && !(r.not_moved || []).length && html`<li class="muted">${t("hosts.evac_nothing")}</li>`}
    </ul>`}
  <//>`;
}

export function Hosts({ me }) {
  const list = useLoad(() => get("/hosts"), []);
  const { states } = useStore(hostStore);
  const [evac, setEvac] = useState(null);
  const admin = atLeast(me, "admin");
  useEffect(() => { document.title = `${t("nav.hosts")} · kvmkit`; }, []);
  const rows = list.data || [];
  const maintenance = async (h, on) => {
    try {
      await api("POST", `/hosts/${enc(h.name)}/maintenance`, { on });
      notify(t(on ? "hosts.maintenance_on_done" : "hosts.maintenance_off_done", { name: h.name }));
      list.reload();
    } catch (e) { notify(t("hosts.change_failed", { name: h.name }), "error", e); }
  };
  const remove = async (h) => {
    const vms = h.vms || 0;
    const ok = await confirmAction({ title: t("hosts.remove_title", { name: h.name }),
      body: vms ? t("hosts.remove_force", { n: fmtNumber(vms) }) : (h.state === "down" ? t("hosts.remove_down") : t("hosts.remove_body")), confirm: t("hosts.remove") });
    if (!ok) return;
    try {
      await api("DELETE", `/hosts/${enc(h.name)}${vms || h.state === "down" ? "?force=true" : ""}`);
      notify(t("hosts.removed", { name: h.name }));
      list.reload();
      loadVms();
    } catch (e) { notify(t("hosts.change_failed", { name: h.name }), "error", e); }
  };
  const evacuate = async (h) => {
    const ok = await confirmAction({ title: t("hosts.evacuate_title", { name: h.name }), body: t("hosts.evacuate_body"),
      confirm: t("hosts.evacuate") });
    if (!ok) return;
    try {
      const task = trackTask(await api("POST", `/hosts/${enc(h.name)}/evacuate`, {}));
      setEvac(task.id);
      notify(t("hosts.evacuate_started", { name: h.name }));
    } catch (e) { notify(t("hosts.change_failed", { name: h.name }), "error", e); }
  };
  return html`<div class="page-head"><h1 tabindex="-1">${t("nav.hosts")}</h1>
      <button type="button" class="small secondary" onClick=${list.reload}>${t("hosts.refresh")}</button></div>
    <${ErrorBox} error=${list.error} />
    ${list.loading && !list.data && html`<${Loading} />`}
    ${evac && html`<${Evacuation} id=${evac} me=${me} />`}
    ${list.data && html`<${Section} id="hosts-list" title=${t("hosts.inventory")}>
      <div class="table-wrap" tabindex="0"><table class="hosts">
        <caption class="sr-only">${t("hosts.inventory")}</caption>
        <thead><tr>
          <th scope="col">${t("word.name")}</th><th scope="col">${t("hosts.uri")}</th><th scope="col">${t("hosts.state")}</th>
          <th scope="col">${t("hosts.versions")}</th><th scope="col">${t("hosts.cpu_model")}</th>
          <th scope="col" class="num">${t("hosts.cores")}</th><th scope="col" class="num">${t("hosts.memory_free")}</th>
          <th scope="col" class="num">${t("hosts.vm_count")}</th><th scope="col">${t("hosts.guest_type")}</th>
          ${admin && html`<th scope="col">${t("vms.actions")}</th>`}
        </tr></thead>
        <tbody>${rows.map((h) => {
          const st = hostState(h, states);
          return html`<tr key=${h.name} data-host=${h.name}>
            <th scope="row" class="name">${h.name}</th>
            <td class="path">${h.uri}</td>
            <td><${HostBadge} state=${st} />${h.error && st === "down" && html`<p class="small muted" lang="en">${h.error}</p>`}</td>
            <td>${h.libvirt_version ? `${h.libvirt_version} / ${h.qemu_version || "—"}` : "—"}</td>
            <td>${h.cpu_model || "—"}</td>
            <td class="num">${h.cores !== null && h.cores !== undefined ? fmtNumber(h.cores) : "—"}</td>
            <td class="num">${h.free_memory_mib !== null && h.free_memory_mib !== undefined ? fmtMiB(h.free_memory_mib) : "—"}</td>
            <td class="num">${h.vms !== null && h.vms !== undefined ? fmtNumber(h.vms) : "—"}</td>
            <td>${h.virt_type || "—"}</td>
            ${admin && html`<td class="act"><div class="buttons">
              <button type="button" class="small secondary" onClick=${() => maintenance(h, !h.maintenance)}
                aria-label=${t(h.maintenance ? "hosts.maintenance_off_on" : "hosts.maintenance_on_on", { name: h.name })}>
                ${t(h.maintenance ? "hosts.maintenance_off" : "hosts.maintenance_on")}</button>
              <button type="button" class="small secondary" onClick=${() => evacuate(h)} disabled=${!h.vms}
                aria-label=${t("hosts.evacuate_on", { name: h.name })}>${t("hosts.evacuate")}</button>
              ${!h.local && html`<button type="button" class="small danger" onClick=${() => remove(h)}
                aria-label=${t("hosts.remove_on", { name: h.name })}>${t("hosts.remove")}</button>`}
            </div></td>`}
          </tr>`;
        })}</tbody>
      </table></div>
    <//>`}
    ${admin && list.data && html`<${Limits} hosts=${rows} reload=${list.reload} />`}
    ${admin && html`<${AddHost} reload=${list.reload} />`}`;
}
