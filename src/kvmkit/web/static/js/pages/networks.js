// Networks: the list, one network's DHCP leases and reservations (add/remove), start/stop, create and
// delete (admins). Routes: GET /networks, GET /networks/{name}, GET /networks/{name}/leases, POST
// /networks, POST /networks/{name}/actions/{start,stop}, DELETE /networks/{name}, POST/DELETE
// /networks/{name}/reservations[/{mac}].
import { api, enc, get } from "../lib/api.js";
import { html, useEffect, useState } from "../lib/h.js";
import { fmtDate, t } from "../lib/i18n.js";
import { href } from "../lib/router.js";
import { atLeast } from "../lib/store.js";
import { confirmAction, ErrorBox, Field, fieldErrors, inputProps, Loading, notify, Section, useLoad } from "../lib/ui.js";

function NetworkDetail({ name, me, onChange }) {
  const net = useLoad(() => get(`/networks/${enc(name)}`), [name]);
  const [errors, setErrors] = useState({});
  const [error, setError] = useState(null);
  const admin = atLeast(me, "admin");
  const n = net.data;
  const addHost = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const body = { mac: f.get("res_mac"), ip: f.get("res_ip") };
    if (String(f.get("res_name")).trim()) body.name = String(f.get("res_name")).trim();
    try {
      await api("POST", `/networks/${enc(name)}/reservations`, body);
      notify(t("net.reserved", { ip: body.ip })); setErrors({}); setError(null); e.target.reset(); net.reload();
    } catch (err) { setErrors(fieldErrors(err, (loc) => ({ mac: "res_mac", ip: "res_ip", name: "res_name" })[loc[0]])); setError(err); }
  };
  const removeHost = async (h) => {
    if (!await confirmAction({ title: t("net.unreserve_title", { ip: h.ip }), confirm: t("action.delete") })) return;
    try { await api("DELETE", `/networks/${enc(name)}/reservations/${enc(h.mac)}`); net.reload(); }
    catch (err) { notify(t("net.failed"), "error", err); }
  };
  const action = async (a) => {
    try { await api("POST", `/networks/${enc(name)}/actions/${a}`); net.reload(); onChange(); }
    catch (err) { notify(t("net.failed"), "error", err); }
  };
  const remove = async () => {
    if (!await confirmAction({ title: t("net.delete_title", { name }), body: t("net.delete_warning"), confirm: t("action.delete") })) return;
    try { await api("DELETE", `/networks/${enc(name)}`); notify(t("net.deleted", { name })); onChange(true); }
    catch (err) { notify(t("net.failed"), "error", err); }
  };
  return html`<${Section} id="net-detail" title=${t("net.detail", { name })} actions=${admin && n && html`
      ${n.active ? html`<button type="button" class="small secondary" onClick=${() => action("stop")}>${t("action.stop")}</button>`
        : html`<button type="button" class="small" onClick=${() => action("start")}>${t("action.start")}</button>`}
      <button type="button" class="small danger" onClick=${remove}>${t("action.delete")}</button>`}>
    ${net.loading && !n && html`<${Loading} />`}
    <${ErrorBox} error=${net.error} />
    ${n && html`<dl class="facts">
        <div><dt>${t("net.mode")}</dt><dd>${t("net.mode." + n.mode)}</dd></div>
        <div><dt>${t("net.subnet")}</dt><dd>${(n.subnets || []).join(", ") || "—"}</dd></div>
        <div><dt>${t("net.gateway")}</dt><dd>${n.gateway || "—"}</dd></div>
        <div><dt>${t("net.bridge")}</dt><dd>${n.bridge || "—"}</dd></div>
        <div><dt>${t("net.dhcp")}</dt><dd>${n.dhcp_range ? `${n.dhcp_range.start} – ${n.dhcp_range.end}` : "—"}</dd></div>
        <div><dt>${t("net.vms")}</dt><dd>${(n.vms || []).join(", ") || "—"}</dd></div>
      </dl>
      <h3>${t("net.leases")}</h3>
      ${(n.leases || []).length ? html`<div class="table-wrap" tabindex="0"><table><thead><tr><th scope="col">${t("word.ip")}</th><th scope="col">${t("word.mac")}</th>
        <th scope="col" class="hide-sm">${t("word.hostname")}</th><th scope="col" class="hide-sm">${t("net.expiry")}</th></tr></thead>
        <tbody>${n.leases.map((l) => html`<tr key=${l.mac + l.ip}><td>${l.ip}/${l.prefix}</td><td class="mono">${l.mac}</td><td class="hide-sm">${l.hostname || "—"}</td><td class="hide-sm">${fmtDate(l.expiry)}</td></tr>`)}</tbody></table></div>`
        : html`<p class="muted">${t("net.no_leases")}</p>`}
      <h3>${t("net.reservations")}</h3>
      ${(n.hosts || []).length ? html`<div class="table-wrap" tabindex="0"><table><thead><tr><th scope="col">${t("word.ip")}</th><th scope="col">${t("word.mac")}</th><th scope="col">${t("word.name")}</th>
        ${admin && html`<th scope="col"><span class="sr-only">${t("vms.actions")}</span></th>`}</tr></thead>
        <tbody>${n.hosts.map((h) => html`<tr key=${h.mac}><td>${h.ip}</td><td class="mono">${h.mac}</td><td>${h.name || "—"}</td>
          ${admin && html`<td class="act"><button type="button" class="small danger" onClick=${() => removeHost(h)} aria-label=${t("net.unreserve_one", { ip: h.ip })}>${t("action.delete")}</button></td>`}</tr>`)}</tbody></table></div>`
        : html`<p class="muted">${t("net.no_reservations")}</p>`}
      ${admin && html`<form class="form-grid" onSubmit=${addHost} aria-labelledby="res-h"><h4 id="res-h" class="wide">${t("net.add_reservation")}</h4>
        <${Field} id="res_mac" label=${t("word.mac")} error=${errors.res_mac}><input ...${inputProps("res_mac", errors)} required placeholder="52:54:00:12:34:56" /><//>
        <${Field} id="res_ip" label=${t("word.ip")} error=${errors.res_ip}><input ...${inputProps("res_ip", errors)} required /><//>
        <${Field} id="res_name" label=${t("word.hostname")} error=${errors.res_name}><input ...${inputProps("res_name", errors)} /><//>
        <div class="buttons wide"><button type="submit">${t("action.add")}</button></div>
        <div class="wide"><${ErrorBox} error=${error} /></div></form>`}`}
  <//>`;
}

