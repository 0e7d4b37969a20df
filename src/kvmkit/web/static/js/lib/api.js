// The portal's only way to the server: the public REST API under /api/v1 (same origin, session cookie,
// CSRF header on changes), and uploads streamed with XMLHttpRequest for their progress events.
export const API = "/api/v1";

// the API's codes for answers that carry none (e.g. a route that does not exist on this server)
const STATUS_CODES = { 400: "invalid", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict",
  413: "too_large", 422: "invalid", 429: "rate_limited", 500: "internal", 503: "host" };

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.error || body.detail)) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.code) || (status === 0 ? "network" : (STATUS_CODES[status] || `http_${status}`));
    this.hint = (body && body.hint) || null;
    this.fields = (body && Array.isArray(body.fields)) ? body.fields : [];
    this.taskId = (body && body.task_id) || null;
    this.body = body;
  }
}

function cookie(name) {
  const m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
  return m ? decodeURIComponent(m[1]) : "";
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export const enc = encodeURIComponent;

/** A VM route of the VM's host: `?host=NAME` added for a host other than the local one (none for `local`). */
export function withHost(path, host) {
  if (!host || host === "local") return path;
  return path + (path.includes("?") ? "&" : "?") + "host=" + enc(host);
}

export async function api(method, path, body, { quiet401 = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = cookie("kvmkit_csrf");
  let res;
  try {
    res = await fetch(API + path, { method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, { error: String(e.message || e), code: "network" });
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: text.slice(0, 300) }; }
  if (!res.ok) {
    const err = new ApiError(res.status, data);
    if (res.status === 401 && !quiet401) onUnauthorized(err);
    throw err;
  }
  return data;
}

export const get = (path, opts) => api("GET", path, undefined, opts);

/** PUT a File to `path` (e.g. /pools/P/volumes/V/content?format=raw) with progress(loaded, total).
 * Returns {promise, abort}. */
export function upload(path, file, progress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open("PUT", API + path);
    xhr.setRequestHeader("X-CSRF-Token", cookie("kvmkit_csrf"));
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (ev) => progress(ev.loaded, ev.lengthComputable ? ev.total : file.size);
    xhr.onload = () => {
      let data = null;
      try { data = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch { data = null; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, data));
    };
    xhr.onerror = () => reject(new ApiError(0, { error: "the upload was interrupted", code: "network" }));
    xhr.onabort = () => reject(new ApiError(0, { error: "cancelled", code: "aborted" }));
    xhr.send(file);
  });
  return { promise, abort: () => xhr.abort() };
}
