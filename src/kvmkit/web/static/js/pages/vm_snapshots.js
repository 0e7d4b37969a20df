// Snapshots as a tree (parents before children, indented by depth); create, revert, delete as tasks.
// Routes: GET /vms/{name}/snapshots, POST /vms/{name}/snapshots, POST .../snapshots/{snap}/revert,
// DELETE .../snapshots/{snap}.
import { api, enc, get, withHost } from "../lib/api.js";
import { html, useState } from "../lib/h.js";
import { fmtDate, t } from "../lib/i18n.js";
import { trackTask, waitTask } from "../lib/live.js";
import { atLeast } from "../lib/store.js";
import { confirmAction, ErrorBox, Field, fieldErrors, inputProps, Loading, notify, Section, useLoad } from "../lib/ui.js";

export function Snapshots({ vm, me }) {
  const list = useLoad(() => get(withHost(`/vms/${enc(vm.name)}/snapshots`, vm.host)), [vm.name]);
  const [errors, setErrors] = useState({});
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(null);
  const can = atLeast(me, "operator");
  const runTask = async (what, promise) => {
    setBusy(what);
    try {
      const task = trackTask(await promise);
      const done = await waitTask(task.id);
      if (done.state === "succeeded") notify(t("snap.done." + what));
      else notify(t("snap.failed." + what), "error", done.error ? { message: done.error, code: "failed" } : null);
      list.reload();
      return done.state === "succeeded";
    } catch (e) {
      notify(t("snap.failed." + what), "error", e);
      return false;
    } finally { setBusy(null); }
  };
  const create = async (e) => {
    e.preventDefault();
    const form = e.target;
    const f = new FormData(form);
    const body = { disk_only: f.get("disk_only") === "on" };
    if (String(f.get("snap_name")).trim()) body.name = String(f.get("snap_name")).trim();
    if (String(f.get("snap_desc")).trim()) body.description = String(f.get("snap_desc")).trim();
    setBusy("create");
    let task;
    try {
      task = api("POST", withHost(`/vms/${enc(vm.name)}/snapshots`, vm.host), body);
      await task;
      setErrors({}); setError(null);
    } catch (err) {
      setErrors(fieldErrors(err, (loc) => ({ name: "snap_name", description: "snap_desc", disk_only: "disk_only" })[loc[0]]));
      setError(err);
      setBusy(null);
      return;
    }
    if (await runTask("create", task)) form.reset();
  };
  const revert = async (s) => {
    if (!await confirmAction({ title: t("snap.revert_title", { name: s.name }), body: t("snap.revert_warning"), confirm: t("snap.revert") })) return;
    runTask("revert", api("POST", withHost(`/vms/${enc(vm.name)}/snapshots/${enc(s.name)}/revert`, vm.host)));
  };
  const remove = async (s) => {
    if (!await confirmAction({ title: t("snap.delete_title", { name: s.name }), body: t("snap.delete_warning"), confirm: t("action.delete") })) return;
    runTask("delete", api("DELETE", withHost(`/vms/${enc(vm.name)}/snapshots/${enc(s.name)}`, vm.host)));
  };
  const snaps = list.data || [];
  return html`<${Section} id="vm-snapshots" title=${t("vm.tab.snapshots")}>
      ${list.loading && !list.data && html`<${Loading} />`}
      <${ErrorBox} error=${list.error} />
      ${list.data && (snaps.length ? html`<ul class="snap-tree" aria-label=${t("snap.tree")}>
        ${snaps.map((s) => html`<li key=${s.name} class=${"depth-" + Math.min(s.depth || 0, 8)}>
          <div class="snap">
            <span class="snap-name">${(s.depth || 0) > 0 && html`<span aria-hidden="true" class="branch">└ </span>`}${s.name}</span>
            ${s.current && html`<span class="badge current">${t("snap.current")}</span>`}
            <span class="muted">${fmtDate(s.created)}</span>
            <span class="muted">${t("snap.kind." + (s.kind || "internal"))}${s.memory ? " · " + t("snap.with_memory") : ""}</span>
            ${s.description && html`<span class="snap-desc">${s.description}</span>`}
            ${can && html`<span class="buttons">
              <button type="button" class="small secondary" disabled=${!!busy} onClick=${() => revert(s)}
                aria-label=${t("snap.revert_one", { name: s.name })}>${t("snap.revert")}</button>
              <button type="button" class="small danger" disabled=${!!busy} onClick=${() => remove(s)}
                aria-label=${t("snap.delete_one", { name: s.name })}>${t("action.delete")}</button></span>`}
          </div></li>`)}
      </ul>` : html`<p class="muted">${t("snap.none")}</p>`)}
    <//>
    ${can && html`<${Section} id="vm-snap-new" title=${t("snap.create")}>
      <form class="form-grid" onSubmit=${create}>
        <${Field} id="snap_name" label=${t("snap.name")} error=${errors.snap_name} help=${t("snap.name_help")}>
          <input ...${inputProps("snap_name", errors)} /><//>
        <${Field} id="snap_desc" label=${t("snap.description")} error=${errors.snap_desc}>
          <input ...${inputProps("snap_desc", errors)} /><//>
        <div class="field check"><input type="checkbox" id="disk_only" name="disk_only" /><label for="disk_only">${t("snap.disk_only")}</label></div>
        <div class="buttons wide"><button type="submit" disabled=${!!busy}>${busy === "create" ? t("snap.creating") : t("snap.create")}</button></div>
      </form>
      <${ErrorBox} error=${error} />
    <//>`}`;
}
