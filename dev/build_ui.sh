#!/usr/bin/env bash
# Builds the viewer (ui/) into ui/dist, which the query API embeds when it
# is compiled: the npm packages from the lockfile (installed again only when
# the lockfile changed), then Vite. Idempotent.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT/ui"
command -v npm >/dev/null 2>&1 || die "npm (Node.js 20 or newer) is needed to build the viewer"
if ! cmp -s package-lock.json node_modules/.trailhouse-lock 2>/dev/null; then
  say "installing the viewer's npm packages (from ui/package-lock.json)"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.trailhouse-lock
fi
say "building the viewer"
npx --no-install vite build --logLevel warn
