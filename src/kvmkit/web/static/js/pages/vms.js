// VM list: live states from the event stream (lib/live.js patches single rows; the list is never
// refetched per event), search and filter, bulk start / shutdown / delete with confirmation.
// Rows span every host (each names its `host`); a VM on another host is addressed with ?host=NAME, in the
// API and in the page's own route (#/vms/NAME?host=HOST, see vmHref).
// Routes: GET /vms, POST /vms/{name}/actions/{start,shutdown}, DELETE /vms/{name}?storage=true&force=true.
import { api, enc, withHost } from "../lib/api.js";
import { Component, html, useEffect, useMemo, useState } from "../lib/h.js";
import { fmtMiB, fmtNumber, has, t } from "../lib/i18n.js";
import { trackTask } from "../lib/live.js";
import { href } from "../lib/router.js";
import { atLeast, useStore, vmKey, vmStore } from "../lib/store.js";
import { confirmAction, ErrorBox, Loading, notify } from "../lib/ui.js";

export const STATE_ORDER = ["running", "paused", "shutting-down", "shut-off", "crashed", "pm-suspended", "blocked", "nostate"];
export const stateLabel = (s) => (has(`state.${s}`) ? t(`state.${s}`) : s);

export function StateBadge({ state }) {
  return html`<span class=${"badge vm-" + state}>${stateLabel(state)}</span>`;
}

/** The portal route of a VM page (tab optional): the VM's host rides along as ?host= (none for the local host). */
export function vmHref(name, host, tab) {
  const base = href("vms", name, tab);
  return host && host !== "local" ? `${base}?host=${enc(host)}` : base;
}

export async function vmAction(name, action, host) {
  const path = action === "delete" ? `/vms/${enc(name)}?storage=true&force=true` : `/vms/${enc(name)}/actions/${action}`;
  return trackTask(await api(action === "delete" ? "DELETE" : "POST", withHost(path, host)));
}

const BULK = {
  start: { key: "action.start", can: (vm) => vm.state === "shut-off" || vm.state === "crashed" },
  shutdown: { key: "action.shutdown", can: (vm) => vm.state === "running" },
  delete: { key: "action.delete", can: () => true },
};

async function runBulk(action, vms) {
  const names = vms.map((vm) => (vm.host && vm.host !== "local" ? `${vm.name} (${vm.host})` : vm.name));
  const verb = t(BULK[action].key);
  const ok = await confirmAction({
    title: t("vms.bulk_confirm_title", { action: verb, n: names.length }),
    body: action === "delete" ? t("vms.delete_warning") : t("vms.bulk_confirm_body", { action: verb }),
    confirm: t("vms.bulk_confirm_button", { action: verb, n: names.length }), danger: action !== "start", items: names,
  });
  if (!ok) return false;
  let failed = 0;
  for (const vm of vms) {
    const name = vm.name;
    try { await vmAction(name, action, vm.host); } catch (e) { failed++; notify(t("vms.action_failed", { action: verb, name }), "error", e); }
  }
  notify(t("vms.bulk_started", { action: verb, n: names.length - failed }));
  return true;
}

// One row: a component that renders again only when its row object (replaced by live.js on a change) or
// its selection changes. Its controls carry data-* attributes; the table body handles their events.
class Row extends Component {
  shouldComponentUpdate(next) { return next.vm !== this.props.vm || next.selected !== this.props.selected || next.canAct !== this.props.canAct; }
  render({ vm, selected, canAct }) {
    const key = vmKey(vm.name, vm.host);
    const quick = vm.state === "running" ? "shutdown" : (vm.state === "shut-off" ? "start" : null);
    return html`<tr class=${selected ? "selected" : ""}>
      ${canAct && html`<td class="sel"><input type="checkbox" data-vm=${key} checked=${selected}
        aria-label=${t("vms.select_one", { name: vm.name })} /></td>`}
      <td class="name"><a href=${vmHref(vm.name, vm.host)}>${vm.name}</a></td>
      <td class="host">${vm.host || "local"}</td>
      <td><span class=${"badge vm-" + vm.state}>${stateLabel(vm.state)}</span></td>
      <td class="num hide-sm">${fmtNumber(vm.vcpus)}</td>
      <td class="num hide-sm">${fmtMiB(vm.memory_mib)}</td>
      ${canAct && html`<td class="act">${quick && html`<button type="button" class="small secondary" data-vm=${key} data-action=${quick}
        aria-label=${t("vms.action_on", { action: t("action." + quick), name: vm.name })}>${t("action." + quick)}</button>`}</td>`}
    </tr>`;
  }
}

const FIRST_ROWS = 60;  // painted at once; the rest follow in chunks of CHUNK rows, one per frame
const CHUNK = 500;

