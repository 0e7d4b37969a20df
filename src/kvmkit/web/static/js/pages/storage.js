// Storage: pools (use, start/stop/refresh for admins), a pool's volumes (create, resize, delete), upload
// with a progress bar (PUT /pools/{pool}/volumes/{vol}/content streamed by XMLHttpRequest, cancellable),
// and the ISO library (every .iso volume). Routes: GET /pools, POST /pools/{name}/actions/{action},
// GET/POST /pools/{pool}/volumes, PATCH/DELETE /pools/{pool}/volumes/{vol}, PUT .../content.
import { api, enc, get, upload } from "../lib/api.js";
import { html, useEffect, useRef, useState } from "../lib/h.js";
import { fmtBytes, fmtPercent, t } from "../lib/i18n.js";
import { href } from "../lib/router.js";
import { atLeast } from "../lib/store.js";
import { confirmAction, ErrorBox, Field, fieldErrors, inputProps, Loading, notify, Section, useLoad } from "../lib/ui.js";
import { isoLibrary } from "./create.js";

function Usage({ used, total }) {
  if (!total) return html`<span class="muted">—</span>`;
  const pct = 100 * used / total;
  return html`<span class="usage"><meter min="0" max="100" value=${pct} aria-label=${t("storage.used_pct", { pct: fmtPercent(pct) })}></meter>
    <span>${t("storage.used_of", { used: fmtBytes(used), total: fmtBytes(total) })}</span></span>`;
}

function Upload({ pools, onDone, defaultPool }) {
  const [file, setFile] = useState(null);
  const [name, setName] = useState("");
  const [progress, setProgress] = useState(null);
  const [error, setError] = useState(null);
  const [errors, setErrors] = useState({});
  const job = useRef(null);
  const submit = (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const chosen = f.get("up_file");
    if (!chosen || !chosen.size) { setErrors({ up_file: { local: t("upload.pick_file") } }); return; }
    const pool = f.get("up_pool");
    const volName = String(f.get("up_name") || chosen.name).trim();
    const format = f.get("up_format");
    setError(null); setErrors({});
    setProgress({ loaded: 0, total: chosen.size, name: volName });
    job.current = upload(`/pools/${enc(pool)}/volumes/${enc(volName)}/content?format=${enc(format)}`, chosen,
      (loaded, total) => setProgress({ loaded, total, name: volName }));
    job.current.promise.then((task) => {
      notify(t("upload.done", { name: volName, size: fmtBytes(chosen.size) }));
      setProgress(null); setFile(null); setName(""); e.target.reset();
      onDone(task);
    }, (err) => {
      setProgress(null);
      if (err.code === "aborted") notify(t("upload.cancelled", { name: volName }));
      else { setError(err); setErrors(fieldErrors(err, () => null)); }
    });
  };
  const pct = progress && progress.total ? 100 * progress.loaded / progress.total : 0;
  return html`<form class="form-grid" onSubmit=${submit}>
    <p class="help wide">${t("upload.title")}</p>
    <${Field} id="up_file" label=${t("upload.file")} error=${errors.up_file}>
      <input ...${inputProps("up_file", errors)} type="file" onChange=${(e) => { const f = e.target.files[0] || null; setFile(f); setName(f ? f.name : ""); }} /><//>
    <${Field} id="up_name" label=${t("word.volume_name")} help=${t("upload.name_help")}>
      <input id="up_name" name="up_name" value=${name} onInput=${(e) => setName(e.target.value)} /><//>
    <${Field} id="up_pool" label=${t("word.pool")}><select id="up_pool" name="up_pool">
      ${(pools || []).filter((p) => p.state === "running").map((p) => html`<option key=${p.name} value=${p.name} selected=${p.name === defaultPool}>${p.name}</option>`)}</select><//>
    <${Field} id="up_format" label=${t("word.format")} help=${t("upload.format_help")}><select id="up_format" name="up_format">
      <option value="raw">${t("upload.format_raw")}</option><option value="qcow2">qcow2</option></select><//>
    <div class="buttons wide">
      <button type="submit" disabled=${!!progress}>${t("upload.start")}</button>
      ${progress && html`<button type="button" class="secondary" onClick=${() => job.current && job.current.abort()}>${t("action.cancel")}</button>`}
    </div>
    ${progress && html`<div class="wide upload-progress" role="status">
      <label for="up-bar">${t("upload.progress", { name: progress.name, done: fmtBytes(progress.loaded), total: fmtBytes(progress.total) })}</label>
      <progress id="up-bar" max="100" value=${pct}>${fmtPercent(pct)}</progress> <span>${fmtPercent(pct)}</span></div>`}
    <div class="wide"><${ErrorBox} error=${error} /></div>
  </form>`;
}

