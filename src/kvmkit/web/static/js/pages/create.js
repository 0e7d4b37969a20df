// The create-VM wizard: from an ISO (the ISO library), an existing disk, a template, or the micro-guest;
// network, display, cloud-init. The form becomes one VM spec, POST /vms validates it with the same
// pydantic spec as the CLI and API, and a 422's fields [{loc, msg}] are shown next to their inputs.
// Routes: POST /vms, GET /pools, GET /pools/{pool}/volumes, GET /templates, GET /networks.
import { api, enc, get } from "../lib/api.js";
import { html, useEffect, useState } from "../lib/h.js";
import { fmtBytes, t } from "../lib/i18n.js";
import { trackTask } from "../lib/live.js";
import { go } from "../lib/router.js";
import { atLeast } from "../lib/store.js";
import { ErrorBox, Field, fieldErrors, inputProps, notify, Section, useLoad } from "../lib/ui.js";

const SOURCES = [["micro", "wiz.src.micro"], ["iso", "wiz.src.iso"], ["disk", "wiz.src.disk"], ["template", "wiz.src.template"]];

/** Every .iso volume of every running pool (the ISO library). */
export async function isoLibrary() {
  const pools = (await get("/pools")).filter((p) => p.state === "running");
  const lists = await Promise.all(pools.map((p) => get(`/pools/${enc(p.name)}/volumes`).then(
    (vols) => vols.filter((v) => /\.iso$/i.test(v.name)).map((v) => ({ ...v, pool: p.name })), () => [])));
  return lists.flat();
}

// cloud_init spec field -> the wizard's input (a model-level error, e.g. two user-data sources: the text)
const CI_FIELDS = { hostname: "ci_hostname", user_data_text: "ci_user_data_text", ssh_authorized_keys: "ci_ssh_keys",
  password: "ci_password", password_hash: "ci_password", user_data: "ci_user_data",
  meta_data: "ci_meta_data", ssh_key: "ci_ssh_key" };

/** The SSH public keys textarea: one key per line, blank lines and # comments left out. */
export function keyLines(text) {
  return String(text || "").split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
}

/** Where a 422 field location points in this form. */
export function wizardField(loc) {
  const [a, b, c] = loc;
  if (a === "name") return "vm_name";
  if (a === "memory_mib" || a === "max_memory_mib") return "memory";
  if (a === "vcpus" || a === "max_vcpus") return "vcpus";
  if (a === "template") return "template";
  if (a === "nics") return "network";
  if (a === "cloud_init") return b === "eject" ? null : (CI_FIELDS[b] || "ci_user_data_text");
  if (a === "disks") return c === "size" || b === 1 || loc.length === 1 ? "disk_size" : "source_volume";
  if (a === "graphics") return "graphics";
  return null;
}

export function buildSpec(f, source) {
  const spec = { name: String(f.get("vm_name") || "").trim(), memory_mib: String(f.get("memory") || "").trim(),
    vcpus: Number(f.get("vcpus") || 1), start: f.get("start") === "on", autostart: f.get("autostart") === "on" };
  if (source === "micro") {
    spec.micro = true;
    const size = String(f.get("disk_size") || "").trim();
    if (size) spec.disks = [{ size, pool: f.get("disk_pool") || "default" }];
  }
  if (source === "template") spec.template = f.get("template") || "";
  if (source === "iso") {
    const [pool, volume] = String(f.get("iso") || "/").split("/");
    spec.disks = [{ device: "cdrom", pool, volume }, { size: String(f.get("disk_size") || "").trim(), pool: f.get("disk_pool") || "default" }];
    spec.boot = ["cdrom", "hd"];
  }
  if (source === "disk") {
    const [pool, volume] = String(f.get("source_volume") || "/").split("/");
    spec.disks = [{ pool, volume }];
    spec.boot = ["hd"];
  }
  const net = f.get("network");
  spec.nics = net ? [{ type: "network", source: net }] : [];
  if (f.get("graphics") === "on") spec.graphics = { type: "vnc" };
  if (f.get("cloud_init") === "on") {
    const ci = {};
    for (const [field, key] of [["ci_hostname", "hostname"], ["ci_user_data", "user_data"], ["ci_meta_data", "meta_data"], ["ci_ssh_key", "ssh_key"]]) {
      const v = String(f.get(field) || "").trim();
      if (v) ci[key] = v;
    }
    const keys = keyLines(f.get("ci_ssh_keys"));
    if (keys.length) ci.ssh_authorized_keys = keys;
    const password = String(f.get("ci_password") || "");  // sent as typed (write-only: hashed by the server)
    if (password) ci.password = password;
    const userData = String(f.get("ci_user_data_text") || "");
    if (userData.trim()) ci.user_data_text = userData.replace(/\r\n/g, "\n");
    if (f.get("ci_eject") === "on") ci.eject = true;
    spec.cloud_init = ci;
  }
  return spec;
}

