// A small observable store: the session, the VM rows, the tasks, the event stream's status.
import { useEffect, useState } from "./h.js";

export function createStore(initial) {
  let state = initial;
  const subs = new Set();
  return {
    get: () => state,
    set(patch) {
      state = { ...state, ...(typeof patch === "function" ? patch(state) : patch) };
      for (const fn of subs) fn(state);
    },
    subscribe(fn) { subs.add(fn); return () => subs.delete(fn); },
  };
}

/** Re-render when `select(state)` changes (compared with ===). */
export function useStore(store, select = (s) => s) {
  const [value, setValue] = useState(() => select(store.get()));
  useEffect(() => {
    setValue(select(store.get()));
    return store.subscribe((s) => setValue(select(s)));
  }, [store]);
  return value;
}

// session: {me: {name, role, vm_scope, vms}} or null when logged out; live: the event stream is connected
export const app = createStore({ me: null, live: false, checked: false });
// vms: Map vmKey(name, host) -> row (GET /api/v1/vms rows), replaced (new Map) on every change; loaded: first list arrived
export const vmStore = createStore({ vms: new Map(), loaded: false, error: null });
// hosts: Map host name -> its state from the event stream (up, down); migrations: Map task id -> last
// migration event of that task (percent, data_remaining, expected_downtime_ms, ...)
export const hostStore = createStore({ states: new Map(), migrations: new Map() });
// tasks: Map id -> task, newest first when listed
export const taskStore = createStore({ tasks: new Map() });

export const ROLE_RANK = { viewer: 0, operator: 1, admin: 2 };
export function atLeast(me, role) { return !!me && ROLE_RANK[me.role] >= ROLE_RANK[role]; }

/** The VM store's key of a VM: its name on the local host, NAME@HOST on another (VMs are named per host). */
export const vmKey = (name, host) => (host && host !== "local" ? `${name}@${host}` : name);
