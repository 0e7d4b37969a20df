// Two languages: English (en) and Simplified Chinese (zh-CN). Every string the portal shows comes from
// static/i18n/<lang>.json through t(key); dates, numbers and sizes go through Intl for the language.
// The language is the user's choice (remembered per user in localStorage), else the browser's
// preference (navigator.languages), else English.
import { createStore } from "./store.js";
import { PATTERNS, HINT_PATTERNS, FIELD_WORDS } from "./errors.js";

export const LANGS = ["en", "zh-CN"];
export const i18n = createStore({ lang: "en", cat: null });
let cat = {};
let lang = "en";

const KEY = "kvmkit.lang";

export function preferredLang(user) {
  const saved = (user && localStorage.getItem(`${KEY}.${user}`)) || localStorage.getItem(KEY);
  if (LANGS.includes(saved)) return saved;
  for (const l of navigator.languages || [navigator.language || "en"]) {
    const low = String(l).toLowerCase();
    if (low.startsWith("zh")) return "zh-CN";
    if (low.startsWith("en")) return "en";
  }
  return "en";
}

export function rememberLang(l, user) {
  localStorage.setItem(KEY, l);
  if (user) localStorage.setItem(`${KEY}.${user}`, l);
}

export async function loadLang(l) {
  if (!LANGS.includes(l)) l = "en";
  const res = await fetch(`/static/i18n/${l}.json`, { credentials: "same-origin" });
  cat = await res.json();
  lang = l;
  document.documentElement.lang = l;
  i18n.set({ lang: l, cat });
}

export const currentLang = () => lang;

/** The message `key` in the current language with {name} placeholders filled from `vars`. */
export function t(key, vars) {
  let s = cat[key];
  if (s === undefined) {
    console.error(`kvmkit: no message '${key}' in ${lang}`);
    s = key;
  }
  return vars ? s.replace(/\{(\w+)\}/g, (m, k) => (vars[k] === undefined || vars[k] === null ? m : String(vars[k]))) : s;
}

/** A key written out in full where the code picks one of several (found by the catalog test). */
export const k = (key) => key;
export const has = (key) => cat[key] !== undefined;

// -- formatting ----------------------------------------------------------------------------------------
const nf = new Map();
function numberFormat(opts) {
  const id = lang + JSON.stringify(opts);
  if (!nf.has(id)) nf.set(id, new Intl.NumberFormat(lang, opts));
  return nf.get(id);
}
const plain = new Map();  // digits -> formatter of the current language (fmtNumber runs per table cell)
export function fmtNumber(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return "—";
  let f = plain.get(digits);
  if (!f || f.lang !== lang) {
    f = { lang, fmt: new Intl.NumberFormat(lang, { maximumFractionDigits: digits }) };
    plain.set(digits, f);
  }
  return f.fmt.format(n);
}
export const fmtPercent = (p, digits = 1) => (p === null || p === undefined) ? "—"
  : numberFormat({ style: "percent", maximumFractionDigits: digits }).format(p / 100);

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
export function fmtBytes(bytes, digits = 1) {
  if (bytes === null || bytes === undefined || Number.isNaN(bytes)) return "—";
  let v = Math.abs(bytes);
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
  return t("unit.bytes", { n: fmtNumber(Math.sign(bytes) * v, i === 0 ? 0 : digits), unit: UNITS[i] });
}
const mibCache = new Map();  // VMs share a few sizes: the long list formats each once per language
export function fmtMiB(mib) {
  const id = lang + ":" + mib;
  let text = mibCache.get(id);
  if (text === undefined) {
    text = fmtBytes(mib === null || mib === undefined ? mib : mib * 1024 * 1024);
    if (mibCache.size < 10000) mibCache.set(id, text);
  }
  return text;
}
export const fmtRate = (bps) => t("unit.rate", { size: fmtBytes(bps) });

const dfs = new Map();
function dateFormat(opts) {
  const id = lang + JSON.stringify(opts);
  if (!dfs.has(id)) dfs.set(id, new Intl.DateTimeFormat(lang, opts));
  return dfs.get(id);
}
function toDate(v) {
  if (v === null || v === undefined || v === "") return null;
  const d = typeof v === "number" ? new Date(v < 1e12 ? v * 1000 : v) : new Date(v);
  return Number.isNaN(d.getTime()) ? null : d;
}
export function fmtDate(v) {
  const d = toDate(v);
  return d ? dateFormat({ dateStyle: "medium", timeStyle: "medium" }).format(d) : "—";
}
export function fmtTime(v, { seconds = false, date = false } = {}) {
  const d = toDate(v);
  if (!d) return "—";
  const opts = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  if (seconds) opts.second = "2-digit";
  if (date) { opts.month = "numeric"; opts.day = "numeric"; }
  return dateFormat(opts).format(d);
}

// -- errors from the API ---------------------------------------------------------------------------------
// The API's messages are English sentences with a stable `code`. A message matching one of the known
// patterns (errors.js) is translated whole; otherwise the portal says what kind of failure it is in the
// user's language (by code) and shows the server's English text under it.
function matchPatterns(text, table) {
  if (!text) return null;
  for (const [re, key] of table) {
    const m = re.exec(text);
    if (m) {
      const vars = { ...(m.groups || {}) };
      if (vars.what) vars.what = fieldWord(vars.what);
      return t(key, vars);
    }
  }
  return null;
}

export function fieldWord(what) {
  const key = FIELD_WORDS[what];
  return key ? t(key) : what;
}

export function translateMessage(text) { return matchPatterns(text, PATTERNS); }

/** {message, hint, original}: `original` is the server's English text when it could not be translated. */
export function describeError(err) {
  if (!err) return { message: "", hint: null, original: null };
  const code = err.code || "error";
  if (lang === "en") return { message: err.message, hint: err.hint, original: null };
  const msg = matchPatterns(err.message, PATTERNS);
  const hint = err.hint ? matchPatterns(err.hint, HINT_PATTERNS) : null;
  const generic = has(`apierr.${code}`) ? t(`apierr.${code}`) : t("apierr.error");
  const original = (msg && (hint || !err.hint)) ? null : [err.message, err.hint].filter(Boolean).join(" — ");
  return { message: msg || generic, hint, original };
}

/** One 422 field message in the current language: {text, original}. */
export function describeFieldMessage(msg) {
  if (lang === "en") return { text: msg, original: null };
  const text = matchPatterns(msg, PATTERNS);
  return text ? { text, original: null } : { text: t("field.invalid"), original: msg };
}
