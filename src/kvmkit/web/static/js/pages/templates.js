// Templates: the qcow2 volumes new disks are made from; provision a volume from one (a task), mark a
// volume as a template and unmark one (admins), or start the wizard with it.
// Routes: GET /templates, POST /templates, DELETE /templates/{name}, POST /templates/{name}/provision.
import { api, enc, get } from "../lib/api.js";
import { html, useEffect, useState } from "../lib/h.js";
import { fmtBytes, fmtDate, t } from "../lib/i18n.js";
import { trackTask } from "../lib/live.js";
import { atLeast } from "../lib/store.js";
import { confirmAction, ErrorBox, Field, fieldErrors, inputProps, Loading, notify, Section, useLoad } from "../lib/ui.js";

export function Templates({ me }) {
  const list = useLoad(() => get("/templates"), []);
  const [errors, setErrors] = useState({});
  const [error, setError] = useState(null);
  const admin = atLeast(me, "admin");
  useEffect(() => { document.title = `${t("nav.templates")} · kvmkit`; }, []);
  const mark = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const body = { pool: f.get("tpl_pool"), volume: f.get("tpl_volume"), description: f.get("tpl_desc") || "" };
    if (String(f.get("tpl_name")).trim()) body.name = String(f.get("tpl_name")).trim();
    try { await api("POST", "/templates", body); notify(t("tpl.marked")); setErrors({}); setError(null); e.target.reset(); list.reload(); }
    catch (err) { setErrors(fieldErrors(err, (loc) => ({ pool: "tpl_pool", volume: "tpl_volume", name: "tpl_name", description: "tpl_desc" })[loc[0]])); setError(err); }
  };
  const unmark = async (x) => {
    if (!await confirmAction({ title: t("tpl.unmark_title", { name: x.name }), body: t("tpl.unmark_body"), confirm: t("tpl.unmark") })) return;
    try { await api("DELETE", `/templates/${enc(x.name)}`); list.reload(); } catch (err) { notify(t("tpl.failed"), "error", err); }
  };
  const provision = async (x) => {
    const volume = `${x.name}-${Date.now().toString(36)}.qcow2`;
    try { trackTask(await api("POST", `/templates/${enc(x.name)}/provision`, { volume })); notify(t("tpl.provisioning", { volume })); }
    catch (err) { notify(t("tpl.failed"), "error", err); }
  };
  return html`<h1 tabindex="-1">${t("nav.templates")}</h1>
    <${Section} id="tpl-list" title=${t("tpl.list")}>
      ${list.loading && !list.data && html`<${Loading} />`}
      <${ErrorBox} error=${list.error} />
      ${list.data && (list.data.length ? html`<div class="table-wrap" tabindex="0"><table><thead><tr><th scope="col">${t("word.name")}</th>
        <th scope="col" class="hide-sm">${t("word.pool")}</th><th scope="col" class="num">${t("word.capacity")}</th><th scope="col" class="hide-sm">${t("tpl.created")}</th>
        <th scope="col">${t("snap.description")}</th><th scope="col"><span class="sr-only">${t("vms.actions")}</span></th></tr></thead>
        <tbody>${list.data.map((x) => html`<tr key=${x.name}><td>${x.name}</td><td class="hide-sm">${x.pool}/${x.volume}</td><td class="num">${fmtBytes(x.capacity)}</td>
          <td class="hide-sm">${fmtDate(x.created)}</td><td>${x.description || "—"}</td>
          <td class="act">${atLeast(me, "operator") && html`<button type="button" class="small secondary" onClick=${() => provision(x)}
            aria-label=${t("tpl.provision_one", { name: x.name })}>${t("tpl.provision")}</button>`}
            ${admin && html`<button type="button" class="small danger" onClick=${() => unmark(x)} aria-label=${t("tpl.unmark_one", { name: x.name })}>${t("tpl.unmark")}</button>`}</td></tr>`)}</tbody></table></div>`
        : html`<p class="muted">${t("tpl.none")}</p>`)}
      <p class="help">${t("tpl.help")}</p>
    <//>
    ${admin && html`<${Section} id="tpl-mark" title=${t("tpl.mark")}><form class="form-grid" onSubmit=${mark}>
      <${Field} id="tpl_pool" label=${t("word.pool")} error=${errors.tpl_pool}><input ...${inputProps("tpl_pool", errors)} defaultValue="default" required /><//>
      <${Field} id="tpl_volume" label=${t("word.volume")} error=${errors.tpl_volume}><input ...${inputProps("tpl_volume", errors)} required /><//>
      <${Field} id="tpl_name" label=${t("word.template_name")} error=${errors.tpl_name}><input ...${inputProps("tpl_name", errors)} /><//>
      <${Field} id="tpl_desc" label=${t("snap.description")} error=${errors.tpl_desc}><input ...${inputProps("tpl_desc", errors)} /><//>
      <div class="buttons wide"><button type="submit">${t("tpl.mark")}</button></div>
      <div class="wide"><${ErrorBox} error=${error} /></div></form><//>`}`;
}
