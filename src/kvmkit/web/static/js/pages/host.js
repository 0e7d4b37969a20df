// The host: CPUs and memory, NUMA nodes with the VMs placed on them, KSM (enable, disable, unmerge),
// huge pages, tuning profiles (apply, roll back), readiness checks. Routes: GET /host/info, GET
// /host/check, PATCH /host/ksm, PUT /host/hugepages, GET /host/profiles, POST
// /host/profiles/{name}/apply, POST /host/profiles/rollback, GET /vms/{name}/pin (multi-node hosts).
import { api, enc, get } from "../lib/api.js";
import { html, useEffect, useState } from "../lib/h.js";
import { fmtBytes, fmtMiB, fmtNumber, t } from "../lib/i18n.js";
import { href } from "../lib/router.js";
import { atLeast, useStore, vmStore } from "../lib/store.js";
import { confirmAction, ErrorBox, Field, Loading, notify, Section, useLoad } from "../lib/ui.js";

async function placement(nodes, vms) {
  const running = [...vms.values()].filter((v) => v.state === "running" && (!v.host || v.host === "local"));  // this host's
  const out = Object.fromEntries(nodes.map((n) => [n.id, []]));
  out.spread = [];
  if (nodes.length === 1) { out[nodes[0].id] = running.map((v) => v.name); return out; }
  await Promise.all(running.slice(0, 64).map(async (v) => {
    try {
      const pin = await get(`/vms/${enc(v.name)}/pin`);
      (pin.node !== null && pin.node !== undefined && out[pin.node] ? out[pin.node] : out.spread).push(v.name);
    } catch { out.spread.push(v.name); }
  }));
  return out;
}

function Numa({ info }) {
  const { vms } = useStore(vmStore);
  const place = useLoad(() => placement(info.nodes || [], vms), [info, vms.size]);
  return html`<${Section} id="host-numa" title=${t("host.numa")}>
    <div class="nodes">${(info.nodes || []).map((n) => html`<div class="node card-inner" key=${n.id}>
      <h3>${t("host.node", { id: n.id })}</h3>
      <p>${t("host.node_cpus", { cpus: n.cpulist })} · ${t("host.node_memory", { free: fmtMiB(n.free_mib), total: fmtMiB(n.memory_mib) })}</p>
      <p class="muted">${t("host.node_vms")}</p>
      <ul class="chips">${((place.data || {})[n.id] || []).map((name) => html`<li key=${name}><a href=${href("vms", name)}>${name}</a></li>`)}</ul>
    </div>`)}</div>
    ${place.data && place.data.spread.length > 0 && html`<p>${t("host.spread", { names: place.data.spread.join(", ") })}</p>`}
  <//>`;
}

function Ksm({ ksm, admin, reload }) {
  const act = async (action) => {
    try { await api("PATCH", "/host/ksm", { action }); notify(t("host.ksm_changed")); reload(); }
    catch (e) { notify(t("host.change_failed"), "error", e); }
  };
  return html`<${Section} id="host-ksm" title=${t("host.ksm")} actions=${admin && ksm.available && html`
      ${ksm.run === 1 ? html`<button type="button" class="small secondary" onClick=${() => act("disable")}>${t("host.ksm_disable")}</button>`
        : html`<button type="button" class="small" onClick=${() => act("enable")}>${t("host.ksm_enable")}</button>`}
      <button type="button" class="small secondary" onClick=${() => act("unmerge")}>${t("host.ksm_unmerge")}</button>`}>
    ${!ksm.available ? html`<p class="muted">${t("host.ksm_unavailable")}</p>` : html`<dl class="facts">
      <div><dt>${t("vm.state")}</dt><dd>${ksm.run === 1 ? t("host.ksm_running") : t("host.ksm_stopped")}</dd></div>
      <div><dt>${t("dash.ksm_saved")}</dt><dd>${fmtBytes(ksm.saved_bytes || 0)}</dd></div>
      <div><dt>${t("host.ksm_shared")}</dt><dd>${fmtNumber(ksm.pages_shared)}</dd></div>
      <div><dt>${t("host.ksm_sharing")}</dt><dd>${fmtNumber(ksm.pages_sharing)}</dd></div>
      <div><dt>${t("host.ksm_scan")}</dt><dd>${t("host.ksm_scan_value", { pages: fmtNumber(ksm.pages_to_scan), ms: fmtNumber(ksm.sleep_millisecs) })}</dd></div>
    </dl>`}
  <//>`;
}

