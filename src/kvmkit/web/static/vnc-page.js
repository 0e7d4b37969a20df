// /static/vnc.html?vm=NAME[&view_only=1]: one VM's graphical console filling the window (the portal's
// session cookie opens it; the portal's VM page mounts the same component in its console tab). Its words
// come from the portal's catalogs (/static/i18n/LANG.json) in the browser's language, else English.
import { STRINGS, mountVncConsole } from "./vnc-console.js";

async function catalog() {
  const langs = navigator.languages || [navigator.language || "en"];
  const lang = langs.some((l) => String(l).toLowerCase().startsWith("zh")) ? "zh-CN" : "en";
  document.documentElement.lang = lang;
  try {
    const res = await fetch(`/static/i18n/${lang}.json`, { credentials: "same-origin" });
    return res.ok ? await res.json() : {};
  } catch {
    return {};
  }
}

const params = new URLSearchParams(location.search);
const vm = params.get("vm") || "";
const target = document.getElementById("vnc");
const cat = await catalog();
const t = (key, vars) => {
  const s = cat[key] ?? STRINGS[key] ?? key;
  return vars ? s.replace(/\{(\w+)\}/g, (m, k) => (vars[k] === undefined ? m : String(vars[k]))) : s;
};
document.title = vm ? `${vm} — kvmkit` : "kvmkit";
window.kvmkitVnc = vm ? mountVncConsole(target, vm, { viewOnly: params.get("view_only") === "1", t }) : null;
if (!vm) target.textContent = t("vnc.page.no_vm");