function NewVolume({ pool, onDone }) {
  const [errors, setErrors] = useState({});
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    try {
      const v = await api("POST", `/pools/${enc(pool)}/volumes`, { name: f.get("vol_name"), size: f.get("vol_size"), format: f.get("vol_format") });
      notify(t("storage.volume_created", { name: v.name }));
      setErrors({}); setError(null); e.target.reset(); onDone();
    } catch (err) {
      setErrors(fieldErrors(err, (loc) => ({ name: "vol_name", size: "vol_size", format: "vol_format" })[loc[0]]));
      setError(err);
    }
  };
  return html`<form class="form-grid" onSubmit=${submit} aria-labelledby="newvol-h">
    <h3 id="newvol-h" class="wide">${t("storage.new_volume")}</h3>
    <${Field} id="vol_name" label=${t("word.volume_name")} error=${errors.vol_name}><input ...${inputProps("vol_name", errors)} required /><//>
    <${Field} id="vol_size" label=${t("word.size")} error=${errors.vol_size} help=${t("hint.size_short")}><input ...${inputProps("vol_size", errors)} required placeholder="10G" /><//>
    <${Field} id="vol_format" label=${t("word.format")}><select id="vol_format" name="vol_format"><option value="qcow2">qcow2</option><option value="raw">raw</option></select><//>
    <div class="buttons wide"><button type="submit">${t("action.create")}</button></div>
    <div class="wide"><${ErrorBox} error=${error} /></div>
  </form>`;
}

function Volumes({ pool, me, version }) {
  const vols = useLoad(() => get(`/pools/${enc(pool)}/volumes`), [pool, version]);
  const can = atLeast(me, "operator");
  const remove = async (v) => {
    if (!await confirmAction({ title: t("storage.delete_volume_title", { name: v.name }), body: t("storage.delete_volume_warning"), confirm: t("action.delete") })) return;
    try { await api("DELETE", `/pools/${enc(pool)}/volumes/${enc(v.name)}`); notify(t("storage.volume_deleted", { name: v.name })); vols.reload(); }
    catch (e) { notify(t("storage.volume_delete_failed", { name: v.name }), "error", e); }
  };
  return html`<${Section} id="pool-volumes" title=${t("storage.volumes_of", { pool })}>
    ${vols.loading && !vols.data && html`<${Loading} />`}
    <${ErrorBox} error=${vols.error} />
    ${vols.data && (vols.data.length ? html`<div class="table-wrap" tabindex="0"><table><thead><tr><th scope="col">${t("word.name")}</th><th scope="col">${t("word.format")}</th>
      <th scope="col" class="num">${t("word.capacity")}</th><th scope="col" class="num hide-sm">${t("storage.allocation")}</th>
      ${can && html`<th scope="col"><span class="sr-only">${t("vms.actions")}</span></th>`}</tr></thead>
      <tbody>${vols.data.map((v) => html`<tr key=${v.name}><td class="path">${v.name}${v.incomplete && html` <span class="badge warn">${t("storage.incomplete")}</span>`}</td>
        <td>${v.format}</td><td class="num">${fmtBytes(v.capacity)}</td><td class="num hide-sm">${fmtBytes(v.allocation)}</td>
        ${can && html`<td class="act"><button type="button" class="small danger" onClick=${() => remove(v)} aria-label=${t("storage.delete_one", { name: v.name })}>${t("action.delete")}</button></td>`}</tr>`)}</tbody></table></div>`
      : html`<p class="muted">${t("storage.no_volumes")}</p>`)}
    ${can && html`<${NewVolume} pool=${pool} onDone=${vols.reload} />`}
  <//>`;
}

