// Disks and NICs: attach (a pool volume, or a new volume made first), detach (a task), resize a disk through
// its VM (live when it runs). Routes: POST /vms/{name}/disks, DELETE /vms/{name}/disks/{target}, POST
// /vms/{name}/disks/{target}/resize {"size", "allow_shrink"}, POST /vms/{name}/nics, DELETE
// /vms/{name}/nics/{mac}, GET /pools, GET /pools/{pool}/volumes, POST /pools/{pool}/volumes, GET /networks.
import { api, enc, get, withHost } from "../lib/api.js";
import { html, useState } from "../lib/h.js";
import { fmtBytes, t } from "../lib/i18n.js";
import { trackTask, waitTask } from "../lib/live.js";
import { atLeast } from "../lib/store.js";
import { confirmAction, ErrorBox, Field, fieldErrors, inputProps, notify, Section, useLoad } from "../lib/ui.js";

async function detach(vm, kind, id) {
  const ok = await confirmAction({ title: t(`dev.detach_${kind}_title`, { id, name: vm.name }), body: t("dev.detach_warning"), confirm: t("dev.detach") });
  if (!ok) return false;
  try {
    const task = trackTask(await api("DELETE", withHost(`/vms/${enc(vm.name)}/${kind === "disk" ? "disks" : "nics"}/${enc(id)}`, vm.host)));
    const done = await waitTask(task.id);
    if (done.state === "succeeded") { notify(t("dev.detached", { id })); return true; }
    notify(t("dev.detach_failed", { id }), "error", done.error ? { message: done.error, code: "failed" } : null);
  } catch (e) {
    notify(t("dev.detach_failed", { id }), "error", e);
  }
  return false;
}

function Resize({ vm, disk, reload }) {
  const [open, setOpen] = useState(false);
  const [error, setError] = useState(null);
  const id = `resize-${disk.target}`;
  const off = vm.state === "shut-off";
  if (!open) return html`<button type="button" class="small secondary" onClick=${() => setOpen(true)}
    aria-label=${t("dev.resize_one", { target: disk.target })}>${t("dev.resize")}</button>`;
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const size = String(f.get(id)).trim();
    try {
      const r = await api("POST", withHost(`/vms/${enc(vm.name)}/disks/${enc(disk.target)}/resize`, vm.host), { size, allow_shrink: f.get(id + "-shrink") === "on" });
      notify(r.changed ? t(r.live ? "dev.resized_live" : "dev.resized", { target: disk.target, size: fmtBytes(r.capacity) }) : t("dev.resize_same", { target: disk.target }));
      setOpen(false); setError(null); reload();
    } catch (err) { setError(err); }
  };
  return html`<form class="inline-form" onSubmit=${submit}>
    <label for=${id}>${t("dev.new_size")}</label><input id=${id} name=${id} size="6" placeholder="20G" required />
    ${off && html`<span class="field check"><input type="checkbox" id=${id + "-shrink"} name=${id + "-shrink"} />
      <label for=${id + "-shrink"}>${t("dev.allow_shrink")}</label></span>`}
    <button type="submit" class="small">${t("dev.resize")}</button>
    <button type="button" class="small secondary" onClick=${() => setOpen(false)}>${t("action.cancel")}</button>
    <p class="help">${t(off ? "dev.resize_help_off" : "dev.resize_help_live")}</p>
    <${ErrorBox} error=${error} compact /></form>`;
}

