// kvmkit's graphical console: noVNC (vendored at setup into /static/novnc/, docs/console.md) in the page,
// over the WebSocket /api/v1/vms/NAME/console/vnc/ws on the portal's own origin.
//
//   import { mountVncConsole } from "/static/vnc-console.js";
//   const handle = mountVncConsole(element, "web1", { viewOnly: false, t });
//   ...; handle.destroy();
//
// It asks for a single-use console ticket (POST /api/v1/vms/NAME/console {"kind": "vnc", "view_only"}) with
// the session cookie and CSRF token, opens noVNC's RFB on the ticket's ws_path, and offers a toolbar:
// Ctrl-Alt-Del, "type text" (pasted text sent as key presses of a US keyboard: a VM's text console has no
// clipboard), fullscreen, scaling (fit / actual size), reconnect, and a status line (connecting, connected,
// disconnected with the reason, no graphical console, ...). `t(key, vars)` translates the UI strings
// (keys in STRINGS below, `{name}` placeholders); without it the English texts are used.
// The element gets data-vnc-state (connecting | connected | disconnected | failed) and a "vnc-status" event
// ({state, message}) on every change.
import RFB from "./novnc/core/rfb.js";

export const STRINGS = {
  "vnc.status.connecting": "Connecting to the graphical console of {vm}…",
  "vnc.status.connected": "Connected to {vm}",
  "vnc.status.view_only": "Watching {vm}: view only, your keys and mouse do not reach the VM",
  "vnc.status.disconnected": "Disconnected: {reason}",
  "vnc.status.closed": "Disconnected",
  "vnc.status.no_display": "{vm} has no graphical console (no VNC display). Use the serial console.",
  "vnc.status.not_running": "{vm} is not running: start it to see its screen",
  "vnc.status.forbidden": "You may not open the graphical console of {vm}",
  "vnc.status.not_found": "VM {vm} was not found",
  "vnc.status.ticket_refused": "The console ticket was refused (used or expired): reconnect",
  "vnc.status.access_ended": "Your access to {vm} ended; the console was closed",
  "vnc.status.failed": "The graphical console could not be opened: {reason}",
  "vnc.status.typing": "Typing {count} characters…",
  "vnc.status.skipped": "{count} characters cannot be typed on a US keyboard and were left out",
  "vnc.button.ctrl_alt_del": "Ctrl-Alt-Del",
  "vnc.button.type": "Type text",
  "vnc.button.send": "Type it",
  "vnc.button.fullscreen": "Fullscreen",
  "vnc.button.scale_fit": "Fit to window",
  "vnc.button.scale_actual": "Actual size",
  "vnc.button.reconnect": "Reconnect",
  "vnc.paste.label": "Text to type into the VM (sent as key presses)",
  "vnc.screen.label": "Screen of {vm}: click it, then type",
  "vnc.page.no_vm": "Name the VM in the address: /static/vnc.html?vm=NAME",
};

function english(key, vars) {
  const s = STRINGS[key] ?? key;
  return vars ? s.replace(/\{(\w+)\}/g, (m, k) => (vars[k] === undefined ? m : String(vars[k]))) : s;
}

function cookie(name) {
  const hit = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return hit ? decodeURIComponent(hit.slice(name.length + 1)) : "";
}

function ensureStyles() {
  if (document.querySelector("link[data-vnc-console]")) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = new URL("./vnc-console.css", import.meta.url).pathname;
  link.dataset.vncConsole = "";
  document.head.appendChild(link);
}

// -- typing text: a US keyboard's keys (the guest maps scancodes with its own layout) --------------------
const XK = { Shift_L: 0xffe1, Return: 0xff0d, Tab: 0xff09 };
const SYMBOLS = {  // unshifted, shifted, key code
  Minus: ["-", "_"], Equal: ["=", "+"], BracketLeft: ["[", "{"], BracketRight: ["]", "}"], Backslash: ["\\", "|"],
  Semicolon: [";", ":"], Quote: ["'", "\""], Backquote: ["`", "~"], Comma: [",", "<"], Period: [".", ">"],
  Slash: ["/", "?"], Digit1: ["1", "!"], Digit2: ["2", "@"], Digit3: ["3", "#"], Digit4: ["4", "$"],
  Digit5: ["5", "%"], Digit6: ["6", "^"], Digit7: ["7", "&"], Digit8: ["8", "*"], Digit9: ["9", "("],
  Digit0: ["0", ")"], Space: [" ", null],
};
const KEYS = new Map();
for (const [code, [plain, shifted]] of Object.entries(SYMBOLS)) {
  KEYS.set(plain, { keysym: plain.charCodeAt(0), code, shift: false });
  if (shifted) KEYS.set(shifted, { keysym: shifted.charCodeAt(0), code, shift: true });
}
for (let c = 97; c <= 122; c++) {
  const lower = String.fromCharCode(c), upper = lower.toUpperCase(), code = "Key" + upper;
  KEYS.set(lower, { keysym: c, code, shift: false });
  KEYS.set(upper, { keysym: c - 32, code, shift: true });
}
KEYS.set("\n", { keysym: XK.Return, code: "Enter", shift: false });
KEYS.set("\t", { keysym: XK.Tab, code: "Tab", shift: false });

