// The audit log (admins): who did what, on what, when, with what result. Route: GET /audit?user=&action=&target=&limit=.
import { get } from "../lib/api.js";
import { html, useEffect, useState } from "../lib/h.js";
import { fmtDate, has, t } from "../lib/i18n.js";
import { ErrorBox, Loading, Section, useLoad } from "../lib/ui.js";

export function Audit() {
  const [filter, setFilter] = useState({ user: "", action: "", target: "" });
  const q = new URLSearchParams({ limit: "200", ...Object.fromEntries(Object.entries(filter).filter(([, v]) => v)) });
  const list = useLoad(() => get(`/audit?${q}`), [q.toString()]);
  useEffect(() => { document.title = `${t("nav.audit")} · kvmkit`; }, []);
  const submit = (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    setFilter({ user: f.get("au_user").trim(), action: f.get("au_action").trim(), target: f.get("au_target").trim() });
  };
  const result = (r) => (has(`audit.result.${r}`) ? t(`audit.result.${r}`) : r);
  return html`<h1 tabindex="-1">${t("nav.audit")}</h1>
    <form class="toolbar" onSubmit=${submit} role="search">
      <div class="field inline"><label for="au_user">${t("audit.user")}</label><input id="au_user" name="au_user" /></div>
      <div class="field inline"><label for="au_action">${t("audit.action")}</label><input id="au_action" name="au_action" /></div>
      <div class="field inline"><label for="au_target">${t("audit.target")}</label><input id="au_target" name="au_target" /></div>
      <button type="submit" class="small">${t("audit.filter")}</button>
    </form>
    <${Section} id="audit-list" title=${t("audit.entries")}>
      ${list.loading && !list.data && html`<${Loading} />`}
      <${ErrorBox} error=${list.error} />
      ${list.data && (list.data.length ? html`<div class="table-wrap" tabindex="0"><table><thead><tr><th scope="col">${t("audit.when")}</th><th scope="col">${t("audit.user")}</th>
        <th scope="col">${t("audit.action")}</th><th scope="col">${t("audit.target")}</th><th scope="col">${t("audit.result")}</th><th scope="col" class="hide-sm">${t("audit.address")}</th></tr></thead>
        <tbody>${list.data.map((a, i) => html`<tr key=${a.id || i}><td>${fmtDate(a.at)}</td><td>${a.user || "—"}</td>
          <td><code>${a.action}</code></td><td>${a.target || "—"}</td><td><span class=${"badge audit-" + a.result}>${result(a.result)}</span></td>
          <td class="hide-sm">${a.source_ip || "—"}</td></tr>`)}</tbody></table></div>` : html`<p class="muted">${t("audit.none")}</p>`)}
    <//>`;
}