export function CreateVm({ me }) {
  const [source, setSource] = useState("micro");
  const [errors, setErrors] = useState({});
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [cloudInit, setCloudInit] = useState(false);
  const nets = useLoad(() => get("/networks"), []);
  const pools = useLoad(() => get("/pools"), []);
  const isos = useLoad(() => (source === "iso" ? isoLibrary() : []), [source]);
  const templates = useLoad(() => (source === "template" ? get("/templates") : []), [source]);
  const [diskPool, setDiskPool] = useState("default");
  const vols = useLoad(() => (source === "disk" ? get(`/pools/${enc(diskPool)}/volumes`) : []), [source, diskPool]);
  const admin = atLeast(me, "admin");
  useEffect(() => { document.title = `${t("nav.create")} · kvmkit`; }, []);
  const submit = async (e) => {
    e.preventDefault();
    const spec = buildSpec(new FormData(e.target), source);
    setBusy(true);
    try {
      const task = trackTask(await api("POST", "/vms", spec));
      setErrors({}); setError(null);
      notify(t("wiz.started", { name: spec.name }));
      go("vms");
      return task;
    } catch (err) {
      const fe = fieldErrors(err, wizardField);
      setErrors(fe);
      setError(err);
      const first = Object.keys(fe).find((id) => id !== "_form");
      if (first) document.getElementById(first)?.focus();
    } finally { setBusy(false); }
    return null;
  };
  const src = (id, key) => html`<div class="radio" key=${id}><input type="radio" id=${"src-" + id} name="source" value=${id}
    checked=${source === id} onChange=${() => setSource(id)} /><label for=${"src-" + id}>${t(key)}</label></div>`;
  return html`<h1 tabindex="-1">${t("nav.create")}</h1>
  <form class="wizard" onSubmit=${submit} novalidate>
    <${Section} id="wiz-basics" title=${t("wiz.basics")}>
      <div class="form-grid">
        <${Field} id="vm_name" label=${t("word.vm_name")} error=${errors.vm_name} help=${t("hint.name")}>
          <input ...${inputProps("vm_name", errors)} required autocomplete="off" /><//>
        <${Field} id="memory" label=${t("vm.memory")} error=${errors.memory} help=${t("wiz.memory_help")}>
          <input ...${inputProps("memory", errors)} defaultValue=${source === "micro" ? "256M" : "1G"} /><//>
        <${Field} id="vcpus" label=${t("vm.vcpus")} error=${errors.vcpus}>
          <input ...${inputProps("vcpus", errors)} type="number" min="1" defaultValue="1" /><//>
      </div>
    <//>
    <${Section} id="wiz-source" title=${t("wiz.source")}>
      <fieldset class="radios"><legend class="sr-only">${t("wiz.source")}</legend>${SOURCES.map(([id, key]) => src(id, key))}</fieldset>
      <div class="form-grid">
        ${source === "micro" && html`<p class="help wide">${t("wiz.micro_help")}</p>
          <${Field} id="disk_size" label=${t("wiz.data_disk")} error=${errors.disk_size} help=${t("wiz.data_disk_help")}>
            <input ...${inputProps("disk_size", errors)} placeholder="64M" /><//>
          <${Field} id="disk_pool" label=${t("wiz.disk_pool")}>
            <select id="disk_pool" name="disk_pool">${(pools.data || []).map((p) => html`<option key=${p.name} value=${p.name} selected=${p.name === "default"}>${p.name}</option>`)}</select><//>`}
        ${source === "iso" && html`
          <${Field} id="iso" label=${t("wiz.iso")} error=${errors.source_volume} help=${isos.data && !isos.data.length ? t("wiz.no_isos") : t("wiz.iso_help")}>
            <select ...${inputProps("iso", errors)}>${(isos.data || []).map((v) => html`<option key=${v.pool + v.name} value=${v.pool + "/" + v.name}>${v.name} (${v.pool}, ${fmtBytes(v.capacity)})</option>`)}</select><//>
          <${Field} id="disk_size" label=${t("wiz.disk_size")} error=${errors.disk_size} help=${t("hint.size_short")}>
            <input ...${inputProps("disk_size", errors)} defaultValue="10G" /><//>
          <${Field} id="disk_pool" label=${t("wiz.disk_pool")}>
            <select id="disk_pool" name="disk_pool">${(pools.data || []).map((p) => html`<option key=${p.name} value=${p.name}>${p.name}</option>`)}</select><//>`}
        ${source === "disk" && html`
          <${Field} id="source_pool" label=${t("word.pool")}>
            <select id="source_pool" value=${diskPool} onChange=${(e) => setDiskPool(e.target.value)}>${(pools.data || []).map((p) => html`<option key=${p.name} value=${p.name}>${p.name}</option>`)}</select><//>
          <${Field} id="source_volume" label=${t("word.volume")} error=${errors.source_volume} help=${admin ? null : t("wiz.disk_admins")}>
            <select ...${inputProps("source_volume", errors)}>${(vols.data || []).map((v) => html`<option key=${v.name} value=${diskPool + "/" + v.name}>${v.name} (${v.format}, ${fmtBytes(v.capacity)})</option>`)}</select><//>`}
        ${source === "template" && html`
          <${Field} id="template" label=${t("wiz.template")} error=${errors.template} help=${templates.data && !templates.data.length ? t("wiz.no_templates") : t("wiz.template_help")}>
            <select ...${inputProps("template", errors)}>${(templates.data || []).map((x) => html`<option key=${x.name} value=${x.name}>${x.name}${x.description ? " — " + x.description : ""}</option>`)}</select><//>`}
      </div>
      <${ErrorBox} error=${source === "iso" ? isos.error : (source === "template" ? templates.error : (source === "disk" ? vols.error : null))} compact />
    <//>
    <${Section} id="wiz-devices" title=${t("wiz.devices")}>
      <div class="form-grid">
        <${Field} id="network" label=${t("word.network")} error=${errors.network}>
          <select ...${inputProps("network", errors)}>
            ${(nets.data || []).map((n) => html`<option key=${n.name} value=${n.name} selected=${n.name === "default"}>${n.name}</option>`)}
            <option value="">${t("wiz.no_network")}</option></select><//>
        <div class="field check"><input type="checkbox" id="graphics" name="graphics" defaultChecked=${source !== "micro"} />
          <label for="graphics">${t("wiz.graphics")}</label></div>
        <div class="field check"><input type="checkbox" id="autostart" name="autostart" /><label for="autostart">${t("vm.autostart")}</label></div>
        <div class="field check"><input type="checkbox" id="start" name="start" defaultChecked=${true} /><label for="start">${t("wiz.start")}</label></div>
      </div>
    <//>
    <${Section} id="wiz-ci" title=${t("wiz.cloud_init")}>
      <div class="field check"><input type="checkbox" id="cloud_init" name="cloud_init" checked=${cloudInit} onChange=${(e) => setCloudInit(e.target.checked)} />
        <label for="cloud_init">${t("wiz.ci_enable")}</label></div>
      ${cloudInit && html`<div class="form-grid">
        <${Field} id="ci_hostname" label=${t("word.hostname")} error=${errors.ci_hostname} help=${t("wiz.ci_hostname_help")}>
          <input ...${inputProps("ci_hostname", errors)} autocomplete="off" /><//>
        <${Field} id="ci_password" label=${t("wiz.ci_password")} error=${errors.ci_password} help=${t("wiz.ci_password_help")}>
          <input ...${inputProps("ci_password", errors)} type="password" autocomplete="new-password" /><//>
        <${Field} id="ci_ssh_keys" label=${t("wiz.ci_ssh_keys")} error=${errors.ci_ssh_keys} help=${t("wiz.ci_ssh_keys_help")} wide>
          <textarea ...${inputProps("ci_ssh_keys", errors)} class="mono" rows="3" spellcheck="false" autocomplete="off"
            placeholder="ssh-ed25519 AAAA… user@host"></textarea><//>
        <${Field} id="ci_user_data_text" label=${t("wiz.ci_user_data_text")} error=${errors.ci_user_data_text} help=${t("wiz.ci_user_data_text_help")} wide>
          <textarea ...${inputProps("ci_user_data_text", errors)} class="mono" rows="8" spellcheck="false" autocomplete="off"
            placeholder="#cloud-config"></textarea><//>
        <div class="field check wide"><input type="checkbox" id="ci_eject" name="ci_eject" aria-describedby="ci_eject-help" />
          <label for="ci_eject">${t("wiz.ci_eject")}</label><p class="help" id="ci_eject-help">${t("wiz.ci_eject_help")}</p></div>
        ${admin && [["ci_user_data", "wiz.ci_user_data"], ["ci_meta_data", "wiz.ci_meta_data"], ["ci_ssh_key", "wiz.ci_ssh_key"]].map(([id, key]) => html`
          <${Field} key=${id} id=${id} label=${t(key)} error=${errors[id]} help=${t("wiz.ci_path_help")}>
            <input ...${inputProps(id, errors)} placeholder="/etc/kvmkit/cloud-init/…" /><//>`)}
      </div>`}
    <//>
    <div class="buttons"><button type="submit" disabled=${busy}>${busy ? t("wiz.creating") : t("wiz.create")}</button></div>
    <${ErrorBox} error=${error} />
  </form>`;
}
