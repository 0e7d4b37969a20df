// Consoles. Graphical: the noVNC component (static/vnc-console.js, provided separately) mounted in this
// tab with mountVncConsole(element, vmName, {viewOnly, t}); a clear message when it is not installed.
// Serial: POST /vms/{name}/console {"kind": "serial"} -> a single-use ticket, then the WebSocket
// ws_path?ticket=... relaying the guest's serial port.
import { api, enc, withHost } from "../lib/api.js";
import { html, useEffect, useRef, useState } from "../lib/h.js";
import { t } from "../lib/i18n.js";
import { atLeast } from "../lib/store.js";
import { ErrorBox, Section } from "../lib/ui.js";

export function GraphicalConsole({ vm, me }) {
  const host = useRef(null);
  const [problem, setProblem] = useState(null);
  const running = vm.state === "running" || vm.state === "paused";
  useEffect(() => {
    if (!running || !vm.graphics) return undefined;
    let handle = null;
    let alive = true;
    import("/static/vnc-console.js").then((mod) => {
      if (!alive || !host.current) return;
      handle = mod.mountVncConsole(host.current, vm.name, { viewOnly: !atLeast(me, "operator"), t, host: vm.host });
    }, () => { if (alive) setProblem("missing"); });
    return () => {
      alive = false;
      if (typeof handle === "function") handle();
      else if (handle && typeof handle.destroy === "function") handle.destroy();
    };
  }, [vm.name, running, !!vm.graphics]);
  let note = null;
  if (!vm.graphics) note = t("console.no_graphics");
  else if (!running) note = t("console.not_running");
  else if (problem === "missing") note = t("console.missing");
  return html`<${Section} id="vm-console" title=${t("vm.tab.console")}>
    ${note ? html`<p class="notice-inline" role="status">${note}</p>` : html`<div class="vnc-host" ref=${host}></div>`}
  <//>`;
}

const ESC = /\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>]/g;

export function SerialConsole({ vm, me }) {
  const out = useRef(null);
  const ws = useRef(null);
  const [status, setStatus] = useState("idle");
  const [error, setError] = useState(null);
  const [line, setLine] = useState("");
  const running = vm.state === "running" || vm.state === "paused";
  const can = atLeast(me, "operator");
  const append = (text) => {
    const el = out.current;
    if (!el) return;
    el.textContent = (el.textContent + text).slice(-200000);
    el.scrollTop = el.scrollHeight;
  };
  const open = async () => {
    if (ws.current) ws.current.close();
    setError(null);
    setStatus("connecting");
    let ticket;
    try {
      ticket = await api("POST", withHost(`/vms/${enc(vm.name)}/console`, vm.host), { kind: "serial" });
    } catch (e) {
      setError(e); setStatus("closed");
      return;
    }
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const sock = new WebSocket(`${proto}//${location.host}${ticket.ws_path}?ticket=${encodeURIComponent(ticket.ticket)}`);
    sock.binaryType = "arraybuffer";
    const dec = new TextDecoder();
    sock.onopen = () => { setStatus("open"); out.current && out.current.focus(); };
    sock.onmessage = (ev) => {
      const text = typeof ev.data === "string" ? ev.data : dec.decode(ev.data, { stream: true });
      append(text.replace(ESC, "").replace(/\r/g, ""));
    };
    sock.onclose = (ev) => {
      setStatus("closed");
      if (ev.code >= 4000) setError({ message: ev.reason || String(ev.code), code: ev.code === 4403 ? "forbidden" : (ev.code === 4401 ? "unauthorized" : "not_found") });
    };
    ws.current = sock;
  };
  useEffect(() => {
    if (running && can) open();
    return () => { if (ws.current) ws.current.close(); ws.current = null; };
  }, [vm.name, running]);
  const send = (data) => { if (ws.current && ws.current.readyState === WebSocket.OPEN) ws.current.send(data); };
  const onKey = (ev) => {
    let data = null;
    if (ev.key === "Enter") data = "\r";
    else if (ev.key === "Backspace") data = "\x7f";
    else if (ev.key === "Tab") return;  // Tab leaves the console (keyboard users); send it with the line box
    else if (ev.ctrlKey && ev.key.length === 1 && /[a-z]/i.test(ev.key)) data = String.fromCharCode(ev.key.toUpperCase().charCodeAt(0) - 64);
    else if (ev.key.length === 1 && !ev.altKey && !ev.metaKey) data = ev.key;
    else if (ev.key === "ArrowUp") data = "\x1b[A";
    else if (ev.key === "ArrowDown") data = "\x1b[B";
    if (data !== null) { send(data); ev.preventDefault(); }
  };
  const sendLine = (e) => { e.preventDefault(); send(line + "\r"); setLine(""); };
  let note = null;
  if (!running) note = t("console.not_running");
  else if (!can) note = t("console.operators_only");
  return html`<${Section} id="vm-serial" title=${t("vm.tab.serial")}
      actions=${running && can && html`<span class="muted" role="status">${t("serial.status." + status)}</span>
        <button type="button" class="small secondary" onClick=${open}>${t("serial.reconnect")}</button>`}>
    ${note ? html`<p class="notice-inline" role="status">${note}</p>` : html`
      <pre class="terminal" ref=${out} tabindex="0" role="log" onKeyDown=${onKey} aria-label=${t("serial.aria")} aria-describedby="serial-help"></pre>
      <p class="help" id="serial-help">${t("serial.help")}</p>
      <form class="line-form" onSubmit=${sendLine}>
        <label for="serial-line">${t("serial.line")}</label>
        <input id="serial-line" value=${line} onInput=${(e) => setLine(e.target.value)} autocomplete="off" spellcheck="false" />
        <button type="submit" class="small">${t("serial.send")}</button>
      </form>`}
    <${ErrorBox} error=${error} />
  <//>`;
}