function HugePages({ pools, admin, reload }) {
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    try { await api("PUT", "/host/hugepages", { count: Number(f.get("hp_count")), size: f.get("hp_size") }); notify(t("host.hugepages_changed")); setError(null); reload(); }
    catch (err) { setError(err); }
  };
  return html`<${Section} id="host-hugepages" title=${t("host.hugepages")}>
    <div class="table-wrap" tabindex="0"><table><thead><tr><th scope="col">${t("word.size")}</th><th scope="col" class="num">${t("host.hp_total")}</th>
      <th scope="col" class="num">${t("host.hp_free")}</th><th scope="col" class="num">${t("host.hp_bytes")}</th></tr></thead>
      <tbody>${pools.map((p) => html`<tr key=${p.size}><td>${p.size}</td><td class="num">${fmtNumber(p.total)}</td><td class="num">${fmtNumber(p.free)}</td><td class="num">${fmtBytes(p.total_bytes)}</td></tr>`)}</tbody></table></div>
    ${admin && html`<form class="form-grid" onSubmit=${submit}>
      <${Field} id="hp_count" label=${t("host.hp_count")}><input id="hp_count" name="hp_count" type="number" min="0" required /><//>
      <${Field} id="hp_size" label=${t("word.size")}><select id="hp_size" name="hp_size">${pools.map((p) => html`<option value=${p.size}>${p.size}</option>`)}</select><//>
      <div class="buttons wide"><button type="submit">${t("action.apply")}</button></div>
      <div class="wide"><${ErrorBox} error=${error} /></div></form>`}
  <//>`;
}

function Profiles({ admin }) {
  const profiles = useLoad(() => get("/host/profiles"), []);
  const apply = async (p) => {
    if (!await confirmAction({ title: t("host.profile_apply_title", { name: p.name }), body: t("host.profile_apply_warning"), confirm: t("action.apply"), danger: false })) return;
    try { await api("POST", `/host/profiles/${enc(p.name)}/apply`, { persist: false }); notify(t("host.profile_applied", { name: p.name })); profiles.reload(); }
    catch (e) { notify(t("host.change_failed"), "error", e); }
  };
  const rollback = async () => {
    try { await api("POST", "/host/profiles/rollback"); notify(t("host.profile_rolled_back")); profiles.reload(); }
    catch (e) { notify(t("host.change_failed"), "error", e); }
  };
  return html`<${Section} id="host-profiles" title=${t("host.profiles")} actions=${admin && html`<button type="button" class="small secondary" onClick=${rollback}>${t("host.profile_rollback")}</button>`}>
    <${ErrorBox} error=${profiles.error} />
    ${profiles.data && html`<ul class="plain">${profiles.data.map((p) => html`<li key=${p.name} class="profile">
      <strong>${p.name}</strong> ${p.applied && html`<span class="badge current">${t("host.profile_active")}</span>`}
      <span class="muted">${t("host.profile_kind." + (p.kind === "built-in" ? "builtin" : "user"))}</span>
      <span class="muted" lang="en">${p.summary}</span>
      ${admin && !p.applied && html`<button type="button" class="small secondary" onClick=${() => apply(p)} aria-label=${t("host.profile_apply_one", { name: p.name })}>${t("action.apply")}</button>`}
    </li>`)}</ul>`}
  <//>`;
}

export function Host({ me }) {
  const info = useLoad(() => get("/host/info"), []);
  const check = useLoad(() => get("/host/check"), []);
  const admin = atLeast(me, "admin");
  useEffect(() => { document.title = `${t("nav.host")} · kvmkit`; }, []);
  const i = info.data;
  return html`<h1 tabindex="-1">${t("nav.host")}</h1>
    ${info.loading && !i && html`<${Loading} />`}
    <${ErrorBox} error=${info.error} />
    ${i && html`<${Section} id="host-summary" title=${t("host.summary")}>
      <dl class="facts">
        <div><dt>${t("host.cpus")}</dt><dd>${t("host.cpus_value", { cpus: i.cpus, sockets: i.sockets, cores: i.cores_per_socket, threads: i.threads_per_core })}</dd></div>
        <div><dt>${t("host.memory")}</dt><dd>${t("host.memory_value", { total: fmtMiB(i.memory.total_mib), available: fmtMiB(i.memory.available_mib) })}</dd></div>
        ${check.data && html`<div><dt>${t("host.virt_type")}</dt><dd>${check.data.virt_type}</dd></div>
          <div><dt>${t("host.ready")}</dt><dd>${check.data.ready ? t("common.yes") : t("common.no")}</dd></div>`}
      </dl>
      ${check.data && html`<details><summary>${t("host.checks")}</summary><ul class="checks">${check.data.checks.map((c) => html`<li key=${c.name}>
        <span class=${"badge check-" + c.status}>${t("check." + c.status)}</span> <code>${c.name}</code> <span lang="en">${c.detail}</span></li>`)}</ul></details>`}
    <//>
    <${Numa} info=${i} />
    <${Ksm} ksm=${i.ksm} admin=${admin} reload=${info.reload} />
    <${HugePages} pools=${i.hugepages || []} admin=${admin} reload=${info.reload} />`}
    <${Profiles} admin=${admin} />`;
}
