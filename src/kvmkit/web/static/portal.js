// kvmkit portal: a thin page over the REST API (/api/v1). Session cookie + CSRF header for changes,
// server-sent events for live updates, tasks with progress, and the serial console over a WebSocket.
"use strict";
const API = "/api/v1";
const $ = (sel) => document.querySelector(sel);
let me = null;
let csrf = null;
let events = null;

function cookie(name) {
  const m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
  return m ? decodeURIComponent(m[1]) : null;
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = csrf || cookie("kvmkit_csrf") || "";
  const res = await fetch(API + path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) {
    const err = new Error((data && (data.error || data.detail)) || res.statusText);
    err.status = res.status;
    err.hint = data && data.hint;
    throw err;
  }
  return data;
}

function show(view) {
  $("#login-view").hidden = view !== "login";
  $("#app-view").hidden = view !== "app";
  $("#logout").hidden = view !== "app";
}

async function boot() {
  try {
    me = await api("GET", "/auth/me");
  } catch (e) {
    show("login");
    return;
  }
  $("#who").textContent = `${me.name} (${me.role})`;
  document.querySelectorAll(".operator-only").forEach((el) => { el.hidden = me.role === "viewer"; });
  show("app");
  await loadVMs();
  listen();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  try {
    const res = await api("POST", "/auth/login", { name: form.get("name"), password: form.get("password") });
    csrf = res.csrf_token;
    $("#login-error").textContent = "";
    await boot();
  } catch (e) {
    $("#login-error").textContent = e.message;
  }
});

$("#logout").addEventListener("click", async () => {
  try { await api("POST", "/auth/logout"); } catch (e) { /* already gone */ }
  if (events) events.close();
  show("login");
});

const ACTIONS = {
  running: ["shutdown", "reboot", "suspend", "destroy", "console"],
  paused: ["resume", "destroy", "console"],
  "shut-off": ["start", "delete"],
  shutoff: ["start", "delete"],
};

function fmtMem(vm) {
  const mib = vm.memory_mib || vm.max_memory_mib;
  return mib ? (mib >= 1024 ? (mib / 1024).toFixed(1) + " GiB" : mib + " MiB") : "";
}

async function loadVMs() {
  let vms = [];
  try {
    vms = await api("GET", "/vms");
  } catch (e) {
    if (e.status === 401) { show("login"); return; }
    note(`listing VMs failed: ${e.message}`);
    return;
  }
  const body = $("#vms tbody");
  body.replaceChildren();
  for (const vm of vms) {
    const tr = document.createElement("tr");
    const state = vm.state || "";
    for (const [text, cls] of [[vm.name, ""], [state, "state-" + state], [vm.vcpus ?? "", ""], [fmtMem(vm), ""]]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    const td = document.createElement("td");
    td.className = "actions";
    for (const action of ACTIONS[state] || ["destroy"]) {
      const b = document.createElement("button");
      b.className = "small" + (action === "destroy" || action === "delete" ? " danger" : "");
      b.textContent = action;
      b.disabled = me.role === "viewer";
      b.addEventListener("click", () => act(vm.name, action));
      td.append(b);
    }
    tr.append(td);
    body.append(tr);
  }
  $("#vm-empty").hidden = vms.length > 0;
}

async function act(name, action) {
  if (action === "console") return openConsole(name);
  if ((action === "destroy" || action === "delete") && !confirm(`${action} VM ${name}?`)) return;
  try {
    const task = action === "delete"
      ? await api("DELETE", `/vms/${encodeURIComponent(name)}?storage=true`)
      : await api("POST", `/vms/${encodeURIComponent(name)}/actions/${action}`);
    track(task);
  } catch (e) {
    note(`${action} ${name}: ${e.message}${e.hint ? " (" + e.hint + ")" : ""}`);
  }
}

$("#create-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const spec = { name: f.get("name"), memory_mib: Number(f.get("memory_mib")), vcpus: Number(f.get("vcpus")),
    start: f.get("start") === "on" };
  if (f.get("boot") === "micro") spec.micro = true;
  else spec.template = f.get("template");
  if (f.get("profile")) spec.profile = f.get("profile");
  const net = (f.get("network") || "").trim();
  spec.nics = net ? [{ type: "network", source: net }] : [];
  try {
    track(await api("POST", "/vms", spec));
  } catch (e) {
    note(`create ${spec.name}: ${e.message}${e.hint ? " (" + e.hint + ")" : ""}`);
  }
});

