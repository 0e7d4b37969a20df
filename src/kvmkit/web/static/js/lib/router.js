// Hash routes (#/vms/web1/snapshots): the page is one document, every view has its own address
// (bookmarks, the back button), and the server needs no route per page.
import { createStore, useStore } from "./store.js";

function parse() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query), raw };
}

export const route = createStore(parse());
window.addEventListener("hashchange", () => route.set(parse()));
export const useRoute = () => useStore(route);

export function href(...parts) {
  return "#/" + parts.filter((p) => p !== undefined && p !== null && p !== "").map(encodeURIComponent).join("/");
}
export function go(...parts) { location.hash = href(...parts).slice(1); }
