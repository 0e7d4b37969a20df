// Live data: the VM list and the tasks, loaded once and then kept current from the event stream
// (GET /api/v1/events, server-sent events). A VM event patches or refetches that one row; a task event
// replaces that task. The whole list is fetched again only after the stream reconnects (events may have
// been missed while it was down).
import { api, enc, get } from "./api.js";
import { app, taskStore, vmStore } from "./store.js";

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
    for (const r of rows) vms.set(r.name, r);
    vmStore.set({ vms, loaded: true, error: null });
  } catch (e) {
    vmStore.set({ loaded: true, error: e });
  }
}

/** Fetch one VM again (its row only), at most once per 300 ms per VM. */
export function refreshVm(name) {
  if (pending.has(name)) return;
  pending.set(name, setTimeout(async () => {
    pending.delete(name);
    try {
      const vm = await get(`/vms/${enc(name)}`, { quiet401: true });
      const row = {};
      for (const f of ROW_FIELDS) row[f] = vm[f];
      setVms((m) => m.set(name, { ...m.get(name), ...row }));
    } catch (e) {
      if (e.status === 404) setVms((m) => m.delete(name));
    }
  }, 300));
}

function onVm(ev) {
  const name = ev.vm;
  if (!name) return;
  if (ev.event === "undefined") {
    setVms((m) => m.delete(name));
    return;
  }
  const state = STATE_OF_EVENT[ev.event];
  const row = vmStore.get().vms.get(name);
  if (state && row) setVms((m) => m.set(name, { ...row, state }));
  else refreshVm(name);  // defined (new or changed), shutdown, or a VM not listed yet
}

function onTask(task) {
  if (!task || !task.id) return;
  const tasks = new Map(taskStore.get().tasks);
  tasks.set(task.id, task);
  taskStore.set({ tasks });
  if (task.state === "succeeded" && String(task.target || "").startsWith("vm:")) refreshVm(task.target.slice(3));
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