const tasks = new Map();

function note(text) {
  const li = document.createElement("li");
  li.className = "error";
  li.textContent = text;
  $("#tasks").prepend(li);
}

function renderTask(t) {
  let li = tasks.get(t.id);
  if (!li) {
    li = document.createElement("li");
    tasks.set(t.id, li);
    $("#tasks").prepend(li);
  }
  li.replaceChildren();
  const label = document.createElement("span");
  label.textContent = `${t.kind} ${t.target}: ${t.state}${t.message ? " - " + t.message : ""} `;
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = t.percent || 0;
  li.append(label, bar);
  if (t.error) {
    const err = document.createElement("div");
    err.className = "error";
    err.textContent = t.error;
    li.append(err);
  }
}

async function track(task) {
  renderTask(task);
  let t = task;
  while (["queued", "running"].includes(t.state)) {
    await new Promise((r) => setTimeout(r, 500));
    try { t = await api("GET", `/tasks/${t.id}`); } catch (e) { break; }
    renderTask(t);
  }
  loadVMs();
}

function listen() {
  if (events) events.close();
  events = new EventSource(API + "/events", { withCredentials: true });
  events.addEventListener("hello", () => $("#live").classList.add("on"));
  events.addEventListener("vm", () => loadVMs());
  events.addEventListener("task", (ev) => {
    const data = JSON.parse(ev.data);
    if (data.task && tasks.has(data.task.id)) renderTask(data.task);
  });
  events.onerror = () => $("#live").classList.remove("on");
}

$("#refresh").addEventListener("click", loadVMs);

// Serial console over a WebSocket relaying libvirt's console stream. The WebSocket is opened with a
// single-use ticket (valid 60 s) asked for with the session: no long-lived secret goes into a URL.
let consoleWs = null;
async function openConsole(name) {
  if (consoleWs) consoleWs.close();
  const pre = $("#console");
  pre.textContent = "";
  $("#console-name").textContent = name;
  $("#console-card").hidden = false;
  let ticket;
  try {
    ticket = await api("POST", `/vms/${encodeURIComponent(name)}/console`, { kind: "serial" });
  } catch (e) {
    pre.textContent = `[console refused: ${e.message}]\n`;
    return;
  }
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  consoleWs = new WebSocket(`${proto}//${location.host}${ticket.ws_path}?ticket=${encodeURIComponent(ticket.ticket)}`);
  consoleWs.binaryType = "arraybuffer";
  const dec = new TextDecoder();
  consoleWs.onmessage = (ev) => {
    const text = typeof ev.data === "string" ? ev.data : dec.decode(ev.data, { stream: true });
    // drop terminal control sequences the busybox shell sends; keep the text readable
    pre.textContent += text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "").replace(/\r/g, "");
    pre.scrollTop = pre.scrollHeight;
  };
  consoleWs.onclose = (ev) => { pre.textContent += `\n[console closed${ev.reason ? ": " + ev.reason : ""}]\n`; };
  pre.focus();
}
$("#console").addEventListener("keydown", (ev) => {
  if (!consoleWs || consoleWs.readyState !== WebSocket.OPEN) return;
  let data = null;
  if (ev.key === "Enter") data = "\r";
  else if (ev.key === "Backspace") data = "\x7f";
  else if (ev.key === "Tab") data = "\t";
  else if (ev.ctrlKey && ev.key.length === 1) data = String.fromCharCode(ev.key.toUpperCase().charCodeAt(0) - 64);
  else if (ev.key.length === 1) data = ev.key;
  if (data !== null) {
    consoleWs.send(data);
    ev.preventDefault();
  }
});
$("#console-close").addEventListener("click", () => {
  if (consoleWs) consoleWs.close();
  $("#console-card").hidden = true;
});

boot();
