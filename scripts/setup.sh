#!/usr/bin/env bash
# Idempotent host setup for kvmkit: system packages, .venv, libvirt daemons, default network and pool.
# Safe to run again: a second run with everything present does no installs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
log() { printf '\033[1msetup:\033[0m %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (sudo $0): kvmkit manages qemu:///system"
command -v apt-get >/dev/null || die "this setup supports Debian/Ubuntu (apt-get not found)"

# 1. System packages: install only the missing ones.
mapfile -t wanted < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/packages.txt | awk '{print $1}')
PY=${PYTHON:-python3}
if [ "$(command -v "$PY")" = /usr/bin/python3 ]; then wanted+=(python3-venv python3-dev); fi
missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The virtual environment, reinstalled only when the dependency pins change.
stamp=.venv/.kvmkit-deps
want_hash=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat $stamp 2>/dev/null)" != "$want_hash" ]; then
  log "creating .venv"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  piplog=$(mktemp)
  if ! { .venv/bin/python -m pip install -q --upgrade pip && \
         .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"; } >"$piplog" 2>&1; then
    cat "$piplog" >&2; die "pip install failed (log above)"
  fi
  rm -f "$piplog"
  echo "$want_hash" > $stamp
fi
# Bytecode for kvmkit's own modules, as a pip install of a wheel would write it: the checkout is installed
# editable, and where PYTHONDONTWRITEBYTECODE is set every command would compile them again (~3 ms for the
# CLI's lean paths, ~0.1 s for a cold command). Up-to-date files are skipped; a stale one is recompiled in
# memory by Python, so this can never run old code.
.venv/bin/python -m compileall -q -j 0 src >/dev/null

# 2b. The portal's front-end libraries (preact, htm, uPlot; axe-core for the browser tests), pinned in
#     web/package-lock.json: `npm ci` from the npm registry, then web/vendor.mjs copies them into
#     src/kvmkit/web/static/vendor/ (not committed). Redone only when the lock file or vendor.mjs change.
command -v npm >/dev/null || { log "installing npm"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null; }
web_stamp=src/kvmkit/web/static/vendor/.kvmkit-lock
web_hash=$(cat web/package.json web/package-lock.json web/vendor.mjs | sha256sum | cut -c1-16)
if [ ! -d web/node_modules ] || [ "$(cat $web_stamp 2>/dev/null)" != "$web_hash" ]; then
  log "vendoring the portal's front-end libraries (npm ci in web/)"
  npmlog=$(mktemp)
  if ! { npm ci --prefix web --no-audit --no-fund --ignore-scripts && node web/vendor.mjs; } >"$npmlog" 2>&1; then
    cat "$npmlog" >&2; die "npm ci in web/ failed (log above)"
  fi
  rm -f "$npmlog"
  echo "$web_hash" > $web_stamp
fi

# 3. /dev/kvm for the qemu user, as Debian's udev rule sets it (containers often have no udev): without
#    it libvirt finds KVM "not usable" for libvirt-qemu and re-probes QEMU on every define (~30 s each).
if [ -c /dev/kvm ] && getent group kvm >/dev/null && [ "$(stat -c %G:%a /dev/kvm)" != "kvm:660" ]; then
  log "giving group kvm access to /dev/kvm (what udev's 50-udev-default.rules does)"
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

# 3b. noVNC for the graphical console (docs/console.md), pinned in web/novnc/package-lock.json: `npm ci`
#     from the npm registry, then its ES modules (core/, vendor/) and licence are copied into
#     src/kvmkit/web/static/novnc/ (not committed: it ignores itself), where kvmkit serve serves them;
#     nothing is fetched at run time. Redone only when web/novnc's package files change.
command -v npm >/dev/null || { log "installing npm"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null; }
novnc_out=src/kvmkit/web/static/novnc
novnc_hash=$(cat web/novnc/package.json web/novnc/package-lock.json | sha256sum | cut -c1-16)
if [ "$(cat $novnc_out/.kvmkit-lock 2>/dev/null)" != "$novnc_hash" ]; then
  log "vendoring noVNC (npm ci in web/novnc/)"
  npmlog=$(mktemp)
  if ! npm ci --prefix web/novnc --no-audit --no-fund --ignore-scripts >"$npmlog" 2>&1; then
    cat "$npmlog" >&2; die "npm ci in web/novnc/ failed (log above)"
  fi
  rm -f "$npmlog"
  novnc_src=web/novnc/node_modules/@novnc/novnc
  rm -rf "$novnc_out.new" && mkdir -p "$novnc_out.new"
  cp -r "$novnc_src/core" "$novnc_src/vendor" "$novnc_src/LICENSE.txt" "$novnc_out.new/"
  node -p "require('./$novnc_src/package.json').version" > "$novnc_out.new/VERSION"
  printf '*\n' > "$novnc_out.new/.gitignore"
  echo "$novnc_hash" > "$novnc_out.new/.kvmkit-lock"
  rm -rf "$novnc_out" && mv "$novnc_out.new" "$novnc_out"
fi

# 4. Daemons: systemd where it runs, else start them directly (never restart a running one).
if [ -d /run/systemd/system ]; then
  systemctl start virtlogd.socket libvirtd.socket libvirtd.service >/dev/null 2>&1 || systemctl start libvirtd
else
  pgrep -x virtlogd >/dev/null || { log "starting virtlogd"; virtlogd -d; }
  pgrep -x libvirtd >/dev/null || log "starting libvirtd"
  scripts/start-libvirtd  # under a subreaper (the script says why); nothing when it runs
fi

# 5. Wait for qemu:///system, then make sure the default network and pool exist, run and autostart.
.venv/bin/kvmkit host prepare --wait 30
log "ready"
