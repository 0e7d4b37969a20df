// Live data: the VM list and the tasks, loaded once and then kept current from the event stream
// (GET /api/v1/events, server-sent events). A VM event patches or refetches that one row; a task event
// replaces that task. The whole list is fetched again only after the stream reconnects (events may have
// been missed while it was down).
import { api, enc, get, withHost } from "./api.js";
import { app, hostStore, taskStore, vmKey, vmStore } from "./store.js";

const STATE_OF_EVENT = { started: "running", resumed: "running", suspended: "paused", stopped: "shut-off",
  crashed: "crashed", pmsuspended: "pm-suspended" };
const ROW_FIELDS = ["name", "uuid", "state", "vcpus", "max_vcpus", "memory_mib", "max_memory_mib", "host"];
let source = null;
let lost = false;
const pending = new Map();

function setVms(fn) {
  const vms = new Map(vmStore.get().vms);
  fn(vms);
  vmStore.set({ vms });
}

export async function loadVms() {
  try {
    const rows = await get("/vms");
    const vms = new Map();
    for (const r of rows) vms.set(vmKey(r.name, r.host), r);
    vmStore.set({ vms, loaded: true, error: null });
  } catch (e) {
    vmStore.set({ loaded: true, error: e });
  }
}

/** Fetch one VM of `host` again (its row only), at most once per 300 ms per VM. */
export function refreshVm(name, host) {
  const key = vmKey(name, host);
  if (pending.has(key)) return;
  pending.set(key, setTimeout(async () => {
    pending.delete(key);
    try {
      const vm = await get(withHost(`/vms/${enc(name)}`, host), { quiet401: true });
      const row = {};
      for (const f of ROW_FIELDS) row[f] = vm[f];
      setVms((m) => m.set(key, { ...m.get(key), ...row }));
    } catch (e) {
      if (e.status === 404) setVms((m) => m.delete(key));
    }
  }, 300));
}

function onVm(ev) {
  const name = ev.vm;
  if (!name) return;
  const key = vmKey(name, ev.host);
  if (ev.event === "undefined") {
    setVms((m) => m.delete(key));
    return;
  }
  const state = STATE_OF_EVENT[ev.event];
  const row = vmStore.get().vms.get(key);
  if (state && row) setVms((m) => m.set(key, { ...row, state }));
  else refreshVm(name, ev.host);  // defined (new or changed), shutdown, or a VM not listed yet
}

/** A task's target "vm:NAME" (local host) or "vm:NAME@HOST" -> [name, host]. */
export function vmOfTarget(target) {
  const rest = String(target || "").slice(3);
  const at = rest.lastIndexOf("@");
  return at > 0 ? [rest.slice(0, at), rest.slice(at + 1)] : [rest, "local"];
}

function onHost(ev) {
  if (!ev.host || !ev.state) return;
  const states = new Map(hostStore.get().states);
  states.set(ev.host, ev.state);
  hostStore.set({ states });
}

function onMigration(ev) {
  if (!ev.task) return;
  const migrations = new Map(hostStore.get().migrations);
  migrations.set(ev.task, ev);
  hostStore.set({ migrations });
}

function onTask(task) {
  if (!task || !task.id) return;
  const tasks = new Map(taskStore.get().tasks);
  tasks.set(task.id, task);
  taskStore.set({ tasks });
  if (task.state === "succeeded" && String(task.target || "").startsWith("vm:")) {
    const [name, host] = vmOfTarget(task.target);
    refreshVm(name, host);
    if (/^vm\.migrate$/.test(task.kind)) loadVms();  // the VM left its host: its row moves to the destination's
  }
}

export async function loadTasks(limit = 100) {
  try {
    const rows = await get(`/tasks?limit=${limit}`);
    const tasks = new Map(taskStore.get().tasks);
    for (const t of rows) if (!tasks.has(t.id) || tasks.get(t.id).state !== t.state) tasks.set(t.id, t);
    taskStore.set({ tasks });
  } catch { /* the tasks page shows its own error */ }
}

/** Tasks newest first. */
export function sortedTasks(tasks) {
  return [...tasks.values()].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
}

export function trackTask(task) { if (task && task.id) onTask(task); return task; }

export function connect() {
  disconnect();
  source = new EventSource("/api/v1/events", { withCredentials: true });
  source.addEventListener("hello", () => {
    app.set({ live: true });
    if (lost) { lost = false; loadVms(); loadTasks(); }
  });
  source.addEventListener("vm", (e) => onVm(JSON.parse(e.data)));
  source.addEventListener("task", (e) => onTask(JSON.parse(e.data).task));
  source.addEventListener("host", (e) => onHost(JSON.parse(e.data)));
  source.addEventListener("migration", (e) => onMigration(JSON.parse(e.data)));
  source.onerror = () => {
    app.set({ live: false });
    lost = true;
    if (source && source.readyState === EventSource.CLOSED) {
      // the server refused the stream (session ended?): ask who we are; a 401 shows the login page
      api("GET", "/auth/me").then(() => setTimeout(connect, 3000), () => {});
    }
  };
}

export function disconnect() {
  if (source) source.close();
  source = null;
  app.set({ live: false });
}

/** Wait until a task finishes (from the event stream; polled every 2 s as a safety net). */
export function waitTask(id) {
  return new Promise((resolve) => {
    const done = (t) => t && ["succeeded", "failed", "cancelled"].includes(t.state);
    const check = () => taskStore.get().tasks.get(id);
    if (done(check())) { resolve(check()); return; }
    const unsub = taskStore.subscribe(() => { if (done(check())) { finish(); } });
    const timer = setInterval(async () => {
      try { onTask(await get(`/tasks/${enc(id)}`)); } catch { /* keep waiting */ }
    }, 2000);
    function finish() { unsub(); clearInterval(timer); resolve(check()); }
  });
}
