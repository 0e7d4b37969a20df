// One VM, with tabs: overview, graphical console, serial console, snapshots, disks and NICs, settings
// (vCPUs, memory, autostart, boot order), metrics, XML. Routes: GET /vms/{name}, POST
// /vms/{name}/actions/{action}, DELETE /vms/{name}, PATCH /vms/{name}; the tabs' routes are in their modules.
import { api, enc, get, withHost } from "../lib/api.js";
import { html, useEffect, useState } from "../lib/h.js";
import { fmtMiB, fmtNumber, t } from "../lib/i18n.js";
import { go, href } from "../lib/router.js";
import { atLeast, taskStore, useStore, vmKey, vmStore } from "../lib/store.js";
import { confirmAction, ErrorBox, Field, fieldErrors, inputProps, isActive, Loading, notify, Section, TaskItem, useLoad } from "../lib/ui.js";
import { GraphicalConsole, SerialConsole } from "./vm_console.js";
import { Devices } from "./vm_devices.js";
import { VmMetrics, VmXml } from "./vm_more.js";
import { Snapshots } from "./vm_snapshots.js";
import { MigrateButton } from "./vm_migrate.js";
import { StateBadge, vmAction, vmHref } from "./vms.js";

const TABS = [
  ["overview", "vm.tab.overview"], ["console", "vm.tab.console"], ["serial", "vm.tab.serial"],
  ["snapshots", "vm.tab.snapshots"], ["devices", "vm.tab.devices"], ["settings", "vm.tab.settings"],
  ["metrics", "vm.tab.metrics"], ["xml", "vm.tab.xml"],
];

const ACTIONS = {
  running: ["shutdown", "reboot", "suspend", "destroy"],
  paused: ["resume", "destroy"],
  "shut-off": ["start", "delete"],
  crashed: ["start", "destroy", "delete"],
  "pm-suspended": ["destroy"],
  "shutting-down": ["destroy"],
};
const DANGER = new Set(["destroy", "delete"]);

export function PowerButtons({ vm, me, onDeleted }) {
  if (!atLeast(me, "operator")) return null;
  const run = async (action) => {
    const label = t("action." + action);
    if (DANGER.has(action)) {
      const ok = await confirmAction({ title: t("vm.confirm_title", { action: label, name: vm.name }),
        body: action === "delete" ? t("vms.delete_warning") : t("vm.destroy_warning"), confirm: label });
      if (!ok) return;
    }
    try {
      await vmAction(vm.name, action, vm.host);
      notify(t("vm.action_started", { action: label, name: vm.name }));
      if (action === "delete" && onDeleted) onDeleted();
    } catch (e) {
      notify(t("vms.action_failed", { action: label, name: vm.name }), "error", e);
    }
  };
  return html`<div class="buttons power">${(ACTIONS[vm.state] || ["destroy"]).map((a) => html`<button type="button" key=${a}
    class=${"small" + (DANGER.has(a) ? " danger" : "")} onClick=${() => run(a)}>${t("action." + a)}</button>`)}</div>`;
}

function Overview({ vm, me }) {
  const { tasks } = useStore(taskStore);
  const target = vm.host && vm.host !== "local" ? `vm:${vm.name}@${vm.host}` : `vm:${vm.name}`;
  const mine = [...tasks.values()].filter((x) => x.target === target && isActive(x));
  const rows = [
    ["vm.host", vm.host || "local"], ["vm.uuid", vm.uuid], ["vm.vcpus", `${fmtNumber(vm.vcpus)} / ${fmtNumber(vm.max_vcpus)}`],
    ["vm.memory", `${fmtMiB(vm.memory_mib)} / ${fmtMiB(vm.max_memory_mib)}`],
    ["vm.autostart", vm.autostart ? t("common.yes") : t("common.no")],
    ["vm.virt_type", vm.virt_type], ["vm.machine", vm.machine], ["vm.firmware", vm.firmware],
    ["vm.boot", (vm.boot || []).map((b) => t("boot." + b)).join(" → ") || "—"],
    ["vm.ip", (vm.addresses || []).map((a) => `${a.addr}/${a.prefix}`).join(", ") || "—"],
    ["vm.disks", fmtNumber((vm.disks || []).length)], ["vm.nics", fmtNumber((vm.nics || []).length)],
    ["vm.graphics", vm.graphics ? `${vm.graphics.type} ${vm.graphics.listen || ""}` : t("vm.no_graphics")],
    ["vm.title", vm.title || "—"], ["vm.description", vm.description || "—"],
  ];
  return html`${mine.length > 0 && html`<${Section} id="vm-running-tasks" title=${t("vm.running_tasks")}>
      <ul class="tasks">${mine.map((x) => html`<${TaskItem} key=${x.id} task=${x} canCancel=${atLeast(me, "operator")} showTime=${false} />`)}</ul><//>`}
    <${Section} id="vm-overview" title=${t("vm.tab.overview")}>
      <dl class="facts">${rows.map(([k, v]) => html`<div key=${k}><dt>${t(k)}</dt><dd>${v}</dd></div>`)}</dl>
    <//>`;
}

const BOOT_SLOTS = ["boot1", "boot2", "boot3"];
const BOOT_DEVICES = ["hd", "cdrom", "network"];

