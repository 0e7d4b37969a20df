// Shared pieces of the pages: errors, form fields, confirmation dialog, notices, tasks, loading.
import { api, enc } from "./api.js";
import { describeError, describeFieldMessage, fmtDate, has, t } from "./i18n.js";
import { trackTask } from "./live.js";
import { createStore, useStore } from "./store.js";
import { html, useCallback, useEffect, useRef, useState } from "./h.js";

/** The API's error in the user's language, with what to do, and the server's text when not translated. */
export function ErrorBox({ error, compact }) {
  if (!error) return null;
  const d = describeError(error);
  return html`<div class=${"error-box" + (compact ? " compact" : "")} role="alert">
    <p class="error-msg">${d.message}</p>
    ${d.hint && html`<p class="error-hint">${d.hint}</p>`}
    ${d.original && html`<p class="error-original"><span class="muted">${t("err.server_said")}</span> <span lang="en">${d.original}</span></p>`}
  </div>`;
}

/** A labelled form field; `error` is a 422 field message (shown under it and announced). */
export function Field({ label, id, error, help, children, wide }) {
  const d = error ? (error.local ? { text: error.local, original: null } : describeFieldMessage(error)) : null;
  return html`<div class=${"field" + (error ? " invalid" : "") + (wide ? " wide" : "")}>
    <label for=${id}>${label}</label>
    ${children}
    ${help && !error && html`<p class="help" id=${id + "-help"}>${help}</p>`}
    ${d && html`<p class="field-error" id=${id + "-error"} role="alert">${d.text}${d.original && html` <span class="error-original" lang="en">${d.original}</span>`}</p>`}
  </div>`;
}

/** Props for an input inside <Field>: id, name, aria links. */
export function inputProps(id, errors, extra = {}) {
  const err = errors && errors[id];
  return { id, name: id, "aria-invalid": err ? "true" : undefined,
    "aria-describedby": err ? id + "-error" : undefined, ...extra };
}

/** 422 `fields` ([{loc, msg}]) -> {fieldId: msg} through `map(loc)` (field id or null); the rest -> `_form`. */
export function fieldErrors(err, map) {
  const out = {};
  if (!err || !err.fields) return out;
  for (const f of err.fields) {
    const loc = (f.loc || []).filter((p) => p !== "body");
    const id = map(loc) || "_form";
    if (!out[id]) out[id] = f.msg;
  }
  return out;
}

// -- notices --------------------------------------------------------------------------------------------
const notices = createStore({ list: [] });
let nextId = 1;
export function notify(text, kind = "info", error = null) {
  const id = nextId++;
  notices.set((s) => ({ list: [...s.list, { id, text, kind, error }].slice(-4) }));
  setTimeout(() => dismiss(id), kind === "error" ? 15000 : 5000);
}
function dismiss(id) { notices.set((s) => ({ list: s.list.filter((n) => n.id !== id) })); }

export function Notices() {
  const { list } = useStore(notices);
  return html`<div class="notices" aria-live="polite">
    ${list.map((n) => html`<div class=${"notice " + n.kind} key=${n.id}>
      <div>${n.text}${n.error && html`<${ErrorBox} error=${n.error} compact />`}</div>
      <button type="button" class="icon" aria-label=${t("action.dismiss")} onClick=${() => dismiss(n.id)}>×</button>
    </div>`)}
  </div>`;
}

// -- confirmation -------------------------------------------------------------------------------------
const dialogs = createStore({ current: null });
/** Ask before something destructive: resolves true when confirmed. */
export function confirmAction({ title, body, confirm, danger = true, items = null }) {
  return new Promise((resolve) => dialogs.set({ current: { title, body, confirm, danger, items, resolve } }));
}