function AttachDisk({ vm, pools, reload }) {
  const [pool, setPool] = useState("default");
  const [mode, setMode] = useState("new");
  const vols = useLoad(() => (mode === "existing" && pool ? get(withHost(`/pools/${enc(pool)}/volumes`, vm.host)) : []), [pool, mode]);
  const [errors, setErrors] = useState({});
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    setBusy(true);
    try {
      let volume = f.get("disk_volume");
      let format = f.get("disk_format");
      if (mode === "new") {
        const made = await api("POST", withHost(`/pools/${enc(pool)}/volumes`, vm.host), { name: f.get("disk_name"), size: f.get("disk_size"), format });
        volume = made.name;
        format = made.format;
      } else {
        const v = (vols.data || []).find((x) => x.name === volume);
        format = v && (v.format === "raw" || v.format === "qcow2") ? v.format : "raw";
      }
      await api("POST", withHost(`/vms/${enc(vm.name)}/disks`, vm.host), { pool, volume, format, bus: f.get("disk_bus") });
      notify(t("dev.attached_disk", { volume }));
      setErrors({}); setError(null); e.target.reset(); reload();
    } catch (err) {
      setErrors(fieldErrors(err, (loc) => ({ name: "disk_name", size: "disk_size", format: "disk_format", volume: "disk_volume", bus: "disk_bus" })[loc[0]]));
      setError(err);
    } finally { setBusy(false); }
  };
  return html`<form class="form-grid" onSubmit=${submit} aria-labelledby="attach-disk-h">
    <h3 id="attach-disk-h" class="wide">${t("dev.attach_disk")}</h3>
    <${Field} id="disk_pool" label=${t("word.pool")}><select id="disk_pool" value=${pool} onChange=${(e) => setPool(e.target.value)}>
      ${(pools || []).map((p) => html`<option key=${p.name} value=${p.name}>${p.name}</option>`)}</select><//>
    <${Field} id="disk_mode" label=${t("dev.disk_source")}><select id="disk_mode" value=${mode} onChange=${(e) => setMode(e.target.value)}>
      <option value="new">${t("dev.new_volume")}</option><option value="existing">${t("dev.existing_volume")}</option></select><//>
    ${mode === "new" ? html`
      <${Field} id="disk_name" label=${t("word.volume_name")} error=${errors.disk_name}><input ...${inputProps("disk_name", errors)} required defaultValue=${`${vm.name}-data.qcow2`} /><//>
      <${Field} id="disk_size" label=${t("word.size")} error=${errors.disk_size} help=${t("hint.size_short")}><input ...${inputProps("disk_size", errors)} required placeholder="10G" /><//>
      <${Field} id="disk_format" label=${t("word.format")}><select id="disk_format" name="disk_format"><option value="qcow2">qcow2</option><option value="raw">raw</option></select><//>`
    : html`<${Field} id="disk_volume" label=${t("word.volume")} error=${errors.disk_volume}><select ...${inputProps("disk_volume", errors)} required>
        ${(vols.data || []).map((v) => html`<option key=${v.name} value=${v.name}>${v.name} (${fmtBytes(v.capacity)})</option>`)}</select><//>`}
    <${Field} id="disk_bus" label=${t("dev.bus")}><select id="disk_bus" name="disk_bus"><option value="virtio">virtio</option><option value="sata">sata</option><option value="scsi">scsi</option></select><//>
    <div class="buttons wide"><button type="submit" disabled=${busy}>${t("dev.attach")}</button></div>
    <div class="wide"><${ErrorBox} error=${error} /></div>
  </form>`;
}

function AttachNic({ vm, reload }) {
  const nets = useLoad(() => get(withHost("/networks", vm.host)), []);
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    try {
      const r = await api("POST", withHost(`/vms/${enc(vm.name)}/nics`, vm.host), { network: f.get("nic_network"), model: f.get("nic_model") });
      notify(t("dev.attached_nic", { mac: r.mac }));
      setError(null); reload();
    } catch (err) { setError(err); }
  };
  return html`<form class="form-grid" onSubmit=${submit} aria-labelledby="attach-nic-h">
    <h3 id="attach-nic-h" class="wide">${t("dev.attach_nic")}</h3>
    <${Field} id="nic_network" label=${t("word.network")}><select id="nic_network" name="nic_network">
      ${(nets.data || []).map((n) => html`<option key=${n.name} value=${n.name}>${n.name}</option>`)}</select><//>
    <${Field} id="nic_model" label=${t("dev.model")}><select id="nic_model" name="nic_model"><option value="virtio">virtio</option><option value="e1000e">e1000e</option><option value="rtl8139">rtl8139</option></select><//>
    <div class="buttons wide"><button type="submit">${t("dev.attach")}</button></div>
    <div class="wide"><${ErrorBox} error=${error} /></div>
  </form>`;
}

export function Devices({ vm, me, reload }) {
  const can = atLeast(me, "operator");
  const unrestricted = me.vm_scope !== "granted";
  const pools = useLoad(() => (unrestricted ? get(withHost("/pools", vm.host)) : []), []);
  return html`<${Section} id="vm-disks" title=${t("dev.disks")}>
      <div class="table-wrap" tabindex="0"><table><thead><tr><th scope="col">${t("dev.target")}</th><th scope="col">${t("dev.device")}</th>
        <th scope="col" class="hide-sm">${t("dev.bus")}</th><th scope="col" class="hide-sm">${t("word.format")}</th><th scope="col">${t("dev.source")}</th>
        ${can && html`<th scope="col"><span class="sr-only">${t("vms.actions")}</span></th>`}</tr></thead>
      <tbody>${(vm.disks || []).map((d) => {
        const resizable = d.device === "disk" && !d.readonly && d.source && (d.format === "raw" || d.format === "qcow2");
        return html`<tr key=${d.target}><td>${d.target}</td><td>${t("dev.kind." + d.device)}</td><td class="hide-sm">${d.bus}</td>
          <td class="hide-sm">${d.format || "—"}</td><td class="path">${d.source || "—"}</td>
          ${can && html`<td class="act">${resizable && unrestricted && html`<${Resize} vm=${vm} disk=${d} reload=${reload} />`}
            <button type="button" class="small danger" onClick=${async () => { if (await detach(vm, "disk", d.target)) reload(); }}
              aria-label=${t("dev.detach_one", { id: d.target })}>${t("dev.detach")}</button></td>`}</tr>`;
      })}</tbody></table></div>
      ${can && unrestricted && html`<${AttachDisk} vm=${vm} pools=${pools.data} reload=${reload} />`}
    <//>
    <${Section} id="vm-nics" title=${t("dev.nics")}>
      <div class="table-wrap" tabindex="0"><table><thead><tr><th scope="col">${t("word.mac")}</th><th scope="col">${t("dev.nic_type")}</th>
        <th scope="col">${t("dev.source")}</th><th scope="col" class="hide-sm">${t("dev.model")}</th>
        ${can && html`<th scope="col"><span class="sr-only">${t("vms.actions")}</span></th>`}</tr></thead>
      <tbody>${(vm.nics || []).map((n) => html`<tr key=${n.mac}><td class="mono">${n.mac}</td><td>${t("dev.nic." + n.type)}</td><td>${n.source}</td>
        <td class="hide-sm">${n.model}</td>${can && html`<td class="act"><button type="button" class="small danger"
          onClick=${async () => { if (await detach(vm, "nic", n.mac)) reload(); }} aria-label=${t("dev.detach_one", { id: n.mac })}>${t("dev.detach")}</button></td>`}</tr>`)}</tbody></table></div>
      ${can && unrestricted && html`<${AttachNic} vm=${vm} reload=${reload} />`}
    <//>`;
}
