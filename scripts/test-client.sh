#!/usr/bin/env bash
# Checks the TypeScript client in clients/typescript:
#   - src/schema.ts is what scripts/gen-client.sh generates from openapi/openapi.json
#   - the package type-checks with `tsc --strict`
#   - its Node test (node --test) drives a sandbox gateway (the debug build of
#     `audience-gateway sandbox`) through the client
#   - in a real browser (tests/browser/client-flow.mjs): the `npm pack` tarball installed into
#     a page project (tests/browser/client-page), bundled with esbuild, served on one origin
#     and driven in Debian's headless Chromium (playwright-core, no browser download)
#     against the sandbox on another; the page project lives in target/client-browser/
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"

# Versions the browser test was validated with.
page_packages=("esbuild@0.28.2" "playwright-core@1.65.1")
chromium=/usr/bin/chromium

apt_install() {
  [[ "$(id -u)" -eq 0 ]] || { echo "test-client.sh: $* required (apt-get install $*)" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v npm >/dev/null || apt_install nodejs npm
[[ -x "${chromium}" ]] || apt_install chromium
[[ -x "${chromium}" ]] || { echo "test-client.sh: ${chromium} is missing after install" >&2; exit 1; }

cargo build --locked --bin audience-gateway
gateway="${CARGO_TARGET_DIR:-${repo_root}/target}/debug/audience-gateway"

generated=clients/typescript/src/schema.ts
committed="$(mktemp)"
trap 'rm -f "${committed}"' EXIT
cp "${generated}" "${committed}"
scripts/gen-client.sh
diff -u "${committed}" "${generated}" \
  || { echo "${generated} was stale: commit the file scripts/gen-client.sh wrote" >&2; exit 1; }

(
  cd clients/typescript
  npx tsc --strict --noEmit
  AUDIENCE_GATEWAY_BIN="${gateway}" npm test
)

# The packed client, as a frontend installs and bundles it.
page="${repo_root}/target/client-browser"
rm -rf "${page}"
mkdir -p "${page}"
(cd clients/typescript && npm pack --silent --pack-destination "${page}" >/dev/null)
tarball="$(ls "${page}"/*.tgz)"
cp tests/browser/client-page/index.html tests/browser/client-page/main.js "${page}/"
printf '{ "name": "client-browser-page", "private": true, "type": "module" }\n' >"${page}/package.json"
(
  cd "${page}"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --loglevel=error \
    "${tarball}" "${page_packages[@]}" >/dev/null
  npx esbuild main.js --bundle --format=esm --log-level=warning --outfile=bundle.js
)
PAGE_DIR="${page}" AUDIENCE_GATEWAY_BIN="${gateway}" CHROMIUM="${chromium}" \
  node tests/browser/client-flow.mjs