export function DialogHost() {
  const { current } = useStore(dialogs);
  const ref = useRef(null);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    if (current && !el.open) el.showModal();
    if (!current && el.open) el.close();
  }, [current]);
  const answer = (yes) => { if (current) current.resolve(yes); dialogs.set({ current: null }); };
  return html`<dialog ref=${ref} class="confirm" aria-labelledby="dlg-title" onCancel=${(e) => { e.preventDefault(); answer(false); }}>
    ${current && html`<form method="dialog" onSubmit=${(e) => { e.preventDefault(); answer(true); }}>
      <h2 id="dlg-title">${current.title}</h2>
      ${current.body && html`<p>${current.body}</p>`}
      ${current.items && html`<ul class="dlg-items">${current.items.slice(0, 20).map((i) => html`<li key=${i}>${i}</li>`)}
        ${current.items.length > 20 && html`<li>${t("common.and_more", { n: current.items.length - 20 })}</li>`}</ul>`}
      <div class="buttons">
        <button type="button" class="secondary" onClick=${() => answer(false)}>${t("action.cancel")}</button>
        <button type="submit" class=${current.danger ? "danger" : ""} autofocus>${current.confirm}</button>
      </div>
    </form>`}
  </dialog>`;
}

// -- data loading -------------------------------------------------------------------------------------
/** {data, error, loading, reload} of an async function, run again when `deps` change. */
export function useLoad(fn, deps = []) {
  const [st, setSt] = useState({ data: null, error: null, loading: true });
  const seq = useRef(0);
  const reload = useCallback(async () => {
    const n = ++seq.current;
    setSt((s) => ({ ...s, loading: true }));
    try {
      const data = await fn();
      if (n === seq.current) setSt({ data, error: null, loading: false });
    } catch (error) {
      if (n === seq.current) setSt({ data: null, error, loading: false });
    }
  }, deps);
  useEffect(() => { reload(); }, [reload]);
  return { ...st, reload };
}

export function Loading({ what }) {
  return html`<p class="loading" role="status">${what || t("common.loading")}</p>`;
}

export function Section({ title, actions, children, id }) {
  return html`<section class="card" aria-labelledby=${id}>
    <div class="card-head"><h2 id=${id}>${title}</h2>${actions && html`<div class="card-actions">${actions}</div>`}</div>
    ${children}
  </section>`;
}

// -- tasks --------------------------------------------------------------------------------------------
export const taskKind = (kind) => (has(`task.kind.${kind}`) ? t(`task.kind.${kind}`) : kind);
export const taskState = (state) => (has(`task.state.${state}`) ? t(`task.state.${state}`) : state);
export const isActive = (task) => task && (task.state === "queued" || task.state === "running");

export async function cancelTask(task) {
  try {
    trackTask(await api("POST", `/tasks/${enc(task.id)}/cancel`));
    notify(t("task.cancel_asked", { kind: taskKind(task.kind) }));
  } catch (e) {
    notify(t("task.cancel_failed"), "error", e);
  }
}

export function TaskProgress({ task }) {
  const pct = Math.round(task.percent || 0);
  return html`<progress max="100" value=${task.state === "succeeded" ? 100 : pct}
    aria-label=${t("task.progress_of", { kind: taskKind(task.kind), pct })}></progress>`;
}

/** One task: what, on what, its state and progress, the server's message, a cancel button while it runs. */
export function TaskItem({ task, canCancel, showTime = true, children }) {
  const error = task.error ? { message: task.error, code: "failed" } : null;
  return html`<li class=${"task task-" + task.state}>
    <div class="task-line">
      <span class="task-kind">${taskKind(task.kind)}</span>
      <span class="task-target">${task.target}</span>
      <span class=${"badge state-" + task.state}>${taskState(task.state)}</span>
      ${showTime && html`<time class="muted" datetime=${task.created_at}>${fmtDate(task.created_at)}</time>`}
      ${canCancel && isActive(task) && html`<button type="button" class="small secondary" onClick=${() => cancelTask(task)}>${t("action.cancel")}</button>`}
    </div>
    ${isActive(task) && html`<div class="task-progress"><${TaskProgress} task=${task} /> <span lang="en" class="muted">${task.message || ""}</span></div>`}
    ${error && html`<${ErrorBox} error=${error} compact />`}
    ${children}
  </li>`;
}