export function VmList({ me, query }) {
  const { vms, loaded, error } = useStore(vmStore);
  const [search, setSearch] = useState(query.get("q") || "");
  const [state, setState] = useState(query.get("state") || "");
  const [host, setHost] = useState(query.get("on") || "");
  const hostNames = useMemo(() => [...new Set([...vms.values()].map((vm) => vm.host || "local"))].sort(), [vms]);
  const [selected, setSelected] = useState(() => new Set());
  const canAct = atLeast(me, "operator");
  useEffect(() => { document.title = `${t("nav.vms")} · kvmkit`; }, []);
  const rows = useMemo(() => {
    const q = search.trim().toLowerCase();
    const out = [];
    for (const vm of vms.values()) {
      if (q && !vm.name.toLowerCase().includes(q)) continue;
      if (host && (vm.host || "local") !== host) continue;
      if (state && (state === "other" ? ["running", "shut-off", "paused"].includes(vm.state) : vm.state !== state)) continue;
      out.push(vm);
    }
    out.sort((a, b) => (a.name < b.name ? -1 : (a.name > b.name ? 1 : 0)));
    return out;
  }, [vms, search, state, host]);
  const picked = rows.filter((vm) => selected.has(vmKey(vm.name, vm.host)));
  const [limit, setLimit] = useState(FIRST_ROWS);
  useEffect(() => {
    if (limit >= rows.length) return undefined;
    const id = requestAnimationFrame(() => setLimit((l) => l + CHUNK));
    return () => cancelAnimationFrame(id);
  }, [limit, rows.length]);
  const onChange = (e) => {
    const name = e.target.dataset && e.target.dataset.vm;
    if (!name || e.target.type !== "checkbox") return;
    const on = e.target.checked;
    setSelected((sel) => { const n = new Set(sel); if (on) n.add(name); else n.delete(name); return n; });
  };
  const onClick = (e) => {
    const btn = e.target.closest && e.target.closest("button[data-action]");
    if (!btn) return;
    const row = vms.get(btn.dataset.vm);
    if (!row) return;
    const { action } = btn.dataset;
    const name = row.name;
    vmAction(name, action, row.host).catch((err) => notify(t("vms.action_failed", { action: t("action." + action), name }), "error", err));
  };
  const allOn = rows.length > 0 && picked.length === rows.length;
  const bulk = async (action) => {
    const chosen = picked.filter(BULK[action].can);
    if (!chosen.length) { notify(t("vms.bulk_none", { action: t(BULK[action].key) })); return; }
    if (await runBulk(action, chosen)) setSelected(new Set());
  };
  return html`<div class="page-head"><h1 tabindex="-1">${t("nav.vms")}</h1>
      ${atLeast(me, "operator") && me.vm_scope !== "granted" && html`<a class="button" href=${href("create")}>${t("vms.new")}</a>`}</div>
    <div class="toolbar" role="search">
      <div class="field inline"><label for="vm-search">${t("vms.search")}</label>
        <input id="vm-search" type="search" value=${search} onInput=${(e) => setSearch(e.target.value)} placeholder=${t("vms.search_placeholder")} /></div>
      <div class="field inline"><label for="vm-state">${t("vms.filter_state")}</label>
        <select id="vm-state" value=${state} onChange=${(e) => setState(e.target.value)}>
          <option value="">${t("vms.state_all")}</option>
          <option value="running">${stateLabel("running")}</option>
          <option value="shut-off">${stateLabel("shut-off")}</option>
          <option value="paused">${stateLabel("paused")}</option>
          <option value="other">${t("vms.state_other")}</option>
        </select></div>
      <div class="field inline"><label for="vm-host">${t("vms.filter_host")}</label>
        <select id="vm-host" value=${host} onChange=${(e) => setHost(e.target.value)}>
          <option value="">${t("vms.host_all")}</option>
          ${hostNames.map((n) => html`<option key=${n} value=${n}>${n}</option>`)}
        </select></div>
      <span class="muted count" role="status">${t("vms.count", { shown: fmtNumber(rows.length), total: fmtNumber(vms.size) })}</span>
    </div>
    ${canAct && html`<div class="bulk" role="group" aria-label=${t("vms.bulk_label")}>
      <span class="muted">${t("vms.selected", { n: fmtNumber(picked.length) })}</span>
      ${Object.keys(BULK).map((a) => html`<button type="button" key=${a} class=${"small" + (a === "delete" ? " danger" : " secondary")}
        disabled=${!picked.length} onClick=${() => bulk(a)}>${t(BULK[a].key)}</button>`)}
    </div>`}
    <${ErrorBox} error=${error} />
    ${!loaded ? html`<${Loading} />` : html`<div class="table-wrap" tabindex="0"><table class="vms">
      <caption class="sr-only">${t("nav.vms")}</caption>
      <thead><tr>
        ${canAct && html`<th scope="col" class="sel"><input type="checkbox" checked=${allOn} aria-label=${t("vms.select_all")}
          onChange=${(e) => setSelected(e.target.checked ? new Set(rows.map((vm) => vmKey(vm.name, vm.host))) : new Set())} /></th>`}
        <th scope="col">${t("vm.name")}</th><th scope="col" class="host">${t("vm.host")}</th><th scope="col" class="st">${t("vm.state")}</th>
        <th scope="col" class="num hide-sm">${t("vm.vcpus")}</th><th scope="col" class="num hide-sm">${t("vm.memory")}</th>
        ${canAct && html`<th scope="col" class="act"><span class="sr-only">${t("vms.actions")}</span></th>`}
      </tr></thead>
      <tbody onChange=${onChange} onClick=${onClick}>${rows.slice(0, limit).map((vm) => html`<${Row} key=${vmKey(vm.name, vm.host)} vm=${vm} selected=${selected.has(vmKey(vm.name, vm.host))} canAct=${canAct} />`)}</tbody>
    </table></div>
    ${rows.length === 0 && html`<p class="muted">${vms.size ? t("vms.none_match") : t("vms.none")}</p>`}`}`;
}