export function Storage({ parts, me }) {
  const pools = useLoad(() => get("/pools"), []);
  const [version, setVersion] = useState(0);
  const isos = useLoad(() => isoLibrary(), [version]);
  const selected = parts[1] || "default";
  const admin = atLeast(me, "admin");
  useEffect(() => { document.title = `${t("nav.storage")} · kvmkit`; }, []);
  const poolAction = async (p, action) => {
    try { await api("POST", `/pools/${enc(p.name)}/actions/${action}`); notify(t("storage.pool_done", { name: p.name, action: t("pool.action." + action) })); pools.reload(); }
    catch (e) { notify(t("storage.pool_failed", { name: p.name, action: t("pool.action." + action) }), "error", e); }
  };
  return html`<h1 tabindex="-1">${t("nav.storage")}</h1>
    <${Section} id="pools" title=${t("storage.pools")}>
      ${pools.loading && !pools.data && html`<${Loading} />`}
      <${ErrorBox} error=${pools.error} />
      ${pools.data && html`<div class="table-wrap" tabindex="0"><table><thead><tr><th scope="col">${t("word.name")}</th><th scope="col" class="hide-sm">${t("storage.type")}</th>
        <th scope="col">${t("vm.state")}</th><th scope="col">${t("storage.use")}</th><th scope="col" class="num hide-sm">${t("storage.volumes")}</th>
        ${admin && html`<th scope="col"><span class="sr-only">${t("vms.actions")}</span></th>`}</tr></thead>
        <tbody>${pools.data.map((p) => html`<tr key=${p.name} class=${p.name === selected ? "selected" : ""}>
          <td><a href=${href("storage", p.name)} aria-current=${p.name === selected ? "true" : undefined}>${p.name}</a></td>
          <td class="hide-sm">${p.type}</td><td><span class=${"badge pool-" + p.state}>${t("pool.state." + p.state)}</span></td>
          <td><${Usage} used=${p.allocation} total=${p.capacity} /></td><td class="num hide-sm">${p.volumes}</td>
          ${admin && html`<td class="act">${p.state === "running"
            ? html`<button type="button" class="small secondary" onClick=${() => poolAction(p, "refresh")}>${t("pool.action.refresh")}</button>
                   <button type="button" class="small secondary" onClick=${() => poolAction(p, "stop")}>${t("pool.action.stop")}</button>`
            : html`<button type="button" class="small" onClick=${() => poolAction(p, "start")}>${t("pool.action.start")}</button>`}</td>`}
        </tr>`)}</tbody></table></div>`}
    <//>
    <${Volumes} pool=${selected} me=${me} version=${version} />
    ${atLeast(me, "operator") && html`<${Section} id="upload" title=${t("upload.section")}>
      <${Upload} pools=${pools.data} defaultPool=${selected} onDone=${() => { setVersion((v) => v + 1); pools.reload(); }} />
    <//>`}
    <${Section} id="isos" title=${t("storage.iso_library")}>
      <${ErrorBox} error=${isos.error} />
      ${isos.data && (isos.data.length ? html`<ul class="iso-list">${isos.data.map((v) => html`<li key=${v.pool + "/" + v.name}>
          <span class="path">${v.name}</span> <span class="muted">${v.pool} · ${fmtBytes(v.capacity)}</span></li>`)}</ul>`
        : html`<p class="muted">${t("storage.no_isos")}</p>`)}
    <//>`;
}