/** The key presses that type `text`: [{keysym, code, shift}], and how many characters have no key. */
export function keysForText(text) {
  const keys = [];
  let skipped = 0;
  for (const ch of text.replace(/\r\n?/g, "\n")) {
    const key = KEYS.get(ch);
    if (key) keys.push(key);
    else skipped++;
  }
  return { keys, skipped };
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// -- the component ---------------------------------------------------------------------------------------
export function mountVncConsole(element, vmName, { viewOnly = false, t = english, host = null } = {}) {
  ensureStyles();
  const tr = (key, vars) => {
    const s = t(key, vars);
    return s === key ? english(key, vars) : s;  // a catalog without the key still shows words
  };
  const vars = { vm: vmName };
  const make = (tag, cls, text) => {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined) el.textContent = text;
    return el;
  };
  const root = make("div", "vnc-console");
  const bar = make("div", "vnc-toolbar");
  bar.setAttribute("role", "toolbar");
  const status = make("span", "vnc-status");
  status.setAttribute("role", "status");
  status.setAttribute("aria-live", "polite");
  const button = (key, onClick) => {
    const b = make("button", "small secondary", tr(key));
    b.type = "button";
    b.addEventListener("click", onClick);
    return b;
  };
  const cad = button("vnc.button.ctrl_alt_del", () => rfb && rfb.sendCtrlAltDel());
  cad.dataset.action = "ctrl-alt-del";
  const typeBtn = button("vnc.button.type", () => {
    pasteForm.hidden = !pasteForm.hidden;
    if (!pasteForm.hidden) pasteBox.focus();
  });
  typeBtn.dataset.action = "type";
  typeBtn.setAttribute("aria-expanded", "false");
  const scaleBtn = button("vnc.button.scale_actual", () => setScale(!fit));
  scaleBtn.dataset.action = "scale";
  const fullBtn = button("vnc.button.fullscreen", () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else if (root.requestFullscreen) root.requestFullscreen().catch(() => {});
  });
  fullBtn.dataset.action = "fullscreen";
  const again = button("vnc.button.reconnect", () => connect());
  again.dataset.action = "reconnect";
  again.hidden = true;
  const tools = make("span", "vnc-tools");
  tools.append(cad, typeBtn, scaleBtn, fullBtn, again);
  bar.append(status, tools);

  const pasteForm = make("form", "vnc-paste");
  pasteForm.hidden = true;
  const pasteId = `vnc-paste-${Math.random().toString(36).slice(2)}`;
  const pasteLabel = make("label", "", tr("vnc.paste.label"));
  pasteLabel.htmlFor = pasteId;
  const pasteBox = make("textarea");
  pasteBox.id = pasteId;
  pasteBox.rows = 3;
  pasteBox.spellcheck = false;
  const pasteSend = make("button", "small", tr("vnc.button.send"));
  pasteSend.type = "submit";
  pasteForm.append(pasteLabel, pasteBox, pasteSend);
  pasteForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = pasteBox.value;
    if (!text) return;
    pasteSend.disabled = true;
    try {
      await typeText(text);
      pasteBox.value = "";
    } finally {
      pasteSend.disabled = false;
    }
    if (rfb) rfb.focus();
  });
  new MutationObserver(() => typeBtn.setAttribute("aria-expanded", String(!pasteForm.hidden)))
    .observe(pasteForm, { attributes: true, attributeFilter: ["hidden"] });

  const screen = make("div", "vnc-screen");
  // the screen takes keys and the pointer itself: a named element needs a role, and "application" tells
  // screen readers to pass the keys through
  screen.setAttribute("role", "application");
  screen.setAttribute("aria-label", tr("vnc.screen.label", vars));
  root.append(bar, pasteForm, screen);
  element.replaceChildren(root);

  let rfb = null, sock = null, closeEvent = null, state = "", fit = true, destroyed = false, note = null;

  function setState(next, key, extra) {
    state = next;
    const message = tr(key, { ...vars, ...extra });
    status.textContent = note ? `${message} — ${note}` : message;
    element.dataset.vncState = next;
    root.dataset.vncState = next;
    const live = next === "connected";
    cad.disabled = !live || viewOnly;
    typeBtn.disabled = !live || viewOnly;
    cad.hidden = typeBtn.hidden = viewOnly;
    if (!live) pasteForm.hidden = true;
    again.hidden = !(next === "disconnected" || next === "failed");
    element.dispatchEvent(new CustomEvent("vnc-status", { detail: { state: next, key, message } }));
  }

  function setScale(toFit) {
    fit = toFit;
    scaleBtn.textContent = tr(fit ? "vnc.button.scale_actual" : "vnc.button.scale_fit");
    root.classList.toggle("vnc-actual", !fit);
    if (rfb) {
      rfb.scaleViewport = fit;
      rfb.clipViewport = false;
    }
  }

  function closeReason(ev) {
    if (!ev) return ["vnc.status.closed", {}];
    switch (ev.code) {
      case 4401: return ["vnc.status.ticket_refused", {}];
      case 4403: return ev.reason.startsWith("access ended") ? ["vnc.status.access_ended", {}] : ["vnc.status.forbidden", {}];
      case 4404: return ["vnc.status.not_found", {}];
      case 4406: return ["vnc.status.no_display", {}];
      case 4409: return ["vnc.status.not_running", {}];
      default: return ev.reason ? ["vnc.status.disconnected", { reason: ev.reason }] : ["vnc.status.closed", {}];
    }
  }

  async function ticket() {
    const scope = host && host !== "local" ? `?host=${encodeURIComponent(host)}` : "";  // the VM's host
    const res = await fetch(`/api/v1/vms/${encodeURIComponent(vmName)}/console${scope}`, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": cookie("kvmkit_csrf") },
      body: JSON.stringify({ kind: "vnc", view_only: !!viewOnly }),
    });
    let body = {};
    try { body = await res.json(); } catch { /* not JSON */ }
    if (res.ok) return body;
    const key = res.status === 404 ? "vnc.status.not_found" : res.status === 403 ? "vnc.status.forbidden"
      : res.status === 401 ? "vnc.status.ticket_refused" : "vnc.status.failed";
    const err = new Error(body.error || `HTTP ${res.status}`);
    err.key = key;
    throw err;
  }

  async function connect() {
    teardown();
    note = null;
    closeEvent = null;
    setState("connecting", "vnc.status.connecting");
    let tk;
    try {
      tk = await ticket();
    } catch (err) {
      if (!destroyed) setState("failed", err.key || "vnc.status.failed", { reason: err.message });
      return;
    }
    if (destroyed) return;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    sock = new WebSocket(`${proto}//${location.host}${tk.ws_path}?ticket=${encodeURIComponent(tk.ticket)}`, ["binary"]);
    sock.addEventListener("close", (ev) => { closeEvent = ev; });
    const mine = new RFB(screen, sock, { shared: true });
    rfb = mine;
    mine.viewOnly = !!viewOnly;
    mine.focusOnClick = !viewOnly;
    mine.resizeSession = false;
    mine.showDotCursor = !viewOnly;
    setScale(fit);
    mine.addEventListener("connect", () => {
      if (rfb !== mine) return;
      setState("connected", viewOnly ? "vnc.status.view_only" : "vnc.status.connected");
      if (!viewOnly) mine.focus();
    });
    mine.addEventListener("disconnect", () => {
      if (rfb !== mine || destroyed) return;  // a console replaced by reconnect, or unmounted
      rfb = null;
      const [key, extra] = closeReason(closeEvent);
      setState(state === "connected" ? "disconnected" : "failed", key, extra);  // failed: it never opened
    });
    mine.addEventListener("securityfailure", (ev) => {
      note = ev.detail && ev.detail.reason ? ev.detail.reason : null;
    });
  }

  /** Type `text` into the VM as key presses (US layout), a few ms apart; resolves when all are sent. */
  async function typeText(text) {
    if (!rfb || viewOnly || state !== "connected") return { typed: 0, skipped: 0 };
    const { keys, skipped } = keysForText(text);
    setState("connected", "vnc.status.typing", { count: keys.length });
    for (const key of keys) {
      if (!rfb) break;
      if (key.shift) rfb.sendKey(XK.Shift_L, "ShiftLeft", true);
      rfb.sendKey(key.keysym, key.code, true);
      rfb.sendKey(key.keysym, key.code, false);
      if (key.shift) rfb.sendKey(XK.Shift_L, "ShiftLeft", false);
      await pause(8);
    }
    if (rfb) setState("connected", skipped ? "vnc.status.skipped" : "vnc.status.connected", { count: skipped });
    return { typed: keys.length, skipped };
  }

  function teardown() {
    if (rfb) {
      const old = rfb;
      rfb = null;
      old.disconnect();
    }
    sock = null;
  }

  setScale(true);
  connect();
  return {
    get rfb() { return rfb; },
    get state() { return state; },
    get socket() { return sock; },
    typeText,
    sendCtrlAltDel: () => rfb && rfb.sendCtrlAltDel(),
    reconnect: connect,
    setScale,
    destroy() {
      destroyed = true;
      teardown();
      element.replaceChildren();
      delete element.dataset.vncState;
    },
  };
}