function NewNetwork({ onDone }) {
  const [errors, setErrors] = useState({});
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const body = { name: f.get("net_name"), mode: f.get("net_mode"), start: true, autostart: f.get("net_autostart") === "on" };
    if (String(f.get("net_subnet")).trim()) body.subnet = String(f.get("net_subnet")).trim();
    try {
      await api("POST", "/networks", body);
      notify(t("net.created", { name: body.name })); setErrors({}); setError(null); e.target.reset(); onDone(body.name);
    } catch (err) { setErrors(fieldErrors(err, (loc) => ({ name: "net_name", mode: "net_mode", subnet: "net_subnet" })[loc[0]])); setError(err); }
  };
  return html`<form class="form-grid" onSubmit=${submit}>
    <${Field} id="net_name" label=${t("word.name")} error=${errors.net_name}><input ...${inputProps("net_name", errors)} required /><//>
    <${Field} id="net_mode" label=${t("net.mode")} error=${errors.net_mode}><select ...${inputProps("net_mode", errors)}>
      ${["nat", "isolated", "route"].map((m) => html`<option value=${m}>${t("net.mode." + m)}</option>`)}</select><//>
    <${Field} id="net_subnet" label=${t("net.subnet")} error=${errors.net_subnet} help=${t("net.subnet_help")}><input ...${inputProps("net_subnet", errors)} placeholder="10.77.0.0/24" /><//>
    <div class="field check"><input type="checkbox" id="net_autostart" name="net_autostart" defaultChecked=${true} /><label for="net_autostart">${t("vm.autostart")}</label></div>
    <div class="buttons wide"><button type="submit">${t("action.create")}</button></div>
    <div class="wide"><${ErrorBox} error=${error} /></div>
  </form>`;
}

export function Networks({ parts, me }) {
  const nets = useLoad(() => get("/networks"), []);
  const selected = parts[1] || null;
  useEffect(() => { document.title = `${t("nav.networks")} · kvmkit`; }, []);
  return html`<h1 tabindex="-1">${t("nav.networks")}</h1>
    <${Section} id="net-list" title=${t("net.list")}>
      ${nets.loading && !nets.data && html`<${Loading} />`}
      <${ErrorBox} error=${nets.error} />
      ${nets.data && html`<div class="table-wrap" tabindex="0"><table><thead><tr><th scope="col">${t("word.name")}</th><th scope="col">${t("net.mode")}</th>
        <th scope="col">${t("net.subnet")}</th><th scope="col" class="hide-sm">${t("net.bridge")}</th><th scope="col">${t("vm.state")}</th>
        <th scope="col" class="hide-sm">${t("vm.autostart")}</th></tr></thead>
        <tbody>${nets.data.map((n) => html`<tr key=${n.name} class=${n.name === selected ? "selected" : ""}>
          <td><a href=${href("networks", n.name)}>${n.name}</a></td><td>${t("net.mode." + n.mode)}</td><td>${n.subnet || "—"}</td>
          <td class="hide-sm">${n.bridge || "—"}</td><td><span class=${"badge " + (n.active ? "vm-running" : "vm-shut-off")}>${n.active ? t("net.active") : t("net.inactive")}</span></td>
          <td class="hide-sm">${n.autostart ? t("common.yes") : t("common.no")}</td></tr>`)}</tbody></table></div>`}
    <//>
    ${selected && html`<${NetworkDetail} key=${selected} name=${selected} me=${me} onChange=${(gone) => { nets.reload(); if (gone === true) location.hash = "#/networks"; }} />`}
    ${atLeast(me, "admin") && html`<${Section} id="net-new" title=${t("net.create")}><${NewNetwork} onDone=${(name) => { nets.reload(); location.hash = href("networks", name); }} /><//>`}`;
}
