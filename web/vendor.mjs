// Copies the pinned front-end libraries from web/node_modules (installed by `npm ci` from package-lock.json)
// into src/kvmkit/web/static/vendor/, the only place the portal loads them from. No bundler: each library
// is one ES module; the single bare import ("preact" inside preact/hooks) is rewritten to a relative path.
// Run by scripts/setup.sh; the output is not committed (it is other projects' code, rebuilt on every clone).
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const mods = join(here, "node_modules");
const out = join(here, "..", "src", "kvmkit", "web", "static", "vendor");
const pkg = (name) => JSON.parse(readFileSync(join(mods, name, "package.json"), "utf8"));

function rewrite(text, from, to, file) {
  if (!text.includes(from)) throw new Error(`${file}: expected ${from} to rewrite; did the library change?`);
  return text.split(from).join(to);
}

const files = [
  ["preact/dist/preact.mjs", "preact.js"],
  ["preact/hooks/dist/hooks.mjs", "preact-hooks.js", (t, f) => rewrite(t, 'from"preact"', 'from"./preact.js"', f)],
  ["htm/dist/htm.mjs", "htm.js"],
  // uPlot's minified build defines one global; exporting it makes the file an ES module (loaded lazily)
  ["uplot/dist/uPlot.iife.min.js", "uplot.js", (t) => `${t}\nexport default uPlot;\n`],
  ["uplot/dist/uPlot.min.css", "uplot.css"],
];
rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "licenses"), { recursive: true });
const manifest = { generated_by: "web/vendor.mjs", packages: {}, files: {} };
for (const [src, dst, change] of files) {
  let text = readFileSync(join(mods, src), "utf8").replace(/\n?\/[/*]# sourceMappingURL=\S+( \*\/)?\s*$/, "\n");
  if (change) text = change(text, src);
  writeFileSync(join(out, dst), text);
  manifest.files[dst] = createHash("sha256").update(text).digest("hex");
}
for (const name of ["preact", "htm", "uplot"]) {
  manifest.packages[name] = pkg(name).version;
  copyFileSync(join(mods, name, "LICENSE"), join(out, "licenses", `${name}.txt`));
}
writeFileSync(join(out, "manifest.json"), JSON.stringify(manifest, null, 1) + "\n");
console.log(`vendored ${Object.keys(manifest.packages).map((n) => n + "@" + manifest.packages[n]).join(", ")} into ${out}`);
