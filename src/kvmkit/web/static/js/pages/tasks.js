// Tasks: every long operation, live from the event stream, with progress, its error, its journal of
// steps, and a cancel button while it runs. Routes: GET /tasks, GET /tasks/{id}, POST /tasks/{id}/cancel.
import { get, enc } from "../lib/api.js";
import { html, useEffect, useState } from "../lib/h.js";
import { fmtDate, t } from "../lib/i18n.js";
import { loadTasks, sortedTasks } from "../lib/live.js";
import { atLeast, taskStore, useStore } from "../lib/store.js";
import { ErrorBox, Section, TaskItem, taskState, useLoad } from "../lib/ui.js";

function Steps({ id }) {
  const task = useLoad(() => get(`/tasks/${enc(id)}`), [id]);
  if (task.error) return html`<${ErrorBox} error=${task.error} compact />`;
  const steps = (task.data && task.data.steps) || [];
  return html`<ol class="steps">${steps.map((s, i) => html`<li key=${i}><code>${s.name}</code> <span class="muted">${fmtDate(s.at)}</span>
    ${s.data && s.data.message && html` <span lang="en">${s.data.message}</span>`}</li>`)}${!steps.length && html`<li class="muted">${t("tasks.no_steps")}</li>`}</ol>`;
}

export function Tasks({ me }) {
  const { tasks } = useStore(taskStore);
  const [state, setState] = useState("");
  const [open, setOpen] = useState(null);
  useEffect(() => { document.title = `${t("nav.tasks")} · kvmkit`; loadTasks(200); }, []);
  const rows = sortedTasks(tasks).filter((x) => !state || x.state === state);
  return html`<h1 tabindex="-1">${t("nav.tasks")}</h1>
    <div class="toolbar"><div class="field inline"><label for="task-state">${t("tasks.filter")}</label>
      <select id="task-state" value=${state} onChange=${(e) => setState(e.target.value)}><option value="">${t("vms.state_all")}</option>
        ${["queued", "running", "succeeded", "failed", "cancelled"].map((s) => html`<option value=${s}>${taskState(s)}</option>`)}</select></div></div>
    <${Section} id="task-list" title=${t("tasks.list")}>
      ${rows.length ? html`<ul class="tasks">${rows.map((x) => html`<${TaskItem} key=${x.id} task=${x} canCancel=${atLeast(me, "operator")}>
        <button type="button" class="link small" aria-expanded=${open === x.id ? "true" : "false"} onClick=${() => setOpen(open === x.id ? null : x.id)}>${t("tasks.steps")}</button>
        ${open === x.id && html`<${Steps} id=${x.id} />`}<//>`)}</ul>` : html`<p class="muted">${t("tasks.none")}</p>`}
    <//>`;
}
