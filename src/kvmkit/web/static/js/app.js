// kvmkit portal: the application shell (login, navigation, language, live status) and the page router.
// Every page talks to the server through the public REST API (lib/api.js) and the event stream (lib/live.js).
import { api, setUnauthorizedHandler } from "./lib/api.js";
import { html, render, useEffect, useRef, useState } from "./lib/h.js";
import { i18n, LANGS, loadLang, preferredLang, rememberLang, t } from "./lib/i18n.js";
import { connect, disconnect, loadTasks, loadVms } from "./lib/live.js";
import { href, useRoute } from "./lib/router.js";
import { app, atLeast, taskStore, useStore, vmStore } from "./lib/store.js";
import { DialogHost, ErrorBox, Notices } from "./lib/ui.js";
import { PAGES } from "./pages/index.js";

async function startSession(me, listing = null) {
  const want = preferredLang(me.name);
  if (want !== i18n.get().lang) await loadLang(want);
  rememberLang(want, me.name);
  app.set({ me, checked: true });
  connect();  // before the list arrives, so that no change between the two is missed
  const vms = listing || loadVms();
  vms.finally(() => loadTasks());  // the first paint of a long list comes first
}

function endSession() {
  disconnect();
  vmStore.set({ vms: new Map(), loaded: false, error: null });
  taskStore.set({ tasks: new Map() });
  app.set({ me: null, checked: true });
}
setUnauthorizedHandler(() => { if (app.get().me) endSession(); });

function LangSelect({ id }) {
  const { lang } = useStore(i18n);
  const me = useStore(app, (s) => s.me);
  const change = async (e) => {
    const l = e.target.value;
    rememberLang(l, me && me.name);
    await loadLang(l);
  };
  return html`<div class="lang">
    <label for=${id} class="sr-only">${t("lang.label")}</label>
    <select id=${id} value=${lang} onChange=${change}>
      ${LANGS.map((l) => html`<option value=${l} lang=${l}>${t("lang." + l)}</option>`)}
    </select>
  </div>`;
}

function Login() {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    setBusy(true);
    try {
      await api("POST", "/auth/login", { name: f.get("name"), password: f.get("password") }, { quiet401: true });
      const listing = loadVms();  // in parallel with who-am-I: the session cookie is set
      const me = await api("GET", "/auth/me");
      setError(null);
      await startSession(me, listing);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  useEffect(() => { document.title = `${t("login.title")} · kvmkit`; }, []);
  return html`<div class="login-page">
    <main class="login-card" id="main">
      <div class="login-head"><span class="brand">kvmkit</span><${LangSelect} id="lang-login" /></div>
      <h1>${t("login.title")}</h1>
      <form onSubmit=${submit} class="stack">
        <div class="field"><label for="login-name">${t("login.user")}</label>
          <input id="login-name" name="name" autocomplete="username" required autofocus /></div>
        <div class="field"><label for="login-password">${t("login.password")}</label>
          <input id="login-password" name="password" type="password" autocomplete="current-password" required /></div>
        <button type="submit" disabled=${busy}>${busy ? t("login.busy") : t("login.submit")}</button>
      </form>
      <${ErrorBox} error=${error} />
      <p class="muted small">${t("login.help")}</p>
    </main>
  </div>`;
}

const NAV = [
  { id: "dashboard", key: "nav.dashboard", path: "" },
  { id: "vms", key: "nav.vms", path: "vms" },
  { id: "create", key: "nav.create", path: "create", role: "operator", unrestricted: true },
  { id: "storage", key: "nav.storage", path: "storage", unrestricted: true },
  { id: "networks", key: "nav.networks", path: "networks", unrestricted: true },
  { id: "host", key: "nav.host", path: "host", unrestricted: true },
  { id: "hosts", key: "nav.hosts", path: "hosts", unrestricted: true },
  { id: "templates", key: "nav.templates", path: "templates", unrestricted: true },
  { id: "tasks", key: "nav.tasks", path: "tasks" },
  { id: "audit", key: "nav.audit", path: "audit", role: "admin" },
  { id: "users", key: "nav.users", path: "users", role: "admin" },
];

export function navFor(me) {
  return NAV.filter((n) => (!n.role || atLeast(me, n.role)) && (!n.unrestricted || me.vm_scope !== "granted"));
}

function Shell() {
  const me = useStore(app, (s) => s.me);
  const live = useStore(app, (s) => s.live);
  const r = useRoute();
  const [menu, setMenu] = useState(false);
  const main = useRef(null);
  const section = r.parts[0] || "";
  const items = navFor(me);
  const page = items.find((n) => n.path === section) || (section === "" ? items[0] : null);
  const Page = page ? PAGES[page.id] : PAGES.notfound;
  useEffect(() => {
    setMenu(false);
    const h1 = main.current && main.current.querySelector("h1");
    if (h1 && document.activeElement === document.body) h1.focus({ preventScroll: true });
  }, [r.raw]);
  const logout = async () => {
    try { await api("POST", "/auth/logout"); } catch { /* the session is gone either way */ }
    endSession();
  };
  return html`<div class="shell">
    <a class="skip" href="#main" onClick=${(e) => { e.preventDefault(); main.current && main.current.querySelector("h1")?.focus(); }}>${t("nav.skip")}</a>
    <header class="top">
      <button type="button" class="icon menu-toggle" aria-expanded=${menu ? "true" : "false"} aria-controls="nav"
        onClick=${() => setMenu(!menu)}>☰<span class="sr-only">${t("nav.menu")}</span></button>
      <a class="brand" href="#/">kvmkit</a>
      <span class=${"live" + (live ? " on" : "")} role="status"><span class="dot" aria-hidden="true"></span>${live ? t("live.on") : t("live.off")}</span>
      <span class="spacer"></span>
      <${LangSelect} id="lang-top" />
      <span class="who">${me.name} <span class="muted">(${t("role." + me.role)})</span></span>
      <button type="button" class="secondary small" onClick=${logout}>${t("nav.logout")}</button>
    </header>
    <div class="body">
      <nav id="nav" class=${menu ? "open" : ""} aria-label=${t("nav.label")}>
        <ul>${items.map((n) => html`<li key=${n.id}><a href=${href(n.path)} aria-current=${page && page.id === n.id ? "page" : undefined}>${t(n.key)}</a></li>`)}</ul>
      </nav>
      <main id="main" ref=${main}><${Page} parts=${r.parts} query=${r.query} me=${me} /></main>
    </div>
    <${Notices} />
  </div>`;
}

function App() {
  const { lang } = useStore(i18n);
  const { me, checked } = useStore(app);
  if (!checked || !i18n.get().cat) return html`<p class="loading" role="status">kvmkit …</p>`;
  return html`<div key=${lang} class="root">${me ? html`<${Shell} />` : html`<${Login} />`}<${DialogHost} /></div>`;
}

async function boot() {
  await loadLang(preferredLang(null));
  render(html`<${App} />`, document.getElementById("app"));
  try {
    await startSession(await api("GET", "/auth/me", undefined, { quiet401: true }));
  } catch {
    app.set({ me: null, checked: true });
  }
}

boot();
