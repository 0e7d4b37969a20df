// Users, groups and grants (admins). Routes: GET/POST /users, PATCH/DELETE /users/{name}, GET/POST
// /users/{name}/grants, DELETE /users/{name}/grants/{vm}, GET/POST /groups, DELETE /groups/{name},
// POST /groups/{name}/members, DELETE /groups/{name}/members/{user}, POST /groups/{name}/grants,
// DELETE /groups/{name}/grants/{vm}.
import { api, enc, get } from "../lib/api.js";
import { html, useEffect, useState } from "../lib/h.js";
import { fmtDate, t } from "../lib/i18n.js";
import { useStore, vmStore } from "../lib/store.js";
import { confirmAction, ErrorBox, Field, fieldErrors, inputProps, Loading, notify, Section, useLoad } from "../lib/ui.js";

const ROLES = ["viewer", "operator", "admin"];

function VmPicker({ id, label }) {
  const { vms } = useStore(vmStore);
  return html`<${Field} id=${id} label=${label}><input id=${id} name=${id} list=${id + "-list"} required autocomplete="off" />
    <datalist id=${id + "-list"}>${[...new Set([...vms.values()].map((v) => v.name))].sort().slice(0, 500).map((n) => html`<option value=${n} />`)}</datalist><//>`;
}

function Grants({ kind, name, grants, reload }) {
  const base = `/${kind === "user" ? "users" : "groups"}/${enc(name)}/grants`;
  const [error, setError] = useState(null);
  const fid = `grant-${kind}-${name}`;
  const add = async (e) => {
    e.preventDefault();
    try { await api("POST", base, { vm: new FormData(e.target).get(fid) }); setError(null); e.target.reset(); reload(); }
    catch (err) { setError(err); }
  };
  const remove = async (vm) => {
    try { await api("DELETE", `${base}/${enc(vm)}`); reload(); } catch (err) { notify(t("users.failed"), "error", err); }
  };
  return html`<div class="grants"><ul class="chips">${(grants || []).map((g) => {
      const vm = typeof g === "string" ? g : g.vm;
      return html`<li key=${vm}>${vm} <button type="button" class="icon" onClick=${() => remove(vm)} aria-label=${t("users.revoke_one", { vm, name })}>×</button></li>`;
    })}${!(grants || []).length && html`<li class="muted">${t("users.no_grants")}</li>`}</ul>
    <form class="inline-form" onSubmit=${add}><${VmPicker} id=${fid} label=${t("users.grant_vm")} /><button type="submit" class="small">${t("users.grant")}</button></form>
    <${ErrorBox} error=${error} compact /></div>`;
}

function UserRow({ u, me, reload }) {
  const [open, setOpen] = useState(false);
  const detail = useLoad(() => (open ? get(`/users/${enc(u.name)}`) : null), [open]);
  const change = async (body) => {
    try { await api("PATCH", `/users/${enc(u.name)}`, body); notify(t("users.changed", { name: u.name })); reload(); }
    catch (err) { notify(t("users.failed"), "error", err); }
  };
  const remove = async () => {
    if (!await confirmAction({ title: t("users.delete_title", { name: u.name }), body: t("users.delete_body"), confirm: t("action.delete") })) return;
    try { await api("DELETE", `/users/${enc(u.name)}`); reload(); } catch (err) { notify(t("users.failed"), "error", err); }
  };
  const self = u.name === me.name;
  return html`<tr><td>${u.name}</td>
    <td><label class="sr-only" for=${"role-" + u.name}>${t("users.role_of", { name: u.name })}</label>
      <select id=${"role-" + u.name} value=${u.role} disabled=${self} onChange=${(e) => change({ role: e.target.value })}>
        ${ROLES.map((r) => html`<option value=${r}>${t("role." + r)}</option>`)}</select></td>
    <td class="hide-sm">${t("users.scope." + u.vm_scope)}</td>
    <td>${u.disabled ? html`<span class="badge warn">${t("users.disabled")}</span>` : html`<span class="badge vm-running">${t("users.enabled")}</span>`}</td>
    <td class="hide-sm">${fmtDate(u.created_at)}</td>
    <td class="act">
      <button type="button" class="small secondary" aria-expanded=${open ? "true" : "false"} onClick=${() => setOpen(!open)}>${t("users.grants")}</button>
      ${!self && html`<button type="button" class="small secondary" onClick=${() => change({ disabled: !u.disabled })}>${u.disabled ? t("users.enable") : t("users.disable")}</button>
        <button type="button" class="small danger" onClick=${remove} aria-label=${t("users.delete_one", { name: u.name })}>${t("action.delete")}</button>`}
      ${open && detail.data && html`<${Grants} kind="user" name=${u.name} grants=${detail.data.grants} reload=${detail.reload} />`}
    </td></tr>`;
}