function Settings({ vm, me, reload }) {
  const [errors, setErrors] = useState({});
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const running = vm.state === "running" || vm.state === "paused";
  const can = atLeast(me, "operator");
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const body = {};
    const vcpus = Number(f.get("vcpus"));
    if (vcpus !== vm.vcpus) body.vcpus = vcpus;
    const memory = String(f.get("memory")).trim();
    if (memory && memory !== String(vm.memory_mib)) body.memory = /^\d+$/.test(memory) ? Number(memory) : memory;
    const autostart = f.get("autostart") === "on";
    if (autostart !== vm.autostart) body.autostart = autostart;
    const boot = BOOT_SLOTS.map((id) => String(f.get(id) || "")).filter(Boolean);
    if (boot.join(",") !== (vm.boot || []).join(",")) body.boot = boot;
    if (running) { body.live = f.get("live") === "on"; body.config = true; }
    setBusy(true);
    try {
      await api("PATCH", withHost(`/vms/${enc(vm.name)}`, vm.host), body);
      setErrors({}); setError(null);
      notify(t("settings.saved", { name: vm.name }));
      reload();
    } catch (err) {
      setErrors(fieldErrors(err, (loc) => ({ vcpus: "vcpus", memory: "memory", autostart: "autostart", boot: "boot1" })[loc[0]]));
      setError(err);
    } finally { setBusy(false); }
  };
  return html`<${Section} id="vm-settings" title=${t("vm.tab.settings")}>
    <form class="form-grid" onSubmit=${submit}>
      <${Field} id="vcpus" label=${t("vm.vcpus")} error=${errors.vcpus} help=${t("settings.vcpus_help", { max: vm.max_vcpus })}>
        <input ...${inputProps("vcpus", errors)} type="number" min="1" defaultValue=${vm.vcpus} disabled=${!can} /><//>
      <${Field} id="memory" label=${t("settings.memory")} error=${errors.memory} help=${t("settings.memory_help", { max: fmtMiB(vm.max_memory_mib) })}>
        <input ...${inputProps("memory", errors)} defaultValue=${vm.memory_mib} disabled=${!can} /><//>
      <div class="field check"><input type="checkbox" id="autostart" name="autostart" defaultChecked=${vm.autostart} disabled=${!can} />
        <label for="autostart">${t("vm.autostart")}</label></div>
      ${running && html`<div class="field check"><input type="checkbox" id="live" name="live" defaultChecked=${true} disabled=${!can} />
        <label for="live">${t("settings.live")}</label></div>`}
      <fieldset class="wide boot-order"><legend>${t("vm.boot")}</legend>
        <div class="form-grid">${BOOT_SLOTS.map((id, i) => html`<${Field} key=${id} id=${id} label=${t("settings.boot_pos", { n: fmtNumber(i + 1) })} error=${errors[id]}>
          <select ...${inputProps(id, errors)} defaultValue=${(vm.boot || [])[i] || ""} disabled=${!can}>
            <option value="">${t("settings.boot_none")}</option>
            ${BOOT_DEVICES.map((b) => html`<option key=${b} value=${b}>${t("boot." + b)}</option>`)}</select><//>`)}</div>
        <p class="help">${t("settings.boot_next_start")}</p></fieldset>
      ${can && html`<div class="buttons wide"><button type="submit" disabled=${busy}>${t("action.save")}</button></div>`}
    </form>
    <${ErrorBox} error=${error} />
  <//>`;
}

export function VmPage({ parts, me, query }) {
  const name = parts[1];
  const tab = parts[2] || "overview";
  const host = (query && query.get("host")) || "local";
  const row = useStore(vmStore, (s) => s.vms.get(vmKey(name, host)));
  const detail = useLoad(() => get(withHost(`/vms/${enc(name)}`, host)),
    [name, host, row && row.state, row && row.vcpus, row && row.memory_mib]);
  useEffect(() => { document.title = `${name} · kvmkit`; }, [name]);
  const vm = detail.data && { ...detail.data, host: detail.data.host || host };
  const tabs = TABS.filter(([id]) => id !== "xml" || true);
  let body = null;
  if (vm) {
    if (tab === "overview") body = html`<${Overview} vm=${vm} me=${me} />`;
    else if (tab === "console") body = html`<${GraphicalConsole} vm=${vm} me=${me} />`;
    else if (tab === "serial") body = html`<${SerialConsole} vm=${vm} me=${me} />`;
    else if (tab === "snapshots") body = html`<${Snapshots} vm=${vm} me=${me} />`;
    else if (tab === "devices") body = html`<${Devices} vm=${vm} me=${me} reload=${detail.reload} />`;
    else if (tab === "settings") body = html`<${Settings} vm=${vm} me=${me} reload=${detail.reload} />`;
    else if (tab === "metrics") body = html`<${VmMetrics} vm=${vm} />`;
    else if (tab === "xml") body = html`<${VmXml} vm=${vm} me=${me} reload=${detail.reload} />`;
  }
  return html`<nav class="crumbs" aria-label=${t("nav.breadcrumbs")}><a href=${href("vms")}>${t("nav.vms")}</a> › <span>${name}</span>${host !== "local" && html` <span class="muted">(${t("vm.on_host", { host })})</span>`}</nav>
    <div class="page-head"><h1 tabindex="-1">${name}</h1>${vm && html`<${StateBadge} state=${(row && row.state) || vm.state} />`}
      ${vm && html`<${PowerButtons} vm=${{ ...vm, state: (row && row.state) || vm.state }} me=${me} onDeleted=${() => go("vms")} />`}
      ${vm && html`<${MigrateButton} vm=${{ ...vm, state: (row && row.state) || vm.state }} me=${me} />`}</div>
    <nav class="tabs" aria-label=${t("vm.tabs")}>
      ${tabs.map(([id, key]) => html`<a key=${id} href=${vmHref(name, host, id)} aria-current=${tab === id ? "page" : undefined}>${t(key)}</a>`)}
    </nav>
    ${detail.loading && !vm && html`<${Loading} />`}
    <${ErrorBox} error=${detail.error} />
    ${body}`;
}
