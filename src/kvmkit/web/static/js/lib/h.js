// The one place the portal imports its component library from (vendored by scripts/setup.sh).
import { h, render, Fragment, Component, createRef } from "../../vendor/preact.js";
import { useCallback, useEffect, useId, useLayoutEffect, useMemo, useRef, useState } from "../../vendor/preact-hooks.js";
import htm from "../../vendor/htm.js";

export const html = htm.bind(h);
export { h, render, Fragment, Component, createRef, useCallback, useEffect, useId, useLayoutEffect, useMemo, useRef, useState };