function NewUser({ onDone }) {
  const [errors, setErrors] = useState({});
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const body = { name: f.get("nu_name"), role: f.get("nu_role"), vm_scope: f.get("nu_scope") };
    if (f.get("nu_password")) body.password = f.get("nu_password");
    try { await api("POST", "/users", body); notify(t("users.created", { name: body.name })); setErrors({}); setError(null); e.target.reset(); onDone(); }
    catch (err) { setErrors(fieldErrors(err, (loc) => ({ name: "nu_name", role: "nu_role", password: "nu_password", vm_scope: "nu_scope" })[loc[0]])); setError(err); }
  };
  return html`<form class="form-grid" onSubmit=${submit}>
    <${Field} id="nu_name" label=${t("word.name")} error=${errors.nu_name}><input ...${inputProps("nu_name", errors)} required autocomplete="off" /><//>
    <${Field} id="nu_role" label=${t("users.role")}><select id="nu_role" name="nu_role">${ROLES.map((r) => html`<option value=${r}>${t("role." + r)}</option>`)}</select><//>
    <${Field} id="nu_password" label=${t("login.password")} error=${errors.nu_password} help=${t("users.password_help")}>
      <input ...${inputProps("nu_password", errors)} type="password" autocomplete="new-password" /><//>
    <${Field} id="nu_scope" label=${t("users.scope")}><select id="nu_scope" name="nu_scope">
      <option value="all">${t("users.scope.all")}</option><option value="granted">${t("users.scope.granted")}</option></select><//>
    <div class="buttons wide"><button type="submit">${t("action.create")}</button></div>
    <div class="wide"><${ErrorBox} error=${error} /></div></form>`;
}

function Groups() {
  const groups = useLoad(() => get("/groups"), []);
  const [error, setError] = useState(null);
  const add = async (e) => {
    e.preventDefault();
    try { await api("POST", "/groups", { name: new FormData(e.target).get("ng_name") }); setError(null); e.target.reset(); groups.reload(); }
    catch (err) { setError(err); }
  };
  const addMember = async (g, e) => {
    e.preventDefault();
    try { await api("POST", `/groups/${enc(g.name)}/members`, { user: new FormData(e.target).get(`member-${g.name}`) }); e.target.reset(); groups.reload(); }
    catch (err) { notify(t("users.failed"), "error", err); }
  };
  const removeMember = async (g, user) => {
    try { await api("DELETE", `/groups/${enc(g.name)}/members/${enc(user)}`); notify(t("groups.member_removed", { user, name: g.name })); groups.reload(); }
    catch (err) { notify(t("users.failed"), "error", err); }
  };
  const remove = async (g) => {
    if (!await confirmAction({ title: t("groups.delete_title", { name: g.name }), confirm: t("action.delete") })) return;
    try { await api("DELETE", `/groups/${enc(g.name)}`); groups.reload(); } catch (err) { notify(t("users.failed"), "error", err); }
  };
  return html`<${Section} id="groups" title=${t("groups.title")}>
    <${ErrorBox} error=${groups.error} />
    ${groups.data && (groups.data.length ? html`<ul class="plain groups">${groups.data.map((g) => html`<li key=${g.name} class="card-inner">
      <h3>${g.name} <button type="button" class="small danger" onClick=${() => remove(g)} aria-label=${t("groups.delete_one", { name: g.name })}>${t("action.delete")}</button></h3>
      <div class="members"><span class="muted">${t("groups.members")}</span> <ul class="chips">${g.members.map((m) => html`<li key=${m}>${m} <button type="button" class="icon"
        onClick=${() => removeMember(g, m)} aria-label=${t("groups.remove_member_one", { user: m, name: g.name })}>×</button></li>`)}${!g.members.length && html`<li class="muted">—</li>`}</ul></div>
      <form class="inline-form" onSubmit=${(e) => addMember(g, e)}><label for=${"member-" + g.name}>${t("groups.add_member")}</label>
        <input id=${"member-" + g.name} name=${"member-" + g.name} required /><button type="submit" class="small">${t("action.add")}</button></form>
      <p class="muted">${t("users.grants")}</p><${Grants} kind="group" name=${g.name} grants=${g.grants} reload=${groups.reload} />
    </li>`)}</ul>` : html`<p class="muted">${t("groups.none")}</p>`)}
    <form class="inline-form" onSubmit=${add}><label for="ng_name">${t("groups.new")}</label><input id="ng_name" name="ng_name" required />
      <button type="submit" class="small">${t("action.create")}</button></form>
    <${ErrorBox} error=${error} compact />
  <//>`;
}

export function Users({ me }) {
  const users = useLoad(() => get("/users"), []);
  useEffect(() => { document.title = `${t("nav.users")} · kvmkit`; }, []);
  return html`<h1 tabindex="-1">${t("nav.users")}</h1>
    <${Section} id="users" title=${t("users.title")}>
      ${users.loading && !users.data && html`<${Loading} />`}
      <${ErrorBox} error=${users.error} />
      ${users.data && html`<div class="table-wrap" tabindex="0"><table><thead><tr><th scope="col">${t("word.name")}</th><th scope="col">${t("users.role")}</th>
        <th scope="col" class="hide-sm">${t("users.scope")}</th><th scope="col">${t("vm.state")}</th><th scope="col" class="hide-sm">${t("tpl.created")}</th>
        <th scope="col"><span class="sr-only">${t("vms.actions")}</span></th></tr></thead>
        <tbody>${users.data.map((u) => html`<${UserRow} key=${u.name} u=${u} me=${me} reload=${users.reload} />`)}</tbody></table></div>`}
    <//>
    <${Section} id="user-new" title=${t("users.new")}><${NewUser} onDone=${users.reload} /><//>
    <${Groups} />`;
}
